"""Where the time of ``make demo``'s main job goes, on a CPU, and what the worker/thread settings change.

Two parts, both on the built-in toy model:

1. ``profile``: one batch of head relevance votes (``--batch_size`` prompts, 51 UNet evaluations of a CFG batch of
   2 x batch_size) under cProfile in this process, with 1 and with 2 torch threads: the seconds per prompt and the
   functions with the most own time (torch kernels, Python overhead of diffusers' blocks, the vote hooks).
2. ``configs``: the whole main job, ``python -m hrv_diffusion.cli.demo --output_dir TMP``, as a fresh process,
   in each configuration (``before`` = one process with 2 torch threads, the demo until issue 14; ``1 thread`` =
   one process with 1 thread; ``after`` = the demo's default now: one single-thread worker per usable core),
   repeated and interleaved, wall seconds each; the HRVs each writes are compared with the first configuration's.

Other programs share the CPU, so every timing records the 1-minute load average before and after it.

    python bench/demo_profile.py --out bench/results/demo_profile_cpu.json     # ~10 minutes on 2 cores
    python bench/demo_profile.py --smoke --out /tmp/demo_profile_smoke.json    # 8 prompts, seconds
"""
from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    "before (1 process, 2 threads)": ["--workers", "1", "--threads", "2"],
    "1 process, 1 thread": ["--workers", "1", "--threads", "1"],
    "after (default: 1-thread workers)": [],
}


def machine() -> dict:
    import torch

    from hrv_diffusion.core.device import usable_cpus

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"cpu": model, "cpu_count": os.cpu_count(), "usable_cpus": usable_cpus(), "host": platform.node(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_default_threads": torch.get_num_threads()}


def load() -> float:
    return round(os.getloadavg()[0], 2)


def profile_batch(work: Path, batch_size: int, threads: int, top: int) -> dict:
    """cProfile of one vote batch in this process with ``threads`` torch threads."""
    import torch

    from hrv_diffusion.cli import relevance, text_embeddings

    common = ["--model_card", "toy", "--description", "toy_concepts", "--output_dir", str(work)]
    if not (work / "word_lists").exists():
        text_embeddings.main(common)
    torch.set_num_threads(threads)
    argv = common + ["--prompt", "toy", "--max_prompts", str(batch_size), "--batch_size", str(batch_size),
                     "--dtype", "float32", "--quiet"]
    shutil.rmtree(work / "results", ignore_errors=True)
    relevance.main(argv)  # warm-up: imports, model load
    shutil.rmtree(work / "results", ignore_errors=True)
    profiler = cProfile.Profile()
    before, start = load(), time.perf_counter()
    profiler.enable()
    relevance.main(argv)
    profiler.disable()
    seconds = time.perf_counter() - start
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(top)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    start_row = next(i for i, line in enumerate(lines) if "ncalls" in line)
    return {"threads": threads, "prompts": batch_size, "seconds": round(seconds, 2),
            "seconds_per_prompt": round(seconds / batch_size, 3), "load_before": before, "load_after": load(),
            "top_tottime": lines[start_row:]}


def run_config(name: str, extra: list[str], prompts: int, batch_size: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    argv = [sys.executable, "-m", "hrv_diffusion.cli.demo", "--output_dir", str(out), "--prompts", str(prompts),
            "--batch_size", str(batch_size), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.pop(key, None)
    before, start = load(), time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stderr[-2000:]}")
    return {"config": name, "argv": argv[2:], "seconds": round(seconds, 2), "load_before": before,
            "load_after": load()}


def hrv_of(out: Path) -> np.ndarray:
    final = out / "final_result"
    return np.load(next(p for p in final.glob("category_vectors_*.npy") if not p.stem.endswith("per_timesteps")))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=64, help="prompts of the demo (default: 64, the demo's)")
    p.add_argument("--batch_size", type=int, default=16, help="prompts per call (default: 16, the demo's)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration (default: 2)")
    p.add_argument("--top", type=int, default=25, help="functions listed per profile (default: 25)")
    p.add_argument("--skip_profile", action="store_true", help="only time the configurations")
    p.add_argument("--profile_threads", type=int, nargs="+", default=[1, 2], help="thread counts profiled")
    p.add_argument("--configs", type=int, nargs="+", default=list(range(len(CONFIGS))),
                   help="which configurations to time, by number: " + ", ".join(
                       f"{k} = {name}" for k, name in enumerate(CONFIGS)) + " (default: all)")
    p.add_argument("--smoke", action="store_true", help="8 prompts in batches of 4, one repeat: a quick check")
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (default: print it)")
    args = p.parse_args(argv)
    if args.smoke:
        args.prompts, args.batch_size, args.repeats, args.top = 8, 4, 1, 10

    result = {"machine": machine(), "prompts": args.prompts, "batch_size": args.batch_size, "profile": [],
              "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.skip_profile:
            for threads in args.profile_threads:
                result["profile"].append(profile_batch(tmp / "profile", args.batch_size, threads, args.top))
                print(json.dumps({k: v for k, v in result["profile"][-1].items() if k != "top_tottime"}), flush=True)
        reference = None
        for repeat in range(args.repeats):
            for k, (name, extra) in enumerate(CONFIGS.items()):
                if k not in args.configs:
                    continue
                out = tmp / f"demo_{k}"
                row = run_config(name, extra, args.prompts, args.batch_size, out)
                hrv = hrv_of(out)
                reference = hrv if reference is None else reference
                row["repeat"] = repeat
                row["hrv_equal_to_first"] = bool(np.array_equal(hrv, reference))
                row["hrv_max_abs_diff"] = float(np.abs(hrv - reference).max())
                result["runs"].append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in CONFIGS:
        if not any(r["config"] == name for r in result["runs"]):
            continue
        times = [r["seconds"] for r in result["runs"] if r["config"] == name]
        summary[name] = {"seconds": times, "min": min(times), "median": float(np.median(times))}
    result["summary"] = summary
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
