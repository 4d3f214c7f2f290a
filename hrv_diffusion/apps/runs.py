"""The output side of every application: folders claimed with their settings, resume, batches, atomic writes.

An application describes its run as a *plan* (the images still to make, and where each goes) and a *batch
function* (one ``generate`` call for a few plan items, returning the files to write). This module does the rest,
the same way for every application:

- ``OutputTree(root, overwrite)``: folder names made safe (``folder``), each folder *claimed* with the settings its
  images are made with (``claim``, also the folder's ``manifest.json``). A folder of images whose manifest disagrees, or
  that holds images without one, is refused with one line naming the first differing setting and ``--overwrite``
  (a folder without images takes the new manifest: a run that failed before its first image locks nothing).
  ``missing(path)`` says which files still have to be made, so a rerun continues where a run stopped.
  ``commit()`` writes the manifests once every claim has passed (a refused run writes nothing).
- ``pack(sizes, batch_size)``: the one batching rule: consecutive items in the fewest batches of at most
  ``batch_size`` rows, as even as the item sizes allow (an item larger than ``batch_size`` runs alone).
- ``run_batches(plan, make_batch, ...)``: calls ``make_batch`` per batch and writes what it returns (PNG for pixel
  arrays, JSON for dicts) on one pool of writer threads while the next batch generates. An interrupt (Ctrl-C,
  SIGTERM) waits for the pending writes, so every finished image is on disk, then propagates.

It knows no application: folder names and manifests are passed in.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from hrv_diffusion.apps.output_paths import child_dir, safe_folder_name
from hrv_diffusion.errors import UserError
from hrv_diffusion.io import read_json, write_json, write_png

MANIFEST = "manifest.json"
RESULT_SUFFIXES = (".png", ".json")  # what --overwrite removes from a folder made with other settings


def as_manifest(settings) -> dict:
    """A settings dataclass or dict as the JSON object it is stored as (tuples become lists)."""
    data = asdict(settings) if is_dataclass(settings) else dict(settings)
    return json.loads(json.dumps(data, default=str))


def _flat(data: dict, prefix: str = "") -> dict:
    """{"method": {"edit": "replace"}} -> {"method.edit": "replace"}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def first_difference(stored: dict, wanted: dict, ignore: Sequence[str] = ()) -> str | None:
    """The first key (sorted, nested keys dotted) whose value differs, ignoring the keys ``ignore``."""
    old, new = _flat(stored), _flat(wanted)
    for key in sorted(set(old) | set(new)):
        if key.split(".")[0] not in ignore and old.get(key) != new.get(key):
            return key
    return None


def _has_results(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix == ".png" for p in folder.rglob("*.png"))


class OutputTree:
    """The output folders of one run under ``root`` (see the module docstring).

    ``ignore``: manifest keys that are recorded but do not make a folder conflict (a model's local folder and its
    hub id give the same images; the package version). ``retry_hint`` completes the conflict message.
    """

    def __init__(self, root, *, overwrite: bool = False, ignore: Sequence[str] = (),
                 retry_hint: str = "use another --output_path"):
        self.root = Path(root)
        self.overwrite, self.ignore, self.retry_hint = overwrite, tuple(ignore), retry_hint
        self._claims: dict[Path, dict] = {}
        self._stale: list[Path] = []  # folders of other settings, emptied of results by commit() (--overwrite)

    @staticmethod
    def name(text: str) -> str:
        """A folder name for a prompt (``safe_folder_name``: the paper's prompts keep theirs)."""
        return safe_folder_name(text)

    def folder(self, *parts: str) -> Path:
        """``root / parts...``, checked to stay inside ``root`` (parts made from prompts go through ``name``)."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{self.root} is a file: pass a folder as the output path")
        return child_dir(self.root, Path(*parts))

    def claim(self, folder: Path, settings) -> None:
        """Check that ``folder`` may receive images made with ``settings`` (a dataclass or dict)."""
        folder = Path(folder)
        manifest = as_manifest(settings)
        if folder in self._claims:
            if self._claims[folder] != manifest:
                raise ValueError(f"{folder} was claimed twice with different settings in one run")
            return
        stored = self._stored(folder)
        conflict = self._conflict(folder, stored, manifest)
        if conflict and not self.overwrite:
            raise UserError(f"{conflict}: pass --overwrite to regenerate its images, or {self.retry_hint}")
        if conflict:
            self._stale.append(folder)
        self._claims[folder] = manifest

    def _stored(self, folder: Path) -> dict | None:
        try:
            return read_json(folder / MANIFEST)
        except (OSError, ValueError):
            return {"unreadable manifest": str(folder / MANIFEST)}

    def _conflict(self, folder: Path, stored: dict | None, manifest: dict) -> str | None:
        if stored is None:
            if _has_results(folder):
                return f"{folder} holds images without a {MANIFEST} (another tool or version made them)"
            return None
        key = first_difference(stored, manifest, self.ignore)
        if key is None or not _has_results(folder):  # no image made with the old settings: nothing to keep
            return None
        old, new = _flat(stored).get(key), _flat(manifest).get(key)
        return f"{folder} was made with {key}={old!r}, this run has {key}={new!r}"

    def missing(self, path: Path) -> bool:
        """Whether ``path`` still has to be made (always, with ``--overwrite``)."""
        return self.overwrite or not Path(path).is_file()

    def commit(self) -> None:
        """Empty the folders of other settings (``--overwrite``), then write every claimed folder's manifest."""
        for folder in self._stale:
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix in RESULT_SUFFIXES:
                    path.unlink()
        self._stale = []
        for folder, manifest in self._claims.items():
            write_json(manifest, folder / MANIFEST)


