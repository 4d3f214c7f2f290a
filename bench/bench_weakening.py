"""GPU benchmark of ordered-weakening generation on the SD v1.4 architecture (random weights).

Ours: fp16, the (order, k, seed) images of a prompt in even batched pipeline calls with per-sample head masks;
images with the same head set (k = 0 under both orders, k = 128 top and bottom) are generated once and written to
every path; VAE decode, uint8 conversion and PNG writing included. Measured eager, then with ``--compile``
(UNet regions compiled; ``--compile_modes`` adds larger compiled regions), in one process. The reference way: one fp32 image per pipeline call with
explicit (non-fused) attention in every layer and the weakening applied to explicit probabilities, as SNU-DRL/HRV's
monkeypatched forward does, cuDNN defaults. The experiment's unit is the reference's: 15 k x 2 orders x 3 seeds = 90
images per prompt.

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

from bench_hrv import random_pipeline, timed  # noqa: E402
from hrv_diffusion.core.attention import AttentionHooks  # noqa: E402
from hrv_diffusion.core.loop import decode_latents, generate  # noqa: E402
from hrv_diffusion.apps.weakening_experiments import build_prompts, experiment  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.apps.weakening import (HeadWeakening, HrvHeads, generate_weakened, image_paths,  # noqa: E402
                                          plan_jobs, plan_renders, weakened_tokens)
from hrv_diffusion.io import write_png  # noqa: E402

K_LIST = [0, 1, 11, 21, 31, 41, 51, 61, 71, 81, 91, 101, 111, 121, 128]
SEEDS = [10, 20, 30]


class ExplicitWeakening(HeadWeakening):
    """The reference's way: weaken on explicit probabilities (forces the non-fused path)."""

    def edits_probs(self, layer, call):
        return True


def phases(pipe, prompt, renders, heads_mask_fn, report, key):
    """Seconds per image of one batch: UNet loop only (latents), VAE decode + uint8, PNG encode (one thread)."""
    latents = torch.randn((len(renders), 4, 64, 64), generator=torch.Generator().manual_seed(0)).cuda().half()
    layout = head_layout(pipe.unet)
    tokens = weakened_tokens(pipe.tokenizer, prompt).expand(len(renders), -1)

    def unet_loop():
        control = HeadWeakening(layout, heads_mask_fn(), tokens, -2.0, num_evaluations=51, device="cuda")
        return generate(pipe, [prompt] * len(renders), latents, num_inference_steps=50, controllers=[control]).latents

    unet_loop()  # warm-up (and cuDNN autotuning when on)
    seconds, out = timed(unet_loop)
    decode = lambda: decode_latents(pipe, out)
    decode()
    decode_seconds, pixels = timed(decode)
    png_start = time.perf_counter()
    for i in range(4):
        write_png(pixels[i], Path(tempfile.gettempdir()) / "phase.png")
    report[key] = {"batch": len(renders), "unet_loop_s_per_image": seconds / len(renders),
                   "vae_decode_uint8_s_per_image": decode_seconds / len(renders),
                   "png_encode_one_thread_s_per_image": (time.perf_counter() - png_start) / 4}
    print(key, json.dumps(report[key]), flush=True)


