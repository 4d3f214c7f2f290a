"""Ordered weakening on the toy model, scored by the analytic evaluator instead of CLIP.

For a concept (Color, Shape, Size, Position, Background) and each (order, k): weaken the k most (``top``, MoRHF)
or least (``bottom``, LeRHF) relevant CA heads by -2.0 on every prompt token (the paper's setting), generate one
image per caption of known scenes, and measure how often the evaluator still reads the concept's attribute right.
If the HRV found the concept's heads, accuracy falls faster under MoRHF than under LeRHF.
"""
from __future__ import annotations

import numpy as np
import torch

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import num_evaluations
from hrv_diffusion.apps.weakening import HeadWeakening, HrvHeads, weakened_tokens
from hrv_diffusion.toy import data, evaluator
from hrv_diffusion.toy.evaluate import generate

ATTRIBUTE = {"Color": "color", "Shape": "shape", "Size": "size", "Position": "position", "Background": "background"}


def weakened_images(pipe, captions: list[str], heads: list[int], seed: int = 0, steps: int = 50,
                    guidance: float = 7.5, factor: float = -2.0, batch_size: int = 64) -> np.ndarray:
    """(N, H, W, 3) uint8: one image per caption with ``heads`` weakened on all of its prompt tokens."""
    layout = head_layout(pipe)
    evaluations = num_evaluations(pipe, steps)

    def weakening(batch: list[str]):
        head_masks = torch.zeros(len(batch), layout.num_heads, dtype=torch.bool)  # (B, H)
        head_masks[:, heads] = True
        tokens = torch.stack([weakened_tokens(pipe.tokenizer, c) for c in batch])  # (B, 77)
        return [HeadWeakening(layout, head_masks, tokens, factor, num_evaluations=evaluations)]

    return generate(pipe, captions, seed=seed, steps=steps, guidance=guidance, batch_size=batch_size,
                    controllers_for=weakening)


def weakening_curves(pipe, hrv: np.ndarray, concept_names: list[str], concepts: list[str], k_list: list[int],
                     n: int = 32, seed: int = 2, steps: int = 50, batch_size: int = 64,
                     progress: bool = False) -> dict:
    """{concept: {"top_k"/"bottom_k": accuracy of the concept's attribute}} plus every attribute's accuracy.

    The scenes are one-object captions naming every attribute (``data.sample_scenes(..., mention="all")``);
    k = 0 is generated once and shared by both orders. ``progress``: a tqdm bar over the image sets generated."""
    from tqdm.auto import tqdm

    scenes = data.sample_scenes(n, seed=seed, split="train", two_object_fraction=0.0, mention="all")
    captions = [s["caption"] for s in scenes]

    runs = 1 + len(concepts) * 2 * sum(1 for k in k_list if k != 0)
    bar = tqdm(total=runs, desc="weakening", unit=f"x{n} images", disable=not progress)

    def accuracy(heads):
        images = weakened_images(pipe, captions, heads, seed=seed, steps=steps, batch_size=batch_size)
        counts = evaluator.score(evaluator.read_images(images), scenes)
        bar.update(1)
        return {a: counts[a]["accuracy"] for a in ATTRIBUTE.values()}

    baseline = accuracy([])
    results = {}
    for concept in concepts:
        if concept not in concept_names:
            raise ValueError(f"unknown concept {concept!r}; the HRV has: {', '.join(concept_names)}")
        ranked = HrvHeads(hrv[concept_names.index(concept)])
        curve, every = {}, {}
        for order in ("top", "bottom"):
            for k in k_list:
                acc = baseline if k == 0 else accuracy(ranked(order, k))
                curve[f"{order}_{k}"] = acc[ATTRIBUTE[concept]]
                every[f"{order}_{k}"] = acc
        results[concept] = {"attribute": ATTRIBUTE[concept], "curve": curve, "all_attributes": every}
    bar.close()
    return results
