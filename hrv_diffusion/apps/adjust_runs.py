"""SD-HRV runs: the published folder layout of the standard and adjusted images, the settings they are made with,
the seeds still to make, and the side-by-side figure (rows and columns labelled, small images enlarged).

    {root}/prompt_{NN}_{prompt, spaces -> _}/manifest.json            the folder's ``AdjustSettings``
    {root}/prompt_{NN}_{prompt, spaces -> _}/standard_sd/{seed}.png   (SDXL: sdxl_prompt_.../standard_sdxl)
    {root}/prompt_{NN}_{prompt, spaces -> _}/sd-hrv/{seed}.png        (SDXL: .../sdxl-hrv)
    {root}/prompt_{NN}_{prompt, spaces -> _}/side_by_side.png         (top: standard, bottom: adjusted; labelled)

A seed is one plan item of two batch rows (its standard and its adjusted image, from the same starting noise);
``runs.run_batches`` packs the seeds into calls of at most ``--batch_size`` rows.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hrv_diffusion.apps.adjust import Adjustment, generate_adjusted
from hrv_diffusion.apps.grids import labelled_grid, read_rgb, write_figure
from hrv_diffusion.apps.runs import OutputTree

GRID = "side_by_side.png"
ROWS_PER_SEED = 2  # the standard and the adjusted image


@dataclass(frozen=True)
class AdjustSettings:
    """What the images of one SD-HRV folder are made with; ``manifest()`` is the folder's manifest.json."""

    prompt: str
    model_card: str
    model_version: str
    dtype: str
    num_inference_steps: int
    guidance_scale: float
    decode: str
    adjustment: Adjustment
    hrv: str
    hrv_fingerprint: str | None = None  # known once the HRV is ordered for the loaded UNet
    height: int | None = None
    width: int | None = None

    def manifest(self) -> dict:
        """The settings as stored; height and width only when given (folders of the model's size keep the
        manifest they had before these flags existed)."""
        data = asdict(self)
        data["adjustment"] = self.adjustment.to_dict()
        for key in ("height", "width"):
            if data[key] is None:
                del data[key]
        return data


@dataclass(frozen=True)
class AdjustFolders:
    """The prompt folder of a run and its standard / adjusted image folders (the published names)."""

    root: Path
    standard: Path
    adjusted: Path

    @classmethod
    def of(cls, tree: OutputTree, prompt: str, prompt_num: int, sdxl: bool) -> "AdjustFolders":
        prefix = "sdxl_" if sdxl else ""
        root = tree.folder(tree.name(f"{prefix}prompt_{prompt_num:02d}_{prompt.replace(' ', '_')}"))
        return cls(root, root / ("standard_sdxl" if sdxl else "standard_sd"), root / ("sdxl-hrv" if sdxl else "sd-hrv"))

    def images(self, seed: int) -> tuple[Path, Path]:
        """(standard, adjusted) PNG paths of ``seed``."""
        return self.standard / f"{seed}.png", self.adjusted / f"{seed}.png"

    @property
    def grid(self) -> Path:
        return self.root / GRID


def seeds_to_make(tree: OutputTree, folders: AdjustFolders, seeds) -> list[int]:
    """The seeds (duplicates dropped, order kept) of which an image is missing (every seed with --overwrite)."""
    return [s for s in dict.fromkeys(seeds) if any(tree.missing(p) for p in folders.images(s))]


def batch_maker(pipe, tree: OutputTree, folders: AdjustFolders, settings: AdjustSettings, hrv):
    """``make_batch(seeds)`` for ``runs.run_batches``: one call for the standard and adjusted rows of ``seeds``,
    returning the images that are missing (an image that is there already is not written again)."""

    def make_batch(seeds: list[int]) -> list[tuple[Path, np.ndarray]]:
        out = generate_adjusted(pipe, [settings.prompt] * len(seeds), seeds, settings.adjustment, hrv=hrv,
                                num_inference_steps=settings.num_inference_steps,
                                guidance_scale=settings.guidance_scale, decode=settings.decode,
                                height=settings.height, width=settings.width)
        files = []
        for seed, standard, adjusted in zip(seeds, out.standard, out.adjusted):  # (H, W, 3) uint8 each
            standard_path, adjusted_path = folders.images(seed)
            files += [(path, image) for path, image in ((standard_path, standard), (adjusted_path, adjusted))
                      if tree.missing(path)]
        return files

    return make_batch


def method_labels(adjustment: Adjustment, sdxl: bool) -> list[str]:
    """The row labels of the side-by-side figure: the standard model, then the adjusted one with its concepts (the
    desired and undesired ones of 2·d − u, else every weight)."""
    standard, adjusted = ("standard SDXL", "SDXL-HRV") if sdxl else ("standard SD", "SD-HRV")
    weights = dict(adjustment.weights)
    positive = [c for c, w in weights.items() if w == 2.0]
    negative = [c for c, w in weights.items() if w == -1.0]
    if len(positive) == 1 and len(positive) + len(negative) == len(weights) <= 2:
        named = f"desired: {positive[0]}" + (f"\nundesired: {negative[0]}" if negative else "")
    else:
        named = "weights: " + ", ".join(f"{c} {w:g}" for c, w in weights.items())
    return [standard, f"{adjusted}\n{named}"]


def side_by_side_figure(folders: AdjustFolders, seeds, settings: AdjustSettings) -> np.ndarray:
    """The labelled side-by-side picture of ``seeds``: top row standard, bottom row adjusted, a column per seed."""
    seeds = list(dict.fromkeys(seeds))
    rows = [[read_rgb(folders.images(s)[i]) for s in seeds] for i in (0, 1)]
    sdxl = folders.standard.name == "standard_sdxl"
    title = f"{settings.prompt!r}: the word {str(settings.adjustment.word)!r} adjusted"
    return labelled_grid(rows, row_labels=method_labels(settings.adjustment, sdxl),
                         column_labels=[f"seed {s}" for s in seeds], title=title).picture


def write_side_by_side(folders: AdjustFolders, seeds, settings: AdjustSettings) -> bool:
    """Write the side-by-side figure of ``seeds`` (top: standard, bottom: adjusted) unless the one there already
    has the same pixels; whether it was written."""
    return write_figure(side_by_side_figure(folders, seeds, settings), folders.grid)
