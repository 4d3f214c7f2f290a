"""An attention-map store: CA maps of chosen layers, heads and tokens, at one resolution, summed over calls.

``AttentionMaps`` is a ``Controller`` that only reads probabilities, so the image is unchanged and every layer
it does not need stays on fused SDPA. Per recorded layer call it reduces the heads first (a weighted sum per
group, since resampling is linear), then resamples to the store's resolution, then adds into one buffer of
shape (Bc, G, R_h, R_w, K): memory is bounded by what was asked, whatever the number of steps. A layer call's
maps lie on its query grid for the latent size of its UNet call (``layer.grid(call.latent)``), so the store works
at any generation size.

- ``head_weights`` (G, H): one row per group of maps (A&E-HRV: one HRV row per target token); default one
  group weighting every head 1. ``layers`` restricts the heads to some layers (a predicate on ``AttnLayer`` or
  a set of module names); heads of weight 0 in every group are skipped, and so are layers with none left.
- ``tokens``: the token columns kept (a slice or a list of indices; default all).
- ``steps``: the evaluations recorded (a predicate on the index or a container; default all). ``active`` can
  switch recording off, and ``reset()`` empties the store (A&E keeps only the last gradient pass).
- ``keep_grad``: keep the autograd graph (A&E's loss is differentiated through the maps).

``resample_maps`` is the A&E-HRV resampling: bicubic up; down after a Gaussian blur with kernel k = res//R + 1,
σ = 0.3·((k − 1)/2 − 1) + 0.8 (OpenCV's default), reflect padding; bicubic without antialiasing.
"""
from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F

from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.heads import AttnLayer, HeadLayout


def gaussian_kernel1d(size: int, sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    """Normalized samples of exp(-x²/2σ²) at x = -(size-1)/2 .. (size-1)/2 (torchvision's gaussian_blur)."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size, dtype=dtype, device=device)
    pdf = torch.exp(-0.5 * (x / sigma).pow(2))
    return pdf / pdf.sum()


def gaussian_blur(images: torch.Tensor, kernel: tuple[int, int], sigma: tuple[float, float]) -> torch.Tensor:
    """Depthwise 2-D Gaussian blur of (N, C, H, W) with reflect padding, like torchvision's gaussian_blur."""
    ky = gaussian_kernel1d(kernel[0], sigma[0], images.dtype, images.device)
    kx = gaussian_kernel1d(kernel[1], sigma[1], images.dtype, images.device)
    weight = (ky[:, None] * kx[None, :]).expand(images.shape[1], 1, kernel[0], kernel[1])
    padded = F.pad(images, [kernel[1] // 2, kernel[1] // 2, kernel[0] // 2, kernel[0] // 2], mode="reflect")
    return F.conv2d(padded, weight, groups=images.shape[1])


def blur_for(res: int, target: int) -> tuple[int, float]:
    """Anti-alias kernel size and σ before downsampling ``res`` to ``target`` (size 1, no blur, otherwise)."""
    k = res // target + 1 if res > target else 1
    return k, 0.3 * ((k - 1) * 0.5 - 1) + 0.8


def resample_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, h, w) -> (N, C, *size): unchanged, bicubic up, or blurred then bicubic down (per axis)."""
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    (ky, sy), (kx, sx) = blur_for(h, size[0]), blur_for(w, size[1])
    if ky > 1 or kx > 1:
        maps = gaussian_blur(maps, (ky, kx), (sy, sx))
    return F.interpolate(maps, size=tuple(size), mode="bicubic", align_corners=False)


class AttentionMaps(Controller):
    """Record CA maps, resampled to ``resolution`` and summed; see the module docstring."""

    def __init__(self, layout: HeadLayout, resolution, *, head_weights: torch.Tensor | None = None, layers=None,
                 tokens=None, steps=None, keep_grad: bool = False, resample=resample_maps):
        self.size = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
        weights = torch.ones(1, layout.num_heads) if head_weights is None else torch.as_tensor(head_weights).float()
        if weights.ndim != 2 or weights.shape[1] != layout.num_heads:
            raise ValueError(f"head_weights must have shape (groups, {layout.num_heads}), got {tuple(weights.shape)}")
        if layers is not None:
            chosen = layers if callable(layers) else (lambda layer, names=set(layers): layer.module_name in names)
            keep = torch.zeros(layout.num_heads, dtype=torch.bool)
            for layer in layout.layers:
                if chosen(layer):
                    keep[layer.offset : layer.offset + layer.heads] = True
            weights = weights * keep
        self.head_weights = weights  # (G, H)
        self.weights = {name: w for name, w in layout.split(weights).items() if bool((w != 0).any())}  # (G, h)
        self.layer_weight = {name: w.sum(1) for name, w in self.weights.items()}  # (G,) on the host
        self._on_device: dict = {}  # (name, device, dtype) -> the layer's (G, h) weights there, copied once
        self.tokens = slice(None) if tokens is None else tokens
        self.steps = steps
        self.keep_grad, self.resample = keep_grad, resample
        self.active = True
        self.reset()

    def reset(self) -> None:
        self.maps: torch.Tensor | None = None  # (Bc, G, R_h, R_w, K)
        self.weight_sum = torch.zeros(self.head_weights.shape[0])  # (G,) total weight recorded per group
        self.calls = 0  # layer calls recorded

    def _records(self, step: int) -> bool:
        if self.steps is None:
            return True
        return self.steps(step) if callable(self.steps) else step in self.steps

    @property
    def last_layer(self) -> str | None:
        """Module name of the last layer it reads in a UNet call (its layers are in forward order: down, mid, up)."""
        return next(reversed(self.weights), None)

    def reads_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        return self.active and layer.module_name in self.weights and self._records(call.step)

    def read_probs(self, layer: AttnLayer, call: UNetCall, probs: torch.Tensor) -> None:
        with nullcontext() if self.keep_grad else torch.no_grad():
            weights = self._weights_on(layer.module_name, probs)  # (G, h)
            picked = probs[..., self.tokens]  # (Bc, h, N, K)
            grouped = torch.einsum("bhnk,gh->bgkn", picked, weights)  # (Bc, G, K, N)
            batch, groups, columns, _ = grouped.shape
            grids = grouped.reshape(batch, groups * columns, *layer.grid(call.latent))  # (Bc, G*K, h, w)
            maps = self.resample(grids, self.size).reshape(batch, groups, columns, *self.size)
            maps = maps.permute(0, 1, 3, 4, 2)  # (Bc, G, R_h, R_w, K)
            self.maps = maps if self.maps is None else self.maps + maps
        self.weight_sum = self.weight_sum + self.layer_weight[layer.module_name]
        self.calls += 1

    def _weights_on(self, name: str, probs: torch.Tensor) -> torch.Tensor:
        """The layer's head weights on ``probs``' device and dtype, copied there once (no copy per layer call, so a
        recorded pass can be captured in a CUDA graph)."""
        key = (name, probs.device, probs.dtype)
        if key not in self._on_device:
            self._on_device[key] = self.weights[name].to(probs.device, probs.dtype)
        return self._on_device[key]

    def average(self) -> torch.Tensor:
        """The weighted mean: maps / total weight per group, (Bc, G, R_h, R_w, K)."""
        if self.maps is None:
            raise RuntimeError("no maps recorded: check the layers, steps and that the store was active")
        return self.maps / self.weight_sum.to(self.maps.device, self.maps.dtype)[None, :, None, None, None]
