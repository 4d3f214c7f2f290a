"""Prompt-to-Prompt and P2P-HRV (apps/p2p.py) on the tiny models, CPU, fp32.

The independent expectation is ``ReferenceEdit`` below: the reference's algorithm written out directly (explicit
attention in every layer, the evaluation index counted from attention calls as the reference's controller does,
alpha tables of S + 1 rows, the self window over S, edits on the conditional half of [uncond, cond]), installed
on diffusers' own ``pipe(...)`` loop. It shares nothing with apps/p2p.py but the token utilities (tested in
test_p2p_mappers.py) and the HRV column of each head (core/heads.py).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import Attention

from hrv_diffusion.apps.p2p import (BlendMaps, Edit, EditSpec, Group, LocalBlend, PromptToPrompt, batch_rows,
                                    check_edit, default_blend_resolution, default_self_max_queries,
                                    generate_edits, window, word_mask)
from hrv_diffusion.core.attention import AttentionHooks, UNetCall
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.core.tokens import refinement_mapper, word_swap_mapper, word_token_positions
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.vectors import HRV

STEPS = 6  # PNDM: 7 evaluations
SEED = 20
P2P = EditSpec("original_p2p", cross_replace_steps=0.8, self_replace_steps=0.4)
P2P_HRV = EditSpec("Color_0.9", cross_replace_steps=0.8, self_replace_steps=0.9, restoration="hrv", concept="Color",
                   token_restoration_start_step=1)


@pytest.fixture(scope="module")
def pipes():
    return {name: load_pipeline(name) for name in ("tiny-sd", "tiny-sd2", "tiny-sdxl")}


def synthetic_hrv(pipe, concepts=("Color", "Shape"), seed=0, ones=False) -> HRV:
    layout = head_layout(pipe.unet)
    rng = np.random.default_rng(seed)
    values = np.ones((len(concepts), layout.num_heads), np.float32) if ones else \
        rng.gamma(0.5, size=(len(concepts), layout.num_heads)).astype(np.float32)
    values = values / values.sum(1, keepdims=True) * layout.num_heads  # rows sum to H, as HRVs do
    return HRV(values, tuple(concepts), tuple(layout.labels), "synthetic")


# ------------------------------------------------------------------------------------------------ the reference

class ReferenceEdit:
    """The reference's edit of a batch [source, target 1, ...], one processor per Attention module."""

    def __init__(self, pipe, source, targets, specs, target_tokens, steps, max_queries, hrv=None):
        self.unet, self.steps, self.max_queries = pipe.unet, steps, max_queries
        tok = pipe.tokenizer
        self.modules = {n: m for n, m in self.unet.named_modules()
                        if isinstance(m, Attention) and n.split(".")[0] in ("down_blocks", "mid_block", "up_blocks")}
        self.calls = 0
        self.batch = 1 + len(targets)
        self.offsets = {layer.module_name: layer.offset for layer in head_layout(self.unet).layers}
        self.targets = []
        for target, spec, token in zip(targets, specs, target_tokens):
            t = {"spec": spec}
            if spec.edit == "replace":
                t["mapper"] = word_swap_mapper(tok, source, target)
            else:
                t["index"], t["alphas"] = refinement_mapper(tok, source, target)
            alpha = torch.zeros(steps + 1)  # P2P's get_time_words_attention_alpha: S + 1 rows
            start, end = (0.0, spec.cross_replace_steps)
            alpha[int(start * (steps + 1)) : int(end * (steps + 1))] = 1
            t["alpha"] = alpha
            t["self"] = (0, int(steps * spec.self_replace_steps))
            t["columns"] = word_token_positions(tok, target, token) if token else []
            t["hrv"] = torch.from_numpy(hrv.row(spec.concept)) if spec.restoration == "hrv" else None
            t["equalizer"] = torch.ones(77)
            for word, value in spec.reweight:
                t["equalizer"][word_token_positions(tok, target, word)] = value
            self.targets.append(t)

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
            probs = attn.get_attention_scores(q, k, None)  # softmax(scale q k^T)
            step = self.calls // len(self.modules)  # the reference counts attention calls
            self.calls += 1
            h = attn.heads
            cond = probs[self.batch * h :].reshape(self.batch, h, *probs.shape[1:]).clone()  # (B, h, N, T)
            for i, t in enumerate(self.targets, start=1):
                if is_cross:
                    cond[i] = self._cross(t, cond[0], cond[i], step, name)
                elif t["self"][0] <= step < t["self"][1] and probs.shape[1] <= self.max_queries:
                    cond[i] = cond[0]
            probs = torch.cat([probs[: self.batch * h], cond.reshape(-1, *probs.shape[1:])])
            out = attn.batch_to_head_dim(torch.bmm(probs, v))
            return attn.to_out[1](attn.to_out[0](out))
        return call

    def _cross(self, t, base, own, step, name):
        spec = t["spec"]
        if spec.edit == "replace":
            mapped = torch.einsum("hpw,wn->hpn", base, t["mapper"])
        else:  # P2P's AttentionRefine: base[:, :, mapper] * alphas + own * (1 - alphas)
            mapped = base[:, :, t["index"]] * t["alphas"] + own * (1 - t["alphas"])
        if spec.restoration != "none" and step >= spec.token_restoration_start_step:
            for col in t["columns"]:
                for head in range(own.shape[0]):
                    factor = 1.0 if t["hrv"] is None else float(t["hrv"][self.offsets[name] + head])
                    mapped[head, :, col] = own[head, :, col] * factor
        mapped = mapped * t["equalizer"]
        alpha = t["alpha"][step]
        return alpha * mapped + (1 - alpha) * own


