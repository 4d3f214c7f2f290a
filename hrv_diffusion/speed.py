"""Optional speed-ups of a UNet that keep the HRV votes' semantics.

``compile_unet_regions`` compiles every UNet submodule *except* the cross-attention layers with ``torch.compile``
(regional compilation): ResNet blocks, self-attention, feed-forwards, norms and resampling run as fused kernels,
while our cross-attention processor stays eager, so its Python controllers and step index need no graph tracing.
Module names and hooks are untouched, so ``HeadTrace`` works as before.
"""
from __future__ import annotations

import torch


def compile_unet_regions(unet, channels_last: bool = True, mode: str | None = None):
    """Compile the non-cross-attention regions of ``unet`` in place; return it."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    if channels_last:
        unet.to(memory_format=torch.channels_last)
    # Blocks of the same code at different widths each compile once; allow enough versions.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    for module in unet.modules():
        if isinstance(module, (ResnetBlock2D, FeedForward, Downsample2D, Upsample2D)):
            module.compile(mode=mode)
        elif isinstance(module, Attention) and not module.is_cross_attention:
            module.compile(mode=mode)
    return unet
