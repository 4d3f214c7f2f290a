"""Read color, shape, size, position and background back from a toy image, analytically (no learned model).

Objects are saturated, backgrounds achromatic (``data``), so an object pixel is one with a high chroma
(max - min of R, G, B). Blending a color with a gray keeps its hue, so anti-aliased edges keep their object's
hue. For each image:

1. mask: chroma > ``CHROMA_THRESHOLD``; blobs: 8-connected components of the mask.
2. a blob whose pixels fall into two hue groups far apart (two touching objects) is split by hue.
3. per object: color = nearest palette hue of its pixels (weighted majority); coverage alpha = chroma /
   the object's own chroma (robust to any achromatic background); shape = the shape whose drawing, at the
   size and center implied by the object's area and centroid, best overlaps the alpha map (soft IoU,
   analysis by synthesis with ``data.coverage``, over a few sizes and offsets); size = that drawing's side
   (< ``data.SIZE_THRESHOLD``: small); position = the anchor nearest to that drawing's center.
4. background: gray level and row/column structure of the pixels away from objects.

The same code reads dataset images and generated ones (slightly noisy, colors a bit off).
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np

from hrv_diffusion.toy import data

CHROMA_THRESHOLD = 50.0
MIN_AREA = 15.0  # alpha-weighted pixels at 32x32; smaller blobs are noise (the smallest object has ~32)
ATTRIBUTES = ("color", "shape", "size", "position")

_PALETTE = np.asarray(list(data.COLORS.values()), np.float32)  # (8, 3)
_COLOR_NAMES = tuple(data.COLORS)
# Area of each shape as a fraction of its bounding box, and its centroid's offset below the box center
# (in units of the side d): only the triangle's centroid is off center (one third of the half side).
_FILL = {"circle": np.pi / 4, "square": 1.0, "triangle": 0.5, "diamond": 0.5, "cross": 5 / 9,
         "ring": 0.75 * np.pi / 4}
_CENTROID_DY = {"triangle": 1 / 6}


@dataclass
class ObjectReading:
    color: str
    shape: str
    size: str
    position: str
    cx: float  # bounding-box center and side of the best-fitting drawing, in pixels of a 32x32 image
    cy: float
    d: float
    area: float  # alpha-weighted pixel count
    fit: float  # soft IoU of the best drawing (1 = perfect)


@dataclass
class Reading:
    background: str
    objects: list[ObjectReading]  # largest first

    def to_dict(self) -> dict:
        return {"background": self.background, "objects": [asdict(o) for o in self.objects]}


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees of (..., 3) float RGB."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    return np.degrees(np.arctan2(np.sqrt(3.0) * (g - b), 2.0 * r - g - b)) % 360.0


_PALETTE_HUE = _hue(_PALETTE)  # (8,)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a boolean (H, W) mask -> labels (H, W) int (0 = none), count."""
    h, w = mask.shape
    big = np.iinfo(np.int64).max
    labels = np.where(mask, np.arange(1, h * w + 1).reshape(h, w), big)
    while True:  # propagate the minimum label through the mask until nothing changes
        padded = np.pad(labels, 1, constant_values=big)
        shifted = [padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        new = np.where(mask, np.min(shifted, axis=0), big)
        if np.array_equal(new, labels):
            break
        labels = new
    ids = np.unique(labels[mask])
    out = np.zeros((h, w), np.int64)
    for k, i in enumerate(ids, start=1):
        out[labels == i] = k
    return out, len(ids)


def _dilate(mask: np.ndarray, steps: int = 1) -> np.ndarray:
    for _ in range(steps):
        p = np.pad(mask, 1)
        mask = np.max([p[1 + dy:1 + dy + mask.shape[0], 1 + dx:1 + dx + mask.shape[1]]
                       for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)
    return mask


def _box3(x: np.ndarray) -> np.ndarray:
    """3x3 mean with edge padding."""
    p = np.pad(x, 1, mode="edge")
    return np.mean([p[1 + dy:1 + dy + x.shape[0], 1 + dx:1 + dx + x.shape[1]]
                    for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=0)


def _split_by_hue(blob: np.ndarray, hue: np.ndarray, labels: np.ndarray, weight: np.ndarray) -> list[np.ndarray]:
    """Split a blob into two objects if its two main hue groups sit apart; else return it whole."""
    counts = np.bincount(labels[blob], weights=weight[blob], minlength=len(_PALETTE))
    first, second = np.argsort(counts)[::-1][:2]
    if counts[second] < 0.08 * counts.sum() or (blob & (labels == second)).sum() < MIN_AREA:
        return [blob]
    ys, xs = np.nonzero(blob)
    groups = []  # (centroid, radius of a disk of the group's pixel count)
    for k in (first, second):
        sel = labels[ys, xs] == k
        w = weight[ys, xs] * sel
        groups.append((np.array([(xs * w).sum(), (ys * w).sum()]) / w.sum(), np.sqrt(sel.sum() / np.pi)))
    (c1, r1), (c2, r2) = groups
    if np.linalg.norm(c1 - c2) <= 0.5 * (r1 + r2):  # interleaved: one object with mixed hues
        return [blob]
    # Assign every blob pixel to the nearer hue of the two groups.
    diff = np.abs(hue[ys, xs][:, None] - _PALETTE_HUE[[first, second]])  # (n, 2)
    nearer = np.minimum(diff, 360 - diff).argmin(1)
    parts = []
    for k in (0, 1):
        part = np.zeros_like(blob)
        part[ys[nearer == k], xs[nearer == k]] = True
        parts.append(part)
    return parts


def _fit_shape(alpha: np.ndarray, image_size: int) -> tuple[str, float, float, float, float]:
    """Best (shape, cx, cy, d, soft IoU) for an alpha map (H, W) of one object."""
    area = float(alpha.sum())
    ys, xs = np.mgrid[0:image_size, 0:image_size] + 0.5
    mx, my = float((alpha * xs).sum() / area), float((alpha * ys).sum() / area)
    best = ("circle", mx, my, 0.0, -1.0)
    for shape in data.SHAPES:
        d0 = float(np.sqrt(area / _FILL[shape]))
        for scale in (0.9, 1.0, 1.1):
            d = d0 * scale
            cy0 = my - _CENTROID_DY.get(shape, 0.0) * d
            for dx, dy in ((0, 0), (0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)):
                drawn = data.coverage(shape, mx + dx, cy0 + dy, d, image_size, supersample=4)
                iou = float(np.minimum(alpha, drawn).sum() / np.maximum(alpha, drawn).sum())
                if iou > best[4]:
                    best = (shape, mx + dx, cy0 + dy, d, iou)
    return best


def _background(gray: np.ndarray, away: np.ndarray) -> str:
    """Background name from the gray levels (H, W) of the pixels ``away`` from every object.

    Patterns show in the means of rows (stripes) or of rows and columns (grid); averaging a row removes most
    pixel noise, so plain backgrounds have nearly constant row and column means."""
    rows = np.array([gray[i][away[i]].mean() for i in range(gray.shape[0]) if away[i].sum() >= 4])
    cols = np.array([gray[:, j][away[:, j]].mean() for j in range(gray.shape[1]) if away[:, j].sum() >= 4])
    if len(rows) < 4 or len(cols) < 4:
        return "unknown"
    if max(rows.std(), cols.std()) > 10.0:
        return "striped" if cols.std() < 0.5 * rows.std() else "grid"
    mean = gray[away].mean()
    return min(data.PLAIN_LEVELS, key=lambda name: abs(mean - data.PLAIN_LEVELS[name]))


def _as_array(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if array.dtype != np.uint8:  # floats in [0, 1]
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    return array


def read_image(image, max_objects: int = 2) -> Reading:
    """Read a (H, W, 3) uint8 array, a float array in [0, 1], or a PIL image (any square size)."""
    rgb = _as_array(image).astype(np.float32)  # (H, W, 3)
    size = rgb.shape[0]
    scale = size / data.IMAGE_SIZE
    # A color cast of the whole image (generated images may have one) is the median chromatic offset,
    # since most pixels are background and the background is achromatic.
    rgb = rgb - np.median((rgb - rgb.mean(-1, keepdims=True)).reshape(-1, 3), axis=0)
    chroma = rgb.max(-1) - rgb.min(-1)  # (H, W)
    mask = _box3(chroma) > CHROMA_THRESHOLD  # smoothed: single noisy pixels do not make objects
    hue = _hue(rgb)  # (H, W) degrees
    diff = np.abs(hue[..., None] - _PALETTE_HUE)
    hue_labels = np.minimum(diff, 360.0 - diff).argmin(-1)  # (H, W) nearest palette hue
    blobs, count = _components(mask)
    parts = []
    for k in range(1, count + 1):
        parts += _split_by_hue(blobs == k, hue, hue_labels, chroma)
    objects = []
    for part in parts:
        counts = np.bincount(hue_labels[part], weights=chroma[part], minlength=len(_PALETTE))
        color = int(counts.argmax())
        own = part & (hue_labels == color)
        full_chroma = float(np.percentile(chroma[own], 90)) if own.any() else float(chroma[part].max())
        region = _dilate(part) & ~np.any([o["mask"] for o in objects], axis=0) if objects else _dilate(part)
        alpha = np.where(region, np.clip(chroma / max(full_chroma, 1.0), 0.0, 1.0), 0.0)  # (H, W)
        area = float(alpha.sum())
        if area < MIN_AREA * scale * scale:
            continue
        objects.append({"mask": part, "alpha": alpha, "area": area, "color": _COLOR_NAMES[color]})
    objects.sort(key=lambda o: -o["area"])
    readings = []
    for obj in objects[:max_objects]:
        shape, cx, cy, d, fit = _fit_shape(obj["alpha"], size)
        cx, cy, d = cx / scale, cy / scale, d / scale
        position = min(data.POSITIONS, key=lambda p: (data.POSITIONS[p][0] - cx) ** 2 + (data.POSITIONS[p][1] - cy) ** 2)
        readings.append(ObjectReading(obj["color"], shape, "small" if d < data.SIZE_THRESHOLD else "large",
                                      position, cx, cy, d, obj["area"] / scale ** 2, fit))
    away = ~_dilate(np.any([o["mask"] for o in objects], axis=0), 2) if objects else np.ones_like(mask)
    return Reading(_background(rgb.mean(-1), away), readings)


def read_images(images, max_objects: int = 2) -> list[Reading]:
    return [read_image(image, max_objects) for image in images]


# ------------------------------------------------------------------------------------------------ scoring


def _match(truth: list[dict], found: list[ObjectReading]) -> list[ObjectReading | None]:
    """For each true object, the reading whose center is nearest (one reading per object)."""
    if len(truth) == 1:
        return [min(found, key=lambda r: (r.cx - truth[0]["cx"]) ** 2 + (r.cy - truth[0]["cy"]) ** 2)
                if found else None]
    best, best_cost = [None] * len(truth), np.inf
    slots = list(found) + [None] * len(truth)
    for perm in itertools.permutations(range(len(slots)), len(truth)):
        cost = sum(1e6 if slots[p] is None else (slots[p].cx - t["cx"]) ** 2 + (slots[p].cy - t["cy"]) ** 2
                   for t, p in zip(truth, perm))
        if cost < best_cost:
            best, best_cost = [slots[p] for p in perm], cost
    return best


def score(readings: list[Reading], scenes: list[dict], only_mentioned: bool = True) -> dict:
    """Per-attribute accuracy of ``readings`` against ``scenes`` (``data.sample_scenes``).

    Each object of each scene counts once per attribute; an object the evaluator did not find is wrong on all
    of them. With ``only_mentioned`` (for generated images), an attribute the caption leaves out is not scored.
    Returns {attribute: {"accuracy", "correct", "total"}} for color, shape, size, position, background, plus
    "objects_found" (share of scenes where the evaluator found as many objects as the scene has)."""
    correct = {a: 0 for a in ATTRIBUTES + ("background",)}
    total = dict(correct)
    found_right = 0
    for reading, scene in zip(readings, scenes, strict=True):
        truth = scene["objects"]
        found_right += len(reading.objects) == len(truth)
        for t, r in zip(truth, _match(truth, reading.objects)):
            for a in ATTRIBUTES:
                if only_mentioned and a not in t.get("mentioned", ATTRIBUTES):
                    continue
                total[a] += 1
                correct[a] += bool(r is not None and getattr(r, a) == t[a])
        if not only_mentioned or scene.get("background_mentioned", True):
            total["background"] += 1
            correct["background"] += reading.background == scene["background"]
    out = {a: {"accuracy": correct[a] / total[a] if total[a] else None, "correct": correct[a], "total": total[a]}
           for a in correct}
    out["objects_found"] = found_right / len(scenes) if scenes else None
    return out
