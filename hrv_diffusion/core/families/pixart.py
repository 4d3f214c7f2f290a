"""The PixArt family: PixArt-α and PixArt-Σ (``pipe.transformer``, a ``PixArtTransformer2DModel``; T5 text).

Layout: the transformer blocks in forward order; block i's cross-attention is ``transformer_blocks.i.attn2`` and
its self-attention ``attn1``, both with the model's ``num_attention_heads``. Labels: ``block 12, head 3``. The
queries sit on the patch grid, (h / p) x (w / p) for a latent of h x w and patch size p.

Text: every block attends to the same context, ``caption_projection(T5(prompt))``, with the prompt's padding
given as an attention bias (``(1 - mask) * -10000``, made by the transformer; the hooked processor adds it as the
stock one does, so padded tokens keep ~0 probability in maps and scaling too). A word's key at a block is
therefore ``attn2.to_k(caption_projection(T5(word)))``, static per layer, as the UNet's ``to_k(CLIP(word))``.

The sink: T5 has no start token, and a word's own ``</s>`` depends on the word (the encoder is bidirectional).
The vote's sink row is the ``</s>`` of the empty prompt, ``T5("")[0]``: one row, the same for every word, which
plays SOT's part (a key every query may rest on that favors no concept). Stored embeddings use the UNet family's
layout: row 0 is the sink, rows ``1 .. n`` the word's n tokens (the word encoded alone, with its attention mask),
then the word's ``</s>`` and padding; ``token_lengths = n + 2``, so the word is rows ``1 .. token_lengths - 2``.

CLIP text (the toy DiT, ``hrv_diffusion/toy/dit.py``): a PixArt transformer may read a CLIP text encoder instead of
T5. Its text side is then the SD 1.x UNet's exactly (77 tokens, no mask, SOT as the sink, the last hidden state;
``unet.encode_words``), and only the denoiser is PixArt's.
"""
from __future__ import annotations

import torch

from hrv_diffusion.core.conditioning import Conditioning
from hrv_diffusion.core.families import unet
from hrv_diffusion.core.layout import BLOCK_LABEL, AttnLayer, HeadLayout

MAX_LENGTH = 77  # rows per stored word: the sink, the word's tokens, its </s>, padding (as the UNet family's files)
START_TOKENS = 0  # T5 has no start token: a prompt's first word is token 0
MIN_ATTENTION_RES = 8  # A&E-HRV's coarsest default map, as the UNet family's

# The real transformers' configs (diffusers' PixArtTransformer2DModel arguments, from the hub's
# transformer/config.json of PixArt-alpha/PixArt-XL-2-1024-MS and PixArt-alpha/PixArt-Sigma-XL-2-1024-MS).
_XL_2 = dict(num_layers=28, patch_size=2, attention_head_dim=72, num_attention_heads=16, caption_channels=4096,
             in_channels=4, out_channels=8, cross_attention_dim=1152, attention_bias=True,
             activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
             norm_elementwise_affine=False, norm_eps=1e-6, sample_size=128)
CONFIGS = {
    "PixArt-alpha/PixArt-XL-2-1024-MS": dict(_XL_2, use_additional_conditions=True),
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": dict(_XL_2, use_additional_conditions=False, interpolation_scale=2),
}


def is_pixart(model) -> bool:
    return type(model).__name__ == "PixArtTransformer2DModel"


def is_config(config) -> bool:
    """Whether a config dict is a PixArt transformer's (its class name, or the keys only it has)."""
    if config.get("_class_name") == "PixArtTransformer2DModel":
        return True
    return "caption_channels" in config and "num_layers" in config and "block_out_channels" not in config


def layout(transformer) -> HeadLayout:
    """The attention layers of a PixArt transformer in block order. Works on a meta-device model."""
    config = transformer.config
    size = config.sample_size
    latent = (size, size) if isinstance(size, int) else tuple(size)
    layers, self_layers, offset = [], [], 0
    for index, block in enumerate(transformer.transformer_blocks):
        if getattr(block, "attn2", None) is not None:
            name = f"transformer_blocks.{index}.attn2"
            layers.append(AttnLayer("block", index, name, block.attn2.heads, offset, config.patch_size, latent,
                                    "cross", BLOCK_LABEL))
            offset += block.attn2.heads
        self_layers.append(AttnLayer("block", index, f"transformer_blocks.{index}.attn1", block.attn1.heads, -1,
                                     config.patch_size, latent, "self", BLOCK_LABEL))
    return HeadLayout(tuple(layers), tuple(self_layers))