def experiment_run(pipe, prompts, heads, jobs, batch, out, report, key, cuda_graphs=False):
    out = Path(out)
    generate_weakened(pipe, "warm-up " + prompts[0], heads, jobs, out / "warm", batch_size=batch,
                      cuda_graphs=cuda_graphs)  # compiles, tunes
    torch.cuda.reset_peak_memory_stats()
    seconds, made = timed(lambda: sum(generate_weakened(pipe, prompt, heads, jobs, out / f"p{i}", batch_size=batch,
                                                        cuda_graphs=cuda_graphs)
                                      for i, prompt in enumerate(prompts)))
    files = sum(len(list((out / f"p{i}").rglob("*.png"))) for i in range(len(prompts)))
    renders = len(plan_renders(jobs, heads)) * len(prompts)
    report[key] = {"jobs": made, "images_written": files, "images_generated": renders, "seconds": seconds,
                   "images_written_per_s": files / seconds, "images_generated_per_s": renders / seconds,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
    print(key, json.dumps(report[key]), flush=True)
    shutil.rmtree(out)


def save(report, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(report, indent=1) + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=3)
    p.add_argument("--batch", type=int, default=84, help="at most this many images per call (84: a prompt per call)")
    p.add_argument("--reference_images", type=int, default=3)
    p.add_argument("--only_compiled", action="store_true", help="skip the phase timings and the eager run")
    p.add_argument("--compile_modes", default="regions",
                   help="comma-separated: regions (compile_unet_regions), whole (compile_unet_blocks(whole=True)), "
                        "blocks (compile_unet_blocks), whole_graphs (whole, and each batch's guided UNet call replayed "
                        "from a CUDA graph: generate_weakened(cuda_graphs=True)); each after the first on a fresh pipeline")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from diffusers.models.attention_processor import AttnProcessor

    from hrv_diffusion.core.speed import compile_unet_blocks, compile_unet_regions

    prompts = build_prompts(experiment(5))[: args.prompts]
    heads = HrvHeads(np.random.default_rng(0).random(128))
    jobs = plan_jobs(K_LIST, SEEDS)
    per_prompt = sum(len(image_paths(Path("."), j)) for j in jobs)
    report = {"card": torch.cuda.get_device_name(), "torch": torch.__version__, "model": "SD v1.4 architecture, random weights",
              "k_list": K_LIST, "seeds": SEEDS, "images_per_prompt": per_prompt,
              "images_generated_per_prompt": len(plan_renders(jobs, heads)), "prompts": len(prompts), "batch": args.batch}
    print(json.dumps(report), flush=True)
    pipe = random_pipeline("sd", torch.float32, "cuda", init_device="cuda")  # same seeded weights as the fp16 one
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
        with AttentionHooks(pipe, [control]), torch.no_grad():  # pipe(...): the hooks count its UNet calls
            pipe(prompts[0], latents=torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(10)).cuda(),
                 num_inference_steps=50, guidance_scale=7.5).images[0].save(Path(tempfile.gettempdir()) / "ref.png")
        torch.cuda.synchronize()
        if i:  # the first is a warm-up
            times.append(time.perf_counter() - start)
    ref = float(np.median(times))
    report["reference_way_s_per_image"] = ref
    report["reference_way_images_per_s"] = 1 / ref
    print(json.dumps(report), flush=True)
    save(report, args.out)
    del pipe
    torch.cuda.empty_cache()

    pipe = random_pipeline("sd", torch.float16, "cuda", init_device="cuda")
    renders = plan_renders(jobs, heads)[:42]

    def masks():
        m = torch.zeros(len(renders), 128, dtype=torch.bool)
        for b, r in enumerate(renders):
            m[b, list(r.heads)] = True
        return m

    tmp = Path(tempfile.mkdtemp())
    if not args.only_compiled:
        phases(pipe, prompts[0], renders, masks, report, "phases_eager")
        experiment_run(pipe, prompts, heads, jobs, args.batch, tmp / "eager", report, "eager")
        save(report, args.out)
    keys = [] if args.only_compiled else ["eager"]
    for n, mode in enumerate(args.compile_modes.split(",")):
        key = "compiled" if mode == "regions" else f"compiled_{mode}"
        if n:
            del pipe
            torch.cuda.empty_cache()
            pipe = random_pipeline("sd", torch.float16, "cuda", init_device="cuda")
        compile_start = time.perf_counter()
        if mode == "regions":
            compile_unet_regions(pipe.unet)
        else:
            compile_unet_blocks(pipe.unet, whole=mode.startswith("whole"))
        experiment_run(pipe, prompts, heads, jobs, args.batch, tmp / key, report, key,
                       cuda_graphs=mode.endswith("_graphs"))
        report[key]["warm_up_and_compile_s"] = time.perf_counter() - compile_start - report[key]["seconds"]
        report[key]["speedup"] = report[key]["images_written_per_s"] * ref
        keys.append(key)
        save(report, args.out)

    for key in keys:
        report[key]["speedup"] = report[key]["images_written_per_s"] * ref
    print(json.dumps(report, indent=1), flush=True)
    save(report, args.out)


if __name__ == "__main__":
    main()
