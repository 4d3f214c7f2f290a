"""Color edits on the toy model, judged by the evaluator: does the color change while shape and position stay?

A case is a one-object caption naming every attribute and the same caption with its color word swapped for
another color, e.g. "a small red circle at the top on a white background" -> "... blue circle ...". For each case
(one seed each) one batch holds the source, the P2P baseline, P2P-HRV with the toy's Color HRV, and the target
prompt generated on its own (both windows 0: no editing). The evaluator reads every image back; an edit succeeds
when the edited image shows the target color with the shape and the position the evaluator reads on the source
image. The fitted object's center shift and side change against the source measure how exactly the layout is kept.
"""
from __future__ import annotations

import numpy as np

from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits
from hrv_diffusion.toy import data, evaluator

P2P = EditSpec("original_p2p", cross_replace_steps=0.8, self_replace_steps=0.4)
P2P_HRV = EditSpec("Color_0.9", cross_replace_steps=0.8, self_replace_steps=0.9, restoration="hrv", concept="Color")
PLAIN = EditSpec("plain_target", cross_replace_steps=0.0, self_replace_steps=0.0)
METHODS = (P2P, P2P_HRV, PLAIN)


def color_cases(n: int, seed: int = 0) -> list[dict]:
    """``n`` cases: source and target captions, the colors, and the scene; the color word must stand alone once in
    the caption (so that a one-word swap changes it), and the target color is drawn among the 7 others."""
    rng = np.random.default_rng([seed, 12])
    cases, drawn = [], 0
    while len(cases) < n:
        for scene in data.sample_scenes(4 * n, seed=seed + drawn, split="train", two_object_fraction=0.0,
                                        mention="all"):
            color = scene["objects"][0]["color"]
            words = scene["caption"].split()
            if words.count(color) != 1:
                continue
            new = [c for c in data.COLORS if c != color][int(rng.integers(len(data.COLORS) - 1))]
            target = " ".join(new if w == color else w for w in words)
            cases.append({"source": scene["caption"], "target": target, "source_color": color, "target_color": new,
                          "scene": scene})
            if len(cases) == n:
                break
        drawn += 1
    return cases


def _main_object(reading) -> dict | None:
    """The largest object's attributes and its fitted center and side (pixels of 32 x 32), or None."""
    if not reading.objects:
        return None
    obj = reading.objects[0]
    return {k: getattr(obj, k) for k in (*evaluator.ATTRIBUTES, "cx", "cy", "d")}


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def evaluate_color_edits(pipe, hrv, cases: list[dict], seed: int = 0, steps: int = 50, batch_size: int = 64,
                         self_max_queries: int | None = None, progress: bool = False) -> dict:
    """Generate and read every case; return per-case readings and per-method rates (see the module docstring).
    ``progress``: a tqdm bar over the batches."""
    from tqdm.auto import tqdm

    groups = [Group(c["source"], seed + i, tuple(Edit(c["target"], spec, c["target_color"]) for spec in METHODS))
              for i, c in enumerate(cases)]
    per_batch = max(1, batch_size // (1 + len(METHODS)))
    images = []
    for start in tqdm(range(0, len(groups), per_batch), desc="edits", unit="batch", disable=not progress):
        out = generate_edits(pipe, groups[start : start + per_batch], hrv=hrv, num_inference_steps=steps,
                             self_max_queries=self_max_queries)
        images.append(out.images)
    images = np.concatenate(images)  # (cases * 4, H, W, 3): [source, P2P, P2P-HRV, plain] per case
    readings = [_main_object(r) for r in evaluator.read_images(images)]
    rows, size = [], 1 + len(METHODS)
    for i, case in enumerate(cases):
        source = readings[i * size]
        row = {"source_prompt": case["source"], "target_prompt": case["target"], "seed": seed + i,
               "source_color": case["source_color"], "target_color": case["target_color"], "source_read": source,
               "source_as_captioned": bool(source) and all(source[a] == case["scene"]["objects"][0][a]
                                                           for a in evaluator.ATTRIBUTES)}
        for j, spec in enumerate(METHODS, start=1):
            edited = readings[i * size + j]
            kept = {a: bool(source and edited and edited[a] == source[a]) for a in ("shape", "position", "size")}
            row[spec.name] = {"read": edited, "target_color": bool(edited and edited["color"] == case["target_color"]),
                              "color_changed": bool(source and edited and edited["color"] != source["color"]),
                              "kept": kept,
                              "center_shift_px": (float(np.hypot(edited["cx"] - source["cx"],
                                                                 edited["cy"] - source["cy"]))
                                                  if source and edited else None),
                              "side_change_px": float(abs(edited["d"] - source["d"])) if source and edited else None,
                              "success": bool(edited and edited["color"] == case["target_color"] and kept["shape"]
                                              and kept["position"])}
        rows.append(row)
    rates = {}
    for spec in METHODS:
        results = [r[spec.name] for r in rows]
        rates[spec.name] = {
            "success": float(np.mean([r["success"] for r in results])),
            "target_color": float(np.mean([r["target_color"] for r in results])),
            "color_changed": float(np.mean([r["color_changed"] for r in results])),
            "kept_shape": float(np.mean([r["kept"]["shape"] for r in results])),
            "kept_position": float(np.mean([r["kept"]["position"] for r in results])),
            "kept_size": float(np.mean([r["kept"]["size"] for r in results])),
            "mean_center_shift_px": _mean(r["center_shift_px"] for r in results),
            "mean_side_change_px": _mean(r["side_change_px"] for r in results),
        }
    return {"cases": rows, "rates": rates,
            "source_as_captioned": float(np.mean([r["source_as_captioned"] for r in rows])), "images": images}
