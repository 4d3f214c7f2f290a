"""HRV pictures and tables (apps/visualize.py) and hrv-visualize: matrices against numpy, panels and their labels."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hrv_diffusion.apps import visualize as vis
from hrv_diffusion.cli.visualize import main as visualize_main
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.files import read_hrv
from hrv_diffusion.hrv.paper import TOY_HRV_DIR, TOY_STEM

TOY_NAMES = list(read_concept_set(resolve_description("toy_concepts")).names)


def sdxl_labels() -> list[str]:
    """SDXL's 1300 CA heads by the published rule: down 0-3 x10, 4-23 x20; mid 0-9 x20; up 0-29 x20, 30-35 x10."""
    counts = [("down", [10] * 4 + [20] * 20), ("mid", [20] * 10), ("up", [20] * 30 + [10] * 6)]
    return [f"{place}, layer: {i}, head: {h}" for place, heads in counts for i, n in enumerate(heads) for h in range(n)]


def toy_hrv():
    values, labels = read_hrv(TOY_HRV_DIR / f"category_vectors_{TOY_STEM}.npy",
                              TOY_HRV_DIR / f"head_index_{TOY_STEM}.npy")
    per_step, _ = read_hrv(TOY_HRV_DIR / f"category_vectors_{TOY_STEM}_per_timesteps.npy",
                           TOY_HRV_DIR / f"head_index_{TOY_STEM}_per_timesteps.npy")
    return values, labels, per_step


def test_layer_grid_keeps_sdxl_rows_of_unequal_length():
    labels = sdxl_labels()
    assert len(labels) == 1300
    values = np.arange(1300, dtype=np.float64)
    rows = vis.layer_rows(labels)
    assert len(rows) == 70 and [len(r.columns) for r in rows[:5]] == [10, 10, 10, 10, 20]
    grid = vis.layer_grid(values, labels)
    assert grid.shape == (70, 20)
    assert np.isnan(grid[:4, 10:]).all() and np.isnan(grid[-6:, 10:]).all()  # blank, not padded with values
    assert (~np.isnan(grid)).sum() == 1300 and np.array_equal(np.sort(grid[~np.isnan(grid)]), values)
    assert grid[4, 0] == 40 and grid[24, 0] == 440 and grid[34, 19] == 659  # down 4, mid 0, last mid head
    shuffled = np.random.default_rng(0).permutation(1300)
    grid2 = vis.layer_grid(values[shuffled], [labels[g] for g in shuffled])  # columns in any order
    np.testing.assert_array_equal(grid2, grid)


def test_similarity_matrices_match_numpy():
    rng = np.random.default_rng(1)
    hrv = rng.random((6, 40))
    expected = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in hrv] for a in hrv])
    np.testing.assert_allclose(vis.concept_similarity(hrv), expected, rtol=1e-12)
    per_step = rng.random((7, 6, 40))  # (T, C, H)
    mean = per_step.mean(axis=1)
    expected = np.array([[a @ b / np.linalg.norm(a) / np.linalg.norm(b) for b in mean] for a in mean])
    result = vis.timestep_similarity(per_step)
    assert result.shape == (7, 7)
    np.testing.assert_allclose(result, expected, rtol=1e-12)
    zero = vis.cosine_similarity(np.array([[1.0, 0.0], [0.0, 0.0]]))
    assert zero.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    with pytest.raises(ValueError, match="T, C, H"):
        vis.timestep_similarity(hrv)


def test_top_heads_table_and_files(tmp_path):
    labels = sdxl_labels()[:30]  # down 0-2
    hrv = np.zeros((2, 30))
    hrv[0, [7, 3, 25]] = [5.0, 9.0, 5.0]  # a tie between heads 7 and 25: head index first
    hrv[1, 12] = 1.0
    frame = vis.top_heads(hrv, labels, ["Color", "Plants | x"], k=3)
    assert list(frame.columns) == ["concept", "rank", "head", "place", "layer", "head_in_layer", "head_index", "value"]
    assert frame[frame.concept == "Color"].head_index.tolist() == [3, 7, 25]
    assert frame.iloc[2][["head", "layer", "head_in_layer", "value"]].tolist() == ["down, layer: 2, head: 5", 2, 5, 5.0]
    csv_path, md_path = vis.write_top_heads(frame, tmp_path / "top")
    assert pd.read_csv(csv_path).equals(frame)
    text = md_path.read_text()
    assert "## Color" in text and "## Plants | x" in text and "| 1 | down, layer: 0, head: 3 | 9.000 |" in text
    assert "Plants \\| x" not in text.split("## Plants | x")[0]  # headings unescaped, cells escaped


