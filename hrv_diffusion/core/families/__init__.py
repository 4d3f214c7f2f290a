"""Model families: what the toolkit needs to know about a denoiser and its text encoder, one module per family.

A ``Family`` is a small record of functions; the generic code (attention hooks, the denoising loop, the word bank,
word embeddings) asks the family of the pipeline it is given and never looks at down/mid/up or ``attn2`` itself.

- ``unet``: SD 1.x / 2.x and SDXL (``pipe.unet``, CLIP text, the published head order and labels).
- ``pixart``: PixArt-α / PixArt-Σ (``pipe.transformer``, T5 text, blocks in order, ``block 12, head 3``).

Both families' attention is diffusers' ``Attention`` with ``AttnProcessor2_0``, so one hooked processor
(``core/attention.HookedAttnProcessor``) replicates the stock one for both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hrv_diffusion.core.families import pixart, unet


@dataclass(frozen=True)
class Family:
    """What a family provides (``model`` is its denoiser, ``pipe`` the diffusers pipeline)."""

    name: str
    denoiser_attr: str  # the pipeline attribute holding the denoiser: "unet" | "transformer"
    sample_arg: str  # the name of the denoiser's first argument, the noisy latents (B, C, h, w)
    layout: Callable  # (model) -> HeadLayout: attention layers in canonical order, head labels, query grids
    encode_words: Callable  # (pipe, words, batch_size) -> embeddings (W, L, D), token_lengths (W,): sink row 0
    bank_keys: Callable  # (model, layer, rows (R, D)) -> (R, h * d): the layer's keys of stored text rows
    encode_prompts: Callable  # (pipe, prompts, negative_prompt, cfg, height, width) -> Conditioning
    predict: Callable  # (forward, config, sample, t, embeds, added) -> noise (B, C, h, w) of one denoiser call
    encoding: Callable  # (pipe) -> name of the word encoding, written into embedding files
    downsampling: Callable  # (config) -> how much the coarsest query grid is smaller than the latent
    text_length: Callable  # (pipe) -> T, the text tokens of an encoded prompt (the keys of a CA layer)
    start_tokens: int  # tokens before a prompt's first word: 1 (CLIP's SOT), 0 (T5)
    masks_padding: bool  # padding columns carry an attention bias (T5) rather than being attended text (CLIP)
    self_replace_queries: Callable  # (config, latent (h, w)) -> P2P: most queries of a self-attention layer replaced
    attention_res: Callable  # (mode, latent side, config) -> A&E's default map side R


UNET = Family("unet", "unet", "sample", unet.layout, unet.encode_words, unet.bank_keys, unet.encode_prompts,
              unet.predict, unet.encoding, unet.downsampling,
              unet.text_length, unet.START_TOKENS, False, unet.self_replace_queries, unet.attention_res)
PIXART = Family("pixart", "transformer", "hidden_states", pixart.layout, pixart.encode_words, pixart.bank_keys,
                pixart.encode_prompts, pixart.predict, pixart.encoding, pixart.downsampling,
                pixart.text_length, pixart.START_TOKENS, True, pixart.self_replace_queries, pixart.attention_res)
FAMILIES = (UNET, PIXART)


@dataclass(frozen=True)
class TextAxis:
    """The text columns of a CA layer's probabilities for one pipeline: what token positions mean there."""

    length: int  # T: columns of an encoded prompt (CLIP 77; T5: PixArt-α 120, Σ 300)
    first: int  # position of a prompt's first word token: 1 after CLIP's SOT, 0 for T5 (no start token)
    masks_padding: bool  # True: columns past a prompt's end token are padding with ~0 probability (T5's mask)


def text_axis(pipe) -> TextAxis:
    """The ``TextAxis`` of a pipeline, from its family; CLIP's (SOT first, no padding mask) for a PixArt transformer
    that reads CLIP text (the toy DiT)."""
    family = family_of(pipe)
    if family is PIXART and pixart.reads_clip(pipe):
        family = UNET
    return TextAxis(int(family.text_length(pipe)), family.start_tokens, family.masks_padding)


def family_of(pipe_or_model) -> Family:
    """The family of a pipeline or of its denoiser (by the denoiser's class)."""
    if getattr(pipe_or_model, "transformer", None) is not None or pixart.is_pixart(pipe_or_model):
        return PIXART
    return UNET


def denoiser(pipe_or_model):
    """The denoiser of a pipeline (its UNet or transformer); a denoiser is returned as is."""
    return getattr(pipe_or_model, family_of(pipe_or_model).denoiser_attr, None) or pipe_or_model


def model_from_config(config: dict):
    """A denoiser built from its config dict on the meta device (no weights): PixArt's transformer, or a UNet."""
    return pixart.from_config(config) if pixart.is_config(config) else unet.from_config(config)
