#!/usr/bin/env python3
"""Generate images from a trained toy model for known captions and print per-attribute accuracy as JSON.

    python3 toy/sample_eval.py --model runs/toy/model                      # 256 held-out captions, CPU or GPU
    python3 toy/sample_eval.py --model runs/toy/model --split train --n 128 --grid grid.png
    python3 toy/sample_eval.py --model runs/toy/model --two_object_fraction 1.0   # two-object scenes only

Captions name every attribute (``mention="all"``); by default each is a one-object scene whose color-shape pair
was held out of training (hrv_diffusion.toy.data.HELD_OUT). The issue's bar: color and shape >= 0.85 there.
Accuracies are shares of objects (color, shape, size, position) or of images (background); "objects_found" is
the share of images where the evaluator found as many objects as the caption has.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, fraction, nonnegative_float,  # noqa: E402
                                      nonnegative_int, positive_int)
from hrv_diffusion.cli.common import check_outputs, output_file  # noqa: E402


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="a toy diffusers folder (or any card load_pipeline accepts)")
    p.add_argument("--n", type=positive_int, default=256, help="captions, one image each")
    p.add_argument("--split", default="heldout", choices=("heldout", "train", "all"),
                   help="scene split: color-shape pairs held out of training, the training ones, or all")
    p.add_argument("--two_object_fraction", type=fraction, default=0.0, help="fraction of two-object captions")
    p.add_argument("--steps", type=positive_int, default=50, help="PNDM steps")
    p.add_argument("--guidance", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the scenes and latents")
    p.add_argument("--batch_size", type=positive_int, default=64, help="images per call")
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu or cuda")
    p.add_argument("--out", type=output_file, help="also write the JSON here")
    p.add_argument("--grid", help="write the images as one PNG grid here")
    args = p.parse_args(argv)
    check_outputs(args)  # an --out that is a file (a folder): one line, before the model loads
    from hrv_diffusion.core.hub import check_card_files

    check_card_files(args.model)  # a missing folder or download: one line at once, before torch loads

    import torch

    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.evaluate import evaluate_pipeline, image_grid

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pipe = load_pipeline(args.model, dtype="float32", device=device)
    result, images, scenes = evaluate_pipeline(
        pipe, n=args.n, seed=args.seed, split=args.split, two_object_fraction=args.two_object_fraction,
        steps=args.steps, guidance=args.guidance, batch_size=args.batch_size, return_images=True,
        progress=True)
    result = {"model": args.model, "device": device, **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.grid:
        from PIL import Image

        Image.fromarray(image_grid(images)).save(args.grid)
        Path(args.grid).with_suffix(".txt").write_text("\n".join(s["caption"] for s in scenes) + "\n")
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
