"""Every command line of the READMEs and docs/*.md works as written on a checkout with no network and no weights
(``doc_commands.py`` lists them and what each must do): on a built-in model it runs; where it needs a download or
an earlier step's output it fails at once with one ``error:`` line (exit status 2, no traceback); where it runs too
long for a test or needs a GPU its flags parse. Each runs in-process in a copy of the checkout, offline: the hub
address does not resolve and the caches are empty. ``bench/offline_failures.py`` times the failing ones as fresh
processes."""
from __future__ import annotations

import argparse
import contextlib
import time
from unittest import mock

import pytest
from bad_inputs_run import run_case
from doc_commands import copy_checkout, doc_commands

COMMANDS = doc_commands()
IDS = [f"{c.doc}:{' '.join(c.argv[:2])}:{i}" for i, c in enumerate(COMMANDS)]
SECONDS = 30  # in-process, imports already paid: far below the 27-49 s of hub retries this guards against


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """A copy of the checkout's scripts and data folders (the package itself stays installed), as a user's cwd."""
    return copy_checkout(tmp_path_factory.mktemp("checkout"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (a hub address that does not resolve), empty model and download caches."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))


class Parsed(Exception):
    """Raised by the patched parser once the command line has parsed."""


@contextlib.contextmanager
def parse_only():
    """``ArgumentParser.parse_args`` / ``parse_known_args`` parse, then stop the command (``Parsed``)."""
    original_args, original_known = argparse.ArgumentParser.parse_args, argparse.ArgumentParser.parse_known_args
    inside = []

    def parse_args(self, args=None, namespace=None):
        inside.append(1)
        try:
            original_args(self, args, namespace)
        finally:
            inside.pop()
        raise Parsed

    def parse_known_args(self, args=None, namespace=None):
        result = original_known(self, args, namespace)
        if inside:
            return result
        raise Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_args), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", parse_known_args):
        yield


def test_every_command_has_an_expectation():
    kinds = {c.expectation for c in COMMANDS}
    assert len(COMMANDS) >= 60 and kinds <= {"toy block", "measured", "synopsis", "parses", "runs", "runs or fails"}
    assert sum(c.expectation == "toy block" for c in COMMANDS) >= 10
    assert all(c.why_long for c in COMMANDS if c.expectation == "parses")


def _run(command, folder, monkeypatch):
    for name, value in command.env.items():
        monkeypatch.setenv(name, value)
    start = time.perf_counter()
    code, err = run_case({"command": command.argv}, {}, folder)
    return code, err, time.perf_counter() - start


@pytest.mark.parametrize("command", COMMANDS, ids=IDS)
def test_doc_command(command, checkout, offline, monkeypatch):
    kind = command.expectation
    if kind in ("toy block", "measured", "synopsis"):
        pytest.skip({"toy block": "run by test_toy_defaults.py", "measured": "timed from a fresh clone (README)",
                     "synopsis": "a usage line, not a command"}[kind])
    try:  # first its flags: a command with a wrong flag fails here, not as a download error
        with parse_only():
            code, err, _ = _run(command, checkout, monkeypatch)
        pytest.fail(f"{command.line}: did not reach its parser (exit {code}): {err[-500:]}")
    except Parsed:
        pass
    if kind == "parses":
        return
    code, err, seconds = _run(command, checkout, monkeypatch)
    assert "Traceback" not in err, f"{command.line}\n{err[-2000:]}"
    if kind == "runs" or code == 0:
        assert code == 0, f"{command.line}: exit {code}\n{err[-1500:]}"
        return
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, f"{command.line}: exit {code}\n{err[-1500:]}"
    assert seconds < SECONDS, f"{command.line}: failed after {seconds:.1f} s: {errors[0]}"
