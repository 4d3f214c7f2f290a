"""The README's "Try it on the toy" block (between its ``toy-block`` markers) and a runner for its command lines,
run as a user types them (a console script or ``python SCRIPT``), in-process, in one folder. Shared by
``test_toy_defaults.py`` (runs every command: each is ``--model_card toy`` alone) and ``test_readme_toy.py``."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from bad_inputs_run import REPO, run_case

README = REPO / "README.md"
BEGIN, END = "<!-- toy-block:begin", "<!-- toy-block:end -->"


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    start, stop = text.index(BEGIN), text.index(END)
    return text[start:stop]


def fenced(block: str, language: str = "") -> list[str]:
    """The bodies of the block's ```LANGUAGE fences (``""``: fences without a language)."""
    return re.findall(rf"^```{language}\n(.*?)^```", block, flags=re.S | re.M)


def readme_commands() -> list[str]:
    """The command lines of the block's shell fence, comments dropped, in their order (each may read what the
    ones before wrote: embeddings, then votes, then the HRV files)."""
    lines = [line.split("#", 1)[0].strip() for body in fenced(readme_block()) for line in body.splitlines()]
    return [line for line in lines if line]


def readme_python() -> str:
    return "\n".join(fenced(readme_block(), "python"))


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def run_line(line: str, folder: Path) -> tuple[int, str, set[Path]]:
    """Run one command line in ``folder``; (exit status, stderr, files it added)."""
    before = files_under(folder)
    code, err = run_case({"command": shlex.split(line)}, {}, folder)
    return code, err, files_under(folder) - before
