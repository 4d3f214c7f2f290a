"""Atomic file writes: the one place where results reach the disk.

Every writer goes through ``atomic_output``: the bytes go to a temporary file in the target folder, which then
replaces the target in one ``os.replace``. A reader (or a resumed run) never sees a half-written PNG or JSON, and a
failed or interrupted write leaves the previous file, if any, untouched.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder as ``path``; on success it replaces ``path`` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def write_png(pixels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (H, W, 3) uint8 pixels, or an (H, W) bool mask as black and white, as a PNG."""
    from PIL import Image

    pixels = np.asarray(pixels)
    image = Image.fromarray(pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels)
    with atomic_output(path) as temp:
        image.save(temp, format="PNG")
    return Path(path)


def read_rgb(path: str | os.PathLike, rerun: str):
    """The image at ``path`` as an RGB PIL image, fully read. A truncated or unreadable file (an interrupted copy, a
    full disk) is one UserError naming it: delete it and rerun ``rerun``, which regenerates missing images."""
    from PIL import Image

    from hrv_diffusion.errors import UserError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as error:  # PIL: UnidentifiedImageError, "image file is truncated"
        raise UserError(f"cannot read the image {path} ({' '.join(str(error).split())}): delete it and rerun "
                        f"{rerun}, which regenerates missing images") from None


def _json_value(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)  # paths, enums


def write_json(data, path: str | os.PathLike, sort_keys: bool = True) -> Path:
    """Write ``data`` as indented JSON with a final newline."""
    text = json.dumps(data, indent=1, sort_keys=sort_keys, default=_json_value) + "\n"
    return write_text(text, path)


def write_text(text: str, path: str | os.PathLike) -> Path:
    with atomic_output(path) as temp:
        temp.write_text(text, encoding="utf-8")
    return Path(path)


def read_json(path: str | os.PathLike):
    """The JSON in ``path``, or None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
