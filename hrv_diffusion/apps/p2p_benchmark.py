"""The paper's image-editing benchmark: five attribute sets of one-word swaps, each with its concept.

| set | pairs | concept | examples |
|---|---|---|---|
| color | 50 | Color | a blue car -> a brown car |
| material | 50 | Material | a bowl made of wood -> a bowl made of glass |
| geometric_patterns | 50 | Geometric Patterns | a pillow with a polka-dot pattern -> ... leopard ... |
| image_style | 50 | Image Style | a watercolor style painting of a castle -> ... sepia ... |
| weather_conditions | 25 | Weather Conditions | a frog on a sunny day -> a frog on a snowy day |

The pairs ship in ``hrv_diffusion/data/benchmarks/image_editing_{set}.csv`` (header ``source_prompt,target_prompt``,
CRLF, the published files' format, so those can be read too). The target token of a pair is its one swapped word,
the new word of the target prompt; the concept is the set's.

A benchmark run is split the way HRV construction is: its unit is a source prompt (with all the pairs that start
from it, so a source image is made once per seed), ``--subset_running`` takes the part n of d of the units, and each
``torchrun`` rank a contiguous share of that; every process writes into the one output tree (``apps/p2p_runs.py``).
"""
from __future__ import annotations

import csv
from pathlib import Path

from hrv_diffusion.apps.p2p import EditSpec, swapped_words
from hrv_diffusion.apps.p2p_runs import Pair, unique_sources
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.construction import rank_indices, subset_indices

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
SETS = {
    "color": "Color",
    "material": "Material",
    "geometric_patterns": "Geometric Patterns",
    "image_style": "Image Style",
    "weather_conditions": "Weather Conditions",
}


def set_file(name: str, folder=None) -> Path:
    """``image_editing_{name}.csv`` in ``folder`` (default: the package's), or the published
    ``image_editing_{name}_experiment_prompts.csv`` there."""
    if name not in SETS:
        raise UserError(f"unknown editing set {name!r}; the sets are: {', '.join(SETS)}")
    folder = Path(folder) if folder is not None else BENCHMARK_DIR
    for candidate in (folder / f"image_editing_{name}.csv", folder / f"image_editing_{name}_experiment_prompts.csv"):
        if candidate.is_file():
            return candidate
    raise UserError(f"no prompt file for the set {name!r} in {folder} (image_editing_{name}.csv)")


def read_pairs(path) -> list[tuple[str, str]]:
    """(source, target) rows of a ``source_prompt,target_prompt`` CSV (CRLF or LF, a BOM tolerated)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows or [c.strip() for c in rows[0]] != ["source_prompt", "target_prompt"]:
        raise UserError(f"{path} is not an editing prompt file (expected the header 'source_prompt,target_prompt')")
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or not all(row):
            raise UserError(f"{path}, row {number}: expected 'source prompt,target prompt', got {','.join(row)!r}")
    return [(a, b) for a, b in rows[1:]]


def target_token(source: str, target: str) -> str:
    """The one word of ``target`` that differs from ``source`` (a benchmark pair swaps exactly one)."""
    changed = swapped_words(source, target) if len(source.split()) == len(target.split()) else []
    if len(changed) != 1:
        raise UserError(f"{source!r} -> {target!r} is not a one-word swap: pass its target token explicitly")
    return target.split()[changed[0]]


def benchmark_pairs(sets, specs_for, folder=None, max_pairs: int | None = None) -> list[Pair]:
    """Every pair of ``sets`` with the methods ``specs_for(concept)`` and its set in the manifests."""
    pairs = []
    for name in sets:
        concept = SETS[name] if name in SETS else None
        rows = read_pairs(set_file(name, folder))[:max_pairs]
        specs = tuple(specs_for(concept))
        pairs += [Pair(source, target, target_token(source, target), specs, (("set", name), ("concept", concept)))
                  for source, target in rows]
    return pairs


def pairs_of_sources(pairs: list[Pair], indices) -> list[Pair]:
    """The pairs whose source prompt is one of ``unique_sources(pairs)[i]`` for ``i`` in ``indices`` (a process's
    share: ``RunContext.my_indices``)."""
    units = unique_sources(pairs)
    mine = {units[i] for i in indices}
    return [p for p in pairs if p.source_prompt in mine]


def split_pairs(pairs: list[Pair], subset: tuple[int, int] | None = None, rank: int = 0,
                world_size: int = 1) -> list[Pair]:
    """The pairs of this process: its share of the source prompts (``subset`` = (numerator, denominator), as
    ``--subset_running``; then the rank's contiguous share)."""
    count = len(unique_sources(pairs))
    indices = subset_indices(count, *subset) if subset else list(range(count))
    return pairs_of_sources(pairs, rank_indices(indices, rank, world_size))


def methods_of(specs: list[EditSpec]) -> list[str]:
    return [s.name for s in specs]
