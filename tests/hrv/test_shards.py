"""Shards: file format, merge checks (settings, shapes, overlaps, gaps, corrupt rows)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from hrv_diffusion.hrv.shards import (
    MATCH_KEYS, CorruptShardError, Shard, ShardFormatError, ShardMismatchError, ShardOverlapError, find_shards,
    index_ranges, load_shard, merge_shards, save_shard,
)

T, H, C, TOTAL = 5, 6, 4, 12


def votes(num_prompts: int, rng, shape=(T, H, C)) -> np.ndarray:
    """(T, H, C) counts of random one-hot votes: every (t, g) row sums to num_prompts."""
    steps, heads, concepts = shape
    choice = rng.integers(0, concepts, size=(num_prompts, steps, heads))  # (P, T, H)
    return np.eye(concepts, dtype=np.int64)[choice].sum(axis=0)  # (T, H, C)


def metadata(**changes) -> dict:
    meta = {
        "model_card": "tiny-sd", "model_version": "tiny_sd", "description": "340_final_text_descriptions",
        "concept_fingerprint": "c0ffee", "concept_names": [f"concept {c}" for c in range(C)], "prompt": "merged",
        "prompt_fingerprint": "beef", "num_prompts_total": TOTAL, "num_inference_steps": T - 1,
        "num_evaluations": T, "guidance_scale": 7.5, "negative_prompt": False, "seed": 22, "seeding": "per_prompt",
        "epoch": 1, "dtype": "float32", "head_labels": [f"down, layer: 0, head: {h}" for h in range(H)],
        "subset": None, "rank": 0, "world_size": 1, "version": "0.1.0",
    }
    meta.update(changes)
    return meta


def make_shard(indices, rng_seed=0, **changes) -> Shard:
    indices = np.asarray(list(indices), dtype=np.int64)
    return Shard(votes(len(indices), np.random.default_rng(rng_seed)), indices, metadata(**changes))


def test_save_load_round_trip(tmp_path):
    shard = make_shard(range(4), subset=[1, 3], rank=2)
    path = save_shard(tmp_path / "a.npz", shard)
    loaded = load_shard(path)
    assert loaded.counts.dtype == np.int64 and np.array_equal(loaded.counts, shard.counts)
    assert loaded.prompt_indices.dtype == np.int64 and np.array_equal(loaded.prompt_indices, shard.prompt_indices)
    assert loaded.metadata == shard.metadata and loaded.path == path
    with np.load(path) as raw:  # the documented on-disk form
        assert set(raw.files) == {"counts", "prompt_indices", "metadata"}
        assert raw["metadata"].shape == () and raw["metadata"].dtype.kind == "U"
        assert json.loads(str(raw["metadata"][()]))["subset"] == [1, 3]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npz"]  # no temp file left behind


def test_save_accepts_whole_float_counts_and_numpy_metadata(tmp_path):
    shard = make_shard(range(3), seed=np.int64(5))
    shard.counts = shard.counts.astype(np.float32)  # like a GPU accumulator
    loaded = load_shard(save_shard(tmp_path / "f.npz", shard))
    assert loaded.counts.dtype == np.int64 and loaded.metadata["seed"] == 5


def test_load_refuses_files_that_are_not_shards(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(ShardFormatError, match="not an HRV shard"):
        load_shard(text)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ShardFormatError, match="lacks counts, metadata, prompt_indices"):
        load_shard(other)
    bad_meta = tmp_path / "bad_meta.npz"
    np.savez(bad_meta, counts=np.zeros((1, 1, 1), np.int64), prompt_indices=np.zeros(0, np.int64),
             metadata=np.array("{not json"))
    with pytest.raises(ShardFormatError, match="JSON"):
        load_shard(bad_meta)


def test_find_shards_globs_npz(tmp_path):
    for name in ("b.npz", "a.npz", "c.txt"):
        (tmp_path / name).write_text("")
    assert [p.name for p in find_shards(tmp_path)] == ["a.npz", "b.npz"]
    assert [p.name for p in find_shards(tmp_path, "b*")] == ["b.npz"]
    with pytest.raises(FileNotFoundError):
        find_shards(tmp_path / "missing")


def test_merge_sums_ranks_and_epochs():
    shards = [make_shard(range(0, 5), 1, rank=0), make_shard(range(5, 12), 2, rank=1, dtype="float16"),
              make_shard(range(0, 12), 3, epoch=2)]
    merged = merge_shards(shards)
    assert merged.counts.dtype == np.int64
    assert np.array_equal(merged.counts, shards[0].counts + shards[1].counts + shards[2].counts)
    assert merged.num_prompts == 24 and (merged.counts.sum(-1) == 24).all()
    assert merged.metadata["epochs"] == [1, 2]
    assert "rank" not in merged.metadata and "epoch" not in merged.metadata
    assert not any("missing" in line for line in merged.report)
    assert any(line.startswith("warning:") and "float16" in line for line in merged.report)


DIFFERENT = {
    "model_version": "sd_v1_4", "description": "other", "concept_fingerprint": "f00d",
    "concept_names": [f"other {c}" for c in range(C)], "prompt": "imagenet", "prompt_fingerprint": "feed",
    "num_prompts_total": TOTAL + 1, "num_inference_steps": 10, "num_evaluations": T + 1, "guidance_scale": 5.0,
    "negative_prompt": True, "seed": 23, "seeding": "legacy",
    "head_labels": [f"up, layer: 0, head: {h}" for h in range(H)],
}


def test_every_match_key_is_covered():
    assert set(DIFFERENT) == set(MATCH_KEYS)


@pytest.mark.parametrize("key", MATCH_KEYS)
def test_merge_refuses_different_settings(tmp_path, key):
    first = make_shard(range(0, 6))
    first.path = tmp_path / "first.npz"
    second = make_shard(range(6, 12), **{key: DIFFERENT[key]})
    if key == "num_evaluations":  # keep the shard itself consistent; the key alone must trigger the refusal
        second.counts = votes(6, np.random.default_rng(0), (T + 1, H, C))
    second.path = tmp_path / "second.npz"
    with pytest.raises(ShardMismatchError) as caught:
        merge_shards([first, second])
    message = str(caught.value)
    assert key in message and "first.npz" in message and "second.npz" in message
    assert json.dumps(DIFFERENT[key])[:40] in message


def test_merge_refuses_different_shapes():
    first, second = make_shard(range(6)), make_shard(range(6, 12))
    for shard in (first, second):  # no metadata sizes to compare: only the shapes differ
        for key in ("head_labels", "concept_names", "num_evaluations"):
            shard.metadata.pop(key)
    second.counts = votes(6, np.random.default_rng(0), (T, H, C + 1))
    with pytest.raises(ShardMismatchError, match="shapes"):
        merge_shards([first, second])


def test_merge_refuses_overlap_within_an_epoch(tmp_path):
    first, second = make_shard(range(0, 7)), make_shard(range(5, 12), rank=1)
    first.path, second.path = tmp_path / "r0.npz", tmp_path / "r1.npz"
    with pytest.raises(ShardOverlapError, match=r"prompts 5-6 of epoch 1 .*r0\.npz.*r1\.npz.*twice"):
        merge_shards([first, second])
    merge_shards([make_shard(range(12)), make_shard(range(12), epoch=2)])  # other epoch: fine


def test_merge_reports_gaps():
    merged = merge_shards([make_shard([0, 1, 2, 7]), make_shard(range(0, 11), epoch=2)])
    assert "prompts 3-6 missing in epoch 1" in merged.report
    assert "prompts 8-11 missing in epoch 1" in merged.report
    assert "prompt 11 missing in epoch 2" in merged.report
    assert merged.num_prompts == 15


def test_merge_refuses_corrupt_shards():
    shard = make_shard(range(4))
    shard.counts[2, 3, 0] += 1  # head 3 at evaluation 2 now has 5 votes for 4 prompts
    with pytest.raises(CorruptShardError, match="head 3 at evaluation 2"):
        merge_shards([shard])
    duplicate = make_shard([0, 1, 1])
    with pytest.raises(CorruptShardError, match="twice"):
        merge_shards([duplicate])
    outside = make_shard([0, TOTAL])
    with pytest.raises(CorruptShardError, match="outside"):
        merge_shards([outside])


def test_merge_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no shards"):
        merge_shards([])


def test_index_ranges():
    assert index_ranges([5, 0, 1, 2, 9, 10]) == [(0, 2), (5, 5), (9, 10)]
    assert index_ranges([]) == []


def test_merge_warns_about_unfinished_checkpoints():
    merged = merge_shards([make_shard(range(5), complete=False)])
    assert any("unfinished checkpoint" in line for line in merged.report)
