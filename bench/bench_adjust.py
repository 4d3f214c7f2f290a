"""Speed of SD-HRV concept adjusting against plain generation of the same batch and dtype, in one process.

SD v1.4 (512²) and SDXL base 1.0 (1024²) architectures with random weights (real UNet configs, as bench_hrv.py),
the paper's sampler (PNDM, 50 steps = 51 UNet evaluations), CFG 7.5, VAE decode with truncation included:

  plain     ``core.loop.generate`` with no controller: diffusers' fused attention everywhere;
  adjusted  ``apps.adjust.generate_adjusted`` (with_standard=False), the paper's SD-HRV on every row: the word's
            columns x (2·HRV[Color] − HRV[Plants]) in every CA head, conditional half, every evaluation (SDXL:
            clamp 9). The probabilities are never formed: the hooks scale V per (head, token) and keep fused SDPA.

Runs alternate (plain, adjusted, plain, ...) after one warm-up of each, so drift hits both; the ratio is the
median adjusted time over the median plain time (acceptance: <= 1.05). Also the largest pixel difference between
an adjusted run whose factors are all 1 and the plain run (0: the hooked path is the plain path).

    python bench/bench_adjust.py --out bench/results/adjust.json             # CUDA: about 3 minutes on an H200
    python bench/bench_adjust.py --smoke --out /tmp/adjust_smoke.json        # tiny-sd / tiny-sdxl on the CPU
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hrv_diffusion.apps.adjust import SDXL_CLAMP, Adjustment, generate_adjusted  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.vectors import HRV  # noqa: E402

CASES = {"sd": ("A vase in lavender color", "lavender", None), "sdxl": ("A rose-colored vase", "rose-colored",
                                                                      SDXL_CLAMP)}


def synthetic_hrv(layout, ones: bool = False) -> HRV:
    """Random HRVs of the paper's shape (34 concepts, rows summing to H): speed does not depend on the values."""
    names = read_concept_set(resolve_description("340_final_text_descriptions")).names
    values = np.ones((len(names), layout.num_heads), np.float32) if ones else \
        np.random.default_rng(0).gamma(0.5, size=(len(names), layout.num_heads)).astype(np.float32)
    return HRV(values / values.sum(1, keepdims=True) * layout.num_heads, names, tuple(layout.labels), "synthetic")


def pipeline(model: str, smoke: bool, dtype):
    if smoke:
        from hrv_diffusion.core.models import load_pipeline

        return load_pipeline("tiny-sd" if model == "sd" else "tiny-sdxl", dtype=dtype)
    from bench_hrv import random_pipeline

    return random_pipeline(model, dtype, "cuda")


def timer(cuda: bool):
    def run(fn):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, out
    return run


def bench_model(model: str, args, dtype) -> dict:
    cuda = not args.smoke
    clock = timer(cuda)
    pipe = pipeline(model, args.smoke, dtype)
    layout = head_layout(pipe.unet)
    prompt, word, clamp = CASES[model]
    batch = args.batch or (2 if args.smoke else (8 if model == "sd" else 4))
    prompts, seeds = [prompt] * batch, list(range(1, batch + 1))
    adjustment = Adjustment.sd_hrv(word, "Color", "Plants", clamp=clamp)
    hrv = synthetic_hrv(layout)

    def plain():
        latents = seed_latents(seeds, latent_shape(pipe))  # as generate_adjusted does
        return generate(pipe, prompts, latents, num_inference_steps=args.steps, decode="truncate").images

    def adjusted(h=hrv):
        return generate_adjusted(pipe, prompts, seeds, adjustment, hrv=h, with_standard=False,
                                 num_inference_steps=args.steps).adjusted

    _, plain_images = clock(plain)  # warm-up
    clock(adjusted)
    times = {"plain": [], "adjusted": []}
    for _ in range(args.reps):
        times["plain"].append(clock(plain)[0])
        times["adjusted"].append(clock(adjusted)[0])
    ones_images = adjusted(synthetic_hrv(layout, ones=True))  # factors of 1: the plain images
    plain_s, adjusted_s = statistics.median(times["plain"]), statistics.median(times["adjusted"])
    result = {"batch": batch, "prompt": prompt, "word": word, "clamp": clamp, "cross_attention_heads": layout.num_heads,
              "plain_s": plain_s, "adjusted_s": adjusted_s, "ratio": adjusted_s / plain_s, "all_s": times,
              "images_per_s_plain": batch / plain_s, "images_per_s_adjusted": batch / adjusted_s,
              "max_abs_uint8_factor_one_vs_plain": int(np.abs(ones_images.astype(int) - plain_images).max())}
    if cuda:
        result["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny-sd / tiny-sdxl on the CPU, 3 steps: checks the code path")
    p.add_argument("--models", nargs="+", choices=["sd", "sdxl"], default=["sd", "sdxl"], help="architectures")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: 50; smoke: 3)")
    p.add_argument("--batch", type=int, default=None, help="images per call (default: SD 8, SDXL 4; smoke: 2)")
    p.add_argument("--reps", type=int, default=None, help="timed runs of each kind (default: 3; smoke: 2)")
    p.add_argument("--dtype", choices=["float16", "bfloat16", "float32"], default=None,
                   help="default: float16 on CUDA, float32 for --smoke")
    p.add_argument("--out", required=True, help="JSON file of the raw results")
    args = p.parse_args(argv)
    args.steps = args.steps or (3 if args.smoke else 50)
    args.reps = args.reps or (2 if args.smoke else 3)
    dtype_name = args.dtype or ("float32" if args.smoke else "float16")
    dtype = getattr(torch, dtype_name)
    report = {"what": "SD-HRV adjusted vs plain generation, same batch and dtype, one process",
              "smoke": args.smoke, "steps": args.steps, "evaluations": args.steps + 1, "dtype": dtype_name,
              "torch": torch.__version__,
              "device": "cpu" if args.smoke else torch.cuda.get_device_name(), "models": {}}
    try:
        import diffusers

        report["diffusers"] = diffusers.__version__
    except ImportError:
        pass
    out = Path(args.out)
    for model in args.models:
        result = bench_model(model, args, dtype)  # the pipeline is freed when it returns
        if not args.smoke:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        report["models"][model] = result
        print(f"{model}: plain {result['plain_s']:.3f} s, adjusted {result['adjusted_s']:.3f} s, ratio "
              f"{result['ratio']:.3f} (batch {result['batch']}); factor-1 images vs plain: max |diff| "
              f"{result['max_abs_uint8_factor_one_vs_plain']}", flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
