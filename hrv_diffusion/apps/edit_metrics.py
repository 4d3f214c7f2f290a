"""Editing metrics (the reference computes none): does the edited image follow the target prompt, and does it keep
what the edit should not touch?

Per edited image, against its source image (same seed):

- ``clip_target``: cosine of CLIP(edited image) and CLIP(target prompt); ``clip_source_target`` is the same for
  the source image, the value the edit starts from. CLIP as in the weakening scorer (``ClipScorer``: open_clip
  ViT-H-14 laion2b_s32b_b79k, fp32, raw cosine).
- ``clip_direction``: CLIP directional similarity, the cosine of the image change and the text change,
  ``(I_edit - I_src) . (T_tgt - T_src)`` of unit-normalized embeddings (StyleGAN-NADA, InstructPix2Pix).
- ``psnr_unedited``, ``ssim_unedited``: the source image kept outside the swapped word's region (``masks/``,
  written by the runs: the source row's cross-attention maps of the swapped word, as P2P's local blend computes
  its mask). PSNR over the kept pixels of the 8-bit RGB images, 100 dB for identical regions. SSIM (Wang et al.
  2004: Gaussian window 11, sigma 1.5, K1 0.01, K2 0.03, L 255, per RGB channel) on the valid part of the map,
  averaged over the kept pixels; ``psnr_image``/``ssim_image`` are the same over the whole image.
- ``unedited_fraction``: the share of pixels outside the region.

A structure distance (DINO-ViT self-similarity) is not computed: no such model is available offline here.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from hrv_diffusion.apps.output_paths import safe_folder_name
from hrv_diffusion.apps.p2p_runs import MANIFEST, MASK_FOLDER, RESERVED, SOURCE_FOLDER, pair_folder
from hrv_diffusion.errors import UserError
from hrv_diffusion.io import atomic_output, read_rgb

RERUN = "the P2P run (p2p_benchmark.py, or p2p_hrv.py with the same flags)"

PSNR_CAP = 100.0
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03
METRICS = ("clip_target", "clip_source_target", "clip_direction", "psnr_unedited", "ssim_unedited", "psnr_image",
           "ssim_image", "unedited_fraction")
PER_IMAGE_COLUMNS = ["set", "concept", "method", "source_prompt", "target_prompt", "target_token", "seed", *METRICS,
                     "path"]
SUMMARY_COLUMNS = ["set", "concept", "method", "images", *METRICS]


# ------------------------------------------------------------------------------------------------ pixels

def psnr(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> float:
    """PSNR in dB of two (H, W, 3) uint8 images over the pixels ``keep`` (H, W) bool (all if None); NaN if none
    is kept, ``PSNR_CAP`` if they are equal there."""
    diff = a.astype(np.float64) - b.astype(np.float64)  # (H, W, 3)
    if keep is not None:
        diff = diff[keep]
    if diff.size == 0:
        return math.nan
    mse = float(np.mean(diff ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * math.log10(255.0 ** 2 / mse))


def _gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g[:, None] * g[None, :]  # (size, size)


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The SSIM map of two (H, W, 3) uint8 images, mean over channels, valid part only: (H - 10, W - 10)."""
    if a.shape != b.shape or a.ndim != 3:
        raise ValueError(f"two (H, W, 3) images of one shape are needed, got {a.shape} and {b.shape}")
    if min(a.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {a.shape[:2]}")
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1)[:, None]  # (3, 1, H, W)
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1)[:, None]
    window = _gaussian_window()[None, None]
    blur = lambda z: F.conv2d(z, window)  # noqa: E731  valid: (3, 1, H-10, W-10)
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = (SSIM_K1 * 255) ** 2, (SSIM_K2 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return s.mean(dim=0)[0].numpy()  # (H-10, W-10)


def ssim(a: np.ndarray, b: np.ndarray, keep: np.ndarray | None = None) -> float:
    """Mean SSIM over the valid map positions whose center pixel is kept (NaN if none)."""
    values = ssim_map(a, b)
    if keep is not None:
        r = SSIM_WINDOW // 2
        values = values[keep[r : keep.shape[0] - r, r : keep.shape[1] - r]]
    return float(values.mean()) if values.size else math.nan


# ------------------------------------------------------------------------------------------------ CLIP

def clip_image_embeddings(scorer, images) -> torch.Tensor:
    """(n, D) unit-normalized CLIP embeddings of PIL images with a ``ClipScorer``'s model and preprocess."""
    out = []
    for start in range(0, len(images), scorer.batch_size):
        pixels = torch.stack([scorer.preprocess(im.convert("RGB")) for im in images[start : start + scorer.batch_size]])
        with torch.inference_mode():
            features = scorer.model.encode_image(pixels.to(scorer.device, torch.float32)).float()
        out.append(F.normalize(features, dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def clip_text_embeddings(scorer, texts: list[str]) -> torch.Tensor:
    """(n, D) unit-normalized CLIP text embeddings."""
    with torch.inference_mode():
        tokens = scorer.tokenizer(list(texts)).to(scorer.device)
        return F.normalize(scorer.model.encode_text(tokens).float(), dim=-1).cpu()


def clip_metrics(scorer, edited, sources, source_texts, target_texts) -> dict[str, np.ndarray]:
    """clip_target, clip_source_target and clip_direction for parallel lists of images and prompts."""
    e, s = clip_image_embeddings(scorer, edited), clip_image_embeddings(scorer, sources)
    texts = list(dict.fromkeys([*source_texts, *target_texts]))
    table = dict(zip(texts, clip_text_embeddings(scorer, texts)))
    ts = torch.stack([table[t] for t in source_texts])
    tt = torch.stack([table[t] for t in target_texts])
    return {"clip_target": (e * tt).sum(-1).double().numpy(),
            "clip_source_target": (s * tt).sum(-1).double().numpy(),
            "clip_direction": F.cosine_similarity(e - s, tt - ts, dim=-1).double().numpy()}


# ------------------------------------------------------------------------------------------------ a tree

def _rgb(path: Path) -> np.ndarray:
    return np.asarray(read_rgb(path, RERUN))


def find_edits(exp_dir) -> list[dict]:
    """Every edited image of an experiment folder, with its manifest's facts and its source and mask paths."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise UserError(f"no folder {exp_dir}: run applications/p2p_hrv.py or p2p_benchmark.py first")
    found = []
    for method_dir in sorted(p for p in exp_dir.iterdir() if p.is_dir() and p.name not in RESERVED):
        for pair_dir in sorted(p for p in method_dir.iterdir() if p.is_dir()):
            manifest_path = pair_dir / MANIFEST
            if not manifest_path.is_file():
                continue
            m = json.loads(manifest_path.read_text())
            if m.get("kind") != "edit":
                continue
            source, target = m["source_prompt"], m["target_prompt"]
            for image in sorted(pair_dir.glob("*.png"), key=lambda p: (len(p.stem), p.stem)):
                seed = image.stem
                found.append({
                    "set": m.get("set", ""), "concept": m.get("concept") or m["method"].get("concept") or "",
                    "method": method_dir.name, "source_prompt": source, "target_prompt": target,
                    "target_token": m.get("target_token") or "", "seed": int(seed) if seed.isdigit() else seed,
                    "path": image, "source": exp_dir / SOURCE_FOLDER / safe_folder_name(source) / f"{seed}.png",
                    "mask": exp_dir / MASK_FOLDER / pair_folder(source, target) / f"{seed}.png"})
    if not found:
        raise UserError(f"{exp_dir} holds no edited images with a {MANIFEST}")
    return found


def score_edits(exp_dir, scorer, chunk_size: int = 64, progress=None) -> tuple[list[dict], list[dict]]:
    """(per-image rows, per (set, method) rows) of every edited image under ``exp_dir`` (see the module docstring)."""
    exp_dir = Path(exp_dir)
    edits = find_edits(exp_dir)
    missing = [e["source"] for e in edits if not e["source"].is_file()]
    if missing:
        raise UserError(f"{len(missing)} source images are missing (e.g. {missing[0]}): finish the run first")
    rows = []
    for start in range(0, len(edits), chunk_size):
        chunk = edits[start : start + chunk_size]
        edited = [read_rgb(e["path"], RERUN) for e in chunk]
        sources = [read_rgb(e["source"], RERUN) for e in chunk]
        clip = clip_metrics(scorer, edited, sources, [e["source_prompt"] for e in chunk],
                            [e["target_prompt"] for e in chunk])
        for i, e in enumerate(chunk):
            a, b = np.asarray(edited[i]), np.asarray(sources[i])
            keep = ~(_rgb(e["mask"])[..., 0] > 127) if e["mask"].is_file() else None
            row = {k: e[k] for k in PER_IMAGE_COLUMNS if k in e and k != "path"}
            row.update({k: float(v[i]) for k, v in clip.items()})
            row.update(psnr_image=psnr(a, b), ssim_image=ssim(a, b),
                       psnr_unedited=psnr(a, b, keep) if keep is not None else math.nan,
                       ssim_unedited=ssim(a, b, keep) if keep is not None else math.nan,
                       unedited_fraction=float(keep.mean()) if keep is not None else math.nan,
                       path=e["path"].relative_to(exp_dir).as_posix())
            rows.append(row)
        if progress is not None:
            progress.update(len(chunk))
    return rows, summarize(rows)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (set, method): the number of images and the mean of each metric (NaNs left out)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["set"], row["concept"], row["method"]), []).append(row)
    out = []
    for (name, concept, method), members in groups.items():
        summary = {"set": name, "concept": concept, "method": method, "images": len(members)}
        for metric in METRICS:
            values = np.array([m[metric] for m in members], dtype=np.float64)
            summary[metric] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        out.append(summary)
    return out


def write_csv(path, rows: list[dict], columns: list[str]) -> Path:
    path = Path(path)
    with atomic_output(path) as temp:
        with open(temp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return path
