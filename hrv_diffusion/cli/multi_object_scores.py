"""multi_object_scores.py: CLIP scores of multi-object images, as the A&E paper evaluates them.

For every image ``{output_path}/{method folder}/exp_{n}/{prompt}/{seed}.png`` of a prompt set: the cosine similarity
with the full prompt, with each object phrase (the prompt split at " and "), and the minimum over the objects.
Writes ``multi_object_scores_per_image_{n}.csv`` (one row per image) and ``multi_object_scores_{n}.csv`` (per method:
mean full-prompt and minimum-object similarity) into OUT_DIR. CLIP: open_clip ViT-H-14 laion2b_s32b_b79k, fp32, as
the weakening scorer.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, output_folder


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--prompt_set", default="animals", help="animals | colored_animals | a prompt file")
    p.add_argument("--output_path", default="./applications/multi_concept_outputs", help="where the images are")
    p.add_argument("--experiment_num", default=None, help="exp_N folder (default: the prompt set's name, as "
                   "multi_object_benchmark.py writes)")
    p.add_argument("--methods", nargs="+", choices=["hrv", "standard", "sd"], default=["hrv", "standard", "sd"],
                   help="which methods' images to score")
    p.add_argument("--seeds", type=nonnegative_int, nargs="+", default=None,
                   help="only these seeds (default: every image found)")
    p.add_argument("--out_dir", type=output_folder, default=None, help="where the CSVs go (default: OUTPUT_PATH)")
    p.add_argument("--clip_model", default="ViT-H-14", help="open_clip model name")
    p.add_argument("--clip_pretrained", default="laion2b_s32b_b79k", help="open_clip tag or a checkpoint file")
    p.add_argument("--clip_cache_dir", type=output_folder, default=None, help="open_clip cache folder")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def benchmark_command(args) -> str:
    """The multi_object_benchmark.py command that generates the images these flags score."""
    import shlex

    words = ["python", "applications/multi_object_benchmark.py", "--prompt_set", args.prompt_set,
             "--methods", *args.methods, "--seeds", *map(str, args.seeds), "--output_path", args.output_path]
    if args.experiment_num is not None:
        words += ["--experiment_num", args.experiment_num]
    return " ".join(shlex.quote(str(w)) for w in words)


def check_seeds_generated(args, prompts, experiment) -> None:
    """Refuse ``--seeds`` whose images are not all there (a table of the other seeds would pass for the whole),
    naming how many are missing, the first one and the command that generates them."""
    from hrv_diffusion.apps.multi_object import missing_images
    from hrv_diffusion.errors import UserError

    missing = missing_images(args.output_path, experiment, prompts, args.methods, args.seeds)
    if missing:
        total = len(args.methods) * len(prompts) * len(args.seeds)
        raise UserError(f"{len(missing)} of the {total} images of --seeds {' '.join(map(str, args.seeds))} are "
                        f"missing (first: {missing[0]}): generate them with `{benchmark_command(args)}` (it keeps "
                        "the images already there), or pass only the seeds that were generated")


def run(args, scorer=None) -> int:
    from hrv_diffusion.apps.clip import ClipScorer
    from hrv_diffusion.apps.multi_object import load_prompt_set, prompt_set_name, score_images, summarize, write_csv

    prompts = load_prompt_set(args.prompt_set)
    experiment = args.experiment_num if args.experiment_num is not None else prompt_set_name(args.prompt_set)
    if args.seeds is not None:  # before CLIP loads
        check_seeds_generated(args, prompts, experiment)
    if scorer is None:
        scorer = ClipScorer(args.clip_model, args.clip_pretrained, device=args.device, cache_dir=args.clip_cache_dir)
    per_image, missing = score_images(args.output_path, experiment, prompts, args.methods, scorer, args.seeds,
                                      progress=not args.quiet)
    out_dir = Path(args.out_dir or args.output_path)
    write_csv(per_image, out_dir / f"multi_object_scores_per_image_{experiment}.csv")
    summary = summarize(per_image)
    write_csv(summary, out_dir / f"multi_object_scores_{experiment}.csv")
    if missing:
        print(f"{len(missing)} (method, prompt) folders have no image, e.g. {missing[0]}")
    print(summary.to_string(index=False))
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
