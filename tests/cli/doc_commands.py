"""The command lines of the READMEs and docs/*.md (their ``` fences), and what each must do on a fresh checkout with
no network and no downloaded weights. Shared by ``test_doc_commands.py`` (runs them in-process) and
``bench/offline_failures.py`` (times the ones that must fail, each as a fresh process).

A command line is a fenced line that starts with ``python``, ``python3``, a console script (``hrv-...``), ``make``,
``torchrun`` or an environment assignment; ``\\`` continuations are joined, ``&&`` splits a line, ``#`` comments are
dropped. Each gets one expectation (``expectation``):

- ``toy block``: the README's "Try it on the toy" block; ``test_toy_defaults.py`` runs those.
- ``measured``: ``make demo`` / ``make test``, timed from a fresh clone (the README's timing table).
- ``synopsis``: a usage line with ``[optional]`` parts or ``...``: not a command as written.
- ``parses``: runs too long for the tests or needs a GPU (``LONG``, with the reason): its flags must parse.
- ``runs``: on a built-in model (``toy``, ``tiny-*``, ``--smoke``): exit status 0.
- ``runs or fails``: anything else: exit status 0, or 2 with one ``error:`` line and no traceback (a missing
  download, or an input made by an earlier step), quickly.
"""
from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted(REPO.glob("*/README.md")), *sorted((REPO / "docs").glob("*.md"))]
START = re.compile(r"^(python3?|hrv-[\w-]+|make|torchrun|[A-Z_]+=\S*) ")
BUILT_IN = re.compile(r"--model_card[ =](toy|tiny-[\w-]+)\b|--model_version[ =]toy\b|--smoke\b")
TOY_BLOCK = ("<!-- toy-block:begin", "<!-- toy-block:end -->")

# Commands that take minutes on a CPU, or a GPU: only their flags are checked (substring of the line -> why).
LONG = {
    "--prompt toy --batch_size 32": "the toy's shipped HRVs from 256 captions: minutes on a CPU (the toy block "
                                    "runs the same steps on 8 captions)",
    "extract_head_relevance_vectors.py --model_card toy": "needs the shards of the 256-caption run above",
    "toy/train.py": "trains the toy on a GPU for 9 minutes",
    "--device cuda:0": "runs on a CUDA GPU (the toy DiT's shipped HRVs were built so)",
    "toy/adjust_eval.py": "evaluates SD-HRV on hundreds of toy images: minutes on a CPU",
    "bench/bench_attend_excite.py --smoke": "about two minutes on a CPU",
    "torchrun": "starts several processes on GPUs",
}
GPU_BENCH = re.compile(r"^python bench/bench_\w+\.py(?!.*--smoke)")


@dataclass(frozen=True)
class DocCommand:
    doc: str  # e.g. "docs/p2p.md"
    line: str  # the command as written, comment dropped
    in_toy_block: bool = False

    @property
    def env(self) -> dict[str, str]:
        """Leading ``NAME=value`` words."""
        words = shlex.split(self.line)
        return dict(w.split("=", 1) for w in words[: self._program_index(words)])

    @property
    def argv(self) -> list[str]:
        """The words after any environment assignments (``torchrun``'s own options dropped)."""
        words = shlex.split(self.line)
        words = words[self._program_index(words):]
        if words[0] == "torchrun":
            script = next(i for i, w in enumerate(words) if w.endswith(".py"))
            words = ["python", *words[script:]]
        return ["python", *words[1:]] if words[0] == "python3" else words

    @staticmethod
    def _program_index(words: list[str]) -> int:
        return next(i for i, w in enumerate(words) if not re.match(r"^[A-Z_]+=", w))

    @property
    def expectation(self) -> str:
        if self.in_toy_block:
            return "toy block"
        if self.line.startswith("make "):
            return "measured"
        if "[" in self.line or "..." in self.line:
            return "synopsis"
        if self.why_long or GPU_BENCH.match(self.line):
            return "parses"
        if BUILT_IN.search(self.line):
            return "runs"
        return "runs or fails"

    @property
    def why_long(self) -> str | None:
        if GPU_BENCH.match(self.line):
            return "times a CUDA GPU"
        return next((why for key, why in LONG.items() if key in self.line), None)


def _lines(body: str):
    for line in body.replace("\\\n", " ").splitlines():
        line = " ".join(line.strip().split())
        if START.match(line + " "):
            line = line.split(" # ", 1)[0].strip()
            yield from (part.strip() for part in line.split(" && "))


def doc_commands() -> list[DocCommand]:
    """Every fenced command line of the READMEs and docs, in document order."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        block = (text.index(TOY_BLOCK[0]), text.index(TOY_BLOCK[1])) if TOY_BLOCK[0] in text else (-1, -1)
        for fence in re.finditer(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
            in_block = block[0] < fence.start() < block[1]
            for line in _lines(fence.group(1)):
                found.append(DocCommand(doc.relative_to(REPO).as_posix(), line, in_block))
    return found


def copy_checkout(folder: Path) -> Path:
    """The checkout's scripts and data folders into ``folder`` (not the package, which is installed; no dot
    folders): a user's working directory for the commands, without writing into the real checkout."""
    skip = shutil.ignore_patterns(".*", "hrv_diffusion", "__pycache__", "*.egg-info")
    for entry in REPO.iterdir():
        if entry.name.startswith(".") or entry.name == "hrv_diffusion" or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, folder / entry.name, ignore=skip)
        else:
            shutil.copy2(entry, folder / entry.name)
    return folder
