"""applications/p2p_benchmark.py: run the paper's five editing sets with P2P and P2P-HRV, resumable, on many GPUs.

Every pair of the chosen sets (color, material, geometric_patterns, image_style, weather_conditions) is edited with
the methods of --methods, the set's concept and the pair's swapped word as the target token, for every seed, into
the layout of p2p_hrv.py (plus the swapped word's region in masks/ for the preservation metrics):

    {output_path}/exp_{N}/source/{source}/{seed}.png
    {output_path}/exp_{N}/original_p2p/{source}_to_{target}/{seed}.png
    {output_path}/exp_{N}/{concept}_{self_replace_steps}/{source}_to_{target}/{seed}.png
    {output_path}/exp_{N}/masks/{source}_to_{target}/{seed}.png

Existing images are skipped, so a stopped run resumes. Split the work over GPUs as HRV construction does, into the
same tree: --subset_running --numerator n --denominator d (one process per part), or
torchrun --nproc_per_node G applications/p2p_benchmark.py ... (each rank takes its share). Then score it with
applications/p2p_scores.py.
"""
from __future__ import annotations

import argparse
import os

from hrv_diffusion.cli.p2p import DEFAULT_SEEDS, add_added_flags, add_model_flags, show_defaults
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int


def build_parser() -> argparse.ArgumentParser:
    from hrv_diffusion.apps.p2p_benchmark import SETS

    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("benchmark")
    g.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="editing sets to run")
    g.add_argument("--methods", nargs="+", choices=["p2p", "p2p_hrv", "all_heads"], default=["p2p", "p2p_hrv"],
                   help="p2p = the P2P baseline (original_p2p), p2p_hrv = P2P-HRV with the set's concept "
                        "({concept}_{self}), all_heads = restoration with factor 1 (all_heads_{self})")
    g.add_argument("--prompts_dir", default=None,
                   help="folder of the sets' CSVs (default: the package's; the published "
                        "applications/benchmark_prompts/ works too)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=DEFAULT_SEEDS,
                   help="one image per seed and method")
    g.add_argument("--max_pairs", type=positive_int, default=None,
                   help="only the first N pairs of each set (a quick look)")
    g.add_argument("--output_path", default="./applications/image_editing_benchmark", help="root of the outputs")
    g.add_argument("--no_masks", action="store_true", help="do not write masks/ (the preservation metrics need it)")
    g.add_argument("--subset_running", action="store_true", help="run only part NUMERATOR of DENOMINATOR of the work")
    g.add_argument("--numerator", type=positive_int, default=1, help="which part, 1..DENOMINATOR")
    g.add_argument("--denominator", type=positive_int, default=1, help="into how many parts the work is split")
    add_model_flags(p.add_argument_group("P2P-HRV flags (as in p2p_hrv.py)"))
    add_added_flags(p.add_argument_group("added"))
    show_defaults(p)
    return p


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.p2p_benchmark import benchmark_pairs, split_pairs
    from hrv_diffusion.apps.p2p_runs import EditLayout, run_edits
    from hrv_diffusion.cli.p2p import (check_concepts, load_run_hrv, load_run_pipeline, maybe_compile, method_specs,
                                       run_settings)
    from hrv_diffusion.cli.relevance import _distributed
    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import model_version

    args.save_original_p2p = "p2p" in args.methods
    args.use_soft_vector = "p2p_hrv" in args.methods
    args.replace_all_heads = "all_heads" in args.methods and not args.use_soft_vector
    args.head_list_path, args.complement, args.target_token = None, False, None

    def specs_for(concept):
        args.concepts = [concept]
        specs = method_specs(args)
        if "all_heads" in args.methods and args.use_soft_vector:  # both restorations: add factor 1 as well
            args.use_soft_vector, args.replace_all_heads = False, True
            specs += [s for s in method_specs(args) if s.restoration == "all_heads"]
            args.use_soft_vector, args.replace_all_heads = True, False
        return specs

    pairs = benchmark_pairs(args.sets, specs_for, args.prompts_dir, args.max_pairs)
    concepts = sorted({dict(p.info)["concept"] for p in pairs})
    check_concepts(args, concepts)
    rank, world_size, _ = _distributed()
    subset = (args.numerator, args.denominator) if args.subset_running else None
    mine = split_pairs(pairs, subset, rank, world_size)

    device = resolve_device(args.device, args.gpu_num)
    dtype = resolve_dtype(args.dtype, device)
    mv = model_version(args.model_card)
    pipe = load_run_pipeline(args, dtype, device)
    layout = head_layout(pipe.unet)
    hrv = load_run_hrv(args, mv, sorted({s.concept for p in mine for s in p.specs if s.uses_hrv}), layout)
    settings = run_settings(args, pipe, mv, dtype, hrv)
    maybe_compile(args, pipe, settings, [s for p in mine for s in p.specs])
    exp = EditLayout(args.output_path, args.experiment_num, settings, overwrite=args.overwrite)
    who = f"rank {rank}/{world_size}, " if world_size > 1 else ""
    who += f"part {args.numerator}/{args.denominator}, " if subset else ""
    bar = tqdm(unit="edit", disable=args.quiet, desc=f"{who}benchmark")
    report = run_edits(pipe, mine, args.seeds, exp, hrv=hrv, batch_size=args.batch_size, masks=not args.no_masks,
                       progress=bar)
    bar.close()
    print(f"{who}{len(mine)} of {len(pairs)} pairs: {report.edits_written} edited, {report.sources_written} source "
          f"and {report.masks_written} mask images written under {exp.exp_dir}")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return run_cli(run, build_parser().parse_args(argv))
