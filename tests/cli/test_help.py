"""Every flag of every command says what it does and its default, once (issue 14, item 6).

Covers each console script of pyproject.toml and every script file (top level, applications/,
ordered_weakening_analysis/, toy/). The parsers are built in-process (``--help`` raises SystemExit after printing);
scripts whose parser is built inside ``main`` are run with ``--help`` the same way, through ``runpy``.
"""
from __future__ import annotations

import contextlib
import importlib
import io
import re
import runpy
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATTERNS = ("*.py", "applications/*.py", "ordered_weakening_analysis/*.py", "toy/*.py")
SCRIPTS = sorted(str(p.relative_to(ROOT)) for pattern in PATTERNS for p in ROOT.glob(pattern))
CONSOLE = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def _help_of_entry(target: str) -> str:
    module, func = target.split(":")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        getattr(importlib.import_module(module), func)(["--help"])
    assert exit_.value.code in (0, None)
    return out.getvalue()


def _help_of_script(path: str) -> str:
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [str(ROOT / path), "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(ROOT / path), run_name="__main__")
    finally:
        sys.argv = argv
    assert exit_.value.code in (0, None)
    return out.getvalue()


def options(text: str) -> dict[str, str]:
    """{first option string: its help text} from argparse's --help output (the options sections)."""
    body = text.split("\n\n", 1)[1] if "\n\n" in text else text
    found, current = {}, None
    for line in body.splitlines():
        m = re.match(r"^  (-[-\w]+)(.*)$", line)
        if m:
            current = m.group(1)
            rest = m.group(2)
            if re.match(r"\s{2,}", rest):  # no metavar: the help follows
                found[current] = rest.strip()
            else:
                parts = re.split(r"\s{2,}", rest.strip(), maxsplit=1)
                found[current] = parts[1] if len(parts) == 2 else ""
        elif current and line.startswith("    ") and line.strip():
            found[current] = (found[current] + " " + line.strip()).strip()
        elif not line.strip():
            current = None
    return found


def check_help(text: str, where: str) -> None:
    opts = options(text)
    assert opts, f"{where}: no options found in --help"
    for flag, help_text in opts.items():
        if flag in ("-h", "--help"):
            continue
        assert help_text, f"{where}: {flag} has no help text"
        assert "(default: None)" not in help_text, f"{where}: {flag} says (default: None)"
        assert help_text.count("(default:") <= 1, f"{where}: {flag} states its default twice: {help_text}"


@pytest.mark.parametrize("name", sorted(CONSOLE))
def test_console_script_help(name):
    check_help(_help_of_entry(CONSOLE[name]), name)


@pytest.mark.parametrize("path", SCRIPTS)
def test_script_help(path):
    check_help(_help_of_script(path), path)


def test_sdxl_weakening_names_itself():
    text = _help_of_entry(CONSOLE["hrv-weakening-sdxl"])
    assert text.startswith("usage: hrv-weakening-sdxl") or "head_perturbation_analysis_sdxl" in text.split("\n")[0]
    script = _help_of_script("ordered_weakening_analysis/head_perturbation_analysis_sdxl.py")
    assert "sdxl" in script.split("\n")[0].lower()


def test_numerator_denominator_explained():
    opts = options(_help_of_entry(CONSOLE["hrv-relevance"]))
    assert "part" in opts["--numerator"] and "parts" in opts["--denominator"]


def test_extraction_names_its_model():
    text = _help_of_entry(CONSOLE["hrv-extract"])
    assert "Assumes SD v1.4" in " ".join(text.split())
    assert "stable-diffusion-xl" in options(text)["--model_card"]


def test_formatter_adds_default_once():
    import argparse

    from hrv_diffusion.cli.common import HelpFormatter

    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--a", type=int, default=3, help="a count")
    p.add_argument("--b", type=int, default=4, help="b count (default: 4)")
    p.add_argument("--c", default=None, help="optional path")
    p.add_argument("--d", action="store_true", help="a switch")
    opts = options(p.format_help())
    assert opts["--a"] == "a count (default: 3)"
    assert opts["--b"] == "b count (default: 4)"
    assert opts["--c"] == "optional path" and opts["--d"] == "a switch"
