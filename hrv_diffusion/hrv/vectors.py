"""HRVs in memory, and where every application gets them: ``--hrv paper`` or the path of an HRV built here.

``load_hrv(source, model_version, concept_names)`` returns an ``HRV``: the (C, H) matrix, its concept names and
its head labels. ``source`` is

- ``paper``: the paper's published HRVs for SD v1.4 (``sd_v1_4``) and SDXL (``sd_xl_base_1_0``), read from the
  cache that ``hrv-published`` fills (``paper.paper_dir()``; override with ``HRV_DIFFUSION_CACHE``); for the built-in
  toy model (``toy``), the HRVs shipped in the package;
- a ``category_vectors_*.npy`` file (its ``head_index_*.npy`` beside it is used when present);
- a folder holding exactly one such file (a ``final_result/``).

Rows are concepts in the order of ``concept_names`` (the concept set the HRV was built from); columns are CA
heads in the published order. ``HRV.for_layout(layout)`` checks the heads against a UNet and reorders the columns
to its layout; ``HRV.row(concept)`` refuses an unknown concept with the list of known ones.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrv_diffusion.core.heads import HeadLayout
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.paper import TOY_VERSIONS, check_paper_file, missing_message, paper_files


@dataclass(frozen=True)
class HRV:
    values: np.ndarray  # (C, H) float32; each row sums to H
    concepts: tuple[str, ...]
    labels: tuple[str, ...]  # head label of each column
    source: str
    name: str = ""  # how messages name it: "the paper's HRVs (sd_v1_4)", "the toy's shipped HRVs", a file name

    @property
    def title(self) -> str:
        return self.name or self.source

    @property
    def num_heads(self) -> int:
        return self.values.shape[1]

    def row(self, concept: str) -> np.ndarray:
        """(H,) values of one concept."""
        if concept not in self.concepts:
            raise UserError(f"unknown concept {concept!r}; {self.title} have: {', '.join(self.concepts)}")
        return self.values[self.concepts.index(concept)]

    def rows(self, concepts) -> np.ndarray:
        """(len(concepts), H)."""
        return np.stack([self.row(c) for c in concepts])

    def for_layout(self, layout: HeadLayout) -> "HRV":
        """The same HRV with its columns in ``layout``'s order; an HRV of another model is refused."""
        if self.num_heads != layout.num_heads:
            raise UserError(f"{self.title}: {self.num_heads} heads per concept but this model has "
                            f"{layout.num_heads} CA heads: use the HRV of the same model")
        if list(self.labels) == layout.labels:
            return self
        try:
            order = [self.labels.index(label) for label in layout.labels]
        except ValueError:
            raise UserError(f"{self.title}: their head labels do not match this model's CA heads: use the HRV of "
                            "the same model") from None
        return HRV(self.values[:, order], self.concepts, tuple(layout.labels), self.source, self.name)

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.values, dtype=np.float32).tobytes()).hexdigest()[:16]


def _category_vectors_in(folder: Path) -> Path:
    found = [p for p in folder.glob("category_vectors_*.npy") if not p.stem.endswith("per_timesteps")]
    if len(found) != 1:
        raise UserError(f"{folder} holds {len(found)} category_vectors_*.npy files: pass the file itself with --hrv")
    return found[0]


def hrv_title(source, model_version: str) -> str:
    """How messages name an HRV: the toy's shipped ones are not the paper's."""
    if str(source) != "paper":
        return f"the HRVs of {Path(source).name}"
    return "the toy's shipped HRVs" if model_version in TOY_VERSIONS else f"the paper's HRVs ({model_version})"


def check_heads(path: Path, count: int, model_version: str, expected: int | None) -> None:
    """Refuse an HRV whose head count is not the loaded model's, naming the model it is for (by its count)."""
    from hrv_diffusion.core.head_counts import describe_heads

    if expected is not None and count != expected:
        raise UserError(f"{path.name} is {describe_heads(count)}, but the model (--model_card) is {model_version} "
                        f"with {expected} CA heads: pass an HRV built for {model_version} (--hrv paper: its own, where "
                        "there is one), or the --model_card the HRV was built for")


def load_hrv(source: str | os.PathLike, model_version: str, concept_names, layout: HeadLayout | None = None,
             head_index: str | os.PathLike | None = None, num_heads: int | None = None) -> HRV:
    """Load an HRV (see the module docstring); with ``layout``, checked against and ordered for that UNet.
    ``head_index``: the head labels of a file ``source`` (default: the ``head_index_*.npy`` beside it).
    ``num_heads``: the model's CA head count when known before it loads (an HRV of another model is named)."""
    from hrv_diffusion.hrv.files import read_hrv

    concept_names = tuple(concept_names)
    if str(source) == "paper":
        vectors_path, index_path = paper_files(model_version)
        if not vectors_path.is_file() or not index_path.is_file():
            raise UserError(missing_message(model_version, vectors_path.parent))
        if model_version not in TOY_VERSIONS:
            check_paper_file(vectors_path)
            check_paper_file(index_path)
    else:
        vectors_path = Path(source)
        if vectors_path.is_dir():
            vectors_path = _category_vectors_in(vectors_path)
        if not vectors_path.is_file():
            raise UserError(f"no HRV file {vectors_path}: pass --hrv paper or the category_vectors_*.npy written by "
                            "extract_head_relevance_vectors.py")
        index_path = vectors_path.with_name(vectors_path.name.replace("category_vectors_", "head_index_", 1))
        if head_index is not None:
            index_path = Path(head_index)
            if not index_path.is_file():
                raise UserError(f"no head index file {index_path}: pass the head_index_*.npy written with the HRV")
    if index_path.is_file() and index_path != vectors_path:
        values, labels = read_hrv(vectors_path, index_path)
    else:
        values = np.load(vectors_path, allow_pickle=False)
        labels = list(layout.labels) if layout is not None else [f"head {i}" for i in range(values.shape[-1])]
    if values.ndim != 2:
        raise UserError(f"{vectors_path.name} has shape {values.shape}; an HRV is (concepts, heads)")
    check_heads(vectors_path, values.shape[1], model_version, layout.num_heads if layout is not None else num_heads)
    if values.shape[0] != len(concept_names):
        raise UserError(f"{vectors_path.name} has {values.shape[0]} concepts but the concept set has "
                        f"{len(concept_names)}: pass the --description the HRV was built from")
    hrv = HRV(values.astype(np.float32), concept_names, tuple(labels), str(source), hrv_title(source, model_version))
    return hrv.for_layout(layout) if layout is not None else hrv
