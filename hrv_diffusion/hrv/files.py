"""The published HRV outputs (``final_result/*``), computed from merged vote counts.

Input: ``counts[t, g, c]`` (T, H, C), the number of prompts for which head g voted for concept c at evaluation t,
with heads in the published order (``heads.py``). Every (t, g) row sums to P, the number of (epoch, prompt) pairs.

Outputs, with the published names, shapes and dtypes (``docs/hrv-files.md`` describes each file):

- ``rank`` (C, H) float64: each head's share of votes per concept, summed over evaluations (the ranking list);
- the HRV (C, H) float32: each concept row of ``rank`` L1-normalized over heads, times H (sums to H);
- the per-timestep HRV (T, C, H) float32;
- head-role CSVs (MoRHF ``top`` / LeRHF ``bottom`` k heads per concept), the per-head ``output_ba`` CSV and a tidy CSV.

Ties: we sort stably. MoRHF = value descending, LeRHF = value ascending, ties by ascending head index in both.
The shipped head-role files came from numpy's default (unstable) argsort, so tied heads may be in another order
there; read those files with ``read_head_roles`` to use the paper's exact heads.
"""
from __future__ import annotations

import ast
import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrv_diffusion.core.heads import PLACES, parse_label
from hrv_diffusion.io import atomic_output

ORDERS = ("top", "bottom")  # MoRHF, LeRHF
SDXL_NUM_HEADS = 1300


# ----------------------------------------------------------------------------------------------- computing

