"""The ordered-weakening notebook executes top to bottom on the tiny built-in model."""
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "ordered_weakening_analysis" / "ordered_weakening.ipynb"


def test_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HRV_NOTEBOOK_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "hp_scores_wo_category_exp_1.csv").read_bytes().startswith(b"Key,Value\r\n")
    assert (tmp_path / "plot_wo_category_Color.png").stat().st_size > 10_000
    assert (tmp_path / "plot_wo_category_Color.pdf").is_file()
