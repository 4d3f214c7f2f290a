"""applications/p2p_scores.py: editing metrics of a P2P / P2P-HRV output tree (the reference computes none).

Reads every edited image of {output_path}/exp_{N} (p2p_hrv.py or p2p_benchmark.py outputs, found through the
folders' manifest.json), its source image and, where the run wrote it (--save_masks; the benchmark always does),
the swapped word's region, and writes to --results_dir:

  edit_scores_per_image_exp_{N}.csv  one row per edited image: set, concept, method, prompts, seed, clip_target,
                                     clip_source_target, clip_direction, psnr/ssim outside the region and over the
                                     whole image, unedited_fraction, path
  edit_scores_exp_{N}.csv            per set and method: the number of images and the mean of each metric

CLIP is the weakening scorer's (open_clip ViT-H-14 laion2b_s32b_b79k, fp32); its weights must be available
offline (Hugging Face cache, --clip_cache_dir, or a checkpoint file as --clip_pretrained). See docs/p2p.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int, output_folder


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--output_path", default="./applications/image_editing_benchmark",
                   help="the generation output folder holding exp_{N}/ (default: %(default)s)")
    p.add_argument("--experiment_num", default="1", help="selects exp_{N}/ (default: %(default)s)")
    p.add_argument("--results_dir", type=output_folder, default=None,
                   help="where the CSVs go (default: the exp_{N} folder)")
    p.add_argument("--clip_model", default="ViT-H-14", help="open_clip model name (default: %(default)s)")
    p.add_argument("--clip_pretrained", default="laion2b_s32b_b79k",
                   help="open_clip pretrained tag or a local checkpoint path (default: %(default)s)")
    p.add_argument("--clip_cache_dir", type=output_folder, default=None,
                   help="open_clip cache folder for the weights (default: none)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch_size", type=positive_int, default=32,
                   help="images per CLIP forward pass (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.clip import ClipScorer
    from hrv_diffusion.apps.edit_metrics import (PER_IMAGE_COLUMNS, SUMMARY_COLUMNS, find_edits, score_edits,
                                                 write_csv)
    from hrv_diffusion.apps.output_paths import child_dir

    exp_dir = child_dir(args.output_path, f"exp_{args.experiment_num}")
    total = len(find_edits(exp_dir))  # fails early on an empty or missing tree
    scorer = ClipScorer(args.clip_model, args.clip_pretrained, device=args.device, batch_size=args.batch_size,
                        cache_dir=args.clip_cache_dir)
    with tqdm(total=total, unit="image", disable=args.quiet, desc="editing metrics") as bar:
        per_image, summary = score_edits(exp_dir, scorer, progress=bar)
    results = Path(args.results_dir) if args.results_dir else exp_dir
    a = write_csv(results / f"edit_scores_per_image_exp_{args.experiment_num}.csv", per_image, PER_IMAGE_COLUMNS)
    b = write_csv(results / f"edit_scores_exp_{args.experiment_num}.csv", summary, SUMMARY_COLUMNS)
    for row in summary:
        print(f"{row['set'] or '-':>20} {row['method']:>28}: n={row['images']} clip_target={row['clip_target']:.4f} "
              f"clip_direction={row['clip_direction']:.4f} psnr_unedited={row['psnr_unedited']:.2f} "
              f"ssim_unedited={row['ssim_unedited']:.4f}")
    print(f"wrote {a} and {b}")
    note = missing_masks_note(per_image, exp_dir)
    if note:
        print(note)
    return 0


def missing_masks_note(per_image: list[dict], exp_dir) -> str | None:
    """What to do when edited images have no mask (masks/): their psnr/ssim_unedited are nan."""
    import math

    without = sum(1 for row in per_image if math.isnan(row["unedited_fraction"]))
    if not without:
        return None
    return (f"note: {without} of {len(per_image)} edited images have no mask in {Path(exp_dir) / 'masks'}, so their "
            "psnr_unedited, ssim_unedited and unedited_fraction are nan: rerun the generation with masks "
            "(p2p_hrv.py with --save_masks, or p2p_benchmark.py without --no_masks; the images already there are "
            "kept), then score again")


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
