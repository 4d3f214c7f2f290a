"""GPU benchmark of ordered-weakening generation on the SD v1.4 architecture (random weights).

Ours: fp16, every (order, k, seed) image of a prompt in batched pipeline calls with per-sample head masks (k = 0 once),
VAE decode and PNG writing included. The reference way: one fp32 image per pipeline call with explicit (non-fused)
attention in every layer and the weakening applied to explicit probabilities, as SNU-DRL/HRV's monkeypatched forward
does. Both in one process on the same card.

    python bench/bench_weakening.py --prompts 3 --reference_images 3 --out bench/results/weakening_sd_v1_4.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_hrv import random_pipeline  # noqa: E402
from hrv_diffusion.attention import HeadTrace  # noqa: E402
from hrv_diffusion.experiments import build_prompts, experiment  # noqa: E402
from hrv_diffusion.heads import head_layout  # noqa: E402
from hrv_diffusion.weakening import HeadWeakening, HrvHeads, generate_weakened, plan_jobs, weakened_tokens  # noqa: E402

K_LIST = [0, 1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121, 128]
SEEDS = [10, 20, 30]


class ExplicitWeakening(HeadWeakening):
    """The reference's way: weaken on explicit probabilities (forces the non-fused path)."""

    def wants_probs(self, layer, step):
        return True

    def edit_probs(self, layer, step, probs):
        return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--reference_images", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="compile the UNet regions (not cross-attention)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from diffusers.models.attention_processor import AttnProcessor

    prompts = build_prompts(experiment(5))[: args.prompts]
    heads = HrvHeads(np.random.default_rng(0).random(128))
    jobs = plan_jobs(K_LIST, SEEDS)
    report = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "model": "SD v1.4 architecture, random weights",
              "k_list": K_LIST, "seeds": SEEDS, "images_per_prompt": len(jobs), "prompts": len(prompts), "batch": args.batch}

    pipe = random_pipeline("sd", torch.float16, "cuda")
    report["compile"] = args.compile
    if args.compile:
        from hrv_diffusion.speed import compile_unet_regions

        compile_unet_regions(pipe.unet)
    out = Path(tempfile.mkdtemp())
    generate_weakened(pipe, prompts[0], heads, jobs[: args.batch], out / "warm", batch_size=args.batch)
    torch.cuda.synchronize()
    start = time.perf_counter()
    made = sum(generate_weakened(pipe, prompt, heads, jobs, out / f"p{i}", batch_size=args.batch)
               for i, prompt in enumerate(prompts))
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    report["ours_images"] = made
    report["ours_seconds"] = seconds
    report["ours_images_per_s"] = made / seconds
    print(f"ours: {made} images in {seconds:.1f} s = {made / seconds:.2f} images/s", flush=True)
    shutil.rmtree(out)

    if args.compile:
        torch._dynamo.reset()
        pipe = random_pipeline("sd", torch.float32, "cuda")  # uncompiled, same seeded weights
    pipe.to(torch.float32)
    pipe.unet.set_attn_processor(AttnProcessor())  # explicit attention everywhere
    layout = head_layout(pipe.unet)
    tokens = weakened_tokens(pipe.tokenizer, prompts[0])[None]
    pipe.scheduler.set_timesteps(50)
    times = []
    for i in range(args.reference_images + 1):
        mask = torch.zeros(1, 128, dtype=torch.bool)
        mask[0, heads("top", 21)] = True
        control = ExplicitWeakening(layout, mask, tokens, -2.0, num_evaluations=len(pipe.scheduler.timesteps), device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        with HeadTrace(pipe, [control]), torch.no_grad():
            pipe(prompts[0], latents=torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(10)).cuda(),
                 num_inference_steps=50, guidance_scale=7.5).images[0].save(Path(tempfile.gettempdir()) / "ref.png")
        torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    report["reference_way_s_per_image"] = float(np.median(times))
    report["reference_way_images_per_s"] = 1 / report["reference_way_s_per_image"]
    report["speedup"] = report["ours_images_per_s"] / report["reference_way_images_per_s"]
    print(json.dumps(report, indent=1), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
