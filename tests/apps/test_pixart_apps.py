"""Prompt-to-Prompt / P2P-HRV and Attend-and-Excite / A&E-HRV on tiny-pixart (the PixArt family, T5 text).

What is checked against an independent computation: the source row of an edit batch is the plain generation bit for
bit; an edit with empty windows is the plain generation of its target bit for bit, an identity edit within float
tolerance; inside the cross window an edited row's probabilities are the source row's except the restored word's
column, which keeps its own (T5 positions: 0-based); self-attention is replaced in every block; the local blend
reads the patch grid's maps upsampled to the latent. A&E's scores equal maps made here from q·kᵀ with the text
padding's bias, softmaxed over the prompt's columns (words and </s>, first word at 0, padding left out); A&E with
nothing to excite is the plain generation bit for bit.
"""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from hrv_diffusion.apps.attend_excite import (AttendExciteSettings, Targets, default_attention_res,
                                              generate_attend_excite, max_attention, token_columns, token_map_store)
from hrv_diffusion.apps.attend_excite_tokens import eot_position, resolve_targets
from hrv_diffusion.apps.p2p import (BlendMaps, Edit, EditSpec, Group, LocalBlend, PromptToPrompt, batch_rows,
                                    default_blend_resolution, default_self_max_queries, generate_edits, word_mask)
from hrv_diffusion.core.attention import Controller
from hrv_diffusion.core.families import text_axis
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.tiny_pixart import tiny_pixart_pipeline

SOURCE, TARGET = "a red circle", "a blue circle"
STEPS, CFG = 3, 4.5


@pytest.fixture(scope="module")
def pipe():
    return tiny_pixart_pipeline()


def plain(pipe, prompts, seeds, steps=STEPS):
    return generate(pipe, prompts, seed_latents(seeds, latent_shape(pipe)), num_inference_steps=steps,
                    guidance_scale=CFG).latents


def test_the_text_axis_and_the_pixart_rules(pipe):
    axis = text_axis(pipe)
    assert (axis.length, axis.first, axis.masks_padding) == (120, 0, True)  # PixArt-α's T5 length, no SOT
    layout = head_layout(pipe)
    grid = layout.layers[0].grid(latent_shape(pipe)[1:])
    assert grid == (8, 8)  # 16x16 latents, patch 2
    assert default_self_max_queries(pipe) == 64  # every block's self-attention (the UNet rule would give 16: none)
    assert default_blend_resolution(pipe, layout) == 8  # the one grid
    assert default_attention_res("standard", 16, pipe) == 8  # all blocks on the patch grid
    assert default_attention_res("hrv", 16, pipe) == 8
    assert default_attention_res("standard", 16) == 8 and default_attention_res("standard", 64) == 16  # UNets


# ------------------------------------------------------------------------------------------------ P2P


def test_p2p_source_is_plain_and_an_edit_without_windows_is_the_plain_target(pipe):
    edits = (Edit(TARGET, EditSpec("p2p")),
             Edit(TARGET, EditSpec("none", cross_replace_steps=0.0, self_replace_steps=0.0)))
    out = generate_edits(pipe, [Group(SOURCE, 3, edits)], num_inference_steps=STEPS, guidance_scale=CFG, decode=None)
    reference = plain(pipe, [SOURCE, TARGET, TARGET], [3, 3, 3])  # the same batch, unedited
    assert torch.equal(out.latents[0], reference[0])  # the source row is never changed
    assert torch.equal(out.latents[2], reference[2])  # no window: nothing edited, the fused kernel everywhere
    assert not torch.allclose(out.latents[1], reference[1], atol=1e-3)  # P2P did edit
    assert out.settings["self_max_queries"] == 64


