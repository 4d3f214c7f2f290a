"""Run command lines as a user types them (a console script or ``python SCRIPT``), in-process, in one folder:
shared by ``test_toy_defaults.py`` (every command with ``--model_card toy`` alone) and ``test_readme_toy.py`` (the
README's "Try it on the toy" block)."""
from __future__ import annotations

import shlex
from pathlib import Path

from bad_inputs_run import run_case

# In an order where each command finds what the ones before wrote in the same folder (embeddings, then votes, then
# the HRV files). The applications/ scripts stand for the console scripts they front (same main).
TOY_COMMANDS = [
    "hrv-heads --model_card toy",
    "hrv-visualize --model_card toy",
    "hrv-text-embeddings --model_card toy",
    "hrv-relevance --model_card toy",
    "hrv-extract --model_card toy",
    "hrv-weakening --model_card toy",
    "python applications/reduce_misinterpretation.py --model_card toy",
    "python applications/attend_and_excite_hrv.py --model_card toy",
    "python applications/p2p_hrv.py --model_card toy",
    "python applications/p2p_benchmark.py --model_card toy",
    "python applications/multi_object_benchmark.py --model_card toy",
]


def files_under(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if p.is_file()}


def run_line(line: str, folder: Path) -> tuple[int, str, set[Path]]:
    """Run one command line in ``folder``; (exit status, stderr, files it added)."""
    before = files_under(folder)
    code, err = run_case({"command": shlex.split(line)}, {}, folder)
    return code, err, files_under(folder) - before
