"""Does a toy model follow its prompts? Generate from captions of known scenes and read the images back.

``evaluate_pipeline(pipe)`` draws scenes (by default one object each, from the held-out color-shape pairs,
every attribute named in the caption), generates one image per caption with PNDM, runs the evaluator and
returns per-attribute accuracy. Each image's starting latent comes from its own seed (``seed + i``), so the
images do not depend on the batch size or the device order of batches.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from hrv_diffusion.core.loop import generate as denoise
from hrv_diffusion.core.loop import latent_shape, seed_latents
from hrv_diffusion.toy import data, evaluator


def initial_latents(pipe, n: int, seed: int) -> torch.Tensor:
    """(n, C, h, w) float32 on CPU: image i from torch.Generator().manual_seed(seed + i)."""
    return seed_latents([seed + i for i in range(n)], latent_shape(pipe))


def generate(pipe, captions: list[str], seed: int = 0, steps: int = 50, guidance: float = 7.5,
             batch_size: int = 64, controllers_for=None, progress: bool = False) -> np.ndarray:
    """(N, H, W, 3) uint8 images, one per caption (rounded, like diffusers' PIL output).

    ``controllers_for(batch_captions)`` may give the attention controllers of each batch; ``progress``: a tqdm bar
    over the batches."""
    from tqdm.auto import tqdm

    latents = initial_latents(pipe, len(captions), seed)
    out = []
    for start in tqdm(range(0, len(captions), batch_size), desc="images", unit="batch", disable=not progress):
        batch = captions[start:start + batch_size]
        controllers = controllers_for(batch) if controllers_for else ()
        out.append(denoise(pipe, batch, latents[start:start + len(batch)], num_inference_steps=steps,
                           guidance_scale=guidance, controllers=controllers, decode="round").images)
    return np.concatenate(out)


def evaluate_pipeline(pipe, n: int = 256, seed: int = 0, split: str = "heldout", two_object_fraction: float = 0.0,
                      steps: int = 50, guidance: float = 7.5, batch_size: int = 64, return_images: bool = False,
                      progress: bool = False):
    """Generate ``n`` images for captions of ``split`` that name every attribute; score them.

    Returns {"split", "n", "steps", "guidance", "seed", "two_object_fraction", "seconds", "accuracy":
    {attribute: share}, "counts": evaluator.score(...)}; with ``return_images`` also (images, scenes)."""
    scenes = data.sample_scenes(n, seed=seed, split=split, two_object_fraction=two_object_fraction, mention="all")
    start = time.perf_counter()
    images = generate(pipe, [s["caption"] for s in scenes], seed=seed, steps=steps, guidance=guidance,
                      batch_size=batch_size, progress=progress)
    counts = evaluator.score(evaluator.read_images(images), scenes)
    result = {
        "split": split, "n": n, "steps": steps, "guidance": guidance, "seed": seed,
        "two_object_fraction": two_object_fraction, "seconds": round(time.perf_counter() - start, 2),
        "accuracy": {k: (v["accuracy"] if isinstance(v, dict) else v) for k, v in counts.items()},
        "counts": counts,
    }
    return (result, images, scenes) if return_images else result


def image_grid(images: np.ndarray, columns: int = 16) -> np.ndarray:
    """(N, H, W, 3) -> one (rows*H, columns*W, 3) uint8 image, padded with black."""
    n, h, w, c = images.shape
    rows = -(-n // columns)
    padded = np.zeros((rows * columns, h, w, c), np.uint8)
    padded[:n] = images
    return padded.reshape(rows, columns, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, columns * w, c)
