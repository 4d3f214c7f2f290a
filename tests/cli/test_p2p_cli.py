"""applications/p2p_hrv.py (hrv_diffusion/cli/p2p.py) on tiny-sd with a synthetic HRV of the right shape."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from figures import only, read
from PIL import Image

from hrv_diffusion.cli.p2p import main
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.files import write_head_roles

ROOT = Path(__file__).resolve().parents[2]
PAIR = "a blue car_to_a red car"
README = ["--use_soft_vector", "--concepts", "Color", "--prompts", "a blue car", "a red car", "--target_token", "red",
          "--seeds", "20", "--experiment_num", "1", "--cross_replace_steps", "0.8", "--self_replace_steps", "0.9",
          "--save_original_p2p", "--original_p2p_cross_replace_steps", "0.8",
          "--original_p2p_self_replace_steps", "0.4"]


@pytest.fixture(scope="module")
def hrv_file(tmp_path_factory):
    """A synthetic paper-shaped HRV for tiny-sd: 34 concepts x 22 heads, rows summing to H, with its head index."""
    folder = tmp_path_factory.mktemp("hrv")
    layout = head_layout(load_pipeline("tiny-sd").unet)
    values = np.random.default_rng(0).gamma(0.5, size=(34, layout.num_heads)).astype(np.float32)
    values = values / values.sum(1, keepdims=True) * layout.num_heads
    np.save(folder / "category_vectors_synthetic.npy", values)
    np.save(folder / "head_index_synthetic.npy", np.array(layout.labels))
    return folder / "category_vectors_synthetic.npy"


def run(tmp_path, hrv_file, *extra, flags=README):
    return main([*flags, "--model_card", "tiny-sd", "--hrv", str(hrv_file), "--n_inference_steps", "3",
                 "--output_path", str(tmp_path), "--quiet", *extra])


def test_readme_example_writes_the_published_layout(tmp_path, hrv_file, capsys):
    assert run(tmp_path, hrv_file) == 0
    exp = tmp_path / "exp_1"
    images = sorted(p.relative_to(exp).as_posix() for p in exp.rglob("*.png"))
    assert images == [f"Color_0.9/{PAIR}/20.png", f"comparison/{PAIR}.png", f"original_p2p/{PAIR}/20.png",
                      "source/a blue car/20.png"]
    figure = read(exp / "comparison" / f"{PAIR}.png")  # one row (seed 20): source, P2P, P2P-HRV left to right
    places = [only(figure, read(exp / name / "20.png")) for name in ("source/a blue car", f"original_p2p/{PAIR}",
                                                                     f"Color_0.9/{PAIR}")]
    assert len({y for y, _ in places}) == 1 and places[0][1] < places[1][1] < places[2][1]
    for path in exp.rglob("[0-9]*.png"):
        with Image.open(path) as image:
            assert image.mode == "RGB" and image.size == (32, 32)
    manifest = json.loads((exp / "Color_0.9" / PAIR / "manifest.json").read_text())
    assert manifest["method"]["restoration"] == "hrv" and manifest["target_token"] == "red"
    assert manifest["hrv_fingerprint"] and manifest["self_max_queries"] == 16
    assert "2 edited and 1 source images written" in capsys.readouterr().out

    # resume: nothing left to do
    assert run(tmp_path, hrv_file) == 0
    assert "0 edited and 0 source images written" in capsys.readouterr().out
    # one more seed: only its images
    assert run(tmp_path, hrv_file, "--seeds", "20", "30") == 0
    assert "2 edited and 1 source images written" in capsys.readouterr().out
    figure = read(exp / "comparison" / f"{PAIR}.png")  # a row per seed now
    seed_20, seed_30 = (only(figure, read(exp / f"source/a blue car/{seed}.png")) for seed in (20, 30))
    assert seed_20[0] < seed_30[0]


def test_changed_settings_stop_instead_of_mixing(tmp_path, hrv_file, capsys):
    assert run(tmp_path, hrv_file) == 0
    capsys.readouterr()
    assert run(tmp_path, hrv_file, "--cross_replace_steps", "0.5") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "method.cross_replace_steps=0.8" in err and "--overwrite" in err
    assert run(tmp_path, hrv_file, "--cross_replace_steps", "0.5", "--overwrite") == 0
    manifest = json.loads((tmp_path / "exp_1" / "Color_0.9" / PAIR / "manifest.json").read_text())
    assert manifest["method"]["cross_replace_steps"] == 0.5


@pytest.mark.parametrize("flags, message", [
    (["--use_soft_vector", "--prompts", "a blue car", "a red car"], "--target_token is required"),
    (["--use_soft_vector", "--prompts", "a blue car", "a red car", "--target_token", "green"],
     "not a word of the target"),
    (["--use_soft_vector", "--prompts", "a blue car", "a big red car", "--target_token", "red"],
     "same number of words"),
    (["--use_soft_vector", "--concepts", "Colour", "--prompts", "a blue car", "a red car", "--target_token", "red"],
     "unknown concept 'Colour'"),
    (["--prompts", "a blue car", "a red car", "--target_token", "red"], "--use_soft_vector"),
    (["--prompts", "a blue car"], "SOURCE TARGET"),
    (["--prompts", "a red car", "A red  car"], "the source and the target prompt are the same ('a red car')"),
    (["--use_soft_vector", "--prompts", "a blue car", "a red car", "--target_token", "red", "--reweight", "red"],
     "WORD=FACTOR"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, hrv_file, capsys, flags, message):
    assert run(tmp_path, hrv_file, flags=flags) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "exp_1").exists()  # nothing was written


def test_extras_and_modes_name_their_folders(tmp_path, hrv_file):
    flags = ["--concepts", "Color", "Shape", "--prompts", "a blue car", "a blue sports car", "--target_token",
             "sports", "--seeds", "1", "--save_original_p2p"]
    assert run(tmp_path, hrv_file, "--use_soft_vector", "--edit", "refine", "--local_blend", "car", "car",
               "--blend_with_hrv", "--save_masks", flags=flags) == 0
    pair = "a blue car_to_a blue sports car"
    folders = sorted(p.parent.parent.name for p in (tmp_path / "exp_1").rglob("1.png"))
    assert folders == ["Color_0.9_refine_blend", "Shape_0.9_refine_blend", "masks", "original_p2p_refine_blend",
                       "source"]
    with Image.open(tmp_path / "exp_1" / "masks" / pair / "1.png") as mask:
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}

    roles = tmp_path / "head_roles_top.csv"
    labels = head_layout(load_pipeline("tiny-sd").unet).labels
    write_head_roles(roles, ["Color"], [labels[:5]])
    flags = ["--concepts", "Color", "--prompts", "a blue car", "a red car", "--target_token", "red", "--seeds", "1",
             "--experiment_num", "2"]
    assert run(tmp_path, hrv_file, "--head_list_path", str(roles), flags=flags) == 0
    assert run(tmp_path, hrv_file, "--head_list_path", str(roles), "--complement", flags=flags) == 0
    assert run(tmp_path, hrv_file, "--replace_all_heads", flags=flags) == 0
    folders = sorted(p.name for p in (tmp_path / "exp_2").iterdir())
    assert folders == ["Color", "all_heads_0.9", "comparison", "complement_of_Color", "source"]
    manifest = json.loads((tmp_path / "exp_2" / "complement_of_Color" / PAIR / "manifest.json").read_text())
    assert manifest["method"]["head_list"] == labels[5:]


def test_script_front_end_help():
    out = subprocess.run([sys.executable, str(ROOT / "applications" / "p2p_hrv.py"), "--help"], capture_output=True,
                         text=True, check=True, cwd=ROOT).stdout
    for flag in ("--prompts", "--target_token", "--concepts", "--seeds", "--cross_replace_steps",
                 "--self_replace_steps",
                 "--use_soft_vector", "--save_original_p2p", "--original_p2p_cross_replace_steps",
                 "--original_p2p_self_replace_steps", "--token_restoration_start_step", "--replace_all_heads",
                 "--experiment_num", "--output_path", "--hrv"):
        assert flag in out
