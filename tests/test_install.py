"""Installed, not only cloned: a wheel of the project in a fresh virtual environment, run outside the repository.

The wheel is built from this checkout and installed with pip into a new venv; the venv sees the test environment's
third-party packages (torch, diffusers, ...) through a .pth line, but not the checkout: the package must come from
the wheel, with its shipped data (concept sets, prompt lists, the toy model and its HRVs). Every console command of
the wheel answers --help, and the main flows run on the built-in tiny model from an empty folder.
"""
from __future__ import annotations

import configparser
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, environment) of a fresh venv with the project's wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(REPO)], check=True, cwd=tmp)
    [wheel] = dist.glob("hrv_diffusion-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # without PYTHONPATH: a checkout on it would look installed already and pip would skip the wheel
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, env=clean)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # The test environment's packages (not its editable checkout: nested .pth files are not processed).
    Path(site, "test_environment.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HRV_DIFFUSION_CACHE=str(tmp / "cache"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    return venv / "bin", env, wheel


def run(bin_dir, env, cwd, *args, check=True):
    result = subprocess.run([str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def entry_points(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(name).decode())
    return sorted(parser["console_scripts"])


def test_the_package_comes_from_the_wheel_with_its_data(installed, tmp_path):
    bin_dir, env, wheel = installed
    out = run(bin_dir, env, tmp_path, "python", "-c",
              "import hrv_diffusion, pathlib; print(pathlib.Path(hrv_diffusion.__file__).resolve())").stdout.strip()
    assert not Path(out).is_relative_to(REPO) and "site-packages" in out
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    for shipped in ("hrv_diffusion/data/descriptions/340_final_text_descriptions.txt",
                    "hrv_diffusion/data/prompts/prompt_list_imagenet.txt", "hrv_diffusion/data/toy/model_index.json",
                    "hrv_diffusion/data/toy_hrv/hrv_toy_toy_concepts_toy.csv"):
        assert shipped in names


def test_every_command_answers_help(installed, tmp_path):
    bin_dir, env, wheel = installed
    commands = entry_points(wheel)
    assert {"hrv-relevance", "hrv-extract", "hrv-weakening", "hrv-demo"} <= set(commands)
    for command in commands:
        result = run(bin_dir, env, tmp_path, command, "--help")
        assert result.stdout.startswith("usage:"), command


def test_main_flows_run_from_an_empty_folder(installed, tmp_path):
    bin_dir, env, _ = installed
    tiny = ["--model_card", "tiny-sd"]
    run(bin_dir, env, tmp_path, "hrv-heads", "tiny-sd", "--summary")
    run(bin_dir, env, tmp_path, "hrv-text-embeddings", *tiny)  # the paper's concept set, shipped
    run(bin_dir, env, tmp_path, "hrv-relevance", *tiny, "--prompt", "imagenet", "--max_prompts", "2",
        "--batch_size", "2", "--num_inference_steps", "2", "--dtype", "float32", "--quiet")
    run(bin_dir, env, tmp_path, "hrv-extract", *tiny, "--prompt", "imagenet")
    [hrv] = (tmp_path / "final_result").glob("category_vectors_*_tiny_sd.npy")
    assert np.load(hrv).shape == (34, 22)
    run(bin_dir, env, tmp_path, "hrv-weakening", *tiny, "--prompt", "a red car", "--seeds", "1",
        "--heads_to_be_perturbed", "0", "1", "--n_inference_steps", "2", "--hrv", str(hrv), "--quiet")
    assert len(list((tmp_path / "ordered_weakening_analysis").rglob("*.png"))) == 4  # k = 0 and 1, two orders
    prompts = run(bin_dir, env, tmp_path, "hrv-weakening-prompts", "--experiment_num", "5").stdout.splitlines()
    assert len(prompts) == 50
    missing = run(bin_dir, env, tmp_path, "hrv-relevance", "--model_card", "no/such-model", check=False)
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr
