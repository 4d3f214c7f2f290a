"""Pictures of ordered weakening: the MoRHF vs LeRHF score curves, and image grids (prompt x k) for inspection."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

from hrv_diffusion.apps.weakening_experiments import Experiment

COLORS = {"top": "#FE7773", "bottom": "#5580A0"}  # MoRHF, LeRHF (the paper's)
LABELS = {"top": "MoRHF", "bottom": "LeRHF"}
XLABEL = "The Number of Weakened Head Positions"  # the reference wrote "Weakend"
MIN_SPAN, MIN_RELATIVE_SPAN = 0.01, 0.05  # the y axis spans at least max(0.01, 5% of the largest |score|)


def y_limits(values, min_span: float | None = None) -> tuple[float, float]:
    """The y range of a curve plot: the data's range plus a 10% margin, widened around its middle to at least
    ``min_span`` (default: max(MIN_SPAN, MIN_RELATIVE_SPAN x the largest |value|)), so that a difference of 1e-4
    between scores is drawn as the flat line it is, not as a dip that fills the axis."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if min_span is None:
        min_span = max(MIN_SPAN, MIN_RELATIVE_SPAN * float(np.abs(values).max()))
    span = max((high - low) * 1.2, min_span)
    middle = (low + high) / 2
    return middle - span / 2, middle + span / 2


def plot_weakening_curves(summary, concept: str, path_png, path_pdf=None, drop_k: Sequence[int] = (1,), *,
                          ylabel: str = "CLIP Score", xlabel: str = XLABEL, dpi: int = 150,
                          min_span: float | None = None) -> list[Path]:
    """Plot score vs k for MoRHF (top) and LeRHF (bottom); save a PNG and a PDF; return the paths written.

    ``summary``: a summary frame (``scoring.score_experiment``/``read_scores_csv``) or a mapping
    ``{"top_11": 0.17, ...}``. ``drop_k``: k values left out (the paper drops k = 1; for SDXL also 11).
    ``path_pdf``: default ``path_png`` with the suffix ``.pdf``; pass ``False`` to write no PDF.
    The y axis is the raw mean score (no normalization), as in the paper; it spans at least ``min_span``
    (``y_limits``), so scores that differ by 1e-4 are drawn flat.

    Caption: the curves mean something only for a trained model with its HRV (SD v1.4, SDXL, the toy); the tiny
    random-weight models (tiny-sd, tiny-sd2, tiny-sdxl, tiny-pixart) exercise the code, and their curves are
    meaningless.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hrv_diffusion.apps.weakening_scores import summary_frame

    frame = summary_frame(summary)
    frame = frame[~frame["k"].isin([int(k) for k in drop_k])]
    if frame.empty:
        raise ValueError("nothing to plot: the summary is empty once drop_k is removed")
    fig, ax = plt.subplots(figsize=(9, 6))
    ks = set()
    for order in ("top", "bottom"):
        rows = frame[frame["order"] == order]
        if rows.empty:
            continue
        ks.update(rows["k"])
        ax.plot(rows["k"], rows["value"], marker="o", color=COLORS[order], label=LABELS[order])
    ax.set_xticks(sorted(ks))
    ax.set_ylim(*y_limits(frame["value"], min_span))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(concept)
    ax.legend(loc="upper right")
    fig.tight_layout()
    paths = [Path(path_png)]
    if path_pdf is None:
        paths.append(paths[0].with_suffix(".pdf"))
    elif path_pdf is not False and path_pdf != "":
        paths.append(Path(path_pdf))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return paths


def image_grid(root, exp: Experiment | int, prompt_folders: str | Sequence[str], order: str | Sequence[str],
               k_list: Sequence[int], seed: int, path=None, *, cell: int = 128, label_width: int = 220,
               header: int = 24):
    """A grid of generated images: one row per (prompt folder, order), one column per k; returns the PIL image.

    Images come from ``{root}/exp_{X}/{prompt_folder}/{order}/{order}_{k}/{seed}.png``; a missing one is drawn as
    a grey cell marked "missing". Rows are labelled with the prompt and MoRHF/LeRHF, columns with k. The size is
    (label_width + len(k_list) * cell, header + rows * cell). Saved to ``path`` when given.
    """
    from PIL import Image, ImageDraw, ImageFont

    folder = exp.folder if isinstance(exp, Experiment) else f"exp_{int(exp)}"
    prompts = [prompt_folders] if isinstance(prompt_folders, str) else list(prompt_folders)
    orders = [order] if isinstance(order, str) else list(order)
    for o in orders:
        if o not in LABELS:
            raise ValueError(f"order must be 'top' (MoRHF) or 'bottom' (LeRHF), not {o!r}")
    if not prompts or not k_list:
        raise ValueError("image_grid needs at least one prompt folder and one k")
    rows = [(p, o) for p in prompts for o in orders]
    grid = Image.new("RGB", (label_width + len(k_list) * cell, header + len(rows) * cell), "white")
    draw = ImageDraw.Draw(grid)
    font = ImageFont.load_default()
    for j, k in enumerate(k_list):
        draw.text((label_width + j * cell + 4, 4), f"k = {k}", fill="black", font=font)
    exp_dir = Path(root) / folder
    chars = max(8, label_width // 7)
    for i, (prompt, o) in enumerate(rows):
        top = header + i * cell
        label = "\n".join(textwrap.wrap(prompt, chars)[:6] + [f"{LABELS[o]} ({o}), seed {seed}"])
        draw.multiline_text((4, top + 4), label, fill="black", font=font, spacing=2)
        for j, k in enumerate(k_list):
            left = label_width + j * cell
            image_path = exp_dir / prompt / o / f"{o}_{k}" / f"{seed}.png"
            if image_path.is_file():
                with Image.open(image_path) as image:
                    grid.paste(image.convert("RGB").resize((cell, cell), Image.Resampling.BICUBIC), (left, top))
            else:
                draw.rectangle((left, top, left + cell - 1, top + cell - 1), fill=(200, 200, 200))
                draw.text((left + 4, top + cell // 2 - 6), "missing", fill="black", font=font)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        grid.save(path)
    return grid
