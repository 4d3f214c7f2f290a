"""Device and dtype resolution (core/device.py) and the one CLI error path (cli/common.py)."""
from __future__ import annotations

import pytest
import torch

from hrv_diffusion.cli.common import run_cli
from hrv_diffusion.core.device import resolve_device, resolve_dtype
from hrv_diffusion.errors import UserError


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None, 3) == "cpu"
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda:0")
    with pytest.raises(UserError, match="not a torch device"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None, 2) == "cuda:2"
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(None, 2) == "cuda:1"  # torchrun: the rank's own GPU


def test_resolve_dtype():
    assert resolve_dtype("auto", "cuda:0") == "float16" and resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cpu") == "bfloat16"
    with pytest.raises(UserError, match="--dtype"):
        resolve_dtype("float8", "cpu")


def test_run_cli_turns_user_errors_into_one_line(capsys, monkeypatch):
    def fails(_):
        raise UserError("bad thing:\n  fix it like this")

    assert run_cli(fails, None) == 2
    assert capsys.readouterr().err == "error: bad thing: fix it like this\n"
    assert run_cli(lambda _: None, None) == 0 and run_cli(lambda _: 3, None) == 3

    def interrupted(_):
        raise KeyboardInterrupt

    assert run_cli(interrupted, None) == 130
    monkeypatch.setenv("HRV_DIFFUSION_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(fails, None)


def test_bugs_are_not_hidden():
    def bug(_):
        raise KeyError("a programming error")

    with pytest.raises(KeyError):
        run_cli(bug, None)