@pytest.mark.parametrize("restoration", ["none", "all_heads"])
def test_an_identity_edit_equals_plain_generation(pipe, restoration):
    """Target = source: the mapped attention is the row's own (explicit P @ V instead of the fused kernel: float
    rounding only), in cross and self attention of every block."""
    spec = EditSpec("same", restoration=restoration, self_replace_steps=1.0, cross_replace_steps=1.0)
    out = generate_edits(pipe, [Group(SOURCE, 4, (Edit(SOURCE, spec, "red" if restoration != "none" else None),))],
                         num_inference_steps=STEPS, guidance_scale=CFG, decode=None)
    reference = plain(pipe, [SOURCE, SOURCE], [4, 4])  # the same batch, unedited
    assert torch.equal(out.latents[0], reference[0])
    # the latents are O(100) here: a relative 1e-4 is float32 rounding over 3 steps (an edit moves them by O(1))
    torch.testing.assert_close(out.latents[1], reference[1], atol=1e-3, rtol=1e-4)


class Probs(Controller):
    """Keeps the conditional rows' cross-attention probabilities of every layer call, as it sees them."""

    def __init__(self):
        self.calls = []  # (layer name, step, probs (Bc, h, N, T))

    def reads_probs(self, layer, call):
        return True

    def read_probs(self, layer, call, probs):
        self.calls.append((layer.module_name, call.step, probs.clone()))


def test_p2p_hrv_probabilities_on_t5_columns(pipe):
    """In the cross window the edited row attends as the source, except the target word's column: its own
    attention (all-heads restoration); "blue" is T5 token 1 (no start token)."""
    layout, tokenizer = head_layout(pipe), pipe.tokenizer
    spec = EditSpec("restore", restoration="all_heads", cross_replace_steps=1.0, self_replace_steps=0.0)
    prompts, seeds, rows, _ = batch_rows([Group(SOURCE, 5, (Edit(TARGET, spec, "blue"),))])
    p2p = PromptToPrompt(rows, layout, tokenizer, STEPS, 64, text_length=text_axis(pipe).length)
    before, after = Probs(), Probs()
    generate(pipe, prompts, seed_latents(seeds, latent_shape(pipe)), num_inference_steps=STEPS, guidance_scale=CFG,
             controllers=[before, p2p, after])
    blue = tokenizer.convert_ids_to_tokens(tokenizer(TARGET).input_ids).index("▁blue")
    assert blue == 1
    others = torch.ones(120, dtype=torch.bool)
    others[blue] = False
    assert len(after.calls) == len(layout.layers) * STEPS  # DPM-Solver: one evaluation per step, all in the window
    for (_, _, own), (_, _, edited) in zip(before.calls, after.calls):  # rows: 0 source, 1 edited
        torch.testing.assert_close(edited[1][..., others], own[0][..., others], atol=0, rtol=0)
        torch.testing.assert_close(edited[1][..., blue], own[1][..., blue], atol=0, rtol=0)
        assert torch.equal(edited[0], own[0])


def test_self_attention_is_replaced_in_every_block(pipe):
    layout = head_layout(pipe)
    spec = EditSpec("p2p", cross_replace_steps=0.0, self_replace_steps=1.0)
    _, _, rows, _ = batch_rows([Group(SOURCE, 6, (Edit(TARGET, spec),))])
    p2p = PromptToPrompt(rows, layout, pipe.tokenizer, STEPS, default_self_max_queries(pipe),
                         latent=latent_shape(pipe)[1:], text_length=120)
    assert [layer for layer in layout.self_layers if p2p.wants_layer(layer)] == list(layout.self_layers)
    assert len(layout.self_layers) == 3


