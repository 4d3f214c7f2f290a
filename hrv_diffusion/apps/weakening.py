"""Ordered weakening: scale the post-softmax cross-attention probabilities of chosen heads, per image.

The paper weakens the k most relevant heads of a concept first (MoRHF, order ``top``) or the k least relevant
first (LeRHF, ``bottom``), multiplying their probabilities by -2.0 (no renormalization) on the prompt's word tokens,
in the conditional half of the CFG batch, at all 51 evaluations. Images of one prompt differ only in which heads
are scaled, so many (order, k, seed) images run in one batched pipeline call with per-sample head masks.

Each prompt's images go to ``{output_path}/exp_{X}/{prompt}/{order}/{order}_{k}/{seed}.png``; the prompt folder is
claimed with its ``WeakeningSettings`` (also its ``manifest.json``) through ``runs.OutputTree``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrv_diffusion.apps.runs import OutputTree, RunReport, run_batches
from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.families import family_of
from hrv_diffusion.core.graphs import GraphCache, graphs_supported
from hrv_diffusion.core.heads import AttnLayer, HeadLayout, head_layout
from hrv_diffusion.core.loop import generate, latent_shape, num_evaluations, seed_latents
from hrv_diffusion.core.tokens import word_positions_in_window, word_token_positions
from hrv_diffusion.hrv.files import ORDERS  # top = MoRHF (most relevant first), bottom = LeRHF


def weakened_tokens(tokenizer, prompt: str, concept_word: str | None = None, length: int = 77) -> torch.Tensor:
    """(length,) bool: the tokens to weaken. Faithful default (``concept_word=None``): the positions of every word
    of the prompt, as the reference does, i.e. all tokens between SOT and the first EOT. With ``concept_word``: only
    that word's tokens (an error if it is not in the prompt, or only past the text encoder's window of ``length``
    tokens, the family's text length)."""
    mask = torch.zeros(length, dtype=torch.bool)
    words = [concept_word] if concept_word else [w for w in prompt.split() if w]
    for word in words:
        if concept_word:  # past the text encoder's window: one error, not a silent no-op
            positions = word_positions_in_window(tokenizer, prompt, word, "--concept_word", length)
        else:
            positions = [p for p in word_token_positions(tokenizer, prompt, word) if p < length]
        if concept_word and not positions:
            raise ValueError(f"the word {concept_word!r} is not in the prompt {prompt!r}: "
                             "use --weaken prompt_tokens or put the word in the prompt")
        mask[positions] = True
    return mask


class HeadWeakening(Controller):
    """Per sample b, multiply the probabilities of heads ``head_masks[b]`` at tokens
    ``token_masks[b]`` by ``factor`` during evaluations [int(start*T), int(end*T))."""

    def __init__(self, layout: HeadLayout, head_masks: torch.Tensor, token_masks: torch.Tensor, factor: float = -2.0,
                 window: tuple[float, float] = (0.0, 1.01), num_evaluations: int = 51, device=None):
        # head_masks (B, H) bool; token_masks (B, T) bool
        self.first, self.stop = int(window[0] * num_evaluations), int(window[1] * num_evaluations)
        self.scales = {}  # module name -> (B, h, T) factor or 1, only for layers with a weakened head
        for layer in layout.layers:
            heads = head_masks[:, layer.offset : layer.offset + layer.heads]  # (B, h)
            if heads.any():
                hit = heads[:, :, None] & token_masks[:, None, :]  # (B, h, T)
                self.scales[layer.module_name] = torch.where(hit, factor, 1.0).to(device)

    def token_scale(self, layer: AttnLayer, call: UNetCall):
        if not self.first <= call.step < self.stop:
            return None
        return self.scales.get(layer.module_name)


@dataclass(frozen=True)
class Job:
    """One image: weaken the first ``k`` heads of ``order`` for the latent of ``seed``."""

    order: str
    k: int
    seed: int


def plan_jobs(k_list, seeds, orders=ORDERS) -> list[Job]:
    """k = 0 (no weakening) once per seed; it is saved under every order."""
    jobs = [Job(orders[0], 0, s) for s in seeds] if 0 in k_list else []
    return jobs + [Job(o, k, s) for o in orders for k in k_list if k > 0 for s in seeds]


