"""SD-HRV concept adjusting: make a word read as one concept rather than another, on the one denoising loop.

A word of a prompt (all of its BPE pieces, ``core/tokens.word_token_positions``) gets, in every cross-attention
head k, its post-softmax attention probabilities multiplied by a head factor

    m_k = Σ_c w_c · min(HRV[c, k], clamp)          (no clamp: HRV[c, k] itself)

The paper's SD-HRV ("reduce misinterpretation") is the weights {desired: 2, undesired: -1}: m_k = 2·d_k − u_k,
which is negative in many heads; the SDXL notebook clamps every HRV element at 9 first, the SD v1.4 one does not.
Faithful defaults: conditional half only, every evaluation, no renormalization, the factors used raw.

Options, per batch row (``Adjustment``): any word, any weighted combination of concepts, the clamp, a window of
evaluations ``[int(a·(S+1)), int(b·(S+1)))`` (the reference's ``reweight_steps`` [0, 1.01] is every evaluation),
a lower bound of the factors (``min_factor``) and renormalization of each query's probabilities to sum 1 again
(``renormalize``; it needs non-negative factors). A row without an adjustment is generated as it would be alone.

**Cost.** Without renormalization the edit is a per-(head, token) scale of the probabilities, and
``Σ_t (p_t s_t) v_t = Σ_t p_t (s_t v_t)``: the attention hooks keep the fused SDPA kernel and scale the values
``V`` (B, h, 77, d) instead (``Controller.token_scale``). No explicit probabilities are ever formed, so an
adjusted generation costs a plain one plus one small multiply per cross-attention call. Renormalization does need
each query's row sum ``Σ_t p_t s_t``, so renormalized rows (and only them) take the explicit path.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.families import family_of
from hrv_diffusion.core.heads import AttnLayer, HeadLayout, head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.tokens import MAX_TOKENS, word_positions_in_window
from hrv_diffusion.errors import UserError

SDXL_CLAMP = 9.0  # the SDXL notebook's clamping_value; SD v1.4: no clamp


def sd_hrv_weights(desired: str, undesired: str | None) -> dict[str, float]:
    """The paper's combination: strengthen the desired concept x2, weaken the undesired x1 (2·d − u)."""
    if undesired is None or undesired == desired:
        if undesired == desired:
            raise UserError(f"the desired and undesired concepts are both {desired!r}: pass two different concepts")
        return {desired: 2.0}
    return {desired: 2.0, undesired: -1.0}


@dataclass(frozen=True)
class Adjustment:
    """How one batch row is adjusted: ``word`` of its prompt, concept ``weights`` ({"Color": 2, "Plants": -1}),
    ``clamp`` (upper bound of every HRV element before combining; None: raw), ``steps`` (evaluation window as
    fractions of S + 1 evaluations: (0, 1) = all), ``min_factor`` (lower bound of the factors; None: none) and
    ``renormalize`` (divide each query's adjusted probabilities by their sum; needs factors >= 0)."""

    word: str | int
    weights: tuple[tuple[str, float], ...] | Mapping[str, float]
    clamp: float | None = None
    steps: tuple[float, float] = (0.0, 1.0)
    min_factor: float | None = None
    renormalize: bool = False

    def __post_init__(self):
        weights = self.weights.items() if isinstance(self.weights, Mapping) else self.weights
        weights = tuple((str(c), float(w)) for c, w in weights)
        if not weights:
            raise UserError("an adjustment needs at least one concept weight, e.g. {'Color': 2, 'Plants': -1}")
        object.__setattr__(self, "weights", weights)
        start, end = (0.0, float(self.steps)) if isinstance(self.steps, (int, float)) else map(float, self.steps)
        if not 0.0 <= start <= end:
            raise UserError(f"the adjusting window must be fractions 0 <= start <= end, got {self.steps!r}")
        object.__setattr__(self, "steps", (start, end))
        if self.clamp is not None and not self.clamp > 0:
            raise UserError(f"the clamp is an upper bound of HRV elements (mean 1) and must be > 0, got {self.clamp}")

    @classmethod
    def sd_hrv(cls, word, desired: str, undesired: str | None, **options) -> "Adjustment":
        """The paper's SD-HRV: factors 2·HRV[desired] − HRV[undesired]."""
        return cls(word, sd_hrv_weights(desired, undesired), **options)

    @property
    def concepts(self) -> list[str]:
        return [c for c, _ in self.weights]

    def window(self, num_inference_steps: int) -> tuple[int, int]:
        """Evaluations [start, stop) of the window, counted over S + 1 as the reference's alpha tables."""
        count = num_inference_steps + 1
        return int(self.steps[0] * count), int(self.steps[1] * count)

    def to_dict(self) -> dict:
        return {"word": self.word, "weights": dict(self.weights), "clamp": self.clamp, "steps": list(self.steps),
                "min_factor": self.min_factor, "renormalize": self.renormalize}