def _check_counts(counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise ValueError(f"counts must be (T, H, C), got shape {counts.shape}")
    return counts


def relevance(counts) -> np.ndarray:
    """(T, H, C) counts -> ``rank`` (C, H) float64: per head, its votes per concept over all evaluations divided by
    its total (P·T), so every column sums to 1.

    The division is done in float32, as the reference did (torch), then widened to float64: the same counts then
    give the published ranking list bit for bit. (Relative rounding error <= 6e-8; the order of heads is unchanged.)
    """
    counts = _check_counts(counts)
    per_head = counts.sum(axis=0, dtype=np.int64 if counts.dtype.kind in "iu" else np.float64)  # (H, C)
    totals = per_head.sum(axis=1, keepdims=True)  # (H, 1) = P * T
    if (totals == 0).any():
        raise ValueError(f"head {int(np.argmax(totals[:, 0] == 0))} has no votes: the counts are empty")
    share = per_head.astype(np.float32) / totals.astype(np.float32)  # (H, C)
    return share.T.astype(np.float64)  # (C, H)


def _l1_times_h(values: np.ndarray) -> np.ndarray:
    """L1-normalize the last axis and multiply by its length; all-zero rows stay zero (no NaN)."""
    num_heads = values.shape[-1]
    sums = np.abs(values).sum(axis=-1, keepdims=True)
    safe = np.where(sums > 0, sums, 1.0)
    return np.where(sums > 0, values / safe * num_heads, 0.0)


def hrv_from_rank(rank) -> np.ndarray:
    """``rank`` (C, H) -> HRV (C, H) float32: each concept row L1-normalized over heads, times H (sums to H).

    A concept that no head ever voted for has an all-zero row; its HRV is written as zeros, not NaN.
    """
    rank = np.asarray(rank, dtype=np.float64)
    if rank.ndim != 2:
        raise ValueError(f"rank must be (C, H), got shape {rank.shape}")
    return _l1_times_h(rank).astype(np.float32)  # (C, H)


def per_timestep_hrv(counts, num_prompts: int) -> np.ndarray:
    """(T, H, C) counts -> (T, C, H) float32: per evaluation t, ``counts[t] / P``, then per (t, concept) an L1
    normalization over heads, times H. All-zero (t, concept) rows are written as zeros."""
    counts = _check_counts(counts)
    if num_prompts <= 0:
        raise ValueError(f"num_prompts must be positive, got {num_prompts}")
    sums = counts.sum(axis=-1)  # (T, H)
    if not np.allclose(sums, num_prompts):
        raise ValueError(f"the counts' (t, head) rows sum to {sums.min()}..{sums.max()}, not num_prompts = {num_prompts}")
    shares = counts.astype(np.float64) / num_prompts  # (T, H, C)
    return _l1_times_h(shares.transpose(0, 2, 1)).astype(np.float32)  # (T, C, H)


def head_order(values, order: str) -> np.ndarray:
    """Head indices of one concept row, sorted with a stable tie rule.

    ``top`` (MoRHF): value descending; ``bottom`` (LeRHF): value ascending; ties by ascending head index in both.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"expected one row of values, got shape {values.shape}")
    if np.isnan(values).any():
        raise ValueError("cannot rank heads: the values contain NaN")
    if order == "top":
        return np.argsort(-values, kind="stable")
    if order == "bottom":
        return np.argsort(values, kind="stable")
    raise ValueError(f"order must be 'top' (MoRHF) or 'bottom' (LeRHF), not {order!r}")


def head_roles(rank, labels, k: int, order: str) -> list[list[str]]:
    """For each concept row of ``rank`` (C, H), the labels of its first ``k`` heads in ``order`` (see ``head_order``)."""
    rank = np.asarray(rank)
    if rank.ndim != 2 or rank.shape[1] != len(labels):
        raise ValueError(f"rank must be (C, H) with H = {len(labels)} labels, got shape {rank.shape}")
    if not 1 <= k <= len(labels):
        raise ValueError(f"k must be in 1..{len(labels)}, got {k}")
    return [[labels[g] for g in head_order(row, order)[:k]] for row in rank]


def default_k_list(num_heads: int) -> list[int]:
    """The published k values: SDXL (1300 heads) 11, 111, ..., 1211, 1300; otherwise 1, 11, 21, ..., H."""
    if num_heads == SDXL_NUM_HEADS:
        return list(range(11, num_heads + 1, 100)) + [num_heads]
    return list(dict.fromkeys(list(range(1, num_heads + 1, 10)) + [num_heads]))


# ----------------------------------------------------------------------------------------------- file names

@dataclass(frozen=True)
class OutputNames:
    """The published file names of one run. E = the last epoch; neg = "True" / "False"."""

    last_epoch: int
    negative_prompt: bool
    prompt: str
    description: str
    model_version: str

    @property
    def stem(self) -> str:
        """``epoch_1_to_{E}_neg_prompt_{neg}_{prompt}_{description}_{mv}``"""
        return f"epoch_1_to_{self.last_epoch}_{self._tail}"

    @property
    def _tail(self) -> str:
        return f"neg_prompt_{bool(self.negative_prompt)}_{self.prompt}_{self.description}_{self.model_version}"

    def category_vectors(self, per_timesteps: bool = False) -> str:
        return f"category_vectors_{self.stem}{'_per_timesteps' if per_timesteps else ''}.npy"

    def head_index(self, per_timesteps: bool = False) -> str:
        return f"head_index_{self.stem}{'_per_timesteps' if per_timesteps else ''}.npy"

    def output_ba(self) -> str:
        return f"output_ba_{self.stem}.csv"

    def head_roles(self, order: str, k: int) -> str:
        """``head_roles_ba_epoch_1_to_{E}_{top|bottom}_{k}_neg_prompt_...csv``"""
        return f"head_roles_ba_epoch_1_to_{self.last_epoch}_{order}_{k}_{self._tail}.csv"

    def ranking_list(self) -> str:
        """``340_final_ranking_list.npy`` for SD v1.4, ``340_final_ranking_list_{mv}.npy`` otherwise."""
        prefix = self.description.removesuffix("_text_descriptions")
        suffix = "" if self.model_version == "sd_v1_4" else f"_{self.model_version}"
        return f"{prefix}_ranking_list{suffix}.npy"

    def tidy(self) -> str:
        return f"hrv_{self.prompt}_{self.description}_{self.model_version}.csv"


# ----------------------------------------------------------------------------------------------- writing

def format_label_list(labels) -> str:
    """numpy's printed form of a label array, on one line: ``['down, layer: 5, head: 3' 'up, layer: 8, head: 3']``."""
    return "[" + " ".join(repr(str(label)) for label in labels) + "]"


def _save_npy(path: Path, array: np.ndarray) -> Path:
    with atomic_output(path) as temp:
        with open(temp, "wb") as f:  # a file object: np.save would append ".npy" to the temp name
            np.save(f, array)
    return path


def _write_csv(path: Path, header: list[str], rows, lineterminator: str = "\r\n") -> Path:
    with atomic_output(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator=lineterminator)
            writer.writerow(header)
            writer.writerows(rows)
    return path


def write_head_roles(path, concept_names, roles: list[list[str]]) -> Path:
    """``Category,Head position`` CSV (CRLF), one row per concept; the heads as numpy's one-line bracketed form."""
    if len(concept_names) != len(roles):
        raise ValueError(f"{len(concept_names)} concept names but {len(roles)} head lists")
    rows = ([name, format_label_list(heads)] for name, heads in zip(concept_names, roles))
    return _write_csv(Path(path), ["Category", "Head position"], rows)


def _canonical_order(labels) -> list[int]:
    """Head indices sorted by place (down, mid, up), layer, head."""
    keys = []
    for label in labels:
        place, layer, head = parse_label(label)
        keys.append((PLACES.index(place), layer, head))
    return sorted(range(len(labels)), key=keys.__getitem__)


def write_output_ba(path, counts, labels, concept_names) -> Path:
    """Per (head, evaluation) the concept names by vote count, descending; ties keep the concepts' file order.

    Rows: place (down, mid, up) -> layer -> head -> evaluation t. First columns ``down_cross``, layer, head, t.
    """
    counts = _check_counts(counts)  # (T, H, C)
    num_steps, _, num_concepts = counts.shape
    by_votes = np.argsort(-counts, axis=-1, kind="stable")  # (T, H, C)
    names = np.asarray(concept_names, dtype=object)

    def rows():
        for g in _canonical_order(labels):
            place, layer, head = parse_label(labels[g])
            for t in range(num_steps):
                yield [f"{place}_cross", layer, head, t, *names[by_votes[t, g]]]

    header = ["[Name]", "[Layer]", "[Head]", "[Timestamp]"] + [f"Top {i + 1}" for i in range(num_concepts)]
    return _write_csv(Path(path), header, rows())


def write_tidy_csv(path, hrv, labels, concept_names, extra_columns: dict | None = None) -> Path:
    """One row per (concept, head): concept, head, place, layer, head_in_layer, head_index, value (the HRV), then
    ``extra_columns`` (name -> one value for every row, e.g. the coverage of a partial run)."""
    import pandas as pd

    parsed = [parse_label(label) for label in labels]
    num_concepts, num_heads = hrv.shape
    frame = pd.DataFrame({
        "concept": np.repeat(np.asarray(concept_names, dtype=object), num_heads),
        "head": np.tile(np.asarray(labels, dtype=object), num_concepts),
        "place": np.tile([p for p, _, _ in parsed], num_concepts),
        "layer": np.tile([l for _, l, _ in parsed], num_concepts),
        "head_in_layer": np.tile([h for _, _, h in parsed], num_concepts),
        "head_index": np.tile(np.arange(num_heads), num_concepts),
        "value": hrv.reshape(-1),
    })
    for name, value in (extra_columns or {}).items():
        frame[name] = value
    with atomic_output(path) as temp:
        frame.to_csv(temp, index=False)
    return Path(path)


def write_published(out_dir, merged_counts, num_prompts: int, labels, concept_names, *, epochs, negative_prompt: bool,
                    prompt: str, description: str, model_version: str, k_list=None,
                    coverage: dict | None = None) -> list[Path]:
    """Write every published output of one merged run into ``out_dir``; returns the paths written.

    ``coverage`` (a partial run, see ``cli/extract.py``): also written as ``coverage_{stem}.json``, and the tidy
    CSV gets the columns ``prompts_counted``, ``prompts_expected`` and ``complete``.
    """
    counts = _check_counts(merged_counts)  # (T, H, C)
    num_steps, num_heads, num_concepts = counts.shape
    labels, concept_names = [str(l) for l in labels], [str(c) for c in concept_names]
    if len(labels) != num_heads:
        raise ValueError(f"{len(labels)} head labels but the counts have H = {num_heads} heads")
    if len(concept_names) != num_concepts:
        raise ValueError(f"{len(concept_names)} concept names but the counts have C = {num_concepts} concepts")
    for label in labels:
        parse_label(label)
    out = Path(out_dir)
    last = max(epochs) if np.iterable(epochs) else int(epochs)
    names = OutputNames(int(last), bool(negative_prompt), prompt, description, model_version)

    rank = relevance(counts)  # (C, H) float64
    hrv = hrv_from_rank(rank)  # (C, H) float32
    per_step = per_timestep_hrv(counts, num_prompts)  # (T, C, H) float32
    index = np.array(labels)  # (H,) <U{longest label}

    paths = [
        _save_npy(out / names.category_vectors(), hrv),
        _save_npy(out / names.head_index(), index),
        _save_npy(out / names.category_vectors(per_timesteps=True), per_step),
        _save_npy(out / names.head_index(per_timesteps=True), np.tile(index, num_steps)),  # (T*H,): published quirk
        write_output_ba(out / names.output_ba(), counts, labels, concept_names),
    ]
    for k in (k_list if k_list is not None else default_k_list(num_heads)):
        for order in ORDERS:
            roles = head_roles(rank, labels, int(k), order)
            paths.append(write_head_roles(out / names.head_roles(order, int(k)), concept_names, roles))
    paths.append(_save_npy(out / names.ranking_list(), rank))
    extra = None
    if coverage is not None:
        import json

        path = out / f"coverage_{names.stem}.json"
        with atomic_output(path) as temp:
            temp.write_text(json.dumps(coverage, indent=1, sort_keys=True), encoding="utf-8")
        paths.append(path)
        extra = {"prompts_counted": coverage["prompts_found"], "prompts_expected": coverage["prompts_expected"],
                 "complete": bool(coverage["complete"])}
    paths.append(write_tidy_csv(out / names.tidy(), hrv, labels, concept_names, extra))
    return paths


# ----------------------------------------------------------------------------------------------- reading

_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)


