"""The intended-sense measure (apps/intended_sense.py, hrv-intended-sense) with a tiny CLIP built in code."""
from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hrv_diffusion.apps.clip import ClipScorer
from hrv_diffusion.apps.intended_sense import Senses, measure, prompt_images
from hrv_diffusion.cli.intended_sense import main

pytest.importorskip("open_clip")
from tiny_clip import build_tiny_clip  # noqa: E402

PROMPT = "A vase in lavender color"
SENSES = Senses("a lavender-colored vase", "a vase with lavender flowers")



def tiny_scorer():
    return ClipScorer.from_model(*build_tiny_clip(), device="cpu", batch_size=3)


def make_folder(root, sdxl=False, seeds=(1, 2, 3, 4), prompt=PROMPT):
    folder = root / f"{'sdxl_' if sdxl else ''}prompt_01_{prompt.replace(' ', '_')}"
    rng = np.random.default_rng(len(str(root)))
    for name in (("standard_sdxl", "sdxl-hrv") if sdxl else ("standard_sd", "sd-hrv")):
        (folder / name).mkdir(parents=True)
        for s in seeds:
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / name / f"{s}.png")
    (folder / "manifest.json").write_text(json.dumps({"prompt": prompt}))
    return folder


def direct(model_parts, path, text) -> float:
    model, preprocess, tokenizer = model_parts
    with torch.no_grad():
        image = model.encode_image(preprocess(Image.open(path).convert("RGB")).unsqueeze(0))
        return float(F.cosine_similarity(image, model.encode_text(tokenizer([text]))).item())


def test_rates_and_probabilities_against_direct_cosines(tmp_path):
    folder = make_folder(tmp_path)
    parts = build_tiny_clip()
    summary, per_image = measure(ClipScorer.from_model(*parts, device="cpu", batch_size=3), [folder],
                                 lambda prompt: SENSES)
    assert [(r["method"], r["n_images"]) for r in summary] == [("standard", 4), ("adjusted", 4)]
    for method, row in zip(("standard", "adjusted"), summary):
        mine = [r for r in per_image if r["method"] == method]
        assert [r["seed"] for r in mine] == [1, 2, 3, 4]
        intended = []
        for r in mine:
            d, u = direct(parts, r["path"], SENSES.desired), direct(parts, r["path"], SENSES.undesired)
            assert r["cos_desired"] == pytest.approx(d, abs=1e-5) and r["cos_undesired"] == pytest.approx(u, abs=1e-5)
            assert r["p_desired"] == pytest.approx(math.exp(100 * d) / (math.exp(100 * d) + math.exp(100 * u)),
                                                   abs=1e-4)
            intended.append(d > u)
        assert row["intended_rate"] == pytest.approx(np.mean(intended))
        assert row["mean_p_desired"] == pytest.approx(np.mean([r["p_desired"] for r in mine]))


