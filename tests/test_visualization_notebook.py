"""The HRV visualization notebook executes top to bottom on the toy model's shipped HRVs."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "applications" / "hrv_visualization.ipynb"


def test_visualization_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HRV_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("HRV_NOTEBOOK_MODEL", "toy")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    written = sorted(p.name for p in tmp_path.iterdir())
    figures = [f"{stem}.{fmt}" for stem in ("concept_heatmaps", "concept_similarity", "timestep_similarity")
               for fmt in ("png", "pdf")]
    assert written == sorted(figures + ["top_heads.csv", "top_heads.md"])
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "toy: 5 concepts x 56 CA heads in 7 CA layers ([8] heads per layer)" in outputs
    assert "per-timestep HRVs: (51, 5, 56)" in outputs
    assert "51 evaluations" in outputs and "Color" in outputs
    images = sum(1 for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {}))
    assert images == 3
