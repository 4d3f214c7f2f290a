"""Shards of head-relevance vote counts, and merging them after checking that they belong together.

One HRV process (a rank, a prompt subset) writes one *shard* per epoch: ``counts[t, g, c]`` = how many of its
prompts made head g (published order) vote for concept c at evaluation t, the indices of those prompts in the full
prompt list, and the run's settings as metadata. A shard is a ``.npz`` file with three arrays:

- ``counts``: (T, H, C) int64; every (t, g) row sums to the shard's number of prompts;
- ``prompt_indices``: (P,) int64, indices into the full prompt list;
- ``metadata``: a 0-d unicode array holding a JSON object: the run's settings (``construction.run_relevance``).

``merge_shards`` adds shards of one run (any number of ranks, subsets and epochs) and refuses anything that would
make the sum meaningless: different settings (``MATCH_KEYS``), different shapes, a prompt counted twice in one
epoch, or a shard whose rows do not add up.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrv_diffusion.errors import UserError
from hrv_diffusion.io import atomic_output

# Keys that must be equal for shards to be added. dtype, rank, world_size, subset, epoch, model_card (a local
# folder and a hub id can name the same model) and version may differ.
MATCH_KEYS = (
    "model_version", "description", "concept_fingerprint", "concept_names", "prompt", "prompt_fingerprint",
    "num_prompts_total", "num_inference_steps", "num_evaluations", "guidance_scale", "negative_prompt", "seed",
    "seeding", "head_labels",
)

_MISSING = "<missing>"


class ShardError(UserError):
    """Base class of everything that is wrong with a shard or a set of shards."""


class ShardFormatError(ShardError):
    """The file is not a shard (not an .npz with counts, prompt_indices and JSON metadata)."""


class NotAShardError(ShardFormatError):
    """A readable .npz that holds none of a shard's arrays: some other file, not a damaged shard."""


class CorruptShardError(ShardError):
    """A shard whose arrays contradict each other (e.g. a head's votes do not add up to its prompts)."""


class ShardMismatchError(ShardError):
    """Two shards come from different settings or have different shapes: adding them would be meaningless."""


class ShardOverlapError(ShardError):
    """The same prompt is counted in two shards of the same epoch (it would be counted twice)."""


@dataclass
class Shard:
    counts: np.ndarray  # (T, H, C) int64
    prompt_indices: np.ndarray  # (P,) int64, indices into the full prompt list
    metadata: dict
    path: Path | None = field(default=None, compare=False)  # set by load_shard; used in messages

    @property
    def num_prompts(self) -> int:
        return int(len(self.prompt_indices))

    @property
    def epoch(self) -> int:
        return int(self.metadata.get("epoch", 1))

    @property
    def name(self) -> str:
        """How messages refer to this shard: its file, else its rank and epoch."""
        if self.path is not None:
            return str(self.path)
        return f"<shard rank {self.metadata.get('rank', '?')} epoch {self.epoch}>"


@dataclass
class Merged:
    counts: np.ndarray  # (T, H, C) int64, summed over all shards and epochs
    metadata: dict  # the common metadata; "epochs" lists the epochs present
    num_prompts: int  # number of (epoch, prompt) pairs counted: the P to normalize by
    report: list[str]  # human-readable lines: what was merged, gaps, warnings


# ----------------------------------------------------------------------------------------------- writing files

def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON serializable")


def _as_counts(counts, where: str) -> np.ndarray:
    """(T, H, C) int64; integral floats (e.g. a float32 accumulator) are accepted and converted."""
    counts = np.asarray(counts)
    if counts.ndim != 3:
        raise CorruptShardError(f"{where}: counts must be (T, H, C), got shape {counts.shape}")
    if counts.dtype.kind == "f":
        if not np.all(np.isfinite(counts)) or not np.array_equal(counts, np.round(counts)):
            raise CorruptShardError(f"{where}: counts must be whole numbers of votes")
    elif counts.dtype.kind not in "iu":
        raise CorruptShardError(f"{where}: counts must be integers, got dtype {counts.dtype}")
    return counts.astype(np.int64)