# ------------------------------------------------------------------------------------------------ batches

def pack(sizes: Sequence[int], batch_size: int) -> list[slice]:
    """Split consecutive items of ``sizes`` rows into the fewest batches of at most ``batch_size`` rows, with
    boundaries as near as the sizes allow to even shares (87 items of 1 row at 32: 29 29 29, not 32 32 23), so a
    compiled UNet sees few shapes. An item of more than ``batch_size`` rows is a batch of its own."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")
    n = len(sizes)
    if n == 0:
        return []
    ends = np.cumsum(sizes)  # rows up to and including each item
    total = int(ends[-1])
    count = -(-total // batch_size)
    while True:
        cuts = [0]
        for i in range(1, count):
            target = round(i * total / count)
            # the item boundary whose row count is nearest the target (earlier on ties), after the last cut
            cut = min(range(cuts[-1] + 1, n), key=lambda j: abs(int(ends[j - 1]) - target), default=n)
            cuts.append(cut)
        cuts.append(n)
        batches = [slice(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
        rows = [int(ends[b.stop - 1] - (ends[b.start - 1] if b.start else 0)) for b in batches]
        if all(r <= batch_size or b.stop - b.start == 1 for r, b in zip(rows, batches)):
            return batches
        count += 1


@dataclass
class RunReport:
    """What a run did: images generated (rows), files written, files that were there already."""

    generated: int = 0
    written: int = 0
    present: int = 0
    root: Path | None = None
    details: dict = field(default_factory=dict)

    def line(self) -> str:
        where = f" under {self.root}" if self.root is not None else ""
        return (f"{self.generated} images generated ({self.written} files written), {self.present} already "
                f"present{where}")


class FileWriter:
    """``with FileWriter() as w: w.write(path, pixels_or_dict)``: atomic writes on worker threads. On exit (also
    after an exception or an interrupt) it waits for every pending write; the first failed write is re-raised."""

    def __init__(self, workers: int = 8):
        self._pool = ThreadPoolExecutor(max_workers=workers)
        self._pending: list[Future] = []
        self.written = 0

    def write(self, path: Path, content) -> None:
        writer = write_json if isinstance(content, dict) else write_png
        self._pending.append(self._pool.submit(writer, content, path))
        self.written += 1

    def __enter__(self) -> "FileWriter":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self._pool.shutdown(wait=True)
        if kind is None:
            for future in self._pending:
                future.result()  # re-raise a failed write


def run_batches(plan: Sequence, make_batch: Callable[[list], Iterable[tuple[Path, object]]], *, batch_size: int,
                rows: Callable[[object], int] = lambda item: 1, progress=None,
                report: RunReport | None = None) -> RunReport:
    """Generate ``plan`` in ``pack``ed batches: ``make_batch(items)`` makes one batch and returns its files as
    (path, pixels | dict) pairs, written atomically while the next batch runs. ``progress`` (a tqdm bar) advances
    by the items of each batch. Returns ``report`` (new if None) with the rows generated and files written added."""
    report = report if report is not None else RunReport()
    sizes = [rows(item) for item in plan]
    with FileWriter() as writer:
        try:
            for part in pack(sizes, batch_size):
                for path, content in make_batch(list(plan[part])):
                    writer.write(Path(path), content)
                report.generated += sum(sizes[part])
                if progress is not None:
                    progress.update(part.stop - part.start)
        finally:
            report.written += writer.written
    return report


def relative(path: Path, root) -> str:
    return os.path.relpath(path, root)
