"""The toy model (hrv_diffusion.toy, toy/): dataset, evaluator, architecture, training script. CPU, offline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.toy import data, evaluator
from hrv_diffusion.toy.data import HELD_OUT, make_dataset, sample_scenes, scene_is_held_out

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_and_seeded():
    a_images, a_captions, a_scenes = make_dataset(300, seed=3)
    b_images, b_captions, b_scenes = make_dataset(300, seed=3)
    c_images, c_captions, _ = make_dataset(300, seed=4)
    assert a_images.shape == (300, 32, 32, 3) and a_images.dtype == np.uint8
    assert np.array_equal(a_images, b_images) and a_captions == b_captions and a_scenes == b_scenes
    assert a_captions != c_captions and not np.array_equal(a_images, c_images)


def test_dataset_does_not_depend_on_workers_or_length():
    one, captions, _ = make_dataset(data.CHUNK + 40, seed=1, workers=1)
    two, captions2, _ = make_dataset(data.CHUNK + 40, seed=1, workers=2)
    assert np.array_equal(one, two) and captions == captions2
    shorter = sample_scenes(100, seed=1)  # a prefix of the longer draw
    assert [s["caption"] for s in shorter] == captions[:100]


def test_held_out_split():
    train = sample_scenes(3000, seed=0, split="train", two_object_fraction=0.3)
    held = sample_scenes(500, seed=0, split="heldout", two_object_fraction=0.3)
    assert not any(scene_is_held_out(s) for s in train)
    assert all(scene_is_held_out(s) for s in held)
    seen = {(o["color"], o["shape"]) for s in train for o in s["objects"]}
    assert seen == {(c, s) for c in data.COLORS for s in data.SHAPES} - HELD_OUT  # every other pair is trained
    assert {(o["color"], o["shape"]) for s in held for o in s["objects"]} >= HELD_OUT
    # Each held-out color and shape is still seen in training, with other partners.
    assert all(any(c == o["color"] for s in train for o in s["objects"]) for c, _ in HELD_OUT)


def test_captions_cover_the_attributes_with_varied_word_order():
    scenes = sample_scenes(2000, seed=0)
    captions = [s["caption"] for s in scenes]
    assert 0.2 < np.mean([s["layout"] != "single" for s in scenes]) < 0.4  # one- and two-object scenes
    assert any(" and a " in c for c in captions) and any(" above " in c for c in captions)
    singles = [s for s in scenes if s["layout"] == "single"]
    # A color word sometimes comes before and sometimes after its shape noun.
    before = sum(c["caption"].find(c["objects"][0]["color"]) < c["caption"].find(c["objects"][0]["shape"])
                 for c in singles if c["objects"][0]["color"] in c["caption"])
    after = sum(c["caption"].find(c["objects"][0]["color"]) > c["caption"].find(c["objects"][0]["shape"])
                for c in singles if c["objects"][0]["color"] in c["caption"])
    assert before > 0.3 * len(singles) and after > 0.2 * len(singles)
    full = sample_scenes(200, seed=0, mention="all")
    for s in full:  # evaluation captions name every attribute
        assert all(set(o["mentioned"]) == {"color", "shape", "size", "position"} for o in s["objects"])
        assert s["background"] in s["caption"]


def test_concept_file_matches_the_captions_and_is_one_token_per_word():
    from hrv_diffusion.core.tokenizer import clip_tokenizer

    cs = read_concept_set(resolve_description("toy_concepts"))
    assert cs.names == tuple(data.CONCEPT_WORDS)
    assert cs.words == tuple(data.CONCEPT_WORDS.values())
    text = " ".join(s["caption"] for s in sample_scenes(3000, seed=0)).replace(",", " ").split()
    vocabulary = set(text)
    tokenizer = clip_tokenizer()
    for word in cs.flat_words:
        assert word in vocabulary, word
        assert len(tokenizer(word).input_ids) == 3, word  # SOT, the word, EOT
    assert len(cs.words[0]) >= 6 and len(cs.words[1]) >= 5


# ---------------------------------------------------------------------------------------------- evaluator


def _accuracies(images, scenes):
    result = evaluator.score(evaluator.read_images(images), scenes, only_mentioned=False)
    return {k: v["accuracy"] for k, v in result.items() if isinstance(v, dict)}


def test_evaluator_reads_dataset_images():
    """>= 95% on every attribute, measured on 400 images (30% two-object scenes) from every pair."""
    images, _, scenes = make_dataset(400, seed=11, split="all", two_object_fraction=0.3)
    acc = _accuracies(images, scenes)
    print("evaluator on dataset images:", json.dumps(acc))
    for attribute in ("color", "shape", "size", "position", "background"):
        assert acc[attribute] >= 0.95, (attribute, acc)


def test_evaluator_is_robust_to_noise_blur_and_color_cast():
    """Generated images are a bit noisy, soft and off-color: >= 90% there too."""
    images, _, scenes = make_dataset(300, seed=12, split="all", two_object_fraction=0.3)
    rng = np.random.default_rng(0)
    x = images.astype(np.float32)
    x = (x + np.roll(x, 1, 1) + np.roll(x, 1, 2) + np.roll(x, (1, 1), (1, 2))) / 4  # a 2x2 blur (shifts objects
    x += rng.normal(0, 12, x.shape) + rng.normal(0, 10, (len(x), 1, 1, 3))          # by half a pixel)
    acc = _accuracies(np.clip(x, 0, 255).astype(np.uint8), scenes)
    print("evaluator on degraded images:", json.dumps(acc))
    for attribute in ("color", "shape", "size", "position", "background"):
        assert acc[attribute] >= 0.9, (attribute, acc)


def test_evaluator_accepts_pil_and_float_images_and_64px():
    from PIL import Image

    scene = sample_scenes(1, seed=5, split="all", two_object_fraction=0.0)[0]
    image = data.render_scene(scene)
    truth = scene["objects"][0]
    for form in (Image.fromarray(image), image.astype(np.float32) / 255.0, data.render_scene(scene, 64)):
        reading = evaluator.read_image(form)
        got = reading.objects[0]
        assert (got.color, got.shape, got.size, got.position) == tuple(truth[a] for a in evaluator.ATTRIBUTES)
        assert reading.background == scene["background"]
    blank = evaluator.read_image(np.full((32, 32, 3), 240, np.uint8))
    assert blank.objects == [] and blank.background == "white"


# ---------------------------------------------------------------------------------------------- model


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory):
    from hrv_diffusion.toy.model import build_toy_pipeline, save_toy_pipeline

    folder = tmp_path_factory.mktemp("toy") / "model"
    save_toy_pipeline(build_toy_pipeline(seed=0), folder)
    return folder


def test_architecture_has_enough_ca_heads_at_several_resolutions():
    from hrv_diffusion.core.heads import head_layout, unet_from_config
    from hrv_diffusion.toy.model import toy_configs

    layout = head_layout(unet_from_config(toy_configs()["unet"]))
    assert layout.num_heads == 56 >= 32
    assert {layer.resolution for layer in layout.layers} == {(16, 16), (8, 8), (4, 4)}
    assert all(layer.heads == 8 for layer in layout.layers)


def test_text_encoder_keeps_words_apart():
    """The frozen encoder's outputs are word-specific: the property the toy's design rests on."""
    from hrv_diffusion.toy.model import build_toy_models, text_encoder_report

    _, _, text_encoder = build_toy_models(seed=0)
    report = text_encoder_report(text_encoder)
    assert report["word_in_prompt_vs_alone"] > 0.85
    assert report["same_word_other_position"] > 0.8
    assert report["different_words_alone"] < 0.3
    assert report["context_effect"] < 0.05
    assert not any(p.requires_grad for p in text_encoder.parameters())


def test_saved_folder_is_small_and_loads_like_sd(toy_folder, offline_hub):
    from diffusers import StableDiffusionPipeline

    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.model import folder_bytes

    assert folder_bytes(toy_folder) <= 25_000_000
    assert list(toy_folder.rglob("*.bin")) == [] and len(list(toy_folder.rglob("*.safetensors"))) == 3
    plain = StableDiffusionPipeline.from_pretrained(toy_folder)  # the same call as for SD v1.4
    assert {plain.unet.dtype, plain.vae.dtype, plain.text_encoder.dtype} == {torch.float32}
    pipe = load_pipeline(str(toy_folder))
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 32
    out = pipe(["a small red circle on the left", "a blue square above a green ring"], num_inference_steps=3,
               generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 32, 32, 3) and np.isfinite(out.images).all()


def test_generate_is_seeded_per_image(toy_folder, offline_hub):
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.evaluate import generate

    pipe = load_pipeline(str(toy_folder))
    captions = ["a red circle", "a blue square", "a ring, pink"]
    whole = generate(pipe, captions, seed=7, steps=2, batch_size=3)
    split = generate(pipe, captions, seed=7, steps=2, batch_size=2)
    assert whole.shape == (3, 32, 32, 3) and whole.dtype == np.uint8
    assert np.abs(whole.astype(int) - split.astype(int)).max() <= 1


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------------------------------------- training


def _train(out: Path, *extra: str) -> list[dict]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, str(ROOT / "toy" / "train.py"), "--out", str(out), "--smoke", *extra],
                   check=True, env=env, cwd=ROOT, capture_output=True, timeout=120)
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_smoke_runs_resumes_and_writes_a_loadable_folder(tmp_path, offline_hub):
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.model import folder_bytes

    first = _train(tmp_path, "--unet_steps", "3")
    assert next(r for r in first if r.get("event") == "unet_done")["step"] == 3
    assert (tmp_path / "checkpoint.pt").is_file()
    log = _train(tmp_path, "--resume")  # the same log file, appended
    resumed = log[len(first):]
    assert resumed[0]["event"] == "resume" and resumed[0]["from_step"] == {"vae": 6, "unet": 3}
    assert not any("loss" in r and r["phase"] == "vae" for r in resumed)  # the VAE is not trained again
    assert [r["step"] for r in resumed if "loss" in r and r["phase"] == "unet"] == [4, 6]
    steps = [r for r in log if "event" not in r]
    assert steps and all({"seconds", "phase", "step", "loss"} <= set(r) for r in steps)
    saved = next(r for r in resumed if r.get("event") == "saved")
    folder = Path(saved["model_dir"])
    assert folder_bytes(folder) <= 25_000_000
    pipe = load_pipeline(str(folder))
    assert pipe.vae.config.scaling_factor == pytest.approx(next(r for r in log if r.get("event") == "encoded")
                                                          ["scaling_factor"], rel=1e-4)
    evaluation = json.loads((tmp_path / "eval.json").read_text())
    assert set(evaluation) == {"heldout", "train"} and "color" in evaluation["heldout"]["accuracy"]
