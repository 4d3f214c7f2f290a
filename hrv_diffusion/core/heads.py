"""Attention layers of a UNet, and the cross-attention head layout in the published HRV order.

The published order is place (down, mid, up), then the CA layer's index within that place in forward
order, then the head index (the h-th contiguous slice of to_q/to_k/to_v). diffusers' module order is
down, up, mid, so we sort explicitly. Labels read exactly like the published files: ``down, layer: 0, head: 3``.
A transformer block's self-attention (``attn1``) gets the same place and index as its cross-attention.

A layer's query grid follows the latent it is called on: a layer stores its downsampling ``factor`` (1, 2, 4, ...),
and ``layer.grid(latent)`` is the (height, width) of its queries for a latent of (h, w). ``layer.resolution`` and
``layer.num_queries`` are that grid at the UNet's default sample size, for tables and defaults only; the attention
hooks give every layer call the latent size of its UNet call (``UNetCall.latent``).
"""
from __future__ import annotations

from dataclasses import dataclass

PLACES = ("down", "mid", "up")


@dataclass(frozen=True)
class AttnLayer:
    """One attention layer: cross-attention (an ``attn2`` module) or self-attention (``attn1``)."""

    place: str  # "down" | "mid" | "up"
    index: int  # transformer-block index within its place, forward order
    module_name: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    heads: int
    offset: int  # global index of its head 0 in the flattened HRV order (cross-attention; -1 for self)
    factor: int  # downsampling of its queries' grid from the latent: 1, 2, 4, ...
    default_latent: tuple[int, int]  # (h, w) of the UNet's default sample size (config.sample_size)
    kind: str = "cross"  # "cross" | "self"

    @property
    def is_cross(self) -> bool:
        return self.kind == "cross"

    def grid(self, latent) -> tuple[int, int]:
        """(height, width) of its queries on a latent of ``latent`` (h, w): each halving rounds up, as the
        UNet's stride-2 convolutions do."""
        if latent is None:
            raise ValueError(f"the latent size of the call is unknown: cannot place the queries of {self.module_name}")
        height, width = latent
        return -(-int(height) // self.factor), -(-int(width) // self.factor)

    def queries(self, latent) -> int:
        """Number of its queries on a latent of ``latent`` (h, w)."""
        height, width = self.grid(latent)
        return height * width

    @property
    def resolution(self) -> tuple[int, int]:
        """Its query grid at the UNet's default sample size (tables, defaults; a generation uses ``grid``)."""
        return self.grid(self.default_latent)

    @property
    def num_queries(self) -> int:
        """Its number of queries at the UNet's default sample size."""
        return self.queries(self.default_latent)

    def label(self, head: int) -> str:
        return f"{self.place}, layer: {self.index}, head: {head}"


@dataclass(frozen=True)
class HeadLayout:
    """The CA layers of a UNet in HRV order; ``self_layers`` are its self-attention layers, same numbering."""

    layers: tuple[AttnLayer, ...]
    self_layers: tuple[AttnLayer, ...] = ()

    @property
    def num_heads(self) -> int:
        return sum(layer.heads for layer in self.layers)

    @property
    def labels(self) -> list[str]:
        return [layer.label(h) for layer in self.layers for h in range(layer.heads)]

    def by_module(self) -> dict[str, AttnLayer]:
        return {layer.module_name: layer for layer in self.layers}

    def split(self, values) -> dict[str, object]:
        """An (..., H) array or tensor over all CA heads -> {module name: its layer's (..., h) slice}."""
        if values.shape[-1] != self.num_heads:
            raise ValueError(f"expected a last dimension of {self.num_heads} (one value per CA head), "
                             f"got shape {tuple(values.shape)}")
        return {layer.module_name: values[..., layer.offset : layer.offset + layer.heads] for layer in self.layers}

    def index_of(self, label: str) -> int:
        """Global head index of a label like ``up, layer: 8, head: 3``."""
        place, layer, head = parse_label(label)
        for ca in self.layers:
            if ca.place == place and ca.index == layer:
                if not 0 <= head < ca.heads:
                    break
                return ca.offset + head
        raise ValueError(f"head {label!r} does not exist in this UNet ({self.num_heads} CA heads)")


def parse_label(label: str) -> tuple[str, int, int]:
    """``'down, layer: 5, head: 3'`` -> ("down", 5, 3)."""
    error = ValueError(f"not a head label: {label!r} (expected e.g. 'down, layer: 0, head: 3')")
    try:
        place, layer, head = (part.strip() for part in label.split(","))
        if place not in PLACES or not layer.startswith("layer:") or not head.startswith("head:"):
            raise error  # not an assert: asserts vanish under python -O
        return place, int(layer.split(":")[1]), int(head.split(":")[1])
    except ValueError:
        raise error from None


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


def head_layout(unet) -> HeadLayout:
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
            layers.append(AttnLayer(place, index, name, heads, offset, _block_factor(unet.config, name), latent))
            offset += heads
        for index, (name, heads) in enumerate(found[place, "self"]):
            factor = _block_factor(unet.config, name)
            self_layers.append(AttnLayer(place, index, name, heads, -1, factor, latent, "self"))
    return HeadLayout(tuple(layers), tuple(self_layers))


def unet_from_config(config: dict):
    """Build a UNet from its config on the meta device: no weights, no memory, no download."""
    import torch
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel.from_config(config)
