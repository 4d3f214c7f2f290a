"""calculate_similarity.py: CLIP scores of ordered-weakening images (replaces hp_calculate_similarity.ipynb).

Reads ``{output_path}/exp_{X}/{prompt}/{order}/{order}_{k}/{seed}.png``, scores each image against the concept item
of its prompt (e.g. "cubist" for "a cubist style painting of a castle") with open_clip ViT-H-14 laion2b_s32b_b79k
(raw cosine, fp32), averages over seeds, then over prompts, and writes to ``--results_dir``:

  hp_scores_wo_category_exp_{X}.csv   Key,Value (top_k..., bottom_k...), CRLF, 4 decimals: the published file
  hp_scores_per_image_exp_{X}.csv     one row per image: experiment, prompt, order, k, seed, text, score, path
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.errors import UserError
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int, output_folder

EXAMPLES = """\
examples:
  python ordered_weakening_analysis/calculate_similarity.py --experiment_num 5
  python ordered_weakening_analysis/calculate_similarity.py --experiment_num 5 \\
      --clip_pretrained /models/open_clip_pytorch_model.bin          # a local ViT-H-14 checkpoint
  python ordered_weakening_analysis/calculate_similarity.py --experiment_num 1 --seeds 10 --heads_to_be_perturbed 0 11

The CLIP weights must be available offline (Hugging Face cache, --clip_cache_dir, or a checkpoint file given as
--clip_pretrained); the error message says how to provide them. Exit status: 0 on success, 2 for missing images,
missing weights, an unknown experiment or a prompt folder that matches none of the experiment's items.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="calculate_similarity.py",
        description="Score ordered-weakening images with CLIP and write hp_scores_wo_category_exp_{X}.csv "
                    "(+ a per-image CSV).",
        epilog=EXAMPLES, formatter_class=HelpFormatter,
    )
    parser.add_argument("--output_path", default="./ordered_weakening_analysis/hp_outputs",
                        help="the generation output folder holding exp_{X}/ (default: %(default)s)")
    parser.add_argument("--experiment_num", type=positive_int, required=True,
                        help="1-9, 91-95 or 991 (see construct_prompts.py --list); selects exp_{X}/ and the CLIP texts")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[10, 20, 30], help="default: %(default)s")
    parser.add_argument("--heads_to_be_perturbed", type=nonnegative_int, nargs="+", default=None,
                        help="the k values to score (default: every {order}_{k} folder found)")
    parser.add_argument("--clip_model", default="ViT-H-14", help="open_clip model name (default: %(default)s)")
    parser.add_argument("--clip_pretrained", default="laion2b_s32b_b79k",
                        help="open_clip pretrained tag, or a local checkpoint path such as "
                             "/path/to/open_clip_pytorch_model.bin (default: %(default)s)")
    parser.add_argument("--clip_cache_dir", type=output_folder, default=None,
                        help="open_clip cache folder for the weights (optional)")
    parser.add_argument("--results_dir", type=output_folder, default="./ordered_weakening_analysis/hp_results",
                        help="where the CSVs are written (default: %(default)s)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--batch_size", type=positive_int, default=32,
                        help="images per CLIP forward pass (default: %(default)s)")
    parser.add_argument("--scorer", default=None, metavar="MODULE:CALLABLE",
                        help="use another scorer instead of CLIP: a callable (class or function) taking no "
                             "arguments and returning an object with score(images, texts) -> array, e.g. a toy "
                             "evaluator for the tiny demo model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args) -> list[Path]:
    from hrv_diffusion.apps.weakening_experiments import experiment
    from hrv_diffusion.apps.clip import ClipScorer, load_scorer
    from hrv_diffusion.apps.weakening_scores import (per_image_csv_name, score_experiment, scores_csv_name,
                                                     write_per_image_csv, write_scores_csv)

    exp = experiment(args.experiment_num)
    exp_dir = Path(args.output_path) / exp.folder
    if not exp_dir.is_dir():  # checked before loading CLIP (slow)
        raise FileNotFoundError(f"no folder {exp_dir}: generate the images first "
                                f"(ordered_weakening_analysis/head_perturbation_analysis.py --experiment_num "
                                f"{exp.number} --concept \"{exp.concept}\") or set --output_path")
    if args.scorer:
        scorer = load_scorer(args.scorer)
    else:
        scorer = ClipScorer(args.clip_model, args.clip_pretrained, device=args.device, batch_size=args.batch_size,
                            cache_dir=args.clip_cache_dir)
    summary, per_image = score_experiment(args.output_path, exp, scorer, seeds=args.seeds,
                                          k_list=args.heads_to_be_perturbed, progress=not args.quiet)
    results = Path(args.results_dir)
    written = [write_scores_csv(results / scores_csv_name(exp.number), summary),
               write_per_image_csv(results / per_image_csv_name(exp.number), per_image)]
    n_prompts = per_image["prompt"].nunique()
    print(f"exp {exp.number} ({exp.concept}): {len(per_image)} images, {n_prompts} prompts")
    for order, label in (("top", "MoRHF"), ("bottom", "LeRHF")):
        rows = summary[summary["order"] == order]
        print(f"  {label:<5} " + "  ".join(f"{k}:{v:.4f}" for k, v in zip(rows["k"], rows["value"])))
    return written


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(_main, build_parser().parse_args(argv))


def _main(args) -> int:
    try:
        written = run(args)
    except ImportError as error:  # open_clip missing
        raise UserError(str(error)) from None
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
