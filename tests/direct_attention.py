"""Cross-attention probabilities computed directly from a UNet's layer inputs, on the grid the UNet really uses.

``DirectProbs(unet)`` records, for every call of every cross-attention (``attn2``) module, softmax(Q Kᵀ / √d) per
head from the module's own inputs and projections, and the (height, width) of the feature map its transformer
(the ``Transformer2DModel`` around it) was given. It shares nothing with hrv_diffusion.core: neither the layer table
nor the processor, so a map reshaped with it is reshaped to the grid the queries really lie on.
"""
from __future__ import annotations

import torch
from diffusers.models.attention_processor import Attention


class DirectProbs:
    """``with DirectProbs(unet) as direct: unet(...)``; ``direct.calls``: (module name, (H, W), probs (B, h, N, T))."""

    def __init__(self, unet):
        self.unet = unet
        self.calls = []
        self._grids = {}  # transformer module name -> (H, W) of its last input

    def __enter__(self) -> "DirectProbs":
        modules = dict(self.unet.named_modules())
        self._handles = []
        for name, module in modules.items():
            if isinstance(module, Attention) and module.is_cross_attention and name.startswith(
                    ("down_blocks", "mid_block", "up_blocks")):
                parent = name.split(".transformer_blocks")[0]
                self._handles.append(modules[parent].register_forward_pre_hook(self._grid_hook(parent),
                                                                               with_kwargs=True))
                self._handles.append(module.register_forward_pre_hook(self._probs_hook(name, parent),
                                                                      with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _grid_hook(self, parent):
        def hook(module, args, kwargs):
            features = args[0] if args else kwargs["hidden_states"]  # (B, C, H, W)
            self._grids[parent] = tuple(features.shape[-2:])
        return hook

    def _probs_hook(self, name, parent):
        def hook(attn, args, kwargs):
            x = args[0] if args else kwargs["hidden_states"]  # (B, N, C)
            context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)  # (B, T, D)
            with torch.no_grad():
                q, k = attn.to_q(x), attn.to_k(context)
                b, heads = x.shape[0], attn.heads
                d = q.shape[-1] // heads
                q = q.view(b, -1, heads, d).transpose(1, 2).double()  # (B, h, N, d)
                k = k.view(b, -1, heads, d).transpose(1, 2).double()  # (B, h, T, d)
                probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # (B, h, N, T)
            self.calls.append((name, self._grids[parent], probs))
        return hook
