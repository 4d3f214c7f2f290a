"""``make demo``: the whole HRV pipeline on the built-in toy model, on a CPU, in 1 to 1.5 minutes (README).

text embeddings -> head relevance votes -> extraction of the published files -> a heatmap. The toy model
(``hrv_diffusion/data/toy``, see toy/README.md) draws colored shapes; its concepts are Color, Shape, Size,
Position and Background. ``--model_card tiny-sd`` runs the same on a random-weight model (machinery only).

Speed. The toy model is tiny: its layers are too small for several threads to help, and on a shared or busy
machine threads that wait for each other make a step several times slower (bench/demo_profile.py, 2 cores at a
load of 5: 8 prompts took 186 s with 2 threads, 26 s with 1). So the votes run in
``--workers`` processes of one thread each, each on a contiguous part of the prompts (``--subset_running``);
the prompts, latents, words and batches are those of a single process, and extraction adds the shards.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int, output_folder


def votes_command(common: list[str], prompt: str, prompts: int, batch_size: int, part: int, parts: int,
                  quiet: bool) -> list[str]:
    """The argv of one vote worker: part ``part`` of ``parts`` of the first ``prompts`` prompts."""
    argv = common + ["--prompt", prompt, "--max_prompts", str(prompts), "--batch_size", str(batch_size),
                     "--dtype", "float32", "--resume"]
    if parts > 1:
        argv += ["--subset_running", "--numerator", str(part), "--denominator", str(parts)]
    return argv + (["--quiet"] if quiet else [])


def step_env(threads: int | None = None) -> dict:
    """The environment of a step's process: this hrv_diffusion first on the path, ``threads`` torch threads."""
    package_root = str(Path(__file__).resolve().parents[2])  # this hrv_diffusion, installed or not
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def command(name: str, argv: list[str]) -> list[str]:
    """The command line of one of the package's commands (``hrv_diffusion.cli.NAME``), run as its own process."""
    return [sys.executable, "-m", f"hrv_diffusion.cli.{name}", *argv]


def run_votes(common: list[str], prompt: str, prompts: int, batch_size: int, workers: int, threads: int) -> int:
    """Step 2: the vote counts in ``workers`` processes of ``threads`` torch threads; the exit status."""
    if workers > 1:
        print(f"   {workers} processes of {threads} thread(s) each; progress of the first:", flush=True)
    env = step_env(threads)
    procs = [subprocess.Popen(command("relevance", votes_command(common, prompt, prompts, batch_size, k, workers,
                                                                 quiet=k > 1)), env=env)
             for k in range(1, workers + 1)]
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def default_workers(prompts: int, batch_size: int) -> int:
    from hrv_diffusion.core.device import usable_cpus

    batches = -(-prompts // batch_size)
    return max(1, min(usable_cpus(), 4, batches))


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="hrv-demo", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--output_dir", type=output_folder, default="demo_output", help="folder for every output (created)")
    p.add_argument("--model_card", default="toy",
                   help="toy (the built-in trained toy model), toy-dit (its diffusion transformer), tiny-sd, tiny-sd2 "
                        "or tiny-sdxl (random weights: machinery only), or a diffusers folder")
    p.add_argument("--prompts", type=positive_int, default=64, help="how many prompts of the list (the first N)")
    p.add_argument("--batch_size", type=positive_int, default=16, help="prompts per pipeline call")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="processes counting votes (default: the usable CPU cores, at most 4 and at most one per batch)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads per worker")
    return p


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))


def run(args) -> int:
    from hrv_diffusion.cli.common import TOY_CARDS
    from hrv_diffusion.cli.context import default_description
    from hrv_diffusion.hrv.files import read_hrv
    from hrv_diffusion.apps.visualize import plot_hrv_heatmap

    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    toy = args.model_card in TOY_CARDS
    description, prompt = default_description(args.model_card), ("toy" if toy else "imagenet")
    common = ["--model_card", args.model_card, "--description", description]
    workers = args.workers or default_workers(args.prompts, args.batch_size)
    os.chdir(out)
    steps = [
        ("1/3 text embeddings of the concept words",
         lambda: subprocess.call(command("text_embeddings", common), env=step_env())),
        ("2/3 head relevance votes",
         lambda: run_votes(common, prompt, args.prompts, args.batch_size, workers, args.threads)),
        ("3/3 extraction", lambda: subprocess.call(command("extract", common + ["--prompt", prompt]), env=step_env())),
    ]
    for title, fn in steps:
        print(f"== {title}", flush=True)
        code = fn()
        if code:
            return code
    final = out / "final_result"
    cv = next(p for p in final.glob("category_vectors_*.npy") if not p.stem.endswith("per_timesteps"))
    hi = final / cv.name.replace("category_vectors_", "head_index_")
    hrv, labels = read_hrv(cv, hi)
    import numpy as np
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description

    names = list(read_concept_set(resolve_description(description)).names)
    png = plot_hrv_heatmap(np.asarray(hrv), labels, names, out / "hrv_heatmap.png", title=f"HRVs of {args.model_card}")
    print(f"\nDone. Outputs in {out}:\n  final_result/  HRVs and head rankings (see docs/hrv-files.md)\n"
          f"  results/       vote-count shards\n  {png.name}  heatmap of the HRVs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