def downsampling(config) -> int:
    """The patch size: every block's queries sit on the (h / p) x (w / p) patch grid."""
    return int(config.patch_size)


def _grid(config, latent) -> tuple[int, int]:
    """The patch grid of a latent (h, w): every block's queries, (h / p) x (w / p) (rounded up)."""
    p = int(config.patch_size)
    return -(-int(latent[0]) // p), -(-int(latent[1]) // p)


def self_replace_queries(config, latent) -> int:
    """Prompt-to-Prompt replaces self-attention in every block: all blocks' queries lie on the one patch grid, so
    the UNet's rule (grids of at most a quarter of the latent side, its coarse levels) would keep none; P2P's self
    window (``--self_replace_steps``, the first 40% of the steps by default) is the only restriction."""
    h, w = _grid(config, latent)
    return h * w


def attention_res(mode: str, latent_size: int, config) -> int:
    """A&E's R by default. Standard A&E averages every block's maps on the patch grid, its one grid (latent / p:
    tiny-pixart 8, PixArt at 1024² 64), in place of the UNet's 16 x 16 layers. A&E-HRV resamples every head's map to
    R x R with the UNet family's rule, latent / 8 but at least 8 (PixArt at 1024²: 16), at most the grid."""
    side = _grid(config, (latent_size, latent_size))[0]
    if mode != "hrv":
        return side
    divisor = 8
    while latent_size // divisor < MIN_ATTENTION_RES and divisor > 1:
        divisor //= 2
    return max(1, min(side, latent_size // divisor))


def from_config(config: dict):
    """Build a PixArt transformer from its config on the meta device: no weights, no memory, no download."""
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):
        return PixArtTransformer2DModel.from_config(config)


# ------------------------------------------------------------------------------------------------ words

def reads_clip(pipe) -> bool:
    """Whether the pipeline's text encoder is CLIP's (the toy DiT) rather than T5."""
    return type(getattr(pipe, "text_encoder", None)).__name__.startswith("CLIPText")


def token_lengths(tokenizer, words) -> torch.Tensor:
    """(W,) int64: the word's T5 tokens plus 2 (the sink row before them, its ``</s>`` after them)."""
    lengths = [len(tokenizer(w, add_special_tokens=False).input_ids) + 2 for w in words]
    for word, n in zip(words, lengths):
        if n > MAX_LENGTH:
            raise ValueError(f"word {word!r} is {n - 2} T5 tokens, more than {MAX_LENGTH - 2}: shorten it")
        if n < 3:
            raise ValueError(f"word {word!r} has no T5 token: give a word with letters")
    return torch.tensor(lengths, dtype=torch.int64)


def _t5(pipe, texts: list[str], length: int) -> torch.Tensor:
    """T5 last hidden states of ``texts``, each padded to ``length`` with its attention mask: (w, length, D)."""
    tokens = pipe.tokenizer(texts, padding="max_length", max_length=length, truncation=True,
                            add_special_tokens=True, return_tensors="pt")
    device = getattr(pipe, "_execution_device", None) or pipe.text_encoder.device
    return pipe.text_encoder(tokens.input_ids.to(device), attention_mask=tokens.attention_mask.to(device))[0]


@torch.no_grad()
def encode_words(pipe, words, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Each word alone -> embeddings (W, 77, D) float32 on CPU, row 0 the sink ``T5("")[0]``; token_lengths (W,).
    With CLIP text: the UNet family's encoding (row 0 SOT)."""
    if reads_clip(pipe):
        return unet.encode_words(pipe, words, batch_size)
    lengths = token_lengths(pipe.tokenizer, words)
    sink = _t5(pipe, [""], 1)[0, :1].float().cpu()  # (1, D): the empty prompt's </s>
    chunks = []
    for start in range(0, len(words), batch_size):
        embeds = _t5(pipe, words[start:start + batch_size], MAX_LENGTH - 1).float().cpu()  # (w, 76, D)
        chunks.append(torch.cat([sink.expand(len(embeds), 1, -1), embeds], dim=1))  # (w, 77, D)
    return torch.cat(chunks), lengths


def text_length(pipe) -> int:
    """The pipeline's own T5 length, its ``encode_prompt``'s default: 120 (α), 300 (Σ); CLIP's 77."""
    import inspect

    if reads_clip(pipe):
        return unet.MAX_LENGTH

    return int(inspect.signature(pipe.encode_prompt).parameters["max_sequence_length"].default)


def encoding(pipe) -> str:
    return unet.encoding(pipe) if reads_clip(pipe) else "t5_last_hidden_state_empty_eos_sink"


def bank_keys(transformer, layer: AttnLayer, rows: torch.Tensor) -> torch.Tensor:
    """``attn2.to_k(caption_projection(rows))`` for stored T5 rows (R, D): (R, h * d)."""
    attn = transformer.get_submodule(layer.module_name)
    return attn.to_k(transformer.caption_projection(rows))


# ------------------------------------------------------------------------------------------------ loop glue

def _uses_size(config) -> bool:
    """Whether the transformer takes resolution and aspect ratio (α at 1024: sample_size 128), as it decides."""
    uses = getattr(config, "use_additional_conditions", None)
    return config.sample_size == 128 if uses is None else bool(uses)


def encode_prompts(pipe, prompts: list[str], negative_prompt=None, cfg: bool = True,
                   height: int | None = None, width: int | None = None) -> Conditioning:
    """The pipeline's own ``encode_prompt`` (its own T5 length: α 120, Σ 300; "" as the negative), with the
    text masks, and PixArt-α's resolution and aspect ratio for ``height`` x ``width`` pixels. With CLIP text:
    the prompts' last hidden states, 77 tokens, no mask ("" or ``negative_prompt`` as the negative)."""
    device = pipe._execution_device
    if reads_clip(pipe):
        return _encode_clip_prompts(pipe, prompts, negative_prompt, cfg)
    cond, mask, uncond, uncond_mask = pipe.encode_prompt(
        prompts, do_classifier_free_guidance=cfg, negative_prompt=negative_prompt if negative_prompt else "",
        num_images_per_prompt=1, device=device, clean_caption=False)
    added, uncond_added = {"encoder_attention_mask": mask}, ({"encoder_attention_mask": uncond_mask} if cfg else None)
    config = pipe.transformer.config
    if _uses_size(config):
        size = config.sample_size * pipe.vae_scale_factor
        height, width = height or size, width or size
        sizes = {"resolution": torch.tensor([[height, width]] * len(prompts)),
                 "aspect_ratio": torch.tensor([[float(height / width)]] * len(prompts))}
        for rows in (added, uncond_added or {}):
            rows.update({k: v.to(device=device, dtype=cond.dtype) for k, v in sizes.items()})
    return Conditioning(cond, uncond if cfg else None, added, uncond_added)


@torch.no_grad()
def _encode_clip_prompts(pipe, prompts: list[str], negative_prompt, cfg: bool) -> Conditioning:
    def encode(texts):  # (B, 77, D)
        ids = pipe.tokenizer(texts, padding="max_length", max_length=unet.MAX_LENGTH, truncation=True,
                             return_tensors="pt").input_ids
        return pipe.text_encoder(ids.to(pipe._execution_device))[0]

    negative = negative_prompt if negative_prompt else ""
    negatives = [negative] * len(prompts) if isinstance(negative, str) else list(negative)
    return Conditioning(encode(prompts), encode(negatives) if cfg else None)


def predict(forward, config, sample, t, embeds, added):
    """One transformer call as ``PixArtAlphaPipeline`` makes it: the predicted noise (B, C, h, w) (the first half
    of the channels when the model also predicts its variance), or None if the call ended early."""
    timestep = t if torch.is_tensor(t) else torch.tensor([t])
    timestep = (timestep[None] if timestep.ndim == 0 else timestep).to(sample.device).expand(sample.shape[0])
    added = added or {}  # CLIP text: no mask, no sizes
    sizes = {"resolution": added.get("resolution"), "aspect_ratio": added.get("aspect_ratio")}
    out = forward(sample, encoder_hidden_states=embeds, encoder_attention_mask=added.get("encoder_attention_mask"),
                  timestep=timestep, added_cond_kwargs=sizes, return_dict=False)
    if out is None:
        return None
    out = out[0]  # (B, C or 2C, h, w)
    return out.chunk(2, dim=1)[0] if config.out_channels // 2 == config.in_channels else out
