"""The toy world: seeded scenes of colored shapes, their template captions and their 32x32 RGB images.

A *scene* is one or two objects on a background. Each object has a color (8), a shape (6), a size (2) and a
position (5 anchors); the background is plain (white, black, gray) or patterned (striped, grid). Object colors
are saturated and backgrounds are achromatic, which is what lets ``evaluator`` read images back analytically.

Captions come from templates that vary the word order on purpose ("a small red circle on the left", "a circle
that is red, on the left", "on the left there is a tiny circle colored red", "a circle, red, small, left,
striped background"), so that no attribute always sits at the same place or always before the shape noun.

Held-out combinations: the color-shape pairs in ``HELD_OUT`` never appear in the ``train`` split (in no
object of any scene); every scene of the ``heldout`` split contains one. Everything is deterministic from
``seed``: scenes are drawn in fixed chunks of ``CHUNK`` with one generator per (seed, split, chunk), and
drawing an image uses no randomness, so the result does not depend on how many workers render it.
"""
from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor

import numpy as np

IMAGE_SIZE = 32
CHUNK = 1024

# Saturated object colors, hues >= 25 degrees apart (the evaluator labels pixels by hue).
COLORS = {
    "red": (220, 40, 40), "orange": (245, 120, 20), "yellow": (235, 225, 30), "green": (40, 170, 60),
    "teal": (20, 170, 170), "blue": (40, 80, 225), "purple": (130, 50, 200), "pink": (240, 90, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
SIZES = {"small": (8.0, 10.0), "large": (14.0, 16.0)}  # bounding-box side in pixels at 32x32
SIZE_THRESHOLD = 12.0  # small < 12 <= large
POSITIONS = {"left": (8.0, 16.0), "right": (24.0, 16.0), "top": (16.0, 8.0), "bottom": (16.0, 24.0),
             "center": (16.0, 16.0)}  # anchor (x, y) of the object's bounding-box center at 32x32
BACKGROUNDS = ("white", "black", "gray", "striped", "grid")
PLAIN_LEVELS = {"white": 240, "black": 25, "gray": 128}
PATTERN_LIGHT, PATTERN_DARK = 235, 155

# One held-out color per shape, each color at most once: 6 of the 48 pairs.
HELD_OUT = frozenset({("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "diamond"),
                      ("purple", "cross"), ("orange", "ring")})
SPLITS = {"train": 0, "heldout": 1, "all": 2}

# Words of each attribute value in captions (the concept words of descriptions/toy_concepts.txt).
SIZE_WORDS = {"small": ("small", "tiny"), "large": ("large", "big")}
POSITION_PHRASES = {"left": ("on the left", "at the left"), "right": ("on the right", "at the right"),
                    "top": ("at the top", "on top"), "bottom": ("at the bottom", "on the bottom"),
                    "center": ("in the center", "in the middle")}
POSITION_BARE = {"left": ("left",), "right": ("right",), "top": ("top",), "bottom": ("bottom",),
                 "center": ("center", "middle")}
CONCEPT_WORDS = {
    "Color": tuple(COLORS),
    "Shape": SHAPES,
    "Size": ("small", "tiny", "large", "big"),
    "Position": ("left", "right", "top", "bottom", "center", "middle", "above", "below"),
    "Background": BACKGROUNDS,
}


# ------------------------------------------------------------------------------------------------ shapes


def inside(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of points (u, v) inside ``shape``; the shape fills the box [-1, 1]^2, v points down."""
    au, av = np.abs(u), np.abs(v)
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return (au <= 1.0) & (av <= 1.0)
    if shape == "triangle":  # apex at the top, base at the bottom
        return (v <= 1.0) & (au <= (v + 1.0) / 2.0)
    if shape == "diamond":
        return au + av <= 1.0
    if shape == "cross":  # a plus sign, arms one third of the box wide
        return ((au <= 1 / 3) & (av <= 1.0)) | ((av <= 1 / 3) & (au <= 1.0))
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.25)
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def coverage(shape: str, cx: float, cy: float, d: float, image_size: int = IMAGE_SIZE,
             supersample: int = 4) -> np.ndarray:
    """Fraction of each pixel covered by ``shape`` with bounding-box center (cx, cy) and side d: (H, W) float32.

    Pixel (i, j) spans [j, j+1) x [i, i+1); it is sampled at supersample^2 points (anti-aliasing)."""
    alpha = np.zeros((image_size, image_size), np.float32)
    x0, x1 = max(0, math.floor(cx - d / 2)), min(image_size, math.ceil(cx + d / 2))
    y0, y1 = max(0, math.floor(cy - d / 2)), min(image_size, math.ceil(cy + d / 2))
    if x1 <= x0 or y1 <= y0:
        return alpha
    offsets = (np.arange(supersample) + 0.5) / supersample
    xs = (np.arange(x0, x1)[:, None] + offsets).ravel()  # (w*s,)
    ys = (np.arange(y0, y1)[:, None] + offsets).ravel()  # (h*s,)
    half = d / 2
    hit = inside(shape, ((xs - cx) / half)[None, :], ((ys - cy) / half)[:, None])  # (h*s, w*s)
    window = hit.reshape(y1 - y0, supersample, x1 - x0, supersample).mean(axis=(1, 3))
    alpha[y0:y1, x0:x1] = window
    return alpha


def background_image(name: str, image_size: int = IMAGE_SIZE) -> np.ndarray:
    """(H, W, 3) float32 gray levels of a background. Patterns: 4-pixel bands / 2-pixel grid lines, period 8."""
    scale = image_size / IMAGE_SIZE
    if name in PLAIN_LEVELS:
        return np.full((image_size, image_size, 3), PLAIN_LEVELS[name], np.float32)
    y = (np.arange(image_size) / scale)[:, None] * np.ones((1, image_size))
    x = y.T
    if name == "striped":  # horizontal bands
        level = np.where((y // 4) % 2 == 0, PATTERN_LIGHT, PATTERN_DARK)
    elif name == "grid":
        line = np.isin((y // 1) % 8, (3, 4)) | np.isin((x // 1) % 8, (3, 4))
        level = np.where(line, PATTERN_DARK, PATTERN_LIGHT)
    else:
        raise ValueError(f"unknown background {name!r}; known: {', '.join(BACKGROUNDS)}")
    return np.repeat(level[:, :, None], 3, axis=2).astype(np.float32)


def render_scene(scene: dict, image_size: int = IMAGE_SIZE, supersample: int = 4) -> np.ndarray:
    """(H, W, 3) uint8 image of one scene: the background, then each object alpha-composited."""
    scale = image_size / IMAGE_SIZE
    image = background_image(scene["background"], image_size)
    for obj in scene["objects"]:
        alpha = coverage(obj["shape"], obj["cx"] * scale, obj["cy"] * scale, obj["d"] * scale, image_size,
                         supersample)[:, :, None]  # (H, W, 1)
        image = image * (1.0 - alpha) + np.asarray(COLORS[obj["color"]], np.float32) * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def render_scenes(scenes, image_size: int = IMAGE_SIZE, supersample: int = 4) -> np.ndarray:
    """(N, H, W, 3) uint8."""
    out = np.empty((len(scenes), image_size, image_size, 3), np.uint8)
    for i, scene in enumerate(scenes):
        out[i] = render_scene(scene, image_size, supersample)
    return out


# ------------------------------------------------------------------------------------------------ scenes


def is_held_out(color: str, shape: str) -> bool:
    return (color, shape) in HELD_OUT


def scene_is_held_out(scene: dict) -> bool:
    """True if any object of the scene has a held-out color-shape pair."""
    return any(is_held_out(o["color"], o["shape"]) for o in scene["objects"])


def _pairs(held_out: bool | None) -> list[tuple[str, str]]:
    pairs = [(c, s) for c in COLORS for s in SHAPES]
    if held_out is None:
        return pairs
    return [p for p in pairs if (p in HELD_OUT) == held_out]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _with_article(words: list[str]) -> str:
    return f"{_article(words[0])} {' '.join(words)}"


def _place(rng, center: tuple[float, float], d: float, jitter: float) -> tuple[float, float]:
    """Jitter an anchor and keep the bounding box inside the image."""
    half = d / 2
    cx = float(np.clip(center[0] + rng.uniform(-jitter, jitter), half, IMAGE_SIZE - half))
    cy = float(np.clip(center[1] + rng.uniform(-jitter, jitter), half, IMAGE_SIZE - half))
    return cx, cy


def _object(rng, color: str, shape: str, size: str, position: str, jitter: float) -> dict:
    d = float(rng.uniform(*SIZES[size]))
    cx, cy = _place(rng, POSITIONS[position], d, jitter)
    return {"color": color, "shape": shape, "size": size, "position": position, "d": d, "cx": cx, "cy": cy}


def _single_caption(rng, obj: dict, background: str, mentioned: set[str]) -> str:
    """One object, attributes in a varied order. ``mentioned`` is a subset of {color, size, position,
    background}; the shape is always named (it is the noun)."""
    color, shape = obj["color"], obj["shape"]
    size_word = _pick(rng, SIZE_WORDS[obj["size"]])
    if rng.random() < 0.25:  # list style: "a circle, red, small, left, striped background"
        items = []
        if "color" in mentioned:
            items.append(color)
        if "size" in mentioned:
            items.append(size_word)
        if "position" in mentioned:
            items.append(_pick(rng, POSITION_BARE[obj["position"]] + POSITION_PHRASES[obj["position"]]))
        if "background" in mentioned:
            items.append(f"{background} background")
        rng.shuffle(items)
        return ", ".join([_with_article([shape])] + items)
    pre, post, front, that_is, color_post = [], [], [], [], None
    if "color" in mentioned:
        r = rng.random()
        if r < 0.5:
            pre.append(color)
        elif r < 0.7:
            that_is.append(color)
        else:
            color_post = _pick(rng, (f"colored {color}", f"in {color}"))
    if "size" in mentioned:
        (pre if rng.random() < 0.6 else that_is).append(size_word)
    if "position" in mentioned:
        phrase = _pick(rng, POSITION_PHRASES[obj["position"]])
        if rng.random() < 0.7:
            post.append(phrase)
        else:
            front.append(_pick(rng, (f"{phrase},", f"{phrase} there is")))
    if "background" in mentioned:
        if rng.random() < 0.6:
            post.append(_pick(rng, (f"on a {background} background", f"with a {background} background",
                                    f"against a {background} background")))
        else:
            front.append(_pick(rng, (f"on a {background} background,", f"{background} background,",
                                     f"{_article(background)} {background} background with")))
    rng.shuffle(pre)
    rng.shuffle(that_is)
    rng.shuffle(post)
    rng.shuffle(front)
    if color_post:  # right after the noun: "a cross in blue on a black background", not "... background in blue"
        post.insert(0, color_post)
    noun = _with_article(pre + [shape])
    if that_is:
        noun += " that is " + " and ".join(that_is)
        if post:
            noun += ","
    return " ".join(front + [noun] + post)


def _object_phrase(rng, obj: dict, color: bool, size: bool) -> str:
    """'a small red circle', 'a circle that is red', 'a big square colored blue'."""
    words = ([_pick(rng, SIZE_WORDS[obj["size"]])] if size else [])
    if color and rng.random() < 0.3:
        return _with_article(words + [obj["shape"]]) + _pick(rng, (f" that is {obj['color']}",
                                                                    f" colored {obj['color']}"))
    return _with_article(words + ([obj["color"]] if color else []) + [obj["shape"]])


def _pair_caption(rng, first: dict, second: dict, layout: str, background: str, mentioned: dict) -> str:
    """Two objects; ``first`` is left (horizontal) or top (vertical). ``mentioned['relation']`` says whether
    the caption fixes where each object is; without it the objects are listed in a random order."""
    a = _object_phrase(rng, first, mentioned["color"][0], mentioned["size"][0])
    b = _object_phrase(rng, second, mentioned["color"][1], mentioned["size"][1])
    if mentioned["relation"]:
        if layout == "horizontal":
            forms = (f"{a} to the left of {b}", f"{b} to the right of {a}", f"{a} on the left and {b} on the right",
                     f"{b} on the right and {a} on the left")
        else:
            forms = (f"{a} above {b}", f"{b} below {a}", f"{a} at the top and {b} at the bottom",
                     f"{b} at the bottom and {a} at the top")
        text = _pick(rng, forms)
    else:
        text = f"{a} and {b}" if rng.random() < 0.5 else f"{b} and {a}"
    if mentioned["background"]:
        if rng.random() < 0.5:
            text = f"{text}, on a {background} background"
        else:
            text = f"{_article(background)} {background} background with {text}"
    return text


def _single_scene(rng, pairs, mention: str) -> dict:
    color, shape = _pick(rng, pairs)
    size, position = _pick(rng, tuple(SIZES)), _pick(rng, tuple(POSITIONS))
    background = _pick(rng, BACKGROUNDS)
    obj = _object(rng, color, shape, size, position, jitter=1.5)
    if mention == "all":
        mentioned = {"color", "size", "position", "background"}
    else:
        p = {"color": 0.9, "size": 0.7, "position": 0.7, "background": 0.5}
        mentioned = {k for k, q in p.items() if rng.random() < q}
    obj["mentioned"] = sorted({"shape"} | (mentioned - {"background"}))
    caption = _single_caption(rng, obj, background, mentioned)
    return {"caption": caption, "background": background, "background_mentioned": "background" in mentioned,
            "layout": "single", "objects": [obj]}


def _pair_scene(rng, first_pairs, second_pairs, mention: str) -> dict:
    color_a, shape_a = _pick(rng, first_pairs)
    color_b, shape_b = _pick(rng, [p for p in second_pairs if p[0] != color_a])  # two different colors
    layout = _pick(rng, ("horizontal", "vertical"))
    places = ("left", "right") if layout == "horizontal" else ("top", "bottom")
    sizes = [_pick(rng, tuple(SIZES)), _pick(rng, tuple(SIZES))]
    if sizes == ["large", "large"]:  # two large objects would touch at 32x32
        sizes[int(rng.integers(2))] = "small"
    objects = [(color_a, shape_a), (color_b, shape_b)]
    if rng.random() < 0.5:  # the held-out / first-drawn object is not always left or top
        objects.reverse()
    background = _pick(rng, BACKGROUNDS)
    objs = [_object(rng, c, s, z, p, jitter=1.0) for (c, s), z, p in zip(objects, sizes, places)]
    if mention == "all":
        m = {"color": (True, True), "size": (True, True), "relation": True, "background": True}
    else:
        m = {"color": tuple(bool(rng.random() < 0.95) for _ in range(2)),
             "size": tuple(bool(rng.random() < 0.4) for _ in range(2)),
             "relation": bool(rng.random() < 0.75), "background": bool(rng.random() < 0.4)}
    for i, obj in enumerate(objs):
        obj["mentioned"] = sorted({"shape"} | {k for k in ("color", "size") if m[k][i]}
                                  | ({"position"} if m["relation"] else set()))
    caption = _pair_caption(rng, objs[0], objs[1], layout, background, m)
    return {"caption": caption, "background": background, "background_mentioned": m["background"],
            "layout": layout, "objects": objs}


def _scene_chunk(seed: int, split: str, chunk: int, count: int, two_object_fraction: float, mention: str):
    rng = np.random.default_rng([seed, SPLITS[split], chunk])
    train, held, every = _pairs(False), _pairs(True), _pairs(None)
    scenes = []
    for _ in range(count):
        pair = rng.random() < two_object_fraction
        if split == "train":
            scene = _pair_scene(rng, train, train, mention) if pair else _single_scene(rng, train, mention)
        elif split == "heldout":
            scene = _pair_scene(rng, held, every, mention) if pair else _single_scene(rng, held, mention)
        else:
            scene = _pair_scene(rng, every, every, mention) if pair else _single_scene(rng, every, mention)
        scenes.append(scene)
    return scenes


def sample_scenes(n: int, seed: int = 0, split: str = "train", two_object_fraction: float = 0.3,
                  mention: str = "random") -> list[dict]:
    """``n`` scenes (dicts: caption, background, background_mentioned, layout, objects).

    split: "train" (no object has a held-out color-shape pair), "heldout" (each scene has one: the object of a
    one-object scene, one of the two otherwise) or "all". mention: "random" (the training distribution: some
    attributes left out of the caption) or "all" (every attribute named: for evaluation). Each object lists
    the attributes its caption names in ``mentioned``; only those can be checked on a generated image."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if mention not in ("random", "all"):
        raise ValueError(f"mention must be 'random' or 'all', not {mention!r}")
    scenes = []
    for chunk in range(math.ceil(n / CHUNK)):
        count = min(CHUNK, n - chunk * CHUNK)
        scenes += _scene_chunk(seed, split, chunk, count, two_object_fraction, mention)
    return scenes


def _render_job(args):
    scenes, image_size = args
    return render_scenes(scenes, image_size)


def make_dataset(n: int, seed: int = 0, split: str = "train", two_object_fraction: float = 0.3,
                 mention: str = "random", image_size: int = IMAGE_SIZE, workers: int = 1):
    """(images uint8 (N, H, W, 3), captions list[str], scenes list[dict]); identical for any ``workers``."""
    scenes = sample_scenes(n, seed, split, two_object_fraction, mention)
    if workers > 1 and n > CHUNK:
        jobs = [(scenes[i:i + CHUNK], image_size) for i in range(0, n, CHUNK)]
        with ProcessPoolExecutor(workers) as pool:
            images = np.concatenate(list(pool.map(_render_job, jobs)))
    else:
        images = render_scenes(scenes, image_size)
    return images, [s["caption"] for s in scenes], scenes
