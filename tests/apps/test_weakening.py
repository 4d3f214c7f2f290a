"""Ordered weakening: per-sample head masks in one batch, token selection, job planning, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hrv_diffusion.core.loop import decode_latents, generate, seed_latents
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.core.tokenizer import clip_tokenizer
from hrv_diffusion.apps.runs import pack
from hrv_diffusion.apps.weakening import (HeadWeakening, HrvHeads, Job, generate_weakened, image_paths, plan_jobs,
                                          plan_renders, weakened_tokens)

STEPS = 3


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd")


def run(pipe, prompt, head_masks, factor=-2.0, seeds=None):
    """Latents of one batched call with per-sample head masks (all prompt tokens weakened)."""
    b = head_masks.shape[0]
    seeds = seeds or [10] * b
    tokens = weakened_tokens(pipe.tokenizer, prompt).expand(b, -1)
    control = HeadWeakening(head_layout(pipe.unet), head_masks, tokens, factor, num_evaluations=STEPS + 1)
    return generate(pipe, [prompt] * b, seed_latents(seeds, (4, 16, 16)), num_inference_steps=STEPS,
                    controllers=[control]).latents


def test_batched_masks_equal_one_image_at_a_time(pipe):
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(4, 22, generator=g) < 0.4  # (B, H) different heads per sample
    masks[0] = False
    batched = run(pipe, "a red car", masks, seeds=[10, 20, 30, 10])
    for b in range(4):
        single = run(pipe, "a red car", masks[b : b + 1], seeds=[[10, 20, 30, 10][b]])
        torch.testing.assert_close(batched[b : b + 1], single, atol=2e-5, rtol=2e-5)
    assert not torch.allclose(batched[0], batched[3])  # same seed, weakened heads differ -> images differ


def test_factor_one_equals_plain_generation(pipe):
    masks = torch.ones(2, 22, dtype=torch.bool)
    weakened = run(pipe, "a red car", masks, factor=1.0)
    latents = torch.cat([torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(10))] * 2)
    with torch.no_grad():
        plain = pipe(["a red car"] * 2, latents=latents, num_inference_steps=STEPS, output_type="latent").images
    torch.testing.assert_close(weakened, plain, atol=1e-6, rtol=1e-6)


def test_all_heads_top_equals_bottom():
    hrv = np.random.default_rng(0).random(22)
    heads = HrvHeads(hrv)
    assert sorted(heads("top", 22)) == sorted(heads("bottom", 22)) == list(range(22))
    assert heads("top", 3) == list(np.argsort(-hrv)[:3]) and heads("bottom", 3) == list(np.argsort(hrv)[:3])


def test_ties_break_by_head_index():
    heads = HrvHeads(np.array([1.0, 2.0, 2.0, 0.0, 0.0]))
    assert heads("top", 3) == [1, 2, 0] and heads("bottom", 3) == [3, 4, 0]


def test_weakened_tokens():
    tok = clip_tokenizer()
    n = len(tok.encode("a cubist style painting of a castle")) - 2
    assert weakened_tokens(tok, "a cubist style painting of a castle").nonzero().flatten().tolist() == list(range(1, n + 1))
    word = weakened_tokens(tok, "a steampunk style painting of a castle", "steampunk").nonzero().flatten().tolist()
    assert word == list(range(2, 2 + len(tok.encode("steampunk")) - 2))
    with pytest.raises(ValueError, match="not in the prompt"):
        weakened_tokens(tok, "a red car", "blue")


def test_plan_jobs_runs_k0_once():
    jobs = plan_jobs([0, 1, 5], [10, 20])
    assert len(jobs) == 2 + 2 * 2 * 2
    assert [j for j in jobs if j.k == 0] == [Job("top", 0, 10), Job("top", 0, 20)]


def test_generate_writes_layout_and_skips_existing(pipe, tmp_path):
    jobs = plan_jobs([0, 2], [10])
    heads = HrvHeads(np.arange(22.0))
    made = generate_weakened(pipe, "a red car", heads, jobs, tmp_path, num_inference_steps=STEPS, batch_size=2)
    assert made == 3
    for name in ["top/top_0/10.png", "bottom/bottom_0/10.png", "top/top_2/10.png", "bottom/bottom_2/10.png"]:
        assert (tmp_path / name).is_file()
    assert image_paths(tmp_path, Job("top", 0, 10)) == [tmp_path / "top/top_0/10.png", tmp_path / "bottom/bottom_0/10.png"]
    assert generate_weakened(pipe, "a red car", heads, jobs, tmp_path, num_inference_steps=STEPS) == 0


def test_plan_renders_merges_identical_head_sets():
    heads = HrvHeads(np.random.default_rng(0).random(22))
    jobs = plan_jobs([0, 1, 22], [10, 20])  # 2 (k=0) + 2 orders x 2 k x 2 seeds = 10 jobs
    renders = plan_renders(jobs, heads)
    assert len(jobs) == 10 and len(renders) == 2 + 2 * 2 + 2  # k=22 top and bottom are the same set: once per seed
    assert sum(len(r.jobs) for r in renders) == len(jobs)
    full = [r for r in renders if len(r.heads) == 22]
    assert [sorted((j.order, j.seed) for j in r.jobs) for r in full] == [[("bottom", 10), ("top", 10)],
                                                                         [("bottom", 20), ("top", 20)]]
    assert all(r.heads == () for r in renders if any(j.k == 0 for j in r.jobs))


@pytest.mark.parametrize("n,size", [(87, 32), (84, 42), (90, 16), (5, 8), (1, 1), (0, 4), (33, 32)])
def test_renders_are_packed_in_even_batches(n, size):
    parts = pack([1] * n, size)  # one row per render
    lengths = [p.stop - p.start for p in parts]
    assert [i for p in parts for i in range(p.start, p.stop)] == list(range(n))
    assert len(parts) == -(-n // size) and (not lengths or max(lengths) - min(lengths) <= 1 and max(lengths) <= size)


def test_identical_head_sets_are_generated_once_and_written_everywhere(pipe, tmp_path, monkeypatch):
    import hrv_diffusion.apps.weakening as weakening

    calls = []
    monkeypatch.setattr(weakening, "generate", lambda pipe, prompts, *a, **kw: calls.append(len(prompts)) or generate(pipe, prompts, *a, **kw))
    jobs = plan_jobs([0, 22], [10])
    made = generate_weakened(pipe, "a red car", HrvHeads(np.arange(22.0)), jobs, tmp_path, num_inference_steps=STEPS,
                             batch_size=8)
    assert made == 3 and calls == [2]  # 3 jobs, 2 distinct images, one call
    monkeypatch.undo()
    top, bottom = (np.asarray(Image.open(tmp_path / f"{o}/{o}_22/10.png")) for o in ("top", "bottom"))
    np.testing.assert_array_equal(top, bottom)
    masks = torch.ones(1, 22, dtype=torch.bool)
    single = run(pipe, "a red car", masks)  # all heads weakened, generated alone
    expected = decode_latents(pipe, single)[0]
    assert np.abs(top.astype(int) - expected.astype(int)).max() <= 1


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    from hrv_diffusion.cli.weakening import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "final_result").mkdir()
    hrv = np.random.default_rng(1).random((34, 22)).astype(np.float32)
    np.save(tmp_path / "final_result" / "my_hrv.npy", hrv)
    args = ["--model_card", "tiny-sd", "--prompt", "a ../../red car", "--concept", "Color", "--seeds", "10",
            "--heads_to_be_perturbed", "0", "3", "--n_inference_steps", "2", "--hrv", "final_result/my_hrv.npy",
            "--experiment_num", "1", "--quiet"]
    assert main(args) == 0
    root = tmp_path / "ordered_weakening_analysis" / "hp_outputs" / "exp_1"
    pngs = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert len(pngs) == 4 and all(p.count("/") == 3 for p in pngs)  # one sanitized prompt folder, inside exp_1
    assert main([("Colour" if a == "Color" else a) for a in args]) == 2
    assert "unknown concept" in capsys.readouterr().err
    bad = args.copy()
    bad[bad.index("final_result/my_hrv.npy")] = "final_result/wrong.npy"
    bad += ["--output_path", "other"]  # the first output folder's manifest would refuse another HRV first
    np.save(tmp_path / "final_result" / "wrong.npy", hrv[:, :5])
    assert main(bad) == 2
    assert "an HRV of a model with 5 heads, but the model (--model_card) is tiny_sd" in capsys.readouterr().err


def test_cli_on_tiny_sd2(tmp_path, monkeypatch, capsys):
    """Ordered weakening on SD 2.x's miniature: a 39-head HRV weakens its heads; an HRV of 128 heads is named as
    SD v1.x's."""
    from hrv_diffusion.cli.weakening import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "final_result").mkdir()
    np.save(tmp_path / "final_result" / "sd2.npy", np.random.default_rng(1).random((34, 39)).astype(np.float32))
    args = ["--model_card", "tiny-sd2", "--prompt", "a red car", "--concept", "Color", "--seeds", "10",
            "--heads_to_be_perturbed", "0", "3", "--n_inference_steps", "2", "--hrv", "final_result/sd2.npy",
            "--experiment_num", "1", "--quiet"]
    assert main(args) == 0
    root = tmp_path / "ordered_weakening_analysis" / "hp_outputs" / "exp_1"
    assert len(list(root.rglob("*.png"))) == 4
    np.save(tmp_path / "final_result" / "sd14.npy", np.ones((34, 128), dtype=np.float32))
    bad = args[:args.index("final_result/sd2.npy")] + ["final_result/sd14.npy", "--experiment_num", "1", "--quiet",
                                                       "--output_path", "other"]
    assert main(bad) == 2
    assert "an HRV of SD v1.x (sd_v1_4) (128 heads), but the model (--model_card) is tiny_sd2 with 39" in \
        capsys.readouterr().err


