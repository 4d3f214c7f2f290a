"""Runs the bad-input cases of ``bad_inputs_14b.py``, ``bad_inputs_14a.py`` and later ``bad_inputs_NN*.py`` in-process.

A console script runs through its ``main(argv)``; ``python SCRIPT ...`` through ``runpy`` with ``sys.argv`` set, as
``__main__``. Used by ``test_bad_inputs.py`` and by ``make_bad_inputs_table.py`` (docs/bad-inputs.md).
"""
from __future__ import annotations

import contextlib
import importlib
import io
import os
import runpy
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def load_cases() -> list[tuple[str, dict, dict]]:
    """[(source, case, setups)]: bad_inputs_14b.py, bad_inputs_14a.py, then every later bad_inputs_NN*.py by name."""
    here = Path(__file__).parent
    sys.path.insert(0, str(here))
    first = ("bad_inputs_14b", "bad_inputs_14a")
    later = sorted(p.stem for p in here.glob("bad_inputs_[0-9]*.py") if p.stem not in first)
    found = []
    for source in (*first, *later):
        try:
            module = importlib.import_module(source)
        except ModuleNotFoundError:
            continue
        found += [(source, case, getattr(module, "SETUPS", {})) for case in module.CASES]
    return found


def run_case(case: dict, setups: dict, folder: Path) -> tuple[int, str]:
    """Run one case in ``folder`` (its setup first); return (exit status, stderr)."""
    old_cwd, old_argv = os.getcwd(), sys.argv
    saved_env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK") if k in os.environ}
    err = io.StringIO()
    os.chdir(folder)
    try:
        if case.get("setup"):
            setups[case["setup"]](folder)
        command = case["command"]
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                if command[0] == "python":
                    sys.argv = [str(REPO / command[1]), *command[2:]]
                    runpy.run_path(sys.argv[0], run_name="__main__")
                    code = 0
                else:
                    module, function = SCRIPTS[command[0]].split(":")
                    sys.argv = [command[0]]
                    code = getattr(importlib.import_module(module), function)(command[1:]) or 0
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv
        os.environ.update(saved_env)
    return code, err.getvalue()


def display(command: list[str]) -> str:
    """The command as a user types it."""
    import shlex

    return " ".join(shlex.quote(word) for word in command)
