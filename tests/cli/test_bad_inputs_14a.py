"""Runs every case of ``bad_inputs_14a.CASES``: the exit status, one ``error:`` line holding the expected text, and
no traceback. Console scripts run in-process through their main functions; ``python script`` cases as a
subprocess."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from bad_inputs_14a import CASES, SETUPS

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


def run_case(case, capsys) -> tuple[int, str]:
    command = case["command"]
    if command[0] == "python":
        env = dict(os.environ, PYTHONPATH=str(REPO))
        done = subprocess.run([sys.executable, str(REPO / command[1]), *command[2:]], capture_output=True,
                              text=True, env=env, timeout=300)
        return done.returncode, done.stderr
    module, function = SCRIPTS[command[0]].split(":")
    main = getattr(importlib.import_module(module), function)
    capsys.readouterr()
    code = main(command[1:])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[c["input"] for c in CASES])
def test_bad_input(case, tmp_path, monkeypatch, capsys):
    if case.get("needs_no_cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    if case.get("setup"):
        SETUPS[case["setup"]](tmp_path)
    code, err = run_case(case, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == case["exit"], err
    assert "Traceback" not in err and len(errors) == 1, err
    assert case["expect"] in errors[0], err
