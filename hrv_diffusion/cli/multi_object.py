"""multi_object_benchmark.py: generate the paper's multi-object prompt sets with A&E-HRV, standard A&E and plain SD.

For every prompt of the set, every method and every seed: ``{output_path}/{method folder}/exp_{n}/{prompt}/{seed}.png``
and ``{seed}.json`` (telemetry), with each folder's ``manifest.json`` and grid, as attend_and_excite_hrv.py writes
them; the targets are the prompts' nouns (the animals) with the concept Animals. Resumable (existing images are
kept; a folder made with other settings is refused unless --overwrite), batched over seeds, and split across GPUs
like HRV construction: ``--subset_running --numerator n --denominator d`` runs part n of d of the prompts, and under
``torchrun --nproc_per_node N`` each rank runs its share of that. Then score with multi_object_scores.py.
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli import attend_excite_flags as ae
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int
from hrv_diffusion.cli.flags import (add_generation_flags, add_hrv_flags, add_model_flags, add_output_flags,
                                     add_split_flags)

PROGRAM = "hrv-multi-object"
METHODS = ("hrv", "standard", "sd")
OUTPUT_PATH = "./applications/multi_concept_outputs"


def build_parser() -> argparse.ArgumentParser:
    from hrv_diffusion.apps.multi_object import PROMPT_SETS

    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("benchmark")
    g.add_argument("--prompt_set", default="animals", help=f"{' | '.join(PROMPT_SETS)} (66 and 150 prompts), toy "
                   "(the toy model's 2) or a file with one prompt 'a X and a Y' per line")
    g.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="hrv = A&E-HRV, standard = standard A&E, sd = plain SD (default: all three)")
    g.add_argument("--num_seeds", type=positive_int, default=64,
                   help="seeds 0 .. N-1 of every prompt when --seeds is not given, as the A&E paper's 64")
    g.add_argument("--max_prompts", type=positive_int, default=None, help="only the first N prompts of the set")
    add_split_flags(g)
    ae.add_attend_excite_flags(p)
    add_model_flags(p.add_argument_group("model"), dtype="float32", scheduler=True, compile_help=ae.COMPILE_HELP)
    add_generation_flags(p.add_argument_group("generation"), seeds=(), batch_size=4, batch_help=ae.BATCH_HELP,
                         decode="round")
    add_output_flags(p.add_argument_group("output"), default_path=OUTPUT_PATH)
    add_hrv_flags(p.add_argument_group("HRV (A&E-HRV)"), hrv_files=True, description_file=True)
    return p


def jobs_of(args, prompts, tokenizer, with_concepts: bool, axis=None) -> list:
    """The ``PromptJob`` of each prompt: its nouns as targets, with their concepts (A&E-HRV); ``axis``: the
    pipeline's ``TextAxis`` (None: CLIP's)."""
    from hrv_diffusion.apps.attend_excite_runs import PromptJob
    from hrv_diffusion.apps.attend_excite_tokens import CLIP_AXIS, eot_position, word_targets

    axis = axis or CLIP_AXIS
    jobs = []
    for item in prompts:
        concepts = ae.concepts_for(args, len(item.nouns)) if with_concepts else [None] * len(item.nouns)
        jobs.append(PromptJob(item.prompt, word_targets(tokenizer, item.prompt, item.nouns, axis), list(item.nouns),
                              concepts, eot_position(tokenizer, item.prompt, axis)))
    return jobs


def run(args) -> int:
    from hrv_diffusion.apps.attend_excite_runs import IGNORED, plan_folders, run_plan
    from hrv_diffusion.apps.multi_object import load_prompt_set, prompt_set_name
    from hrv_diffusion.apps.runs import OutputTree
    from hrv_diffusion.cli.common import check_output_dir, interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext
    from hrv_diffusion.core.families import text_axis

    ctx = RunContext.from_args(args)
    check_output_dir(args.output_path, "--output_path")
    ae.parse_thresholds(args.thresholds)
    all_prompts = load_prompt_set(args.prompt_set)[: args.max_prompts]
    prompts = [all_prompts[i] for i in ctx.my_indices(len(all_prompts))]
    seeds = args.seeds or list(range(args.num_seeds))
    experiment = args.experiment_num if args.experiment_num is not None else prompt_set_name(args.prompt_set)
    with_hrv = "hrv" in args.methods
    if with_hrv:  # before the model loads
        ctx.check_concepts(args.concepts or [])
        ctx.check_hrv()
    ctx.compile()
    jobs = jobs_of(args, prompts, ctx.pipe.tokenizer, with_hrv, text_axis(ctx.pipe))
    _, h, _ = ctx.latent_shape()  # (C, h, w)
    settings = {m: ae.settings_from(args, m, h, ctx.pipe) for m in args.methods}
    ctx.check_concepts(dict.fromkeys(c for job in jobs for c in job.concepts if c is not None))
    tree = OutputTree(args.output_path, overwrite=args.overwrite, ignore=IGNORED)
    folders = plan_folders(tree, jobs, settings, experiment)
    hrv = ctx.hrv if with_hrv else None
    options = ae.run_options(args, ctx, hrv, {"prompt_set": prompt_set_name(args.prompt_set)})
    try:
        with sigterm_as_interrupt():
            report = run_plan(ctx.pipe, tree, folders, seeds, options, hrv=hrv, batch_size=args.batch_size,
                              quiet=args.quiet, desc=f"rank {ctx.rank}" if ctx.world > 1 else "multi-object")
    except KeyboardInterrupt:
        return interrupted(args, tree.root, PROGRAM)
    print(f"{report.line()} (exp_{experiment}; {len(jobs)} prompts, {len(args.methods)} methods, "
          f"{len(seeds)} seeds)")
    return 0


# The toy's 2 two-shape prompts, 1 seed each (the paper: 64), A&E-HRV with the toy's Shape heads against plain
# SD; 20 steps (CPU-sized).
TOY_DEFAULTS = {"prompt_set": "toy", "num_seeds": 1, "methods": ["hrv", "sd"], "concepts": ["Shape"],
                "n_inference_steps": 20}


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import cli_main

    return cli_main(run, build_parser(), argv, PROGRAM, toy_defaults=TOY_DEFAULTS)
