"""The one attention processor of the toolkit, the ``Controller`` protocol, and ``AttentionHooks``.

``AttentionHooks(pipe, controllers)`` puts a ``HookedAttnProcessor`` on every cross-attention module of the
pipeline's denoiser (a UNet, or a PixArt transformer: ``core/families`` lists the layers),
and on the self-attention (``attn1``) modules too if a controller asks for them (``self_attention = True``),
through diffusers' processor API; the other layers keep their fused default. At ``__exit__`` the previous
processors come back. What differs between applications lives in small ``Controller`` objects.

Each UNet call has a ``UNetCall``: its evaluation index ``step``, the rows of the batch that are conditional
(``cond``) and the latent size (``latent``, (h, w)) that places every layer's queries on its grid
(``layer.grid(call.latent)``). The denoising loop (``core/loop.py``) sets it before every call, so extra passes
(A&E's gradient passes) never shift the index. Under a plain ``pipe(...)`` a forward pre-hook counts the UNet calls
instead, reads the latent size from the sample and assumes the batch ``[uncond, cond]`` (or all rows conditional
with ``cfg=False``).

A call may end early: with ``stop_after`` (the module name of a hooked layer) the call ends once that layer's
controllers have run, and ``AttentionHooks.call_unet`` returns None (A&E's gradient passes need nothing after the
last layer their loss reads). The hooks raise and catch their own private signal; controllers never see it.

**Order of composition** in one layer call, for the conditional rows (a controller sees only those):

1. every controller's ``observe(layer, call, query, key)``, in list order;
2. the ``token_scale(layer, call)`` factors of all controllers are multiplied together (an elementwise product,
   so their order does not matter);
3. explicit probabilities ``P = softmax(Q Kᵀ · scale) · token scales`` (float32, or float64), then, controller by controller
   in list order: ``read_probs(P)`` if it ``reads_probs``, then ``P = edit_probs(P)`` if it ``edits_probs``.
   A reader therefore sees the edits of the controllers before it in the list, never those after it;
4. the output: ``P @ V`` if any controller edited, else the fused SDPA kernel with ``V`` scaled per
   (head, token): ``Σ_t (p_t s_t) v_t = Σ_t p_t (s_t v_t)``. Readers alone never change the output: their
   probabilities are computed beside the SDPA call.

   When every editor of the call names the conditional rows it edits (``edited_rows``), ``P`` is computed for
   the conditional rows only, the whole batch keeps the fused kernel, and only the edited rows' outputs are
   replaced by ``P @ V``: the other rows are bit for bit what they are without the editors (Prompt-to-Prompt's
   source row, the unconditional rows).

The unconditional rows are never shown to controllers and never changed. A controller chooses its layers with
``wants_layer`` (default: every cross-attention layer, and every self-attention layer if ``self_attention``); a
self-attention layer that no controller wants keeps its own processor (fused, or compiled by ``core/speed.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from hrv_diffusion.core.families import denoiser, family_of
from hrv_diffusion.core.heads import AttnLayer, HeadLayout, head_layout


@dataclass(frozen=True)
class UNetCall:
    """One UNet evaluation: its index in the denoising loop, the conditional rows of its batch (None: not
    said, under a plain ``pipe(...)``; the hooks then assume ``[uncond, cond]``, or all rows with cfg=False),
    the latent size (h, w) of its sample, and the layer after which it may end (None: it runs to the end)."""

    step: int
    cond: slice | None = None
    latent: tuple[int, int] | None = None
    stop_after: str | None = None


class _CallEnded(Exception):
    """Private to the hooks: ends a UNet call after its ``stop_after`` layer (caught by ``call_unet``)."""


class Controller:
    """Base class of attention controllers: every method is a no-op; override the ones you need.

    ``layer`` is an ``AttnLayer`` (``layer.kind`` is "cross" or "self"); tensors cover the conditional rows Bc:
    ``query`` (Bc, h, N, d), ``key`` (Bc, h, T, d), ``probs`` (Bc, h, N, T).
    """

    self_attention = False  # set True to be called on self-attention layers as well

    def wants_layer(self, layer: AttnLayer) -> bool:
        """Whether to be called on ``layer`` at all (decided once, when the hooks are installed)."""
        return layer.is_cross or self.self_attention

    def observe(self, layer: AttnLayer, call: UNetCall, query: torch.Tensor, key: torch.Tensor) -> None:
        """Read queries and keys (HRV votes)."""

    def token_scale(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        """(Bc, h, T) factors for the post-softmax probabilities, no renormalization; None = leave them."""
        return None

    def reads_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        """Whether ``read_probs`` wants this layer call's probabilities."""
        return False

    def read_probs(self, layer: AttnLayer, call: UNetCall, probs: torch.Tensor) -> None:
        """Read the probabilities (attention maps). Must not change them in place."""

    def edits_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        """Whether ``edit_probs`` replaces this layer call's probabilities (this leaves fused SDPA)."""
        return False

    def edit_probs(self, layer: AttnLayer, call: UNetCall, probs: torch.Tensor) -> torch.Tensor:
        """Return the probabilities to use instead (same shape)."""
        return probs

    def edited_rows(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        """Indices (into the conditional rows) of the only rows ``edit_probs`` changes in this call, or None (any
        row). With indices from every editor, the other rows keep the fused kernel's output exactly."""
        return None


class HookedAttnProcessor:
    """Attention with observation, token scaling, reading and editing by controllers. One per hooked layer.

    It mirrors diffusers' ``AttnProcessor2_0`` at diffusers 0.42 op for op (plus the fused ``to_kv`` projection of
    ``FusedAttnProcessor2_0``); the controllers' steps (module docstring) sit between the projections and ``to_out``.
    """

    def __init__(self, layer: AttnLayer, hooks: "AttentionHooks"):
        self.layer = layer
        self.hooks = hooks
        self.controllers = [c for c in hooks.controllers if c.wants_layer(layer)]

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        batch = hidden_states.shape[0]
        if attention_mask is not None:
            length = (hidden_states if encoder_hidden_states is None else encoder_hidden_states).shape[1]
            attention_mask = attn.prepare_attention_mask(attention_mask, length, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query, key, value = self._project(attn, hidden_states, encoder_hidden_states)  # (B, h, N | T, d)
        hidden_states = self._attend(attn, query, key, value, attention_mask)  # (B, h, N, d)
        hidden_states = hidden_states.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1])
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states.to(query.dtype)))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor

    @staticmethod
    def _project(attn, hidden_states, encoder_hidden_states):
        """Queries (B, h, N, d), keys and values (B, h, T, d), normalized as the module asks."""
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states)
        query = attn.to_q(hidden_states)
        if getattr(attn, "fused_projections", False) and hasattr(attn, "to_kv"):
            key, value = attn.to_kv(context).chunk(2, dim=-1)
        else:
            key, value = attn.to_k(context), attn.to_v(context)
        batch, head_dim = query.shape[0], key.shape[-1] // attn.heads
        query, key, value = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
        if getattr(attn, "norm_q", None) is not None:
            query = attn.norm_q(query)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        return query, key, value

    def _attend(self, attn, query, key, value, mask) -> torch.Tensor:
        """The controllers' steps 1-4 (module docstring) on one layer call: (B, h, N, d)."""
        layer, call = self.layer, self.hooks.call
        rows = call.cond if call.cond is not None else self.hooks.default_rows(query.shape[0])
        for c in self.controllers:
            c.observe(layer, call, query[rows], key[rows])
        scale = self._token_scales(call, rows, query.shape[0], key.shape[2], value)  # (B, h, T) or None
        readers = [c.reads_probs(layer, call) for c in self.controllers]
        editors = [c.edits_probs(layer, call) for c in self.controllers]
        edited = [c.edited_rows(layer, call) for c, edits in zip(self.controllers, editors) if edits]
        whole = any(r is None for r in edited)  # an editor may change any conditional row: explicit P @ V
        probs = original = part = None
        if whole:
            probs = self._probs(attn, query, key, mask, scale)  # (B, h, N, T)
            original = probs[rows]
        elif any(readers) or edited:
            original = self._probs(attn, query[rows], key[rows], mask[rows] if mask is not None else None,
                                   scale[rows] if scale is not None else None)  # (Bc, h, N, T)
        if original is not None:
            part = self._control(call, readers, editors, original)  # (Bc, h, N, T)
        if call.stop_after == layer.module_name:
            raise _CallEnded  # the caller needs nothing after this layer's controllers
        if whole:
            if part is not original:
                probs = torch.cat([probs[: rows.start], part, probs[rows.stop :]])
            return torch.matmul(probs.to(value.dtype), value)
        fused_value = value * scale[..., None].to(value.dtype) if scale is not None else value
        out = F.scaled_dot_product_attention(query, key, fused_value, attn_mask=mask, dropout_p=0.0, is_causal=False,
                                             scale=attn.scale)  # (B, h, N, d)
        if not edited:
            return out
        only = (edited[0] if len(edited) == 1 else torch.cat(edited).unique()).to(value.device)
        batch_rows = only + rows.start  # explicit P @ V for the edited conditional rows only
        explicit = torch.matmul(part[only].to(value.dtype), value[batch_rows])  # (E, h, N, d)
        return out.index_copy(0, batch_rows, explicit.to(out.dtype))

    def _token_scales(self, call: UNetCall, rows: slice, batch: int, tokens: int, value) -> torch.Tensor | None:
        """The product of the controllers' token scales: (B, h, T) float32, ones on the unconditional rows."""
        scale = None
        for c in self.controllers:
            s = c.token_scale(self.layer, call)
            if s is not None:
                if scale is None:
                    scale = torch.ones(batch, value.shape[1], tokens, device=value.device,
                                       dtype=torch.promote_types(value.dtype, torch.float32))
                scale[rows] = scale[rows] * s.to(device=value.device, dtype=scale.dtype)
        return scale

    def _control(self, call: UNetCall, readers, editors, probs: torch.Tensor) -> torch.Tensor:
        """Each controller in list order reads and/or edits the conditional rows' probabilities (Bc, h, N, T)."""
        for c, reads, edits in zip(self.controllers, readers, editors):
            if reads:
                c.read_probs(self.layer, call, probs)
            if edits:
                probs = c.edit_probs(self.layer, call, probs)
        return probs

    @staticmethod
    def _probs(attn, query, key, attention_mask, scale) -> torch.Tensor:
        """softmax(Q Kᵀ · scale) in float32 (float64 for a float64 model), times the token scales: (B, h, N, T)."""
        dtype = torch.promote_types(query.dtype, torch.float32)
        scores = torch.matmul(query.to(dtype), key.to(dtype).transpose(-1, -2)) * attn.scale
        if attention_mask is not None:
            scores = scores + attention_mask.to(dtype)
        probs = scores.softmax(dim=-1)
        return probs * scale[:, :, None, :] if scale is not None else probs


