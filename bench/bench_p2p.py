"""Speed of P2P-HRV editing on the SD v1.4 architecture (random weights), against the reference's way, one process.

*Reference way*: fp32, one (source, edited) pair per call as the reference script runs it, explicit attention in
every layer (diffusers' ``AttnProcessor`` everywhere and our P2P-HRV controller forced onto explicit probabilities
in every layer and evaluation), PNG writing of both images; timed per pair after a warm-up.

*Ours* (``run_edits``, the code path of applications/p2p_hrv.py, into a fresh folder each time, so nothing is
skipped): fp16, many seeds per call, a seed's source row generated once and shared by P2P and every P2P-HRV concept,
fused SDPA on every layer and step that is not edited, VAE decode, uint8 conversion, PNG writing and manifests
included. Configurations:
  readme   per seed [source, P2P, P2P-HRV Color]: 2 edited images per 3 rows (the README example, --save_original_p2p)
  multi    per seed [source, P2P, P2P-HRV x 4 concepts]: 5 edited images per 6 rows
each eager, with --compile (UNet regions compiled, the edited layers eager) and with the UNet's whole forward compiled
(the edited layers eager through graph breaks), and the faithful fp32 mode (readme, fp32, batched, half the seeds),
also with TF32 matrix products (an option: the numbers change). Rate = edited images written per second; speed-up = our rate x the reference's
seconds per pair (one edited image per reference call). Also: pixel agreement of fp16 and of the batched fp32 mode
with the reference way on the same seeds.

    python bench/bench_p2p.py --out bench/results/p2p_sd_v1_4.json          # CUDA, ~5 minutes on an H200
    python bench/bench_p2p.py --smoke --out /tmp/p2p_smoke.json             # the same code path on a CPU, tiny-sd
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

from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits  # noqa: E402
from hrv_diffusion.apps.p2p_runs import EditLayout, Pair, RunSettings, run_edits  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.speed import tf32_matmuls  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.vectors import HRV  # noqa: E402
from hrv_diffusion.io import write_png  # noqa: E402

SOURCE, TARGET, TOKEN = "a blue car", "a red car", "red"
CONCEPTS = ["Color", "Material", "Texture", "Shape"]


def specs(concepts) -> tuple[EditSpec, ...]:
    p2p = EditSpec("original_p2p", cross_replace_steps=0.8, self_replace_steps=0.4)
    return (p2p, *[EditSpec(f"{c}_0.9", cross_replace_steps=0.8, self_replace_steps=0.9, restoration="hrv",
                            concept=c) for c in concepts])


def synthetic_hrv(layout) -> HRV:
    """Random HRVs of the right shape (34 concepts, rows summing to H): speed does not depend on the values."""
    names = read_concept_set(resolve_description("340_final_text_descriptions")).names
    values = np.random.default_rng(0).gamma(0.5, size=(len(names), layout.num_heads)).astype(np.float32)
    return HRV(values / values.sum(1, keepdims=True) * layout.num_heads, names, tuple(layout.labels), "synthetic")


class Clock:
    def __init__(self, device):
        self.cuda = str(device).startswith("cuda")

    def __call__(self, fn):
        if self.cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn()
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start, out


def pipeline(args, dtype):
    if args.smoke:
        from hrv_diffusion.core.models import load_pipeline

        return load_pipeline("tiny-sd", dtype=dtype)
    from bench_hrv import random_pipeline

    return random_pipeline("sd", dtype, "cuda")


def ours(pipe, hrv, dtype_name, seeds, concepts, batch, steps, clock, folder):
    """Seconds and edited images written for ``seeds`` through run_edits into a fresh folder."""
    shutil.rmtree(folder, ignore_errors=True)
    settings = RunSettings("random", "random", dtype_name, num_inference_steps=steps)
    layout = EditLayout(folder, 1, settings)
    pair = Pair(SOURCE, TARGET, TOKEN, specs(concepts))
    seconds, report = clock(lambda: run_edits(pipe, [pair], seeds, layout, hrv=hrv, batch_size=batch))
    return seconds, report.details["edits"], layout.exp_dir


def read_images(exp_dir, method, seeds):
    from PIL import Image

    return np.stack([np.asarray(Image.open(exp_dir / method / f"{SOURCE}_to_{TARGET}" / f"{s}.png")) for s in seeds])


def agreement(a: np.ndarray, b: np.ndarray) -> dict:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return {"max_abs_uint8": int(diff.max()), "mean_abs_uint8": float(diff.mean()),
            "psnr_db": float("inf") if mse == 0 else 10 * np.log10(255 ** 2 / mse)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny-sd on the CPU, few steps: checks the code path")
    p.add_argument("--steps", type=int, default=None, help="inference steps (default: 50; smoke: 3)")
    p.add_argument("--reference_pairs", type=int, default=None, help="timed reference-way pairs (default: 3; smoke 1)")
    p.add_argument("--seeds", type=int, default=None, help="timed seeds per configuration (default: 32; smoke: 4)")
    p.add_argument("--batch", type=int, default=None, help="rows per call (default: 48; smoke: 6)")
    p.add_argument("--skip_compile", action="store_true", help="no --compile runs")
    p.add_argument("--compile_modes", default="regions,whole",
                   help="comma-separated: regions (compile_unet_regions, what hrv-p2p --compile does), whole "
                        "(compile_unet_blocks(whole=True): the UNet's forward, the edited layers eager)")
    p.add_argument("--skip_fp32", action="store_true", help="no faithful fp32 run")
    p.add_argument("--skip_tf32", action="store_true", help="no fp32 run with TF32 matrix products")
    p.add_argument("--out", required=True, help="JSON file of the raw results")
    args = p.parse_args()
    smoke = args.smoke
    steps = args.steps or (3 if smoke else 50)
    n_ref = args.reference_pairs or (1 if smoke else 3)
    n_seeds = args.seeds or (4 if smoke else 32)
    batch = args.batch or (6 if smoke else 48)
    device = "cpu" if smoke else "cuda"
    clock = Clock(device)
    work = Path(tempfile.mkdtemp(prefix="bench_p2p_"))
    report = {"model": "tiny-sd (smoke)" if smoke else "SD v1.4 architecture, random weights", "steps": steps,
              "evaluations": steps + 1, "batch_rows": batch, "torch": torch.__version__,
              "device": torch.cuda.get_device_name() if not smoke else "cpu", "pairs": f"{SOURCE} -> {TARGET}"}
    try:
        import diffusers

        report["diffusers"] = diffusers.__version__
    except ImportError:
        pass

    def save():
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")

    # ---------------------------------------------------------------- the reference way
    from diffusers.models.attention_processor import AttnProcessor

    pipe = pipeline(args, torch.float32)
    pipe.unet.set_attn_processor(AttnProcessor())
    hrv = synthetic_hrv(head_layout(pipe.unet))
    hrv_spec = specs(["Color"])[1]
    ref_seeds = [1000 + i for i in range(n_ref)]
    times, ref_images = [], []
    for i, seed in enumerate([999] + ref_seeds):  # the first is a warm-up
        def one_pair():
            out = generate_edits(pipe, [Group(SOURCE, seed, (Edit(TARGET, hrv_spec, TOKEN),))], hrv=hrv,
                                 num_inference_steps=steps, explicit=True)
            for row, name in ((0, "source"), (1, "edited")):
                write_png(out.images[row], work / "reference" / name / f"{seed}.png")
            return out.images[1]
        seconds, image = clock(one_pair)
        if i:
            times.append(seconds)
            ref_images.append(image)
    if not smoke:
        report["reference_peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
    ref = float(np.median(times))
    report["reference_way"] = {"s_per_pair": ref, "pairs_timed": len(times), "all_s": times,
                               "edited_images_per_s": 1 / ref}
    print("reference way", json.dumps(report["reference_way"]), flush=True)
    save()
    ref_images = np.stack(ref_images)

    # ---------------------------------------------------------------- faithful fp32 mode (batched, fused)
    if not args.skip_fp32:
        pipe = pipeline(args, torch.float32)  # default processors: fused SDPA where nothing is edited
        ours(pipe, hrv, "float32", [1], ["Color"], batch, steps, clock, work / "warm32")
        fp32_seeds = ref_seeds + list(range(max(0, n_seeds // 2 - n_ref)))  # half the fp16 runs' seeds
        seconds, made, exp = ours(pipe, hrv, "float32", fp32_seeds, ["Color"], batch, steps, clock, work / "fp32")
        fp32 = read_images(exp, "Color_0.9", ref_seeds)
        report["fp32_readme"] = {"seconds": seconds, "edited_images": made, "edited_images_per_s": made / seconds,
                                 "speedup": made / seconds * ref,
                                 "hrv_images_vs_reference_way": agreement(fp32, ref_images)}
        print("fp32 readme", json.dumps(report["fp32_readme"]), flush=True)
        save()
        if not args.skip_tf32:  # the same with TF32 matrix products (an option: the numbers change)
            with tf32_matmuls():
                ours(pipe, hrv, "float32", [1], ["Color"], batch, steps, clock, work / "warm32")
                seconds, made, exp = ours(pipe, hrv, "float32", fp32_seeds, ["Color"], batch, steps, clock,
                                          work / "tf32")
            tf32 = read_images(exp, "Color_0.9", ref_seeds)
            report["fp32_readme_tf32"] = {"seconds": seconds, "edited_images": made,
                                          "edited_images_per_s": made / seconds, "speedup": made / seconds * ref,
                                          "hrv_images_vs_reference_way": agreement(tf32, ref_images),
                                          "hrv_images_vs_fp32": agreement(tf32, fp32)}
            print("fp32 readme tf32", json.dumps(report["fp32_readme_tf32"]), flush=True)
            save()
    del pipe
    if not smoke:
        torch.cuda.empty_cache()

    # ---------------------------------------------------------------- ours, fp16
    dtype = torch.float32 if smoke else torch.float16
    name = "float32" if smoke else "float16"
    pipe = pipeline(args, dtype)
    seeds = ref_seeds + list(range(n_seeds - n_ref))
    multi_seeds = list(range(2000, 2000 + max(1, n_seeds // 2)))
    modes = [] if args.skip_compile else args.compile_modes.split(",")
    runs = [("eager", None)] + [("compiled" if mode == "regions" else f"compiled_{mode}", mode) for mode in modes]
    for n, (label, compiled) in enumerate(runs):
        if compiled:
            from hrv_diffusion.apps.p2p import default_self_max_queries
            from hrv_diffusion.core.speed import compile_unet_blocks, compile_unet_regions

            if n > 1:  # a fresh pipeline (the same seeded weights) for each compile mode after the first
                del pipe
                if not smoke:
                    torch.cuda.empty_cache()
                pipe = pipeline(args, dtype)
            limit = default_self_max_queries(pipe)
            hooked = [layer.module_name for layer in head_layout(pipe.unet).self_layers if layer.num_queries <= limit]
            backend = "eager" if smoke else "inductor"
            if compiled == "regions":  # what hrv-p2p --compile does
                compile_unet_regions(pipe.unet, skip=hooked, backend=backend)
            else:  # the whole forward, cross-attention and the edited self-attention layers eager (graph breaks)
                compile_unet_blocks(pipe.unet, whole=True, skip=hooked, backend=backend)
        start = time.perf_counter()
        ours(pipe, hrv, name, list(range(5000, 5000 + batch // 3)), ["Color"], batch, steps, clock, work / "warm")
        ours(pipe, hrv, name, list(range(6000, 6000 + batch // 6)), CONCEPTS, batch, steps, clock, work / "warm")
        if not smoke:
            torch.cuda.reset_peak_memory_stats()
        warm = time.perf_counter() - start
        seconds, made, exp = ours(pipe, hrv, name, seeds, ["Color"], batch, steps, clock, work / f"readme_{label}")
        result = {"warm_up_s": warm, "seconds": seconds, "seeds": len(seeds), "edited_images": made,
                  "edited_images_per_s": made / seconds, "speedup": made / seconds * ref}
        result["hrv_images_vs_reference_way"] = agreement(read_images(exp, "Color_0.9", ref_seeds), ref_images)
        report[f"fp16_readme_{label}"] = result
        print(f"fp16 readme {label}", json.dumps(result), flush=True)
        save()
        seconds, made, _ = ours(pipe, hrv, name, multi_seeds, CONCEPTS, batch, steps, clock, work / f"multi_{label}")
        result = {"seconds": seconds, "seeds": len(multi_seeds), "concepts": CONCEPTS, "edited_images": made,
                  "edited_images_per_s": made / seconds, "speedup": made / seconds * ref}
        if not smoke:
            result["peak_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        report[f"fp16_multi_{label}"] = result
        print(f"fp16 multi {label}", json.dumps(result), flush=True)
        save()
    shutil.rmtree(work, ignore_errors=True)

    rows = [("reference way (fp32, 1 pair/call, explicit attention)", report["reference_way"]["edited_images_per_s"],
             1.0)]
    for key, label in (("fp32_readme", "ours fp32 batched, P2P + P2P-HRV"),
                       ("fp32_readme_tf32", "ours fp32 batched, TF32 matrix products, P2P + P2P-HRV"),
                       ("fp16_readme_eager", "ours fp16, P2P + P2P-HRV"),
                       ("fp16_multi_eager", "ours fp16, P2P + 4 P2P-HRV concepts"),
                       ("fp16_readme_compiled", "ours fp16 --compile, P2P + P2P-HRV"),
                       ("fp16_multi_compiled", "ours fp16 --compile, P2P + 4 P2P-HRV concepts"),
                       ("fp16_readme_compiled_whole", "ours fp16, whole forward compiled, P2P + P2P-HRV"),
                       ("fp16_multi_compiled_whole", "ours fp16, whole forward compiled, P2P + 4 concepts")):
        if key in report:
            rows.append((label, report[key]["edited_images_per_s"], report[key]["speedup"]))
    print(f"\n{'run':<58} {'edited images/s':>16} {'speed-up':>9}")
    for label, rate, speedup in rows:
        print(f"{label:<58} {rate:>16.3f} {speedup:>8.1f}x")
    save()


if __name__ == "__main__":
    main()
