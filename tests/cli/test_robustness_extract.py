"""Issue 14, item 2: extraction is strict about incomplete data; --allow_partial writes and records coverage."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrv_diffusion.cli.extract import main
from hrv_diffusion.hrv.shards import Shard, save_shard

LABELS = [f"{place}, layer: {layer}, head: {head}" for place, layer in (("down", 1), ("mid", 0), ("up", 2))
          for head in (0, 1)]
STEM = "epoch_1_to_1_neg_prompt_False_imagenet_340_final_text_descriptions_sd_v1_4"


def write_rank(folder: Path, rank: int, indices, complete=True) -> Path:
    """One shard of a 6-prompt run split over two ranks (3 evaluations, 6 heads, 3 concepts)."""
    rng = np.random.default_rng(rank)
    counts = np.zeros((3, 6, 3), np.int64)
    for _ in indices:  # each prompt: every (t, head) votes for one concept
        counts[np.arange(3)[:, None], np.arange(6)[None, :], rng.integers(0, 3, (3, 6))] += 1
    meta = {"model_card": "CompVis/stable-diffusion-v1-4", "model_version": "sd_v1_4",
            "description": "340_final_text_descriptions", "concept_fingerprint": "x",
            "concept_names": ["Animals", "Plants", "Color"], "prompt": "imagenet", "prompt_fingerprint": "y",
            "num_prompts_total": 6, "num_inference_steps": 2, "num_evaluations": 3, "guidance_scale": 7.5,
            "negative_prompt": False, "seed": 22, "seeding": "per_prompt", "epoch": 1, "dtype": "float32",
            "head_labels": LABELS, "subset": None, "rank": rank, "world_size": 2, "complete": complete}
    return save_shard(folder / f"run_rank_{rank}.npz", Shard(counts, np.array(list(indices)), meta))


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    write_rank(tmp_path / "results", 0, range(3))
    return tmp_path / "results"


def refused(capsys) -> str:
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "--allow_partial" in last
    assert not Path("final_result").exists()  # nothing named like a complete run
    return err


def test_missing_shard_is_refused(results, capsys):
    assert main([]) == 2
    err = refused(capsys)
    assert "3 of 6 (epoch, prompt) pairs" in err and "epoch 1: 3 of 6 prompts; missing 3-5" in err


def test_corrupt_shard_is_refused(results, capsys):
    path = write_rank(results, 1, range(3, 6))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    assert main([]) == 2
    assert f"corrupt file: results/{path.name}" in refused(capsys)


def test_unfinished_checkpoint_is_refused(results, capsys):
    write_rank(results, 1, range(3, 5), complete=False)
    assert main([]) == 2
    err = refused(capsys)
    assert "unfinished checkpoint" in err and "missing 5" in err


def test_allow_partial_records_coverage(results, capsys):
    assert main(["--allow_partial"]) == 0
    cov = json.loads(Path(f"final_result/coverage_{STEM}.json").read_text())
    assert cov["complete"] is False and (cov["prompts_found"], cov["prompts_expected"]) == (3, 6)
    assert cov["epochs"]["1"]["missing"] == [[3, 5]]
    tidy = pd.read_csv("final_result/hrv_imagenet_340_final_text_descriptions_sd_v1_4.csv")
    assert set(tidy.prompts_counted) == {3} and set(tidy.prompts_expected) == {6} and not tidy.complete.any()
    assert "PARTIAL" in capsys.readouterr().err


def test_complete_run_has_no_coverage_file(results, capsys):
    write_rank(results, 1, range(3, 6))
    assert main([]) == 0
    assert not list(Path("final_result").glob("coverage_*"))
    tidy = pd.read_csv("final_result/hrv_imagenet_340_final_text_descriptions_sd_v1_4.csv")
    assert "prompts_counted" not in tidy.columns