def head_factors(hrv, adjustment: Adjustment) -> np.ndarray:
    """(H,) float32 factors m_k = Σ_c w_c · min(HRV[c, k], clamp), bounded below by ``min_factor``; HRV columns
    in the order of ``hrv`` (use ``hrv.for_layout(layout)`` for a UNet's order)."""
    total = np.zeros(hrv.num_heads, dtype=np.float64)
    for concept, weight in adjustment.weights:
        values = np.asarray(hrv.row(concept), dtype=np.float64)
        if adjustment.clamp is not None:
            values = np.minimum(values, adjustment.clamp)
        total += weight * values
    if adjustment.min_factor is not None:
        total = np.maximum(total, adjustment.min_factor)
    return total.astype(np.float32)


def word_columns(tokenizer, prompt: str, word, window: int | None = None) -> list[int]:
    """Token positions of ``word`` in ``prompt`` (all of its pieces); one clear error when it is absent or past the
    text encoder's window of ``window`` tokens (the family's text length; None: the tokenizer's, CLIP's 77)."""
    positions = word_positions_in_window(tokenizer, prompt, word, "--selected_token", window)
    if not positions:
        words = ", ".join(repr(w) for w in prompt.split() if w)
        raise UserError(f"the word {word!r} is not in the prompt {prompt!r} (words are split on whitespace and matched "
                        f"exactly, case-sensitive): pass one of {words}")
    return positions