def test_cli_hrv_paper_goes_through_load_hrv(tmp_path, monkeypatch, capsys):
    from hrv_diffusion.cli.weakening import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "cache"))
    toy = ["--model_card", "toy", "--description", "toy_concepts", "--prompt", "a red circle", "--concept", "Color",
           "--seeds", "1", "--heads_to_be_perturbed", "0", "5", "--n_inference_steps", "2", "--hrv", "paper", "--quiet"]
    assert main(toy) == 0  # the toy's HRVs ship with the package
    assert len(list((tmp_path / "ordered_weakening_analysis").rglob("*.png"))) == 4  # top/bottom x k = 0, 5
    sd = ["--model_card", "CompVis/stable-diffusion-v1-4", "--prompt", "a red car", "--hrv", "paper", "--quiet"]
    monkeypatch.setattr("hrv_diffusion.core.models.load_pipeline", lambda *a, **k: load_pipeline("tiny-sd"))
    assert main(sd) == 2
    err = capsys.readouterr().err
    assert "run `hrv-published`" in err and str(tmp_path / "cache") in err


@pytest.mark.parametrize("window, graphed", [((0.0, 1.01), True), ((0.0, 0.5), False)])
def test_cuda_graphs_only_where_the_weakening_is_the_same_at_every_step(pipe, tmp_path, monkeypatch, window, graphed):
    """``cuda_graphs``: one graph of the guided call per batch, only when the window covers every evaluation. Under
    ``FrozenGraphCache`` (later steps replay the first step's call with its Python frozen, as a CUDA graph does)
    the images equal plain generation's."""
    from frozen_graphs import FrozenGraphCache

    import hrv_diffusion.apps.weakening as weakening

    caches = []

    class SpyCache(FrozenGraphCache):
        def __init__(self):
            super().__init__()
            caches.append(self)

    monkeypatch.setattr(weakening, "graphs_supported", lambda p: True)  # as on CUDA with PNDM
    monkeypatch.setattr(weakening, "GraphCache", SpyCache)
    jobs, heads = plan_jobs([2], [10, 20]), HrvHeads(np.arange(22.0))

    def images(folder, **kw):
        generate_weakened(pipe, "a red car", heads, jobs, tmp_path / folder, num_inference_steps=STEPS, batch_size=4,
                          window=window, **kw)
        return [np.asarray(Image.open(p)) for p in sorted((tmp_path / folder).rglob("*.png"))]

    plain = images("plain")
    assert not caches
    with_graphs = images("graphs", cuda_graphs=True)
    assert len(caches) == (1 if graphed else 0)  # one batch of 4 renders
    if graphed:
        assert caches[0].captures == 1 and caches[0].replays == STEPS
    assert len(plain) == len(with_graphs) == 4 and all(np.array_equal(a, b) for a, b in zip(plain, with_graphs))
