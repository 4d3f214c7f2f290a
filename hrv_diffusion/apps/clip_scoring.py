"""Scoring ordered-weakening images: image-text similarity per image, averaged as the paper did.

Images are read from the generation layout ``{root}/exp_{X}/{prompt_folder}/{order}/{order}_{k}/{seed}.png``
(``order`` in top = MoRHF, bottom = LeRHF). For each image the scorer compares it with the CLIP text of its prompt
folder (``experiments.clip_text_for``: the concept item alone, e.g. "cubist", not the prompt).

- per (prompt folder, order, k): the mean over seeds;
- per key ``{order}_{k}``: the sum over prompt folders / the number of prompt folders.

``write_scores_csv`` writes the published ``hp_scores_wo_category_exp_{X}.csv`` (``Key,Value``, CRLF, 4 decimals);
``write_per_image_csv`` a tidy CSV with one row per image.

Any object with ``score(images, texts) -> np.ndarray`` is a scorer (``Scorer``); ``ClipScorer`` is the paper's
(open_clip ViT-H-14 laion2b_s32b_b79k, fp32, raw cosine similarity).
"""
from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from hrv_diffusion.apps.weakening_experiments import Experiment, clip_text_for, experiment
from hrv_diffusion.hrv.shards import atomic_output
from hrv_diffusion.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from PIL import Image

ORDERS = ("top", "bottom")  # MoRHF, LeRHF
DEFAULT_SEEDS = (10, 20, 30)
SUMMARY_COLUMNS = ["key", "order", "k", "value", "n_prompts"]
PER_IMAGE_COLUMNS = ["experiment", "prompt", "order", "k", "seed", "text", "score", "path"]
_KEY = re.compile(r"^(top|bottom)_(\d+)$")


# ----------------------------------------------------------------------------------------------- scorers

@runtime_checkable
class Scorer(Protocol):
    """Scores images against texts: ``score(images, texts)[i]`` compares ``images[i]`` with ``texts[i]``."""

    def score(self, images: "list[Image.Image]", texts: list[str]) -> np.ndarray:
        ...


class ClipWeightsUnavailable(UserError):
    """The CLIP weights cannot be found offline (or downloaded); the message says how to provide them."""


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".bin", ".pt", ".pth", ".safetensors"))


def _weights_help(model_name: str, pretrained: str | None, cause: str) -> str:
    hub = ""
    try:
        import open_clip

        hub = (open_clip.get_pretrained_cfg(model_name, pretrained or "") or {}).get("hf_hub", "").rstrip("/")
    except Exception:  # noqa: BLE001 - only used to improve the message
        pass
    where = f" (Hugging Face repo {hub})" if hub else ""
    return (
        f"CLIP weights for model {model_name!r}, pretrained {pretrained!r}{where} are not available ({cause}). "
        "Provide them in one of three ways: "
        "(1) the Hugging Face cache: on a machine with internet run "
        f"`python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
        f"pretrained='{pretrained}')\"` and copy its cache (~/.cache/huggingface, or $HF_HOME) to this machine; "
        "(2) an open_clip cache folder holding the downloaded file: pass cache_dir=... (--clip_cache_dir); "
        "(3) a local checkpoint file: pretrained=/path/to/open_clip_pytorch_model.bin (--clip_pretrained "
        "/path/to/open_clip_pytorch_model.bin), keeping the model name (--clip_model) of its architecture."
    )


_MISSING_WEIGHTS = ("failed to download", "not a known tag", "cannot find the requested files", "locate the file",
                    "no such file", "offline", "connection")


