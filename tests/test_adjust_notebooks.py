"""The SD-HRV notebooks execute top to bottom: SD v1.x on the toy model with its shipped HRVs, SDXL on tiny-sdxl with
a synthetic HRV (clamped at 9)."""
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from PIL import Image

APPS = Path(__file__).resolve().parents[1] / "applications"


def execute(name, tmp_path, monkeypatch, steps):
    monkeypatch.setenv("HRV_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("HRV_NOTEBOOK_STEPS", str(steps))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(APPS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("steps", [20])
def test_sd_notebook_runs_on_the_toy(tmp_path, monkeypatch, steps):
    outputs = execute("reduce_misinterpretation.ipynb", tmp_path, monkeypatch, steps)
    with Image.open(tmp_path / "sd_hrv_side_by_side.png") as grid:
        assert grid.size == (8 * (4 * 32 + 3 * 2), 8 * (2 * 32 + 2))  # 4 seeds, 2 rows, 2-pixel gaps, x8
    assert "top: standard | bottom: SD-HRV" in outputs
    assert "word red-striped at [2, 3, 4]" in outputs  # red, -, striped
    assert "standard object colors" in outputs and "SD-HRV   object colors" in outputs


def test_sdxl_notebook_runs_on_tiny_sdxl(tmp_path, monkeypatch):
    outputs = execute("reduce_misinterpretation_sdxl.ipynb", tmp_path, monkeypatch, 3)
    with Image.open(tmp_path / "sdxl_hrv_side_by_side.png") as grid:
        assert grid.size == (8 * (2 * 32 + 2), 8 * (2 * 32 + 2))
    assert "clamped at 9: factors" in outputs and "top: standard SDXL | bottom: SDXL-HRV" in outputs