class AttentionHooks:
    """``with AttentionHooks(pipe_or_unet, [controller, ...]) as hooks: ...`` installs the processors.

    ``cfg`` only matters under a plain ``pipe(...)``: the batch is then assumed ``[uncond, cond]`` (True) or all
    conditional (False). The loop in ``core/loop.py`` says it per call with ``set_call``.
    """

    def __init__(self, pipe_or_unet, controllers=(), cfg: bool = True):
        self.unet = denoiser(pipe_or_unet)  # the UNet, or a transformer of another family
        self.family = family_of(self.unet)
        self.layout: HeadLayout = head_layout(self.unet)
        self.controllers = list(controllers)
        for c in self.controllers:
            if not isinstance(c, Controller):
                raise TypeError(f"{type(c).__name__} is not a Controller: subclass hrv_diffusion.core.attention.Controller")
        self.cfg = cfg
        self.call = UNetCall(-1)
        self._explicit = False
        self._saved, self._hook = {}, None

    @property
    def step(self) -> int:
        return self.call.step

    def set_call(self, step: int, cond: slice, latent: tuple[int, int] | None = None,
                 stop_after: str | None = None) -> None:
        """The next UNet call is evaluation ``step``; rows ``cond`` of its batch are conditional; its latent is
        ``latent`` (h, w) (None: read from its sample). With ``stop_after`` (a hooked layer's module name) the call
        ends once that layer's controllers have run: make it through ``call_unet``."""
        if stop_after is not None and stop_after not in self._saved:
            raise ValueError(f"cannot stop after {stop_after!r}: not an attention layer these hooks installed")
        latent = None if latent is None else (int(latent[0]), int(latent[1]))
        self.call, self._explicit = UNetCall(step, cond, latent, stop_after), True

    def reset(self) -> None:
        """Under plain ``pipe(...)`` calls: the next UNet call is evaluation 0 again."""
        self.call, self._explicit = UNetCall(-1), False

    def default_rows(self, batch: int) -> slice:
        return slice(batch // 2, batch) if self.cfg else slice(0, batch)

    def _on_unet_call(self, module, args, kwargs) -> None:
        sample = args[0] if args else kwargs[self.family.sample_arg]  # (B, C, h, w)
        latent = (int(sample.shape[-2]), int(sample.shape[-1]))
        if self._explicit:  # set by the loop for this call
            self._explicit = False
            if self.call.latent is None:
                self.call = replace(self.call, latent=latent)
            elif self.call.latent != latent:
                raise ValueError(f"the UNet call was announced with a latent of {self.call.latent}, its sample is "
                                 f"{latent}")
            return
        self.call = UNetCall(self.call.step + 1, latent=latent)

    def call_unet(self, *args, **kwargs):
        """``unet(*args, **kwargs)``; None if the call was set to stop after a layer (``set_call``) and did."""
        try:
            return self.unet(*args, **kwargs)
        except _CallEnded:
            return None

    def hooked_layers(self) -> list[AttnLayer]:
        """Every cross-attention layer, and the self-attention layers some controller wants."""
        wanted = [layer for layer in self.layout.self_layers if any(c.wants_layer(layer) for c in self.controllers)]
        return list(self.layout.layers) + wanted

    def __enter__(self) -> "AttentionHooks":
        modules = dict(self.unet.named_modules())
        for layer in self.hooked_layers():
            module = modules[layer.module_name]
            self._saved[layer.module_name] = module.processor
            module.set_processor(HookedAttnProcessor(layer, self))
        self._hook = self.unet.register_forward_pre_hook(self._on_unet_call, with_kwargs=True)
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
