"""Every application at a non-square, non-default size on the tiny random-weight models: it runs through its
script and writes images of that size. (The toy's 48 x 32 runs, and the maps and windows against direct
computations at that size, are in each application's own tests and tests/core.)"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from test_app_images import load_recorder

recorder = load_recorder()
GENERATING = [app for app in recorder.APPS if app.changed]  # every application that writes images
SIZE = ("--height", "48", "--width", "32")
# What the tiny models need besides: fewer heads to weaken (22 and 48 CA heads); standard A&E's default map size
# (latent / 4 = 6, SD's 16 at 512) names no CA layer of theirs, and the command says to pick one: 12 x 8.
FOR_TINY = {"weakening": ("--heads_to_be_perturbed", "0", "5"), "attend_excite_standard": ("--attention_res", "12")}


@pytest.fixture(scope="module")
def hrv_files(tmp_path_factory):
    """A random HRV over the toy's five concepts for each tiny model, with its head labels."""
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import load_pipeline

    folder = tmp_path_factory.mktemp("hrvs")
    files = {}
    for card in ("tiny-sd", "tiny-sdxl"):
        labels = head_layout(load_pipeline(card).unet).labels
        values = np.random.default_rng(0).random((5, len(labels))).astype(np.float32)
        values *= len(labels) / values.sum(1, keepdims=True)  # rows sum to H, as an HRV's do
        path = folder / f"category_vectors_{card}.npy"
        np.save(path, values)
        np.save(folder / f"head_index_{card}.npy", np.array(labels))
        files[card] = path
    return files


@pytest.mark.parametrize("card", ["tiny-sd", "tiny-sdxl"])
@pytest.mark.parametrize("app", GENERATING, ids=[app.name for app in GENERATING])
def test_runs_at_48_by_32(app, card, hrv_files, tmp_path):
    out = tmp_path / app.name
    extra = ("--model_card", card, "--description", "toy_concepts", "--hrv", str(hrv_files[card]), *SIZE,
             *FOR_TINY.get(app.name, ()))
    done = recorder.run_app(app, out, *extra)
    assert done.returncode == 0, done.stderr[-2000:]
    images = [p for p in out.rglob("*.png") if p.parent.name not in ("masks",) and p.stem.isdigit()]
    assert images, f"{app.name} wrote no per-seed image"
    for path in images:
        with Image.open(path) as image:
            assert image.size == (32, 48), path  # (width, height)