class ConceptAdjuster(Controller):
    """Scales the adjusted words' columns of the conditional rows' cross-attention probabilities, head by head.

    ``adjustments[b]`` belongs to conditional row b of every UNet call (None: row b is not adjusted); ``hrv``
    must be in ``layout``'s head order (``HRV.for_layout``)."""

    def __init__(self, prompts: list[str], adjustments: list[Adjustment | None], hrv, layout: HeadLayout,
                 tokenizer, num_inference_steps: int, device=None, text_length: int = MAX_TOKENS):
        if len(prompts) != len(adjustments):
            raise ValueError(f"{len(prompts)} prompts for {len(adjustments)} adjustments")
        self.layout, self.device = layout, device
        B, H = len(prompts), layout.num_heads
        self.factors = torch.ones(B, H, text_length)  # (B, H, T) float32; T: the family's text length
        self.windows = [(0, 0)] * B
        self.renormalized = [False] * B
        for b, (prompt, adj) in enumerate(zip(prompts, adjustments)):
            if adj is None:
                continue
            if hrv is None:
                raise UserError("adjusting needs an HRV: pass --hrv paper or an HRV file built for this model")
            if hrv.num_heads != H:
                raise UserError(f"{hrv.source} has {hrv.num_heads} heads per concept but this model has {H} CA "
                                "heads: use the HRV of the same model")
            m = torch.from_numpy(head_factors(hrv, adj))  # (H,)
            if adj.renormalize and bool((m < 0).any()):
                raise UserError(f"renormalizing needs non-negative factors, but {int((m < 0).sum())} of {H} heads "
                                f"have negative ones for {dict(adj.weights)}: also pass a lower bound, e.g. "
                                "min_factor=0 (--min_factor 0)")
            self.factors[b][:, word_columns(tokenizer, prompt, adj.word, text_length)] = m[:, None]
            self.windows[b] = adj.window(num_inference_steps)
            self.renormalized[b] = adj.renormalize
        self._scales: dict[tuple[str, tuple[int, ...]], torch.Tensor] = {}
        self._rows: dict[int, tuple[int, ...]] = {}

    def active(self, step: int) -> tuple[int, ...]:
        """Rows adjusted at evaluation ``step``."""
        if step not in self._rows:
            self._rows[step] = tuple(b for b, (a, e) in enumerate(self.windows) if a <= step < e)
        return self._rows[step]

    def token_scale(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        rows = self.active(call.step)
        if not rows:
            return None
        key = (layer.module_name, rows)
        if key not in self._scales:  # built once per layer and set of active rows, kept on the device
            heads = self.factors[:, layer.offset : layer.offset + layer.heads]  # (B, h, T)
            if len(rows) < len(self.windows):
                scale = torch.ones_like(heads)
                scale[list(rows)] = heads[list(rows)]
                heads = scale
            self._scales[key] = heads.contiguous().to(self.device)
        return self._scales[key]

    def _renormalized_rows(self, step: int) -> list[int]:
        return [b for b in self.active(step) if self.renormalized[b]]

    def edits_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        return bool(self._renormalized_rows(call.step))

    def edited_rows(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        rows = self._renormalized_rows(call.step)
        return torch.tensor(rows, device=self.device) if rows else None

    def edit_probs(self, layer: AttnLayer, call: UNetCall, probs: torch.Tensor) -> torch.Tensor:
        rows = self._renormalized_rows(call.step)  # probs (Bc, h, N, T), already times the factors
        if not rows:
            return probs
        index = torch.tensor(rows, device=probs.device)
        part = probs[index]
        part = part / part.sum(-1, keepdim=True).clamp_min(torch.finfo(part.dtype).tiny)
        return probs.index_copy(0, index, part)


@dataclass
class AdjustedBatch:
    """Standard and adjusted images of the same seeds, in the order of the prompts."""

    standard: np.ndarray | None  # (B, H, W, 3) uint8, None without standard rows or decode=None
    adjusted: np.ndarray | None  # (B, H, W, 3) uint8
    standard_latents: torch.Tensor | None  # (B, C, h, w)
    adjusted_latents: torch.Tensor  # (B, C, h, w)
    settings: dict = field(default_factory=dict)


def generate_adjusted(pipe, prompts: list[str], seeds, adjustments, *, hrv=None, with_standard: bool = True,
                      num_inference_steps: int = 50, guidance_scale: float = 7.5, decode: str | None = "truncate",
                      height: int | None = None, width: int | None = None) -> AdjustedBatch:
    """Generate ``prompts`` from ``seeds`` (one CPU generator per image) with ``adjustments`` (one ``Adjustment``
    for all rows, or one per row, None = not adjusted), and, with ``with_standard``, the same prompts and seeds
    unadjusted in the same batch: [standard rows..., adjusted rows...]. The standard rows are bit for bit the
    plain generation of that batch. ``hrv``: an ``HRV`` (``hrv_diffusion.hrv.vectors.load_hrv``)."""
    prompts, seeds = list(prompts), [int(s) for s in seeds]
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts for {len(seeds)} seeds")
    if isinstance(adjustments, Adjustment) or adjustments is None:
        adjustments = [adjustments] * len(prompts)
    adjustments = list(adjustments)
    if len(adjustments) != len(prompts):
        raise ValueError(f"{len(adjustments)} adjustments for {len(prompts)} prompts")
    layout = head_layout(pipe)
    if hrv is not None:
        hrv = hrv.for_layout(layout)
    rows = (prompts + prompts) if with_standard else prompts
    row_adjustments = ([None] * len(prompts) + adjustments) if with_standard else adjustments
    adjuster = ConceptAdjuster(rows, row_adjustments, hrv, layout, pipe.tokenizer, num_inference_steps,
                               device=pipe._execution_device, text_length=family_of(pipe).text_length(pipe))
    latents = seed_latents((seeds + seeds) if with_standard else seeds, latent_shape(pipe, height, width))
    out = generate(pipe, rows, latents, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   controllers=[adjuster], decode=decode, height=height, width=width)
    n = len(prompts)
    images = out.images
    settings = {"num_inference_steps": num_inference_steps, "guidance_scale": guidance_scale, "decode": decode,
                "num_cross_attention_heads": layout.num_heads,
                "hrv": None if hrv is None else hrv.source,
                "hrv_fingerprint": None if hrv is None else hrv.fingerprint()}
    if with_standard:
        return AdjustedBatch(None if images is None else images[:n], None if images is None else images[n:],
                             out.latents[:n], out.latents[n:], settings)
    return AdjustedBatch(None, images, None, out.latents, settings)


def side_by_side(rows: list[np.ndarray], gap: int = 2, background: int = 255) -> np.ndarray:
    """One uint8 picture of image rows, e.g. [standard (n, H, W, 3), adjusted (n, H, W, 3)]: a row each (top
    first), the images of a row left to right, ``gap`` pixels between them."""
    if not rows or any(len(r) != len(rows[0]) for r in rows):
        raise ValueError("side_by_side needs rows with the same number of images")
    n, h, w = len(rows[0]), rows[0].shape[1], rows[0].shape[2]
    grid = np.full((len(rows) * h + (len(rows) - 1) * gap, n * w + (n - 1) * gap, 3), background, np.uint8)
    for r, images in enumerate(rows):
        for i, image in enumerate(images):
            grid[r * (h + gap) : r * (h + gap) + h, i * (w + gap) : i * (w + gap) + w] = image
    return grid
