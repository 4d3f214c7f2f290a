"""Wall time of each command of the README's "Try it on the toy" block, exactly as written, on the CPU: the
README's timing table.

The block's command lines (read from README.md) run one after the other as fresh processes in one copy of the
checkout (each may read what the ones before wrote: embeddings, votes, HRV files), offline; each one's wall time, exit
status and the 1-minute load average before and after are recorded, then ``python -m hrv_diffusion.cli.demo`` (the
demo) in a folder of its own. Other programs slow them down: time on a quiet machine (load average near 0 before).

    python bench/toy_timings.py --out                     # bench/results/toy_timings_cpu.{json,log}
    python bench/toy_timings.py --only hrv-heads          # the commands whose line contains this text

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
sys.path.insert(0, str(ROOT / "tests" / "cli"))
from doc_commands import copy_checkout  # noqa: E402
from toy_commands import readme_commands  # noqa: E402  (the README block's lines, as the tests read them)

DEFAULT_OUT = ROOT / "bench" / "results" / "toy_timings_cpu"
DEMO = "python -m hrv_diffusion.cli.demo --output_dir demo_output"


def argv_of(line: str) -> list[str]:
    """A README line as this interpreter runs it: ``python X`` -> this Python; ``hrv-x`` -> the venv's script."""
    words = shlex.split(line)
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [str(Path(sys.executable).parent / words[0]), *words[1:]]


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def time_one(line: str, folder: Path) -> dict:
    """Run one command line in ``folder``: its wall seconds, exit status, load averages and output tail."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    before = load()
    start = time.perf_counter()
    done = subprocess.run(argv_of(line), cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    tail = done.stdout.strip().splitlines()[-3:] + done.stderr.strip().splitlines()[-(5 if done.returncode else 2):]
    return {"command": line, "wall_s": round(wall, 2), "returncode": done.returncode, "load_before": round(before, 2),
            "load_after": round(load(), 2), "tail": tail}


def summary(record: dict) -> str:
    status = "ok" if record["returncode"] == 0 else f"FAILED (exit {record['returncode']})"
    return (f"{record['wall_s']:>7.1f} s  {status}  load {record['load_before']:.2f} -> {record['load_after']:.2f}  "
            f"{record['command']}")


def machine() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "system": platform.platform()}


def write(records: list[dict], prefix: Path) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps({"machine": machine(), "commands": records}, indent=1) + "\n")
    text = [summary(r) for r in records] + [""]
    for r in records:
        text += [f"# {r['command']}: last lines of its output", *r["tail"], ""]
    prefix.with_suffix(".log").write_text("\n".join(text))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default=None, metavar="TEXT", help="time only the lines that contain TEXT (the lines "
                   "before them run too, untimed in the output, so that their inputs exist)")
    p.add_argument("--no_demo", action="store_true", help="leave out the demo")
    p.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, metavar="PREFIX",
                   help=f"write PREFIX.json and PREFIX.log (default PREFIX: {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    lines = readme_commands() + ([] if args.no_demo else [DEMO])
    records = []
    with tempfile.TemporaryDirectory() as block, tempfile.TemporaryDirectory() as demo:
        copy_checkout(Path(block))  # the block runs from the checkout: a copy of it, so nothing is written there
        for line in lines:
            record = time_one(line, Path(demo if line == DEMO else block))
            if args.only is None or args.only in line:
                records.append(record)
                print(summary(record), flush=True)
    if args.out:
        write(records, Path(args.out))
        print(f"wrote {Path(args.out).with_suffix('.json')} and .log")
    return 0 if all(r["returncode"] == 0 for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
