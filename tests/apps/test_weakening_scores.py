"""Scoring ordered-weakening images: CLIP cosine, averaging over seeds and prompts, the published CSV, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hrv_diffusion.cli.weakening_scores import main as scores_main
from hrv_diffusion.apps.weakening_experiments import experiment
from hrv_diffusion.apps.clip import ClipScorer, ClipWeightsUnavailable, Scorer
from hrv_diffusion.apps.weakening_scores import (read_scores_csv, score_experiment, summary_frame, write_per_image_csv,
                                                 write_scores_csv)

from conftest import shared_reference_file  # noqa: E402

open_clip = pytest.importorskip("open_clip")
from tiny_clip import build_tiny_clip  # noqa: E402

PROMPTS = ["a cubist style painting of a castle", "a sepia style painting of a forest"]
K_LIST = [0, 11, 128]
SEEDS = [10, 20, 30]


@pytest.fixture(scope="module")
def tiny_clip():
    return build_tiny_clip()


@pytest.fixture(scope="module")
def scorer(tiny_clip):
    return ClipScorer.from_model(*tiny_clip, device="cpu", batch_size=4)


def random_image(rng, size=40) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


def reference_cosine(tiny_clip, image, text) -> float:
    """Independent: one image, one text, torch's cosine_similarity."""
    model, preprocess, tokenizer = tiny_clip
    with torch.no_grad():
        i = model.encode_image(preprocess(image.convert("RGB")).unsqueeze(0))
        t = model.encode_text(tokenizer([text]))
    return float(F.cosine_similarity(i, t).item())


class MeanPixelScorer:
    """A toy scorer: mean pixel value / 255 plus len(text) / 100 (checks the averaging, not CLIP)."""

    def score(self, images, texts):
        return np.array([np.asarray(im, dtype=np.float64).mean() / 255 + len(t) / 100 for im, t in zip(images, texts)])


def make_tree(root: Path, prompts=PROMPTS, k_list=K_LIST, seeds=SEEDS, number=5, size=40) -> Path:
    rng = np.random.default_rng(1)
    for prompt in prompts:
        for order in ("top", "bottom"):
            for k in k_list:
                for seed in seeds:
                    path = root / f"exp_{number}" / prompt / order / f"{order}_{k}" / f"{seed}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    random_image(rng, size).save(path)
    return root


# ------------------------------------------------------------------------------------------- ClipScorer

def test_score_is_the_raw_cosine(tiny_clip, scorer):
    rng = np.random.default_rng(0)
    images = [random_image(rng) for _ in range(6)]
    texts = ["cubist", "sepia", "cubist", "red", "a long text about a castle", "sepia"]
    scores = scorer.score(images, texts)
    assert scores.shape == (6,) and scores.dtype == np.float64
    expected = [reference_cosine(tiny_clip, im, t) for im, t in zip(images, texts)]
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    assert np.all(np.abs(scores) <= 1.0)  # no x100, and raw (can be negative: no clamp)
    one_by_one = ClipScorer.from_model(*tiny_clip, device="cpu", batch_size=1)
    np.testing.assert_allclose(one_by_one.score(images, texts), scores, atol=1e-6)
    assert isinstance(scorer, Scorer)


def test_score_needs_one_text_per_image(scorer):
    with pytest.raises(ValueError, match="one text per image"):
        scorer.score([Image.new("RGB", (8, 8))], ["a", "b"])


def test_grayscale_and_rgba_images_are_converted(tiny_clip, scorer):
    rgb = random_image(np.random.default_rng(3))
    for mode in ("L", "RGBA"):
        image = rgb.convert(mode)
        assert scorer.score([image], ["red"])[0] == pytest.approx(reference_cosine(tiny_clip, image, "red"), abs=1e-6)


def test_missing_checkpoint_file_says_how_to_provide_weights(tmp_path):
    missing = tmp_path / "open_clip_pytorch_model.bin"
    with pytest.raises(ClipWeightsUnavailable) as info:
        ClipScorer("ViT-H-14", pretrained=str(missing), device="cpu")
    message = str(info.value)
    assert str(missing) in message and "cache" in message and "--clip_pretrained" in message


def test_missing_hub_weights_say_how_to_provide_them(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'laion2b_s32b_b79k': cannot find the requested files "
                           "in the local cache")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", offline)
    with pytest.raises(ClipWeightsUnavailable) as info:
        ClipScorer(device="cpu")
    message = str(info.value)
    assert "laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in message
    assert "pretrained=/path/to/open_clip_pytorch_model.bin" in message
    assert "HF_HOME" in message and "cache_dir" in message


