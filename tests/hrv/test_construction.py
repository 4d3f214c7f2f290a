"""HRV construction runs: splitting, batching, checkpoints and resume, seeding, the CLIs, and torchrun ranks."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrv_diffusion.cli import extract as extract_cli
from hrv_diffusion.cli import relevance as relevance_cli
from hrv_diffusion.cli import text_embeddings as text_embeddings_cli
from hrv_diffusion.hrv.concepts import ConceptSet
from hrv_diffusion.hrv.construction import (RelevanceSettings, _check_resumable, _latents, rank_indices,
                                        run_relevance, shard_path, subset_indices)
from hrv_diffusion.hrv.embeddings import TextEmbeddings, encode_words
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.votes import derived_seed
from hrv_diffusion.hrv.shards import MATCH_KEYS, load_shard, merge_shards

REPO = Path(__file__).resolve().parents[2]
CONCEPTS = ConceptSet(
    names=("Animals", "Color", "Style"),
    words=(("dog", "cat", "hippopotamus"), ("red", "blue", "turquoise"), ("watercolor", "cubist", "sketch")),
)
PROMPTS = ["a photo of a cat.", "a red car", "an oil painting of a castle", "a dog on the beach",
           "a blue bird in the snow", "a cubist portrait of a man"]
ALL = list(range(len(PROMPTS)))
STEPS = 2  # PNDM: 3 UNet evaluations
SHAPE = (4, 16, 16)  # tiny-sd latents
META = {"concept_fingerprint": CONCEPTS.fingerprint(), "concept_names": list(CONCEPTS.names), "prompt_fingerprint": "x"}


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd")


@pytest.fixture(scope="module")
def embeddings(pipe):
    emb, lengths = encode_words(pipe, list(CONCEPTS.flat_words))
    return TextEmbeddings(embeddings=emb, token_lengths=torch.as_tensor(lengths), metadata={})


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    """In-process CLI runs must not think they are a torchrun rank."""
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)


def settings(**kw) -> RelevanceSettings:
    base = dict(model_card="tiny-sd", model_version="tiny_sd", description="test", prompt="test",
                num_inference_steps=STEPS, batch_size=2, checkpoint_every=100)
    return RelevanceSettings(**(base | kw))


def run(pipe, embeddings, folder, s, indices=ALL, meta=META, **kw):
    [path] = run_relevance(pipe, s, CONCEPTS, embeddings, PROMPTS, list(indices), meta, Path(folder),
                           progress=False, **kw)
    return load_shard(path)


# ----------------------------------------------------------------------------------------- 1. splits and batches

def test_two_ranks_merged_equal_one_run_and_batch_size_does_not_matter(pipe, embeddings, tmp_path):
    whole = run(pipe, embeddings, tmp_path / "whole", settings(batch_size=3))
    assert whole.counts.shape == (STEPS + 1, 22, CONCEPTS.num_concepts)
    assert (whole.counts.sum(-1) == len(PROMPTS)).all()
    assert whole.prompt_indices.tolist() == ALL
    assert whole.metadata["complete"] is True

    split = tmp_path / "split"
    parts = [run(pipe, embeddings, split, settings(batch_size=3), rank_indices(ALL, r, 2), rank=r, world_size=2)
             for r in range(2)]
    assert sorted(p.name for p in split.iterdir()) == [
        f"test_test_ba_epoch_1_neg_prompt_False_rank_{r}_of_2_tiny_sd.npz" for r in range(2)]
    assert [p.prompt_indices.tolist() for p in parts] == [[0, 1, 2], [3, 4, 5]]
    assert [p.metadata["rank"] for p in parts] == [0, 1]
    merged = merge_shards(parts)
    assert merged.num_prompts == len(PROMPTS)
    np.testing.assert_array_equal(merged.counts, whole.counts)

    one_at_a_time = run(pipe, embeddings, tmp_path / "batch1", settings(batch_size=1))
    np.testing.assert_array_equal(one_at_a_time.counts, whole.counts)


@pytest.mark.parametrize("card", ["tiny-sd", "tiny-sdxl"])
def test_cuda_graphs_give_the_same_votes(card, tmp_path, monkeypatch):
    """``cuda_graphs``: a graph of the guided call per batch (here ``FrozenGraphCache``: later steps rerun the first
    step's call with its Python frozen, as a CUDA graph replays it), batches of 4 and 2 prompts: the same counts."""
    from frozen_graphs import FrozenGraphCache

    import hrv_diffusion.hrv.construction as construction

    pipe = load_pipeline(card)
    emb, lengths = encode_words(pipe, list(CONCEPTS.flat_words))
    words = TextEmbeddings(embeddings=emb, token_lengths=torch.as_tensor(lengths), metadata={})
    caches = []

    class SpyCache(FrozenGraphCache):
        def __init__(self):
            super().__init__()
            caches.append(self)

    monkeypatch.setattr(construction, "graphs_supported", lambda p: True)  # as on CUDA with PNDM
    monkeypatch.setattr(construction, "GraphCache", SpyCache)
    plain = run(pipe, words, tmp_path / "plain", settings(batch_size=4, model_card=card))
    assert not caches
    graphed = run(pipe, words, tmp_path / "graphed", settings(batch_size=4, model_card=card, cuda_graphs=True))
    assert [(c.captures, c.replays) for c in caches] == [(1, STEPS)] * 2  # a fresh cache per batch
    assert (plain.counts.sum(-1) == len(PROMPTS)).all()
    np.testing.assert_array_equal(graphed.counts, plain.counts)


# ----------------------------------------------------------------------------------------- 2. checkpoints and resume

class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("seeding", ["per_prompt", "legacy"])
def test_resume_after_crash(pipe, embeddings, tmp_path, monkeypatch, seeding):
    s = settings(batch_size=2, checkpoint_every=2, seeding=seeding)
    import hrv_diffusion.hrv.construction as construction

    original = construction.generate
    calls: list[list[str]] = []

    def crash_on_third_call(pipe_, prompts, *args, **kwargs):
        calls.append(list(prompts))
        if len(calls) == 3:
            raise Crash("simulated crash in the 3rd batch")
        return original(pipe_, prompts, *args, **kwargs)

    monkeypatch.setattr(construction, "generate", crash_on_third_call)
    folder = tmp_path / "run"
    with pytest.raises(Crash):
        run(pipe, embeddings, folder, s)
    monkeypatch.setattr(construction, "generate", original)

    path = shard_path(folder, s, 1, 0, 1)
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary file left behind
    checkpoint = load_shard(path)
    assert checkpoint.metadata["complete"] is False
    assert checkpoint.prompt_indices.tolist() == [0, 1, 2, 3]  # the checkpoint after the 2nd batch
    assert (checkpoint.counts.sum(-1) == 4).all()
    first_four = run(pipe, embeddings, tmp_path / "first_four", s, indices=[0, 1, 2, 3])
    np.testing.assert_array_equal(checkpoint.counts, first_four.counts)

    with pytest.raises(FileExistsError, match="--resume"):
        run(pipe, embeddings, folder, s)
    for change, key in ((dict(seed=23), "seed"), (dict(num_inference_steps=STEPS + 1), "num_inference_steps"),
                        (dict(guidance_scale=5.0), "guidance_scale"),
                        (dict(seeding="legacy" if seeding == "per_prompt" else "per_prompt"), "seeding")):
        with pytest.raises(ValueError, match=f"{key}="):
            run(pipe, embeddings, folder, settings(**(dict(batch_size=2, checkpoint_every=2, seeding=seeding) | change)),
                resume=True)
    with pytest.raises(ValueError, match="prompt_fingerprint="):
        run(pipe, embeddings, folder, s, meta=dict(META, prompt_fingerprint="other"), resume=True)
    assert load_shard(path).prompt_indices.tolist() == [0, 1, 2, 3]  # refused resumes leave the shard alone

    calls.clear()

    def record(pipe_, prompts, *args, **kwargs):
        calls.append(list(prompts))
        return original(pipe_, prompts, *args, **kwargs)

    monkeypatch.setattr(construction, "generate", record)
    resumed = run(pipe, embeddings, folder, settings(batch_size=3, checkpoint_every=2, seeding=seeding), resume=True)
    assert calls == [PROMPTS[4:6]]  # only the prompts the checkpoint lacks
    assert resumed.metadata["complete"] is True
    assert resumed.prompt_indices.tolist() == ALL  # each prompt once
    assert (resumed.counts.sum(-1) == len(PROMPTS)).all()

    monkeypatch.setattr(construction, "generate", original)
    uninterrupted = run(pipe, embeddings, tmp_path / "uninterrupted", s)
    np.testing.assert_array_equal(resumed.counts, uninterrupted.counts)

    calls.clear()
    monkeypatch.setattr(construction, "generate", record)
    again = run(pipe, embeddings, folder, s, resume=True)  # resuming a finished shard runs nothing
    assert calls == []
    np.testing.assert_array_equal(again.counts, uninterrupted.counts)
    assert again.prompt_indices.tolist() == ALL


def test_shard_path_is_unique_per_epoch_subset_and_rank(tmp_path):
    names = {shard_path(tmp_path, settings(subset=subset), epoch, rank, world)
             for subset in (None, [1, 5], [2, 5]) for epoch in (1, 2) for rank, world in ((0, 1), (0, 2), (1, 2))}
    assert len(names) == 18 and all(path.parent == tmp_path for path in names)
    s = settings(prompt="merged", description="340_final_text_descriptions")
    assert shard_path(tmp_path, s, 1, 0, 1).name == (  # the reference's file name
        "merged_340_final_text_descriptions_ba_epoch_1_neg_prompt_False_tiny_sd.npz")
    assert shard_path(tmp_path, settings(subset=[2, 5]), 3, 1, 4).name == (
        "test_test_ba_epoch_3_neg_prompt_False_2_5_rank_1_of_4_tiny_sd.npz")


def test_resume_refuses_what_merging_refuses_and_another_shard_of_the_run(tmp_path):
    stored = {key: f"value of {key}" for key in MATCH_KEYS} | dict(
        subset=[1, 2], rank=0, world_size=2, epoch=1, dtype="float32", model_card="tiny-sd", version="0.1.0")
    shard_keys = ("subset", "rank", "world_size", "epoch")
    for key in (*MATCH_KEYS, *shard_keys):
        with pytest.raises(ValueError, match=f"cannot resume .*{key}="):
            _check_resumable(stored, stored | {key: "changed"}, tmp_path / "shard.npz")
        with pytest.raises(ValueError, match=f"{key}="):  # a key the shard lacks is not a match either
            _check_resumable({k: v for k, v in stored.items() if k != key}, stored, tmp_path / "shard.npz")
    # the precision, the model's name (a local folder or a hub id) and the package version may differ
    _check_resumable(stored, stored | dict(dtype="float16", model_card="/models/tiny", version="9"), tmp_path)
    _check_resumable(stored, dict(stored, subset=(1, 2)), tmp_path)  # a tuple and its JSON list are the same


# ----------------------------------------------------------------------------------------- 3. seeding

def reference_legacy_latents(seed: int, count: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn((1, 4, 16, 16), generator=generator) for _ in range(count)]


def test_legacy_latents_are_one_generator_drawn_in_order():
    s = settings(seeding="legacy")
    expected = reference_legacy_latents(22, 6)
    got = _latents(ALL, ALL, SHAPE, s)
    assert sorted(got) == ALL
    for i in ALL:
        assert got[i].shape == (1, 4, 16, 16) and got[i].dtype == torch.float32
        assert torch.equal(got[i], expected[i])

    some = _latents([1, 4], ALL, SHAPE, s)  # e.g. a resumed run: the others' draws are still made
    assert sorted(some) == [1, 4]
    assert torch.equal(some[1], expected[1]) and torch.equal(some[4], expected[4])

    subset = _latents([3, 4, 5], [3, 4, 5], SHAPE, s)  # a subset process re-seeds, as the reference does
    for k, i in enumerate([3, 4, 5]):
        assert torch.equal(subset[i], expected[k])

    other_seed = _latents([0], ALL, SHAPE, settings(seeding="legacy", seed=7))
    assert torch.equal(other_seed[0], reference_legacy_latents(7, 1)[0])
    assert not torch.equal(other_seed[0], expected[0])


def test_per_prompt_latents_do_not_depend_on_the_other_prompts():
    s = settings(seeding="per_prompt")
    full = _latents(ALL, ALL, SHAPE, s)
    for i in ALL:
        expected = torch.randn((1, *SHAPE), generator=torch.Generator().manual_seed(derived_seed(22, i)))
        assert torch.equal(full[i], expected)
        assert torch.equal(_latents([i], [i], SHAPE, s)[i], full[i])
    assert torch.equal(_latents([2, 5], [5, 2, 0], SHAPE, s)[5], full[5])
    assert not any(torch.equal(full[i], full[j]) for i in ALL for j in ALL if i < j)
    assert not torch.equal(_latents([0], [0], SHAPE, settings(seed=23))[0], full[0])


# ----------------------------------------------------------------------------------------- 4. subsets and ranks

@pytest.mark.parametrize("N", [0, 1, 2, 5, 7, 10, 1000, 2100])
@pytest.mark.parametrize("d", [1, 2, 3, 5, 7])
def test_subset_indices_are_the_reference_slices(N, d):
    lines = [f"prompt {i}" for i in range(N)]
    covered = []
    for n in range(1, d + 1):
        expected = lines[(n - 1) * N // d : n * N // d]  # the reference's --subset_running
        got = subset_indices(N, n, d)
        assert [lines[i] for i in got] == expected
        covered += got
    assert covered == list(range(N))  # every prompt exactly once, in order


def test_subset_indices_examples_and_errors():
    assert subset_indices(10, 2, 3) == [3, 4, 5]
    assert subset_indices(10, 3, 3) == [6, 7, 8, 9]
    assert subset_indices(2100, 5, 5) == list(range(1680, 2100))
    for bad in ((0, 5), (6, 5), (-1, 5)):
        with pytest.raises(ValueError):
            subset_indices(10, *bad)


@pytest.mark.parametrize("indices", [list(range(10)), list(range(6)), list(range(420, 840)), [3, 4, 5], [], [7]])
@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 8])
def test_rank_indices_split_contiguously(indices, world_size):
    n = len(indices)
    shares = [rank_indices(indices, r, world_size) for r in range(world_size)]
    for r, share in enumerate(shares):
        assert share == indices[r * n // world_size : (r + 1) * n // world_size]
    assert [i for share in shares for i in share] == indices  # each index exactly once
    sizes = [len(share) for share in shares]
    assert max(sizes) - min(sizes) <= 1


# ----------------------------------------------------------------------------------------- 5. the CLIs

CONCEPT_FILE = """# a tiny concept set
[Animals]
dog
cat
hippopotamus

[Color]
red
blue
turquoise

[Style]
watercolor
cubist
sketch
"""


def write_inputs(folder: Path, prompts: list[str]) -> tuple[Path, Path]:
    description = folder / "inputs" / "mini.txt"
    description.parent.mkdir(parents=True, exist_ok=True)
    description.write_text(CONCEPT_FILE, encoding="utf-8")
    prompt_file = folder / "inputs" / "prompt_list_few.txt"
    prompt_file.write_text("\n".join(prompts) + "\n", encoding="utf-8")
    return description, prompt_file


def test_cli_end_to_end_from_another_directory(pipe, embeddings, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    description, prompt_file = write_inputs(tmp_path, PROMPTS[:4])
    common = ["--model_card", "tiny-sd", "--description", str(description)]
    assert text_embeddings_cli.main(common) == 0
    assert (tmp_path / "word_lists" / "text_embedding_mini_tiny_sd.safetensors").is_file()

    assert relevance_cli.main(common + ["--legacy_seeding", "--dtype", "float32", "--prompt", str(prompt_file),
                                        "--num_inference_steps", str(STEPS), "--quiet"]) == 0
    [shard_file] = (tmp_path / "results").iterdir()
    assert shard_file.name == "few_mini_ba_epoch_1_neg_prompt_False_tiny_sd.npz"
    shard = load_shard(shard_file)
    assert shard.metadata["seeding"] == "legacy" and shard.metadata["description"] == "mini"
    assert shard.metadata["prompt"] == "few" and shard.metadata["complete"] is True
    assert shard.prompt_indices.tolist() == [0, 1, 2, 3]
    # The CLI's legacy run is the library's legacy run on the same prompts.
    library = run(pipe, embeddings, tmp_path / "library", settings(seeding="legacy", batch_size=16), indices=range(4))
    np.testing.assert_array_equal(shard.counts, library.counts)

    capsys.readouterr()
    assert extract_cli.main(["--model_card", "tiny-sd", "--description", "mini", "--prompt", "few"]) == 0
    out = tmp_path / "final_result"
    stem = "epoch_1_to_1_neg_prompt_False_few_mini_tiny_sd"
    hrv = np.load(out / f"category_vectors_{stem}.npy")
    assert hrv.shape == (CONCEPTS.num_concepts, 22) and hrv.dtype == np.float32
    np.testing.assert_allclose(hrv.sum(axis=1), 22.0, rtol=1e-5)
    index = np.load(out / f"head_index_{stem}.npy")
    assert index.tolist() == head_layout(pipe.unet).labels

    # The paper's "merged" prompts need the PromptHero file, which is not shipped.
    monkeypatch.setattr("hrv_diffusion.hrv.prompts.BUILTIN_PROMPTS", tmp_path)  # whatever the checkout holds
    capsys.readouterr()
    assert relevance_cli.main(common + ["--prompt", "merged", "--quiet"]) == 2
    assert "prompt-hero" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------- 6. torchrun ranks

def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_ranks_merge_to_the_single_process_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    description, prompt_file = write_inputs(tmp_path, PROMPTS[:5])  # 5 prompts: ranks of 2 and 3
    common = ["--model_card", "tiny-sd", "--description", str(description)]
    assert text_embeddings_cli.main(common) == 0
    flags = common + ["--prompt", str(prompt_file), "--num_inference_steps", str(STEPS), "--batch_size", "2",
                      "--embeddings", str(tmp_path / "word_lists" / "text_embedding_mini_tiny_sd.safetensors"),
                      "--quiet"]

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1",
               CUDA_VISIBLE_DEVICES="", PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
               "--master_addr=127.0.0.1", f"--master_port={free_loopback_port()}",
               str(REPO / "head_relevance_calculation.py")] + flags + ["--output_dir", "dist"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    names = sorted(p.name for p in (tmp_path / "dist" / "results").iterdir())
    assert names == [f"few_mini_ba_epoch_1_neg_prompt_False_rank_{r}_of_2_tiny_sd.npz" for r in range(2)]
    ranks = [load_shard(tmp_path / "dist" / "results" / name) for name in names]
    assert [s.prompt_indices.tolist() for s in ranks] == [[0, 1], [2, 3, 4]]
    assert [(s.metadata["rank"], s.metadata["world_size"]) for s in ranks] == [(0, 2), (1, 2)]

    assert relevance_cli.main(flags + ["--output_dir", "single", "--dtype", "float32"]) == 0
    [single] = [load_shard(p) for p in (tmp_path / "single" / "results").iterdir()]
    np.testing.assert_array_equal(merge_shards(ranks).counts, single.counts)

    stem = "epoch_1_to_1_neg_prompt_False_few_mini_tiny_sd"
    vectors = {}
    for name in ("dist", "single"):
        assert extract_cli.main(["--model_card", "tiny-sd", "--description", "mini", "--prompt", "few",
                                 "--output_dir", name]) == 0
        vectors[name] = np.load(tmp_path / name / "final_result" / f"category_vectors_{stem}.npy")
    assert "merged 2 shard(s)" in capsys.readouterr().out
    assert vectors["dist"].shape == (CONCEPTS.num_concepts, 22)
    np.testing.assert_array_equal(vectors["dist"], vectors["single"])


# ----------------------------------------------------------------------------------------- 7. SD 2.x (tiny-sd2)

@pytest.fixture(scope="module")
def sd2():
    return load_pipeline("tiny-sd2")


def sd2_settings(**kw) -> RelevanceSettings:
    return settings(**(dict(model_card="tiny-sd2", model_version="tiny_sd2") | kw))


def test_tiny_sd2_rank_shards_and_a_resumed_run_equal_one_run(sd2, tmp_path, monkeypatch):
    """SD 2.x (39 heads on 16 layers, v-prediction, words padded with "!"): every head votes once per prompt and
    evaluation; two rank shards merged, and a run resumed after a crash, equal one uninterrupted run."""
    import hrv_diffusion.hrv.construction as construction

    emb, lengths = encode_words(sd2, list(CONCEPTS.flat_words))
    embeddings = TextEmbeddings(embeddings=emb, token_lengths=torch.as_tensor(lengths), metadata={})
    indices = ALL[:4]
    s = sd2_settings(batch_size=2, checkpoint_every=1)
    whole = run(sd2, embeddings, tmp_path / "whole", s, indices)
    assert whole.counts.shape == (STEPS + 1, head_layout(sd2.unet).num_heads, CONCEPTS.num_concepts) == (3, 39, 3)
    assert (whole.counts.sum(-1) == len(indices)).all()

    parts = [run(sd2, embeddings, tmp_path / "split", s, rank_indices(indices, r, 2), rank=r, world_size=2)
             for r in range(2)]
    np.testing.assert_array_equal(merge_shards(parts).counts, whole.counts)

    original, calls = construction.generate, []

    def crash_on_second_call(pipe_, prompts, *args, **kwargs):
        calls.append(list(prompts))
        if len(calls) == 2:
            raise Crash("simulated crash in the 2nd batch")
        return original(pipe_, prompts, *args, **kwargs)

    monkeypatch.setattr(construction, "generate", crash_on_second_call)
    with pytest.raises(Crash):
        run(sd2, embeddings, tmp_path / "resumed", s, indices)
    monkeypatch.setattr(construction, "generate", original)
    assert load_shard(shard_path(tmp_path / "resumed", s, 1, 0, 1)).prompt_indices.tolist() == [0, 1]
    resumed = run(sd2, embeddings, tmp_path / "resumed", s, indices, resume=True)
    assert resumed.prompt_indices.tolist() == indices and resumed.metadata["complete"] is True
    np.testing.assert_array_equal(resumed.counts, whole.counts)


def test_tiny_sd2_cli_embeddings_subset_shards_and_extract(sd2, tmp_path, monkeypatch, capsys):
    """hrv-text-embeddings, hrv-relevance in two --subset_running parts and hrv-extract with --model_card tiny-sd2:
    files named tiny_sd2, the merged parts equal the library's run, an HRV of 39 heads in the published order."""
    monkeypatch.chdir(tmp_path)
    description, prompt_file = write_inputs(tmp_path, PROMPTS[:4])
    common = ["--model_card", "tiny-sd2", "--description", str(description)]
    assert text_embeddings_cli.main(common) == 0
    from hrv_diffusion.hrv.embeddings import load_text_embeddings

    embeddings = load_text_embeddings(tmp_path / "word_lists" / "text_embedding_mini_tiny_sd2.safetensors")
    assert embeddings.metadata["model_version"] == "tiny_sd2" and embeddings.embeddings.shape[-1] == 48

    flags = common + ["--prompt", str(prompt_file), "--num_inference_steps", str(STEPS), "--dtype", "float32",
                      "--quiet", "--subset_running", "--denominator", "2"]
    for part in ("1", "2"):
        assert relevance_cli.main(flags + ["--numerator", part]) == 0
    shards = sorted((tmp_path / "results").iterdir())
    assert len(shards) == 2 and all(path.name.endswith("_tiny_sd2.npz") for path in shards)
    library = run(sd2, embeddings, tmp_path / "library", sd2_settings(batch_size=4), indices=range(4))
    np.testing.assert_array_equal(merge_shards([load_shard(path) for path in shards]).counts, library.counts)

    capsys.readouterr()
    assert extract_cli.main(["--model_card", "tiny-sd2", "--description", "mini", "--prompt", "few"]) == 0
    assert "merged 2 shard(s)" in capsys.readouterr().out
    stem = "epoch_1_to_1_neg_prompt_False_few_mini_tiny_sd2"
    hrv = np.load(tmp_path / "final_result" / f"category_vectors_{stem}.npy")
    assert hrv.shape == (CONCEPTS.num_concepts, 39)
    np.testing.assert_allclose(hrv.sum(axis=1), 39.0, rtol=1e-5)
    index = np.load(tmp_path / "final_result" / f"head_index_{stem}.npy")
    assert index.tolist() == head_layout(sd2.unet).labels