def test_local_blend_on_the_patch_grid(pipe):
    """The blend mask is the words' maps on the 8x8 patch grid, max-pooled, upsampled to the 16x16 latent: after the
    last step the edited row equals its source wherever the final mask is off."""
    layout, tokenizer = head_layout(pipe), pipe.tokenizer
    spec = EditSpec("blend", local_blend=("red", "blue"), blend_threshold=0.9)
    prompts, seeds, rows, _ = batch_rows([Group(SOURCE, 7, (Edit(TARGET, spec),))])
    shape = latent_shape(pipe)
    p2p = PromptToPrompt(rows, layout, tokenizer, STEPS, 64, latent=shape[1:], text_length=120)
    maps = BlendMaps(rows, layout, tokenizer, 8, latent=shape[1:], text_length=120)
    assert maps.store.size == (8, 8) and set(maps.store.weights) == {layer.module_name for layer in layout.layers}
    out = generate(pipe, prompts, seed_latents(seeds, shape), num_inference_steps=STEPS, guidance_scale=CFG,
                   controllers=[maps.store, p2p], step_hooks=[LocalBlend(maps)]).latents
    store = maps.store.maps  # (2, 1, 8, 8, 120)
    red, blue = 1, 1  # T5 positions of the blend words
    summed = torch.stack([store[0, 0, :, :, red], store[1, 0, :, :, blue]])  # (2, 8, 8)
    pooled = F.interpolate(F.max_pool2d(summed[:, None], 3, stride=1, padding=1), size=(16, 16))
    mask = ((pooled / pooled.amax(dim=(2, 3), keepdim=True)) > 0.9).any(0)[0]  # (16, 16)
    assert torch.equal(mask, word_mask(summed, (16, 16), 0.9).any(0)[0])
    assert 0 < int(mask.sum()) < 256
    assert torch.equal(out[1][:, ~mask], out[0][:, ~mask])
    assert not torch.equal(out[1][:, mask], out[0][:, mask])


def test_p2p_masks_come_at_pixel_size(pipe):
    group = Group(SOURCE, 8, (Edit(TARGET, EditSpec("p2p")),), mask_targets=(TARGET,))
    out = generate_edits(pipe, [group], num_inference_steps=2, guidance_scale=CFG, decode="truncate")
    [mask] = out.masks.values()
    assert mask.shape == (32, 32) and mask.dtype == bool and mask.any()


# ------------------------------------------------------------------------------------------------ A&E

PROMPT = "circle and a blue square"  # the first word is a target: T5 position 0


class Inputs:
    """Forward pre-hooks on every block's attn2: its queries' input and the text it attends."""

    def __init__(self, transformer):
        self.transformer, self.seen, self.handles = transformer, [], []

    def __enter__(self):
        for block in self.transformer.transformer_blocks:
            self.handles.append(block.attn2.register_forward_pre_hook(self._keep, with_kwargs=True))
        return self

    def _keep(self, module, args, kwargs):
        self.seen.append((module, args[0].detach(), kwargs["encoder_hidden_states"].detach()))

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()


def direct_maps(pipe, seen, prompt) -> torch.Tensor:
    """The mean over every head of every block of softmax(q kᵀ / √d + padding bias): (8, 8, T)."""
    mask = pipe.tokenizer(prompt, padding="max_length", max_length=120, return_tensors="pt").attention_mask[0]
    bias = (1.0 - mask.float()) * -10000.0  # (T,): what the transformer adds for T5's padding
    maps = []
    for attn, hidden, text in seen:
        q = attn.to_q(hidden)[0].view(-1, attn.heads, 8).transpose(0, 1)  # (h, N, d)
        k = attn.to_k(text)[0].view(-1, attn.heads, 8).transpose(0, 1)  # (h, T, d)
        probs = (q @ k.transpose(-1, -2) / 8 ** 0.5 + bias).softmax(-1)  # (h, N, T)
        maps.append(probs.mean(0))
    return torch.stack(maps).mean(0).view(8, 8, -1)


def test_ae_scores_the_prompts_columns_from_q_and_k(pipe):
    ids = pipe.tokenizer(PROMPT).input_ids
    pieces = pipe.tokenizer.convert_ids_to_tokens(ids)
    circle, square, eos = pieces.index("▁circle"), pieces.index("▁square"), len(ids) - 1
    axis = text_axis(pipe)
    positions, _ = resolve_targets(pipe.tokenizer, PROMPT, words=["circle", "square"], axis=axis)
    assert positions == [[circle], [square]] and circle == 0 and eot_position(pipe.tokenizer, PROMPT, axis) == eos
    settings = AttendExciteSettings(mode="standard", attention_res=8, num_inference_steps=1, guidance_scale=1.0)
    store = token_map_store(head_layout(pipe), settings, latent=(16, 16))
    with torch.no_grad(), Inputs(pipe.transformer) as inputs:
        generate(pipe, [PROMPT], seed_latents([9], latent_shape(pipe)), num_inference_steps=1, guidance_scale=1.0,
                 controllers=[store])
    expected = direct_maps(pipe, inputs.seen, PROMPT)  # (8, 8, T)
    torch.testing.assert_close(store.maps[0, 0], expected, atol=1e-6, rtol=1e-5)
    targets = Targets.build([positions], [eos], groups=[0, 0])  # standard A&E: one map for both
    targets = replace(targets, first=axis.first, masks_padding=axis.masks_padding)
    for token_slice, stop in (("1:77", eos + 1), ("1:-1", eos), ("1:eot", eos)):
        assert token_columns(token_slice, eos, 120, 0, True) == slice(0, stop)
        scores = max_attention(store.maps, targets, replace(settings, token_slice=token_slice))  # (1, 2)
        soft = (expected[..., :stop] * 100).softmax(-1)  # words (and </s>), padding left out
        torch.testing.assert_close(scores[0], torch.stack([soft[..., circle].max(), soft[..., square].max()]))


