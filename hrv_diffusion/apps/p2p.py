"""Prompt-to-Prompt editing and P2P-HRV (concept strengthening by token restoration) on the one denoising loop.

A batch holds *groups*: one source row, a plain generation of the source prompt whose attention is never changed,
followed by its edited rows, all from the source's seed. An edited row (target prompt) is changed on the
conditional half only, with no renormalization:

- **cross-attention**, evaluations in its cross window ``[int(a·(S+1)), int(b·(S+1)))`` (S inference steps; with
  PNDM these are the S + 1 evaluations): its probabilities become the source row's mapped to its tokens,
  ``A_src @ M`` (word swap: ``word_swap_mapper``; refine: ``refinement_mapper``, where words without a source
  token keep the row's own attention); then
  - **token restoration** (P2P-HRV), from evaluation ``token_restoration_start_step`` on: in every head k, the
    target token's columns are the row's *own* probabilities times the head's raw HRV value (``"hrv"``), times 1
    (``"all_heads"``), or times 1 in the listed heads only (``"head_list"``, the reference's deprecated mode);
  - **reweight**: chosen words' columns times a factor (times the head's HRV value with ``reweight_with_hrv``);
- **self-attention**, evaluations in its self window ``[int(a·S), int(b·S))``, only in layers with at most
  ``self_max_queries`` queries at the generation's latent size (SD v1.4 at 512²: 16 x 16 = 256, the reference's
  rule): the source row's probabilities, in every head.

Nothing else is touched: outside the windows, on the unconditional rows and on the source rows everything keeps
the fused attention kernel, and an edited layer call computes explicit probabilities for the edited rows' outputs
only (``Controller.edited_rows``). So the source image is bit for bit the plain generation of the same batch.

Model families: the token axis is the family's text length T (CLIP 77; PixArt's T5 120 or 300, words from 0), and
the self-attention threshold is the family's (``default_self_max_queries``: a UNet's quarter-side grids; every PixArt
block, all on the one patch grid). On PixArt the blend maps are every block's, on the patch grid (docs/families.md).

``LocalBlend`` (a ``StepHook``) pulls an edited row's latents back to its source's outside the region its blend
words attend to, from the map store (``core/maps.AttentionMaps``), optionally with HRV head weights: the
reference defines such a blend but its store records nothing, so it never blends.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.families import denoiser, family_of
from hrv_diffusion.core.heads import AttnLayer, HeadLayout, head_layout
from hrv_diffusion.core.loop import StepHook, generate, latent_shape, seed_latents
from hrv_diffusion.core.maps import AttentionMaps
from hrv_diffusion.core.tokens import (MAX_TOKENS, refinement_mapper, word_positions_in_window, word_swap_mapper,
                                       word_token_positions)
from hrv_diffusion.errors import UserError

EDITS = ("replace", "refine")
MASK_THRESHOLD = 0.3  # P2P's LocalBlend threshold, also used for the metrics' edited-word region
RESTORATIONS = ("none", "hrv", "all_heads", "head_list")


# ------------------------------------------------------------------------------------------------ settings

def window(steps, count: int) -> tuple[int, int]:
    """The reference's windows: a fraction f gives evaluations [0, int(f·count)); a pair (s, e) gives
    [int(s·count), int(e·count)). Cross windows count S + 1, self windows S (S = inference steps)."""
    if isinstance(steps, (int, float)):
        return 0, int(steps * count)
    start, end = steps
    return int(start * count), int(end * count)


def default_self_max_queries(pipe, height: int | None = None, width: int | None = None) -> int:
    """The most queries of a self-attention layer that is replaced, by the model's family. UNets: grids of at most a
    quarter of the latent side, (h/4)·(w/4) queries (SD v1.4 at 512², 64² latents: 256, the reference's 16 x 16
    rule; SDXL at 1024²: 32 x 32 = 1024). PixArt: its patch grid, so every block (``families.pixart``)."""
    _, h, w = latent_shape(pipe, height, width)
    model = denoiser(pipe)
    return family_of(model).self_replace_queries(model.config, (h, w))


def default_blend_resolution(pipe, layout: HeadLayout, height: int | None = None, width: int | None = None) -> int:
    """The cross-attention resolution whose maps blend and mask, as the height of its query grid at this size: the
    one nearest to a quarter of the latent height (ties: the finer). SD v1.4: 16 (P2P's five 16 x 16 layers); SDXL
    at 1024²: 32."""
    _, h, w = latent_shape(pipe, height, width)
    sides = sorted({layer.grid((h, w))[0] for layer in layout.layers})
    return min(sides, key=lambda side: (abs(side - h / 4), -side))


@dataclass(frozen=True)
class EditSpec:
    """How an edited image is made from its source: one per method (the P2P baseline, P2P-HRV for a concept...).

    Written into every output folder's manifest. ``name`` is the method's output folder (``original_p2p``,
    ``Color_0.9``). Windows are a fraction or a (start, end) pair of fractions."""

    name: str
    edit: str = "replace"  # "replace" (word swap, equal word counts) | "refine" (added words)
    cross_replace_steps: float | tuple[float, float] = 0.8
    self_replace_steps: float | tuple[float, float] = 0.4
    restoration: str = "none"  # "none" (plain P2P) | "hrv" (--use_soft_vector) | "all_heads" | "head_list"
    concept: str | None = None  # the HRV row of "hrv" restoration, reweighting and blending with the HRV
    token_restoration_start_step: int = 0
    head_list: tuple[str, ...] = ()  # "head_list": labels of the heads whose target token is restored
    reweight: tuple[tuple[str, float], ...] = ()  # (word of the target prompt, factor)
    reweight_with_hrv: bool = False  # factor x HRV value of each head
    local_blend: tuple[str, str] | None = None  # (words of the source prompt, words of the target prompt)
    blend_with_hrv: bool = False  # blend maps weighted by the HRV instead of a plain mean over heads
    blend_threshold: float = 0.3
    mapper_tail: str = "reference"  # word swap after the last swapped word: "reference" (M[j, j]) | "aligned"

    def __post_init__(self):
        if self.edit not in EDITS:
            raise UserError(f"edit must be one of {', '.join(EDITS)}, not {self.edit!r}")
        if self.restoration not in RESTORATIONS:
            raise UserError(f"restoration must be one of {', '.join(RESTORATIONS)}, not {self.restoration!r}")
        for name in ("cross_replace_steps", "self_replace_steps"):
            value = getattr(self, name)
            values = (value,) if isinstance(value, (int, float)) else tuple(value)
            if len(values) not in (1, 2) or not all(0.0 <= v <= 1.0 for v in values):
                raise UserError(f"--{name} must be a fraction of the denoising steps (0 to 1), got {value!r}")
        if self.token_restoration_start_step < 0:
            raise UserError(f"--token_restoration_start_step must be >= 0, got {self.token_restoration_start_step}")
        if self.uses_hrv and not self.concept:
            raise UserError(f"method {self.name!r} uses the HRV but names no concept")

    @property
    def restores(self) -> bool:
        return self.restoration != "none"

    @property
    def uses_hrv(self) -> bool:
        return self.restoration == "hrv" or self.reweight_with_hrv or self.blend_with_hrv

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Edit:
    """One edited image of a group: the target prompt, the method, and the word P2P-HRV restores."""

    target_prompt: str
    spec: EditSpec
    target_token: str | None = None


@dataclass(frozen=True)
class Group:
    """A source prompt and seed with its edits: generated together, the source row first. ``mask_targets``:
    target prompts whose swapped words' region in the source image to return (``EditedBatch.masks``)."""

    source_prompt: str
    seed: int
    edits: tuple[Edit, ...]
    mask_targets: tuple[str, ...] = ()

    @property
    def size(self) -> int:
        return 1 + len(self.edits)


def swapped_words(source: str, target: str) -> list[int]:
    """Indices of the words that differ between two prompts of equal word counts."""
    return [i for i, (a, b) in enumerate(zip(source.split(), target.split())) if a != b]


def check_edit(tokenizer, source: str, edit: Edit, window: int | None = None) -> None:
    """One clear error for an edit that the reference would crash on or silently ignore: ``check_edit_flags``,
    then ``check_edit_words``."""
    check_edit_flags(source, edit)
    check_edit_words(tokenizer, source, edit, window)


def check_edit_flags(source: str, edit: Edit) -> None:
    """The checks of an edit that need no tokenizer: word counts of a swap, the head list, the target token."""
    spec, target = edit.spec, edit.target_prompt
    if spec.edit == "replace" and len(source.split()) != len(target.split()):
        raise UserError(f"a word swap needs prompts with the same number of words: {source!r} has "
                        f"{len(source.split())}, {target!r} has {len(target.split())}; swap words one for one, "
                        "or use a refine edit (--edit refine) for prompts that differ by added words")
    if spec.restoration == "head_list" and not spec.head_list:
        raise UserError("the head-list mode needs the heads to restore: pass --head_list_path")
    if spec.restores and not edit.target_token:
        raise UserError("--target_token is required for P2P-HRV: the word of the target prompt whose attention "
                        "is restored, e.g. --target_token red")


def check_edit_words(tokenizer, source: str, edit: Edit, window: int | None = None) -> None:
    """The words an edit names (target token, reweighted and blend words) are in their prompts, and they and the
    edited words lie inside the text encoder's window of ``window`` tokens: the pipeline's text length
    (``families.text_axis(pipe).length``: CLIP 77, PixArt-α 120, Σ 300); None: the tokenizer's (CLIP's 77)."""
    spec, target = edit.spec, edit.target_prompt
    if spec.restores:
        if not word_positions_in_window(tokenizer, target, edit.target_token, "--target_token", window):
            raise UserError(f"the target token {edit.target_token!r} is not a word of the target prompt {target!r} "
                            "(words are split on whitespace and matched exactly): pass one of its words")
    for word, _ in spec.reweight:
        if not word_positions_in_window(tokenizer, target, word, "the reweighted word", window):
            raise UserError(f"the reweighted word {word!r} is not a word of the target prompt {target!r}")
    if spec.local_blend is not None:
        for words, prompt in zip(spec.local_blend, (source, target)):
            if not word_positions_in_window(tokenizer, prompt, words, "the blend word", window):
                raise UserError(f"the blend word {words!r} is not in the prompt {prompt!r}: pass the source "
                                "prompt's word, then the target prompt's word")
    check_edited_words_in_window(tokenizer, source, edit, window)


def check_edited_words_in_window(tokenizer, source: str, edit: Edit, window: int | None = None) -> None:
    """The words an edit changes (swapped, or added by a refinement) must lie inside the text encoder's window:
    past it the edited image would equal the source's edit without them (the P2P baseline), silently."""
    target = edit.target_prompt
    source_words, target_words = source.split(), target.split()
    if edit.spec.edit == "replace" and len(source_words) == len(target_words):
        for i in swapped_words(source, target):
            word_positions_in_window(tokenizer, source, i, "the swapped word", window)
            word_positions_in_window(tokenizer, target, i, "the swapped word", window)
    else:
        for i, word in enumerate(target_words):
            if word and word not in source_words:
                word_positions_in_window(tokenizer, target, i, "the added word", window)


# ------------------------------------------------------------------------------------------------ rows

@dataclass
class EditRow:
    """An edited row of a batch, with the row index of its source (both among the conditional rows)."""

    row: int
    source_row: int
    source_prompt: str
    edit: Edit
    group: int = 0


def batch_rows(groups: list[Group]) -> tuple[list[str], list[int], list[EditRow], list[int]]:
    """(prompts, seeds, edit rows, source rows) of the batch [group 0: source, edits..., group 1: ...]."""
    prompts, seeds, edit_rows, source_rows = [], [], [], []
    for index, group in enumerate(groups):
        source = len(prompts)
        source_rows.append(source)
        prompts.append(group.source_prompt)
        seeds.append(group.seed)
        for edit in group.edits:
            edit_rows.append(EditRow(len(prompts), source, group.source_prompt, edit, index))
            prompts.append(edit.target_prompt)
            seeds.append(group.seed)
    return prompts, seeds, edit_rows, source_rows


def _positions(tokenizer, prompt: str, word, length: int = MAX_TOKENS) -> list[int]:
    return [p for p in word_token_positions(tokenizer, prompt, word) if p < length]


def _columns(tokenizer, prompt: str, words, length: int = MAX_TOKENS) -> torch.Tensor:
    """(T,) bool: the token positions of ``words`` (one word or several, space-separated) in ``prompt``, on a text
    axis of T = ``length`` tokens (CLIP: 77, positions 1.. after SOT; T5: the family's length, positions 0..)."""
    cols = torch.zeros(length, dtype=torch.bool)
    cols[_positions(tokenizer, prompt, words, length)] = True
    return cols


def edit_mapper(tokenizer, source: str, edit: Edit, length: int = MAX_TOKENS) -> tuple[torch.Tensor, torch.Tensor]:
    """(M (T, T) float32, keep (T,) bool), T = ``length``: mapped = A_src @ M, used on the columns ``keep``, the row's
    own attention elsewhere. Word swap: keep everywhere. Refine: M[mapper[j], j] = 1 where target token j has a
    source token, keep = the reference's alphas."""
    if edit.spec.edit == "replace":
        mapper = word_swap_mapper(tokenizer, source, edit.target_prompt, max_len=length, tail=edit.spec.mapper_tail)
        return mapper, torch.ones(length, dtype=torch.bool)
    index, alphas = refinement_mapper(tokenizer, source, edit.target_prompt, max_len=length)
    keep = alphas > 0
    mapper = torch.zeros(length, length)
    columns = torch.arange(length)[keep]
    mapper[index[keep], columns] = 1.0
    return mapper, keep


# ------------------------------------------------------------------------------------------------ the controller

@dataclass
class _Plan:
    """The edit rows active in one (kind, evaluation), as device tensors."""

    rows: torch.Tensor  # (E_a,) conditional row of each active edit
    sources: torch.Tensor  # (E_a,) its source row
    mapper: torch.Tensor | None = None  # (E_a, 1, T, T)
    keep: torch.Tensor | None = None  # (E_a, 1, 1, T) bool, None = every column
    restore_heads: torch.Tensor | None = None  # (E_a, H) bool
    restore_cols: torch.Tensor | None = None  # (E_a, 1, 1, T) bool
    factor: torch.Tensor | None = None  # (E_a, H)
    equalizer: torch.Tensor | None = None  # (E_a, H, T)


class PromptToPrompt(Controller):
    """Prompt-to-Prompt and P2P-HRV edits of the rows ``edit_rows`` (see the module docstring).

    ``hrv`` is an ``HRV`` in the UNet's head order (``HRV.for_layout``) when a method uses one. ``latent`` (h, w),
    the generation's latent size, decides which self-attention layers are hooked (None: every one, in case); the
    self-attention window of each layer call follows the latent size of its UNet call. ``text_length``: the text
    tokens T of a CA layer (the family's: CLIP 77; PixArt's T5 120 or 300)."""

    self_attention = True

    def __init__(self, edit_rows: list[EditRow], layout: HeadLayout, tokenizer, num_inference_steps: int,
                 self_max_queries: int, hrv=None, device=None, latent: tuple[int, int] | None = None,
                 text_length: int = MAX_TOKENS):
        self.layout, self.self_max_queries, self.device = layout, int(self_max_queries), device
        self.latent, self.text_length = latent, int(text_length)
        T = self.text_length
        self.edit_rows = edit_rows
        H = layout.num_heads
        self.cross_windows = [window(r.edit.spec.cross_replace_steps, num_inference_steps + 1) for r in edit_rows]
        self.self_windows = [window(r.edit.spec.self_replace_steps, num_inference_steps) for r in edit_rows]
        E = len(edit_rows)
        self.mapper = torch.zeros(E, T, T)  # (E, T, T)
        self.keep = torch.ones(E, T, dtype=torch.bool)  # (E, T)
        for e, r in enumerate(edit_rows):
            self.mapper[e], self.keep[e] = edit_mapper(tokenizer, r.source_prompt, r.edit, T)
        self.restore_heads = torch.zeros(E, H, dtype=torch.bool)
        self.restore_cols = torch.zeros(E, T, dtype=torch.bool)
        self.factor = torch.ones(E, H)
        self.restore_from = [0] * E
        self.equalizer = torch.ones(E, H, T) if any(r.edit.spec.reweight for r in edit_rows) else None
        for e, r in enumerate(edit_rows):
            spec = r.edit.spec
            values = self._hrv_row(hrv, spec.concept, H) if spec.uses_hrv else None
            if spec.restores:
                self.restore_cols[e] = _columns(tokenizer, r.edit.target_prompt, r.edit.target_token, T)
                self.restore_from[e] = spec.token_restoration_start_step
                if spec.restoration == "head_list":
                    self.restore_heads[e, [layout.index_of(label) for label in spec.head_list]] = True
                else:
                    self.restore_heads[e] = True
                if spec.restoration == "hrv":
                    self.factor[e] = values
            for word, value in spec.reweight:
                cols = _columns(tokenizer, r.edit.target_prompt, word, T)
                per_head = value * values if spec.reweight_with_hrv else torch.full((H,), float(value))
                self.equalizer[e][:, cols] = per_head[:, None]
        self._plans: dict[tuple[str, int], _Plan | None] = {}

    @staticmethod
    def _hrv_row(hrv, concept: str, num_heads: int) -> torch.Tensor:
        if hrv is None:
            raise UserError(f"concept {concept!r} needs an HRV: pass --hrv paper or an HRV file")
        values = torch.as_tensor(np.asarray(hrv.row(concept), dtype=np.float32))
        if values.shape != (num_heads,):
            raise UserError(f"the HRV has {values.shape[-1]} heads, this model {num_heads}: use the model's own HRV")
        return values

    # -------------------------------------------------------------------------------------- plans

    def _plan(self, kind: str, step: int) -> _Plan | None:
        key = (kind, step)
        if key not in self._plans:
            windows = self.cross_windows if kind == "cross" else self.self_windows
            active = [e for e, (start, stop) in enumerate(windows) if start <= step < stop]
            self._plans[key] = self._make_plan(kind, step, active) if active else None
        return self._plans[key]

    def _make_plan(self, kind: str, step: int, active: list[int]) -> _Plan:
        to = lambda x: x.to(self.device)  # noqa: E731
        index = torch.tensor(active)
        plan = _Plan(rows=to(torch.tensor([self.edit_rows[e].row for e in active])),
                     sources=to(torch.tensor([self.edit_rows[e].source_row for e in active])))
        if kind == "self":
            return plan
        plan.mapper = to(self.mapper[index][:, None])
        keep = self.keep[index]
        plan.keep = None if bool(keep.all()) else to(keep[:, None, None, :])
        started = torch.tensor([step >= self.restore_from[e] for e in active])
        heads = self.restore_heads[index] & started[:, None]
        if bool(heads.any()):
            plan.restore_heads, plan.factor = to(heads), to(self.factor[index])
            plan.restore_cols = to(self.restore_cols[index][:, None, None, :])
        if self.equalizer is not None:
            plan.equalizer = to(self.equalizer[index])
        return plan

    # -------------------------------------------------------------------------------------- the protocol

    def wants_layer(self, layer: AttnLayer) -> bool:
        if layer.is_cross:
            return True
        small = self.latent is None or layer.queries(self.latent) <= self.self_max_queries
        return small and any(a < b for a, b in self.self_windows)

    def _active_plan(self, layer: AttnLayer, call: UNetCall) -> _Plan | None:
        if not layer.is_cross and layer.queries(call.latent) > self.self_max_queries:
            return None
        return self._plan("cross" if layer.is_cross else "self", call.step)

    def edits_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        return self._active_plan(layer, call) is not None

    def edited_rows(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        plan = self._active_plan(layer, call)
        return plan.rows if plan is not None else None

    def edit_probs(self, layer: AttnLayer, call: UNetCall, probs: torch.Tensor) -> torch.Tensor:
        plan = self._active_plan(layer, call)  # probs: (Bc, h, N, T)
        if plan is None:
            return probs
        source = probs[plan.sources]  # (E_a, h, N, T)
        if not layer.is_cross:
            return probs.index_copy(0, plan.rows, source)
        if probs.shape[-1] != self.text_length:
            raise ValueError(f"Prompt-to-Prompt maps {self.text_length} text tokens, this layer has {probs.shape[-1]}")
        own = probs[plan.rows]  # (E_a, h, N, T)
        mapped = torch.matmul(source, plan.mapper)  # (E_a, h, N, T)
        if plan.keep is not None:  # refine: tokens without a source keep their own attention
            mapped = torch.where(plan.keep, mapped, own)
        heads = slice(layer.offset, layer.offset + layer.heads)
        if plan.restore_heads is not None:  # token restoration: own attention x head factor
            restore = plan.restore_heads[:, heads, None, None] & plan.restore_cols  # (E_a, h, 1, T)
            mapped = torch.where(restore, own * plan.factor[:, heads, None, None], mapped)
        if plan.equalizer is not None:
            mapped = mapped * plan.equalizer[:, heads, None, :]
        return probs.index_copy(0, plan.rows, mapped)


class ExplicitPromptToPrompt(PromptToPrompt):
    """The same edits with explicit probabilities in every attention layer at every evaluation, as the
    reference's hooked forward computes them (slow: for benchmarks and checks)."""

    def wants_layer(self, layer: AttnLayer) -> bool:
        return True

    def edits_probs(self, layer: AttnLayer, call: UNetCall) -> bool:
        return True

    def edited_rows(self, layer: AttnLayer, call: UNetCall) -> torch.Tensor | None:
        return None


# ------------------------------------------------------------------------------------------------ local blend

def word_mask(maps: torch.Tensor, size: tuple[int, int], threshold: float, pool: int = 1) -> torch.Tensor:
    """P2P's blend mask from summed word maps (E, R_h, R_w): max-pool (2·pool+1)², nearest upsampling to ``size``,
    divide by each map's maximum, keep > ``threshold``. (E, 1, *size) bool."""
    maps = F.max_pool2d(maps[:, None].float(), 2 * pool + 1, stride=1, padding=pool)
    maps = F.interpolate(maps, size=tuple(size))
    peak = maps.amax(dim=(2, 3), keepdim=True).clamp_min(torch.finfo(maps.dtype).tiny)
    return (maps / peak) > threshold


class BlendMaps:
    """What blending and masks read from the map store: per edit row, its map group and word columns."""

    def __init__(self, edit_rows: list[EditRow], layout: HeadLayout, tokenizer, resolution: int, hrv=None,
                 masks: list[tuple[int, str, str]] = (), latent: tuple[int, int] | None = None,
                 text_length: int = MAX_TOKENS):
        """The maps of the CA layers whose query grid is ``resolution`` rows high on latents of ``latent`` (h, w)
        (default: the UNet's default sample size), on that grid (PixArt: every block, on the patch grid); word
        columns on a text axis of ``text_length`` tokens."""
        T = text_length
        concepts = sorted({r.edit.spec.concept for r in edit_rows
                           if r.edit.spec.local_blend is not None and r.edit.spec.blend_with_hrv})
        weights = [torch.ones(layout.num_heads)]
        for concept in concepts:
            weights.append(PromptToPrompt._hrv_row(hrv, concept, layout.num_heads))
        grids = {layer.module_name: layer.grid(latent or layer.default_latent) for layer in layout.layers}
        chosen = [name for name, grid in grids.items() if grid[0] == resolution]
        if not chosen:
            raise UserError(f"no cross-attention layer has a query grid {resolution} rows high here: pass a blend resolution "
                            f"among {sorted({grid[0] for grid in grids.values()})}")
        self.store = AttentionMaps(layout, grids[chosen[0]], head_weights=torch.stack(weights), layers=chosen)
        self.blend = []  # (row, source row, group, source columns (T,), target columns (T,)), rows that blend
        # (source row, source columns): the swapped words' region in a source image, per (row, source, target)
        self.masks = [(row, source_word_columns(tokenizer, source, target, T)) for row, source, target in masks]
        for r in edit_rows:
            spec = r.edit.spec
            if spec.local_blend is not None:
                group = 1 + concepts.index(spec.concept) if spec.blend_with_hrv else 0
                source_cols = _columns(tokenizer, r.source_prompt, spec.local_blend[0], T)
                target_cols = _columns(tokenizer, r.edit.target_prompt, spec.local_blend[1], T)
                self.blend.append((r.row, r.source_row, group, source_cols, target_cols, spec.blend_threshold))

    def summed(self, row: int, group: int, columns: torch.Tensor) -> torch.Tensor:
        """(R_h, R_w): the store's maps of ``row`` summed over the word ``columns``."""
        maps = self.store.maps[row, group]  # (R_h, R_w, T)
        return (maps * columns.to(maps.device, maps.dtype)).sum(-1)


def source_word_columns(tokenizer, source: str, target: str, length: int = MAX_TOKENS) -> torch.Tensor:
    """(T,) bool, T = ``length``: the source prompt's tokens that editing it into ``target`` changes. A word swap:
    the swapped words. Otherwise: the source words missing from the target, else (words were only added) every
    word."""
    words, target_words = source.split(), target.split()
    if len(words) == len(target_words):
        changed = swapped_words(source, target)
    else:
        changed = [i for i, w in enumerate(words) if w not in target_words] or list(range(len(words)))
    cols = torch.zeros(length, dtype=torch.bool)
    for i in changed:
        cols[_positions(tokenizer, source, i, length)] = True
    return cols


class LocalBlend(StepHook):
    """After each scheduler step: x_edit = x_src + mask · (x_edit − x_src), mask = the union of the source
    words' region in the source row and the target words' region in the edited row (P2P's LocalBlend: maps summed
    over all evaluations so far, 3x3 max-pool, nearest upsampling, / max, > threshold)."""

    def __init__(self, maps: BlendMaps, start_step: int = 0):
        self.maps, self.start_step = maps, start_step

    def after(self, step: int, t, latents: torch.Tensor) -> torch.Tensor | None:
        if step < self.start_step or not self.maps.blend or self.maps.store.maps is None:
            return None
        size = latents.shape[-2:]
        out = latents.clone()
        for row, source, group, source_cols, target_cols, threshold in self.maps.blend:
            both = torch.stack([self.maps.summed(source, group, source_cols),
                                self.maps.summed(row, group, target_cols)])  # (2, R_h, R_w)
            mask = word_mask(both, size, threshold).any(dim=0).to(latents.dtype)  # (1, h, w)
            out[row] = latents[source] + mask * (latents[row] - latents[source])
        return out


# ------------------------------------------------------------------------------------------------ generation

@dataclass
class EditedBatch:
    """Images of a batch in row order, and which rows are what."""

    images: np.ndarray | None  # (B, H, W, 3) uint8 (None with decode=None)
    latents: torch.Tensor  # (B, C, h, w) final latents
    source_rows: list[int]
    edit_rows: list[EditRow]
    masks: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (group, target) -> (H, W) bool
    settings: dict = field(default_factory=dict)


def generate_edits(pipe, groups: list[Group], *, hrv=None, num_inference_steps: int = 50,
                   guidance_scale: float = 7.5, decode: str = "truncate", self_max_queries: int | None = None,
                   blend_resolution: int | None = None, explicit: bool = False,
                   height: int | None = None, width: int | None = None) -> EditedBatch:
    """Generate every group's source and edited images in one batch (see the module docstring).

    ``hrv``: an ``HRV`` (``hrv_diffusion.hrv.vectors``) when a method uses one; ``self_max_queries`` and
    ``blend_resolution`` default to the model's (``default_self_max_queries``, latent side / 4);
    ``Group.mask_targets``: also return the swapped words' regions in the source images (preservation metrics);
    ``explicit``: explicit probabilities everywhere (the reference's way; slow)."""
    layout = head_layout(pipe)
    if hrv is not None:
        hrv = hrv.for_layout(layout)
    tokenizer = pipe.tokenizer
    length = family_of(pipe).text_length(pipe)  # T: CLIP 77, PixArt's T5 120 (α) or 300 (Σ)
    for group in groups:
        for edit in group.edits:
            check_edit(tokenizer, group.source_prompt, edit, length)
    prompts, seeds, edit_rows, source_rows = batch_rows(groups)
    device = pipe._execution_device
    shape = latent_shape(pipe, height, width)  # (C, h, w)
    max_queries = default_self_max_queries(pipe, height, width) if self_max_queries is None else self_max_queries
    cls = ExplicitPromptToPrompt if explicit else PromptToPrompt
    p2p = cls(edit_rows, layout, tokenizer, num_inference_steps, max_queries, hrv=hrv, device=device, latent=shape[1:],
              text_length=length)
    controllers, hooks, maps = [p2p], [], None
    mask_requests = [(source_rows[g], group.source_prompt, target)
                     for g, group in enumerate(groups) for target in group.mask_targets]
    if mask_requests or any(r.edit.spec.local_blend is not None for r in edit_rows):
        resolution = blend_resolution or default_blend_resolution(pipe, layout, height, width)
        maps = BlendMaps(edit_rows, layout, tokenizer, resolution, hrv, masks=mask_requests, latent=shape[1:],
                         text_length=length)
        controllers.insert(0, maps.store)  # before the edits: it reads each row's own attention, as P2P's store
        hooks.append(LocalBlend(maps))
    latents = seed_latents(seeds, shape)  # one generator per row, so every row of a group starts alike
    out = generate(pipe, prompts, latents, num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                   controllers=controllers, step_hooks=hooks, decode=decode, height=height, width=width)
    masks = {}
    if mask_requests:
        summed = torch.stack([maps.summed(row, 0, cols) for row, cols in maps.masks])  # (M, R_h, R_w)
        size = (shape[1] * pipe.vae_scale_factor, shape[2] * pipe.vae_scale_factor)
        regions = word_mask(summed, size, MASK_THRESHOLD)[:, 0].cpu().numpy()  # (M, H, W)
        keys = [(g, target) for g, group in enumerate(groups) for target in group.mask_targets]
        masks = dict(zip(keys, regions))
    return EditedBatch(out.images, out.latents, source_rows, edit_rows, masks,
                       {"self_max_queries": max_queries, "num_cross_attention_heads": layout.num_heads})
