"""Scoring ordered-weakening images: image-text similarity per image, averaged as the paper did.

Images are read from the generation layout ``{root}/exp_{X}/{prompt_folder}/{order}/{order}_{k}/{seed}.png``
(``order`` in top = MoRHF, bottom = LeRHF). For each image the scorer (``apps/clip.py``) compares it with the CLIP
text of its prompt folder (``weakening_experiments.clip_text_for``: the concept item alone, e.g. "cubist", not the
prompt).

- per (prompt folder, order, k): the mean over seeds;
- per key ``{order}_{k}``: the sum over prompt folders / the number of prompt folders.

``write_scores_csv`` writes the published ``hp_scores_wo_category_exp_{X}.csv`` (``Key,Value``, CRLF, 4 decimals);
``write_per_image_csv`` a tidy CSV with one row per image.
"""
from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

import numpy as np

from hrv_diffusion.apps.clip import Scorer
from hrv_diffusion.apps.weakening_experiments import Experiment, clip_text_for, experiment
from hrv_diffusion.hrv.files import ORDERS
from hrv_diffusion.io import atomic_output

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from PIL import Image

DEFAULT_SEEDS = (10, 20, 30)
SUMMARY_COLUMNS = ["key", "order", "k", "value", "n_prompts"]
PER_IMAGE_COLUMNS = ["experiment", "prompt", "order", "k", "seed", "text", "score", "path"]
_KEY = re.compile(r"^(top|bottom)_(\d+)$")


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_k_values(prompt_dir: Path) -> dict[str, list[int]]:
    """The k of every ``{order}/{order}_{k}`` folder of one prompt folder, per order (ascending)."""
    found = {}
    for order in ORDERS:
        folder = prompt_dir / order
        names = _subdirs(folder) if folder.is_dir() else []
        found[order] = sorted(int(m.group(1)) for m in (re.fullmatch(rf"{order}_(\d+)", n) for n in names) if m)
    return found


def score_experiment(root, exp: Experiment | int, scorer: Scorer, seeds: Iterable[int] = DEFAULT_SEEDS,
                     k_list: Iterable[int] | None = None, *, chunk_size: int = 64,
                     progress: bool = False) -> "tuple[pd.DataFrame, pd.DataFrame]":
    """Score every image of ``{root}/exp_{X}``; returns (summary, per_image).

    ``summary``: one row per key, columns key (``top_{k}``), order, k, value (the sum over prompt folders of the
    mean over seeds, divided by the number of prompt folders), n_prompts; top rows first, k ascending.
    ``per_image``: experiment, prompt (the folder name), order, k, seed, text, score, path (relative to ``root``).

    ``k_list`` defaults to every k found on disk. Every prompt folder must have an image for every (order, k, seed):
    a missing one raises ``FileNotFoundError`` (the reference silently averaged what was there).
    """
    import pandas as pd

    exp = exp if isinstance(exp, Experiment) else experiment(exp)
    root = Path(root)
    rows = image_rows(root / exp.folder, exp, seeds, k_list)
    desc = f"scoring exp {exp.number}" if progress else None
    scores = score_images(scorer, [row[-1] for row in rows], [row[5] for row in rows], chunk_size, desc)
    per_image = pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)
    per_image["score"] = scores
    per_image["path"] = [p.relative_to(root).as_posix() for p in per_image["path"]]
    return summarize(per_image), per_image


def image_rows(exp_dir: Path, exp: Experiment, seeds: Iterable[int], k_list: Iterable[int] | None) -> list[tuple]:
    """One row (experiment, prompt, order, k, seed, text, nan, path) per image of ``exp_dir``, in the order
    prompt, order, k, seed; a missing image is an error naming the first few."""
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"no folder {exp_dir}: generate the images of experiment {exp.number} first "
                                "(ordered_weakening_analysis/head_perturbation_analysis.py)")
    prompts = _subdirs(exp_dir)
    if not prompts:
        raise FileNotFoundError(f"{exp_dir} has no prompt folders")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("no seeds given")
    texts = {p: clip_text_for(p, exp) for p in prompts}
    if k_list is None:
        k_list = sorted({k for p in prompts for ks in find_k_values(exp_dir / p).values() for k in ks})
        if not k_list:
            raise FileNotFoundError(f"no {{order}}/{{order}}_{{k}} folders under the prompt folders of {exp_dir}")
    k_list = sorted({int(k) for k in k_list})
    rows = [(exp.number, prompt, order, k, seed, texts[prompt], np.nan,
             exp_dir / prompt / order / f"{order}_{k}" / f"{seed}.png")
            for prompt in prompts for order in ORDERS for k in k_list for seed in seeds]
    missing = [row[-1] for row in rows if not row[-1].is_file()]
    if missing:
        shown = "; ".join(str(p) for p in missing[:5])
        raise FileNotFoundError(f"{len(missing)} of {len(rows)} images are missing under {exp_dir} (for example "
                                f"{shown}); finish the generation or pass the k list and seeds that exist")
    return rows


