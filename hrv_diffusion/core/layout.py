"""Attention layers and the head layout of a denoiser: what every model family describes the same way.

A family (``core/families``) lists its attention layers in its canonical order; the cross-attention (CA) heads,
flattened in that order, are the entries of every HRV. A head's label follows its family's grammar:
``down, layer: 0, head: 3`` for a UNet (the published HRV files), ``block 12, head 3`` for a diffusion transformer.

A layer's query grid follows the latent it is called on: a layer stores its downsampling ``factor`` from the
latent (a UNet level: 1, 2, 4, ...; a transformer: its patch size), and ``layer.grid(latent)`` is the (height,
width) of its queries for a latent of (h, w). ``layer.resolution`` and ``layer.num_queries`` are that grid at the
model's default sample size, for tables and defaults only; the attention hooks give every layer call the latent
size of its model call (``UNetCall.latent``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# The places of the head labels, in the order their families list them (UNet: down, mid, up; transformer: block).
PLACES = ("down", "mid", "up", "block")
UNET_LABEL = "{place}, layer: {index}, head: {head}"
BLOCK_LABEL = "{place} {index}, head {head}"


@dataclass(frozen=True)
class AttnLayer:
    """One attention layer: cross-attention (an ``attn2`` module) or self-attention (``attn1``)."""

    place: str  # "down" | "mid" | "up" (UNet) | "block" (transformer)
    index: int  # layer index within its place, forward order
    module_name: str  # e.g. "down_blocks.0.attentions.0.transformer_blocks.0.attn2"
    heads: int
    offset: int  # global index of its head 0 in the flattened HRV order (cross-attention; -1 for self)
    factor: int  # downsampling of its queries' grid from the latent: 1, 2, 4, ... (a transformer: patch size)
    default_latent: tuple[int, int]  # (h, w) of the model's default sample size (config.sample_size)
    kind: str = "cross"  # "cross" | "self"
    label_format: str = UNET_LABEL  # the family's label grammar

    @property
    def is_cross(self) -> bool:
        return self.kind == "cross"

    def grid(self, latent) -> tuple[int, int]:
        """(height, width) of its queries on a latent of ``latent`` (h, w): each halving rounds up, as the
        UNet's stride-2 convolutions do (a transformer's patches tile the latent)."""
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
        """Its query grid at the model's default sample size (tables, defaults; a generation uses ``grid``)."""
        return self.grid(self.default_latent)

    @property
    def num_queries(self) -> int:
        """Its number of queries at the model's default sample size."""
        return self.queries(self.default_latent)

    def label(self, head: int) -> str:
        return self.label_format.format(place=self.place, index=self.index, head=head)


@dataclass(frozen=True)
class HeadLayout:
    """The CA layers of a model in HRV order; ``self_layers`` are its self-attention layers, same numbering."""

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
        """Global head index of a label like ``up, layer: 8, head: 3`` or ``block 12, head 3``."""
        place, layer, head = parse_label(label)
        for ca in self.layers:
            if ca.place == place and ca.index == layer:
                if not 0 <= head < ca.heads:
                    break
                return ca.offset + head
        raise ValueError(f"head {label!r} does not exist in this model ({self.num_heads} CA heads)")


_BLOCK = re.compile(r"\s*(block)\s+(\d+)\s*,\s*head\s+(\d+)\s*")


def parse_label(label: str) -> tuple[str, int, int]:
    """``'down, layer: 5, head: 3'`` -> ("down", 5, 3); ``'block 12, head 3'`` -> ("block", 12, 3)."""
    error = ValueError(f"not a head label: {label!r} (expected e.g. 'down, layer: 0, head: 3' or 'block 0, head 3')")
    block = _BLOCK.fullmatch(label) if isinstance(label, str) else None
    if block:
        return block.group(1), int(block.group(2)), int(block.group(3))
    try:
        place, layer, head = (part.strip() for part in label.split(","))
        if place not in PLACES[:3] or not layer.startswith("layer:") or not head.startswith("head:"):
            raise error  # not an assert: asserts vanish under python -O
        return place, int(layer.split(":")[1]), int(head.split(":")[1])
    except ValueError:
        raise error from None
