#!/usr/bin/env python3
"""Color edits on the toy model: P2P-HRV and P2P judged by the analytic evaluator (hrv_diffusion/toy/p2p.py).

    python toy/p2p_eval.py --out docs/toy                 # 64 cases, 50 steps, the toy HRVs shipped in the package
    python toy/p2p_eval.py --out docs/toy --device cuda   # the same on a GPU (fp32)

Writes OUT/p2p_results.json (settings, per-method rates, every case's readings) and OUT/p2p_examples.png (the first
cases: source | P2P | P2P-HRV | target alone, one row each, 4x enlarged).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.models import load_pipeline  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.vectors import load_hrv  # noqa: E402
from hrv_diffusion.toy.p2p import METHODS, color_cases, evaluate_color_edits  # noqa: E402
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int  # noqa: E402
from hrv_diffusion.cli.common import check_outputs, output_folder  # noqa: E402


def example_grid(images: np.ndarray, rows: int, per_case: int, scale: int = 4, gap: int = 2) -> np.ndarray:
    """(rows * per_case, H, W, 3) -> one image, a case per row, white gaps."""
    n, h, w, _ = images.shape
    rows = min(rows, n // per_case)
    grid = np.full((rows * (h + gap) - gap, per_case * (w + gap) - gap, 3), 255, np.uint8)
    for r in range(rows):
        for c in range(per_case):
            grid[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = images[r * per_case + c]
    return grid.repeat(scale, 0).repeat(scale, 1)


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--n", type=positive_int, default=64, help="cases (one seed each) (default: %(default)s)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="scenes and the first seed (default: %(default)s)")
    p.add_argument("--steps", type=positive_int, default=50, help="PNDM steps (default: %(default)s)")
    p.add_argument("--batch_size", type=positive_int, default=64,
                   help="rows per call, 4 per case (default: %(default)s)")
    p.add_argument("--self_max_queries", type=positive_int, default=None,
                   help="self-attention replaced at most at this many queries (default: the model's rule, "
                        "(latent side / 4)^2 = 16: the toy's 4 x 4 layer)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument("--out", type=output_folder, default="docs/toy", help="output folder (default: %(default)s)")
    args = p.parse_args(argv)
    check_outputs(args)  # an --out that is a file (a folder): one line, before the model loads

    pipe = load_pipeline("toy", device=args.device)
    names = read_concept_set(resolve_description("toy_concepts")).names
    hrv = load_hrv("paper", "toy", names, head_layout(pipe.unet))
    cases = color_cases(args.n, args.seed)
    start = time.perf_counter()
    result = evaluate_color_edits(pipe, hrv, cases, seed=args.seed, steps=args.steps, batch_size=args.batch_size,
                                  self_max_queries=args.self_max_queries, progress=True)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = {m.name: m.to_dict() for m in METHODS}
    report = {"model": "toy", "hrv": "shipped toy HRVs (paper)", "concept": "Color", "cases": args.n,
              "seed": args.seed, "steps": args.steps, "self_max_queries": args.self_max_queries or "model default (16)",
              "device": args.device, "seconds": round(seconds, 1), "methods": methods,
              "success": "edited color == target color and the evaluator's shape and position equal the source's",
              "source_as_captioned": result["source_as_captioned"], "rates": result["rates"],
              "per_case": result["cases"]}
    (out / "p2p_results.json").write_text(json.dumps(report, indent=1) + "\n")
    from PIL import Image

    Image.fromarray(example_grid(result["images"], 8, 1 + len(METHODS))).save(out / "p2p_examples.png")
    for name, rates in result["rates"].items():
        print(f"{name:>14}: " + ", ".join(f"{k} {v:.1%}" if k[:4] != "mean" else f"{k} {v:.2f}"
                                          for k, v in rates.items()), flush=True)
    print(f"{args.n} cases in {seconds:.0f} s; source images read as captioned: {result['source_as_captioned']:.1%}")
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
