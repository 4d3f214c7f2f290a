"""Toy color edits (hrv_diffusion/toy/p2p.py): the cases and the evaluation's bookkeeping (3 steps, 2 cases)."""
from __future__ import annotations

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.vectors import load_hrv
from hrv_diffusion.toy import data
from hrv_diffusion.toy.p2p import METHODS, color_cases, evaluate_color_edits


def test_cases_swap_the_color_word_once():
    cases = color_cases(40, seed=3)
    assert len(cases) == 40
    for case in cases:
        source, target = case["source"].split(" "), case["target"].split(" ")
        changed = [(a, b) for a, b in zip(source, target) if a != b]
        assert len(source) == len(target) and changed == [(case["source_color"], case["target_color"])]
        assert case["target_color"] in data.COLORS and case["target_color"] != case["source_color"]
    assert color_cases(40, seed=3) == cases  # deterministic


def test_evaluation_runs_every_method():
    pipe = load_pipeline("toy")
    hrv = load_hrv("paper", "toy", read_concept_set(resolve_description("toy_concepts")).names, head_layout(pipe.unet))
    result = evaluate_color_edits(pipe, hrv, color_cases(2), steps=3)
    assert result["images"].shape == (2 * (1 + len(METHODS)), 32, 32, 3)
    assert set(result["rates"]) == {m.name for m in METHODS}
    for rates in result["rates"].values():
        assert all(0.0 <= rates[k] <= 1.0 for k in ("success", "target_color", "kept_shape", "kept_position"))
    case = result["cases"][0]
    assert case["Color_0.9"]["success"] == (case["Color_0.9"]["target_color"] and case["Color_0.9"]["kept"]["shape"]
                                            and case["Color_0.9"]["kept"]["position"])


def test_edits_at_a_non_square_size():
    """The toy at 48 x 32 pixels: the source image is the plain generation of the same batch, bit for bit; the
    edited image is not."""
    import numpy as np

    from hrv_diffusion.apps.p2p import Edit, Group, batch_rows, generate_edits
    from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
    from hrv_diffusion.toy.p2p import P2P

    pipe = load_pipeline("toy")
    groups = [Group("a blue circle", 3, (Edit("a red circle", P2P),))]
    out = generate_edits(pipe, groups, num_inference_steps=3, height=48, width=32)
    prompts, seeds, _, sources = batch_rows(groups)
    plain = generate(pipe, prompts, seed_latents(seeds, latent_shape(pipe, 48, 32)), num_inference_steps=3,
                     decode="truncate", height=48, width=32)
    assert out.images.shape == (2, 48, 32, 3)
    assert np.array_equal(out.images[sources], plain.images[sources])
    assert not np.array_equal(out.images[1], plain.images[1])
