"""A&E runs on the toy (hrv-attend-excite in its three modes, hrv-multi-object): a rerun with the same settings
regenerates and rewrites nothing; a changed result-changing setting is refused with one line naming --overwrite,
before any image is touched; --overwrite regenerates; an interrupt keeps the finished images; --height/--width.

The pipeline is loaded once per test module (``load_pipeline`` cached): every command call still resolves its
flags, claims its folders and generates through the real code.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from figures import only, read
from PIL import Image

from hrv_diffusion.cli.attend_excite import main as ae_main
from hrv_diffusion.cli.multi_object import main as bench_main

PROMPT = "a red circle and a blue square"
QUICK = ["--model_card", "toy", "--n_inference_steps", "2", "--max_iter_to_alter", "2", "--thresholds", "0:0.05",
         "--max_refinement_steps", "2", "--quiet"]
AE = ["--prompt", PROMPT, "--token_words", "circle", "square", "--concepts", "Shape", "--seeds", "1", "2",
      "--batch_size", "2", *QUICK]
MODE_FLAGS = {"hrv": [], "standard": ["--run_standard_attend_excite"], "sd": ["--run_standard_sd"]}
MODE_FOLDERS = {"hrv": "attend_and_excite-hrv", "standard": "original_attend_and_excite", "sd": "standard_sd"}


@pytest.fixture(autouse=True)
def one_pipeline(monkeypatch):
    import hrv_diffusion.core.models as models

    cache, load = {}, models.load_pipeline

    def cached(card, dtype="float32", device="cpu", scheduler="pndm"):
        key = (card, str(dtype), str(device), scheduler)
        if key not in cache:
            cache[key] = load(card, dtype=dtype, device=device, scheduler=scheduler)
        return cache[key]

    monkeypatch.setattr(models, "load_pipeline", cached)


def files(root: Path) -> dict:
    """{path: mtime_ns} of every image and telemetry file under ``root`` (manifests too)."""
    return {p: p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.suffix in (".png", ".json")}


def refused_once(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "--overwrite" in errors[0], err
    return errors[0]


# (command, its argv, two result-changing flag changes, a folder holding images it makes)
TABLE = {
    "ae-hrv": (ae_main, AE, [["--scale_factor", "10"], ["--n_inference_steps", "3"]], ("hrv", "exp_None")),
    "ae-standard": (ae_main, [*AE, *MODE_FLAGS["standard"]], [["--scale_factor", "10"], ["--n_inference_steps", "3"]],
                    ("standard", "exp_None")),
    "ae-sd": (ae_main, [*AE, *MODE_FLAGS["sd"]], [["--guidance_scale", "5"], ["--n_inference_steps", "3"]],
              ("sd", "exp_None")),
    "multi-object": (bench_main, ["--prompt_set", "PROMPTS", "--concepts", "Shape", "--seeds", "1", "2",
                                  "--methods", "hrv", "standard", "sd", *QUICK],
                     [["--scale_factor", "10"], ["--n_inference_steps", "3"]], ("hrv", "exp_prompts")),
}


@pytest.mark.parametrize("name", list(TABLE))
def test_rerun_same_refuse_changed_overwrite_regenerates(name, tmp_path, capsys):
    main, argv, changes, (mode, exp) = TABLE[name]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"{PROMPT}\n")
    argv = [str(prompts) if a == "PROMPTS" else a for a in argv] + ["--output_path", str(tmp_path / "out")]
    folder = tmp_path / "out" / MODE_FOLDERS[mode] / exp / PROMPT
    assert main(argv) == 0
    first = files(tmp_path / "out")
    assert {"1.png", "2.png", "1.json", "2.json", "manifest.json"} <= {p.name for p in folder.iterdir()}
    assert (folder.parent / f"{PROMPT}.png").is_file()  # the grid
    capsys.readouterr()

    manifest = (folder / "manifest.json").read_text()
    assert main(argv) == 0  # the same settings: nothing made, no image or telemetry rewritten (the grid neither)
    assert "0 images generated (0 files written)" in capsys.readouterr().out
    assert {p: t for p, t in files(tmp_path / "out").items() if p.name != "manifest.json"} == {
        p: t for p, t in first.items() if p.name != "manifest.json"}
    assert (folder / "manifest.json").read_text() == manifest  # rewritten by the claim, with the same content
    first = files(tmp_path / "out")

    for change in changes:
        assert main([*argv, *change]) == 2
        line = refused_once(capsys)
        assert str(folder) in line or MODE_FOLDERS[mode] in line
        assert files(tmp_path / "out") == first  # nothing touched, not even the manifest

    assert main([*argv, *changes[0], "--overwrite"]) == 0
    after = files(tmp_path / "out")
    assert all(after[p] != first[p] for p in first if p.name in ("1.png", "2.png"))
    flag, value = changes[0]
    manifest = json.loads((folder / "manifest.json").read_text())
    key = {"--scale_factor": "scale_factor", "--guidance_scale": "guidance_scale"}[flag]
    assert manifest["settings"][key] == float(value)
    assert json.loads((folder / "1.json").read_text())["settings"][key] == float(value)


def test_plain_sd_keeps_its_images_when_only_an_attend_excite_setting_changes(tmp_path, capsys):
    argv = [*AE, *MODE_FLAGS["sd"], "--output_path", str(tmp_path)]
    assert ae_main(argv) == 0
    before = files(tmp_path)
    capsys.readouterr()
    assert ae_main([*argv, "--scale_factor", "10", "--sigma", "2", "--concepts", "Color"]) == 0
    assert "0 images generated (0 files written), 2 already present" in capsys.readouterr().out
    assert {p: t for p, t in files(tmp_path).items() if p.name != "manifest.json"} == {
        p: t for p, t in before.items() if p.name != "manifest.json"}


def test_seeds_are_packed_into_even_batches_and_an_interrupt_keeps_the_finished_ones(tmp_path, monkeypatch, capsys):
    import hrv_diffusion.apps.attend_excite_runs as runs

    calls, real = [], runs.generate_attend_excite

    def interrupt_second(pipe, prompts, latents, *args, **kwargs):
        calls.append(len(prompts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(pipe, prompts, latents, *args, **kwargs)

    monkeypatch.setattr(runs, "generate_attend_excite", interrupt_second)
    argv = [*AE, *MODE_FLAGS["sd"], "--seeds", "1", "2", "3", "4", "5", "--batch_size", "4",
            "--output_path", str(tmp_path)]
    assert ae_main(argv) == 130
    assert calls == [2, 3]  # 5 seeds at 4 per batch: 2 + 3 (pack's even shares), not 4 + 1
    err = capsys.readouterr().err
    assert "continue with" in err and "--seeds 1 2 3 4 5" in err
    folder = tmp_path / "standard_sd" / "exp_None" / PROMPT
    assert sorted(p.name for p in folder.glob("*.png")) == ["1.png", "2.png"]
    monkeypatch.setattr(runs, "generate_attend_excite", real)
    assert ae_main(argv) == 0
    assert "3 images generated (7 files written), 2 already present" in capsys.readouterr().out
    grid = read(folder.parent / f"{PROMPT}.png")
    places = [only(grid, read(folder / f"{seed}.png")) for seed in (1, 2, 3, 4, 5)]  # each seed, enlarged
    tops, lefts = sorted({y for y, _ in places}), sorted({x for _, x in places})
    assert len(tops) == 2 and len(lefts) == 3  # the reference's arrangement: 3 columns, 2 rows
    assert places[4] == (tops[1], lefts[1])  # the 5th seed: second row, second column


@pytest.mark.parametrize("mode", ["hrv", "standard", "sd"])
def test_a_non_square_size(mode, tmp_path):
    argv = [*AE, *MODE_FLAGS[mode], "--height", "48", "--width", "32", "--output_path", str(tmp_path)]
    assert ae_main(argv) == 0
    folder = tmp_path / MODE_FOLDERS[mode] / "exp_None" / PROMPT
    for seed in (1, 2):
        assert Image.open(folder / f"{seed}.png").size == (32, 48)  # (width, height)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert (manifest["height"], manifest["width"]) == (48, 32)
