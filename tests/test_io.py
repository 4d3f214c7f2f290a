"""Atomic writes: a failed write leaves the old file, and no temporary file stays behind."""
import json

import numpy as np
import pytest
from PIL import Image

from hrv_diffusion.io import atomic_output, read_json, write_json, write_png


def test_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.json"
    write_json({"a": 1}, path)
    with pytest.raises(RuntimeError):
        with atomic_output(path) as temp:
            temp.write_text("half")
            raise RuntimeError("disk full")
    assert read_json(path) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_png_roundtrip_and_masks(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_png(pixels, tmp_path / "sub" / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "sub" / "x.png")), pixels)
    mask = np.array([[True, False], [False, True]])
    write_png(mask, tmp_path / "m.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")), mask.astype(np.uint8) * 255)


def test_json_of_numpy_values_and_missing_file(tmp_path):
    write_json({"b": np.float32(0.5), "a": np.arange(2)}, tmp_path / "x.json")
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text) == {"a": [0, 1], "b": 0.5} and text.endswith("\n") and text.index('"a"') < text.index('"b"')
    assert read_json(tmp_path / "none.json") is None
