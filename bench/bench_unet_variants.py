"""GPU timing of the weakening UNet loop (50 PNDM steps = 51 evaluations, CFG, latents only) under variants:
default, cuDNN attention first, fused QKV projections, channels-last, a larger batch. SD v1.4 architecture,
random weights, fp16, one process. It tells which variant is worth making a default.

    python bench/bench_unet_variants.py --out bench/results/weakening_unet_variants.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hrv import random_pipeline  # noqa: E402
from hrv_diffusion.core.loop import generate  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.apps.weakening import HeadWeakening, weakened_tokens  # noqa: E402

PROMPT = "a cubist style painting of a castle"


def unet_loop_seconds(pipe, batch: int, context=contextlib.nullcontext) -> float:
    """Seconds per image of one call (after a warm-up call), random per-sample head masks."""
    layout = head_layout(pipe.unet)
    masks = torch.rand(batch, layout.num_heads, generator=torch.Generator().manual_seed(0)) < 0.5  # (B, H)
    tokens = weakened_tokens(pipe.tokenizer, PROMPT).expand(batch, -1)
    latents = torch.randn((batch, 4, 64, 64), generator=torch.Generator().manual_seed(0)).cuda().half()
    times = []
    for _ in range(2):
        control = HeadWeakening(layout, masks, tokens, -2.0, num_evaluations=51, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        with context():
            generate(pipe, [PROMPT] * batch, latents, num_inference_steps=50, controllers=[control])
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[-1] / batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=42)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cudnn_first = lambda: sdpa_kernel([SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                       SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH], set_priority=True)
    report = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "batch": args.batch,
              "unit": "seconds per image, UNet loop only (51 evaluations, CFG 7.5, fp16)"}
    pipe = random_pipeline("sd", torch.float16, "cuda")
    runs = [("default", args.batch, None), ("cudnn_attention_first", args.batch, cudnn_first),
            ("default_batch_x2", 2 * args.batch, None)]
    for name, batch, context in runs:
        report[name] = unet_loop_seconds(pipe, batch, context or contextlib.nullcontext)
        print(name, report[name], flush=True)
    pipe.unet.to(memory_format=torch.channels_last)
    report["channels_last"] = unet_loop_seconds(pipe, args.batch)
    print("channels_last", report["channels_last"], flush=True)
    pipe.unet.to(memory_format=torch.contiguous_format)
    pipe.unet.fuse_qkv_projections()
    report["fused_qkv"] = unet_loop_seconds(pipe, args.batch)
    report["fused_qkv_cudnn_attention_first"] = unet_loop_seconds(pipe, args.batch, cudnn_first)
    print(json.dumps(report, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