def parse_label_list(text: str) -> list[str]:
    """The labels of a bracketed list as numpy prints it (space- or comma-separated, possibly over several lines)."""
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise ValueError(f"not a bracketed head list: {text[:60]!r}")
    items = [ast.literal_eval(token) for token in _QUOTED.findall(body)]
    leftover = _QUOTED.sub("", body[1:-1]).replace(",", " ").split()
    if leftover:
        raise ValueError(f"unexpected text {leftover[0]!r} in head list {text[:60]!r}")
    for label in items:
        parse_label(label)
    return items


def read_head_roles(path) -> dict[str, list[str]]:
    """A head-role CSV (ours or a shipped one) -> {concept: [head label, ...]} in the file's order."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows or rows[0][:2] != ["Category", "Head position"]:
        raise ValueError(f"{path} is not a head-role CSV (expected the header 'Category,Head position')")
    roles = {}
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise ValueError(f"{path}, row {number}: expected 2 fields, got {len(row)}")
        try:
            roles[row[0]] = parse_label_list(row[1])
        except ValueError as error:
            raise ValueError(f"{path}, row {number} ({row[0]}): {error}") from None
    return roles


def read_hrv(category_vectors_path, head_index_path) -> tuple[np.ndarray, list[str]]:
    """Load an HRV file and its head index: ((C, H) or (T, C, H) float32 array, H labels).

    A ``*_per_timesteps`` head index (the H labels repeated T times) is folded back to its H labels.
    """
    vectors = np.load(category_vectors_path, allow_pickle=False)
    index = np.load(head_index_path, allow_pickle=False)
    if vectors.ndim not in (2, 3):
        raise ValueError(f"{category_vectors_path}: expected (C, H) or (T, C, H), got shape {vectors.shape}")
    if index.ndim != 1 or index.dtype.kind != "U":
        raise ValueError(f"{head_index_path}: expected a 1-D array of head labels, got {index.dtype} {index.shape}")
    num_heads = vectors.shape[-1]
    labels = [str(label) for label in index]
    if len(labels) != num_heads and len(labels) % num_heads == 0:
        repeats = len(labels) // num_heads
        first = labels[:num_heads]
        if labels == first * repeats:
            labels = first
    if len(labels) != num_heads:
        raise ValueError(
            f"{category_vectors_path} has {num_heads} heads but {head_index_path} has {len(labels)} labels: "
            f"pass the head_index file with the same name after 'category_vectors_' "
            f"(and '_per_timesteps' for both or neither)"
        )
    return vectors, labels
