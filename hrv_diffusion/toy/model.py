"""The toy model's architecture: SD v1.x in miniature, for 32x32 images of the toy world.

- VAE: ``AutoencoderKL``, 2 levels (32, 64 channels), 4 latent channels, scale factor 2: 32x32 -> 4x16x16.
- UNet: ``UNet2DConditionModel`` laid out like SD v1.4 (CrossAttn, CrossAttn, plain down blocks; a
  cross-attention mid block; plain, CrossAttn, CrossAttn up blocks), channels (64, 96, 96), 8 heads per
  attention layer: 7 CA layers at 16x16 (3), 8x8 (3) and 4x4 (1), 56 CA heads.
- Text encoder: a CLIP text transformer (1 layer, width 48) with the real CLIP tokenizer, **frozen at a
  seeded random initialization** that is tempered so each token's output is mostly its own word: token
  embeddings N(0, 1), position embeddings N(0, 0.25), the residual branches (attention output, MLP output)
  scaled by 0.5. A word then gives nearly the same key in any prompt and when encoded alone (which is how
  HRV construction encodes concept words), and different words give nearly orthogonal keys; see
  ``text_encoder_report`` and toy/README.md for why (a probe with a trained or an untempered encoder gave
  HRVs that contradicted the weakening results).
- Scheduler: SD v1.4's PNDM (scaled_linear betas 0.00085-0.012, 1000 steps), as in ``hrv_diffusion.core.tiny``.

Weights are stored as fp32 for the text encoder (the vocabulary table, 49408 x 48, is most of it) and fp16 for
the UNet and VAE (``save_toy_pipeline``): about 22 MB in all. diffusers loads fp16 UNet/VAE weights as fp32
unless a ``torch_dtype`` is given, so ``StableDiffusionPipeline.from_pretrained(folder)`` gives an fp32 model.
"""
from __future__ import annotations

import copy
import itertools
import os
from pathlib import Path

import torch

from hrv_diffusion.core.tokenizer import BOS_ID, EOS_ID, VOCAB_SIZE, clip_tokenizer

TEXT_WIDTH = 48
TEXT_INIT = {"token_std": 1.0, "position_std": 0.25, "residual_scale": 0.5}


def toy_configs() -> dict:
    """Constructor arguments of the three models: {"vae", "unet", "text_encoder", "text_init"}."""
    vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=16, sample_size=32,
        scaling_factor=1.0,  # set from the trained latents' std by toy/train.py
    )
    unet = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 96, 96),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_WIDTH, attention_head_dim=8,  # SD 1.x naming: 8 heads per layer
        norm_num_groups=16,
    )
    text_encoder = dict(
        vocab_size=VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=1,
        hidden_size=TEXT_WIDTH, intermediate_size=4 * TEXT_WIDTH, num_hidden_layers=1, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=TEXT_WIDTH,
    )
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "text_init": dict(TEXT_INIT)}


def _text_body(text_encoder):
    """The module holding ``embeddings`` and ``encoder`` (``text_model`` in transformers 4, the model in 5)."""
    return getattr(text_encoder, "text_model", text_encoder)


@torch.no_grad()
def temper_text_encoder(text_encoder, token_std: float, position_std: float, residual_scale: float) -> None:
    """Make each output token mostly its own word (in place); the generator is torch's global RNG."""
    body = _text_body(text_encoder)
    body.embeddings.token_embedding.weight.normal_(0.0, token_std)
    body.embeddings.position_embedding.weight.normal_(0.0, position_std)
    for layer in body.encoder.layers:
        layer.self_attn.out_proj.weight.mul_(residual_scale)
        layer.mlp.fc2.weight.mul_(residual_scale)


def toy_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1)


