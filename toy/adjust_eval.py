#!/usr/bin/env python3
"""SD-HRV on the toy model: a word adjusted toward Color or toward Background, read back by the analytic evaluator
(hrv_diffusion/toy/adjust.py).

    python toy/adjust_eval.py --out docs/toy                 # 3 cases x 64 seeds, the toy HRVs shipped in the package
    python toy/adjust_eval.py --out docs/toy --steps 20      # quicker
    python toy/adjust_eval.py --out docs/toy --variants --name adjust_variants   # factors bounded below at 0

Writes OUT/adjust_results.json (settings, per-case and per-condition rates, every item's readings), updated after
every case.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from hrv_diffusion.cli.common import ArgumentParser, nonnegative_int, positive_int  # noqa: E402
from hrv_diffusion.cli.common import check_outputs, output_folder  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.models import load_pipeline  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.vectors import load_hrv  # noqa: E402
from hrv_diffusion.toy.adjust import CASES, CONDITIONS, VARIANTS, evaluate  # noqa: E402


def write_examples(pipe, hrv, args, path: Path) -> None:
    """Cases side by side (blocks left to right), a row per condition, the first ``args.examples`` items each."""
    import numpy as np
    from PIL import Image

    from hrv_diffusion.apps.adjust import Adjustment, generate_adjusted, side_by_side
    from hrv_diffusion.toy.adjust import items

    blocks = []
    for case in args.cases:
        chunk = items(case, args.examples, args.seed)
        prompts, seeds = [c["prompt"] for c in chunk], [c["seed"] for c in chunk]
        color = generate_adjusted(pipe, prompts, seeds, [Adjustment.sd_hrv(c["word"], "Color", "Background")
                                                         for c in chunk], hrv=hrv, num_inference_steps=args.steps)
        background = generate_adjusted(pipe, prompts, seeds, [Adjustment.sd_hrv(c["word"], "Background", "Color")
                                                              for c in chunk], hrv=hrv, with_standard=False,
                                       num_inference_steps=args.steps)
        blocks.append(side_by_side([color.standard, color.adjusted, background.adjusted]))
        print(case, [c["prompt"] for c in chunk], flush=True)
    gap = np.full((blocks[0].shape[0], 8, 3), 255, np.uint8)
    grid = np.concatenate([x for b in blocks for x in (b, gap)][:-1], axis=1)
    Image.fromarray(grid).resize((grid.shape[1] * 4, grid.shape[0] * 4), Image.NEAREST).save(path)


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES), help="default: all")
    p.add_argument("--n", type=nonnegative_int, default=64,
                   help="items (one seed each) per case, 0: --examples only (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="the first seed (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=50, help="PNDM steps (default: %(default)s)")
    p.add_argument("--batch_size", type=positive_int, default=32, help="items per call (default: %(default)s)")
    p.add_argument("--variants", action="store_true",
                   help="instead of the paper's rule, its variants with the factors bounded below at 0 (min_factor=0)")
    p.add_argument("--name", default="adjust_results", help="JSON file name, without .json (default: %(default)s)")
    p.add_argument("--examples", type=nonnegative_int, default=0,
                   help="also write OUT/adjust_examples.png: the first N items of every case, a row per condition "
                        "(standard, toward Color, toward Background), 4x enlarged (default: none)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--out", type=output_folder, default="docs/toy", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    check_outputs(args)  # an --out that is a file (a folder): one line, before the model loads

    pipe = load_pipeline("toy", device=args.device)
    names = read_concept_set(resolve_description("toy_concepts")).names
    hrv = load_hrv("paper", "toy", names, head_layout(pipe.unet))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    conditions = VARIANTS if args.variants else CONDITIONS
    report = {"model": "toy", "hrv": "shipped toy HRVs (paper)", "n": args.n, "seed": args.seed, "steps": args.steps,
              "device": args.device, "conditions": {k: v and {"weights": {v[0]: 2, v[1]: -1}, **v[2]}
                                                    for k, v in {"standard": None, **conditions}.items()},
              "settings": "conditional half, every evaluation, no clamp, no renormalization", "cases": {}}
    if args.examples:
        write_examples(pipe, hrv, args, out / "adjust_examples.png")
    for case in args.cases if args.n > 0 else []:  # --n 0: the examples only
        start = time.perf_counter()
        result = evaluate(pipe, hrv, case, n=args.n, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                          conditions=conditions)
        result["seconds"] = round(time.perf_counter() - start, 1)
        report["cases"][case] = result
        (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
        for name, rates in result["rates"].items():
            print(f"{case:>16} {name:>18}: " + ", ".join(f"{k} {v:.1%}" for k, v in rates.items()), flush=True)
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
