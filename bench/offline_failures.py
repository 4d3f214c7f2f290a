"""How fast the READMEs' and docs' commands fail on a machine with no network and no downloads: each command that
needs weights, the paper's files or an earlier step's output (``runs or fails`` in tests/cli/doc_commands.py) runs
as a fresh process, as a user would start it, in a copy of the checkout; its wall time, exit status and its
``error:`` line are recorded. The hub address does not resolve (``HF_ENDPOINT=https://hub.invalid``;
``HF_HUB_OFFLINE`` unset) and the caches are empty. Time on a quiet machine (load average near 0 before).

    python bench/offline_failures.py --out        # bench/results/offline_failures_cpu.{json,log}
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
from doc_commands import copy_checkout, doc_commands  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "offline_failures_cpu"


def argv_of(words: list[str]) -> list[str]:
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    return [str(Path(sys.executable).parent / words[0]), *words[1:]]


def time_one(command, folder: Path, caches: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT="https://hub.invalid", HF_HOME=str(caches / "hf"), XDG_CACHE_HOME=str(caches / "xdg"),
               **command.env)
    load = os.getloadavg()[0]
    start = time.perf_counter()
    done = subprocess.run(argv_of(command.argv), cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    return {"doc": command.doc, "command": command.line, "wall_s": round(wall, 2), "returncode": done.returncode,
            "load_before": round(load, 2), "error": errors[-1] if errors else None,
            "traceback": "Traceback" in done.stderr}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", nargs="?", const=str(DEFAULT_OUT), default=None, metavar="PREFIX",
                   help=f"write PREFIX.json and PREFIX.log (default PREFIX: {DEFAULT_OUT.relative_to(ROOT)})")
    args = p.parse_args(argv)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        folder, caches = Path(tmp) / "checkout", Path(tmp) / "caches"
        folder.mkdir()
        copy_checkout(folder)
        for command in doc_commands():
            if command.expectation == "runs or fails":
                records.append(time_one(command, folder, caches))
                r = records[-1]
                print(f"{r['wall_s']:6.1f} s  exit {r['returncode']}  load {r['load_before']:.2f}  {r['command'][:90]}",
                      flush=True)
    failed = [r for r in records if r["returncode"] != 0]
    slowest = max((r["wall_s"] for r in failed), default=0.0)
    print(f"{len(failed)} of {len(records)} commands fail offline; the slowest after {slowest:.1f} s; "
          f"{sum(r['traceback'] for r in records)} with a traceback")
    if args.out:
        import torch

        prefix = Path(args.out)
        prefix.parent.mkdir(parents=True, exist_ok=True)
        machine = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                   "processor": platform.processor() or platform.machine()}
        prefix.with_suffix(".json").write_text(json.dumps({"machine": machine, "commands": records}, indent=1) + "\n")
        lines = [f"{r['wall_s']:6.1f} s  exit {r['returncode']}  load {r['load_before']:.2f}  {r['doc']}: "
                 f"{shlex.join(shlex.split(r['command']))}\n          {r['error'] or ''}" for r in records]
        prefix.with_suffix(".log").write_text("\n".join(lines) + "\n")
        print(f"wrote {prefix.with_suffix('.json')} and .log")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