def test_unknown_model_is_not_reported_as_missing_weights():
    with pytest.raises(ValueError, match="unknown CLIP model"):
        ClipScorer("ViT-Q-99", pretrained=None, device="cpu")


# ------------------------------------------------------------------------------------------- score_experiment

def expected_summary(root: Path, number=5) -> dict[str, float]:
    """Independent: per prompt the mean over seeds of the toy score, then sum over prompts / number of prompts."""
    texts = {"a cubist style painting of a castle": "cubist", "a sepia style painting of a forest": "sepia"}
    out = {}
    for order in ("top", "bottom"):
        for k in K_LIST:
            total = 0.0
            for prompt in PROMPTS:
                values = []
                for seed in SEEDS:
                    path = root / f"exp_{number}" / prompt / order / f"{order}_{k}" / f"{seed}.png"
                    pixels = np.asarray(Image.open(path))
                    values.append(pixels.astype(np.float64).mean() / 255 + len(texts[prompt]) / 100)
                total += sum(values) / len(values)
            out[f"{order}_{k}"] = total / len(PROMPTS)
    return out


def test_averages_over_seeds_then_prompts(tmp_path):
    root = make_tree(tmp_path)
    summary, per_image = score_experiment(root, 5, MeanPixelScorer(), chunk_size=7)
    expected = expected_summary(root)
    assert list(summary["key"]) == [f"top_{k}" for k in K_LIST] + [f"bottom_{k}" for k in K_LIST]
    np.testing.assert_allclose(summary["value"], [expected[key] for key in summary["key"]], rtol=1e-12)
    assert set(summary["n_prompts"]) == {2}
    assert len(per_image) == 2 * 2 * 3 * 3
    assert list(per_image.columns) == ["experiment", "prompt", "order", "k", "seed", "text", "score", "path"]
    row = per_image[(per_image["prompt"] == PROMPTS[1]) & (per_image["order"] == "bottom") & (per_image["k"] == 11)
                    & (per_image["seed"] == 20)].iloc[0]
    assert row["text"] == "sepia" and row["experiment"] == 5
    assert row["path"] == f"exp_5/{PROMPTS[1]}/bottom/bottom_11/20.png"
    pixels = np.asarray(Image.open(root / row["path"]), dtype=np.float64)
    assert row["score"] == pytest.approx(pixels.mean() / 255 + 0.05)


def test_score_experiment_with_clip_matches_direct_cosines(tmp_path, tiny_clip, scorer):
    root = make_tree(tmp_path, k_list=[0, 11], seeds=[10, 20])
    summary, per_image = score_experiment(root, experiment(5), scorer, seeds=(10, 20))
    for _, row in per_image.sample(4, random_state=0).iterrows():
        assert row["score"] == pytest.approx(reference_cosine(tiny_clip, Image.open(root / row["path"]), row["text"]),
                                             abs=1e-6)
    top_11 = per_image[(per_image["order"] == "top") & (per_image["k"] == 11)]
    value = top_11.groupby("prompt")["score"].mean().sum() / 2
    assert summary.set_index("key").loc["top_11", "value"] == pytest.approx(value, abs=1e-12)


def test_k_list_and_seeds_select(tmp_path):
    root = make_tree(tmp_path)
    summary, per_image = score_experiment(root, 5, MeanPixelScorer(), seeds=[30], k_list=[128, 0])
    assert list(summary["key"]) == ["top_0", "top_128", "bottom_0", "bottom_128"]
    assert set(per_image["seed"]) == {30}


def test_missing_images_raise(tmp_path):
    root = make_tree(tmp_path)
    (root / "exp_5" / PROMPTS[0] / "top" / "top_11" / "20.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 36 images are missing"):
        score_experiment(root, 5, MeanPixelScorer())
    with pytest.raises(FileNotFoundError, match="missing"):
        score_experiment(root, 5, MeanPixelScorer(), k_list=[0, 11, 21])
    summary, _ = score_experiment(root, 5, MeanPixelScorer(), seeds=[10, 30])  # the missing seed left out
    assert len(summary) == 6


def test_foreign_prompt_folder_raises_instead_of_reusing_a_text(tmp_path):
    root = make_tree(tmp_path, prompts=PROMPTS + ["a photo of a castle"])
    with pytest.raises(ValueError, match="a photo of a castle"):
        score_experiment(root, 5, MeanPixelScorer())


def test_no_experiment_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="exp_5"):
        score_experiment(tmp_path, 5, MeanPixelScorer())


# ------------------------------------------------------------------------------------------- files

