"""SD-HRV concept adjusting (apps/adjust.py) on the tiny models, CPU, fp32.

The independent expectation is ``ReferenceReweight``: the reference's AttentionReweight written out directly
(explicit softmax in every attention module, the evaluation index counted from attention calls, the word's
columns of the conditional half multiplied by 2·min(d, c) − min(u, c) per head, computed here by hand),
installed on diffusers' own ``pipe(...)`` loop. It shares nothing with apps/adjust.py but the word positions
(core/tokens.py, tested in test_tokens.py) and each layer's head offset (core/heads.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from hrv_diffusion.apps.adjust import Adjustment, ConceptAdjuster, generate_adjusted, head_factors
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.core.tokens import word_token_positions
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.vectors import HRV

STEPS = 6  # PNDM: 7 evaluations
CONCEPTS = ("Color", "Plants", "Shape")


@pytest.fixture(scope="module")
def pipes():
    return {name: load_pipeline(name) for name in ("tiny-sd", "tiny-sd2", "tiny-sdxl")}


def synthetic_hrv(pipe, seed=0, ones=False) -> HRV:
    layout = head_layout(pipe.unet)
    rng = np.random.default_rng(seed)
    values = np.ones((len(CONCEPTS), layout.num_heads), np.float32) if ones else \
        rng.gamma(0.3, size=(len(CONCEPTS), layout.num_heads)).astype(np.float32)
    if not ones:  # a few large elements, as SDXL's (Color max 66): some above the clamp of 9
        values[0, 1] += 20.0
        values[1, 3] += 20.0
        values[2, 0] += 20.0
    values = values / values.sum(1, keepdims=True) * layout.num_heads  # rows sum to H, as HRVs do
    return HRV(values, CONCEPTS, tuple(layout.labels), "synthetic")


def by_hand(hrv, weights, clamp=None):
    """(H,) the reference's m_h: Σ w_c · min(HRV[c, h], c), element by element."""
    out = []
    for h in range(hrv.num_heads):
        total = 0.0
        for concept, w in weights.items():
            v = float(hrv.values[list(hrv.concepts).index(concept), h])
            total += w * (min(v, clamp) if clamp is not None else v)
        out.append(total)
    return torch.tensor(out, dtype=torch.float32)


class ReferenceReweight:
    """Explicit attention everywhere; conditional row b's word columns x factor[b] (H,), in window[b]."""

    def __init__(self, pipe, prompts, rows, steps):
        # rows: {conditional row: (word, factor (H,), (start, stop) evaluations, renormalize)}
        self.unet, self.steps, self.batch = pipe.unet, steps, len(prompts)
        self.modules = {n: m for n, m in self.unet.named_modules()
                        if isinstance(m, Attention) and n.split(".")[0] in ("down_blocks", "mid_block", "up_blocks")}
        self.offsets = {layer.module_name: layer.offset for layer in head_layout(self.unet).layers}
        self.rows = {b: (word_token_positions(pipe.tokenizer, prompts[b], word), factor, window, renorm)
                     for b, (word, factor, window, renorm) in rows.items()}
        self.calls = 0

    def __enter__(self):
        self.saved = dict(self.unet.attn_processors)
        self.unet.set_attn_processor({f"{n}.processor": self._processor(n) for n in self.modules})
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(self.saved)

    def _processor(self, name):
        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
            is_cross = encoder_hidden_states is not None
            context = encoder_hidden_states if is_cross else hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (2B*h, N, d), index b*h + head
            k, v = attn.head_to_batch_dim(attn.to_k(context)), attn.head_to_batch_dim(attn.to_v(context))
            probs = attn.get_attention_scores(q, k, None)
            step = self.calls // len(self.modules)
            self.calls += 1
            h = attn.heads
            if is_cross:
                probs = probs.clone()
                for b, (cols, factor, (start, stop), renorm) in self.rows.items():
                    if not start <= step < stop:
                        continue
                    for head in range(h):
                        row = (self.batch + b) * h + head  # conditional half
                        for col in cols:
                            probs[row, :, col] = probs[row, :, col] * factor[self.offsets[name] + head]
                        if renorm:
                            probs[row] = probs[row] / probs[row].sum(-1, keepdim=True)
            out = attn.batch_to_head_dim(torch.bmm(probs, v))
            return attn.to_out[1](attn.to_out[0](out))
        return call


def reference_latents(pipe, prompts, seeds, rows, steps=STEPS):
    latents = seed_latents(seeds, latent_shape(pipe))
    with ReferenceReweight(pipe, prompts, rows, steps), torch.no_grad():
        return pipe(prompts, latents=latents, num_inference_steps=steps, guidance_scale=7.5,
                    output_type="latent").images


