"""The P2P-HRV notebook (source | P2P | P2P-HRV) executes top to bottom on the toy model with its shipped HRVs."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parents[1] / "applications" / "p2p_hrv.ipynb"


def test_p2p_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HRV_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    with Image.open(tmp_path / "p2p_hrv_side_by_side.png") as grid:
        assert grid.size == (8 * (3 * 32 + 2 * 2), 8 * 32)  # three 32 x 32 toy images, 2-pixel gaps, x8
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "source | P2P | P2P-HRV" in outputs
    # seed 20, "red" -> "blue" circle on the toy model: the evaluator reads the edit as published P2P-HRV intends
    assert "P2P-HRV  color=blue shape=circle size=small position=top" in outputs
