"""GPU benchmark of A&E-HRV and standard A&E on the real SD v1.4 / SDXL architectures with random weights.

In one process, same latents (CUDA generator), 50 PNDM steps (51 evaluations), guidance 7.5, the default thresholds
(0: 0.05, 10: 0.5, 20: 0.8), max_iter_to_alter 25, 20 refinement iterations at most, VAE decode included:

- ``ours_hrv`` / ``ours_standard``: ``generate_attend_excite`` with its defaults (on CUDA: the passes replayed from
  CUDA graphs) (A&E-HRV at R=8 with a random HRV; standard A&E at R=16), batch 1 and, for throughput, a batch of 4
  seeds; ``ours_hrv_eager`` / ``ours_standard_eager``: the same without CUDA graphs (the code before issue 21);
  ``ours_hrv_tf32``: A&E-HRV with TF32 matrix products in the gradient passes (an option, off by default);
  ``ours_hrv_channels_last``: A&E-HRV with the UNet's weights in channels-last layout;
- ``diffusers_standard``: diffusers' ``StableDiffusionAttendAndExcitePipeline`` (standard A&E; SD only);
- ``reference_way_hrv``: the reference's way of computing A&E-HRV: explicit attention in every layer (self and
  cross), the maps of every layer with at most 32x32 queries kept with their graphs, the HRV maps resampled per head,
  a gradient pass at every evaluation, two discarded no-grad passes per refinement iteration, trainable weights,
  batch 1 (SD only).

With random weights the refinement runs to its limit (20 iterations at evaluations 0, 10 and 20) in every variant:
the counts of UNet calls with and without autograd are reported per image, so the work can be compared.
Reports seconds per image and peak GiB (``torch.cuda.max_memory_allocated``) per variant, and for each of ours the
largest difference in grey levels of its first image from the eager variant's (same seed); writes JSON with --out.

    python bench/bench_attend_excite.py --model sd --out bench/results/attend_excite_sd_v1_4.json
    python bench/bench_attend_excite.py --model sdxl --out bench/results/attend_excite_sdxl.json
    python bench/bench_attend_excite.py --smoke        # the same code on CPU with a tiny model, in seconds
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from hrv_diffusion.apps.attend_excite import (AttendExciteSettings, Targets, attend_excite_loss,  # noqa: E402
                                              generate_attend_excite, max_attention, step_sizes)
from hrv_diffusion.core.attention import Controller  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.loop import StepHook, generate, latent_shape, num_evaluations, seed_latents  # noqa: E402
from hrv_diffusion.core.maps import resample_maps  # noqa: E402

PROMPT = "a cat and a frog"  # targets 2 and 5, end token at 6


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


class CallCounter:
    """Counts UNet calls with and without autograd (a forward pre-hook)."""

    def __init__(self, unet):
        self.grad = self.no_grad = 0
        self.handle = unet.register_forward_pre_hook(self)

    def __call__(self, module, args):
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1

    def reset(self):
        self.grad = self.no_grad = 0


# ------------------------------------------------------------------------------------------------ reference way

class ReferenceStore(Controller):
    """The reference's controllers: explicit probabilities in every layer (an editor forces P @ V), every map of
    at most 32x32 queries kept with its graph, HRV maps accumulated per head (each head resampled on its own)."""

    self_attention = True

    def __init__(self, layout, hrv_rows, resolution):
        self.weights = {name: torch.as_tensor(w, dtype=torch.float32) / layout.num_heads
                        for name, w in layout.split(np.asarray(hrv_rows)).items()}  # (G, h)
        self.size = (resolution, resolution)
        self.recording = False
        self.reset()

    def reset(self):
        self.kept, self.acc = [], None

    def edits_probs(self, layer, call):
        return True

    def reads_probs(self, layer, call):
        return self.recording

    def read_probs(self, layer, call, probs):  # probs (1, h, N, T)
        if probs.shape[2] <= 32 * 32:
            self.kept.append(probs)
        if layer.is_cross:
            grids = probs[0].permute(0, 2, 1).reshape(layer.heads, probs.shape[-1], *layer.resolution)
            per_head = resample_maps(grids, self.size)  # (h, T, R, R), each head on its own
            w = self.weights[layer.module_name].to(probs.device)
            maps = torch.einsum("htxy,gh->gxyt", per_head, w)  # (G, R, R, T)
            self.acc = maps if self.acc is None else self.acc + maps


class ReferenceWay(StepHook):
    """A&E-HRV computed the reference's way (batch 1): a gradient pass at every evaluation; refinement with two
    extra no-grad passes per iteration; ``autograd.grad(..., retain_graph=True)``."""

    grad = True

    def __init__(self, store, targets, settings, evaluations, uncond):
        self.store, self.targets, self.settings, self.uncond = store, targets, settings, uncond
        self.alphas = step_sizes(settings.scale_factor, evaluations, settings.scale_range)
        self.iterations = 0

    def _loss(self, z, t, step, loop):
        self.store.reset()
        self.store.recording = True
        loop.noise(z, t, step, rows="cond")
        self.store.recording = False
        return attend_excite_loss(max_attention(self.store.acc[None], self.targets, self.settings))[0]

    def _step(self, z, loss, alpha):
        return z - alpha * torch.autograd.grad(loss, [z], retain_graph=True)[0]

    def before(self, step, t, latents, loop):
        s, alpha = self.settings, float(self.alphas[step])
        z = latents.detach().requires_grad_(True)
        loss = self._loss(z, t, step, loop)
        threshold = s.thresholds.get(step)
        if threshold is not None and loss > 1.0 - threshold:
            count = 0
            while loss > max(0.0, 1.0 - threshold):
                count += 1
                z = z.detach().requires_grad_(True)
                loss = self._loss(z, t, step, loop)
                if loss != 0:
                    z = self._step(z, loss, alpha)
                with torch.no_grad():  # the reference's extra passes, results discarded
                    loop.pipe.unet(z, t, encoder_hidden_states=self.uncond)
                    loop.noise(z, t, step, rows="cond")
                if count >= s.max_refinement_steps:
                    break
            self.iterations += count
            z = z.detach().requires_grad_(True)
            loss = self._loss(z, t, step, loop)
        if step < s.max_iter_to_alter and loss != 0:
            z = self._step(z, loss, alpha)
        self.store.reset()
        return z.detach()


def reference_way(pipe, latents, hrv_rows, settings, decode="round"):
    from hrv_diffusion.core.loop import encode_prompts

    layout = head_layout(pipe.unet)
    store = ReferenceStore(layout, hrv_rows, settings.attention_res)
    conditioning = encode_prompts(pipe, [PROMPT], None, True)
    hook = ReferenceWay(store, Targets.build([[2, 5]], [6], [0, 1]), settings,
                        num_evaluations(pipe, settings.num_inference_steps), conditioning.uncond)
    out = generate(pipe, [PROMPT], latents, num_inference_steps=settings.num_inference_steps,
                   guidance_scale=settings.guidance_scale, controllers=[store], step_hooks=[hook],
                   conditioning=conditioning, decode=decode)
    return out, hook.iterations


# ------------------------------------------------------------------------------------------------ variants

def build(args):
    if args.smoke:
        from hrv_diffusion.core.models import load_pipeline

        pipe = load_pipeline("tiny-sdxl" if args.model == "sdxl" else "tiny-sd")
        from hrv_diffusion.core.models import paper_scheduler

        pipe.scheduler = paper_scheduler(pipe.scheduler.config)
        return pipe, "cpu"
    from bench_hrv import random_pipeline

    dtype = torch.float16 if args.model == "sdxl" else torch.float32
    return random_pipeline(args.model, dtype, "cuda"), "cuda"


def run_variant(report, name, fn, images, counter, warmup=None):
    """Seconds per image, peak GiB and UNet calls per image of ``fn(latents_index)`` over ``images`` runs; a
    failure is recorded (and printed) instead of ending the benchmark."""
    try:
        _run_variant(report, name, fn, images, counter, warmup)
    except Exception as error:  # noqa: BLE001 - a benchmark keeps what it can measure
        import traceback

        traceback.print_exc()
        report["variants"][name] = {"error": repr(error)[:2000]}


FIRST_IMAGES = {}  # variant -> its first run's first image (uint8), for the grey-level comparisons


def _run_variant(report, name, fn, images, counter, warmup=None):
    if warmup is not None:
        warmup()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    counter.reset()
    seconds, extra = 0.0, {}
    for i in range(images):
        s, out = timed(lambda: fn(i))
        seconds += s
        extra = dict(out or {})
        image = extra.pop("image", None)
        if i == 0 and image is not None:
            FIRST_IMAGES[name] = image
    row = {"s_per_image": seconds / images, "images": images,
           "unet_calls_with_grad_per_image": counter.grad / images,
           "unet_calls_no_grad_per_image": counter.no_grad / images, **extra}
    if torch.cuda.is_available():
        row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report["variants"][name] = row
    if report.get("out"):  # after every variant: a later failure keeps what was measured
        Path(report["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(report["out"]).write_text(json.dumps(report, indent=1) + "\n")
    print(name, json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)


def grey_level_differences(report) -> None:
    """Each of ours: the largest |difference| in grey levels of its first image from its eager variant's."""
    for name, image in FIRST_IMAGES.items():
        base = "ours_standard_eager" if "standard" in name else "ours_hrv_eager"
        if name != base and base in FIRST_IMAGES and name in report["variants"]:
            diff = np.abs(image.astype(np.int16) - FIRST_IMAGES[base].astype(np.int16))
            report["variants"][name]["grey_levels_vs_eager"] = int(diff.max())
            report["variants"][name]["pixels_over_1_grey_level_vs_eager"] = int((diff > 1).sum())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["sd", "sdxl"], default="sd")
    p.add_argument("--images", type=int, default=2, help="timed images per variant (after a short warm-up)")
    p.add_argument("--reference_images", type=int, default=1, help="timed images of the reference way")
    p.add_argument("--batch", type=int, default=None, help="seeds of the batched variant, 0: skip (default: 4 for "
                   "SD, 0 for SDXL)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--skip", nargs="*", default=[], help="variants to skip")
    p.add_argument("--compile", action="store_true", help="at the end, also time ours with the UNet regions "
                   "compiled (core/speed.compile_unet_regions; the compile takes minutes)")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny model, 3 steps: checks the code paths")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.images, args.reference_images, args.batch = 3, 1, 1, 2
    if args.batch is None:
        args.batch = 4 if args.model == "sd" else 0
    pipe, device = build(args)
    layout = head_layout(pipe.unet)
    shape = latent_shape(pipe)
    generator = "cuda" if device == "cuda" else "cpu"
    latents = lambda seeds: seed_latents(seeds, shape, device=generator)  # noqa: E731
    hrv = np.random.default_rng(0).dirichlet(np.ones(layout.num_heads), size=2) * layout.num_heads  # (2, H)
    thresholds = {0: 0.05, 1: 0.5} if args.smoke else {0: 0.05, 10: 0.5, 20: 0.8}
    alter = 2 if args.smoke else 25
    latent = shape[-1]
    # R: latent/8 for A&E-HRV, latent/4 for standard A&E (the tiny models' CA layers are at 16 and 8: 4 and 8)
    res_hrv, res_std = (4, 8) if args.smoke else (latent // 8, latent // 4)
    common = dict(num_inference_steps=args.steps, thresholds=thresholds, max_iter_to_alter=alter)
    hrv_settings = AttendExciteSettings(mode="hrv", attention_res=res_hrv, smooth_attentions=True, **common)
    std_settings = AttendExciteSettings(mode="standard", attention_res=res_std, smooth_attentions=True,
                                        kernel="diffusers", token_slice="1:-1", **common)
    warm = lambda s: AttendExciteSettings(**{**s.__dict__, "num_inference_steps": 2, "thresholds": {0: 0.05},  # noqa: E731
                                             "max_refinement_steps": 1})
    targets = lambda n: Targets.build([[2, 5]] * n, [6] * n, [0, 1])  # noqa: E731
    import diffusers

    report = {"model": args.model, "smoke": args.smoke, "device": torch.cuda.get_device_name() if device == "cuda"
              else "cpu", "torch": torch.__version__, "diffusers": diffusers.__version__, "steps": args.steps,
              "evaluations": num_evaluations(pipe, args.steps), "dtype": str(pipe.unet.dtype), "prompt": PROMPT,
              "latent": list(shape), "thresholds": thresholds, "max_iter_to_alter": alter, "out": args.out,
              "variants": {}}
    counter = CallCounter(pipe.unet)

    def ours(settings, n=1, **options):
        def fn(i):
            out = generate_attend_excite(pipe, [PROMPT] * n, latents(range(10 * i, 10 * i + n)), targets(n), settings,
                                         hrv if settings.mode == "hrv" else None, **options)
            return {"refinement_iterations_per_image": sum(r.get("refinement_iterations", 0)
                                                           for rec in out.records for r in rec) / n,
                    "gradient_passes": out.gradient_passes, "image": out.images[0]}
        return fn

    def warm_ours(settings, **options):
        return lambda: generate_attend_excite(pipe, [PROMPT], latents([99]), targets(1), warm(settings),
                                              hrv if settings.mode == "hrv" else None, **options)

    eager = dict(cuda_graphs=False)
    variants = [("ours_hrv_eager", ours(hrv_settings, **eager), args.images, warm_ours(hrv_settings, **eager)),
                ("ours_standard_eager", ours(std_settings, **eager), args.images, warm_ours(std_settings, **eager)),
                ("ours_hrv", ours(hrv_settings), args.images, warm_ours(hrv_settings)),
                ("ours_standard", ours(std_settings), args.images, warm_ours(std_settings)),
                ("ours_hrv_tf32", ours(hrv_settings, tf32=True), args.images, warm_ours(hrv_settings, tf32=True))]
    if args.batch:
        variants.append((f"ours_hrv_batch{args.batch}", ours(hrv_settings, args.batch), 1,
                         warm_ours(hrv_settings)))
    for name, fn, images, warmup in variants:
        if name not in args.skip:
            run_variant(report, name, fn, images, counter, warmup)
            row = report["variants"][name]
            if name.startswith("ours_hrv_batch") and "error" not in row:  # per image
                row["s_per_image"] /= args.batch
                for key in ("unet_calls_with_grad_per_image", "unet_calls_no_grad_per_image"):
                    row[key] /= args.batch
    if "ours_hrv_channels_last" not in args.skip:
        pipe.unet.to(memory_format=torch.channels_last)
        run_variant(report, "ours_hrv_channels_last", ours(hrv_settings), args.images, counter,
                    warm_ours(hrv_settings))
        pipe.unet.to(memory_format=torch.contiguous_format)
    if args.model == "sd" and "diffusers_standard" not in args.skip:
        from diffusers import StableDiffusionAttendAndExcitePipeline

        components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
        oracle = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
        oracle.set_progress_bar_config(disable=True)

        def theirs(steps, th):
            def fn(i):
                oracle([PROMPT], token_indices=[2, 5], num_inference_steps=steps, guidance_scale=7.5,
                       latents=latents([10 * i]).to(device, pipe.unet.dtype), max_iter_to_alter=alter,
                       thresholds=th, attn_res=(res_std, res_std))
            return fn

        run_variant(report, "diffusers_standard", theirs(args.steps, thresholds), args.images, counter,
                    lambda: theirs(2, {0: 0.05})(99))
    if args.model == "sd" and "reference_way_hrv" not in args.skip:
        run_variant(report, "reference_way_hrv",
                    lambda i: {"refinement_iterations_per_image": reference_way(pipe, latents([10 * i]), hrv,
                                                                                hrv_settings)[1]},
                    args.reference_images, counter,
                    lambda: reference_way(pipe, latents([99]), hrv, warm(hrv_settings)))
    if args.compile:
        from hrv_diffusion.core.speed import compile_unet_regions

        compile_unet_regions(pipe.unet)
        runs = [("ours_hrv_compiled", hrv_settings, 1), ("ours_standard_compiled", std_settings, 1)]
        if args.batch:
            runs.append((f"ours_hrv_batch{args.batch}_compiled", hrv_settings, args.batch))
        for name, settings, n in runs:
            if name in args.skip:
                continue
            seconds, _ = timed(warm_ours(settings))
            seconds += timed(lambda: ours(settings, n)(0))[0]  # a full image also compiles the refinement's shapes
            report[f"{name}_warmup_s"] = seconds
            run_variant(report, name, ours(settings, n), 1 if n > 1 else args.images, counter)
            row = report["variants"][name]
            if n > 1 and "error" not in row:  # per image
                row["s_per_image"] /= n
                for key in ("unet_calls_with_grad_per_image", "unet_calls_no_grad_per_image"):
                    row[key] /= n
    if args.model == "sd" and not args.smoke and not args.compile and "fp16" not in args.skip:  # the same in fp16
        pipe.to(torch.float16)
        for name, fn, warmup in (("ours_hrv_fp16", ours(hrv_settings), warm_ours(hrv_settings)),
                                 ("ours_standard_fp16", ours(std_settings), warm_ours(std_settings))):
            run_variant(report, name, fn, args.images, counter, warmup)
    v = report["variants"]
    grey_level_differences(report)
    seconds = {name: row["s_per_image"] for name, row in v.items() if "s_per_image" in row}
    if "reference_way_hrv" in seconds:
        for name in ("ours_hrv", "ours_hrv_eager"):
            if name in seconds:
                report[f"speedup_{name}_vs_reference_way"] = seconds["reference_way_hrv"] / seconds[name]
    if "diffusers_standard" in seconds:
        for name in ("ours_hrv", "ours_standard", "ours_hrv_eager", "ours_standard_eager"):
            if name in seconds:
                report[f"{name}_time_over_diffusers"] = seconds[name] / seconds["diffusers_standard"]
    print(f"\n{'variant':24s} {'s/image':>8s} {'peak GiB':>9s} {'grad calls':>10s} {'no-grad':>8s} {'refine it':>9s} "
          "grey levels vs eager")
    for name, row in v.items():
        if "error" in row:
            print(f"{name:24s} failed: {row['error'][:80]}")
            continue
        print(f"{name:24s} {row['s_per_image']:8.2f} {row.get('peak_gib', float('nan')):9.2f} "
              f"{row['unet_calls_with_grad_per_image']:10.1f} {row['unet_calls_no_grad_per_image']:8.1f} "
              f"{row.get('refinement_iterations_per_image', float('nan')):9.1f} "
              f"{row.get('grey_levels_vs_eager', '')}")
    for key in [k for k in report if k.startswith(("speedup", "ours_"))]:
        print(f"{key}: {report[key]:.2f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