def reference_latents(pipe, source, edits, steps, max_queries, hrv=None, height=None, width=None):
    prompts = [source] + [e.target_prompt for e in edits]
    ref = ReferenceEdit(pipe, source, [e.target_prompt for e in edits], [e.spec for e in edits],
                        [e.target_token for e in edits], steps, max_queries, hrv)
    shape = latent_shape(pipe, height, width)
    latents = seed_latents([SEED], shape).expand(len(prompts), -1, -1, -1)  # one randn, shared
    with ref, torch.no_grad():
        return pipe(prompts, latents=latents.clone(), num_inference_steps=steps, guidance_scale=7.5,
                    output_type="latent", height=shape[1] * pipe.vae_scale_factor,
                    width=shape[2] * pipe.vae_scale_factor).images


# ------------------------------------------------------------------------------------------------ against it

@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_p2p_and_p2p_hrv_match_the_reference(pipes, name):
    """Source, P2P (cross 0.8, self 0.4) and P2P-HRV (cross 0.8, self 0.9, restoration from evaluation 1) in one
    batch; self-attention replaced at the 8 x 8 layers (64 queries)."""
    pipe = pipes[name]
    hrv = synthetic_hrv(pipe)
    edits = (Edit("a red car", P2P, "red"), Edit("a red car", P2P_HRV, "red"))
    ours = generate_edits(pipe, [Group("a blue car", SEED, edits)], hrv=hrv, num_inference_steps=STEPS,
                          self_max_queries=64, decode=None).latents
    reference = reference_latents(pipe, "a blue car", edits, STEPS, 64, hrv)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=2e-5)  # explicit vs fused attention only
    assert (ours[1] - ours[2]).abs().max() > 1e-3  # the HRV restoration changes the edit


@pytest.mark.parametrize("name, max_queries", [("tiny-sd", 64), ("tiny-sd", 96), ("tiny-sdxl", 96)])
def test_p2p_at_a_non_square_size_matches_the_reference(pipes, name, max_queries):
    """48 x 32 pixels (24 x 16 latents): the reference replaces self-attention where a call really has at most
    ``max_queries`` queries (12 x 8 = 96 here, where the default size has 8 x 8 = 64), so with 64 no self-attention
    layer is edited at this size, and with 96 the 12 x 8 ones are."""
    pipe = pipes[name]
    hrv = synthetic_hrv(pipe)
    edits = (Edit("a red car", P2P, "red"), Edit("a red car", P2P_HRV, "red"))
    ours = generate_edits(pipe, [Group("a blue car", SEED, edits)], hrv=hrv, num_inference_steps=STEPS,
                          self_max_queries=max_queries, decode=None, height=48, width=32).latents
    reference = reference_latents(pipe, "a blue car", edits, STEPS, max_queries, hrv, height=48, width=32)
    assert ours.shape[-2:] == (24, 16)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=2e-5)


