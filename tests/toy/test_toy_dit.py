"""The toy diffusion transformer (hrv_diffusion/toy/dit.py, toy/train_dit.py): architecture, CLIP text through the
PixArt family, the denoising loop against a plain one written here, saving and loading, and a training smoke run.
(The family-wide checks, bit-identical hooks and the bank-only vote, run on it in tests/core/test_families.py.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hrv_diffusion.core.families import PIXART, family_of
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.toy.dit import assemble_toy_dit, build_toy_dit, load_toy_dit, save_toy_dit
from hrv_diffusion.toy.weakening import random_head_sets

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def toy():
    return load_pipeline("toy")


@pytest.fixture(scope="module")
def dit(toy):
    return assemble_toy_dit(build_toy_dit(0).eval(), toy)


def test_architecture_48_heads_on_one_8x8_grid(dit):
    layout = head_layout(dit)
    assert family_of(dit) is PIXART
    assert layout.num_heads == 6 * 8 == 48
    assert [layer.module_name for layer in layout.layers] == [f"transformer_blocks.{i}.attn2" for i in range(6)]
    assert layout.labels[:2] == ["block 0, head 0", "block 0, head 1"]
    transformer = dit.transformer
    assert transformer.config.num_attention_heads * transformer.config.attention_head_dim == 192
    assert transformer.caption_projection.linear_1.in_features == dit.text_encoder.config.hidden_size == 48
    assert latent_shape(dit) == (4, 16, 16)


def test_words_and_prompts_are_the_clip_encodings(dit):
    family = family_of(dit)
    ids = dit.tokenizer(["red", "circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        direct = dit.text_encoder(ids)[0]  # (2, 77, 48): row 0 is SOT, the sink
    embeddings, lengths = family.encode_words(dit, ["red", "circle"])
    assert torch.equal(embeddings, direct.float())
    assert lengths.tolist() == [3, 3]  # SOT, the word, EOT
    assert family.text_length(dit) == 77
    conditioning = family.encode_prompts(dit, ["red", "circle"], cfg=True)
    assert torch.equal(conditioning.cond, direct)
    empty = dit.tokenizer([""] * 2, padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(conditioning.uncond, dit.text_encoder(empty)[0])
    assert conditioning.added is None


def _plain_loop(pipe, prompts, latents, steps, guidance):
    """Classifier-free guided PNDM sampling written out: CLIP text, the transformer called directly."""
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(steps)

    def text(batch):
        ids = pipe.tokenizer(batch, padding="max_length", max_length=77, return_tensors="pt").input_ids
        return pipe.text_encoder(ids)[0]

    embeds = torch.cat([text([""] * len(prompts)), text(prompts)])  # (2B, 77, 48)
    x = latents * scheduler.init_noise_sigma
    with torch.no_grad():
        for t in scheduler.timesteps:
            sample = torch.cat([x] * 2)
            out = pipe.transformer(sample, encoder_hidden_states=embeds, timestep=t.expand(len(sample)),
                                   added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
            uncond, cond = out.chunk(2)
            x = scheduler.step(uncond + guidance * (cond - uncond), t, x).prev_sample
    return x


def test_loop_equals_a_plain_loop(dit):
    prompts = ["a small red circle on the left", "a big blue square"]
    latents = seed_latents([5, 6], latent_shape(dit))
    ours = generate(dit, prompts, latents, num_inference_steps=3, guidance_scale=7.5, decode=None).latents
    assert torch.equal(ours, _plain_loop(dit, prompts, latents, 3, 7.5))


def test_saved_folder_holds_the_transformer_only_and_loads(dit, toy, tmp_path):
    folder = save_toy_dit(dit, tmp_path / "dit")
    assert sorted(p.name for p in folder.iterdir()) == ["model_index.json", "scheduler", "transformer"]
    loaded = load_toy_dit(folder, toy_pipe=toy)
    for name, tensor in dit.transformer.state_dict().items():  # stored as fp16, loaded as fp32
        assert torch.equal(loaded.transformer.state_dict()[name], tensor.half().float()), name
    assert loaded.text_encoder is toy.text_encoder and loaded.vae is toy.vae
    assert type(loaded.scheduler).__name__ == "PNDMScheduler"


def test_random_head_sets_are_seeded_distinct_and_sized():
    sets = random_head_sets(48, 12, 5, seed=2)
    assert len(sets) == 5 and all(len(set(s)) == 12 and max(s) < 48 for s in sets)
    assert sets == random_head_sets(48, 12, 5, seed=2)
    assert sets != random_head_sets(48, 12, 5, seed=3)
    assert len({tuple(s) for s in sets}) == 5


def test_training_smoke_run_saves_a_loadable_model(tmp_path, toy):
    run = subprocess.run([sys.executable, str(ROOT / "toy" / "train_dit.py"), "--smoke", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    log = (tmp_path / "train_log.jsonl").read_text()
    assert '"event": "unet_done", "step": 4' in log
    pipe = load_toy_dit(tmp_path / "model", toy_pipe=toy)
    assert head_layout(pipe).num_heads == 48
    assert np.isfinite(pipe.transformer.pos_embed.proj.weight.detach().numpy()).all()


# ---------------------------------------------------------------------------------------------- the shipped model

@pytest.fixture(scope="module")
def shipped():
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.files import read_hrv
    from hrv_diffusion.hrv.paper import paper_files

    vectors, index = paper_files("toy_dit")
    hrv, labels = read_hrv(vectors, index)
    concepts = list(read_concept_set(resolve_description("toy_concepts")).names)
    return load_pipeline("toy-dit"), hrv, labels, concepts


def test_shipped_toy_dit_and_its_hrv(shipped):
    pipe, hrv, labels, concepts = shipped
    assert family_of(pipe) is PIXART and head_layout(pipe).num_heads == 48
    assert list(labels) == head_layout(pipe).labels
    assert hrv.shape == (len(concepts), 48)
    assert abs(hrv.sum(1) - 48).max() < 1e-3


def test_morhf_below_random_head_sets(shipped):
    """CI-sized ground truth on the toy DiT (docs/toy.md has the full run): weakening Position's 12 most relevant heads
    hurts position more than weakening random sets of 12 heads."""
    from hrv_diffusion.toy.weakening import weakening_curves

    pipe, hrv, _, concepts = shipped
    curve = weakening_curves(pipe, hrv, concepts, ["Position"], [0, 12], n=16, steps=20,
                             random_sets=3)["Position"]["curve"]
    assert curve["top_12"] < curve["random_12"] <= curve["top_0"], curve
