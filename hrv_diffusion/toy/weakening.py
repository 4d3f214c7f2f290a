"""Ordered weakening on the toy model, scored by the analytic evaluator instead of CLIP.

For a concept (Color, Shape, Size, Position, Background) and each (order, k): weaken the k most (``top``, MoRHF)
or least (``bottom``, LeRHF) relevant CA heads by -2.0 on every prompt token (the paper's setting), generate one
image per caption of known scenes, and measure how often the evaluator still reads the concept's attribute right.
If the HRV found the concept's heads, accuracy falls faster under MoRHF than under LeRHF, and faster than under
random head sets of the same size (``random_sets``: drawn once per k, seeded, and shared by every concept).
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


def random_head_sets(num_heads: int, k: int, count: int, seed: int = 0) -> list[list[int]]:
    """``count`` sets of ``k`` distinct heads, each drawn uniformly (numpy generator of ``(seed, k)``)."""
    rng = np.random.default_rng([seed, k])
    return [sorted(rng.choice(num_heads, size=k, replace=False).tolist()) for _ in range(count)]


def weakening_curves(pipe, hrv: np.ndarray, concept_names: list[str], concepts: list[str], k_list: list[int],
                     n: int = 32, seed: int = 2, steps: int = 50, batch_size: int = 64, random_sets: int = 0,
                     progress: bool = False) -> dict:
    """{concept: {"top_k"/"bottom_k"/"random_k": accuracy of the concept's attribute}} plus every attribute's
    accuracy (``random_k``: the mean over ``random_sets`` random head sets of k heads; each set's accuracy in
    ``random_sets``).

    The scenes are one-object captions naming every attribute (``data.sample_scenes(..., mention="all")``);
    k = 0 is generated once and shared by both orders. ``progress``: a tqdm bar over the image sets generated."""
    from tqdm.auto import tqdm

    unknown = [c for c in concepts if c not in concept_names]
    if unknown:
        raise ValueError(f"unknown concept {unknown[0]!r}; the HRV has: {', '.join(concept_names)}")
    scenes = data.sample_scenes(n, seed=seed, split="train", two_object_fraction=0.0, mention="all")
    captions = [s["caption"] for s in scenes]

    nonzero = [k for k in k_list if k != 0]
    runs = 1 + len(concepts) * 2 * len(nonzero) + random_sets * len(nonzero)
    bar = tqdm(total=runs, desc="weakening", unit=f"x{n} images", disable=not progress)

    def accuracy(heads):
        images = weakened_images(pipe, captions, heads, seed=seed, steps=steps, batch_size=batch_size)
        counts = evaluator.score(evaluator.read_images(images), scenes)
        bar.update(1)
        return {a: counts[a]["accuracy"] for a in ATTRIBUTE.values()}

    baseline = accuracy([])
    num_heads = hrv.shape[1]
    random_runs = {k: [accuracy(heads) for heads in random_head_sets(num_heads, k, random_sets, seed)]
                   for k in nonzero if random_sets}  # k -> [every attribute's accuracy] per set
    results = {}
    for concept in concepts:
        ranked = HrvHeads(hrv[concept_names.index(concept)])
        curve, every = {}, {}
        for order in ("top", "bottom"):
            for k in k_list:
                acc = baseline if k == 0 else accuracy(ranked(order, k))
                curve[f"{order}_{k}"] = acc[ATTRIBUTE[concept]]
                every[f"{order}_{k}"] = acc
        attribute = ATTRIBUTE[concept]
        for k, runs_k in random_runs.items():
            curve[f"random_{k}"] = float(np.mean([acc[attribute] for acc in runs_k]))
        results[concept] = {"attribute": attribute, "curve": curve, "all_attributes": every}
        if random_runs:
            results[concept]["random_sets"] = {k: [acc[attribute] for acc in runs_k]
                                               for k, runs_k in random_runs.items()}
    bar.close()
    return results
