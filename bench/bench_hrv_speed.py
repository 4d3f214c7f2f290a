"""HRV-construction speed against the reference way, one process (issue 21): SD v1.4 or SDXL, random weights.

- *Reference way*: what the published ``head_relevance_calculation(_sdxl).py`` does per prompt, in our own code:
  one prompt per pipeline call, fp32, explicit attention (softmax(QKᵀ) then P @ V) in every layer, and at every
  cross-attention call a fresh word per concept from the CPU RNG, its tokens' keys through ``to_k`` for that call,
  the softmax over them averaged per concept in a Python loop, a one-hot vote copied to the host; the image is
  VAE-decoded at the end (not written). Seconds per prompt: the median of ``--reference_prompts`` prompts after a
  short warm-up.
- *Ours*: ``run_relevance`` (the code path of the CLI) in fp16 under named variants, each timed on the same
  ``--prompts`` prompts after one warm-up batch; every variant's vote counts are compared cell by cell with the
  first compiled variant's (same prompts, latents and words).

Variants (``--variants``, comma-separated ``NAME:BATCH``, run in the order given; compiling is one-way, so eager
ones go first):
  plain            diffusers' pipeline, no votes (context)
  eager            run_relevance, eager UNet and votes
  compiled         today's ``--compile``: UNet regions but the cross-attention layers compiled, votes compiled
  compiled_plain   the same compiled UNet through our loop without votes: what the votes cost when compiled
  compiled_ln      ``compiled`` with the transformer blocks' layer norms compiled too
  cudnn            the last compiled setting with cuDNN attention first (SDPA priority)
  blocks           a fresh pipeline, ``compile_unet_blocks``: every transformer model compiled whole, its
                   cross-attention modules left eager through graph breaks, the rest as ``compiled``
  whole            a fresh pipeline, ``compile_unet_blocks(whole=True)``: the UNet's forward compiled whole but
                   the cross-attention modules
  whole_graphs     ``whole``, and each batch's guided UNet call (votes included) captured once in a CUDA graph and
                   replayed at every step (``RelevanceSettings.cuda_graphs``; not yet part of ``--compile``)

``--profile``: one batch of the last variant, 2 PNDM steps (3 evaluations), under torch.profiler: GPU-busy time
against wall time (what CUDA graphs could remove at most) and the top kernels by GPU time.

    python bench/bench_hrv_speed.py --model sd --variants plain:32,eager:32,compiled:32,compiled_plain:32,compiled:64 \
        --reference_prompts 2 --prompts 64 --profile --out bench/results/hrv_speed_sd.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hrv import hrv_run, random_pipeline, timed  # noqa: E402
from hrv_diffusion.core.attention import Controller  # noqa: E402
from hrv_diffusion.core.loop import decode_latents, generate, num_evaluations, seed_latents  # noqa: E402
from hrv_diffusion.core.speed import compile_unet_blocks, compile_unet_regions  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.embeddings import TextEmbeddings, encode_words  # noqa: E402
from hrv_diffusion.hrv.prompts import load_prompts  # noqa: E402


class ExplicitAttention(Controller):
    """Forces explicit probabilities (softmax then P @ V) in every attention layer, as the reference's forward."""

    self_attention = True

    def edits_probs(self, layer, call):
        return True


class ReferenceWayVotes(Controller):
    """The reference hook's per-call vote work at batch 1 (module docstring), in our own code."""

    def __init__(self, unet, embeddings: torch.Tensor, token_lengths, word_counts, generator: torch.Generator):
        self.modules = dict(unet.named_modules())
        self.embeddings = embeddings  # (W, 77, D) on the UNet's device and dtype
        self.lengths = np.asarray(token_lengths)  # (W,) with SOT and EOT
        self.first = np.cumsum([0, *word_counts[:-1]])  # (C,) first word of each concept
        self.word_counts = list(word_counts)
        self.generator = generator
        self.votes = []  # (step, module name, (h, C) one-hot on the host)

    def observe(self, layer, call, query, key):
        concepts = len(self.word_counts)
        draw = torch.randint(0, self.word_counts[0], (concepts,), generator=self.generator).numpy()
        index = self.first + draw  # (C,) one word per concept
        n = self.lengths[index] - 2  # word tokens of each
        parts = [self.embeddings[index[0], : n[0] + 1]] + [self.embeddings[index[c], 1 : n[c] + 1]
                                                           for c in range(1, concepts)]
        sequence = torch.cat(parts)  # (L, D): SOT + every word's tokens
        attn = self.modules[layer.module_name]
        keys = attn.to_k(sequence).view(len(sequence), layer.heads, -1).transpose(0, 1)  # (h, L, d)
        q = query[0]  # (h, N, d) the conditional row
        probs = (torch.matmul(q, keys.transpose(1, 2)) * q.shape[-1] ** -0.5).softmax(-1).mean(1)  # (h, L)
        scores, start = [probs[:, 1 : n[0] + 1].mean(1, keepdim=True)], n[0] + 1
        for c in range(1, concepts):
            scores.append(probs[:, start : start + n[c]].mean(1, keepdim=True))
            start += n[c]
        scores = torch.cat(scores, 1)  # (h, C)
        self.votes.append((call.step, layer.module_name, F.one_hot(scores.argmax(1), concepts).float().cpu()))


