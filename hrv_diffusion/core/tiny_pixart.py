"""``tiny-pixart``: a PixArt-α pipeline in miniature, built in code (seeded random weights, no download).

The real architecture classes (``PixArtTransformer2DModel``, ``T5EncoderModel``, ``PixArtAlphaPipeline``) at a toy
size: 3 transformer blocks of 4 heads (12 cross-attention heads), patch 2 on 16x16 latents (an 8x8 query grid), a
2-layer T5 encoder of width 32 with the offline tokenizer of ``core/t5_tokenizer.py``, DPM-Solver++ as PixArt's
default scheduler. Its images are noise: it is for tests and demos.
"""
from __future__ import annotations

import torch

from hrv_diffusion.core.t5_tokenizer import EOS_ID, PAD_ID, t5_tokenizer

TINY_PIXART = dict(sample_size=16, num_layers=3, patch_size=2, attention_head_dim=8, num_attention_heads=4,
                   caption_channels=32, in_channels=4, out_channels=8, cross_attention_dim=32, attention_bias=True,
                   activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
                   norm_elementwise_affine=False, norm_eps=1e-6)


def _t5_encoder(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    config = T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                      feed_forward_proj="gated-gelu", relative_attention_num_buckets=8, pad_token_id=PAD_ID,
                      eos_token_id=EOS_ID, decoder_start_token_id=PAD_ID)
    return T5EncoderModel(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), sample_size=32,
    )


def tiny_pixart_pipeline(seed: int = 0):
    """PixArt-α layout in miniature: 3 blocks x 4 heads = 12 CA heads, T5 text, 16x16 latents."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

    torch.manual_seed(seed)
    tokenizer = t5_tokenizer()
    transformer = PixArtTransformer2DModel(**TINY_PIXART).eval()
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=_t5_encoder(len(tokenizer)), vae=_vae(),
                               transformer=transformer, scheduler=DPMSolverMultistepScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe
