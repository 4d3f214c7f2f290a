"""Editing metrics against independent computations; a scored tree from a tiny-sd run with a tiny CLIP."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrv_diffusion.apps.clip import ClipScorer
from hrv_diffusion.apps.edit_metrics import (PER_IMAGE_COLUMNS, SUMMARY_COLUMNS, clip_metrics, psnr, score_edits,
                                             ssim, ssim_map, write_csv)
from hrv_diffusion.cli.p2p import main as p2p_main

pytest.importorskip("open_clip")
from tiny_clip import build_tiny_clip  # noqa: E402


def naive_ssim_map(a, b):
    """SSIM written out per window position with numpy loops (Wang et al. 2004; Gaussian 11, sigma 1.5)."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    h, wd = a.shape[0] - 10, a.shape[1] - 10
    out = np.zeros((3, h, wd))
    for c in range(3):
        x, y = a[..., c].astype(float), b[..., c].astype(float)
        for i in range(h):
            for j in range(wd):
                px, py = x[i : i + 11, j : j + 11], y[i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                out[c, i, j] = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return out.mean(0)


def test_ssim_matches_the_definition():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    np.testing.assert_allclose(ssim_map(a, b), naive_ssim_map(a, b), rtol=1e-9, atol=1e-9)
    assert ssim(a, a) == pytest.approx(1.0)
    keep = np.zeros((20, 24), bool)
    keep[5:10, 5:8] = True  # 5 x 3 window centers inside the valid area
    assert ssim(a, b, keep) == pytest.approx(naive_ssim_map(a, b)[0:5, 0:3].mean())
    assert math.isnan(ssim(a, b, np.zeros((20, 24), bool)))


def test_psnr_over_kept_pixels():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0] = 10  # one pixel off by 10 in every channel
    keep = np.ones((4, 4), bool)
    assert psnr(a, b, keep) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 16)))
    keep[0, 0] = False
    assert psnr(a, b, keep) == 100.0  # identical where kept
    assert psnr(a, b) == pytest.approx(10 * math.log10(255 ** 2 / (100 / 16)))


@pytest.fixture(scope="module")
def scorer():
    return ClipScorer.from_model(*build_tiny_clip(), device="cpu", batch_size=3)


def test_clip_metrics_are_cosines(scorer):
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(4)]
    out = clip_metrics(scorer, images[:2], images[2:], ["a blue car", "a cat"], ["a red car", "a dog"])
    with torch.no_grad():
        enc = lambda im: scorer.model.encode_image(scorer.preprocess(im)[None])[0]  # noqa: E731
        txt = lambda t: scorer.model.encode_text(scorer.tokenizer([t]))[0]  # noqa: E731
        for i, (src, tgt) in enumerate([("a blue car", "a red car"), ("a cat", "a dog")]):
            e, s = F.normalize(enc(images[i]), dim=0), F.normalize(enc(images[2 + i]), dim=0)
            ts, tt = F.normalize(txt(src), dim=0), F.normalize(txt(tgt), dim=0)
            assert out["clip_target"][i] == pytest.approx(float(F.cosine_similarity(e, tt, dim=0)), abs=1e-5)
            assert out["clip_source_target"][i] == pytest.approx(float(s @ tt), abs=1e-5)
            assert out["clip_direction"][i] == pytest.approx(float(F.cosine_similarity(e - s, tt - ts, dim=0)),
                                                             abs=1e-5)


def test_scores_of_a_run(tmp_path, scorer):
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import load_pipeline

    layout = head_layout(load_pipeline("tiny-sd").unet)
    values = np.random.default_rng(0).gamma(0.5, size=(34, layout.num_heads)).astype(np.float32)
    np.save(tmp_path / "category_vectors_x.npy", values / values.sum(1, keepdims=True) * layout.num_heads)
    np.save(tmp_path / "head_index_x.npy", np.array(layout.labels))
    out = tmp_path / "out"
    assert p2p_main(["--use_soft_vector", "--save_original_p2p", "--prompts", "a blue car", "a red car",
                     "--target_token", "red", "--seeds", "1", "2", "--model_card", "tiny-sd", "--hrv",
                     str(tmp_path / "category_vectors_x.npy"), "--n_inference_steps", "2", "--output_path", str(out),
                     "--save_masks", "--quiet", "--blend_resolution", "16"]) == 0
    rows, summary = score_edits(out / "exp_1", scorer)
    assert sorted((r["method"], r["seed"]) for r in rows) == [("Color_0.9", 1), ("Color_0.9", 2),
                                                              ("original_p2p", 1), ("original_p2p", 2)]
    for row in rows:
        assert -1 <= row["clip_target"] <= 1 and -1 <= row["clip_direction"] <= 1
        assert 0 <= row["unedited_fraction"] <= 1 and row["psnr_image"] > 0
    assert {s["method"]: s["images"] for s in summary} == {"Color_0.9": 2, "original_p2p": 2}
    mean = np.mean([r["clip_target"] for r in rows if r["method"] == "original_p2p"])
    assert [s for s in summary if s["method"] == "original_p2p"][0]["clip_target"] == pytest.approx(mean)
    path = write_csv(tmp_path / "per_image.csv", rows, PER_IMAGE_COLUMNS)
    write_csv(tmp_path / "summary.csv", summary, SUMMARY_COLUMNS)
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == PER_IMAGE_COLUMNS and len(read) == 4