def reference_way(model, concepts, words, prompts, count, report, init_device):
    """Seconds per prompt of the reference way (median of ``count`` prompts after a 3-evaluation warm-up)."""
    pipe = random_pipeline(model, torch.float32, "cuda", init_device=init_device)
    emb, lengths = encode_words(pipe, words)
    emb = emb.cuda()
    shape = (pipe.unet.config.in_channels, *(2 * [pipe.unet.config.sample_size]))

    def one(prompt, i, steps=50):
        votes = ReferenceWayVotes(pipe.unet, emb, lengths.tolist(), concepts.word_counts,
                                  torch.Generator().manual_seed(i))
        latents = seed_latents([i], shape)
        with torch.no_grad():
            out = generate(pipe, [prompt], latents, num_inference_steps=steps,
                           controllers=[votes, ExplicitAttention()]).latents
            decode_latents(pipe, out)  # the reference decodes every image (it does not write it)
        return len(votes.votes)

    one(prompts[0], 0, steps=2)
    torch.cuda.reset_peak_memory_stats()
    seconds = []
    for i in range(count):
        s, calls = timed(lambda: one(prompts[1 + i], 1 + i))
        seconds.append(s)
        print(f"reference way, prompt {i}: {s:.2f} s ({calls} votes)", flush=True)
    report["reference_way"] = {"s_per_prompt": statistics.median(seconds), "s_each": seconds, "dtype": "float32",
                               "batch": 1, "vote_calls_per_prompt": calls,
                               "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    del pipe
    torch.cuda.empty_cache()


def plain_run(pipe, prompts, batch):
    for i in range(0, len(prompts), batch):
        with torch.no_grad():
            pipe(prompt=prompts[i : i + batch], num_inference_steps=50, guidance_scale=7.5, output_type="latent",
                 generator=torch.Generator().manual_seed(i))


def loop_run(pipe, prompts, batch):
    """Our loop, no controllers (what the compiled UNet costs without votes)."""
    shape = (pipe.unet.config.in_channels, *(2 * [pipe.unet.config.sample_size]))
    for i in range(0, len(prompts), batch):
        chunk = prompts[i : i + batch]
        generate(pipe, chunk, seed_latents(range(i, i + len(chunk)), shape), num_inference_steps=50)


def cudnn_first():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                        SDPBackend.MATH], set_priority=True)


