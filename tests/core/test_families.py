"""Model families (core/families): every family's hooked model against its stock self and a plain re-implementation.

Parametrized over the tiny SD 1.x and SD 2.x UNets, the tiny PixArt transformer and an untrained toy DiT (a PixArt
transformer reading CLIP text, ``hrv_diffusion/toy/dit.py``):
- with the hooks installed and no controller acting, the denoiser's output is bit-identical to the stock processors';
- a token scale of 1 leaves the output bit-identical;
- the votes count one per (evaluation, head, sample) and equal a bank-only vote written here from the layer's own
  modules (the recorded queries, ``to_k`` [of ``caption_projection``] of the stored rows, softmax over the bank);
- the layouts of the real configs, built on the meta device: SD v1.4 128 heads, PixArt-α and Σ 448.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrv_diffusion.core.attention import AttentionHooks, Controller
from hrv_diffusion.core.families import PIXART, UNET, denoiser, family_of
from hrv_diffusion.core.families import pixart as pixart_family
from hrv_diffusion.core.heads import head_layout, unet_from_config
from hrv_diffusion.core.loop import encode_prompts, generate, latent_shape, num_evaluations, seed_latents
from hrv_diffusion.core.tiny import TINY_MODELS
from hrv_diffusion.hrv.votes import RelevanceVotes, WordBank, sample_words

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONCEPTS = (("cat", "dog"), ("red", "blue", "turquoise"), ("circle", "square"))  # turquoise: several tokens
PROMPTS = ["a red circle", "a photo of a dog"]


def untrained_toy_dit():
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.dit import assemble_toy_dit, build_toy_dit

    return assemble_toy_dit(build_toy_dit(0).eval(), load_pipeline("toy"))


BUILDERS = {**{name: TINY_MODELS[name] for name in ("tiny-sd", "tiny-sd2", "tiny-pixart")},
            "toy-dit-untrained": untrained_toy_dit}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def pipe(request):
    return BUILDERS[request.param]()


def _one_call(pipe, controllers=None):
    """One guided denoiser call on fixed latents, through the family's own call: (2B, C, h, w)."""
    model = denoiser(pipe)
    family = family_of(pipe)
    latents = seed_latents([3, 4], latent_shape(pipe))
    conditioning = encode_prompts(pipe, PROMPTS, cfg=True)
    embeds, added = conditioning.rows("cfg")
    sample, t = torch.cat([latents] * 2), torch.tensor(500)
    with torch.no_grad():
        if controllers is None:
            return family.predict(model, model.config, sample, t, embeds, added)
        with AttentionHooks(pipe, controllers) as hooks:
            return family.predict(hooks.call_unet, model.config, sample, t, embeds, added)


class Idle(Controller):
    """Observes every call and does nothing with it."""

    def __init__(self):
        self.calls = 0

    def observe(self, layer, call, query, key):
        self.calls += 1


class UnitScale(Controller):
    """A token scale of exactly 1 on every conditional row."""

    def token_scale(self, layer, call):
        return torch.ones(len(PROMPTS), layer.heads, self.tokens)


def test_family_of_picks_the_denoiser(pipe):
    model = denoiser(pipe)
    assert family_of(pipe) is family_of(model)
    assert family_of(pipe) is (PIXART if hasattr(pipe, "transformer") else UNET)
    assert model is getattr(pipe, family_of(pipe).denoiser_attr)


def test_hooked_output_is_bit_identical_to_the_stock_processors(pipe):
    stock = _one_call(pipe)
    idle = Idle()
    assert torch.equal(_one_call(pipe, [idle]), stock)
    assert idle.calls == len(head_layout(pipe).layers)
    assert torch.equal(_one_call(pipe, []), stock)


def test_a_token_scale_of_one_changes_nothing(pipe):
    stock = _one_call(pipe)
    unit = UnitScale()
    unit.tokens = encode_prompts(pipe, PROMPTS, cfg=False).cond.shape[1]
    assert torch.equal(_one_call(pipe, [unit]), stock)


class Recorder(Controller):
    """The conditional queries of every (layer, evaluation)."""

    def __init__(self):
        self.queries = {}

    def observe(self, layer, call, query, key):
        self.queries[layer.module_name, call.step] = query.detach().clone()  # (B, h, N, d)


