"""Published outputs: relevance, HRV, per-timestep HRV, tie rule, file formats, readers, and the extract CLI."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hrv_diffusion.cli.extract import main as extract_main
from hrv_diffusion.hrv.files import (
    OutputNames, default_k_list, format_label_list, head_order, head_roles, hrv_from_rank, parse_label_list,
    per_timestep_hrv, read_head_roles, read_hrv, relevance, write_head_roles, write_output_ba, write_published,
    write_tidy_csv,
)
from hrv_diffusion.hrv.shards import Shard, save_shard

REPO = Path(__file__).resolve().parents[2]


def votes(num_prompts: int, shape, rng) -> np.ndarray:
    """(T, H, C) counts of random one-hot votes: every (t, g) row sums to num_prompts."""
    steps, heads, concepts = shape
    choice = rng.integers(0, concepts, size=(num_prompts, steps, heads))  # (P, T, H)
    return np.eye(concepts, dtype=np.int64)[choice].sum(axis=0)  # (T, H, C)


def sd14_labels() -> list[str]:
    """The 128 SD v1.4 labels by the published rule: down layers 0-5, mid 0, up 0-8, 8 heads each."""
    layers = [("down", 6), ("mid", 1), ("up", 9)]
    return [f"{place}, layer: {l}, head: {h}" for place, n in layers for l in range(n) for h in range(8)]


def small_labels() -> list[str]:
    """6 heads: down layer 0 (2 heads), mid layer 0 (2), up layer 0 (2)."""
    return [f"{place}, layer: 0, head: {h}" for place in ("down", "mid", "up") for h in range(2)]


# ----------------------------------------------------------------------------------------------- computing

def test_relevance_matches_a_loop():
    counts = votes(7, (4, 5, 3), np.random.default_rng(0))
    T, H, C = counts.shape
    rank = relevance(counts)
    assert rank.shape == (C, H) and rank.dtype == np.float64
    for c in range(C):
        for g in range(H):
            expected = sum(counts[t, g, c] for t in range(T)) / (7 * T)
            assert rank[c, g] == pytest.approx(expected, rel=1e-7)
    assert np.allclose(rank.sum(axis=0), 1.0)


def test_hrv_rows_sum_to_h_and_zero_rows_stay_zero():
    counts = votes(9, (3, 8, 4), np.random.default_rng(1))
    counts[..., 0] += counts[..., 3]  # nobody votes for concept 3
    counts[..., 3] = 0
    hrv = hrv_from_rank(relevance(counts))
    assert hrv.shape == (4, 8) and hrv.dtype == np.float32
    assert np.allclose(hrv[:3].sum(axis=1), 8.0, rtol=1e-6)
    assert not np.isnan(hrv).any() and (hrv[3] == 0).all()


def test_per_timestep_hrv_matches_a_loop():
    P = 6
    counts = votes(P, (3, 5, 4), np.random.default_rng(2))
    counts[1, :, 2] = 0  # concept 2 gets no votes at evaluation 1
    counts[1, :, 0] = P - counts[1, :, 1] - counts[1, :, 3]
    T, H, C = counts.shape
    result = per_timestep_hrv(counts, P)
    assert result.shape == (T, C, H) and result.dtype == np.float32
    for t in range(T):
        for c in range(C):
            column = [counts[t, g, c] / P for g in range(H)]
            total = sum(column)
            expected = [x / total * H if total else 0.0 for x in column]
            assert np.allclose(result[t, c], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="num_prompts"):
        per_timestep_hrv(counts, P + 1)


def test_tie_rule_is_stable_by_head_index():
    values = np.array([0.2, 0.5, 0.2, 0.0, 0.5, 0.0])
    assert head_order(values, "top").tolist() == [1, 4, 0, 2, 3, 5]  # MoRHF: descending, ties by head index
    assert head_order(values, "bottom").tolist() == [3, 5, 0, 2, 1, 4]  # LeRHF: ascending, ties by head index
    labels = small_labels()
    rank = np.stack([values, values[::-1]])  # (C=2, H=6)
    assert head_roles(rank, labels, 2, "top") == [[labels[1], labels[4]], [labels[1], labels[4]]]
    with pytest.raises(ValueError, match="order"):
        head_order(values, "middle")
    with pytest.raises(ValueError, match="k must be"):
        head_roles(rank, labels, 7, "top")


def test_default_k_list():
    assert default_k_list(128) == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121, 128]
    assert default_k_list(1300) == [11, 111, 211, 311, 411, 511, 611, 711, 811, 911, 1011, 1111, 1211, 1300]
    assert default_k_list(121) == [1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121]


# ----------------------------------------------------------------------------------------------- file formats

def test_head_roles_csv_exact_text_and_round_trip(tmp_path):
    path = write_head_roles(
        tmp_path / "roles.csv", ["Animals", "Color"],
        [["up, layer: 8, head: 3", "down, layer: 5, head: 3"], ["mid, layer: 0, head: 1", "up, layer: 0, head: 7"]],
    )
    expected = (
        "Category,Head position\r\n"
        "Animals,\"['up, layer: 8, head: 3' 'down, layer: 5, head: 3']\"\r\n"
        "Color,\"['mid, layer: 0, head: 1' 'up, layer: 0, head: 7']\"\r\n"
    )
    assert path.read_bytes() == expected.encode()
    assert read_head_roles(path) == {
        "Animals": ["up, layer: 8, head: 3", "down, layer: 5, head: 3"],
        "Color": ["mid, layer: 0, head: 1", "up, layer: 0, head: 7"],
    }


def test_long_head_list_stays_on_one_line(tmp_path):
    labels = sd14_labels()
    path = write_head_roles(tmp_path / "all.csv", ["Animals"], [labels])
    lines = path.read_bytes().split(b"\r\n")
    assert len(lines) == 3 and lines[2] == b""  # header, one row, final CRLF
    assert format_label_list(labels) == str(np.array(labels)).replace("\n ", " ")  # numpy's form, unwrapped
    assert read_head_roles(path)["Animals"] == labels


def test_parse_label_list_handles_wrapped_and_comma_forms():
    wrapped = "['down, layer: 0, head: 0' 'down, layer: 0, head: 1'\n 'up, layer: 8, head: 7']"
    comma = "['down, layer: 0, head: 0', 'down, layer: 0, head: 1', 'up, layer: 8, head: 7']"
    expected = ["down, layer: 0, head: 0", "down, layer: 0, head: 1", "up, layer: 8, head: 7"]
    assert parse_label_list(wrapped) == expected and parse_label_list(comma) == expected
    with pytest.raises(ValueError):
        parse_label_list("['down, layer: 0, head: 0' oops]")
    with pytest.raises(ValueError):
        parse_label_list("['sideways, layer: 0, head: 0']")


def test_read_head_roles_rejects_other_csv(tmp_path):
    other = tmp_path / "other.csv"
    other.write_text("Key,Value\ntop_1,0.2\n")
    with pytest.raises(ValueError, match="Category,Head position"):
        read_head_roles(other)


def test_output_ba_rows_and_order(tmp_path):
    counts = votes(5, (3, 6, 4), np.random.default_rng(3))
    counts[0, 0] = [2, 0, 2, 1]  # a tie between concepts 0 and 2: file order wins
    labels = small_labels()
    names = ["A", "B", "C", "D"]
    path = write_output_ba(tmp_path / "ba.csv", counts, labels, names)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["[Name]", "[Layer]", "[Head]", "[Timestamp]", "Top 1", "Top 2", "Top 3", "Top 4"]
    assert len(rows) == 1 + 6 * 3
    assert [r[:4] for r in rows[1:4]] == [["down_cross", "0", "0", str(t)] for t in range(3)]
    assert [r[0] for r in rows[1::3]] == ["down_cross"] * 2 + ["mid_cross"] * 2 + ["up_cross"] * 2
    assert rows[1][4:] == ["A", "C", "D", "B"]
    for row in rows[1:]:
        g, t = labels.index(f"{row[0][:-6]}, layer: {row[1]}, head: {row[2]}"), int(row[3])
        ranked = [counts[t, g, names.index(n)] for n in row[4:]]
        assert ranked == sorted(ranked, reverse=True)


def test_tidy_csv_reads_with_pandas(tmp_path):
    hrv = np.arange(12, dtype=np.float32).reshape(2, 6)
    path = write_tidy_csv(tmp_path / "tidy.csv", hrv, small_labels(), ["Animals", "Color"])
    frame = pd.read_csv(path)
    assert list(frame.columns) == ["concept", "head", "place", "layer", "head_in_layer", "head_index", "value"]
    assert len(frame) == 12
    row = frame.iloc[9]
    assert (row.concept, row["head"], row.place, row.layer, row.head_in_layer, row.head_index, row.value) == (
        "Color", "mid, layer: 0, head: 1", "mid", 0, 1, 3, 9.0)


def test_write_published_sd14_names_shapes_dtypes(tmp_path):
    labels = sd14_labels()
    T, H, C, P = 4, 128, 3, 5
    counts = votes(P, (T, H, C), np.random.default_rng(4))
    concepts = ["Animals", "Plants", "Color"]
    paths = write_published(tmp_path, counts, P, labels, concepts, epochs=[1], negative_prompt=False,
                            prompt="merged", description="340_final_text_descriptions", model_version="sd_v1_4")
    names = {p.name for p in paths}
    stem = "epoch_1_to_1_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4"
    assert len(paths) == len(names) == 5 + 2 * 14 + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)  # no temp files left
    cv = np.load(tmp_path / f"category_vectors_{stem}.npy")
    assert cv.shape == (C, H) and cv.dtype == np.float32
    index = np.load(tmp_path / f"head_index_{stem}.npy")
    assert index.dtype == np.dtype("<U23") and index.shape == (128,) and index.tolist() == labels
    per_step = np.load(tmp_path / f"category_vectors_{stem}_per_timesteps.npy")
    assert per_step.shape == (T, C, H) and per_step.dtype == np.float32
    per_step_index = np.load(tmp_path / f"head_index_{stem}_per_timesteps.npy")
    assert per_step_index.shape == (T * H,) and per_step_index.tolist() == labels * T
    rank = np.load(tmp_path / "340_final_ranking_list.npy")
    assert rank.shape == (C, H) and rank.dtype == np.float64 and np.allclose(rank, relevance(counts))
    roles = read_head_roles(tmp_path / "head_roles_ba_epoch_1_to_1_top_11_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4.csv")
    assert list(roles) == concepts and roles["Plants"] == head_roles(rank, labels, 11, "top")[1]
    assert "head_roles_ba_epoch_1_to_1_bottom_128_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4.csv" in names
    assert f"output_ba_{stem}.csv" in names and "hrv_merged_340_final_text_descriptions_sd_v1_4.csv" in names
    vectors, read_labels = read_hrv(tmp_path / f"category_vectors_{stem}.npy", tmp_path / f"head_index_{stem}.npy")
    assert np.array_equal(vectors, cv) and read_labels == labels
    vectors, read_labels = read_hrv(tmp_path / f"category_vectors_{stem}_per_timesteps.npy",
                                    tmp_path / f"head_index_{stem}_per_timesteps.npy")
    assert vectors.shape == (T, C, H) and read_labels == labels


def test_output_names_other_models():
    names = OutputNames(3, True, "imagenet", "340_final_text_descriptions", "sd_xl_base_1_0")
    assert names.ranking_list() == "340_final_ranking_list_sd_xl_base_1_0.npy"
    assert names.head_roles("bottom", 11) == (
        "head_roles_ba_epoch_1_to_3_bottom_11_neg_prompt_True_imagenet_340_final_text_descriptions_sd_xl_base_1_0.csv")


def test_read_hrv_names_the_fix_when_shapes_disagree(tmp_path):
    np.save(tmp_path / "cv.npy", np.zeros((2, 6), np.float32))
    np.save(tmp_path / "hi.npy", np.array(sd14_labels()))
    with pytest.raises(ValueError, match="6 heads but .* 128 labels: pass the head_index file"):
        read_hrv(tmp_path / "cv.npy", tmp_path / "hi.npy")


# ----------------------------------------------------------------------------------------------- CLI

def _write_run(folder: Path, model_version="sd_v1_4") -> np.ndarray:
    """Two ranks of epoch 1 (prompts 0-2 and 3-5) in ``folder``; returns their summed counts."""
    labels, concepts = small_labels(), ["Animals", "Plants", "Color"]
    total = np.zeros((3, 6, 3), np.int64)
    for rank, indices in enumerate(([0, 1, 2], [3, 4, 5])):
        counts = votes(3, (3, 6, 3), np.random.default_rng(rank))
        total += counts
        meta = {
            "model_card": "CompVis/stable-diffusion-v1-4", "model_version": model_version,
            "description": "340_final_text_descriptions", "concept_fingerprint": "x", "concept_names": concepts,
            "prompt": "imagenet", "prompt_fingerprint": "y", "num_prompts_total": 6, "num_inference_steps": 2,
            "num_evaluations": 3, "guidance_scale": 7.5, "negative_prompt": False, "seed": 22,
            "seeding": "per_prompt", "epoch": 1, "dtype": "float32", "head_labels": labels, "subset": None,
            "rank": rank, "world_size": 2, "version": "0.1.0",
        }
        save_shard(folder / f"run_rank_{rank}.npz", Shard(counts, np.array(indices), meta))
    return total


def test_cli_end_to_end_from_another_cwd(tmp_path, monkeypatch, capsys):
    results, elsewhere = tmp_path / "project" / "results", tmp_path / "elsewhere"
    results.mkdir(parents=True)
    elsewhere.mkdir()
    total = _write_run(results)
    np.savez(results / "unrelated.npz", other=np.zeros(3))  # some other .npz: skipped (a damaged shard is not)
    monkeypatch.chdir(elsewhere)
    assert extract_main(["--results_dir", str(results)]) == 0
    out = capsys.readouterr().out
    assert "epoch 1: 6 of 6 prompts from 2 shard(s)" in out and "skipped" in out
    stem = "epoch_1_to_1_neg_prompt_False_imagenet_340_final_text_descriptions_sd_v1_4"
    cv = np.load(elsewhere / "final_result" / f"category_vectors_{stem}.npy")  # default output: ./final_result
    assert np.allclose(cv, hrv_from_rank(relevance(total)))
    assert (elsewhere / "final_result" / "340_final_ranking_list.npy").is_file()


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert extract_main([]) == 2  # ./results does not exist
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "head_relevance_calculation.py" in err
    (tmp_path / "results").mkdir()
    _write_run(tmp_path / "results", model_version="sd_xl_base_1_0")
    assert extract_main([]) == 2  # shards are of another model
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model_version=sd_xl_base_1_0" in err and "--model_card" in err
    assert extract_main(["--model_card", "stabilityai/stable-diffusion-xl-base-1.0", "--epochs", "2"]) == 2
    assert "epoch(s) [2]" in capsys.readouterr().err


def test_top_level_script_runs_from_any_folder(tmp_path):
    _write_run(tmp_path)
    script = REPO / "extract_head_relevance_vectors.py"
    done = subprocess.run(
        [sys.executable, str(script), "--shards", str(tmp_path / "run_rank_0.npz"), str(tmp_path / "run_rank_1.npz"),
         "--final_result", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout and (tmp_path / "out" / "340_final_ranking_list.npy").is_file()
