"""Pictures and tables of HRVs: what the paper's ``hrv_visualization.ipynb`` shows, for any model.

Computing and drawing are separate: ``layer_grid``, ``cosine_similarity``, ``concept_similarity``,
``timestep_similarity`` and ``top_heads`` return arrays and tables; the ``plot_*`` functions draw them and write
each figure as PNG and PDF (``save_figure``).

- **Per-concept heatmaps** (``plot_concept_heatmaps``): one panel per concept; one row per CA layer (down, mid, up
  in the published order), that layer's heads as columns. A UNet whose layers have different head counts (SDXL:
  10 or 20) gets rows of different lengths: cells past a layer's last head are left blank, never filled.
- **Concept similarity** (``plot_similarity``): the C x C cosine similarity of the concepts' HRVs, with their names.
- **Timestep similarity**: the per-timestep HRVs (T, C, H) averaged over concepts, then the T x T cosine similarity
  of those vectors (the reference drew the first 50 of SD v1.4's 51 evaluations; we draw all T).
- **Top heads** (``top_heads``, ``write_top_heads``): each concept's k most relevant heads, as CSV and markdown.

``plot_hrv_heatmap`` (all concepts x all heads in one image) stays for ``hrv-demo``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hrv_diffusion.core.heads import PLACES, parse_label
from hrv_diffusion.io import atomic_output, write_text

FORMATS = ("png", "pdf")


# ----------------------------------------------------------------------------------------------- computing

@dataclass(frozen=True)
class LayerRow:
    """One CA layer: its place, index within the place, and the HRV columns of its heads (head 0 first)."""

    place: str
    layer: int
    columns: tuple[int, ...]

    @property
    def name(self) -> str:
        return f"{self.place} {self.layer}"


def layer_rows(labels) -> list[LayerRow]:
    """The CA layers of ``labels`` (published head labels) in the published order: place, layer, then head."""
    groups: dict[tuple[str, int], dict[int, int]] = {}
    for column, label in enumerate(labels):
        place, layer, head = parse_label(label)
        groups.setdefault((place, layer), {})[head] = column
    rows = []
    for (place, layer) in sorted(groups, key=lambda key: (PLACES.index(key[0]), key[1])):
        heads = groups[(place, layer)]
        if sorted(heads) != list(range(len(heads))):
            raise ValueError(f"{place} layer {layer}: heads {sorted(heads)} are not 0..{len(heads) - 1}")
        rows.append(LayerRow(place, layer, tuple(heads[h] for h in range(len(heads)))))
    return rows


def layer_grid(values, labels) -> np.ndarray:
    """(H,) values of one concept -> (layers, max heads) float array; cells past a layer's heads are NaN."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(labels),):
        raise ValueError(f"expected {len(labels)} values (one per head label), got shape {values.shape}")
    rows = layer_rows(labels)
    grid = np.full((len(rows), max(len(r.columns) for r in rows)), np.nan)
    for i, row in enumerate(rows):
        grid[i, :len(row.columns)] = values[list(row.columns)]
    return grid


def cosine_similarity(vectors) -> np.ndarray:
    """(N, D) -> (N, N) cosine similarities; an all-zero vector has similarity 0 with everything."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"expected (N, D) vectors, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)  # (N, 1)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    return unit @ unit.T


def concept_similarity(hrv) -> np.ndarray:
    """(C, H) HRV -> (C, C) cosine similarity of the concepts."""
    return cosine_similarity(hrv)


def timestep_similarity(per_timestep) -> np.ndarray:
    """(T, C, H) per-timestep HRVs -> (T, T): the mean over concepts at each evaluation, then cosine similarity."""
    per_timestep = np.asarray(per_timestep, dtype=np.float64)
    if per_timestep.ndim != 3:
        raise ValueError(f"expected per-timestep HRVs of shape (T, C, H), got {per_timestep.shape}")
    return cosine_similarity(per_timestep.mean(axis=1))  # (T, H) -> (T, T)


def top_heads(hrv, labels, concepts, k: int = 10):
    """A table of each concept's k most relevant heads (ties by head index): concept, rank (1 = most relevant),
    head, place, layer, head_in_layer, head_index, value (the HRV element; the mean over heads is 1)."""
    import pandas as pd

    from hrv_diffusion.hrv.files import head_order

    hrv = np.asarray(hrv)
    if hrv.shape != (len(concepts), len(labels)):
        raise ValueError(f"HRV of shape {hrv.shape} for {len(concepts)} concepts and {len(labels)} heads")
    k = min(int(k), len(labels))
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    rows = []
    for c, concept in enumerate(concepts):
        for rank, g in enumerate(head_order(hrv[c], "top")[:k], start=1):
            place, layer, head = parse_label(labels[g])
            rows.append((concept, rank, labels[g], place, layer, head, int(g), float(hrv[c, g])))
    return pd.DataFrame(rows, columns=["concept", "rank", "head", "place", "layer", "head_in_layer", "head_index",
                                       "value"])


def markdown_table(frame, digits: int = 3) -> str:
    """A pipe table of ``frame`` (no dependency on tabulate)."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "|".join("---" for _ in frame.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def write_top_heads(frame, stem: str | os.PathLike) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` (one section per concept), atomically; returns both paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text(frame.to_csv(index=False), csv_path)
    parts = [f"# The {frame['rank'].max()} most relevant CA heads of each concept\n"]
    for concept, rows in frame.groupby("concept", sort=False):
        parts.append(f"\n## {concept}\n\n" + markdown_table(rows[["rank", "head", "value"]]))
    write_text("".join(parts), md_path)
    return [csv_path, md_path]