def profile(pipe, concepts, te, prompts, batch, results, compiled, out_dir):
    """GPU-busy vs wall time of a 3-evaluation HRV run, and the top kernels."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile
    from hrv_diffusion.hrv.construction import RelevanceSettings, run_relevance

    settings = RelevanceSettings(model_card="random", model_version="random", description="paper", prompt="profile",
                                 batch_size=batch, dtype="float16", checkpoint_every=10**9, compile=compiled,
                                 num_inference_steps=2)
    meta = {"concept_fingerprint": concepts.fingerprint(), "concept_names": list(concepts.names),
            "prompt_fingerprint": "profile"}
    run = lambda: [p.unlink() for p in run_relevance(pipe, settings, concepts, te, prompts[:batch],  # noqa: E731
                                                     list(range(batch)), meta, results, progress=False)]
    run()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    per_name = {}  # kernel name -> [GPU seconds, calls]
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            entry = per_name.setdefault(e.name, [0.0, 0])
            entry[0] += e.time_range.elapsed_us() / 1e6
            entry[1] += 1
    busy = sum(v[0] for v in per_name.values())

    def kind(name):
        n = name.lower()
        for k, words in (("attention", ("flash", "fmha", "attention", "sdpa")), ("triton", ("triton",)),
                         ("gemm", ("gemm", "cutlass", "nvjet", "sm90_xmma", "matmul")),
                         ("conv", ("conv", "implicit", "cudnn", "xmma"))):
            if any(w in n for w in words):
                return k
        return "other"

    kinds = {}
    for name, (gpu_s, _) in per_name.items():
        kinds[kind(name)] = kinds.get(kind(name), 0.0) + gpu_s
    top = sorted(per_name.items(), key=lambda item: -item[1][0])[:30]
    return {"evaluations": num_evaluations(pipe, 2), "batch": batch, "wall_s": wall, "gpu_kernel_s": busy,
            "gpu_busy_fraction": busy / wall, "gpu_s_by_kind": kinds,
            "top_kernels": [{"name": name[:120], "gpu_s": gpu_s, "calls": calls} for name, (gpu_s, calls) in top]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["sd", "sdxl"], default="sd")
    p.add_argument("--variants", default="plain:32,eager:32,compiled:32,compiled_plain:32,compiled:64")
    p.add_argument("--prompts", type=int, default=64, help="timed prompts of every variant (after a warm-up batch)")
    p.add_argument("--reference_prompts", type=int, default=2)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--init_on_gpu", action="store_true", help="initialize the random weights on the GPU (faster)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import diffusers

    torch._dynamo.config.automatic_dynamic_shapes = False  # a new batch size compiles static kernels again
    torch._dynamo.config.cache_size_limit = 256
    torch._dynamo.config.accumulated_cache_size_limit = 4096
    report = {"model": args.model, "card": torch.cuda.get_device_name(), "torch": torch.__version__,
              "diffusers": diffusers.__version__, "steps": 50, "evaluations": 51, "timed_prompts": args.prompts,
              "dtype_ours": "float16", "variants": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(report, indent=1) + "\n")  # noqa: E731
    concepts = read_concept_set(resolve_description("340_final_text_descriptions"))
    prompts = load_prompts("imagenet")
    init = "cuda" if args.init_on_gpu else None
    results = Path(tempfile.mkdtemp())

    if args.reference_prompts:
        reference_way(args.model, concepts, list(concepts.flat_words), prompts, args.reference_prompts, report, init)
        print(f"reference way: {report['reference_way']['s_per_prompt']:.3f} s/prompt", flush=True)
        save()

    pipe = random_pipeline(args.model, torch.float16, "cuda", init_device=init)
    emb, lengths = encode_words(pipe, list(concepts.flat_words))
    te = TextEmbeddings(embeddings=emb, token_lengths=lengths, metadata={})
    timed_prompts = prompts[200 : 200 + args.prompts]  # the same prompts for every variant
    compiled, layer_norms, baseline, context = False, False, None, contextlib.nullcontext
    for spec in args.variants.split(","):
        name, batch = spec.split(":")
        batch = int(batch)
        if name in ("compiled", "compiled_plain", "compiled_ln") and not compiled:
            compile_unet_regions(pipe.unet)
            compiled = True
        if name == "compiled_ln" and not layer_norms:
            compile_unet_regions(pipe.unet, layer_norms=True)  # adds the layer norms to the compiled regions
            layer_norms = True
        if name == "cudnn":
            context = cudnn_first
        if name in ("blocks", "whole", "whole_graphs") and compiled != name.removesuffix("_graphs"):
            del pipe
            torch.cuda.empty_cache()
            pipe = random_pipeline(args.model, torch.float16, "cuda", init_device=init)  # the same seeded weights
            compile_unet_blocks(pipe.unet, whole=name != "blocks")
            compiled, layer_norms = name.removesuffix("_graphs"), False
        warm = prompts[: batch]
        if name == "plain":
            fn = lambda ps: plain_run(pipe, ps, batch)  # noqa: E731
        elif name == "compiled_plain":
            fn = lambda ps: loop_run(pipe, ps, batch)  # noqa: E731
        else:
            fn = lambda ps: hrv_run(pipe, concepts, te, ps, batch, "float16", results, compile=bool(compiled),  # noqa: E731
                                    cuda_graphs=name.endswith("_graphs"))
        with context():
            warm_s, _ = timed(lambda: fn(warm))
            torch.cuda.reset_peak_memory_stats()
            seconds, counts = timed(lambda: fn(timed_prompts))
        how = compiled if isinstance(compiled, str) else ("regions" if compiled else False)
        entry = {"batch": batch, "s_per_prompt": seconds / len(timed_prompts), "warmup_s": warm_s,
                 "cuda_graphs": name.endswith("_graphs"),
                 "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "compiled_unet": how,
                 "layer_norms_compiled": layer_norms}
        if counts is not None:
            if baseline is None and compiled:
                baseline = counts
            if baseline is not None:
                entry["counts_equal_to_first_compiled"] = bool(np.array_equal(counts, baseline))
                entry["cells_equal_fraction"] = float((counts == baseline).mean())
                entry["vote_histogram_overlap"] = float(np.minimum(counts, baseline).sum() / baseline.sum())
        if "reference_way" in report:
            entry["speedup_over_reference_way"] = report["reference_way"]["s_per_prompt"] / entry["s_per_prompt"]
        report["variants"][spec] = entry
        print(spec, json.dumps(entry), flush=True)
        save()
    if args.profile:
        try:
            report["profile"] = profile(pipe, concepts, te, prompts, batch, results, bool(compiled), out.parent)
        except Exception as error:  # the timings above are kept
            report["profile"] = {"error": repr(error)}
        print("profile", json.dumps({k: v for k, v in report["profile"].items() if k != "top_kernels"}), flush=True)
    save()
    print(json.dumps(report, indent=1), flush=True)


if __name__ == "__main__":
    main()
