"""The UNet family: SD 1.x / 2.x and SDXL (``pipe.unet``, CLIP text encoders).

Layout: the published HRV order is place (down, mid, up), then the CA layer's index within that place in forward
order, then the head index (the h-th contiguous slice of to_q/to_k/to_v). diffusers' module order is down, up,
mid, so we sort explicitly. Labels read exactly like the published files: ``down, layer: 0, head: 3``. A
transformer block's self-attention (``attn1``) gets the same place and index as its cross-attention. Each down
block halves the query grid after itself.

Words: each word is encoded alone, padded to 77 tokens (SD: ``text_encoder(ids)[0]``, the last hidden state;
SDXL: ``encode_prompt``, the penultimate states of both encoders concatenated). Row 0 is SOT, the sink of the
vote (the same for every word: CLIP is causal); rows ``1 .. n`` are the word's n tokens. Bank keys: ``to_k``.
"""
from __future__ import annotations

import torch

from hrv_diffusion.core.conditioning import Conditioning
from hrv_diffusion.core.layout import UNET_LABEL, AttnLayer, HeadLayout
from hrv_diffusion.core.models import is_sdxl

PLACES = ("down", "mid", "up")
MAX_LENGTH = 77
START_TOKENS = 1  # CLIP's SOT comes before a prompt's first word
MIN_ATTENTION_RES = 8  # A&E's coarsest default map: smaller models' latent/8 would leave 2 x 2 maps (the toy's)


def default_latent(config) -> tuple[int, int]:
    """(h, w) of the UNet's default sample size."""
    size = config.sample_size
    return (size, size) if isinstance(size, int) else tuple(size)


def _block_factor(config, module_name: str) -> int:
    """Downsampling from the latent at which a module inside the UNet runs (each down block halves after itself)."""
    n_down, n_up = len(config.down_block_types), len(config.up_block_types)
    part, *rest = module_name.split(".")
    if part == "down_blocks":
        return 2 ** int(rest[0])
    if part == "mid_block":
        return 2 ** (n_down - 1)
    return 2 ** (n_up - 1 - int(rest[0]))


def layout(unet) -> HeadLayout:
    """All attention layers of ``unet``, CA layers in the published order. Works on a meta-device UNet."""
    from diffusers.models.attention_processor import Attention

    found = {(place, kind): [] for place in PLACES for kind in ("cross", "self")}
    for name, module in unet.named_modules():  # forward order within each place
        place = {"down_blocks": "down", "mid_block": "mid", "up_blocks": "up"}.get(name.split(".")[0])
        if isinstance(module, Attention) and place is not None:
            found[place, "cross" if module.is_cross_attention else "self"].append((name, module.heads))
    layers, self_layers, offset = [], [], 0
    latent = default_latent(unet.config)
    for place in PLACES:
        for index, (name, heads) in enumerate(found[place, "cross"]):
            layers.append(AttnLayer(place, index, name, heads, offset, _block_factor(unet.config, name), latent,
                                    "cross", UNET_LABEL))
            offset += heads
        for index, (name, heads) in enumerate(found[place, "self"]):
            factor = _block_factor(unet.config, name)
            self_layers.append(AttnLayer(place, index, name, heads, -1, factor, latent, "self", UNET_LABEL))
    return HeadLayout(tuple(layers), tuple(self_layers))


def downsampling(config) -> int:
    """How much the deepest level's grid is smaller than the latent: 2 ** (down blocks - 1)."""
    return 2 ** (len(config.down_block_types) - 1)