def image_paths(prompt_dir: Path, job: Job, orders=ORDERS) -> list[Path]:
    """``{prompt_dir}/{order}/{order}_{k}/{seed}.png``; k = 0 goes to every order."""
    return [prompt_dir / o / f"{o}_{job.k}" / f"{job.seed}.png" for o in (orders if job.k == 0 else (job.order,))]


def prompt_dir(output_path, experiment_num, prompt: str) -> Path:
    """The folder of one prompt's images; the prompt is sanitized and never escapes the output folder."""
    return OutputTree(Path(output_path) / f"exp_{experiment_num}").folder(OutputTree.name(prompt))


@dataclass
class Render:
    """One image to generate: the latent of ``seed`` with ``heads`` weakened, saved for every job that shares them."""

    seed: int
    heads: tuple[int, ...]
    jobs: list[Job]


def plan_renders(jobs: list[Job], ranked_heads) -> list[Render]:
    """Group jobs that weaken the same head set for the same seed (k = 0 under both orders, k = H top and bottom):
    their images are identical, so each is generated once and written to every path."""
    renders: dict[tuple, Render] = {}
    for job in jobs:
        heads = tuple(sorted(ranked_heads(job.order, job.k))) if job.k else ()
        renders.setdefault((job.seed, heads), Render(job.seed, heads, [])).jobs.append(job)
    return list(renders.values())


def generate_weakened(pipe, prompt: str, ranked_heads, jobs: list[Job], out_dir: Path, *, factor: float = -2.0,
                      window=(0.0, 1.01), concept_word: str | None = None, num_inference_steps: int = 50,
                      guidance_scale: float = 7.5, batch_size: int = 16, decode: str = "truncate",
                      height: int | None = None, width: int | None = None, skip_existing: bool = True,
                      progress=None, report: RunReport | None = None, cuda_graphs: bool = False) -> int:
    """Generate the images of ``jobs`` for one prompt; return how many jobs were made (not skipped).

    ``ranked_heads(order, k)`` gives the k global head indices to weaken (from an HRV or the published head_roles).
    Jobs with the same seed and head set are generated once (``plan_renders``) and written to each of their paths
    that is missing (every path when not ``skip_existing``); batches are ``runs.pack``ed, files written while the
    next batch generates. ``decode``: "truncate" (the reference) or "round". ``progress`` advances by jobs.
    ``report``, when given, gets the counts added: images generated (one per render), files written, files present.
    ``cuda_graphs``: replay each batch's guided UNet call from a CUDA graph (the same kernels) where
    ``graphs_supported`` and the window covers every evaluation (the weakening is then the same at every step).
    """
    def missing(path: Path) -> bool:
        return not skip_existing or not path.is_file()

    todo = [j for j in jobs if any(missing(p) for p in image_paths(out_dir, j))]
    renders = plan_renders(todo, ranked_heads)
    layout = head_layout(pipe)
    tokens = weakened_tokens(pipe.tokenizer, prompt, concept_word, family_of(pipe).text_length(pipe))  # (T,)
    evaluations = num_evaluations(pipe, num_inference_steps)
    shape = latent_shape(pipe, height, width)
    every_step = int(window[0] * evaluations) == 0 and int(window[1] * evaluations) >= evaluations
    graphed = cuda_graphs and every_step and graphs_supported(pipe)

    def make_batch(batch: list[Render]) -> list[tuple[Path, np.ndarray]]:
        head_masks = torch.zeros(len(batch), layout.num_heads, dtype=torch.bool)  # (B, H)
        for b, render in enumerate(batch):
            head_masks[b, list(render.heads)] = True
        weakening = HeadWeakening(layout, head_masks, tokens.expand(len(batch), -1), factor, window, evaluations,
                                  device=pipe._execution_device)
        pixels = generate(pipe, [prompt] * len(batch), seed_latents([r.seed for r in batch], shape),
                          num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                          controllers=[weakening], decode=decode, height=height, width=width,
                          graphs=GraphCache() if graphed else None).images  # (B, H, W, 3); a graph per batch
        if progress is not None:
            progress.update(sum(len(render.jobs) for render in batch))
        return [(path, pixels[b]) for b, render in enumerate(batch) for job in render.jobs
                for path in image_paths(out_dir, job) if missing(path)]

    report = report if report is not None else RunReport()
    written = report.written
    run_batches(renders, make_batch, batch_size=batch_size, report=report)
    report.present += len({p for j in jobs for p in image_paths(out_dir, j)}) - (report.written - written)
    return len(todo)