# ------------------------------------------------------------------------------------------------ against it

@pytest.mark.parametrize("name,clamp", [("tiny-sd", None), ("tiny-sd2", None), ("tiny-sdxl", 9.0)])
def test_sd_hrv_matches_the_reference(pipes, name, clamp):
    """Batch [standard p1, standard p2, adjusted p1, adjusted p2]: p1 the paper's 2·d − u on a hyphenated word
    (all of its pieces), p2 another word and a three-concept combination in a window; SDXL clamped at 9."""
    pipe = pipes[name]
    hrv = synthetic_hrv(pipe)
    assert hrv.values.max() > 9  # the clamp bites
    p1, p2 = "A rose-colored vase", "a vase in lavender color"
    a1 = Adjustment.sd_hrv("rose-colored", "Color", "Plants", clamp=clamp)
    a2 = Adjustment("lavender", {"Color": 1.5, "Plants": -0.5, "Shape": 0.25}, clamp=clamp, steps=(0.3, 0.8))
    ours = generate_adjusted(pipe, [p1, p2], [1, 2], [a1, a2], hrv=hrv, num_inference_steps=STEPS, decode=None)
    assert len(word_token_positions(pipe.tokenizer, p1, "rose-colored")) == 3  # rose, -, colored
    rows = {2: ("rose-colored", by_hand(hrv, {"Color": 2, "Plants": -1}, clamp), (0, 7), False),
            3: ("lavender", by_hand(hrv, {"Color": 1.5, "Plants": -0.5, "Shape": 0.25}, clamp), (2, 5), False)}
    reference = reference_latents(pipe, [p1, p2, p1, p2], [1, 2, 1, 2], rows)
    # 1e-4: fp32 kernels differ by CPU (2.5e-5 seen on an AVX2-only AMD machine); the effect below is > 1e-3
    torch.testing.assert_close(ours.standard_latents, reference[:2], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.adjusted_latents, reference[2:], atol=1e-4, rtol=1e-4)
    assert (ours.adjusted_latents - ours.standard_latents).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_renormalization_matches_the_reference(pipes):
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    adj = Adjustment.sd_hrv("lavender", "Color", "Plants", min_factor=0.0, renormalize=True)
    ours = generate_adjusted(pipe, ["a vase in lavender color"], [3], adj, hrv=hrv, with_standard=False,
                             num_inference_steps=STEPS, decode=None)
    factor = by_hand(hrv, {"Color": 2, "Plants": -1}).clamp_min(0)
    reference = reference_latents(pipe, ["a vase in lavender color"], [3], {0: ("lavender", factor, (0, 7), True)})
    torch.testing.assert_close(ours.adjusted_latents, reference, atol=2e-5, rtol=2e-5)
    with pytest.raises(UserError, match="non-negative"):
        generate_adjusted(pipe, ["a vase in lavender color"], [3], Adjustment.sd_hrv("lavender", "Color", "Plants",
                          renormalize=True), hrv=hrv, num_inference_steps=STEPS)


# ------------------------------------------------------------------------------------------------ equalities

@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_factor_of_ones_is_plain_generation_bit_for_bit(pipes, name):
    pipe = pipes[name]
    ones = synthetic_hrv(pipe, ones=True)
    adj = Adjustment("lavender", {"Color": 1.0})  # m = 1 in every head
    prompts, seeds = ["a vase in lavender color", "a lavender field"], [4, 5]
    out = generate_adjusted(pipe, prompts, seeds, adj, hrv=ones, num_inference_steps=STEPS)
    plain = generate(pipe, prompts + prompts, seed_latents(seeds + seeds, latent_shape(pipe)),
                     num_inference_steps=STEPS, decode="truncate")
    assert torch.equal(out.adjusted_latents, plain.latents[2:])
    assert torch.equal(out.standard_latents, plain.latents[:2])
    assert np.array_equal(out.adjusted, plain.images[2:]) and np.array_equal(out.standard, plain.images[:2])


