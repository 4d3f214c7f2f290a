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

from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, cli_main, positive_int
from hrv_diffusion.cli.flags import add_split_flags
from hrv_diffusion.cli.p2p_flags import add_added_flags, add_shared_groups, add_window_flags

PROGRAM = "hrv-p2p-benchmark"
METHODS = ("p2p", "p2p_hrv", "all_heads")


def build_parser() -> argparse.ArgumentParser:
    from hrv_diffusion.apps.p2p_benchmark import SETS

    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("benchmark")
    g.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS), help="editing sets to run")
    g.add_argument("--methods", nargs="+", choices=list(METHODS), default=["p2p", "p2p_hrv"],
                   help="p2p = the P2P baseline (original_p2p), p2p_hrv = P2P-HRV with the set's concept "
                        "({concept}_{self}), all_heads = restoration with factor 1 (all_heads_{self})")
    g.add_argument("--prompts_dir", default=None,
                   help="folder of the sets' CSVs (default: the package's; the published "
                        "applications/benchmark_prompts/ works too)")
    g.add_argument("--max_pairs", type=positive_int, default=None,
                   help="only the first N pairs of each set (a quick look)")
    g.add_argument("--no_masks", action="store_true", help="do not write masks/ (the preservation metrics need it)")
    add_split_flags(g)
    add_window_flags(p.add_argument_group("P2P-HRV flags (as in p2p_hrv.py)"))
    add_shared_groups(p.add_argument_group("model, generation, outputs and HRV"),
                      output_path="./applications/image_editing_benchmark")
    add_added_flags(p.add_argument_group("added"))
    return p


def benchmark_specs(args):
    """``specs_for(concept)``: the EditSpecs of ``--methods`` for a set's concept."""
    from argparse import Namespace

    from hrv_diffusion.cli.p2p_flags import method_specs

    def specs_for(concept) -> list:
        base = {**vars(args), "head_list_path": None, "complement": False, "concepts": [concept],
                "save_original_p2p": "p2p" in args.methods}
        hrv = "p2p_hrv" in args.methods
        specs = method_specs(Namespace(**{**base, "use_soft_vector": hrv,
                                          "replace_all_heads": "all_heads" in args.methods and not hrv}))
        if "all_heads" in args.methods and hrv:  # both restorations: add factor 1 as well
            more = method_specs(Namespace(**{**base, "use_soft_vector": False, "replace_all_heads": True}))
            specs += [s for s in more if s.restoration == "all_heads"]
        return specs

    return specs_for


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.p2p_benchmark import benchmark_pairs, pairs_of_sources
    from hrv_diffusion.apps.p2p_runs import EditLayout, run_edits, unique_sources
    from hrv_diffusion.cli.common import check_output_dir, interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext
    from hrv_diffusion.cli.p2p_flags import compile_skip, run_settings

    pairs = benchmark_pairs(args.sets, benchmark_specs(args), args.prompts_dir, args.max_pairs)
    check_output_dir(args.output_path, "--output_path")
    ctx = RunContext.from_args(args)
    ctx.check_concepts(sorted({dict(p.info)["concept"] for p in pairs}))
    mine = pairs_of_sources(pairs, ctx.my_indices(len(unique_sources(pairs))))
    uses_hrv = any(s.uses_hrv for p in mine for s in p.specs)
    if uses_hrv:
        ctx.check_hrv()
    ctx.latent_shape()  # loads the model; a --height/--width it cannot make fails here
    hrv = ctx.hrv if uses_hrv else None
    settings = run_settings(args, ctx, hrv)
    exp = EditLayout(args.output_path, args.experiment_num, settings, overwrite=args.overwrite)
    ctx.compile(skip=compile_skip(ctx, settings))
    who = f"rank {ctx.rank}/{ctx.world}, " if ctx.world > 1 else ""
    who += f"part {args.numerator}/{args.denominator}, " if args.subset_running else ""
    bar = tqdm(unit="edit", disable=args.quiet, desc=f"{who}benchmark")
    try:
        with sigterm_as_interrupt():
            report = run_edits(ctx.pipe, mine, args.seeds, exp, hrv=hrv, batch_size=args.batch_size,
                               masks=not args.no_masks, progress=bar)
    except KeyboardInterrupt:
        return interrupted(args, exp.exp_dir, PROGRAM)
    finally:
        bar.close()
    done = report.details
    print(f"{who}{len(mine)} of {len(pairs)} pairs: {done['edits']} edited, {done['sources']} source and "
          f"{done['masks']} mask images written; {report.line()}")
    return 0


# The color set only (the toy's HRVs have Color), its first 2 pairs, 2 seeds, 20 steps (CPU-sized).
TOY_DEFAULTS = {"sets": ["color"], "max_pairs": 2, "n_inference_steps": 20, "seeds": [10, 20]}


def main(argv=None) -> int:
    if int(os.environ.get("WORLD_SIZE", 1)) > 1:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return cli_main(run, build_parser(), argv, PROGRAM, toy_defaults=TOY_DEFAULTS)