class HrvHeads:
    """Head order from an HRV row: MoRHF = descending, LeRHF = ascending, ties by head index (stable)."""

    def __init__(self, hrv_row):
        from hrv_diffusion.hrv.files import head_order

        self.orders = {o: head_order(np.asarray(hrv_row), o) for o in ORDERS}

    def __call__(self, order: str, k: int) -> list[int]:
        return self.orders[order][:k].tolist()


class HeadRolesHeads:
    """Head order read from the published head_roles CSVs (one file per order and k: the paper's exact tie order)."""

    def __init__(self, path_for, concept: str, layout: HeadLayout):
        self.path_for, self.concept, self.layout = path_for, concept, layout

    def __call__(self, order: str, k: int) -> list[int]:
        from hrv_diffusion.hrv.files import read_head_roles

        path = Path(self.path_for(order, k))
        if not path.exists():
            raise FileNotFoundError(f"no head_roles file {path}: extract it with extract_head_relevance_vectors.py "
                                    "or pass --hrv to rank heads from an HRV")
        roles = read_head_roles(path)
        if self.concept not in roles:
            raise ValueError(f"concept {self.concept!r} is not in {path.name}; it has: {', '.join(roles)}")
        return [self.layout.index_of(label) for label in roles[self.concept][:k]]


# ----------------------------------------------------------------------------------------------- runs

@dataclass(frozen=True)
class WeakeningSettings:
    """What the images of one prompt folder are made with; also the folder's ``manifest.json``. Every field but
    those of ``RECORDED`` must match for a run to continue a folder."""

    model_version: str
    model_card: str
    concept: str
    head_source: str  # "hrv" or "head_roles"
    hrv_file: str  # the HRV file, or the folder of the head_roles files
    hrv_fingerprint: str  # ``file_fingerprint`` of the HRV or head_roles files
    dtype: str
    reweighting_factor: float
    reweighting_steps: tuple[float, float]
    n_inference_steps: int
    guidance_scale: float
    weaken: str  # "prompt_tokens" or "concept_word"
    experiment_num: str
    version: str
    prompt: str
    concept_word: str | None
    height: int | None = None  # None: the model's own size
    width: int | None = None


# Recorded in the manifest but no conflict: a local copy and the hub id of a model give the same images, an HRV
# file moved elsewhere has the same fingerprint, and the experiment number and package version change no pixel.
RECORDED = ("model_card", "hrv_file", "experiment_num", "version")


def file_fingerprint(paths) -> str:
    """The first 16 hex digits of the SHA-256 of the files' bytes (in the given order)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def run_weakening(pipe, folders: dict[Path, WeakeningSettings], ranked_heads, jobs: list[Job], *, batch_size: int,
                  overwrite: bool = False, progress=None, report: RunReport | None = None,
                  cuda_graphs: bool = False) -> RunReport:
    """Generate ``jobs`` for every claimed prompt folder of ``folders`` with its settings; ``progress`` (a tqdm bar
    over jobs) also counts the jobs whose images were there already. ``cuda_graphs``: see ``generate_weakened``."""
    report = report if report is not None else RunReport()
    for folder, s in folders.items():
        made = generate_weakened(pipe, s.prompt, ranked_heads, jobs, folder, factor=s.reweighting_factor,
                                 window=tuple(s.reweighting_steps), concept_word=s.concept_word,
                                 num_inference_steps=s.n_inference_steps, guidance_scale=s.guidance_scale,
                                 batch_size=batch_size, height=s.height, width=s.width, skip_existing=not overwrite,
                                 progress=progress, report=report, cuda_graphs=cuda_graphs)
        if progress is not None:
            progress.update(len(jobs) - made)  # jobs whose images already existed
    return report


def prune_empty_folders(folder: Path) -> None:
    """Remove the empty folders under ``folder`` (``{order}_{k}`` folders emptied by ``--overwrite`` that this run
    does not fill again), so the scores find only the k values that hold images."""
    for path in sorted((p for p in Path(folder).rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
