"""Toy color edits (hrv_diffusion/toy/p2p.py): the cases and the evaluation's bookkeeping (3 steps, 2 cases)."""
from __future__ import annotations

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.vectors import load_hrv
from hrv_diffusion.toy import data, evaluator
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


def main_object(reading) -> dict | None:
    """The evaluator's largest object: its attributes, fitted center and side (what a case records)."""
    if not reading.objects:
        return None
    return {k: getattr(reading.objects[0], k) for k in (*evaluator.ATTRIBUTES, "cx", "cy", "d")}


def test_evaluation_reads_every_image_and_counts_every_verdict():
    pipe = load_pipeline("toy")
    hrv = load_hrv("paper", "toy", read_concept_set(resolve_description("toy_concepts")).names, head_layout(pipe.unet))
    cases = color_cases(2)
    result = evaluate_color_edits(pipe, hrv, cases, steps=3)
    size = 1 + len(METHODS)  # per case: [source, P2P, P2P-HRV, plain]
    assert result["images"].shape == (2 * size, 32, 32, 3)
    assert set(result["rates"]) == {m.name for m in METHODS}
    readings = evaluator.read_images(result["images"])
    for i, (case, row) in enumerate(zip(cases, result["cases"])):
        source = main_object(readings[i * size])
        assert row["source_read"] == source
        for j, method in enumerate(METHODS, start=1):
            read = main_object(readings[i * size + j])
            verdict = row[method.name]
            kept = {a: bool(source and read and read[a] == source[a]) for a in ("shape", "position", "size")}
            assert verdict["read"] == read and verdict["kept"] == kept, (i, method.name)
            assert verdict["target_color"] == bool(read and read["color"] == case["target_color"])
            assert verdict["success"] == (verdict["target_color"] and kept["shape"] and kept["position"])
    for method in METHODS:  # each rate: a count over the cases
        verdicts = [row[method.name] for row in result["cases"]]
        counts = {"success": sum(v["success"] for v in verdicts),
                  "target_color": sum(v["target_color"] for v in verdicts),
                  "kept_shape": sum(v["kept"]["shape"] for v in verdicts),
                  "kept_position": sum(v["kept"]["position"] for v in verdicts),
                  "kept_size": sum(v["kept"]["size"] for v in verdicts)}
        for key, count in counts.items():
            assert result["rates"][method.name][key] == count / len(cases), (method.name, key)


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