def test_standard_rows_and_unconditional_half_are_untouched(pipes):
    """The first UNet call sees the same inputs with and without the adjuster: its unconditional half and the
    standard rows' conditional half are bit for bit the same, the adjusted row's conditional half is not."""
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    outputs = []
    hook = pipe.unet.register_forward_hook(lambda m, a, out: outputs.append(out[0].clone()))
    prompts = ["a vase in lavender color"] * 2
    try:
        firsts = []
        for adjustments in ([None, None], [None, Adjustment.sd_hrv("lavender", "Color", "Plants")]):
            firsts.append(len(outputs))
            generate_adjusted(pipe, prompts, [1, 1], adjustments, hrv=hrv, with_standard=False,
                              num_inference_steps=1, decode=None)
    finally:
        hook.remove()
    plain, adjusted = outputs[firsts[0]], outputs[firsts[1]]  # (4, C, h, w): [uncond 0, uncond 1, cond 0, cond 1]
    assert torch.equal(plain[:2], adjusted[:2])  # unconditional half
    assert torch.equal(plain[2], adjusted[2])  # the row that is not adjusted
    assert (plain[3] - adjusted[3]).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------------ factors, windows

def test_sdxl_clamp_and_factors_against_a_direct_computation(pipes):
    pipe = pipes["tiny-sdxl"]
    hrv = synthetic_hrv(pipe, seed=3)
    d, u = hrv.row("Color").astype(np.float64), hrv.row("Plants").astype(np.float64)
    assert (d > 9).any() and (u > 9).any()
    clamped = head_factors(hrv, Adjustment.sd_hrv("w", "Color", "Plants", clamp=9))
    np.testing.assert_allclose(clamped, 2 * np.minimum(d, 9) - np.minimum(u, 9), rtol=1e-6, atol=1e-5)
    assert clamped.max() <= 18 + 1e-5 and clamped.min() >= -9 - 1e-5
    raw = head_factors(hrv, Adjustment.sd_hrv("w", "Color", "Plants"))
    np.testing.assert_allclose(raw, 2 * d - u, rtol=1e-6, atol=1e-5)
    assert (raw < 0).any()  # used raw: negative factors are kept
    floored = head_factors(hrv, Adjustment.sd_hrv("w", "Color", "Plants", min_factor=0.0))
    np.testing.assert_allclose(floored, np.maximum(2 * d - u, 0), rtol=1e-6, atol=1e-5)
    assert Adjustment.sd_hrv("w", "Color", None).weights == (("Color", 2.0),)


def test_scales_only_the_word_columns_and_the_window(pipes):
    pipe = pipes["tiny-sd"]
    layout = head_layout(pipe.unet)
    hrv = synthetic_hrv(pipe)
    prompt = "a vase in lavender color"
    adj = Adjustment("lavender", {"Color": 2, "Plants": -1}, steps=(0.2, 0.6))  # 11 evaluations: 2..5
    c = ConceptAdjuster([prompt, prompt], [None, adj], hrv, layout, pipe.tokenizer, 10)
    layer = layout.layers[3]
    from hrv_diffusion.core.attention import UNetCall

    assert c.token_scale(layer, UNetCall(1)) is None and c.token_scale(layer, UNetCall(6)) is None
    s = c.token_scale(layer, UNetCall(2))  # (B, h, T)
    assert s.shape == (2, layer.heads, 77)
    col = word_token_positions(pipe.tokenizer, prompt, "lavender")[0]
    assert torch.equal(s[0], torch.ones_like(s[0]))
    others = [t for t in range(77) if t != col]
    assert torch.equal(s[1][:, others], torch.ones(layer.heads, 76))
    expected = by_hand(hrv, {"Color": 2, "Plants": -1})[layer.offset : layer.offset + layer.heads]
    torch.testing.assert_close(s[1][:, col], expected)


# ------------------------------------------------------------------------------------------------ errors

def test_errors_are_one_clear_line(pipes):
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    prompt = "a vase in lavender color"
    with pytest.raises(UserError, match="'violet' is not in the prompt"):
        generate_adjusted(pipe, [prompt], [1], Adjustment.sd_hrv("violet", "Color", "Plants"), hrv=hrv,
                          num_inference_steps=1)
    with pytest.raises(UserError, match="unknown concept 'Colour'"):
        generate_adjusted(pipe, [prompt], [1], Adjustment.sd_hrv("lavender", "Colour", "Plants"), hrv=hrv,
                          num_inference_steps=1)
    wrong = HRV(hrv.values[:, :-2], hrv.concepts, hrv.labels[:-2], "wrong.npy")
    with pytest.raises(UserError, match="heads per concept but this model has"):
        generate_adjusted(pipe, [prompt], [1], Adjustment.sd_hrv("lavender", "Color", "Plants"), hrv=wrong,
                          num_inference_steps=1)
    with pytest.raises(UserError, match="both 'Color'"):
        Adjustment.sd_hrv("lavender", "Color", "Color")
    with pytest.raises(UserError, match="window"):
        Adjustment("lavender", {"Color": 1}, steps=(0.8, 0.2))
