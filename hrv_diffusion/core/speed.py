"""Optional speed-ups of a UNet that keep the HRV votes' semantics, and the TF32 switch for float32 products.

``compile_unet_regions`` compiles every UNet submodule *except* the cross-attention layers with ``torch.compile``
(regional compilation): ResNet blocks, self-attention, feed-forwards, resampling, and the group norms outside them
(the transformer blocks' input norm, the output norm) run as fused kernels, while our cross-attention processor
stays eager, so its Python controllers and step index need no graph tracing. Module names are untouched, so
``AttentionHooks`` (core/attention.py) installs its processors on a compiled UNet as on an eager one; self-attention
layers that controllers hook are left out of the compiled regions (``skip``). With channels-last weights, an eager
group norm is slow (a measured 21% loss for the whole eager UNet), so none is left eager.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def tf32_matmuls(enabled: bool = True):
    """``with tf32_matmuls():`` float32 matrix products (cuBLAS) may use TF32 inside, as cuDNN's convolutions
    already do by PyTorch's default; restored after. ``enabled=False`` changes nothing. TF32 keeps 10 mantissa bits
    of the operands: the numbers change (~1e-3 relative per product)."""
    if not enabled:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def compile_regions(unet, skip=(), layer_norms: bool = False) -> list[str]:
    """Names of the submodules ``compile_unet_regions`` compiles: outermost regions only, never cross-attention,
    never a module named in ``skip`` (self-attention layers that controllers hook, e.g. Prompt-to-Prompt's).
    ``layer_norms``: the transformer blocks' layer norms too (otherwise eager)."""
    from diffusers.models.attention import FeedForward
    from diffusers.models.attention_processor import Attention
    from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D

    names = []
    for name, module in unet.named_modules():  # pre-order: a region comes before its children
        if any(name.startswith(region + ".") for region in names) or name in skip:
            continue
        if (isinstance(module, (ResnetBlock2D, FeedForward, Downsample2D, Upsample2D, torch.nn.GroupNorm))
                or (layer_norms and isinstance(module, torch.nn.LayerNorm))
                or (isinstance(module, Attention) and not module.is_cross_attention)):
            names.append(name)
    return names


def compile_unet_regions(unet, channels_last: bool = True, mode: str | None = None, backend: str = "inductor",
                         skip=(), layer_norms: bool = False):
    """Compile the non-cross-attention regions of ``unet`` in place, but the modules named in ``skip``; return it.
    ``layer_norms``: also the transformer blocks' layer norms (see ``compile_regions``)."""
    if channels_last:
        unet.to(memory_format=torch.channels_last)
    # Blocks of the same code at different widths each compile once; allow enough versions.
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    modules = dict(unet.named_modules())
    for name in compile_regions(unet, set(skip), layer_norms):
        modules[name].compile(mode=mode, backend=backend)
    return unet


def compile_unet_blocks(unet, channels_last: bool = True, mode: str | None = None, backend: str = "inductor",
                        whole: bool = False, eager=None, skip=()):
    """Compile larger regions than ``compile_unet_regions``, the attention modules in ``eager`` left out through
    graph breaks; return ``unet``.

    ``eager``: names of the attention modules whose forward dynamo must not trace (default: every cross-attention
    module, whose hooked processor reads Python state per call), plus the modules named in ``skip`` (self-attention
    layers that controllers hook, e.g. Prompt-to-Prompt's); each becomes a graph break, and the code around
    it (the transformer blocks' norms, projections, residual adds and layout changes, which regional compilation
    leaves eager) is compiled in the pieces between. ``whole=False``: every ``Transformer2DModel`` is compiled as
    one region, the rest as ``compile_unet_regions`` does. ``whole=True``: the UNet's ``forward`` is compiled as one
    (forward hooks, e.g. the attention hooks' call counter, stay eager)."""
    from diffusers.models.attention_processor import Attention
    from diffusers.models.transformers.transformer_2d import Transformer2DModel

    if channels_last:
        unet.to(memory_format=torch.channels_last)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 256)
    modules = dict(unet.named_modules())
    if eager is None:
        eager = [n for n, m in modules.items() if isinstance(m, Attention) and m.is_cross_attention]
    for name in [*eager, *skip]:
        module = modules[name]
        module.forward = torch._dynamo.disable(module.forward)  # an instance attribute: this module only
    if whole:
        unet.forward = torch.compile(unet.forward, mode=mode, backend=backend)
        return unet
    blocks = [n for n, m in modules.items() if isinstance(m, Transformer2DModel)]
    for name in blocks:
        modules[name].compile(mode=mode, backend=backend)
    inside = lambda n: any(n == b or n.startswith(b + ".") for b in blocks)  # noqa: E731
    for name in compile_regions(unet):
        if not inside(name):
            modules[name].compile(mode=mode, backend=backend)
    return unet
