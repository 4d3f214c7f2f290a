"""HRV construction runs on the transformer families (tiny-pixart: T5 text; the toy DiT: CLIP text): two ranks merged
equal one run, and a run resumed after a crash equals an uninterrupted one (the UNet's own checks:
tests/hrv/test_construction.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import hrv_diffusion.hrv.construction as construction
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.concepts import ConceptSet
from hrv_diffusion.hrv.construction import RelevanceSettings, rank_indices, run_relevance
from hrv_diffusion.hrv.embeddings import TextEmbeddings, encode_words
from hrv_diffusion.hrv.shards import load_shard, merge_shards

CONCEPTS = ConceptSet(names=("Color", "Shape"), words=(("red", "blue", "green"), ("circle", "square")))
PROMPTS = ["a red circle", "a blue square on the left", "a small green ring", "a big pink cross", "a gray grid"]
ALL = list(range(len(PROMPTS)))
META = {"concept_fingerprint": CONCEPTS.fingerprint(), "concept_names": list(CONCEPTS.names), "prompt_fingerprint": "x"}


@pytest.fixture(scope="module", params=["tiny-pixart", "toy-dit"])
def model(request):
    pipe = load_pipeline(request.param)
    emb, lengths = encode_words(pipe, list(CONCEPTS.flat_words))
    return pipe, TextEmbeddings(embeddings=emb, token_lengths=torch.as_tensor(lengths), metadata={})


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def settings(**kw) -> RelevanceSettings:
    base = dict(model_card="m", model_version="m", description="test", prompt="test", num_inference_steps=2,
                batch_size=2, checkpoint_every=100)
    return RelevanceSettings(**(base | kw))


def run(model, folder, s, indices=ALL, **kw):
    pipe, embeddings = model
    [path] = run_relevance(pipe, s, CONCEPTS, embeddings, PROMPTS, list(indices), META, Path(folder),
                           progress=False, **kw)
    return load_shard(path)


def test_two_ranks_merged_equal_one_run(model, tmp_path):
    heads = head_layout(model[0]).num_heads
    whole = run(model, tmp_path / "whole", settings())
    assert whole.counts.shape == (3, heads, 2)  # PNDM, 2 steps: 3 evaluations
    assert (whole.counts.sum(-1) == len(PROMPTS)).all()
    parts = [run(model, tmp_path / "split", settings(), rank_indices(ALL, r, 2), rank=r, world_size=2)
             for r in range(2)]
    np.testing.assert_array_equal(merge_shards(parts).counts, whole.counts)


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_equals_an_uninterrupted_run(model, tmp_path, monkeypatch):
    s = settings(checkpoint_every=2)
    original, calls = construction.generate, []

    def crash_on_second_call(pipe_, prompts, *args, **kwargs):
        calls.append(list(prompts))
        if len(calls) == 2:
            raise Crash("simulated crash in the 2nd batch")
        return original(pipe_, prompts, *args, **kwargs)

    monkeypatch.setattr(construction, "generate", crash_on_second_call)
    with pytest.raises(Crash):
        run(model, tmp_path / "run", s)
    monkeypatch.setattr(construction, "generate", original)
    resumed = run(model, tmp_path / "run", s, resume=True)
    assert resumed.metadata["complete"] is True and resumed.prompt_indices.tolist() == ALL
    np.testing.assert_array_equal(resumed.counts, run(model, tmp_path / "uninterrupted", s).counts)
