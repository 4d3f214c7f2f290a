"""toy/attend_excite_eval.py: the toy comparison of A&E-HRV, standard A&E and plain generation runs and resumes."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "toy" / "attend_excite_eval.py"


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


def by_hand(records: list[dict]) -> dict:
    """One image's telemetry totals from its per-evaluation records: a gradient step wherever the loss that the
    step uses (after refinement, if any) is positive; refinement iterations summed; the last evaluation's loss."""
    return {"gradient_steps": sum(r.get("loss_after_refinement", r["loss"]) > 0 for r in records),
            "refinement_iterations": sum(r.get("refinement_iterations", 0) for r in records),
            "last_loss": records[-1]["loss"] if records else None}


def test_runs_and_resumes(script, tmp_path):
    """The report against a direct A&E-HRV generation of the same captions, seeds and targets: its telemetry and
    its readings; every rate is a count over the images; plain SD takes no step."""
    from hrv_diffusion.apps.attend_excite import AttendExciteSettings, Targets, generate_attend_excite
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.loop import latent_shape, seed_latents
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.vectors import load_hrv
    from hrv_diffusion.toy import data, evaluator

    out = tmp_path / "toy.json"
    argv = ["--n", "2", "--steps", "2", "--batch_size", "2", "--max_refinement_steps", "2", "--out", str(out)]
    assert script.main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["methods"]) == {"sd", "standard", "hrv"}
    assert all(len(report["images"][m]) == 2 for m in report["methods"])
    # A&E-HRV directly: scenes 0 and 1, seeds 0 and 1, the shape nouns, the toy's Shape HRV
    pipe = load_pipeline("toy")
    scenes = data.sample_scenes(2, seed=0, split="all", two_object_fraction=1.0, mention="all")
    captions = [scene["caption"] for scene in scenes]
    ids = [pipe.tokenizer(c).input_ids for c in captions]
    targets = Targets.build([script.shape_targets(pipe.tokenizer, c, s) for c, s in zip(captions, scenes)],
                            [row.index(pipe.tokenizer.eos_token_id) for row in ids], [0, 0])
    hrv = load_hrv("paper", "toy", read_concept_set(resolve_description("toy_concepts")).names, head_layout(pipe.unet))
    settings = AttendExciteSettings(mode="hrv", attention_res=8, num_inference_steps=2, max_refinement_steps=2)
    direct = generate_attend_excite(pipe, captions, seed_latents([0, 1], latent_shape(pipe)), targets, settings,
                                    hrv.rows(["Shape"]))
    readings = evaluator.read_images(direct.images)
    for i, record in enumerate(report["images"]["hrv"]):
        assert record["caption"] == captions[i]
        expected = by_hand(direct.records[i])
        assert {k: record["telemetry"][k] for k in expected} == pytest.approx(expected), i
        assert {k: record[k] for k in ("objects_found", "shape_and_color", "all_attributes", "read")} == \
            script.image_record(readings[i], scenes[i]), i
    assert all(r["telemetry"]["gradient_steps"] == r["telemetry"]["refinement_iterations"] == 0
               for r in report["images"]["sd"])
    assert sum(r["telemetry"]["gradient_steps"] for r in report["images"]["standard"]) > 0
    for method, rates in report["methods"].items():  # rates: counts over the 2 images
        images = report["images"][method]
        for key in ("objects_found", "shape_and_color", "all_attributes"):
            assert rates[key] == sum(bool(r[key]) for r in images) / 2, (method, key)
        assert rates["refinement_iterations_mean"] == sum(r["telemetry"]["refinement_iterations"] for r in images) / 2
    with pytest.raises(SystemExit, match="--resume"):
        script.main(argv)
    assert script.main([*argv, "--resume"]) == 0  # nothing left to do
    assert json.loads(out.read_text())["images"] == report["images"]


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