def _plain_votes(model, layout, embeddings, lengths, choices, queries, num_concepts):
    """The vote written plainly: per (layer, evaluation, sample), bank = [sink row 0, the chosen words' tokens],
    keys through the layer's own modules, softmax over the bank, mean over queries, then over each word's tokens."""
    counts = torch.zeros(choices.shape[1], layout.num_heads, num_concepts)
    pixart = family_of(model) is PIXART
    for li, layer in enumerate(layout.layers):
        attn = model.get_submodule(layer.module_name)
        for (name, step), query in queries.items():
            if name != layer.module_name:
                continue
            for b in range(query.shape[0]):
                rows, spans = [embeddings[0, 0]], []
                for w in choices[b, step, li].tolist():
                    n = int(lengths[w]) - 2
                    spans.append((len(rows), len(rows) + n))
                    rows.extend(embeddings[w, 1 : n + 1])
                text = torch.stack(rows)  # (R, D)
                with torch.no_grad():
                    keys = attn.to_k(model.caption_projection(text) if pixart else text)  # (R, h * d)
                keys = keys.view(len(rows), layer.heads, -1).transpose(0, 1)  # (h, R, d)
                logits = query[b] @ keys.transpose(1, 2) / query.shape[-1] ** 0.5  # (h, N, R)
                probs = logits.float().softmax(-1).mean(1)  # (h, R)
                scores = torch.stack([probs[:, s:e].mean(-1) for s, e in spans], -1)  # (h, C)
                for h, c in enumerate(scores.argmax(-1).tolist()):
                    counts[step, layer.offset + h, c] += 1
    return counts


def test_votes_count_every_head_and_equal_a_plain_bank_only_vote(pipe):
    words = [w for concept in CONCEPTS for w in concept]
    embeddings, lengths = family_of(pipe).encode_words(pipe, words, 32)
    layout = head_layout(pipe)
    steps = 2
    evaluations = num_evaluations(pipe, steps)
    bank = WordBank(pipe, layout, embeddings, lengths)
    votes = RelevanceVotes(bank, layout, evaluations, len(CONCEPTS))
    generator = torch.Generator().manual_seed(7)
    choices = torch.stack([sample_words([len(c) for c in CONCEPTS], evaluations, len(layout.layers), generator)
                           for _ in PROMPTS])  # (B, T, layers, C)
    votes.set_choices(choices)
    recorder = Recorder()
    generate(pipe, PROMPTS, seed_latents([1, 2], latent_shape(pipe)), num_inference_steps=steps,
             guidance_scale=4.0, controllers=[votes, recorder])
    counts = votes.counts.cpu()  # (T, H, C)
    assert counts.sum(-1).eq(len(PROMPTS)).all()  # one vote per sample, head and evaluation
    assert counts.sum() == evaluations * layout.num_heads * len(PROMPTS)
    expected = _plain_votes(denoiser(pipe), layout, embeddings, lengths, choices, recorder.queries, len(CONCEPTS))
    assert torch.equal(counts, expected)


def test_unet_layout_of_sd_v1_4_on_meta():
    layout = head_layout(unet_from_config(json.loads((CONFIGS / "sd_v1_4_unet.json").read_text())))
    assert layout.num_heads == 128 and len(layout.layers) == 16
    assert layout.labels[0] == "down, layer: 0, head: 0" and layout.labels[-1] == "up, layer: 8, head: 7"


@pytest.mark.parametrize("card", sorted(pixart_family.CONFIGS))
def test_pixart_layouts_of_the_real_configs_on_meta(card):
    model = pixart_family.from_config(pixart_family.CONFIGS[card])
    assert next(model.parameters()).device.type == "meta"
    layout = head_layout(model)
    assert (len(layout.layers), layout.num_heads, len(layout.self_layers)) == (28, 448, 28)
    assert layout.labels[0] == "block 0, head 0" and layout.labels[-1] == "block 27, head 15"
    assert layout.layers[12].label(3) == "block 12, head 3"
    assert layout.index_of("block 12, head 3") == 12 * 16 + 3
    assert {layer.resolution for layer in layout.layers} == {(64, 64)}  # 1024 px: 128 latent, patch 2
    assert [layer.module_name for layer in layout.layers] == [f"transformer_blocks.{i}.attn2" for i in range(28)]
    assert {model.get_submodule(layer.module_name).is_cross_attention for layer in layout.layers} == {True}
    assert layout.layers[5].grid((96, 64)) == (48, 32)  # another size: the patch grid of that latent
