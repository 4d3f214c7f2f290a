#!/usr/bin/env python3
"""Ordered weakening on a toy model: MoRHF vs LeRHF (and random head sets) for every toy concept (evaluator, not CLIP).

    python toy/weakening_eval.py --out docs/toy          # the toy UNet and its HRVs shipped in the package
    python toy/weakening_eval.py --model_card toy-dit --k 0 6 12 24 --random_sets 5 --out docs/toy_dit   # the toy DiT

Writes OUT/weakening_results.json (every concept, every attribute) and OUT/weakening_{concept}.png/.pdf (MoRHF and
LeRHF curves).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.core.models import load_pipeline, model_version  # noqa: E402
from hrv_diffusion.hrv.files import OutputNames, read_hrv  # noqa: E402
from hrv_diffusion.hrv.paper import TOY_HRV_DIR  # noqa: E402
from hrv_diffusion.toy.weakening import weakening_curves  # noqa: E402
from hrv_diffusion.apps.weakening_plots import plot_weakening_curves  # noqa: E402
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int  # noqa: E402
from hrv_diffusion.cli.common import check_outputs, output_folder  # noqa: E402


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--model_card", choices=["toy", "toy-dit"], default="toy", help="the toy UNet or the toy DiT")
    p.add_argument("--final_result", default=str(TOY_HRV_DIR), help="folder of the toy HRV files (default: shipped)")
    p.add_argument("--prompt", default="toy", help="prompt-list name of the HRV files")
    p.add_argument("--concepts", nargs="+", default=["Color", "Shape", "Size", "Position", "Background"],
                   help="concepts whose heads are weakened, one curve each")
    p.add_argument("--k", type=nonnegative_int, nargs="+", default=[0, 7, 14, 28],
                   help="heads weakened (toy: 56 in all; toy-dit: 48)")
    p.add_argument("--random_sets", type=nonnegative_int, default=0,
                   help="also weaken this many random head sets per k (seeded), the same for every concept")
    p.add_argument("--n", type=positive_int, default=32, help="captions (one image each) per (order, k)")
    p.add_argument("--steps", type=positive_int, default=50, help="PNDM steps")
    p.add_argument("--seed", type=nonnegative_int, default=2, help="seed of the captions and latents")
    p.add_argument("--out", type=output_folder, default="docs/toy", help="folder for the JSON results and the plots")
    p.add_argument("--device", default="cpu", help="torch device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    check_outputs(args)  # an --out that is a file (a folder): one line, before the model loads
    concepts = read_concept_set(resolve_description("toy_concepts"))
    names = OutputNames(last_epoch=1, negative_prompt=False, prompt=args.prompt, description="toy_concepts",
                        model_version=model_version(args.model_card))
    final = Path(args.final_result)
    hrv, _ = read_hrv(final / names.category_vectors(), final / names.head_index())
    pipe = load_pipeline(args.model_card, device=args.device)
    start = time.perf_counter()
    results = weakening_curves(pipe, hrv, list(concepts.names), args.concepts, args.k, n=args.n, seed=args.seed,
                               steps=args.steps, random_sets=args.random_sets, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"model": args.model_card, "random_sets": args.random_sets, "n_captions": args.n, "steps": args.steps,
              "seed": args.seed, "k": args.k,
              "factor": -2.0, "tokens": "every prompt token", "seconds": round(time.perf_counter() - start, 1),
              "concepts": results}
    (out / "weakening_results.json").write_text(json.dumps(report, indent=1) + "\n")
    for concept, r in results.items():
        ordered = {key: v for key, v in r["curve"].items() if not key.startswith("random")}
        plot_weakening_curves(ordered, f"{concept} ({args.model_card} model)", out / f"weakening_{concept}.png",
                              drop_k=(), ylabel=f"{r['attribute']} accuracy (evaluator)")
        print(concept, {k: round(v, 3) for k, v in r["curve"].items()}, flush=True)
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
