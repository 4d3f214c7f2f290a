"""Attend-and-Excite (A&E) and A&E-HRV: push the latents until every target token is attended somewhere.

At the first ``max_iter_to_alter`` evaluations a conditional-only UNet pass records the cross-attention maps of the
target tokens; the loss is ``max_k max(0, 1 - m_k)``, where ``m_k`` is the spatial maximum of token k's map after a
×100 softmax over the text tokens (and an optional Gaussian smoothing); the latents take one gradient step
``z ← z − α_i ∇L`` with ``α_i = scale_factor · sqrt(linspace(1, 0.5, T))[i]``. At the threshold evaluations
(0, 10, 20) the step is repeated ("iterative refinement") while ``L > 1 − threshold``, at most 20 times.

What differs between the variants is only how token k's map is built (``token_map_store``):

- **A&E-HRV** (the paper's, the default): every CA head's map resampled to ``attention_res`` (blur-then-bicubic
  down, bicubic up; ``core/maps.resample_maps``) and weighted by the HRV of token k's concept / H: one weighted map
  per target token (a convex average over all heads, since an HRV row sums to H);
- **standard A&E**: the plain mean over the heads of the CA layers whose query grid is ``attention_res`` rows high
  at the generation's latent size (16x16 on SD v1.4 at 512²: 40 heads; at a non-square size the maps keep that
  grid, e.g. 6x4);
- **plain SD**: no update at all.

Faithful defaults are the reference's (SNU-DRL/HRV ``attend_and_excite_hrv.py``): softmax over token columns 1..76
(``token_slice="1:77"``), smoothing off unless asked for, and when on a true Gaussian (``kernel="gaussian"``).
diffusers' ``StableDiffusionAttendAndExcitePipeline`` (and the original A&E) is reproduced with
``token_slice="1:-1"``, ``smooth=True``, ``kernel="diffusers"`` (its σ is √2 larger: exp(-((x-m)/(2σ))²)).

On PixArt (T5 text, ``core/families.text_axis``) the softmax columns are the prompt's own: there is no SOT to skip
and the padding, masked by the transformer, is left out ("1:77": words and </s>; "1:-1", "1:eot": the words); the
maps lie on the patch grid, where standard A&E averages every block (``token_columns``, docs/families.md).

The update is per sample: each sample's loss, refinement and step are independent of the others, so a batch of
seeds gives the same latents as one seed at a time (the gradient of the sum of per-sample losses is the per-sample
gradient; refinement runs only the samples still above their target).

Memory by design: the map store only reads probabilities, so self-attention and every CA layer whose maps the loss
does not need keep fused SDPA; the needed CA probabilities are computed for the conditional rows of the gradient
passes only; the UNet's weights are frozen during the passes (autograd then keeps no activations for weight
gradients); a gradient pass stops after the last layer the loss reads (``DenoisingLoop.noise(..., stop_after=...)``:
its output is not needed); refinement passes run only the samples still refining (``DenoisingLoop.subset``); no
gradient pass runs at evaluations that neither update nor refine.

Every layer's maps lie on its query grid for the generation's latent size, so any ``height``/``width`` works: A&E-HRV
resamples each layer's grid to R x R, standard A&E keeps the grid of its layers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from hrv_diffusion.core.families import denoiser, family_of, text_axis
from hrv_diffusion.core.families import unet as unet_family
from hrv_diffusion.core.graphs import GraphCache, graphs_supported
from hrv_diffusion.core.heads import HeadLayout
from hrv_diffusion.core.loop import DenoisingLoop, StepHook
from hrv_diffusion.core.maps import AttentionMaps
from hrv_diffusion.core.speed import tf32_matmuls
from hrv_diffusion.errors import UserError

MODES = ("hrv", "standard", "sd")  # A&E-HRV, standard A&E, plain SD
MODE_FOLDERS = {"hrv": "attend_and_excite-hrv", "standard": "original_attend_and_excite", "sd": "standard_sd"}
TOKEN_SLICES = ("1:77", "1:-1", "1:eot")  # softmax columns: the reference, diffusers / original A&E, up to EOT
KERNELS = ("gaussian", "diffusers")
SOFTMAX_SCALE = 100.0  # the maps are multiplied by 100 before the softmax over tokens (A&E's temperature)
DEFAULT_THRESHOLDS = {0: 0.05, 10: 0.5, 20: 0.8}


@dataclass
class AttendExciteSettings:
    """What one A&E run does; written into every image's telemetry JSON."""

    mode: str = "hrv"
    attention_res: int = 8  # R: the maps are R x R (standard A&E: R rows, its layers' grid)
    max_iter_to_alter: int = 25  # gradient steps at evaluations 0 .. max_iter_to_alter - 1
    thresholds: dict = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))  # {evaluation: threshold}
    scale_factor: float = 20.0
    scale_range: tuple = (1.0, 0.5)  # step size at evaluation i: scale_factor * sqrt(linspace(*scale_range, T))[i]
    max_refinement_steps: int = 20
    smooth_attentions: bool = False
    sigma: float = 0.5
    kernel_size: int = 3
    kernel: str = "gaussian"  # "gaussian" = exp(-x²/2σ²) (the reference); "diffusers" = exp(-(x/2σ)²)
    token_slice: str = "1:77"
    num_inference_steps: int = 50
    guidance_scale: float = 7.5

    def __post_init__(self):
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.token_slice not in TOKEN_SLICES:
            raise UserError(f"--token_slice must be one of {', '.join(TOKEN_SLICES)}, not {self.token_slice!r}")
        if self.kernel not in KERNELS:
            raise UserError(f"--kernel must be one of {', '.join(KERNELS)}, not {self.kernel!r}")
        if self.attention_res < 1:
            raise UserError(f"--attention_res must be at least 1, got {self.attention_res}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise UserError(f"--kernel_size must be a positive odd number, got {self.kernel_size}")
        if self.sigma <= 0:
            raise UserError(f"--sigma must be positive, got {self.sigma}")
        if self.max_refinement_steps < 1:
            raise UserError(f"--max_refinement_steps must be at least 1, got {self.max_refinement_steps}")
        self.thresholds = {int(k): float(v) for k, v in dict(self.thresholds).items()}
        self.scale_range = tuple(float(x) for x in self.scale_range)
        if len(self.scale_range) != 2 or min(self.scale_range) < 0:
            raise UserError(f"--scale_range needs two non-negative numbers, got {self.scale_range}")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["thresholds"] = {str(k): v for k, v in self.thresholds.items()}
        out["scale_range"] = list(self.scale_range)
        return out


# ------------------------------------------------------------------------------------------------ the math

def step_sizes(scale_factor: float, num_evaluations: int, scale_range=(1.0, 0.5)) -> np.ndarray:
    """(T,) float64: α_i = scale_factor · sqrt(linspace(start, end, T))[i] (A&E's schedule; 20, 18.97, … for T=51)."""
    return scale_factor * np.sqrt(np.linspace(scale_range[0], scale_range[1], num_evaluations))


def smoothing_kernel(size: int, sigma: float, kind: str = "gaussian") -> torch.Tensor:
    """(size, size) float32, sums to 1: the product over both axes of exp(-(x-m)²/2σ²) ("gaussian", a true
    Gaussian of std σ) or exp(-((x-m)/2σ)²) ("diffusers": diffusers' and the original A&E's, std √2·σ)."""
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    if kind == "gaussian":
        weights = torch.exp(-coords**2 / (2 * sigma**2))
    elif kind == "diffusers":
        weights = torch.exp(-((coords / (2 * sigma)) ** 2))
    else:
        raise ValueError(f"kernel must be one of {KERNELS}, not {kind!r}")
    kernel = weights[:, None] * weights[None, :]
    return kernel / kernel.sum()


def smooth(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """(N, R_h, R_w) -> (N, R_h, R_w): reflect padding by size//2, then a 2-D convolution with ``kernel``."""
    pad = kernel.shape[-1] // 2
    padded = F.pad(images[:, None], (pad, pad, pad, pad), mode="reflect")  # (N, 1, R_h+2p, R_w+2p)
    return F.conv2d(padded, kernel.to(images)[None, None])[:, 0]


@dataclass
class Targets:
    """The tokens to excite, for a batch of B samples: K targets, each a group of token positions (a word's BPE
    pieces; its score is the max over them), and the map group (concept) each target reads.

    ``first`` and ``masks_padding`` place the softmax columns on the text axis of the model (``TextAxis``; the
    defaults are CLIP's, ``generate_attend_excite`` sets the pipeline's)."""

    positions: torch.Tensor  # (B, K, P) long; groups shorter than P repeat their first position
    groups: torch.Tensor  # (K,) long: index into the store's groups
    eot: torch.Tensor  # (B,) long: position of each prompt's end token
    first: int = 1  # position of the first word token: 1 after CLIP's SOT, 0 for T5
    masks_padding: bool = False  # True (T5): the columns past the end token are masked padding, not text

    @classmethod
    def build(cls, positions, eot, groups=None) -> "Targets":
        """``positions``: per sample, a list of K lists of positions (or K ints); ``eot``: per sample."""
        rows = [[[p] if isinstance(p, (int, np.integer)) else list(p) for p in sample] for sample in positions]
        k = len(rows[0])
        if k == 0 or any(len(r) != k for r in rows):
            raise UserError("every prompt of a batch needs the same number of target tokens (at least one)")
        width = max(len(p) for r in rows for p in r)
        if width == 0:
            raise UserError("a target word has no token in the prompt")
        padded = [[p + [p[0]] * (width - len(p)) for p in r] for r in rows]
        groups = torch.arange(k) if groups is None else torch.as_tensor(groups, dtype=torch.long)
        return cls(torch.tensor(padded, dtype=torch.long), groups, torch.as_tensor(eot, dtype=torch.long))

    def subset(self, rows: torch.Tensor) -> "Targets":
        return replace(self, positions=self.positions[rows], eot=self.eot[rows])

    def columns(self, token_slice: str, b: int, length: int) -> slice:
        """Sample b's softmax columns (``token_columns``) on a text axis of ``length`` columns."""
        return token_columns(token_slice, int(self.eot[b]), length, self.first, self.masks_padding)


def token_columns(token_slice: str, eot: int, length: int = 77, first: int = 1, masks_padding: bool = False) -> slice:
    """The token columns the softmax runs over. CLIP (``first`` 1, padding attended): 1..76 ("1:77", every column
    but SOT), 1..75 ("1:-1"), 1..eot-1 ("1:eot", the words). T5 (``first`` 0, ``masks_padding``): there is no start
    token to skip and the padding is not text (its bias leaves it ~0 probability, so it would only add e⁰ per
    column to the ×100 softmax, more for Σ's 300 columns than for α's 120): "1:77" is every column of the prompt,
    its words and its </s> (0..eot); "1:-1" drops the last of them, the </s>, as "1:eot" does (0..eot-1)."""
    end = eot + 1 if masks_padding else length
    return {"1:77": slice(first, end), "1:-1": slice(first, end - 1), "1:eot": slice(first, eot)}[token_slice]


def check_columns(targets: Targets, settings: AttendExciteSettings, length: int = 77) -> None:
    """Raise if a target position of a sample lies outside its softmax columns (checked on the host)."""
    for b in range(targets.positions.shape[0]):
        columns = targets.columns(settings.token_slice, b, length)
        positions = targets.positions[b]
        if bool(((positions < columns.start) | (positions >= columns.stop)).any()):
            raise UserError(f"token index {positions.flatten().tolist()} outside the softmax columns "
                            f"{columns.start}..{columns.stop - 1} (--token_slice {settings.token_slice})")


def max_attention(maps: torch.Tensor, targets: Targets, settings: AttendExciteSettings,
                  kernel: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample and target, the spatial maximum of the target's map: (B, K).

    ``maps`` (B, G, R_h, R_w, T) from ``token_map_store``. Per sample: the columns of ``settings.token_slice``,
    ×100, softmax over them; target k's positions taken from group ``targets.groups[k]``; optional smoothing; max
    over the R_h x R_w pixels, then over the target's positions. Positions on the host are checked against the
    columns (``check_columns``); positions already on the device are not (a CUDA-graphed pass checks them before
    it is captured). ``kernel``: the smoothing kernel on the device (default: made here from the settings)."""
    batch = targets.positions.shape[0]
    if targets.positions.device.type == "cpu":
        check_columns(targets, settings, maps.shape[-1])
    if kernel is None and settings.smooth_attentions:
        kernel = smoothing_kernel(settings.kernel_size, settings.sigma, settings.kernel).to(maps.device)
    positions_all, groups = targets.positions.to(maps.device), targets.groups.to(maps.device)
    out = []
    for b in range(batch):  # the token columns may differ per prompt ("1:eot")
        columns = targets.columns(settings.token_slice, b, maps.shape[-1])
        positions = positions_all[b]  # (K, P)
        chosen = maps[b, groups]  # (K, R_h, R_w, T)
        probs = torch.softmax(chosen[..., columns] * SOFTMAX_SCALE, dim=-1)  # (K, R_h, R_w, T')
        index = (positions - columns.start)[:, None, None, :].expand(-1, *probs.shape[1:3], -1)  # (K, R_h, R_w, P)
        images = probs.gather(-1, index).permute(0, 3, 1, 2)  # (K, P, R_h, R_w)
        if kernel is not None:
            images = smooth(images.reshape(-1, *images.shape[-2:]), kernel).reshape(images.shape)
        out.append(images.amax(dim=(-2, -1)).amax(dim=-1))  # (K,)
    return torch.stack(out)


def attend_excite_loss(maxima: torch.Tensor) -> torch.Tensor:
    """(B, K) -> (B,): max over targets of max(0, 1 - m_k). The gradient goes to the first worst target only,
    as Python's ``max`` over the per-token losses does in the reference."""
    losses = (1.0 - maxima).clamp(min=0)  # (B, K)
    return losses.gather(1, losses.argmax(dim=1, keepdim=True))[:, 0]


# ------------------------------------------------------------------------------------------------ the maps

def token_map_store(layout: HeadLayout, settings: AttendExciteSettings, hrv_rows: np.ndarray | None = None,
                    resolution=None, latent=None) -> AttentionMaps:
    """The map store of a mode, recording with autograd, for a generation on latents of size ``latent`` (h, w)
    (default: the UNet's default sample size).

    ``hrv``: one group per row of ``hrv_rows`` (G, H), head weights = HRV / H, all CA layers, resampled to R x R.
    ``standard``: one group, weight 1/n on each of the n heads of the CA layers whose query grid is R rows high
    (a (h, w) ``resolution``: that grid), on their own grid (no resampling)."""
    size = resolution or settings.attention_res
    if settings.mode == "hrv":
        if hrv_rows is None:
            raise ValueError("A&E-HRV needs the HRV rows of the target tokens' concepts")
        rows = torch.as_tensor(np.asarray(hrv_rows), dtype=torch.float32)
        if rows.ndim != 2 or rows.shape[1] != layout.num_heads:
            raise UserError(f"the HRV rows have shape {tuple(rows.shape)}; this model needs (concepts, "
                            f"{layout.num_heads})")
        size = (size, size) if isinstance(size, int) else tuple(size)
        return AttentionMaps(layout, size, head_weights=rows / layout.num_heads, keep_grad=True)
    grids = {layer.module_name: layer.grid(latent or layer.default_latent) for layer in layout.layers}
    matches = (lambda grid: grid[0] == size) if isinstance(size, int) else (lambda grid: grid == tuple(size))
    at_res = [layer for layer in layout.layers if matches(grids[layer.module_name])]
    if not at_res:
        found = sorted(set(grids.values()))
        asked = f"{size}x{size}" if isinstance(size, int) else f"{size[0]}x{size[1]}"
        raise UserError(f"standard A&E averages the CA layers at {asked}, and this model has none (its CA "
                        f"resolutions: {', '.join(f'{h}x{w}' for h, w in found)}): pick --attention_res among them")
    weights = torch.zeros(1, layout.num_heads)
    for layer in at_res:
        weights[0, layer.offset : layer.offset + layer.heads] = 1.0
    return AttentionMaps(layout, grids[at_res[0].module_name], head_weights=weights / weights.sum(), keep_grad=True)


# ------------------------------------------------------------------------------------------------ the update

@dataclass
class _Pass:
    """One gradient pass of some samples: loss (b,), maxima (b, K), the latents ``z`` it read, and, for a CUDA-graphed
    pass, the gradient of the loss sum that the graph already computed."""

    loss: torch.Tensor
    maxima: torch.Tensor
    z: torch.Tensor
    grad: torch.Tensor | None = None

    def gradient(self, wanted: torch.Tensor | None = None) -> torch.Tensor:
        """∂loss_b/∂z_b for the samples ``wanted`` (all if None; zeros elsewhere)."""
        if self.grad is None:
            return AttendExcite._gradient(self.loss, self.z, wanted)
        if wanted is None:
            return self.grad
        return torch.where(wanted.to(self.grad.device)[:, None, None, None], self.grad, 0.0)


class AttendExcite(StepHook):
    """The A&E update as a step hook; ``records[b]`` collects sample b's per-evaluation telemetry.

    With ``graphs`` (a ``core/graphs.GraphCache``) each gradient pass (forward to the last layer read, loss and
    backward) is captured once per set of rows in a CUDA graph and replayed: the same kernels, one launch. With
    ``tf32`` the gradient passes' float32 matrix products may use TF32."""

    grad = True

    def __init__(self, store: AttentionMaps, targets: Targets, settings: AttendExciteSettings,
                 num_evaluations: int, early_exit: bool = True, graphs: GraphCache | None = None,
                 tf32: bool = False):
        self.store, self.targets, self.settings, self.early_exit = store, targets, settings, early_exit
        self.graphs, self.tf32 = graphs, tf32
        self.alphas = step_sizes(settings.scale_factor, num_evaluations, settings.scale_range)
        self.records: list[list[dict]] = [[] for _ in range(targets.positions.shape[0])]
        self.passes = 0  # gradient passes run (UNet forward + backward), for benchmarks

    def _record_pass(self, z: torch.Tensor, t, step: int, loop: DenoisingLoop) -> None:
        """Run ``loop``'s conditional pass of ``z`` with the store recording (it keeps the autograd graph)."""
        self.store.reset()
        self.store.active = True
        try:
            stop_after = self.store.last_layer if self.early_exit else None  # nothing after it is needed
            with tf32_matmuls(self.tf32):
                loop.noise(z, t, step, rows="cond", stop_after=stop_after)
        finally:
            self.store.active = False

    def _evaluate(self, z: torch.Tensor, t, step: int, loop: DenoisingLoop, rows: torch.Tensor) -> _Pass:
        """One gradient pass of samples ``rows``: with ``graphs``, ``_graph_fn``'s function (replayed from a CUDA
        graph on CUDA; off CUDA run as it is), else ``_scores``."""
        if self.graphs is None:
            return _Pass(*self._scores(z, t, step, loop, rows), z)
        self.passes += 1
        t_in = torch.as_tensor(t, device=z.device)
        loss, maxima, grad = self.graphs(tuple(rows.tolist()), lambda: self._graph_fn(loop, rows, step), z.detach(),
                                         t_in)
        return _Pass(loss, maxima, z, grad)

    def _scores(self, z: torch.Tensor, t, step: int, loop: DenoisingLoop, rows: torch.Tensor):
        """One conditional pass of samples ``rows`` under autograd: (loss (b,), maxima (b, K))."""
        self._record_pass(z, t, step, loop.subset(rows))
        self.passes += 1
        maxima = max_attention(self.store.maps, self.targets.subset(rows), self.settings)
        self.store.reset()  # the graph lives on through ``maxima`` only
        return attend_excite_loss(maxima), maxima

    def _graph_fn(self, loop: DenoisingLoop, rows: torch.Tensor, step: int):
        """The pass of samples ``rows`` as a function of (latents, timestep) -> (loss, maxima, gradient), with
        everything else (conditioning, targets, smoothing kernel) on the device beforehand: it can be captured."""
        sub = loop.subset(rows)
        device = sub.conditioning.cond.device
        targets = self.targets.subset(rows)
        check_columns(targets, self.settings, sub.conditioning.cond.shape[1])
        targets = replace(targets, positions=targets.positions.to(device), groups=targets.groups.to(device))
        s = self.settings
        kernel = smoothing_kernel(s.kernel_size, s.sigma, s.kernel).to(device) if s.smooth_attentions else None

        def fn(z: torch.Tensor, t: torch.Tensor):
            z = z.detach().requires_grad_(True)
            self._record_pass(z, t, step, sub)
            maxima = max_attention(self.store.maps, targets, s, kernel)
            self.store.reset()
            loss = attend_excite_loss(maxima)
            return loss.detach(), maxima.detach(), torch.autograd.grad(loss.sum(), [z])[0]

        return fn

    @staticmethod
    def _gradient(loss: torch.Tensor, z: torch.Tensor, wanted: torch.Tensor | None = None) -> torch.Tensor:
        """∂loss_b/∂z_b for the samples ``wanted`` (all if None; zeros elsewhere): one backward of the sum.

        Called before the loss is read on the host where the step is certain, so the backward is queued while the
        host waits; samples whose loss is 0 are then masked out of the update."""
        if wanted is None:
            return torch.autograd.grad(loss.sum(), [z])[0]
        if not bool(wanted.any()):
            return torch.zeros_like(z)
        return torch.autograd.grad(loss[wanted].sum(), [z])[0]

    def before(self, step: int, t, latents: torch.Tensor, loop: DenoisingLoop) -> torch.Tensor | None:
        s = self.settings
        alter = step < s.max_iter_to_alter
        threshold = s.thresholds.get(step)
        if s.mode == "sd" or (not alter and threshold is None):
            return None  # no gradient pass
        alpha = float(self.alphas[step])
        batch = latents.shape[0]
        every = torch.arange(batch)
        z = latents.detach().requires_grad_(True)
        scores = self._evaluate(z, t, step, loop, every)
        grad = scores.gradient() if alter else None  # queued before the host reads the loss
        loss_host = scores.loss.detach().float().cpu()
        refine = (loss_host > 1.0 - threshold) if threshold is not None else torch.zeros(batch, dtype=torch.bool)
        if grad is None:
            grad = scores.gradient((loss_host > 0) & refine)
        records = [{"step": step, "timestep": int(t), "loss": float(loss_host[b]),
                    "max_attention": scores.maxima[b].detach().float().cpu().tolist(), "step_size": alpha}
                   for b in range(batch)]
        del scores
        z = z.detach().clone()  # never write into the loop's tensor
        if threshold is not None:
            for b in range(batch):
                records[b].update(threshold=threshold, refinement_iterations=0,
                                  threshold_met=bool(loss_host[b] <= 1.0 - threshold))
        if bool(refine.any()):
            z, grad = self._refine(z, grad, loss_host, refine, t, step, loop, alpha, threshold, alter, records)
        if alter:
            moved = (loss_host > 0).to(z.device)[:, None, None, None]
            z = torch.where(moved, z - alpha * grad, z)
        for b in range(batch):
            records[b]["updated"] = bool(alter and loss_host[b] > 0)
            self.records[b].append(records[b])
        return z

    def _refine(self, z, grad, loss_host, refine, t, step, loop, alpha, threshold, alter, records):
        """Iterative refinement of the samples ``refine``; returns the latents and, for those samples, the
        gradient of their loss after refinement (the step that follows uses it). ``loss_host`` is updated."""
        s = self.settings
        target = max(0.0, 1.0 - threshold)
        iterations = torch.zeros(z.shape[0], dtype=torch.long)
        loss_k = loss_host.clone()  # the loss at each sample's current latents
        grad_k = grad  # its gradient (iteration 1 reuses the pass just made: same latents, same loss)
        active = refine.clone()
        while bool(active.any()):
            rows = active.nonzero()[:, 0]
            index = rows.to(z.device)
            moved = (loss_k[rows] > 0).to(z.device)[:, None, None, None]
            z[index] = torch.where(moved, z[index] - alpha * grad_k[index], z[index])
            iterations[rows] += 1
            active[rows] = (loss_k[rows] > target) & (iterations[rows] < s.max_refinement_steps)
            if not bool(active.any()):
                break
            rows = active.nonzero()[:, 0]
            zr = z[rows.to(z.device)].detach().requires_grad_(True)
            scores = self._evaluate(zr, t, step, loop, rows)
            grad_k = torch.zeros_like(z)
            grad_k[rows.to(z.device)] = scores.gradient()
            loss_k[rows] = scores.loss.detach().float().cpu()
        # one more pass at the refined latents: its loss and gradient make the step of this evaluation
        rows = refine.nonzero()[:, 0]
        zr = z[rows.to(z.device)].detach().requires_grad_(True)
        scores = self._evaluate(zr, t, step, loop, rows)
        grad = grad.clone()
        grad[rows.to(z.device)] = scores.gradient() if alter else 0.0
        final, maxima_r = scores.loss.detach().float().cpu(), scores.maxima
        for j, b in enumerate(rows.tolist()):
            loss_host[b] = final[j]
            records[b].update(refinement_iterations=int(iterations[b]), loss_after_refinement=float(final[j]),
                              max_attention_after_refinement=maxima_r[j].detach().float().cpu().tolist(),
                              threshold_met=bool(final[j] <= target))
        return z, grad


def telemetry_summary(records: list[dict]) -> dict:
    """Totals of one sample's records: gradient steps, refinement iterations, thresholds met, last loss."""
    return {
        "gradient_steps": sum(r.get("updated", False) for r in records),
        "refinement_iterations": sum(r.get("refinement_iterations", 0) for r in records),
        "thresholds_met": {str(r["step"]): r["threshold_met"] for r in records if "threshold" in r},
        "last_loss": records[-1]["loss"] if records else None,
    }


class frozen_weights:
    """``with frozen_weights(module):`` no parameter requires grad inside (restored after): autograd then keeps no
    activations for weight gradients."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def __enter__(self):
        self.saved = [(p, p.requires_grad) for p in self.module.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(False)
        return self.module

    def __exit__(self, *exc):
        for p, flag in self.saved:
            p.requires_grad_(flag)


MIN_DEFAULT_RES = unet_family.MIN_ATTENTION_RES  # the coarsest default map of a UNet (the toy: 8, not 2 x 2)


def default_attention_res(mode: str, latent_size: int, model=None) -> int:
    """R by default for ``mode`` on latents ``latent_size`` rows high, by the family of ``model`` (a pipeline or its
    denoiser; None: the UNet family). UNets: A&E-HRV latent/8 (SD v1.4 at 512²: 8, the reference), standard A&E
    latent/4 (16); at least ``MIN_DEFAULT_RES`` where the UNet has finer grids (``families.unet.attention_res``).
    PixArt: standard A&E its patch grid, A&E-HRV the same latent/8 rule (``families.pixart.attention_res``)."""
    if model is None:
        return unet_family.attention_res(mode, latent_size)
    model = denoiser(model)
    return family_of(model).attention_res(mode, latent_size, model.config)


# ------------------------------------------------------------------------------------------------ running

@dataclass
class AttendExciteResult:
    latents: torch.Tensor  # (B, C, h, w) final latents
    images: np.ndarray | None  # (B, H, W, 3) uint8 when decoded
    records: list  # per sample, its per-evaluation telemetry (empty for plain SD)
    gradient_passes: int  # conditional UNet passes with a backward, all samples together


def concept_groups(concepts: list[str]) -> tuple[list[str], list[int]]:
    """Distinct concepts (the store's groups, in first-use order) and each target's group."""
    distinct = list(dict.fromkeys(concepts))
    return distinct, [distinct.index(c) for c in concepts]


def generate_attend_excite(pipe, prompts: list[str], latents: torch.Tensor, targets: Targets,
                           settings: AttendExciteSettings, hrv_rows: np.ndarray | None = None, *,
                           negative_prompt=None, decode: str | None = "round", early_exit: bool = True,
                           height: int | None = None, width: int | None = None, cuda_graphs: bool | None = None,
                           tf32: bool = False) -> AttendExciteResult:
    """Generate ``prompts`` (B) from ``latents`` (B, C, h, w) with A&E-HRV, standard A&E or plain SD.

    ``targets`` has the token positions per sample and, for A&E-HRV, each target's row of ``hrv_rows`` (G, H),
    the HRV rows of the distinct concepts in the UNet's head order. ``decode="round"`` is diffusers' PIL path
    (the reference's A&E); ``early_exit`` stops gradient passes after the last CA layer the loss reads.

    Speed options (docs/attend_excite.md): ``cuda_graphs`` captures the gradient passes and the guided passes in
    CUDA graphs and replays them (None: on when the UNet is on a CUDA device and the scheduler allows it,
    ``core/graphs.graphs_supported``); ``tf32`` lets the gradient passes' float32 matrix products use TF32 (off:
    it changes the numbers)."""
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.loop import generate, num_evaluations

    common = dict(num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                  negative_prompt=negative_prompt, decode=decode, height=height, width=width)
    if settings.mode == "sd":
        out = generate(pipe, list(prompts), latents, **common)
        return AttendExciteResult(out.latents, out.images, [[] for _ in prompts], 0)
    layout = head_layout(pipe)
    axis = text_axis(pipe)  # the columns of this pipeline's text encoder
    targets = replace(targets, first=axis.first, masks_padding=axis.masks_padding)
    if settings.mode == "standard":  # one map for every target
        targets = replace(targets, groups=torch.zeros_like(targets.groups))
    store = token_map_store(layout, settings, hrv_rows, latent=tuple(latents.shape[-2:]))
    store.active = False  # recording only inside the hook's gradient passes
    if cuda_graphs is None:
        cuda_graphs = graphs_supported(pipe)
    graphs = GraphCache() if cuda_graphs else None
    hook = AttendExcite(store, targets, settings, num_evaluations(pipe, settings.num_inference_steps), early_exit,
                        graphs, tf32)
    try:
        with frozen_weights(denoiser(pipe)):
            out = generate(pipe, list(prompts), latents, controllers=[store], step_hooks=[hook], graphs=graphs,
                           **common)
    finally:
        if graphs is not None:
            graphs.clear()
    return AttendExciteResult(out.latents, out.images, hook.records, hook.passes)
