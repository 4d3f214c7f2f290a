"""Issue 14, item 1: weakening never keeps images of other settings, defaults to the experiment's concept, and
prints exact counts. Tiny SD (22 heads), 2 steps, one seed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hrv_diffusion.cli.weakening import main

ROOT = "ordered_weakening_analysis/hp_outputs"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "final_result").mkdir()
    for seed, name in ((1, "a.npy"), (2, "b.npy")):
        np.save(tmp_path / "final_result" / name, np.random.default_rng(seed).random((34, 22)).astype(np.float32))
    return tmp_path


def args(*extra, hrv="final_result/a.npy", concept=("--concept", "Color")):
    return ["--model_card", "tiny-sd", "--prompt", "a red car", *concept, "--seeds", "10",
            "--heads_to_be_perturbed", "0", "3", "22", "--n_inference_steps", "2", "--hrv", hrv, "--quiet", *extra]


def manifest(folder, exp="1", prompt="a red car"):
    return json.loads((folder / ROOT / f"exp_{exp}" / prompt / "manifest.json").read_text())


def test_counts_are_exact(folder, capsys):
    # k = 0 (1 image, 2 files: top_0 and bottom_0), k = 3 (2 images, 2 files), k = 22 (1 image for both orders)
    assert main(args()) == 0
    assert "4 images generated (6 files written), 0 already present" in capsys.readouterr().out
    assert len(list((folder / ROOT).rglob("*.png"))) == 6
    assert main(args()) == 0
    assert "0 images generated (0 files written), 6 already present" in capsys.readouterr().out


def test_changed_concept_is_refused_and_overwrite_regenerates(folder, capsys):
    assert main(args()) == 0
    png = folder / ROOT / "exp_1" / "a red car" / "top" / "top_3" / "10.png"
    before = png.read_bytes()
    capsys.readouterr()
    assert main(args(concept=("--concept", "Animals"))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "made with concept='Color', this run has concept='Animals'" in err and "--overwrite" in err
    assert png.read_bytes() == before and manifest(folder)["concept"] == "Color"  # nothing touched
    assert main(args("--overwrite", concept=("--concept", "Animals"))) == 0
    assert "4 images generated (6 files written), 0 already present" in capsys.readouterr().out
    assert manifest(folder)["concept"] == "Animals"
    assert png.read_bytes() != before  # other heads weakened: a new image


def test_changed_hrv_is_refused(folder, capsys):
    assert main(args()) == 0
    capsys.readouterr()
    assert main(args(hrv="final_result/b.npy")) == 2
    err = capsys.readouterr().err
    assert "hrv_fingerprint" in err and "--overwrite" in err
    assert main(args("--reweighting_factor", "0.5")) == 2
    assert "made with reweighting_factor=-2.0, this run has reweighting_factor=0.5" in capsys.readouterr().err


# the keys of the manifests written before the run harness
PREVIOUS_KEYS = ("model_version", "model_card", "concept", "head_source", "hrv_file", "hrv_fingerprint", "dtype",
                 "reweighting_factor", "reweighting_steps", "n_inference_steps", "guidance_scale", "weaken",
                 "experiment_num", "version", "prompt", "concept_word")


def test_folders_of_the_previous_version_are_continued(folder, capsys):
    assert main(args()) == 0
    path = folder / ROOT / "exp_1" / "a red car" / "manifest.json"
    stored = json.loads(path.read_text())
    old = {key: stored[key] for key in PREVIOUS_KEYS}
    old.update(version="0.1.0", model_card="/models/my copy of tiny-sd", hrv_file="elsewhere/a.npy")  # recorded only
    path.write_text(json.dumps(old, indent=1, sort_keys=True))
    capsys.readouterr()
    assert main(args()) == 0
    assert "0 images generated (0 files written), 6 already present" in capsys.readouterr().out


def test_images_without_manifest_are_not_continued(folder, capsys):
    assert main(args()) == 0
    (folder / ROOT / "exp_1" / "a red car" / "manifest.json").unlink()  # as an older version left it
    assert main(args()) == 2
    assert "holds images without a manifest.json" in capsys.readouterr().err


def test_experiment_concept_is_the_default(folder, capsys):
    # experiment 5 = Image Style prompts; 50 prompts, the subset 1/50 runs the first only
    first = ["--experiment_num", "5", "--subset_running", "--numerator", "1", "--denominator", "50"]
    assert main([a for a in args(*first, concept=()) if a not in ("--prompt", "a red car")]) == 0
    m = manifest(folder, "5", "a cubist style painting of a castle")
    assert m["concept"] == "Image Style"


def test_contradicting_concept_is_refused(folder, capsys):
    first = ["--experiment_num", "5", "--subset_running", "--numerator", "1", "--denominator", "50"]
    base = [a for a in args(*first) if a not in ("--prompt", "a red car")]  # --concept Color on exp 5
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "experiment 5 weakens 'Image Style' heads, not 'Color'" in err and "--allow_other_concept" in err
    assert not (folder / ROOT).exists()
    assert main(base + ["--allow_other_concept"]) == 0
    assert manifest(folder, "5", "a cubist style painting of a castle")["concept"] == "Color"


def test_output_path_that_is_a_file_fails_before_loading(folder, capsys, monkeypatch):
    import hrv_diffusion.core.models as models

    monkeypatch.setattr(models, "load_pipeline", lambda *a, **k: pytest.fail("the model was loaded"))
    (folder / "out").write_text("not a folder")
    assert main(args("--output_path", "out")) == 2
    assert capsys.readouterr().err == "error: --output_path out is a file: pass a folder\n"
    assert main(args("--output_path", "out/sub")) == 2
    assert "is inside out, which is a file" in capsys.readouterr().err


def test_own_prompt_without_concept_says_which_concept(folder, capsys):
    assert main(args(concept=())) == 0  # --prompt, no --concept: --experiment_num 1's concept, said aloud
    assert "note: weakening Color heads, the concept of --experiment_num 1" in capsys.readouterr().err
    assert manifest(folder)["concept"] == "Color"


# ----------------------------------------------------------------------------------------------- reruns, size

TOY = ["--model_card", "toy", "--prompt", "a red circle", "--concept", "Color", "--seeds", "1",
       "--heads_to_be_perturbed", "0", "5", "--n_inference_steps", "2", "--hrv", "paper", "--quiet"]


def pngs(root) -> dict:
    """{path: (mtime_ns, bytes)} of every PNG under ``root``."""
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*.png"))}


def test_rerun_table(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / ROOT / "exp_1" / "a red circle"
    assert main(TOY) == 0  # k = 0 (1 image under top_0 and bottom_0), k = 5 (top and bottom: 2 images)
    assert "3 images generated (4 files written), 0 already present" in capsys.readouterr().out
    first = pngs(root)
    assert len(first) == 4
    # the same settings: nothing generated, no PNG rewritten
    assert main(TOY) == 0
    assert "0 images generated (0 files written), 4 already present" in capsys.readouterr().out
    assert pngs(root) == first
    # a result-changing setting: refused before generating, in one line naming --overwrite, images untouched
    assert main(TOY + ["--reweighting_factor", "0.5"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1 and "--overwrite" in captured.err
    assert "reweighting_factor=-2.0" in captured.err and captured.out == ""
    assert pngs(root) == first and manifest(tmp_path, prompt="a red circle")["reweighting_factor"] == -2.0
    # --overwrite regenerates every image with the new setting
    assert main(TOY + ["--reweighting_factor", "0.5", "--overwrite"]) == 0
    assert "3 images generated (4 files written), 0 already present" in capsys.readouterr().out
    again = pngs(root)
    assert set(again) == set(first) and all(again[p][0] != first[p][0] for p in first)
    weakened = root / "top" / "top_5" / "1.png"
    assert again[weakened][1] != first[weakened][1]  # factor 0.5 instead of -2: another image
    assert manifest(tmp_path, prompt="a red circle")["reweighting_factor"] == 0.5


def test_height_and_width(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    assert main(TOY + ["--height", "48", "--width", "32"]) == 0
    images = sorted((tmp_path / ROOT).rglob("*.png"))
    assert len(images) == 4
    for path in images:
        with Image.open(path) as image:
            assert image.size == (32, 48)  # (width, height)
    assert manifest(tmp_path, prompt="a red circle")["height"] == 48
    assert main(TOY) == 2  # the model's own size is another setting
    assert "height=48" in capsys.readouterr().err
    assert main(TOY + ["--height", "44", "--output_path", "other"]) == 2
    assert "--height 44 is not a multiple of 8" in capsys.readouterr().err