def save_shard(path: str | os.PathLike, shard: Shard) -> Path:
    """Write ``shard`` to ``path`` (a .npz file), atomically. Returns the path."""
    path = Path(path)
    counts = _as_counts(shard.counts, str(path))
    indices = np.asarray(shard.prompt_indices, dtype=np.int64).reshape(-1)  # (P,)
    metadata = np.array(json.dumps(shard.metadata, default=_json_default, sort_keys=True))  # 0-d <U
    with atomic_output(path) as temp:
        with open(temp, "wb") as f:  # a file object: np.savez would append ".npz" to a bare temp name
            np.savez(f, counts=counts, prompt_indices=indices, metadata=metadata)
    return path


def load_shard(path: str | os.PathLike) -> Shard:
    """Read a shard written by ``save_shard``; ``ShardFormatError`` if the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no shard file {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = {"counts", "prompt_indices", "metadata"} - set(data.files)
            if missing:
                raise (NotAShardError if len(missing) == 3 else ShardFormatError)(
                    f"{path} is not an HRV shard: it lacks {', '.join(sorted(missing))} "
                    f"(it holds {', '.join(data.files) or 'nothing'})"
                )
            counts, indices, metadata = data["counts"], data["prompt_indices"], data["metadata"]
    except ShardFormatError:
        raise
    except Exception as error:  # not a zip / not npy / pickled objects
        raise ShardFormatError(f"{path} is not an HRV shard (.npz): {type(error).__name__}: {error}") from None
    try:
        meta = json.loads(str(metadata[()]))
    except (json.JSONDecodeError, IndexError, ValueError):
        raise ShardFormatError(f"{path} is not an HRV shard: its metadata is not a JSON string") from None
    if not isinstance(meta, dict):
        raise ShardFormatError(f"{path} is not an HRV shard: its metadata is not a JSON object")
    if indices.ndim != 1 or indices.dtype.kind not in "iu":
        raise ShardFormatError(f"{path}: prompt_indices must be a 1-D integer array, got {indices.dtype} {indices.shape}")
    return Shard(counts=_as_counts(counts, str(path)), prompt_indices=indices.astype(np.int64), metadata=meta, path=path)


def find_shards(folder: str | os.PathLike, pattern: str | None = None) -> list[Path]:
    """The ``*.npz`` files (or those matching ``pattern``) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist")
    return sorted(p for p in folder.glob(pattern or "*.npz") if p.is_file())


# ----------------------------------------------------------------------------------------------- merging

def check_shard(shard: Shard) -> None:
    """Raise ``CorruptShardError`` unless the shard is internally consistent."""
    name, counts, indices = shard.name, shard.counts, np.asarray(shard.prompt_indices)
    counts = _as_counts(counts, name)
    if indices.ndim != 1:
        raise CorruptShardError(f"{name}: prompt_indices must be 1-D, got shape {indices.shape}")
    if len(np.unique(indices)) != len(indices):
        raise CorruptShardError(f"{name}: a prompt index appears twice in the same shard")
    if (counts < 0).any():
        raise CorruptShardError(f"{name}: negative counts")
    row_sums = counts.sum(axis=-1)  # (T, H)
    bad = np.argwhere(row_sums != len(indices))
    if len(bad):
        t, g = bad[0]
        raise CorruptShardError(
            f"{name}: corrupt shard: the votes of head {g} at evaluation {t} add up to {row_sums[t, g]}, "
            f"not to its {len(indices)} prompts ({len(bad)} such (evaluation, head) rows)"
        )
    meta, (T, H, C) = shard.metadata, counts.shape
    for key, size, axis in (("num_evaluations", T, "T"), ("head_labels", H, "H"), ("concept_names", C, "C")):
        value = meta.get(key)
        expected = len(value) if isinstance(value, list) else value
        if expected is not None and expected != size:
            raise CorruptShardError(f"{name}: metadata {key} says {expected} but counts have {axis} = {size}")
    total = meta.get("num_prompts_total")
    if total is not None and len(indices) and (indices.min() < 0 or indices.max() >= total):
        raise CorruptShardError(f"{name}: prompt indices outside 0..{total - 1} (num_prompts_total = {total})")


def _short(value) -> str:
    text = json.dumps(value, default=_json_default) if value is not _MISSING else _MISSING
    return text if len(text) <= 120 else text[:117] + "..."


def _check_match(reference: Shard, other: Shard) -> None:
    for key in MATCH_KEYS:
        a, b = reference.metadata.get(key, _MISSING), other.metadata.get(key, _MISSING)
        if a != b:
            raise ShardMismatchError(
                f"shards disagree on {key}: {_short(a)} in {reference.name} but {_short(b)} in {other.name}; "
                f"only shards of the same run can be merged"
            )
    if reference.counts.shape != other.counts.shape:
        raise ShardMismatchError(
            f"shards have different count shapes (T, H, C): {reference.counts.shape} in {reference.name} "
            f"but {other.counts.shape} in {other.name}"
        )


