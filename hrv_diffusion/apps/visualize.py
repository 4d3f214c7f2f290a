"""Pictures of HRVs: a concepts x heads heatmap with the CA layers marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_hrv_heatmap(hrv: np.ndarray, labels: list[str], concept_names: list[str], path: str | Path,
                     title: str = "Head Relevance Vectors"):
    """Save ``hrv`` (C, H) as a heatmap (PNG or PDF by suffix); returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hrv_diffusion.core.heads import parse_label

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
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return Path(path)
