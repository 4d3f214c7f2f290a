"""GPU benchmark of HRV construction on the real SD v1.4 / SDXL architectures with random weights.

The compute equals the real models' (same configs), only the weights are random: no download is possible here.
In one process it times, on the same prompts, batch and dtype:
  - plain diffusers generation (output_type="latent", no hooks),
  - HRV construction (``run_relevance``: votes at every CA layer and evaluation),
and compares fp16 with fp32 HRV runs of the same prompts (vote agreement and HRV rank correlation).

    python bench/bench_hrv.py --model sd --batch 32 --prompts 96 --out bench/results/hrv_sd_v1_4.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.construction import RelevanceSettings, run_relevance  # noqa: E402
from hrv_diffusion.hrv.embeddings import TextEmbeddings, encode_words  # noqa: E402
from hrv_diffusion.core.models import paper_scheduler  # noqa: E402
from hrv_diffusion.hrv.prompts import load_prompts  # noqa: E402
from hrv_diffusion.hrv.files import hrv_from_rank, relevance  # noqa: E402
from hrv_diffusion.hrv.shards import load_shard  # noqa: E402
from hrv_diffusion.core.speed import compile_unet_regions  # noqa: E402
from hrv_diffusion.core.tokenizer import clip_tokenizer  # noqa: E402

CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              projection_dim=768, hidden_act="quick_gelu")
CLIP_BIGG = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                 projection_dim=1280, hidden_act="gelu")


def random_pipeline(model: str, dtype: torch.dtype, device: str, init_device: str | None = None):
    """SD v1.4 or SDXL base 1.0 with their real configs and random (seeded) weights. ``init_device="cuda"``
    draws the weights on the GPU (seconds instead of minutes for SDXL; other random values than on the CPU)."""
    import contextlib

    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    torch.manual_seed(0)
    with torch.device(init_device) if init_device else contextlib.nullcontext():
        unet, vae, encoders = _random_modules(model)
    if model == "sd":
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=encoders[0], tokenizer=clip_tokenizer(),
                                       unet=unet, scheduler=paper_scheduler({}), safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=encoders[0], text_encoder_2=encoders[1],
                                         tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"), unet=unet,
                                         scheduler=paper_scheduler({}), force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device=device, dtype=dtype)


def _random_modules(model: str):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    unet_config = json.loads((ROOT / "tests/configs" / ("sd_v1_4_unet.json" if model == "sd" else "sdxl_base_1_0_unet.json")).read_text())
    unet = UNet2DConditionModel.from_config(unet_config)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        sample_size=512 if model == "sd" else 1024, scaling_factor=0.18215 if model == "sd" else 0.13025)
    text = lambda cfg, cls: cls(CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406,
                                               eos_token_id=49407, **cfg)).eval()
    if model == "sd":
        return unet, vae, (text(CLIP_L, CLIPTextModel),)
    return unet, vae, (text(CLIP_L, CLIPTextModel), text(CLIP_BIGG, CLIPTextModelWithProjection))


def timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start, out


def hrv_run(pipe, concepts, emb, prompts, batch, dtype_name, results, compile=False, cuda_graphs=False):
    settings = RelevanceSettings(model_card="random", model_version="random", description="paper", prompt="bench",
                                 batch_size=batch, dtype=dtype_name, checkpoint_every=10**9, compile=compile,
                                 cuda_graphs=cuda_graphs)
    meta = {"concept_fingerprint": concepts.fingerprint(), "concept_names": list(concepts.names), "prompt_fingerprint": "bench"}
    [path] = run_relevance(pipe, settings, concepts, emb, prompts, list(range(len(prompts))), meta, results, progress=False)
    counts = load_shard(path).counts
    path.unlink()
    return counts


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["sd", "sdxl"], default="sd")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--prompts", type=int, default=96, help="timed prompts (after one warm-up batch)")
    p.add_argument("--agreement_prompts", type=int, default=16, help="prompts for the fp16-vs-fp32 comparison")
    p.add_argument("--compile", action="store_true", help="also time a torch.compile'd UNet")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = "cuda"
    concepts = read_concept_set(resolve_description("340_final_text_descriptions"))
    prompts = load_prompts("imagenet")
    report = {"model": args.model, "card": torch.cuda.get_device_name(), "torch": torch.__version__,
              "batch": args.batch, "prompts": args.prompts, "steps": 50, "evaluations": 51}
    import diffusers
    report["diffusers"] = diffusers.__version__
    results = Path(tempfile.mkdtemp())

    pipe = random_pipeline(args.model, torch.float16, device)
    emb, lengths = encode_words(pipe, list(concepts.flat_words))
    te = TextEmbeddings(embeddings=emb, token_lengths=lengths, metadata={})
    warm, timed_prompts = prompts[: args.batch], prompts[args.batch : args.batch + args.prompts]

    def plain(batch_prompts):
        for i in range(0, len(batch_prompts), args.batch):
            chunk = batch_prompts[i : i + args.batch]
            with torch.no_grad():
                pipe(prompt=chunk, num_inference_steps=50, guidance_scale=7.5, output_type="latent",
                     generator=torch.Generator().manual_seed(i))

    plain(warm)
    torch.cuda.reset_peak_memory_stats()
    seconds, _ = timed(lambda: plain(timed_prompts))
    report["plain_fp16_s_per_prompt"] = seconds / len(timed_prompts)
    report["plain_fp16_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"plain fp16: {report['plain_fp16_s_per_prompt']:.3f} s/prompt", flush=True)

    hrv_run(pipe, concepts, te, warm, args.batch, "float16", results)
    torch.cuda.reset_peak_memory_stats()
    seconds, counts16_all = timed(lambda: hrv_run(pipe, concepts, te, timed_prompts, args.batch, "float16", results))
    report["hrv_fp16_s_per_prompt"] = seconds / len(timed_prompts)
    report["hrv_fp16_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print(f"HRV fp16: {report['hrv_fp16_s_per_prompt']:.3f} s/prompt, peak {report['hrv_fp16_peak_gib']:.1f} GiB", flush=True)

    if args.compile:  # regional compilation: everything but the cross-attention layers
        compile_unet_regions(pipe.unet)
        seconds, _ = timed(lambda: hrv_run(pipe, concepts, te, warm, args.batch, "float16", results, True))
        report["hrv_fp16_compile_warmup_s"] = seconds
        torch.cuda.reset_peak_memory_stats()
        seconds, counts_c = timed(lambda: hrv_run(pipe, concepts, te, timed_prompts, args.batch, "float16", results, True))
        report["hrv_fp16_compiled_s_per_prompt"] = seconds / len(timed_prompts)
        report["hrv_fp16_compiled_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        report["vote_histogram_overlap_compiled_eager"] = float(np.minimum(counts_c, counts16_all).sum() / counts_c.sum())
        print(f"HRV fp16 compiled: {report['hrv_fp16_compiled_s_per_prompt']:.3f} s/prompt", flush=True)
        torch._dynamo.reset()
        if args.agreement_prompts:
            pipe.unet = random_pipeline(args.model, torch.float16, device).unet  # uncompiled, same seeded weights

    if not args.agreement_prompts:
        return finish(report, args.out)
    # fp16 vs fp32 on the same prompts, seeds and words
    few = prompts[: args.agreement_prompts]
    batch_small = min(args.batch, 8)
    counts16 = hrv_run(pipe, concepts, te, few, batch_small, "float16", results)
    pipe.to(torch.float32)
    counts32 = hrv_run(pipe, concepts, te, few, batch_small, "float32", results)
    overlap = np.minimum(counts16, counts32).sum() / counts32.sum()
    hrv16, hrv32 = hrv_from_rank(relevance(counts16)), hrv_from_rank(relevance(counts32))
    from scipy.stats import spearmanr
    rho = [spearmanr(a, b).statistic for a, b in zip(hrv16, hrv32)]
    report["agreement_prompts"] = len(few)
    report["vote_histogram_overlap_fp16_fp32"] = float(overlap)
    report["hrv_spearman_fp16_fp32_mean"] = float(np.nanmean(rho))
    report["hrv_spearman_fp16_fp32_min"] = float(np.nanmin(rho))
    finish(report, args.out)


def finish(report, out):
    print(json.dumps(report, indent=1), flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