def test_command_writes_both_csvs(tmp_path, monkeypatch, capsys):
    module = tmp_path / "tiny_scorer_module.py"
    module.write_text("import importlib.util\n"  # this test file, loaded by path (no package needed)
                      f"spec = importlib.util.spec_from_file_location('_tiny_clip_tests', {__file__!r})\n"
                      "tests = importlib.util.module_from_spec(spec)\n"
                      "spec.loader.exec_module(tests)\n"
                      "tiny_scorer = tests.tiny_scorer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sd, sdxl = make_folder(tmp_path / "a"), make_folder(tmp_path / "b", sdxl=True, prompt="A rose-colored vase")
    phrases = tmp_path / "phrases.csv"
    phrases.write_text("prompt,desired_text,undesired_text\n"
                       f"{PROMPT},{SENSES.desired},{SENSES.undesired}\n"
                       "A rose-colored vase,a rose-colored vase,a vase with roses\n")
    out = tmp_path / "res" / "sense.csv"
    assert main([str(sd), str(sdxl), "--phrases", str(phrases), "--out", str(out),
                 "--scorer", "tiny_scorer_module:tiny_scorer"]) == 0, capsys.readouterr().err
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["prompt"], r["method"]) for r in rows] == [(PROMPT, "standard"), (PROMPT, "adjusted"),
                                                          ("A rose-colored vase", "standard"),
                                                          ("A rose-colored vase", "adjusted")]
    assert rows[2]["undesired_text"] == "a vase with roses" and rows[0]["n_images"] == "4"
    with open(tmp_path / "res" / "sense_per_image.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 16
    assert "intended" in capsys.readouterr().out
    sys.modules.pop("tiny_scorer_module", None)


def test_errors(tmp_path, capsys):
    folder = make_folder(tmp_path)
    assert main([str(folder)]) == 2
    assert "pass the two senses" in capsys.readouterr().err
    assert main([str(tmp_path), "--desired_text", "a", "--undesired_text", "b"]) == 2
    assert "is not an SD-HRV prompt folder" in capsys.readouterr().err
    assert prompt_images(folder)[0] == PROMPT


def test_same_senses_are_refused_before_clip(tmp_path, capsys):
    folder = make_folder(tmp_path)
    # CLIP lowercases and splits on whitespace: these two phrases are one text to it
    assert main([str(folder), "--desired_text", "a lavender vase", "--undesired_text", "A  lavender vase",
                 "--scorer", "no_such_module:nothing"]) == 2
    err = capsys.readouterr().err
    assert "--desired_text, --undesired_text: the desired and the undesired sense are the same text" in err
    phrases = tmp_path / "phrases.csv"
    phrases.write_text(f"prompt,desired_text,undesired_text\n{PROMPT},a lavender-colored vase,a vase with lavender "
                       "flowers\nA rose vase,a rose vase,a rose vase\n")
    assert main([str(folder), "--phrases", str(phrases), "--scorer", "no_such_module:nothing"]) == 2
    err = capsys.readouterr().err
    assert f"{phrases} line 3 (prompt 'A rose vase'): the desired and the undesired sense are the same" in err


class TieScorer:
    """Dark images are as close to both phrases (a tie); bright ones closer to the desired phrase."""

    def score(self, images, texts):
        return np.array([0.3 if np.asarray(i).mean() < 128 else (0.4 if t == SENSES.desired else 0.2)
                         for i, t in zip(images, texts)])


def test_ties_are_not_intended_and_counted_apart(tmp_path, monkeypatch, capsys):
    folder = make_folder(tmp_path)
    for method, dark in (("standard_sd", (1, 2, 3)), ("sd-hrv", (4,))):
        for seed in dark:
            Image.new("RGB", (32, 32)).save(folder / method / f"{seed}.png")
        for seed in {1, 2, 3, 4} - set(dark):
            Image.new("RGB", (32, 32), (255, 255, 255)).save(folder / method / f"{seed}.png")
    summary, per_image = measure(TieScorer(), [folder], lambda prompt: SENSES)
    standard, adjusted = summary
    assert (standard["intended_rate"], standard["n_ties"], standard["tie_rate"]) == (0.25, 3, 0.75)
    assert (adjusted["intended_rate"], adjusted["n_ties"], adjusted["tie_rate"]) == (0.75, 1, 0.25)
    assert [r["tie"] for r in per_image if r["method"] == "standard"] == [True, True, True, False]
    assert not any(r["intended"] for r in per_image if r["tie"])
    (tmp_path / "tie_scorer_module.py").write_text(f"import sys\nTieScorer = sys.modules[{__name__!r}].TieScorer\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "sense.csv"
    assert main([str(folder), "--desired_text", SENSES.desired, "--undesired_text", SENSES.undesired, "--out",
                 str(out), "--scorer", "tie_scorer_module:TieScorer"]) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "standard intended 25.0% of 4, ties 3 (75.0%)" in printed and "note: 4 of 8 images tie" in printed
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["n_ties"], r["tie_rate"]) for r in rows] == [("3", "0.750000"), ("1", "0.250000")]
    sys.modules.pop("tie_scorer_module", None)
