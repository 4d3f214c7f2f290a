"""The one cross-attention processor of the toolkit, and ``HeadTrace``, the context manager that installs it.

``HeadTrace(pipe, controllers)`` puts a ``HeadAttnProcessor`` on every cross-attention (``attn2``) module through
diffusers' processor API; self-attention keeps its fused default. At ``__exit__`` the previous processors come back.
What differs between applications lives in small *controller* objects; the processor asks each of them, per CA
layer and evaluation, through these optional methods:

- ``observe(layer, step, query, key)``: read queries/keys (relevance votes). ``query`` (B, h, N, d), ``key`` (B, h, T, d).
- ``token_scale(layer, step) -> (B, h, T) | None``: multiply post-softmax probabilities per (sample, head, token),
  without renormalization. Done as a scale of V, so the fused SDPA kernel stays: sum_t (p_t s_t) v_t = sum_t p_t (s_t v_t).
- ``wants_probs(layer, step) -> bool`` and ``edit_probs(layer, step, probs) -> probs | None``: read or replace the
  explicit probabilities (B, h, N, T) of chosen layers (P2P, A&E). Only those calls leave SDPA.

B is the conditional half of the classifier-free-guidance batch ``[uncond, cond]`` (or the whole batch with
``halves="both"`` or when the pipeline runs without CFG). ``trace.step`` is the evaluation index: a forward
pre-hook on the UNet advances it once per UNet call, so it never depends on counting attention calls.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from hrv_diffusion.core.heads import CALayer, HeadLayout, head_layout


class HeadAttnProcessor:
    """Cross-attention with per-head observation, scaling and replacement. One instance per CA layer."""

    def __init__(self, layer: CALayer, trace: "HeadTrace"):
        self.layer = layer
        self.trace = trace

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        trace, layer = self.trace, self.layer
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch, n_query, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)

        query = attn.to_q(hidden_states)
        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_kv"):
            key, value = attn.to_kv(encoder_hidden_states).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (2B, h, N, d)
        key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (2B, h, T, d)
        value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)  # (2B, h, T, d)

        step = trace.step
        sel = trace.selected_half(batch)  # the samples controllers see
        for controller in trace.controllers:
            if hasattr(controller, "observe"):
                controller.observe(layer, step, query[sel], key[sel])

        scale = None  # (2B, h, T) or None
        for controller in trace.controllers:
            s = controller.token_scale(layer, step) if hasattr(controller, "token_scale") else None
            if s is not None:
                if scale is None:
                    scale = torch.ones(batch, attn.heads, key.shape[2], device=value.device, dtype=torch.float32)
                scale[sel] = scale[sel] * s.to(device=value.device, dtype=torch.float32)

        explicit = any(c.wants_probs(layer, step) for c in trace.controllers if hasattr(c, "wants_probs"))
        if explicit:
            # Slow path, only where a controller reads or replaces probabilities.
            scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * attn.scale  # (2B, h, N, T)
            if attention_mask is not None:
                scores = scores + attention_mask.float()
            probs = scores.softmax(dim=-1)
            if scale is not None:
                probs = probs * scale[:, :, None, :]
            for controller in trace.controllers:
                if hasattr(controller, "edit_probs") and controller.wants_probs(layer, step):
                    edited = controller.edit_probs(layer, step, probs[sel])
                    if edited is not None:
                        probs = probs.clone()
                        probs[sel] = edited.to(probs.dtype)
            hidden_states = torch.matmul(probs.to(value.dtype), value)
        else:
            if scale is not None:
                value = value * scale[..., None].to(value.dtype)
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False, scale=attn.scale
            )

        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class HeadTrace:
    """``with HeadTrace(pipe_or_unet, [controller, ...]) as trace: pipe(...)``.

    ``cfg``: the UNet batch is ``[uncond, cond]`` (True for pipelines called with guidance_scale > 1).
    ``halves``: "cond" gives controllers the conditional half, "both" the whole batch.
    """

    def __init__(self, pipe_or_unet, controllers=(), cfg: bool = True, halves: str = "cond"):
        if halves not in ("cond", "both"):
            raise ValueError(f"halves must be 'cond' or 'both', not {halves!r}")
        self.unet = getattr(pipe_or_unet, "unet", pipe_or_unet)
        self.layout: HeadLayout = head_layout(self.unet)
        self.controllers = list(controllers)
        self.cfg, self.halves = cfg, halves
        self.step = -1  # evaluation index; -1 before the first UNet call
        self._saved, self._hook = {}, None

    def selected_half(self, batch: int) -> slice:
        if self.cfg and self.halves == "cond":
            return slice(batch // 2, batch)
        return slice(0, batch)

    def reset(self) -> None:
        """Call between generations: the next UNet call is evaluation 0 again."""
        self.step = -1

    def _advance(self, module, args) -> None:
        self.step += 1

    def __enter__(self) -> "HeadTrace":
        modules = dict(self.unet.named_modules())
        for layer in self.layout.layers:
            module = modules[layer.module_name]
            self._saved[layer.module_name] = module.processor
            module.set_processor(HeadAttnProcessor(layer, self))
        self._hook = self.unet.register_forward_pre_hook(self._advance)
        self.reset()
        return self

    def __exit__(self, *exc) -> None:
        modules = dict(self.unet.named_modules())
        for name, processor in self._saved.items():
            modules[name].set_processor(processor)
        self._saved = {}
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
