"""Every path of the repository that the READMEs and docs/*.md mention exists: each ``hrv_diffusion/...``,
``applications/...``, ``bench/...`` and ``tests/...`` path (a file, a folder, or a glob with ``*``, ``{a,b}`` or a
``{placeholder}`` that matches something), so a module that moves cannot leave a stale path in the docs. Not checked:
what a command will write (a path after ``--out``/``--output_path``/``--output_dir``, or inside a default output
folder, one of the anchored folders of .gitignore)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted(REPO.glob("*/README.md")), *sorted((REPO / "docs").glob("*.md"))]
PATH = re.compile(r"(?<![\w./~$-])((?:hrv_diffusion|applications|bench|tests)/[\w./*{},-]*)")
OUTPUT_FLAG = re.compile(r"--(?:out|output_path|output_dir)[ =]$")


def output_folders() -> list[str]:
    """The anchored folders of .gitignore (``/applications/image_editing_outputs/`` ...): commands' outputs."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    return [line.strip("/") for line in lines if line.startswith("/") and line.endswith("/")]


def mentioned_paths(text: str) -> set[str]:
    """The repository paths in ``text`` (trailing punctuation and a final ``/`` dropped)."""
    found, outputs = set(), output_folders()
    for match in PATH.finditer(text):
        path = match.group(1).rstrip(".,").rstrip("/")
        if "..." in path or OUTPUT_FLAG.search(text[max(0, match.start() - 16) : match.start()]):
            continue  # an elided name (prompt_01_.../), or what a command writes
        if any(path == folder or path.startswith(folder + "/") for folder in outputs):
            continue
        found.add(path)
    return found


def expand(path: str) -> list[str]:
    """``a/{b,c}.py`` -> [a/b.py, a/c.py] (one brace group at a time); a placeholder ``{set}`` becomes ``*``."""
    match = re.search(r"\{([^{}]*)\}", path)
    if not match:
        return [path]
    options = match.group(1).split(",") if "," in match.group(1) else ["*"]
    return [p for option in options for p in expand(path[:match.start()] + option + path[match.end():])]


def exists(path: str) -> bool:
    return all(any(REPO.glob(p)) if "*" in p else (REPO / p).exists() for p in expand(path))


def test_the_pattern_finds_paths_and_skips_other_text():
    text = ("see `hrv_diffusion/core/loop.py`, bench/results/{a,b}.json and tests/core/. Not my_tests/x, "
            "not OUTPUT_DIR/bench/y, not prompt_01_.../hrv_diffusion/z nor /abs/applications/w, not --out bench/n.json "
            "nor applications/image_editing_outputs/exp_1/source/a.png (an output folder)")
    assert mentioned_paths(text) == {"hrv_diffusion/core/loop.py", "bench/results/{a,b}.json", "tests/core"}
    assert expand("bench/results/{a,b}.{json,log}") == ["bench/results/a.json", "bench/results/a.log",
                                                        "bench/results/b.json", "bench/results/b.log"]
    assert expand("data/image_editing_{set}.csv") == ["data/image_editing_*.csv"]
    assert exists("hrv_diffusion/core/loop.py") and exists("tests/*.py") and not exists("hrv_diffusion/prompts.py")


@pytest.mark.parametrize("doc", DOCS, ids=[d.relative_to(REPO).as_posix() for d in DOCS])
def test_every_mentioned_path_exists(doc):
    missing = sorted(p for p in mentioned_paths(doc.read_text(encoding="utf-8")) if not exists(p))
    assert not missing, f"{doc.relative_to(REPO)} mentions paths that do not exist: {missing}"