def test_self_window_follows_the_query_count_at_the_generation_size(pipes):
    """At 24 x 16 latents the self-attention layers have 384 and 96 queries (seen in the probabilities): a limit of
    96 edits and hooks exactly the 96-query layers, a limit of 64 none (the default size's 8 x 8 = 64 is not
    this size's)."""
    pipe = pipes["tiny-sd"]
    layout = head_layout(pipe.unet)
    groups = [Group("a blue car", SEED, (Edit("a red car", P2P),))]
    prompts, seeds, rows, _ = batch_rows(groups)
    latents = seed_latents(seeds, latent_shape(pipe, 48, 32))
    for limit, edited in ((96, {96}), (64, set())):
        spy = Spy(rows, layout, pipe.tokenizer, STEPS, limit, latent=(24, 16))
        hooked = [layer.module_name for layer in layout.self_layers if spy.wants_layer(layer)]
        generate(pipe, prompts, latents, num_inference_steps=STEPS, controllers=[spy], height=48, width=32)
        assert {q for kind, _, q, _ in spy.edits if kind == "self"} == edited
        assert len(hooked) == (4 if limit == 96 else 0)  # tiny-sd's 12 x 8 layers: down 1, mid, up 0 (two)
    unsized = PromptToPrompt(rows, layout, pipe.tokenizer, STEPS, 64)  # no size given: every layer, in case
    assert all(unsized.wants_layer(layer) for layer in layout.self_layers)


def test_local_blend_and_masks_at_a_non_square_size(pipes):
    """The blend maps lie on the 12 x 8 grid of 24 x 16 latents (the default resolution: nearest to 24 / 4), and
    the masks cover the 48 x 32 image."""
    pipe = pipes["tiny-sd"]
    layout = head_layout(pipe.unet)
    assert default_blend_resolution(pipe, layout, 48, 32) == 12
    blend = EditSpec("blend", local_blend=("car", "car"))
    out = generate_edits(pipe, [Group("a blue car", SEED, (Edit("a red car", blend),), ("a red car",))],
                         num_inference_steps=STEPS, height=48, width=32)
    assert out.images.shape == (2, 48, 32, 3)
    assert out.masks[0, "a red car"].shape == (48, 32) and out.masks[0, "a red car"].any()
    maps = BlendMaps([], layout, pipe.tokenizer, 12, latent=(24, 16))
    assert maps.store.size == (12, 8)
    with pytest.raises(UserError, match="among \\[12, 24\\]"):
        BlendMaps([], layout, pipe.tokenizer, 8, latent=(24, 16))


