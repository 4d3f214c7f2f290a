"""p2p_scores.py on output trees a user may have: without masks (a note says how to add them), with an unreadable
image (one error naming it). A tiny-sd P2P run (2 steps) scored with a tiny CLIP."""
from __future__ import annotations

import csv

import pytest

from hrv_diffusion.cli.p2p import main as p2p_main
from hrv_diffusion.cli.p2p_scores import main as scores_main

pytest.importorskip("open_clip")
from tiny_clip import build_tiny_clip  # noqa: E402

P2P = ["--save_original_p2p", "--prompts", "a blue car", "a red car", "--target_token", "red", "--seeds", "1",
       "--model_card", "tiny-sd", "--n_inference_steps", "2", "--quiet", "--blend_resolution", "16",
       "--replace_all_heads"]


@pytest.fixture
def tiny_clip(monkeypatch):
    import hrv_diffusion.apps.clip as clip

    model, preprocess, tokenizer = build_tiny_clip()
    original = clip.ClipScorer
    monkeypatch.setattr(clip, "ClipScorer", lambda *a, **k: original.from_model(model, preprocess, tokenizer,
                                                                                device="cpu"))


def test_a_tree_without_masks_says_how_to_add_them(tmp_path, tiny_clip, capsys):
    out = tmp_path / "out"
    assert p2p_main([*P2P, "--output_path", str(out)]) == 0
    images = {p: p.stat().st_mtime_ns for p in out.rglob("*.png") if p.parent.name != "comparison"}  # not figures
    assert scores_main(["--output_path", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "psnr_unedited=nan" in printed
    assert "note: 2 of 2 edited images have no mask" in printed and "p2p_hrv.py with --save_masks" in printed
    # the advice works as written: the rerun adds the masks and keeps the images
    assert p2p_main([*P2P, "--output_path", str(out), "--save_masks"]) == 0
    assert {p: p.stat().st_mtime_ns for p in images} == images and list((out / "exp_1" / "masks").rglob("1.png"))
    capsys.readouterr()
    assert scores_main(["--output_path", str(out), "--quiet"]) == 0
    assert "note:" not in capsys.readouterr().out
    with open(out / "exp_1" / "edit_scores_per_image_exp_1.csv", newline="") as f:
        fractions = [float(row["unedited_fraction"]) for row in csv.DictReader(f)]
    assert len(fractions) == 2 and all(0 <= x <= 1 for x in fractions)  # a mask per image (a random tiny model's
    # region may cover the whole image: psnr_unedited is then nan, with no note)


def test_an_unreadable_image_is_one_error_naming_it(tmp_path, tiny_clip, capsys):
    out = tmp_path / "out"
    assert p2p_main([*P2P, "--output_path", str(out)]) == 0
    path = next((out / "exp_1" / "original_p2p").rglob("1.png"))
    path.write_bytes(path.read_bytes()[:80])
    assert scores_main(["--output_path", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"error: cannot read the image {path} (" in err
    assert "delete it and rerun the P2P run" in err
