"""toy/attend_excite_eval.py: the toy comparison of A&E-HRV, standard A&E and plain generation runs and resumes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "toy" / "attend_excite_eval.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("attend_excite_eval", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shape_targets(script):
    from hrv_diffusion.core.tokenizer import clip_tokenizer

    tok = clip_tokenizer()
    scene = {"objects": [{"shape": "circle"}, {"shape": "circle"}]}
    assert script.shape_targets(tok, "a red circle, and a blue circle", scene) == [[3], [8]]


def test_runs_and_resumes(script, tmp_path):
    out = tmp_path / "toy.json"
    argv = ["--n", "2", "--steps", "2", "--batch_size", "2", "--max_refinement_steps", "2", "--out", str(out)]
    assert script.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"sd", "standard", "hrv"}
    assert all(len(report["images"][m]) == 2 for m in report["methods"])
    assert report["images"]["hrv"][0]["telemetry"]["gradient_steps"] in (0, 1, 2, 3)
    with pytest.raises(SystemExit, match="--resume"):
        script.main(argv)
    assert script.main([*argv, "--resume"]) == 0  # nothing left to do