def test_refine_and_reweight_match_the_reference(pipes):
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    refine = EditSpec("refine", edit="refine", cross_replace_steps=0.8, self_replace_steps=0.4)
    refine_hrv = EditSpec("refine_hrv", edit="refine", cross_replace_steps=0.6, self_replace_steps=0.9,
                          restoration="hrv", concept="Shape")
    reweight = EditSpec("reweight", cross_replace_steps=1.0, self_replace_steps=0.4, reweight=(("red", 3.0),))
    edits = (Edit("a red sports car", refine), Edit("a red sports car", refine_hrv, "sports"),
             Edit("a red car", reweight))
    with pytest.raises(UserError, match="same number of words"):
        check_edit(pipe.tokenizer, "a red car", Edit("a red sports car", P2P))
    ours = generate_edits(pipe, [Group("a red car", SEED, edits[:2]), Group("a red car", SEED, edits[2:])],
                          hrv=hrv, num_inference_steps=STEPS, self_max_queries=64, decode=None).latents
    reference = reference_latents(pipe, "a red car", edits, STEPS, 64, hrv)
    torch.testing.assert_close(ours[[0, 1, 2]], reference[:3], atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(ours[4], reference[3], atol=2e-5, rtol=2e-5)


# ------------------------------------------------------------------------------------------------ windows

def test_windows_count_evaluations_as_the_reference():
    assert window(0.8, 51) == (0, 40)  # cross: 51 rows, evaluations 0-39
    assert window(0.9, 50) == (0, 45)  # P2P-HRV self: evaluations 0-44
    assert window(0.4, 50) == (0, 20)  # baseline self: 0-19
    assert window((0.2, 0.5), 51) == (10, 25)
    assert window(0.0, 51) == (0, 0)


class Spy(PromptToPrompt):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.edits = []  # (kind, step, query count, rows)

    def edit_probs(self, layer, call, probs):
        queries = probs.shape[2]  # as the call really has them
        self.edits.append((layer.kind, call.step, queries, tuple(self.edited_rows(layer, call).tolist())))
        return super().edit_probs(layer, call, probs)


def test_windows_and_layers_that_are_edited(pipes):
    """10 steps (11 evaluations): P2P rows cross < int(0.8*11) = 8 and self < int(0.4*10) = 4; P2P-HRV rows self
    < 9; self-attention only where queries <= 64 (8 x 8), cross-attention everywhere; source rows never."""
    pipe = pipes["tiny-sd"]
    layout = head_layout(pipe.unet)
    groups = [Group("a blue car", 1, (Edit("a red car", P2P), Edit("a red car", P2P_HRV, "red")))]
    _, _, rows, _ = batch_rows(groups)
    spy = Spy(rows, layout, pipe.tokenizer, 10, 64, hrv=synthetic_hrv(pipe), latent=(16, 16))
    with AttentionHooks(pipe.unet, [spy]) as hooks:
        hooked = {n for n, m in pipe.unet.attn_processors.items() if type(m).__name__ == "HookedAttnProcessor"}
        for step in range(11):
            hooks.set_call(step, slice(3, 6))
            with torch.no_grad():
                pipe.unet(torch.randn(6, 4, 16, 16), 500, encoder_hidden_states=torch.randn(6, 77, 32))
    cross = {(s, r) for kind, s, _, r in spy.edits if kind == "cross"}
    self_ = {(s, q, r) for kind, s, q, r in spy.edits if kind == "self"}
    assert cross == {(s, (1, 2)) for s in range(8)}
    assert {q for _, q, _ in self_} == {64}
    assert {(s, r) for s, _, r in self_} == {(s, (1, 2)) for s in range(4)} | {(s, (2,)) for s in range(4, 9)}
    self_hooked = {n for n in hooked if ".attn1." in n}  # only the small self-attention layers are hooked
    assert self_hooked == {f"{layer.module_name}.processor" for layer in layout.self_layers if layer.num_queries <= 64}


def test_default_self_threshold_and_blend_resolution(pipes):
    pipe = pipes["tiny-sd"]
    assert default_self_max_queries(pipe) == 16  # 16 x 16 latents: (16/4)^2
    assert default_self_max_queries(pipe, 128, 128) == 256  # 64 x 64 latents (VAE factor 2), as SD v1.4 at 512²
    assert default_blend_resolution(pipe, head_layout(pipe.unet)) == 8  # CA at 16 and 8: nearest to 16/4 = 4


# ------------------------------------------------------------------------------------------------ equalities

def plain(pipe, prompts, steps=STEPS):
    return generate(pipe, prompts, seed_latents([SEED] * len(prompts), latent_shape(pipe)), num_inference_steps=steps,
                    decode="truncate")


def test_zero_windows_without_hrv_equal_plain_generation_of_the_target(pipes):
    """Both windows at 0: nothing is edited, so the edited image is the target prompt's own image from the seed."""
    pipe = pipes["tiny-sd"]
    zero = EditSpec("zero", cross_replace_steps=0.0, self_replace_steps=0.0)
    out = generate_edits(pipe, [Group("a blue car", SEED, (Edit("a red car", zero),))], num_inference_steps=STEPS)
    batch = plain(pipe, ["a blue car", "a red car"])
    assert np.array_equal(out.images, batch.images)  # same batch: bit for bit
    alone = plain(pipe, ["a red car"])  # batch of one: the same up to kernel rounding (measured <= 2.3e-5)
    torch.testing.assert_close(out.latents[1:], alone.latents, atol=1e-4, rtol=1e-4)
    assert np.abs(out.images[1].astype(int) - alone.images[0]).max() <= 1


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_the_source_image_is_never_changed(pipes, name):
    """Every kind of edit in one batch (P2P, P2P-HRV, reweight, local blend with HRV weights, refine): the source rows
    are bit for bit the plain generation of the same prompts, and the edited rows are not."""
    pipe = pipes[name]
    hrv = synthetic_hrv(pipe)
    blend = EditSpec("blend", cross_replace_steps=0.8, self_replace_steps=0.9, restoration="hrv", concept="Color",
                     reweight=(("red", 2.0),), reweight_with_hrv=True, local_blend=("car", "car"), blend_with_hrv=True)
    refine = EditSpec("refine", edit="refine")
    groups = [Group("a blue car", SEED, (Edit("a red car", P2P), Edit("a red car", P2P_HRV, "red"),
                                         Edit("a red car", blend, "red")), ("a red car",)),
              Group("a blue car", SEED + 1, (Edit("a blue sports car", refine),))]
    out = generate_edits(pipe, groups, hrv=hrv, num_inference_steps=STEPS, self_max_queries=64)
    prompts, seeds, _, sources = batch_rows(groups)
    reference = generate(pipe, prompts, seed_latents(seeds, latent_shape(pipe)), num_inference_steps=STEPS,
                         decode="truncate")
    assert sources == [0, 4]
    assert np.array_equal(out.images[sources], reference.images[sources])
    assert torch.equal(out.latents[sources], reference.latents[sources])
    for row in (1, 2, 3, 5):
        assert (out.latents[row] - reference.latents[row]).abs().max() > 1e-4
    alone = plain(pipe, ["a blue car"])  # batch of one: the same up to kernel rounding
    torch.testing.assert_close(out.latents[:1], alone.latents, atol=1e-4, rtol=1e-4)


def test_p2p_hrv_with_hrv_of_ones(pipes):
    """P2P-HRV with every HRV value 1 is *not* the published P2P baseline: token restoration gives the target token
    the target's own attention (times 1) where P2P injects the source word's map. What it equals, bit for bit:
    (1) --replace_all_heads (restoration with factor 1); (2) P2P's refinement edit of the same prompts without HRV,
    which aligns the swapped word to no source token, so it also keeps its own attention while every other token
    gets the source's; (3) the published P2P baseline once restoration starts after the cross window
    (--token_restoration_start_step >= int(0.8 * (S + 1))). And it differs from the baseline otherwise."""
    pipe = pipes["tiny-sd"]
    ones = synthetic_hrv(pipe, ones=True)
    windows = dict(cross_replace_steps=0.8, self_replace_steps=0.9)
    hrv_ones = EditSpec("ones", restoration="hrv", concept="Color", **windows)
    all_heads = EditSpec("all", restoration="all_heads", **windows)
    refine = EditSpec("refine", edit="refine", **windows)
    late = EditSpec("late", restoration="hrv", concept="Color", token_restoration_start_step=int(0.8 * (STEPS + 1)),
                    **windows)
    baseline = EditSpec("p2p", **windows)
    edits = tuple(Edit("a red car", spec, "red") for spec in (hrv_ones, all_heads, refine, late, baseline))
    out = generate_edits(pipe, [Group("a blue car", SEED, edits)], hrv=ones, num_inference_steps=STEPS,
                         self_max_queries=64, decode=None).latents
    assert torch.equal(out[1], out[2])  # (1)
    assert torch.equal(out[1], out[3])  # (2)
    assert torch.equal(out[4], out[5])  # (3)
    assert (out[1] - out[5]).abs().max() > 1e-4  # restoration matters


def test_explicit_attention_everywhere_gives_the_same_edits(pipes):
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    groups = [Group("a blue car", SEED, (Edit("a red car", P2P), Edit("a red car", P2P_HRV, "red")))]
    fast = generate_edits(pipe, groups, hrv=hrv, num_inference_steps=STEPS, self_max_queries=64, decode=None)
    explicit = generate_edits(pipe, groups, hrv=hrv, num_inference_steps=STEPS, self_max_queries=64, decode=None,
                              explicit=True)
    torch.testing.assert_close(fast.latents, explicit.latents, atol=2e-5, rtol=2e-5)


# ------------------------------------------------------------------------------------------------ local blend

class FakeStore:
    def __init__(self, maps):
        self.maps = maps


def test_local_blend_is_p2p_local_blend():
    """x_edit <- x_src + mask (x_edit - x_src), mask = union over (source words in the source row, target words in
    the edited row) of: max-pool 3x3, nearest upsampling, / max, > threshold. Checked against numpy."""
    rng = np.random.default_rng(0)
    maps = torch.from_numpy((rng.random((2, 1, 4, 4, 77)) ** 12).astype(np.float32))  # (rows, groups, R, R, T)
    source_cols, target_cols = torch.zeros(77, dtype=torch.bool), torch.zeros(77, dtype=torch.bool)
    source_cols[[2, 3]], target_cols[2] = True, True
    blend = BlendMaps.__new__(BlendMaps)
    blend.store = FakeStore(maps)
    blend.blend = [(1, 0, 0, source_cols, target_cols, 0.6)]
    latents = torch.from_numpy(rng.standard_normal((2, 4, 8, 8)).astype(np.float32))
    out = LocalBlend(blend).after(0, None, latents)

    def mask(m):  # numpy: 3x3 max-pool (edge-clipped), nearest x2, / max, > 0.6
        pooled = np.array([[m[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].max() for j in range(4)] for i in range(4)])
        up = pooled.repeat(2, 0).repeat(2, 1)
        return up / up.max() > 0.6

    m = maps.numpy()
    expected_mask = mask(m[0, 0][..., [2, 3]].sum(-1)) | mask(m[1, 0][..., 2])
    x = latents.numpy()
    expected = x[0] + expected_mask[None] * (x[1] - x[0])
    np.testing.assert_allclose(out[1].numpy(), expected, rtol=0, atol=1e-6)
    assert torch.equal(out[0], latents[0])  # the source row is never blended
    assert 0 < expected_mask.mean() < 1


def test_local_blend_with_an_empty_region_keeps_the_source(pipes):
    """Threshold above 1: no pixel is kept, so after every step the edited row is pulled back to its source."""
    pipe = pipes["tiny-sd"]
    nothing = EditSpec("blend", local_blend=("car", "car"), blend_threshold=1.5)
    out = generate_edits(pipe, [Group("a blue car", SEED, (Edit("a red car", nothing),))], num_inference_steps=STEPS)
    assert torch.equal(out.latents[0], out.latents[1])


def test_blend_maps_weighted_by_the_hrv(pipes):
    pipe = pipes["tiny-sd"]
    hrv = synthetic_hrv(pipe)
    layout = head_layout(pipe.unet)
    spec = EditSpec("b", restoration="hrv", concept="Shape", local_blend=("car", "car"), blend_with_hrv=True)
    _, _, rows, _ = batch_rows([Group("a blue car", 1, (Edit("a red car", spec, "red"),))])
    maps = BlendMaps(rows, layout, pipe.tokenizer, 8, hrv)
    weights = maps.store.head_weights  # (groups, H), zero outside the 8 x 8 layers
    eight = torch.tensor([layer.resolution == (8, 8) for layer in layout.layers for _ in range(layer.heads)])
    assert torch.equal(weights[0], eight.float())
    torch.testing.assert_close(weights[1], torch.from_numpy(hrv.row("Shape")) * eight)
    assert maps.blend[0][2] == 1  # the row reads the HRV-weighted group


def test_masks_are_the_swapped_words_region_in_the_source(pipes):
    pipe = pipes["tiny-sd"]
    group = Group("a blue car", SEED, (Edit("a red car", P2P),), ("a red car",))
    out = generate_edits(pipe, [group], num_inference_steps=STEPS)
    mask = out.masks[0, "a red car"]
    assert mask.shape == out.images.shape[1:3] and mask.dtype == bool and mask.any()


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize("edit, message", [
    (Edit("a red car", P2P_HRV, None), "--target_token is required"),
    (Edit("a red car", P2P_HRV, "green"), "not a word of the target prompt"),
    (Edit("a big red car", P2P_HRV, "red"), "same number of words"),
    (Edit("a red car", EditSpec("r", reweight=(("blue", 2.0),))), "reweighted word"),
    (Edit("a red car", EditSpec("b", local_blend=("red", "car"))), "blend word"),
])
def test_edits_the_reference_would_crash_on_or_ignore(pipes, edit, message):
    with pytest.raises(UserError, match=message):
        check_edit(pipes["tiny-sd"].tokenizer, "a blue car", edit)


def test_unknown_concept_and_bad_settings(pipes):
    pipe = pipes["tiny-sd"]
    spec = EditSpec("x", restoration="hrv", concept="Colour")
    with pytest.raises(UserError, match="unknown concept 'Colour'"):
        generate_edits(pipe, [Group("a blue car", 1, (Edit("a red car", spec, "red"),))], hrv=synthetic_hrv(pipe),
                       num_inference_steps=2)
    with pytest.raises(UserError, match="fraction"):
        EditSpec("x", cross_replace_steps=-0.1)
    with pytest.raises(UserError, match="names no concept"):
        EditSpec("x", restoration="hrv")


def test_word_mask_normalizes_each_map():
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[1, 3, 3] = 10.0, 0.01
    mask = word_mask(maps, (8, 8), 0.3)
    assert mask.shape == (2, 1, 8, 8)
    assert mask[0, 0, :4, :4].all() and not mask[0, 0, 4:, 4:].any()  # pooled 2x2 corner, upsampled x2
    assert mask[1, 0, 4:, 4:].all()  # a faint map is normalized by its own maximum


def test_controller_sees_no_row_outside_its_windows(pipes):
    pipe = pipes["tiny-sd"]
    layout = head_layout(pipe.unet)
    _, _, rows, _ = batch_rows([Group("a blue car", 1, (Edit("a red car", P2P),))])
    p2p = PromptToPrompt(rows, layout, pipe.tokenizer, 50, 256)
    cross, small_self = layout.layers[0], layout.self_layers[1]
    assert p2p.edits_probs(cross, UNetCall(39)) and not p2p.edits_probs(cross, UNetCall(40))
    assert p2p.edits_probs(small_self, UNetCall(19, latent=(16, 16)))
    assert not p2p.edits_probs(small_self, UNetCall(20, latent=(16, 16)))
    assert p2p.edited_rows(cross, UNetCall(0)).tolist() == [1]
    probs = torch.rand(2, cross.heads, 4, 77)
    assert p2p.edit_probs(cross, UNetCall(45), probs) is probs
    # inside the windows: the edited row (1) takes the source row's (0) attention, the source row is untouched;
    # "blue" -> "red" is one token for one, so the word-swap mapper is the identity
    for layer in (cross, small_self):
        queries = layer.resolution[0] * layer.resolution[1]
        probs = torch.rand(2, layer.heads, queries, 77 if layer.is_cross else queries)
        edited = p2p.edit_probs(layer, UNetCall(0, latent=layer.default_latent), probs.clone())
        assert torch.equal(edited[0], probs[0]) and torch.equal(edited[1], probs[0]), layer.module_name


def test_edited_words_past_the_text_encoders_window_are_refused():
    """Issue 20: a swap past token 77 gave the P2P baseline silently; every edited word is now checked."""
    from hrv_diffusion.core.tokenizer import clip_tokenizer

    tok, long = clip_tokenizer(), " ".join(["a"] * 80)
    check_edit(tok, f"a blue car {long}", Edit(f"a red car {long}", P2P_HRV, "red"))  # inside the window: fine
    with pytest.raises(UserError, match="the swapped word 'blue' is past the 77-token window"):
        check_edit(tok, f"a car {long} blue", Edit(f"a car {long} red", P2P))
    with pytest.raises(UserError, match="--target_token 'red' is past the 77-token window"):
        check_edit(tok, f"a car {long} blue", Edit(f"a car {long} red", P2P_HRV, "red"))
    refine = EditSpec("refine", edit="refine", cross_replace_steps=0.8, self_replace_steps=0.4)
    with pytest.raises(UserError, match="the added word 'sports' is past the 77-token window"):
        check_edit(tok, f"a car {long}", Edit(f"a car {long} sports", refine))
    reweight = EditSpec("reweight", cross_replace_steps=1.0, self_replace_steps=0.4, reweight=(("car", 3.0),))
    with pytest.raises(UserError, match="the reweighted word 'car' is past"):
        check_edit(tok, f"a blue {long} car", Edit(f"a red {long} car", reweight))