class ClipScorer:
    """The paper's CLIP score: the raw cosine similarity of the normalized image and text embeddings.

    No x100 scaling, no clamping at 0; the model runs in fp32 with its own preprocess (ViT-H-14: resize 224
    bicubic, center crop) and tokenizer. Text embeddings are cached per text.

    ``pretrained`` is an open_clip tag (``laion2b_s32b_b79k``) or a local checkpoint path. When the weights
    cannot be found offline, ``ClipWeightsUnavailable`` says how to provide them. ``open_clip`` is imported here
    only, so the rest of the package works without it.
    """

    def __init__(self, model_name: str = "ViT-H-14", pretrained: str | None = "laion2b_s32b_b79k",
                 device: str | None = None, batch_size: int = 32, cache_dir: str | None = None):
        try:
            import open_clip
        except ImportError as error:
            raise ImportError("ClipScorer needs open_clip: pip install 'hrv-diffusion[clip]' "
                              "(open_clip_torch and torchvision)") from error
        device = _checked_device(device)
        pretrained = os.fspath(pretrained) if pretrained else None
        if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise ClipWeightsUnavailable(_weights_help(model_name, pretrained, f"no file {pretrained}"))
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, precision="fp32", device=device, cache_dir=cache_dir)
            tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        except (RuntimeError, OSError, ValueError) as error:  # FileNotFoundError and hub errors are OSError/Runtime
            text = str(error)
            if text.startswith("Model config for"):
                raise ValueError(f"unknown CLIP model {model_name!r} (open_clip.list_models() lists the known ones; "
                                 "hf-hub:ORG/REPO and local-dir:/path also work)") from error
            if any(marker in text.lower() for marker in _MISSING_WEIGHTS):
                cause = " ".join(text.split())
                cause = cause if len(cause) <= 240 else cause[:240].rsplit(" ", 1)[0] + " ..."
                raise ClipWeightsUnavailable(_weights_help(model_name, pretrained, cause)) from error
            raise
        self._setup(model, preprocess, tokenizer, device, batch_size)
        self.model_name, self.pretrained = model_name, pretrained

    @classmethod
    def from_model(cls, model, preprocess, tokenizer, device: str | None = None, batch_size: int = 32) -> "ClipScorer":
        """Wrap a CLIP built in code: ``model`` with ``encode_image``/``encode_text``, ``preprocess(PIL) -> (3, h, w)``
        tensor, ``tokenizer(list[str]) -> (n, L)`` token ids."""
        scorer = cls.__new__(cls)
        scorer._setup(model, preprocess, tokenizer, _checked_device(device), batch_size)
        scorer.model_name, scorer.pretrained = type(model).__name__, None
        return scorer

    def _setup(self, model, preprocess, tokenizer, device, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = device
        self.model = model.to(device).float().eval()
        self.preprocess, self.tokenizer, self.batch_size = preprocess, tokenizer, int(batch_size)
        self._text_cache: dict = {}

    def _text_embeddings(self, texts: Sequence[str]):
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(new), self.batch_size):
            chunk = new[start : start + self.batch_size]
            with torch.inference_mode():
                tokens = self.tokenizer(chunk).to(self.device)  # (n, L)
                features = self.model.encode_text(tokens).float()  # (n, D)
                features = features / features.norm(dim=-1, keepdim=True)
            for text, row in zip(chunk, features):
                self._text_cache[text] = row
        return torch.stack([self._text_cache[t] for t in texts])  # (n, D)

    def score(self, images: "list[Image.Image]", texts: list[str]) -> np.ndarray:
        """Cosine similarity of ``images[i]`` and ``texts[i]``: (n,) float64 (computed in fp32)."""
        import torch

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: one text per image is needed")
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images[start:stop]])
            with torch.inference_mode():
                features = self.model.encode_image(pixels.to(self.device, torch.float32)).float()  # (b, D)
                features = features / features.norm(dim=-1, keepdim=True)
                text = self._text_embeddings(texts[start:stop]).to(features.device)  # (b, D)
                out[start:stop] = (features * text).sum(dim=-1).cpu().numpy()
        return out


def _checked_device(device) -> str:
    """``device`` checked (``--device cuda`` without CUDA is a one-line UserError), else the default device."""
    from hrv_diffusion.core.device import resolve_device

    return resolve_device(str(device)) if device else _default_device()


def _default_device() -> str:
    from hrv_diffusion.core.device import resolve_device

    return resolve_device(None)


# ----------------------------------------------------------------------------------------------- scoring a tree

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
    exp_dir = root / exp.folder
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
        found = sorted({k for p in prompts for ks in find_k_values(exp_dir / p).values() for k in ks})
        if not found:
            raise FileNotFoundError(f"no {{order}}/{{order}}_{{k}} folders under the prompt folders of {exp_dir}")
        k_list = found
    k_list = sorted({int(k) for k in k_list})

    rows, missing = [], []
    for prompt in prompts:
        for order in ORDERS:
            for k in k_list:
                for seed in seeds:
                    path = exp_dir / prompt / order / f"{order}_{k}" / f"{seed}.png"
                    if not path.is_file():
                        missing.append(path)
                    rows.append((exp.number, prompt, order, k, seed, texts[prompt], np.nan, path))
    if missing:
        shown = "; ".join(str(p) for p in missing[:5])
        raise FileNotFoundError(f"{len(missing)} of {len(rows)} images are missing under {exp_dir} (for example "
                                f"{shown}); finish the generation or pass the k list and seeds that exist")

    scores = np.empty(len(rows), dtype=np.float64)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), unit="image", desc=f"scoring exp {exp.number}")
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        images = [_load_rgb(row[-1]) for row in chunk]
        values = np.asarray(scorer.score(images, [row[5] for row in chunk]), dtype=np.float64)
        if values.shape != (len(chunk),):
            raise ValueError(f"the scorer returned shape {values.shape} for {len(chunk)} images")
        scores[start : start + len(chunk)] = values
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()

    per_image = pd.DataFrame(rows, columns=PER_IMAGE_COLUMNS)
    per_image["score"] = scores
    per_image["path"] = [p.relative_to(root).as_posix() for p in per_image["path"]]
    return summarize(per_image), per_image


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
