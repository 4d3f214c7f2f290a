"""Wall time of each application's command on the built-in toy model, on the CPU: the README's timing table.

Each command runs as a fresh process (``python <script> ... --model_card toy``, the model's default steps, a few
seeds) in an empty temporary folder, offline; its wall time, exit status and the 1-minute load average before and
after are recorded. Other programs slow it down: time on a quiet machine (load average near 0 before).

    python bench/toy_timings.py --out                     # every command: bench/results/toy_timings_cpu.{json,log}
    python bench/toy_timings.py --only sd_hrv --smoke     # one command with 3 steps: checks the runner, seconds

``--out`` writes the JSON (one record per command, plus the machine) and the log (one line per command, then each
command's last lines of output) beside each other; without it the lines are only printed. ``make demo`` and
``make test`` are timed from a fresh clone instead (bench/results/make_demo_fresh_clone_cpu.log, make_test_cpu.log).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "toy_timings_cpu"
TOY = ("--model_card", "toy", "--quiet")
AE = ("--prompt", "a red circle and a blue square", "--token_words", "circle", "square", "--concepts", "Shape",
      "--seeds", "1", "2", "3", "4")

# name -> (script relative to the repository, its arguments; the output folder flag and path are added)
COMMANDS = {
    "demo": ("-m hrv_diffusion.cli.demo", (), "--output_dir"),
    "weakening": ("ordered_weakening_analysis/head_perturbation_analysis.py",
                  (*TOY, "--description", "toy_concepts", "--hrv", "paper", "--prompt", "a red circle", "--concept",
                   "Color", "--seeds", "1", "2"), "--output_path"),
    "sd_hrv": ("applications/reduce_misinterpretation.py",
               (*TOY, "--prompt", "a circle on a red background", "--selected_token", "red", "--desired", "Color",
                "--undesired", "Background", "--seeds", "1", "2", "3", "4"), "--output_path"),
    "p2p_hrv": ("applications/p2p_hrv.py",
                (*TOY, "--prompts", "a small red circle at the top on a white background",
                 "a small blue circle at the top on a white background", "--target_token", "blue", "--concepts",
                 "Color", "Shape", "--use_soft_vector", "--save_original_p2p", "--seeds", "1", "2", "3", "4"),
                "--output_path"),
    "p2p_benchmark": ("applications/p2p_benchmark.py", (*TOY, "--sets", "color", "--max_pairs", "4", "--seeds", "1",
                                                         "2"), "--output_path"),
    "attend_excite_hrv": ("applications/attend_and_excite_hrv.py", (*TOY, *AE), "--output_path"),
    "multi_object": ("applications/multi_object_benchmark.py",
                     (*TOY, "--prompt_set", "animals", "--max_prompts", "4", "--concepts", "Shape", "--methods",
                      "hrv", "sd", "--num_seeds", "2"), "--output_path"),
    "visualize": ("-m hrv_diffusion.cli.visualize", ("--hrv", "paper", "--model_version", "toy", "--formats", "png"),
                  "--output_dir"),
}
SMOKE = {"demo": ("--prompts", "4"), "weakening": ("--n_inference_steps", "3", "--seeds", "1")}
SMOKE_DEFAULT = ("--n_inference_steps", "3")
NO_STEPS = ("demo", "visualize")  # commands without --n_inference_steps


def command(name: str, out: Path, smoke: bool = False) -> list[str]:
    """The command line of ``name`` writing into ``out`` (``smoke``: with 3 denoising steps, or a smaller job)."""
    script, args, out_flag = COMMANDS[name]
    start = script.split() if script.startswith("-m ") else [str(ROOT / script)]
    extra = SMOKE.get(name, () if name in NO_STEPS else SMOKE_DEFAULT) if smoke else ()
    return [sys.executable, *start, *args, *extra, out_flag, str(out)]


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def time_one(name: str, smoke: bool = False) -> dict:
    """Run ``name`` once in a fresh temporary folder: its wall seconds, exit status, load averages and output tail."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                                                       os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        argv = command(name, Path(tmp) / "out", smoke)
        before = load()
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    shown = [Path(a).relative_to(ROOT).as_posix() if a.startswith(str(ROOT)) else a for a in argv[1:]]
    tail = done.stdout.strip().splitlines()[-3:] + (done.stderr.strip().splitlines()[-5:] if done.returncode else [])
    return {"name": name, "command": shlex.join(["python", *shown[:-1], "OUT"]), "wall_s": round(wall, 2),
            "returncode": done.returncode, "load_before": round(before, 2), "load_after": round(load(), 2),
            "smoke": smoke, "tail": tail}


def line(record: dict) -> str:
    status = "ok" if record["returncode"] == 0 else f"FAILED (exit {record['returncode']})"
    return (f"{record['name']:<18} {record['wall_s']:>8.1f} s  {status}  load {record['load_before']:.2f} -> "
            f"{record['load_after']:.2f}  {record['command']}")


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "system": platform.platform()}


def write(records: list[dict], prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps({"machine": machine(), "commands": records}, indent=1) + "\n")
    text = [line(r) for r in records] + [""]
    for r in records:
        text += [f"# {r['name']}: last lines of its output", *r["tail"], ""]
    prefix.with_suffix(".log").write_text("\n".join(text))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="+", choices=sorted(COMMANDS), default=None, help="time only these commands")
    p.add_argument("--smoke", action="store_true", help="3 denoising steps (a quick check that each command runs)")
    p.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, metavar="PREFIX",
                   help=f"write PREFIX.json and PREFIX.log (default PREFIX: {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    records = []
    for name in args.only or list(COMMANDS):
        records.append(time_one(name, args.smoke))
        print(line(records[-1]), flush=True)
    if args.out:
        write(records, Path(args.out))
        print(f"wrote {Path(args.out).with_suffix('.json')} and .log")
    return 0 if all(r["returncode"] == 0 for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