def test_scores_csv_exact_format_and_round_trip(tmp_path):
    values = {"bottom_11": 0.22, "top_0": 0.23534, "top_11": 0.176849, "bottom_0": 0.23534, "top_128": 0.1268,
              "bottom_128": 0.12674}
    path = write_scores_csv(tmp_path / "hp_scores_wo_category_exp_5.csv", values)
    expected = ("Key,Value\r\ntop_0,0.2353\r\ntop_11,0.1768\r\ntop_128,0.1268\r\n"
                "bottom_0,0.2353\r\nbottom_11,0.2200\r\nbottom_128,0.1267\r\n")
    assert path.read_bytes() == expected.encode()
    back = read_scores_csv(path)
    assert list(back.columns) == ["key", "order", "k", "value"]
    assert list(back["key"]) == ["top_0", "top_11", "top_128", "bottom_0", "bottom_11", "bottom_128"]
    assert back.set_index("key").loc["bottom_11", "value"] == 0.22
    write_scores_csv(tmp_path / "again.csv", back)
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_published_file_round_trips_byte_for_byte(tmp_path):
    REFERENCE = shared_reference_file("hp_results/hp_scores_wo_category_exp_5.csv")
    summary = read_scores_csv(REFERENCE)
    assert len(summary) == 30 and list(summary["k"][:3]) == [0, 1, 11]
    out = write_scores_csv(tmp_path / "out.csv", summary)
    assert out.read_bytes() == REFERENCE.read_bytes()


def test_read_rejects_other_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Category,Head position\r\nColor,[]\r\n")
    with pytest.raises(ValueError, match="Key,Value"):
        read_scores_csv(bad)
    bad.write_text("Key,Value\r\nmiddle_3,0.1\r\n")
    with pytest.raises(ValueError, match="row 2"):
        read_scores_csv(bad)
    with pytest.raises(ValueError):
        summary_frame({"top_x": 1.0})


def test_per_image_csv(tmp_path):
    root = make_tree(tmp_path / "out", k_list=[0], seeds=[10])
    _, per_image = score_experiment(root, 5, MeanPixelScorer(), seeds=[10])
    path = write_per_image_csv(tmp_path / "per_image.csv", per_image)
    back = pd.read_csv(path)
    assert list(back.columns) == list(per_image.columns) and len(back) == 4
    np.testing.assert_allclose(back["score"], per_image["score"], rtol=1e-15)


# ------------------------------------------------------------------------------------------- CLI

def test_cli_writes_both_csvs(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # --scorer imports this module by name
    root = make_tree(tmp_path / "hp_outputs")
    results = tmp_path / "hp_results"
    code = scores_main(["--output_path", str(root), "--experiment_num", "5", "--results_dir", str(results),
                        "--scorer", "test_weakening_scores:MeanPixelScorer", "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = read_scores_csv(results / "hp_scores_wo_category_exp_5.csv")
    expected = expected_summary(root)
    np.testing.assert_allclose(summary["value"], [round(expected[k], 4) for k in summary["key"]], atol=1e-12)
    assert len(pd.read_csv(results / "hp_scores_per_image_exp_5.csv")) == 36
    assert "MoRHF" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys):
    root = make_tree(tmp_path / "hp_outputs", k_list=[0], seeds=[10])
    code = scores_main(["--output_path", str(root), "--experiment_num", "5", "--results_dir", str(tmp_path),
                        "--clip_pretrained", str(tmp_path / "nothing.bin"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: CLIP weights") and err.count("\n") == 1
    assert scores_main(["--output_path", str(tmp_path / "none"), "--experiment_num", "5"]) == 2
    assert "no folder" in capsys.readouterr().err
    assert scores_main(["--output_path", str(root), "--experiment_num", "12"]) == 2
    assert "no experiment 12" in capsys.readouterr().err


def test_a_checkpoint_of_another_architecture_names_the_flag(tmp_path):
    """open_clip's ``AssertionError: text pos_embed width changed!`` becomes a UserError naming the checkpoint and
    --clip_model (issue 20); a small architecture keeps the test fast."""
    from hrv_diffusion.errors import UserError

    checkpoint = tmp_path / "other.pt"
    torch.save({"positional_embedding": torch.zeros(77, 8)}, checkpoint)  # a text width no ViT-S-32 has
    with pytest.raises(UserError, match=rf"checkpoint {checkpoint} does not fit the architecture --clip_model "
                                        r"ViT-S-32 \(text pos_embed width changed!\): pass the architecture"):
        ClipScorer("ViT-S-32", pretrained=str(checkpoint), device="cpu")
