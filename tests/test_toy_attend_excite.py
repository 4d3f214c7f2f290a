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


@pytest.mark.parametrize("mode", ["hrv", "standard", "sd"])
def test_every_mode_runs_at_a_non_square_size(mode):
    """The toy at 48 x 32 pixels (24 x 16 latents; its default is 32 x 32): A&E-HRV's maps are R x R, standard
    A&E's the 6 x 4 grid of the layers 6 rows high, and the images have the asked size."""
    import numpy as np
    import torch

    from hrv_diffusion.apps.attend_excite import (AttendExciteSettings, Targets, generate_attend_excite,
                                                  token_map_store)
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.loop import latent_shape, seed_latents
    from hrv_diffusion.core.models import load_pipeline

    pipe = load_pipeline("toy")
    layout = head_layout(pipe.unet)
    s = AttendExciteSettings(mode=mode, attention_res=6 if mode == "standard" else 2, num_inference_steps=2,
                             max_iter_to_alter=2, thresholds={0: 0.05}, max_refinement_steps=2)
    hrv = np.random.default_rng(0).random((1, layout.num_heads))
    latents = seed_latents([1, 2], latent_shape(pipe, 48, 32))
    out = generate_attend_excite(pipe, ["a red circle"] * 2, latents, Targets.build([[3]] * 2, [4] * 2), s, hrv,
                                 height=48, width=32)
    assert out.images.shape == (2, 48, 32, 3) and out.latents.shape[-2:] == (24, 16)
    assert len(out.records[0]) == (0 if mode == "sd" else 2)
    if mode != "sd":
        store = token_map_store(layout, s, hrv, latent=(24, 16))
        assert store.size == ((2, 2) if mode == "hrv" else (6, 4))
        assert all(0.0 <= m <= 1.0 for r in out.records[0] for m in r["max_attention"])
        assert torch.isfinite(out.latents).all()