def _figure_texts(monkeypatch):
    """Capture each figure's axes (title, x label, y label, y tick labels) instead of only writing it."""
    seen = []
    original = vis.save_figure

    def capture(fig, stem, formats=vis.FORMATS, dpi=150):
        fig.canvas.draw()
        seen.append({
            "stem": str(stem), "suptitle": fig._suptitle.get_text() if fig._suptitle else "",
            "axes": [(ax.get_title(), ax.get_xlabel(), ax.get_ylabel(), [t.get_text() for t in ax.get_yticklabels()],
                      [t.get_text() for t in ax.get_xticklabels()]) for ax in fig.axes if ax.get_visible()
                     and ax.axison],
        })
        return original(fig, stem, formats, dpi)

    monkeypatch.setattr(vis, "save_figure", capture)
    return seen


def test_heatmap_panels_and_labels_sdxl_shaped(tmp_path, monkeypatch):
    seen = _figure_texts(monkeypatch)
    names = ["Color", "Plants", "Geometric Patterns"]
    hrv = np.random.default_rng(2).random((3, 1300)).astype(np.float32)
    paths = vis.plot_concept_heatmaps(hrv, sdxl_labels(), names, tmp_path / "heat", columns=2)
    assert [p.name for p in paths] == ["heat.png", "heat.pdf"] and all(p.stat().st_size > 1000 for p in paths)
    panels = [a for a in seen[0]["axes"] if a[0]]  # colorbars have no title
    assert [a[0] for a in panels] == names
    assert panels[0][2] == "CA layer" and panels[2][1] == "head"  # left column y label, bottom row x label
    ticks = panels[0][3]
    assert ticks[0] == "down 0" and "mid 0" in ticks and "up 35" in ticks and "up 30" in ticks
    assert "one row per CA layer" in seen[0]["suptitle"]
    with pytest.raises(ValueError, match="3 concepts and 1300 heads"):
        vis.plot_concept_heatmaps(hrv[:, :10], sdxl_labels(), names, tmp_path / "bad")


def test_visualize_toy_writes_every_file_with_labels(tmp_path, monkeypatch):
    seen = _figure_texts(monkeypatch)
    values, labels, per_step = toy_hrv()
    paths = vis.visualize(values, labels, TOY_NAMES, tmp_path, per_timestep=per_step, k=4)
    assert sorted(p.name for p in paths) == sorted(
        f"{stem}.{fmt}" for stem in ("concept_heatmaps", "concept_similarity", "timestep_similarity")
        for fmt in ("png", "pdf")) + ["top_heads.csv", "top_heads.md"]
    heat, concepts, steps = seen
    assert [a[0] for a in heat["axes"] if a[0]] == TOY_NAMES
    similarity = concepts["axes"][0]
    assert similarity[0] == "Cosine similarity of the HRVs of 5 concepts"
    assert similarity[1] == similarity[2] == "concept"
    assert similarity[3] == TOY_NAMES and similarity[4] == TOY_NAMES  # concept names on both axes
    assert steps["axes"][0][0].startswith("Cosine similarity of the 51 per-evaluation HRVs")
    assert steps["axes"][0][1].startswith("UNet evaluation")
    assert len(pd.read_csv(tmp_path / "top_heads.csv")) == 5 * 4


def test_cli_toy_paper_and_built_hrv(tmp_path, capsys):
    assert visualize_main(["--hrv", "paper", "--model_version", "toy", "--output_dir", str(tmp_path / "toy"),
                           "--formats", "png", "--concepts", "Shape", "Color", "--top_k", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "toy").iterdir()) == [
        "concept_heatmaps.png", "concept_similarity.png", "timestep_similarity.png", "top_heads.csv", "top_heads.md"]
    top = pd.read_csv(tmp_path / "toy" / "top_heads.csv")
    assert top.concept.tolist() == ["Shape", "Shape", "Color", "Color"]
    values, labels, _ = toy_hrv()
    assert top.head_index.tolist()[2] == int(np.argmax(values[TOY_NAMES.index("Color")]))
    # an HRV built here, without per-timestep HRVs beside it: the timestep plot is skipped, said so
    built = tmp_path / "final_result"
    built.mkdir()
    np.save(built / "category_vectors_mine.npy", values)
    np.save(built / "head_index_mine.npy", np.array(labels))
    capsys.readouterr()
    assert visualize_main(["--hrv", str(built), "--description", "toy_concepts", "--formats", "pdf",
                           "--output_dir", str(tmp_path / "mine")]) == 0
    assert "no timestep_similarity" in capsys.readouterr().out
    assert (tmp_path / "mine" / "concept_heatmaps.pdf").is_file()
    assert not (tmp_path / "mine" / "timestep_similarity.pdf").exists()


def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "cache"))
    assert visualize_main(["--hrv", "paper", "--model_version", "sd_xl_base_1_0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hrv-published" in err and str(tmp_path / "cache") in err
    assert visualize_main(["--hrv", "paper", "--model_version", "toy", "--concepts", "Colour"]) == 2
    assert "unknown concept 'Colour'" in capsys.readouterr().err
    assert visualize_main(["--hrv", "paper", "--model_version", "toy", "--per_timesteps", "nope.npy"]) == 2
    assert "no per-timestep file nope.npy" in capsys.readouterr().err
