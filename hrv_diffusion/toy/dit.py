"""The toy diffusion transformer (``--model_card toy-dit``): the toy world drawn by a PixArt-shaped model.

- Denoiser: diffusers' ``PixArtTransformer2DModel`` (adaLN-single, a self-attention, a cross-attention and an MLP
  per block) at toy size: 6 blocks of width 192 (8 heads of 24), patch 2 on the toy's 4x16x16 latents, so every
  block's queries sit on one 8x8 patch grid: 6 CA layers x 8 heads = 48 CA heads. It predicts the noise only
  (``out_channels = 4``, no learned variance) and takes no resolution condition.
- Text: the toy UNet's frozen, tempered CLIP text encoder and the real CLIP tokenizer (77 tokens, SOT, no mask), fed
  through PixArt's ``caption_projection`` (48 -> 192). The PixArt family reads CLIP text this way (SOT is the vote's
  sink, as for the UNets; ``core/families/pixart.py``).
- VAE and scheduler: the toy UNet's (the same latents, SD v1.4's PNDM).

The shipped folder (``hrv_diffusion/data/toy_dit``) holds the transformer (fp16) and the scheduler; the VAE, the
text encoder and the tokenizer are the toy's (``hrv_diffusion/data/toy``), loaded from there, so they are stored once.
``toy/train_dit.py`` trains it; docs/toy.md has what it learned.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch

from hrv_diffusion.toy.model import TEXT_WIDTH

DATA = Path(__file__).resolve().parents[1] / "data"
TOY_DIT_DIR = DATA / "toy_dit"
TOY_DIR = DATA / "toy"
SHARED = ("vae", "text_encoder", "tokenizer")  # components that live in the toy's folder


def toy_dit_config() -> dict:
    """``PixArtTransformer2DModel`` arguments of the toy DiT."""
    return dict(sample_size=16, num_layers=6, patch_size=2, attention_head_dim=24, num_attention_heads=8,
                caption_channels=TEXT_WIDTH, in_channels=4, out_channels=4, cross_attention_dim=192,
                attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6,
                use_additional_conditions=False)


def build_toy_dit(seed: int = 0):
    """An untrained toy DiT transformer, seeded."""
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(**toy_dit_config())


def assemble_toy_dit(transformer, toy_pipe):
    """A ``PixArtAlphaPipeline`` of ``transformer`` and the toy pipeline's VAE, CLIP text encoder, tokenizer and
    scheduler (the pipeline's own ``__call__`` expects T5; the toolkit's loop uses the family glue instead)."""
    from diffusers import PixArtAlphaPipeline
    from diffusers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "Expected types for text_encoder: T5EncoderModel": CLIP is the toy DiT's choice
    try:
        pipe = PixArtAlphaPipeline(tokenizer=toy_pipe.tokenizer, text_encoder=toy_pipe.text_encoder,
                                   vae=toy_pipe.vae, transformer=transformer,
                                   scheduler=copy.deepcopy(toy_pipe.scheduler))
    finally:
        logging.set_verbosity(verbosity)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_toy_dit(pipe, folder: str | os.PathLike) -> Path:
    """Write the transformer (fp16 safetensors), the scheduler and a ``model_index.json`` to ``folder``; the shared
    components are not written (``load_toy_dit`` takes them from the toy's folder)."""
    from diffusers.utils import logging

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # diffusers warns about casting with .to(); this is a throwaway copy
    try:
        transformer = copy.deepcopy(pipe.transformer).to(dtype=torch.float16)
    finally:
        logging.set_verbosity(verbosity)
    transformer.save_pretrained(folder / "transformer", safe_serialization=True)
    pipe.scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "PixArtAlphaPipeline", "_diffusers_version": _diffusers_version(),
             "scheduler": ["diffusers", type(pipe.scheduler).__name__],
             "transformer": ["diffusers", "PixArtTransformer2DModel"],
             "text_encoder": ["transformers", type(pipe.text_encoder).__name__],
             "tokenizer": ["transformers", type(pipe.tokenizer).__name__],
             "vae": ["diffusers", type(pipe.vae).__name__]}
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return folder


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def load_toy_dit(folder: str | os.PathLike = TOY_DIT_DIR, dtype: torch.dtype = torch.float32, toy_pipe=None):
    """The toy DiT pipeline: the transformer and scheduler of ``folder``, the rest from the toy (``toy_pipe``, else
    loaded from ``hrv_diffusion/data/toy``)."""
    from diffusers import PixArtTransformer2DModel, PNDMScheduler

    folder = Path(folder)
    if toy_pipe is None:
        from diffusers import StableDiffusionPipeline

        toy_pipe = StableDiffusionPipeline.from_pretrained(TOY_DIR, torch_dtype=dtype, safety_checker=None,
                                                           requires_safety_checker=False)
    transformer = PixArtTransformer2DModel.from_pretrained(folder / "transformer", torch_dtype=dtype)
    pipe = assemble_toy_dit(transformer.eval(), toy_pipe)
    pipe.scheduler = PNDMScheduler.from_pretrained(folder / "scheduler")
    return pipe
