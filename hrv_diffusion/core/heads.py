"""The head layout of a pipeline's denoiser, through its model family.

``head_layout(model)`` lists the attention layers of a UNet (SD 1.x/2.x/XL) or a PixArt transformer in its
family's canonical order (``core/families``): for a UNet the published HRV order (down, mid, up; labels
``down, layer: 0, head: 3``), for PixArt the blocks in order (``block 12, head 3``). The layer and layout classes
live in ``core/layout.py`` and are re-exported here.
"""
from __future__ import annotations

from hrv_diffusion.core.families import denoiser, family_of
from hrv_diffusion.core.families.unet import default_latent
from hrv_diffusion.core.families.unet import from_config as unet_from_config
from hrv_diffusion.core.layout import PLACES, AttnLayer, HeadLayout, parse_label

__all__ = ["AttnLayer", "HeadLayout", "PLACES", "default_latent", "head_layout", "parse_label", "unet_from_config"]


def head_layout(model) -> HeadLayout:
    """All attention layers of ``model`` (a pipeline or its denoiser), CA layers in its family's canonical order.
    Works on a meta-device model."""
    model = denoiser(model)
    return family_of(model).layout(model)
