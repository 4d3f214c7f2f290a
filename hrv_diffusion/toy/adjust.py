"""SD-HRV on the toy model: does adjusting a word toward a concept change how the evaluator reads the word?

The toy has two concepts that compete for words: Color (a saturated object color) and Background (white, black,
gray, striped, grid). The evaluator reads both from an image, so each word has two measurable readings:

- read as Color: the main object's color is the word's color;
- read as Background: the background is the word's background.

Cases (one prompt and one seed per item, prompts cycle through colors, shapes and backgrounds):

- ``color_word``: "a {shape} in {color}", the word ``{color}`` (a color word; only the Color reading is possible);
- ``background_word``: "a {white|black|gray} {shape}", the word in the object-color slot (a background word in a
  color adjective's place; only the Background reading is possible, the toy never draws achromatic objects);
- ``compound``: "a {color}-striped {shape}", the hyphenated word ``{color}-striped`` (all three BPE pieces): one
  word that names a color and a background, read both ways.

Each item is generated three times from its seed in one batch: standard, adjusted toward Color (the paper's
2·HRV[Color] − HRV[Background]) and adjusted toward Background (2·HRV[Background] − HRV[Color]), conditional half,
every evaluation, no renormalization, the toy's shipped HRVs. ``VARIANTS`` bound the factors below at 0.
"""
from __future__ import annotations

import numpy as np

from hrv_diffusion.apps.adjust import Adjustment, generate_adjusted
from hrv_diffusion.toy import data, evaluator

CASES = ("color_word", "background_word", "compound")
# condition -> (desired, undesired, Adjustment options); the paper's rule first, then variants with a lower bound
CONDITIONS = {"standard": None, "toward_Color": ("Color", "Background", {}),
              "toward_Background": ("Background", "Color", {})}
VARIANTS = {"toward_Color_min0": ("Color", "Background", {"min_factor": 0.0}),
            "toward_Background_min0": ("Background", "Color", {"min_factor": 0.0})}
ACHROMATIC = ("white", "black", "gray")


def items(case: str, n: int, seed: int = 0) -> list[dict]:
    """``n`` items of a case: prompt, word, seed and the two readings' targets (None: impossible)."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, not {case!r}")
    colors, shapes = list(data.COLORS), list(data.SHAPES)
    out = []
    for i in range(n):
        color, shape, background = colors[i % 8], shapes[(i // 8 + i) % 6], ACHROMATIC[i % 3]
        if case == "color_word":
            prompt, word, as_color, as_background = f"a {shape} in {color}", color, color, None
        elif case == "background_word":
            prompt, word, as_color, as_background = f"a {background} {shape}", background, None, background
        else:
            word = f"{color}-striped"
            prompt, as_color, as_background = f"a {word} {shape}", color, "striped"
        out.append({"prompt": prompt, "word": word, "seed": seed + i, "color": as_color,
                    "background": as_background})
    return out


def readings(image, item: dict) -> dict:
    """The evaluator's reading of one image, and whether it reads the word as Color and as Background."""
    reading = evaluator.read_image(image)
    main = reading.objects[0] if reading.objects else None
    return {"object_color": main.color if main else None, "shape": main.shape if main else None,
            "background": reading.background,
            "as_color": bool(main is not None and item["color"] is not None and main.color == item["color"]),
            "as_background": bool(item["background"] is not None and reading.background == item["background"])}


def evaluate(pipe, hrv, case: str, n: int = 64, seed: int = 0, steps: int = 50, batch_size: int = 32,
             progress=None, conditions: dict | None = None) -> dict:
    """Generate and read every item of ``case`` under ``conditions`` (default ``CONDITIONS``: standard, toward
    Color, toward Background); rates per condition and per item."""
    conditions = CONDITIONS if conditions is None else {"standard": None, **conditions}
    cases = items(case, n, seed)
    per_item = [dict(item) for item in cases]
    for start in range(0, n, batch_size):
        chunk = cases[start : start + batch_size]
        prompts, seeds = [c["prompt"] for c in chunk], [c["seed"] for c in chunk]
        images = {}
        for name, condition in conditions.items():
            if condition is None:
                continue
            desired, undesired, options = condition
            adjustments = [Adjustment.sd_hrv(c["word"], desired, undesired, **options) for c in chunk]
            out = generate_adjusted(pipe, prompts, seeds, adjustments, hrv=hrv, with_standard="standard" not in images,
                                    num_inference_steps=steps)
            if out.standard is not None:
                images["standard"] = out.standard
            images[name] = out.adjusted
        for name in conditions:
            for i, image in enumerate(images[name]):
                per_item[start + i][name] = readings(image, chunk[i])
        if progress is not None:
            progress(len(chunk))
    rates = {}
    for name in conditions:
        rates[name] = {"as_color": float(np.mean([r[name]["as_color"] for r in per_item])),
                       "as_background": float(np.mean([r[name]["as_background"] for r in per_item])),
                       "object_found": float(np.mean([r[name]["object_color"] is not None for r in per_item]))}
    return {"case": case, "n": n, "seed": seed, "steps": steps, "rates": rates, "items": per_item}
