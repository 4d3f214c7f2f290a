"""Does an image show the intended sense of an ambiguous word? CLIP zero-shot between two phrases.

For SD-HRV outputs (``cli/adjust.py``'s layout: a prompt folder with ``standard_sd`` / ``standard_sdxl`` and
``sd-hrv`` / ``sdxl-hrv`` image folders and a manifest naming the prompt) each image is compared with a phrase for
the desired sense and one for the undesired sense ("a lavender-colored vase" vs "a vase with lavender flowers").
CLIP's cosine similarities c_d, c_u give P(desired) = softmax(logit_scale · [c_d, c_u])[0] (logit scale 100, CLIP's
trained temperature) and the image shows the intended sense when c_d > c_u. A tie (c_d == c_u, e.g. two phrases
that CLIP tokenizes alike, or a blank image) is not intended under that rule; ties are counted and reported apart
(``n_ties``, ``tie_rate``) so that a rate lowered by ties is not read as misinterpretation. Per prompt and method
(standard, adjusted): the rate of intended images, the ties and the mean P(desired), with the count of images.

Any ``Scorer`` (``apps/clip.py``: ``score(images, texts)`` = cosine similarities) works; the command line
loads ``ClipScorer`` as the weakening scorer does (open_clip ViT-H-14 laion2b_s32b_b79k, fp32).
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrv_diffusion.errors import UserError
from hrv_diffusion.io import atomic_output

METHODS = {"standard": ("standard_sd", "standard_sdxl"), "adjusted": ("sd-hrv", "sdxl-hrv")}
LOGIT_SCALE = 100.0
SUMMARY_COLUMNS = ["prompt", "folder", "method", "desired_text", "undesired_text", "n_images", "intended_rate",
                   "n_ties", "tie_rate", "mean_p_desired"]
PER_IMAGE_COLUMNS = ["prompt", "folder", "method", "seed", "cos_desired", "cos_undesired", "p_desired", "intended",
                     "tie", "path"]


@dataclass(frozen=True)
class Senses:
    """The phrases of a prompt's desired and undesired senses."""

    desired: str
    undesired: str


def distinct_senses(senses: Senses, where: str) -> Senses:
    """``senses``, refused when its two phrases are one text (CLIP lowercases and splits on whitespace, so they would
    embed alike, every image would tie and the rate would read 0%); ``where`` names them in the message."""
    if " ".join(senses.desired.lower().split()) == " ".join(senses.undesired.lower().split()):
        raise UserError(f"{where}: the desired and the undesired sense are the same text ({senses.desired!r}); "
                        "give two different phrases")
    return senses


def prompt_images(folder) -> tuple[str, dict[str, list[tuple[int, Path]]]]:
    """(prompt, {method: [(seed, path), ...]}) of an SD-HRV prompt folder; seeds in increasing order."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise UserError(f"{folder} is not an SD-HRV prompt folder (no manifest.json): pass the folders that "
                        "reduce_misinterpretation.py writes, e.g. OUTPUT_PATH/prompt_01_...")
    prompt = json.loads(manifest.read_text())["prompt"]
    images = {}
    for method, names in METHODS.items():
        found = [folder / n for n in names if (folder / n).is_dir()]
        if not found:
            raise UserError(f"{folder} has no {' or '.join(names)} folder")
        pngs = [p for p in found[0].glob("*.png") if p.stem.isdigit()]
        images[method] = sorted(((int(p.stem), p) for p in pngs), key=lambda sp: sp[0])
    return prompt, images


def zero_shot(scorer, images, senses: Senses, logit_scale: float = LOGIT_SCALE) -> tuple[np.ndarray, ...]:
    """(cos_desired, cos_undesired, p_desired), each (n,), of PIL ``images``."""
    n = len(images)
    cos_d = np.asarray(scorer.score(images, [senses.desired] * n), dtype=np.float64)
    cos_u = np.asarray(scorer.score(images, [senses.undesired] * n), dtype=np.float64)
    p_desired = 1.0 / (1.0 + np.exp(-logit_scale * (cos_d - cos_u)))  # the two-way softmax
    return cos_d, cos_u, p_desired


def measure(scorer, folders, senses_for, logit_scale: float = LOGIT_SCALE) -> tuple[list[dict], list[dict]]:
    """(summary rows, per-image rows) for prompt ``folders``; ``senses_for(prompt) -> Senses``."""
    from hrv_diffusion.io import read_rgb

    summary, per_image = [], []
    for folder in folders:
        prompt, images = prompt_images(folder)
        senses = senses_for(prompt)
        for method, items in images.items():
            pictures = [read_rgb(path, "reduce_misinterpretation.py with the same flags") for _, path in items]
            cos_d, cos_u, p = zero_shot(scorer, pictures, senses, logit_scale) if pictures else ([], [], [])
            for (seed, path), d, u, pd in zip(items, cos_d, cos_u, p):
                per_image.append({"prompt": prompt, "folder": Path(folder).name, "method": method, "seed": seed,
                                  "cos_desired": float(d), "cos_undesired": float(u), "p_desired": float(pd),
                                  "intended": bool(d > u), "tie": bool(d == u), "path": str(path)})
            n, ties = len(items), int(np.sum(np.asarray(cos_d) == np.asarray(cos_u)))
            summary.append({"prompt": prompt, "folder": Path(folder).name, "method": method,
                            "desired_text": senses.desired, "undesired_text": senses.undesired, "n_images": n,
                            "intended_rate": float(np.mean(np.asarray(cos_d) > np.asarray(cos_u))) if n else math.nan,
                            "n_ties": ties, "tie_rate": ties / n if n else math.nan,
                            "mean_p_desired": float(np.mean(p)) if n else math.nan})
    return summary, per_image


def read_senses(path) -> dict[str, Senses]:
    """A CSV with columns prompt, desired_text, undesired_text -> {prompt: Senses}."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no phrases file {path}: pass a CSV with columns prompt,desired_text,undesired_text")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "desired_text", "undesired_text"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path} lacks the columns {', '.join(sorted(missing))} (needs prompt,desired_text,"
                            "undesired_text)")
        return {row["prompt"]: distinct_senses(Senses(row["desired_text"], row["undesired_text"]),
                                               f"{path} line {reader.line_num} (prompt {row['prompt']!r})")
                for row in reader}


def write_rows(path, rows: list[dict], columns: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
    return path
