"""Weakening plots: the MoRHF/LeRHF curve files, image grids, and the draw_plots CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hrv_diffusion.cli.weakening_plots import main as plots_main, plot_name
from hrv_diffusion.apps.weakening_experiments import experiment
from hrv_diffusion.apps.weakening_scores import write_scores_csv
from hrv_diffusion.apps.weakening_plots import XLABEL, image_grid, plot_weakening_curves, y_limits

REPO = Path(__file__).resolve().parents[2]
K_LIST = [0, 1, 11, 21, 128]


def summary(k_list=K_LIST) -> dict[str, float]:
    values = {f"top_{k}": 0.24 - 0.001 * k for k in k_list}
    values.update({f"bottom_{k}": 0.24 - 0.0008 * k for k in k_list})
    return values


def make_images(root: Path, prompts, k_list, seed=10, number=5, size=24):
    rng = np.random.default_rng(0)
    for prompt in prompts:
        for order in ("top", "bottom"):
            for k in k_list:
                path = root / f"exp_{number}" / prompt / order / f"{order}_{k}" / f"{seed}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


def test_curves_png_and_pdf(tmp_path):
    paths = plot_weakening_curves(summary(), "Image Style", tmp_path / "plots" / "plot.png")
    assert paths == [tmp_path / "plots" / "plot.png", tmp_path / "plots" / "plot.pdf"]
    png, pdf = (p.read_bytes() for p in paths)
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    with Image.open(paths[0]) as image:
        assert image.size == (9 * 150, 6 * 150)  # 9 x 6 inches


def test_curves_options(tmp_path):
    only_png = plot_weakening_curves(summary(), "Color", tmp_path / "a.png", path_pdf=False, ylabel="Color accuracy")
    assert only_png == [tmp_path / "a.png"] and not (tmp_path / "a.pdf").exists()
    named = plot_weakening_curves(summary(), "Color", tmp_path / "b.png", tmp_path / "pdf" / "b.pdf", drop_k=())
    assert named[1].is_file()
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_weakening_curves({"top_1": 0.2, "bottom_1": 0.2}, "Color", tmp_path / "c.png")
    assert "Weakened" in XLABEL


def test_grid_size_and_missing_cells(tmp_path):
    prompts = ["a cubist style painting of a castle", "a sepia style painting of a forest"]
    make_images(tmp_path, prompts, [0, 11, 128])
    grid = image_grid(tmp_path, 5, prompts, ("top", "bottom"), [0, 11, 128, 999], 10, tmp_path / "g.png",
                      cell=64, label_width=150, header=20)
    assert grid.size == (150 + 4 * 64, 20 + 4 * 64)
    with Image.open(tmp_path / "g.png") as saved:
        assert saved.size == grid.size
    pixels = np.asarray(grid)
    source = Image.open(tmp_path / "exp_5" / prompts[0] / "top" / "top_0" / "10.png")
    first = np.asarray(source.resize((64, 64), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(pixels[20 : 20 + 64, 150 : 150 + 64], first)
    missing_cell = pixels[20 + 40 : 20 + 64, 150 + 3 * 64 : 150 + 4 * 64]  # k=999: grey placeholder
    assert (missing_cell == 200).mean() > 0.9
    one = image_grid(tmp_path, experiment(5), prompts[0], "bottom", [0], 10)
    assert one.size == (220 + 128, 24 + 128)
    with pytest.raises(ValueError):
        image_grid(tmp_path, 5, prompts, "middle", [0], 10)


def test_plot_names():
    assert plot_name(experiment(5)) == "plot_wo_category_Image Style"
    assert plot_name(experiment(91)) == "plot_wo_category_Animals_exp_91"


def test_cli_plots_and_grid(tmp_path, capsys):
    results, plots, outputs = tmp_path / "hp_results", tmp_path / "hp_plots", tmp_path / "hp_outputs"
    write_scores_csv(results / "hp_scores_wo_category_exp_5.csv", summary())
    make_images(outputs, ["a cubist style painting of a castle"], K_LIST)
    code = plots_main(["--experiment_num", "5", "--results_dir", str(results), "--plots_dir", str(plots), "--grid",
                       "--output_path", str(outputs)])
    assert code == 0, capsys.readouterr().err
    assert (plots / "plot_wo_category_Image Style.png").stat().st_size > 0
    assert (plots / "plot_wo_category_Image Style.pdf").stat().st_size > 0
    with Image.open(plots / "grid_exp_5_seed_10.png") as grid:
        assert grid.size == (220 + 4 * 128, 24 + 2 * 128)  # k = 1 dropped; one prompt, two orders
    assert plots_main(["--experiment_num", "3", "--results_dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no scores file") and err.count("\n") == 1


def test_thin_script_from_another_directory(tmp_path):
    write_scores_csv(tmp_path / "s.csv", summary())
    result = subprocess.run([sys.executable, str(REPO / "ordered_weakening_analysis" / "draw_plots.py"),
                             "--scores", "s.csv", "--concept", "Color", "--plots_dir", "p", "--no_pdf"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "p" / "plot_wo_category_Color.png").is_file()
    assert not (tmp_path / "p" / "plot_wo_category_Color.pdf").exists()


def test_y_range_keeps_a_tiny_difference_flat():
    low, high = y_limits([0.2000, 0.2001, 0.2000])  # what a random-weight model gives: no effect of k
    assert high - low >= 0.01 and low < 0.2000 and 0.2001 < high  # 1e-4 is 1% of the axis or less
    assert abs((low + high) / 2 - 0.20005) < 1e-9  # centred on the data
    low, high = y_limits([0.30, 0.20, 0.25])  # a real effect: the data's range with a margin
    assert low < 0.20 and 0.30 < high and high - low < 0.2
    assert y_limits([100.0, 100.5]) == pytest.approx((100.25 - 2.5125, 100.25 + 2.5125))  # span: 5% of 100.5
    assert y_limits([1.0, 1.0], min_span=2.0) == (0.0, 2.0)