def self_replace_queries(config, latent) -> int:
    """Prompt-to-Prompt replaces self-attention on query grids of at most a quarter of the latent side:
    (h/4)·(w/4) queries. SD v1.4 at 512² (64² latents): 256, the reference's 16 x 16 rule; SDXL at 1024²: 32²."""
    h, w = latent
    return (int(h) // 4) * (int(w) // 4)


def attention_res(mode: str, latent_size: int, config=None) -> int:
    """A&E's R by default, following the latent grid: A&E-HRV latent/8 (SD v1.4 at 512²: 8, the reference),
    standard A&E latent/4 (16, the reference and diffusers); SDXL at 1024² (latents 128): 16 and 32. Where that is
    below ``MIN_ATTENTION_RES``, a finer grid of the UNet (latent/2, latent/1): the toy (latents 16) gets 8, and at
    48x32 (latents 24 rows) standard A&E gets 12, a grid its CA layers have."""
    divisor = 8 if mode == "hrv" else 4
    while latent_size // divisor < MIN_ATTENTION_RES and divisor > 1:
        divisor //= 2
    return max(1, latent_size // divisor)


def from_config(config: dict):
    """Build a UNet from its config on the meta device: no weights, no memory, no download."""
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)


# ------------------------------------------------------------------------------------------------ words

def token_lengths(tokenizer, words) -> torch.Tensor:
    """(W,) int64: tokens per word including SOT and EOT. Raises if one exceeds the tokenizer's limit."""
    lengths = [len(tokenizer.encode(w)) for w in words]
    for word, n in zip(words, lengths):
        if n > tokenizer.model_max_length:
            raise ValueError(f"word {word!r} is {n} tokens with SOT and EOT, more than "
                             f"{tokenizer.model_max_length}: shorten it")
    return torch.tensor(lengths, dtype=torch.int64)


@torch.no_grad()
def encode_words(pipe, words, batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode each word on its own -> embeddings (W, 77, D) float32 on CPU (row 0: SOT), token_lengths (W,)
    int64 with SOT and EOT (the word is rows ``1 .. token_lengths - 2``)."""
    lengths = token_lengths(pipe.tokenizer, words)
    device = getattr(pipe, "_execution_device", None) or pipe.text_encoder.device
    chunks = []
    for start in range(0, len(words), batch_size):
        chunk = words[start:start + batch_size]
        if is_sdxl(pipe):
            embeds = pipe.encode_prompt(chunk, device=device, num_images_per_prompt=1,
                                        do_classifier_free_guidance=True)[0]  # (w, 77, D1 + D2)
        else:
            ids = pipe.tokenizer(chunk, padding="max_length", max_length=MAX_LENGTH, truncation=True,
                                 return_tensors="pt").input_ids  # (w, 77)
            embeds = pipe.text_encoder(ids.to(device))[0]  # (w, 77, D)
        chunks.append(embeds.float().cpu())
    return torch.cat(chunks), lengths  # (W, 77, D), (W,)


def text_length(pipe) -> int:
    """CLIP's 77 tokens (start and end included)."""
    return MAX_LENGTH


def encoding(pipe) -> str:
    return "sdxl_penultimate_concat" if is_sdxl(pipe) else "last_hidden_state"


def bank_keys(unet, layer: AttnLayer, rows: torch.Tensor) -> torch.Tensor:
    """``to_k`` of stored text rows (R, D) at ``layer``: (R, h * d) (the fused ``to_kv`` when projections are fused)."""
    attn = unet.get_submodule(layer.module_name)
    return attn.to_kv(rows).chunk(2, -1)[0] if getattr(attn, "fused_projections", False) else attn.to_k(rows)


# ------------------------------------------------------------------------------------------------ loop glue

def encode_prompts(pipe, prompts: list[str], negative_prompt=None, cfg: bool = True,
                   height: int | None = None, width: int | None = None) -> Conditioning:
    """The pipeline's own ``encode_prompt`` (SD: "" or ``negative_prompt`` as negatives; SDXL: zeros for an
    empty negative, pooled embeddings and time ids for ``height`` x ``width``, crop (0, 0))."""
    device = pipe._execution_device
    if not is_sdxl(pipe):
        cond, uncond = pipe.encode_prompt(prompts, device, 1, cfg, negative_prompt)
        return Conditioning(cond, uncond if cfg else None)
    cond, uncond, pooled, uncond_pooled = pipe.encode_prompt(
        prompt=prompts, device=device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
        negative_prompt=negative_prompt)
    config, scale = pipe.unet.config, pipe.vae_scale_factor
    h, w = default_latent(config)
    size = ((height // scale if height is not None else h) * scale, (width // scale if width is not None else w) * scale)
    projection = pipe.text_encoder_2.config.projection_dim if pipe.text_encoder_2 is not None else pooled.shape[-1]
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=cond.dtype, text_encoder_projection_dim=projection)
    time_ids = time_ids.to(device).repeat(len(prompts), 1)  # (B, 6)
    added = {"text_embeds": pooled.to(device), "time_ids": time_ids}
    uncond_added = {"text_embeds": uncond_pooled.to(device), "time_ids": time_ids} if cfg else None
    return Conditioning(cond.to(device), uncond.to(device) if cfg else None, added, uncond_added)


def predict(forward, config, sample, t, embeds, added):
    """One UNet call as the SD pipelines make it: the predicted noise (B, C, h, w), or None if the call ended early."""
    out = forward(sample, t, encoder_hidden_states=embeds, timestep_cond=None, added_cond_kwargs=added,
                  return_dict=False)
    return None if out is None else out[0]