def score_images(scorer: Scorer, paths: list[Path], texts: list[str], chunk_size: int = 64,
                 desc: str | None = None) -> np.ndarray:
    """(n,) float64: ``scorer`` on the image of ``paths[i]`` and ``texts[i]``, ``chunk_size`` images at a time (a
    tqdm bar titled ``desc`` when given)."""
    from tqdm.auto import tqdm

    scores = np.empty(len(paths), dtype=np.float64)
    with tqdm(total=len(paths), unit="image", desc=desc, disable=desc is None) as bar:
        for start in range(0, len(paths), chunk_size):
            images = [_load_rgb(path) for path in paths[start : start + chunk_size]]
            values = np.asarray(scorer.score(images, texts[start : start + chunk_size]), dtype=np.float64)
            if values.shape != (len(images),):
                raise ValueError(f"the scorer returned shape {values.shape} for {len(images)} images")
            scores[start : start + len(images)] = values
            bar.update(len(images))
    return scores


def _load_rgb(path: Path) -> "Image.Image":
    from PIL import Image

    with Image.open(path) as image:
        return image.convert("RGB")


def summarize(per_image: "pd.DataFrame") -> "pd.DataFrame":
    """Per-image scores -> the summary: per (prompt, order, k) the mean over seeds, then per (order, k) the sum over
    prompts / the number of prompts (the published arithmetic)."""
    import pandas as pd

    per_prompt = per_image.groupby(["order", "k", "prompt"], sort=False)["score"].mean()  # mean over seeds
    grouped = per_prompt.groupby(level=["order", "k"], sort=False)
    summary = pd.DataFrame({"value": grouped.sum() / grouped.size(), "n_prompts": grouped.size()}).reset_index()
    return _ordered(summary)


def _ordered(summary: "pd.DataFrame") -> "pd.DataFrame":
    summary = summary.copy()
    summary["k"] = summary["k"].astype(int)
    summary["key"] = summary["order"] + "_" + summary["k"].astype(str)
    rank = summary["order"].map({o: i for i, o in enumerate(ORDERS)})
    summary = summary.assign(_rank=rank).sort_values(["_rank", "k"], kind="stable").drop(columns="_rank")
    columns = [c for c in SUMMARY_COLUMNS if c in summary.columns]
    return summary[columns].reset_index(drop=True)


def summary_frame(scores) -> "pd.DataFrame":
    """A summary (DataFrame with key/value or order/k/value columns, or a mapping ``{"top_11": 0.17, ...}``) as the
    standard summary frame: key, order, k, value (+ n_prompts when known), top first, k ascending."""
    import pandas as pd

    if isinstance(scores, Mapping):
        frame = pd.DataFrame({"key": list(scores), "value": [float(v) for v in scores.values()]})
    else:
        frame = pd.DataFrame(scores).copy()
    if "value" not in frame.columns:
        raise ValueError(f"a summary needs a 'value' column; got {list(frame.columns)}")
    if not {"order", "k"} <= set(frame.columns):
        if "key" not in frame.columns:
            raise ValueError(f"a summary needs 'key' or 'order' and 'k' columns; got {list(frame.columns)}")
        parsed = [_KEY.fullmatch(str(key)) for key in frame["key"]]
        bad = [key for key, m in zip(frame["key"], parsed) if m is None]
        if bad:
            raise ValueError(f"keys must look like top_11 or bottom_11, got {bad[0]!r}")
        frame["order"] = [m.group(1) for m in parsed]
        frame["k"] = [int(m.group(2)) for m in parsed]
    frame["value"] = frame["value"].astype(float)
    return _ordered(frame)


# ----------------------------------------------------------------------------------------------- files

def scores_csv_name(experiment_num) -> str:
    """``hp_scores_wo_category_exp_{X}.csv`` (the published name; "wo_category" = the item alone as the text)."""
    return f"hp_scores_wo_category_exp_{experiment_num}.csv"


def per_image_csv_name(experiment_num) -> str:
    return f"hp_scores_per_image_exp_{experiment_num}.csv"


def write_scores_csv(path, summary) -> Path:
    """The published layout: header ``Key,Value``, CRLF line ends, keys ``top_{k}`` for all k ascending then
    ``bottom_{k}``, values with 4 decimals (``0.2200``)."""
    frame = summary_frame(summary)
    if frame["value"].isna().any():
        raise ValueError("the summary has missing (NaN) values")
    path = Path(path)
    with atomic_output(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\r\n")
            writer.writerow(["Key", "Value"])
            writer.writerows([key, f"{value:.4f}"] for key, value in zip(frame["key"], frame["value"]))
    return path


def read_scores_csv(path) -> "pd.DataFrame":
    """A ``Key,Value`` scores CSV (ours or a published one) -> summary frame: key, order, k, value."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [row for row in csv.reader(f) if row]
    if not rows or [c.strip() for c in rows[0]] != ["Key", "Value"]:
        raise ValueError(f"{path} is not a weakening scores CSV (expected the header 'Key,Value')")
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != 2 or not _KEY.fullmatch(row[0]):
            raise ValueError(f"{path}, row {number}: expected 'top_K,VALUE' or 'bottom_K,VALUE', got {','.join(row)!r}")
    try:
        mapping = {key: float(value) for key, value in body}
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    if len(mapping) != len(body):
        raise ValueError(f"{path} has a key more than once")
    return summary_frame(mapping)


def write_per_image_csv(path, per_image: "pd.DataFrame") -> Path:
    """One row per image: experiment, prompt, order, k, seed, text, score (full precision), path."""
    missing = [c for c in PER_IMAGE_COLUMNS if c not in per_image.columns]
    if missing:
        raise ValueError(f"per-image scores lack the columns {missing}")
    with atomic_output(path) as temp:
        per_image[PER_IMAGE_COLUMNS].to_csv(temp, index=False)
    return Path(path)