def index_ranges(indices) -> list[tuple[int, int]]:
    """Sorted integers as inclusive runs: [0, 1, 2, 5] -> [(0, 2), (5, 5)]."""
    values = np.unique(np.asarray(indices, dtype=np.int64))
    if not len(values):
        return []
    breaks = np.nonzero(np.diff(values) != 1)[0]
    starts = np.concatenate([values[:1], values[breaks + 1]])
    ends = np.concatenate([values[breaks], values[-1:]])
    return [(int(s), int(e)) for s, e in zip(starts, ends)]


def _ranges_text(indices) -> str:
    runs = index_ranges(indices)
    text = ", ".join(f"{s}" if s == e else f"{s}-{e}" for s, e in runs[:10])
    return text + (f", ... ({len(runs)} ranges)" if len(runs) > 10 else "")


def merge_shards(shards: list[Shard]) -> Merged:
    """Add the counts of ``shards`` (ranks, subsets, epochs of one run) after checking they belong together.

    Raises ``CorruptShardError``, ``ShardMismatchError`` (a ``MATCH_KEYS`` value or the shape differs) or
    ``ShardOverlapError`` (a prompt in two shards of one epoch). Missing prompts are only reported.
    """
    if not shards:
        raise ShardError("no shards to merge")
    for shard in shards:
        check_shard(shard)
    reference = shards[0]
    for other in shards[1:]:
        _check_match(reference, other)

    report: list[str] = []
    by_epoch: dict[int, list[Shard]] = {}
    for shard in shards:
        by_epoch.setdefault(shard.epoch, []).append(shard)
    total = reference.metadata.get("num_prompts_total")
    for epoch in sorted(by_epoch):
        owner: dict[int, Shard] = {}
        for shard in by_epoch[epoch]:
            clash = next((i for i in shard.prompt_indices.tolist() if i in owner), None)
            if clash is not None:
                earlier = owner[clash]
                both = np.intersect1d(earlier.prompt_indices, shard.prompt_indices)
                raise ShardOverlapError(
                    f"prompts {_ranges_text(both)} of epoch {epoch} are in both {earlier.name} and {shard.name}; "
                    f"merging would count them twice (leave one of the two shards out)"
                )
            owner.update((i, shard) for i in shard.prompt_indices.tolist())
        counted = f"{len(owner)} of {total}" if total is not None else f"{len(owner)}"
        report.append(f"epoch {epoch}: {counted} prompts from {len(by_epoch[epoch])} shard(s)")
        if total is not None:
            missing = np.setdiff1d(np.arange(total), np.fromiter(owner, dtype=np.int64, count=len(owner)))
            for start, end in index_ranges(missing):
                span = f"prompt {start}" if start == end else f"prompts {start}-{end}"
                report.append(f"{span} missing in epoch {epoch}")

    for shard in shards:
        if shard.metadata.get("complete") is False:
            report.append(f"warning: {shard.name} is an unfinished checkpoint (complete: false); resume its run")
    dtypes = sorted({str(s.metadata.get("dtype", _MISSING)) for s in shards})
    if len(dtypes) > 1:
        report.append(f"warning: shards were computed in different dtypes ({', '.join(dtypes)}); merged anyway")
    absent = [key for key in MATCH_KEYS if key not in reference.metadata]
    if absent:
        report.append(f"note: the shards' metadata lacks {', '.join(absent)} (not checked)")

    counts = np.sum([s.counts for s in shards], axis=0, dtype=np.int64)  # (T, H, C)
    num_prompts = sum(s.num_prompts for s in shards)
    metadata = {k: v for k, v in reference.metadata.items() if k not in ("epoch", "rank", "subset", "world_size")}
    metadata.update(epochs=sorted(by_epoch), dtype=dtypes[0] if len(dtypes) == 1 else dtypes,
                    num_shards=len(shards), num_prompts=num_prompts)
    report.insert(0, f"merged {len(shards)} shard(s): epochs {sorted(by_epoch)}, {num_prompts} (epoch, prompt) "
                     f"pairs, counts (T, H, C) = {tuple(counts.shape)}")
    return Merged(counts=counts, metadata=metadata, num_prompts=num_prompts, report=report)
