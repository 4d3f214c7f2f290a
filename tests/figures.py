"""Test helper: where an application's image sits in one of its labelled figures (hrv_diffusion/apps/grids.py)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from hrv_diffusion.apps.grids import MIN_CELL, scale_for


def read(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def locate(picture: np.ndarray, image: np.ndarray, min_cell: int = MIN_CELL) -> list[tuple[int, int]]:
    """Every (top, left) where ``picture`` holds ``image`` enlarged nearest-neighbour by the figures' factor,
    searched pixel by pixel (independent of the figure's layout code)."""
    factor = scale_for(image.shape[0], image.shape[1], min_cell)
    big = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
    h, w = big.shape[:2]
    ys, xs = np.nonzero(np.all(picture[: picture.shape[0] - h + 1, : picture.shape[1] - w + 1] == big[0, 0], axis=-1))
    return [(int(y), int(x)) for y, x in zip(ys, xs) if np.array_equal(picture[y : y + h, x : x + w], big)]


def only(picture: np.ndarray, image: np.ndarray) -> tuple[int, int]:
    """The one place of ``image`` in ``picture`` (fails when it is not there or there twice)."""
    found = locate(picture, image)
    assert len(found) == 1, f"the image is in the figure {len(found)} times"
    return found[0]