def test_ae_with_nothing_to_excite_is_plain_generation(pipe):
    """No update step (max_iter_to_alter 0) and a threshold every sample meets: a gradient pass runs, nothing
    moves, and the image is plain generation bit for bit (as is the sd mode)."""
    axis = text_axis(pipe)
    positions, _ = resolve_targets(pipe.tokenizer, PROMPT, words=["circle", "square"], axis=axis)
    targets = Targets.build([positions] * 2, [eot_position(pipe.tokenizer, PROMPT, axis)] * 2)
    latents = seed_latents([1, 2], latent_shape(pipe))
    reference = generate(pipe, [PROMPT] * 2, latents, num_inference_steps=STEPS, guidance_scale=CFG).latents
    for mode in ("sd", "standard"):
        settings = AttendExciteSettings(mode=mode, attention_res=8, max_iter_to_alter=0, thresholds={0: 0.0},
                                        num_inference_steps=STEPS, guidance_scale=CFG)
        out = generate_attend_excite(pipe, [PROMPT] * 2, latents, targets, settings, decode=None)
        assert torch.equal(out.latents, reference)
        assert out.gradient_passes == (1 if mode == "standard" else 0)


@pytest.mark.parametrize("mode", ["standard", "hrv"])
def test_ae_excites_through_the_transformer(pipe, mode):
    axis = text_axis(pipe)
    positions, _ = resolve_targets(pipe.tokenizer, PROMPT, words=["circle", "square"], axis=axis)
    targets = Targets.build([positions], [eot_position(pipe.tokenizer, PROMPT, axis)], groups=[0, 1])
    settings = AttendExciteSettings(mode=mode, attention_res=8, max_iter_to_alter=2, thresholds={},
                                    num_inference_steps=STEPS, guidance_scale=CFG)
    hrv_rows = torch.rand(2, 12, generator=torch.Generator().manual_seed(0)).numpy() if mode == "hrv" else None
    if hrv_rows is not None:
        hrv_rows = hrv_rows / hrv_rows.sum(1, keepdims=True) * 12  # an HRV row sums to H
    latents = seed_latents([3], latent_shape(pipe))
    out = generate_attend_excite(pipe, [PROMPT], latents, targets, settings, hrv_rows, decode=None)
    reference = generate(pipe, [PROMPT], latents, num_inference_steps=STEPS, guidance_scale=CFG).latents
    records = out.records[0]
    assert [r["step"] for r in records] == [0, 1] and all(r["updated"] for r in records)
    assert all(0 < m < 1 for r in records for m in r["max_attention"])
    assert not torch.allclose(out.latents, reference, atol=1e-4)  # the gradient moved the latents


def test_token_indices_count_t5_words_from_zero(pipe):
    from hrv_diffusion.errors import UserError

    axis = text_axis(pipe)
    positions, labels = resolve_targets(pipe.tokenizer, PROMPT, token_indices=[0, 4], axis=axis)
    assert positions == [[0], [4]] and labels == ["▁circle", "▁square"]
    with pytest.raises(UserError, match=r"not word tokens of the prompt \(0\.\.4\)"):
        resolve_targets(pipe.tokenizer, PROMPT, token_indices=[5], axis=axis)  # 5 is </s>
