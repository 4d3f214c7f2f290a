"""Tiny SD-style, SD-2.x-style and SDXL-style pipelines built in code (seeded, random weights, no download).

They exercise the same diffusers classes as the real models, with the real CLIP tokenizer, so every
code path of the toolkit runs on a CPU in seconds. Their images are noise: they are for tests and demos.
"""
from __future__ import annotations

import torch

from hrv_diffusion.core.tokenizer import BOS_ID, EOS_ID, OPENCLIP_PAD, VOCAB_SIZE, clip_tokenizer


def _scheduler():
    from diffusers import PNDMScheduler

    # SD v1.4's scheduler config (PNDM, skip_prk_steps, leading spacing).
    return PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
    )


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=32,
    )


def _text_encoder(hidden: int, with_projection: bool = False, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=1,
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=projection_dim, hidden_act="gelu",
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config).eval()


def tiny_sd_pipeline(seed: int = 0):
    """SD 1.x layout in miniature: 7 CA layers (down 2, mid 1, up 4), 22 CA heads, 16x16 latents."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=(2, 4), norm_num_groups=8,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(32), tokenizer=clip_tokenizer(), unet=unet.eval(),
        scheduler=_scheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sd2_pipeline(seed: int = 0):
    """SD 2.x layout in miniature: the block structure of SD 2.1 (three cross-attention down blocks of two
    layers, a mid block, three cross-attention up blocks of three layers) with linear projections, head counts
    given per block as SD 2.x configs give them (``attention_head_dim=(5, 10, 20, 20)`` there, a head count, not a
    head size: (1, 2, 4, 4) here), so 16 CA layers and 39 CA heads (SD 2.1: 195 = 5 x 39); 16x16 latents.
    The text encoder stands in for OpenCLIP ViT-H: a CLIP text model whose tokenizer pads with "!" (id 0), as
    SD 2.x's does. The scheduler is SD 2.1's (768-v): DDIM with v-prediction."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(16, 32, 64, 64),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=48, attention_head_dim=(1, 2, 4, 4), use_linear_projection=True, upcast_attention=True,
        norm_num_groups=8,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
    )
    tokenizer = clip_tokenizer(pad_token=OPENCLIP_PAD)
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(48), tokenizer=tokenizer,
        unet=unet.eval(), scheduler=scheduler, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl_pipeline(seed: int = 0):
    """SDXL layout in miniature: no attention in the first down / last up block, several transformer
    blocks per attention (transformer_layers_per_block), 10/20-style head counts, two text encoders."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=8,
    )
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
        timestep_spacing="leading",
    )
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(32), text_encoder_2=_text_encoder(32, with_projection=True),
        tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(pad_token=OPENCLIP_PAD), unet=unet.eval(),
        scheduler=scheduler, force_zeros_for_empty_prompt=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_pixart(seed: int = 0):
    """PixArt-α in miniature (``core/tiny_pixart.py``): 3 blocks x 4 heads, T5 text."""
    from hrv_diffusion.core.tiny_pixart import tiny_pixart_pipeline

    return tiny_pixart_pipeline(seed)


TINY_MODELS = {"tiny-sd": tiny_sd_pipeline, "tiny-sd2": tiny_sd2_pipeline, "tiny-sdxl": tiny_sdxl_pipeline,
               "tiny-pixart": tiny_pixart}
