"""``make demo``: the whole HRV pipeline on the built-in toy model, on a CPU, in a few minutes.

text embeddings -> head relevance votes -> extraction of the published files -> a heatmap. The toy model
(``hrv_diffusion/data/toy``, see toy/README.md) draws colored shapes; its concepts are Color, Shape, Size,
Position and Background. ``--model_card tiny-sd`` runs the same on a random-weight model (machinery only).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_dir", default="demo_output")
    p.add_argument("--model_card", default="toy")
    p.add_argument("--prompts", type=int, default=64, help="how many prompts of the list")
    p.add_argument("--batch_size", type=int, default=16)
    args = p.parse_args(argv)

    from hrv_diffusion.cli import extract, relevance, text_embeddings
    from hrv_diffusion.hrv.files import read_hrv
    from hrv_diffusion.apps.visualize import plot_hrv_heatmap

    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.model_card.startswith("tiny"):
        print(f"note: {args.model_card} is a tiny model with random weights, built in code: the outputs show the "
              "pipeline working end to end, not meaningful concepts.")
    toy = args.model_card == "toy"
    description, prompt = ("toy_concepts", "toy") if toy else ("340_final_text_descriptions", "imagenet")
    common = ["--model_card", args.model_card, "--description", description]
    os.chdir(out)
    steps = [
        ("1/3 text embeddings of the concept words", text_embeddings.main, common),
        ("2/3 head relevance votes", relevance.main,
         common + ["--prompt", prompt, "--max_prompts", str(args.prompts), "--batch_size", str(args.batch_size),
                   "--dtype", "float32", "--resume"]),
        ("3/3 extraction", extract.main, common + ["--prompt", prompt]),
    ]
    for title, fn, argv_ in steps:
        print(f"== {title}", flush=True)
        code = fn(argv_)
        if code:
            return code
    final = out / "final_result"
    cv = next(p for p in final.glob("category_vectors_*.npy") if not p.stem.endswith("per_timesteps"))
    hi = final / cv.name.replace("category_vectors_", "head_index_")
    hrv, labels = read_hrv(cv, hi)
    import numpy as np
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description

    names = list(read_concept_set(resolve_description(description)).names)
    png = plot_hrv_heatmap(np.asarray(hrv), labels, names, out / "hrv_heatmap.png", title=f"HRVs of {args.model_card}")
    print(f"\nDone. Outputs in {out}:\n  final_result/  HRVs and head rankings (see docs/hrv-files.md)\n"
          f"  results/       vote-count shards\n  {png.name}  heatmap of the HRVs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
