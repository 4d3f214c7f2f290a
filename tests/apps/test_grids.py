"""Labelled figures (hrv_diffusion/apps/grids.py): cells enlarged and in place, labels drawn outside them, a figure
rewritten only when its pixels change."""
from __future__ import annotations

import numpy as np
from figures import locate, only, read

from hrv_diffusion.apps.adjust import Adjustment
from hrv_diffusion.apps.adjust_runs import method_labels
from hrv_diffusion.apps.grids import BACKGROUND, cell, labelled_grid, scale_for, upscale, write_figure


def images(rows, columns, size=(32, 24), seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(columns)] for _ in range(rows)]


def test_scale_and_upscale():
    assert scale_for(32, 32) == 6 and scale_for(512, 512) == 1 and scale_for(48, 32) == 4
    image = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    big = upscale(image, 3)
    assert big.shape == (6, 6, 3) and np.array_equal(big[::3, ::3], image) and np.all(big[:3, :3] == image[0, 0])


def test_cells_are_enlarged_in_rows_and_columns_with_labels_outside():
    rows = images(2, 3)
    grid = labelled_grid(rows, row_labels=["standard", "adjusted"], column_labels=["seed 1", "seed 2", "seed 3"],
                         title="a title")
    places = [[only(grid.picture, image) for image in row] for row in rows]  # each image once, enlarged x6
    assert {y for y, _ in places[0]} == {places[0][0][0]} and places[0][0][0] < places[1][0][0]
    assert [x for _, x in places[0]] == [x for _, x in places[1]] and places[0][0][1] < places[0][1][1]
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            assert np.array_equal(cell(grid, r, c, image.shape), image)
    top, left = min(places[0])
    assert (grid.picture[:top] != BACKGROUND).any(axis=-1).any()  # the title and column labels are drawn above
    assert (grid.picture[:, :left] != BACKGROUND).any(axis=-1).any()  # the row labels on the left
    bare = labelled_grid(rows)
    assert bare.picture.shape[0] < grid.picture.shape[0] and bare.picture.shape[1] < grid.picture.shape[1]


def test_an_empty_cell_and_captions():
    rows = images(2, 2)
    rows[1][1] = None
    grid = labelled_grid(rows, cell_labels=[["seed 1", "seed 2"], ["seed 3", None]])
    assert not locate(grid.picture, images(2, 2)[1][1])
    assert all(len(locate(grid.picture, image)) == 1 for image in (rows[0][0], rows[0][1], rows[1][0]))


def test_a_figure_is_rewritten_only_when_its_pixels_change(tmp_path):
    path = tmp_path / "figure.png"
    picture = labelled_grid(images(1, 2), column_labels=["a", "b"]).picture
    assert write_figure(picture, path) and np.array_equal(read(path), picture)
    stamp = path.stat().st_mtime_ns, path.stat().st_ino
    assert not write_figure(picture, path) and (path.stat().st_mtime_ns, path.stat().st_ino) == stamp
    assert write_figure(picture, path, force=True)
    other = labelled_grid(images(1, 2, seed=1), column_labels=["a", "b"]).picture
    assert write_figure(other, path) and np.array_equal(read(path), other)


def test_sd_hrv_row_labels_name_the_concepts():
    assert method_labels(Adjustment.sd_hrv("red", "Color", "Background"), sdxl=False) == [
        "standard SD", "SD-HRV\ndesired: Color\nundesired: Background"]
    assert method_labels(Adjustment.sd_hrv("red", "Color", None), sdxl=True) == ["standard SDXL",
                                                                               "SDXL-HRV\ndesired: Color"]
    weights = Adjustment("red", {"Color": 1.5, "Shape": -0.5})
    assert method_labels(weights, sdxl=False)[1] == "SD-HRV\nweights: Color 1.5, Shape -0.5"