def build_toy_models(seed: int = 0):
    """(vae, unet, text_encoder), seeded; the text encoder is tempered, in eval mode and frozen."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    configs = toy_configs()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
    temper_text_encoder(text_encoder, **configs["text_init"])
    text_encoder.eval().requires_grad_(False)
    vae = AutoencoderKL(**configs["vae"])
    unet = UNet2DConditionModel(**configs["unet"])
    return vae, unet, text_encoder


def assemble_pipeline(vae, unet, text_encoder, tokenizer=None):
    """A StableDiffusionPipeline of the given models, SD v1.4's PNDM scheduler and no safety checker."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer or clip_tokenizer(), unet=unet,
        scheduler=toy_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_toy_pipeline(seed: int = 0, tokenizer=None):
    """An untrained toy StableDiffusionPipeline (random UNet and VAE, the frozen text encoder of ``seed``)."""
    vae, unet, text_encoder = build_toy_models(seed)
    return assemble_pipeline(vae.eval(), unet.eval(), text_encoder, tokenizer)


def save_toy_pipeline(pipe, folder: str | os.PathLike, half_unet_vae: bool = True) -> Path:
    """``save_pretrained`` with safetensors; UNet and VAE stored as fp16 copies (``pipe`` is not changed)."""
    from diffusers.utils import logging

    folder = Path(folder)
    unet, vae = pipe.unet, pipe.vae
    if half_unet_vae:
        verbosity = logging.get_verbosity()
        logging.set_verbosity_error()  # diffusers warns about casting with .to(); these are throwaway copies
        try:
            unet = copy.deepcopy(unet).to(dtype=torch.float16)
            vae = copy.deepcopy(vae).to(dtype=torch.float16)
        finally:
            logging.set_verbosity(verbosity)
    text_encoder = pipe.text_encoder
    if text_encoder.dtype != torch.float32:  # stored as fp32 so that every loader gets one dtype
        text_encoder = copy.deepcopy(text_encoder).float()
    out = assemble_pipeline(vae, unet, text_encoder, pipe.tokenizer)
    out.save_pretrained(folder, safe_serialization=True)
    return folder


def folder_bytes(folder: str | os.PathLike) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


@torch.no_grad()
def text_encoder_report(text_encoder, tokenizer=None, words=("red", "circle", "small", "left", "striped")) -> dict:
    """How word-specific the encoder's outputs (the CA keys' inputs) are; cosine similarities, averaged.

    - word_in_prompt_vs_alone: a word inside a caption vs the same word encoded alone (how HRV encodes it)
    - different_words_alone: two different words encoded alone
    - same_word_other_position: one word at two positions of two captions
    - context_effect: 1 - cos(the shape token after "red" vs after "blue"): how much context it carries"""
    tokenizer = tokenizer or clip_tokenizer()
    cos = torch.nn.functional.cosine_similarity

    def encode(text):  # (77, D)
        ids = tokenizer(text, padding="max_length", max_length=77, return_tensors="pt").input_ids
        return text_encoder(ids.to(text_encoder.device))[0][0].float().cpu()

    def position(text, word):  # token index of a one-token word, counting SOT
        ids = tokenizer(text).input_ids
        return ids.index(tokenizer(word).input_ids[1])

    caption = "a small red circle on the left on a striped background"
    other = "on a striped background there is a circle that is red and small, left"
    full, full2 = encode(caption), encode(other)
    alone = {w: encode(w)[1] for w in words}
    in_prompt = [cos(full[position(caption, w)], alone[w], dim=0) for w in words]
    moved = [cos(full[position(caption, w)], full2[position(other, w)], dim=0) for w in words]
    pairs = [cos(alone[a], alone[b], dim=0) for a, b in itertools.combinations(words, 2)]
    blue = encode(caption.replace("red", "blue"))
    i = position(caption, "circle")
    return {
        "word_in_prompt_vs_alone": float(torch.stack(in_prompt).mean()),
        "different_words_alone": float(torch.stack(pairs).mean()),
        "same_word_other_position": float(torch.stack(moved).mean()),
        "context_effect": float(1 - cos(full[i], blue[i], dim=0)),
    }
