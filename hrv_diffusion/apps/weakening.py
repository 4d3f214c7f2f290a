"""Ordered weakening: scale the post-softmax cross-attention probabilities of chosen heads, per image.

The paper weakens the k most relevant heads of a concept first (MoRHF, order ``top``) or the k least relevant
first (LeRHF, ``bottom``), multiplying their probabilities by -2.0 (no renormalization) on the prompt's word tokens,
in the conditional half of the CFG batch, at all 51 evaluations. Images of one prompt differ only in which heads
are scaled, so many (order, k, seed) images run in one batched pipeline call with per-sample head masks.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.heads import AttnLayer, HeadLayout, head_layout
from hrv_diffusion.core.loop import generate, latent_shape, num_evaluations, seed_latents
from hrv_diffusion.core.tokens import word_token_positions
from hrv_diffusion.apps.output_paths import child_dir, safe_folder_name

ORDERS = ("top", "bottom")


def weakened_tokens(tokenizer, prompt: str, concept_word: str | None = None, length: int = 77) -> torch.Tensor:
    """(length,) bool: the tokens to weaken. Faithful default (``concept_word=None``): the positions of every word
    of the prompt, as the reference does, i.e. all tokens between SOT and the first EOT. With ``concept_word``: only
    that word's tokens (an error if it is not in the prompt)."""
    mask = torch.zeros(length, dtype=torch.bool)
    words = [concept_word] if concept_word else [w for w in prompt.split(" ") if w]
    for word in words:
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
    return child_dir(Path(output_path) / f"exp_{experiment_num}", safe_folder_name(prompt))


def _save_png(pixels: np.ndarray, path: Path) -> None:
    """Write (H, W, 3) uint8 ``pixels`` to ``path`` atomically (temp file + rename)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".png.tmp")
    os.close(fd)
    Image.fromarray(pixels).save(tmp, format="PNG")
    os.replace(tmp, path)


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


def even_batches(n: int, batch_size: int) -> list[slice]:
    """Split range(n) into the fewest batches of at most ``batch_size``, with sizes differing by at most one
    (87 at 32 -> 29 29 29, not 32 32 23), so a compiled UNet sees few shapes."""
    if n == 0:
        return []
    count = -(-n // batch_size)
    bounds = [round(i * n / count) for i in range(count + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def generate_weakened(pipe, prompt: str, ranked_heads, jobs: list[Job], out_dir: Path, *, factor: float = -2.0,
                      window=(0.0, 1.01), concept_word: str | None = None, num_inference_steps: int = 50,
                      guidance_scale: float = 7.5, batch_size: int = 16, decode: str = "truncate",
                      skip_existing: bool = True, progress=None, stats: dict | None = None) -> int:
    """Generate the images of ``jobs`` for one prompt; return how many jobs were made (not skipped).

    ``stats``, when given, gets the exact counts added: ``images`` generated (one per distinct seed and head set),
    ``files`` written (k = 0 and shared head sets are written under several paths) and ``present`` (files that
    already existed, skipped).

    ``ranked_heads(order, k)`` gives the k global head indices to weaken (from an HRV or the published head_roles).
    Jobs with the same seed and head set are generated once (``plan_renders``); batches are even (``even_batches``);
    PNG encoding runs in threads while the next batch generates. ``decode``: "truncate" (the reference) or "round".
    """
    from concurrent.futures import ThreadPoolExecutor

    layout = head_layout(pipe.unet)
    todo = [j for j in jobs if not (skip_existing and all(p.exists() for p in image_paths(out_dir, j)))]
    renders = plan_renders(todo, ranked_heads)
    tokens = weakened_tokens(pipe.tokenizer, prompt, concept_word)
    evaluations = num_evaluations(pipe, num_inference_steps)
    shape = latent_shape(pipe)
    device = pipe._execution_device
    pending = []
    with ThreadPoolExecutor(max_workers=8) as writer:
        for part in even_batches(len(renders), batch_size):
            batch = renders[part]
            head_masks = torch.zeros(len(batch), layout.num_heads, dtype=torch.bool)  # (B, H)
            for b, render in enumerate(batch):
                head_masks[b, list(render.heads)] = True
            weakening = HeadWeakening(layout, head_masks, tokens.expand(len(batch), -1), factor, window,
                                      evaluations, device=device)
            pixels = generate(pipe, [prompt] * len(batch), seed_latents([r.seed for r in batch], shape),
                              num_inference_steps=num_inference_steps, guidance_scale=guidance_scale,
                              controllers=[weakening], decode=decode).images  # (B, H, W, 3) uint8
            pending += [writer.submit(_save_png, pixels[b], path)
                        for b, render in enumerate(batch) for job in render.jobs for path in image_paths(out_dir, job)]
            if progress is not None:
                progress.update(sum(len(render.jobs) for render in batch))
    for future in pending:
        future.result()  # re-raise a failed write
    if stats is not None:
        paths = {p for j in jobs for p in image_paths(out_dir, j)}
        stats["images"] = stats.get("images", 0) + len(renders)
        stats["files"] = stats.get("files", 0) + len(pending)
        stats["present"] = stats.get("present", 0) + len(paths) - len(pending)
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


# ----------------------------------------------------------------------------------------------- run manifests

MANIFEST_NAME = "manifest.json"
# Settings that change the images: a prompt folder whose manifest differs in one of them holds other science.
MANIFEST_KEYS = ("model_version", "concept", "head_source", "hrv_fingerprint", "dtype", "reweighting_factor",
                 "reweighting_steps", "n_inference_steps", "guidance_scale", "weaken", "concept_word", "prompt")


def file_fingerprint(paths) -> str:
    """The first 16 hex digits of the SHA-256 of the files' bytes (in the given order)."""
    import hashlib

    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).read_bytes())
    return digest.hexdigest()[:16]


def read_manifest(folder: Path) -> dict | None:
    """The manifest of a prompt folder, or None when it has none."""
    import json

    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"unreadable": str(path)}


def write_manifest(folder: Path, manifest: dict) -> Path:
    """Write ``manifest`` as the folder's ``manifest.json``, atomically."""
    import json

    path = Path(folder) / MANIFEST_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return path


def has_images(folder: Path) -> bool:
    return any((Path(folder) / order).rglob("*.png") for order in ORDERS if (Path(folder) / order).is_dir())


def manifest_conflict(folder: Path, manifest: dict) -> str | None:
    """Why the existing prompt folder cannot be continued with ``manifest`` (None when it can, or is new)."""
    folder = Path(folder)
    stored = read_manifest(folder)
    if stored is None:
        return f"{folder} holds images but no {MANIFEST_NAME} (an older run): their settings are unknown" \
            if has_images(folder) else None
    if "unreadable" in stored:
        return f"{stored['unreadable']} is not readable JSON"
    differ = [f"{key} {stored.get(key)!r} there, {manifest.get(key)!r} now" for key in MANIFEST_KEYS
              if stored.get(key) != manifest.get(key)]
    if differ:
        return f"{folder} was made with other settings ({'; '.join(differ)})"
    return None


def clear_prompt_folder(folder: Path) -> None:
    """Remove the images and manifest of one prompt folder (``--overwrite``); nothing else is touched."""
    import shutil

    folder = Path(folder)
    for order in ORDERS:
        if (folder / order).is_dir():
            shutil.rmtree(folder / order)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