# ----------------------------------------------------------------------------------------------- drawing

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str | os.PathLike, formats=FORMATS, dpi: int = 150) -> list[Path]:
    """Write ``fig`` as ``stem.<format>`` for each format (atomically), close it, return the paths."""
    paths = []
    for fmt in formats:
        path = Path(stem).with_suffix(f".{fmt}")
        with atomic_output(path) as temp:
            fig.savefig(temp, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(path)
    _pyplot().close(fig)
    return paths


def _layer_ticks(ax, rows: list[LayerRow], fontsize: float, every: int):
    """Y ticks naming layers (every ``every``-th and each place's first), lines between places."""
    ticks = [i for i, r in enumerate(rows) if r.layer % every == 0]
    ax.set_yticks(ticks, [rows[i].name for i in ticks], fontsize=fontsize)
    for i in range(1, len(rows)):
        if rows[i].place != rows[i - 1].place:
            ax.axhline(i - 0.5, color="black", linewidth=0.8)


def draw_concept_heatmap(ax, values, labels, title: str, vmax=None, fontsize: float = 7, cmap: str = "Blues"):
    """One concept's heads on ``ax``: rows = CA layers, columns = heads; blank cells = no such head."""
    import matplotlib

    rows = layer_rows(labels)
    grid = np.ma.masked_invalid(layer_grid(values, labels))  # (layers, max heads)
    colors = matplotlib.colormaps[cmap].with_extremes(bad="white")
    image = ax.imshow(grid, cmap=colors, vmin=0, vmax=vmax, interpolation="nearest", aspect="auto")
    width = grid.shape[1]
    if len({len(r.columns) for r in rows}) > 1:  # outline each layer's real extent
        for i, row in enumerate(rows):
            ax.plot([len(row.columns) - 0.5] * 2, [i - 0.5, i + 0.5], color="0.6", linewidth=0.4)
    step = 1 if width <= 10 else 5
    ax.set_xticks(range(0, width, step), [str(h) for h in range(0, width, step)], fontsize=fontsize)
    _layer_ticks(ax, rows, fontsize, every=1 if len(rows) <= 20 else 5)
    ax.set_title(title, fontsize=fontsize + 2)
    return image


def plot_concept_heatmaps(hrv, labels, concepts, stem, columns: int | None = None, shared_scale: bool = False,
                          formats=FORMATS) -> list[Path]:
    """All concepts' heatmaps (``draw_concept_heatmap``) in one figure, one panel each, with a colorbar each
    (or one shared colorbar with ``shared_scale``). Returns the files written."""
    plt = _pyplot()
    hrv = np.asarray(hrv)
    num = len(concepts)
    if hrv.shape != (num, len(labels)):
        raise ValueError(f"HRV of shape {hrv.shape} for {num} concepts and {len(labels)} heads")
    rows = layer_rows(labels)
    width = max(len(r.columns) for r in rows)
    columns = columns or min(num, 7)
    lines = -(-num // columns)
    panel_w = 1.2 + 0.16 * width
    panel_h = 1.0 + 0.13 * len(rows)
    fig, axes = plt.subplots(lines, columns, figsize=(columns * panel_w + 1, lines * panel_h + 0.8), squeeze=False)
    vmax = float(hrv.max()) if shared_scale else None
    for i, ax in enumerate(axes.flat):
        if i >= num:
            ax.axis("off")
            continue
        image = draw_concept_heatmap(ax, hrv[i], labels, concepts[i], vmax=vmax)
        if i % columns == 0:
            ax.set_ylabel("CA layer", fontsize=8)
        if i >= num - columns:
            ax.set_xlabel("head", fontsize=8)
        if not shared_scale:
            fig.colorbar(image, ax=ax, fraction=0.08, pad=0.03, shrink=0.6).ax.tick_params(labelsize=6)
    if shared_scale:
        fig.colorbar(image, ax=axes.ravel().tolist(), fraction=0.02, label="HRV value")
    fig.suptitle(f"HRVs of {num} concepts: one row per CA layer, one column per head "
                 f"(color: HRV value; mean over heads = 1)", fontsize=11)
    if not shared_scale:
        fig.tight_layout(rect=(0, 0, 1, 0.97))
    return save_figure(fig, stem, formats)


def plot_similarity(matrix, stem, title: str, axis_label: str, tick_labels=None, vmin=None, vmax=None,
                    formats=FORMATS) -> list[Path]:
    """A square similarity matrix as a heatmap with a colorbar; ``tick_labels`` name rows and columns (else
    every ~10th index is ticked)."""
    plt = _pyplot()
    matrix = np.asarray(matrix)
    n = matrix.shape[0]
    size = 6 if tick_labels is None else max(6.0, 2.5 + 0.17 * n)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(matrix, cmap="Blues", vmin=vmin, vmax=vmax, interpolation="nearest")
    if tick_labels is not None:
        ax.set_xticks(range(n), tick_labels, rotation=90, fontsize=7)
        ax.set_yticks(range(n), tick_labels, fontsize=7)
    else:
        step = max(1, round(n / 10))
        ax.set_xticks(range(0, n, step))
        ax.set_yticks(range(0, n, step))
    ax.set_xlabel(axis_label)
    ax.set_ylabel(axis_label)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="cosine similarity")
    return save_figure(fig, stem, formats)


def plot_concept_similarity(hrv, concepts, stem, formats=FORMATS) -> list[Path]:
    return plot_similarity(concept_similarity(hrv), stem, f"Cosine similarity of the HRVs of {len(concepts)} concepts",
                           "concept", tick_labels=list(concepts), vmin=0, vmax=1, formats=formats)


def plot_timestep_similarity(per_timestep, stem, formats=FORMATS) -> list[Path]:
    matrix = timestep_similarity(per_timestep)
    return plot_similarity(matrix, stem, f"Cosine similarity of the {len(matrix)} per-evaluation HRVs\n"
                           "(mean over concepts)", "UNet evaluation (0 = first, noisiest)", formats=formats)


def plot_hrv_heatmap(hrv: np.ndarray, labels: list[str], concept_names: list[str], path: str | Path,
                     title: str = "Head Relevance Vectors"):
    """Save ``hrv`` (C, H) as one concepts x heads heatmap (PNG or PDF by suffix), layers marked; returns the path."""
    plt = _pyplot()
    n_concepts, n_heads = hrv.shape
    fig, ax = plt.subplots(figsize=(min(4 + n_heads / 10, 30), 2 + n_concepts / 4))
    image = ax.imshow(hrv, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(n_concepts), concept_names, fontsize=7)
    layers = [parse_label(label)[:2] for label in labels]
    starts = [g for g in range(n_heads) if g == 0 or layers[g] != layers[g - 1]]
    for g in starts[1:]:
        ax.axvline(g - 0.5, color="white", linewidth=0.4)
    ax.set_xticks(starts, [f"{p} {i}" for p, i in (layers[g] for g in starts)], rotation=90, fontsize=6)
    ax.set_xlabel("CA layer (heads in published order)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="relevance (each row sums to H)")
    fig.tight_layout()
    with atomic_output(path) as temp:
        fig.savefig(temp, format=Path(path).suffix.lstrip(".") or "png", dpi=150)
    plt.close(fig)
    return Path(path)


def visualize(hrv, labels, concepts, out_dir, per_timestep=None, k: int = 10, formats=FORMATS,
              shared_scale: bool = False) -> list[Path]:
    """Every picture and table into ``out_dir``: concept_heatmaps, concept_similarity, timestep_similarity (when
    ``per_timestep`` is given), top_heads.csv/.md. Returns the files written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = plot_concept_heatmaps(hrv, labels, concepts, out / "concept_heatmaps", shared_scale=shared_scale,
                                  formats=formats)
    paths += plot_concept_similarity(hrv, concepts, out / "concept_similarity", formats=formats)
    if per_timestep is not None:
        paths += plot_timestep_similarity(per_timestep, out / "timestep_similarity", formats=formats)
    paths += write_top_heads(top_heads(hrv, labels, concepts, k), out / "top_heads")
    return paths
