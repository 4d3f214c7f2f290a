"""multi_object_benchmark.py: generate the paper's multi-object prompt sets with A&E-HRV, standard A&E and plain SD.

For every prompt of the set, every method and every seed: ``{output_path}/{method folder}/exp_{n}/{prompt}/{seed}.png``
and ``{seed}.json`` (telemetry), as attend_and_excite_hrv.py writes them; the targets are the prompts' nouns (the
animals) with the concept Animals. Resumable (existing images are skipped), batched over seeds, and split across
GPUs like HRV construction: ``--subset_running --numerator n --denominator d`` runs part n of d of the prompts, and
under ``torchrun --nproc_per_node N`` each rank runs its share of that. Then score with multi_object_scores.py.
"""
from __future__ import annotations

import argparse
import os
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int

METHODS = ("hrv", "standard", "sd")


def build_parser() -> argparse.ArgumentParser:
    from hrv_diffusion.apps.multi_object import PROMPT_SETS
    from hrv_diffusion.cli.attend_excite import add_method_flags

    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("benchmark")
    g.add_argument("--prompt_set", default="animals", help=f"{' | '.join(PROMPT_SETS)} (66 and 150 prompts) or a file "
                   "with one prompt 'a X and a Y' per line (default: animals)")
    g.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="hrv = A&E-HRV, standard = standard A&E, sd = plain SD (default: all three)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=None,
                   help="seeds of every prompt (default: --num_seeds)")
    g.add_argument("--num_seeds", type=positive_int, default=64,
                   help="seeds 0 .. N-1, as the A&E paper's 64 (default: 64)")
    g.add_argument("--output_path", default="./applications/multi_concept_outputs",
                   help="(default: ./applications/multi_concept_outputs)")
    g.add_argument("--max_prompts", type=positive_int, default=None, help="only the first N prompts of the set")
    g.add_argument("--subset_running", action="store_true", help="run only part NUMERATOR of DENOMINATOR of the prompts")
    g.add_argument("--numerator", type=positive_int, default=1, help="(default: 1)")
    g.add_argument("--denominator", type=positive_int, default=1, help="(default: 1)")
    add_method_flags(p)
    p.set_defaults(experiment_num=None)
    return p


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.attend_excite import PromptJob, generate_to_folder, image_dir, write_grid
    from hrv_diffusion.apps.attend_excite_tokens import eot_position, word_targets
    from hrv_diffusion.apps.multi_object import load_prompt_set, prompt_set_name
    from hrv_diffusion.cli.attend_excite import _negative, concepts_for, load_hrv_for, load_setup, settings_from
    from hrv_diffusion.core.loop import latent_shape
    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.construction import rank_indices, subset_indices

    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    prompts = load_prompt_set(args.prompt_set)[: args.max_prompts]
    seeds = args.seeds if args.seeds is not None else list(range(args.num_seeds))
    experiment = args.experiment_num if args.experiment_num is not None else prompt_set_name(args.prompt_set)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    indices = list(range(len(prompts)))
    if args.subset_running:
        indices = subset_indices(len(prompts), args.numerator, args.denominator)
    indices = rank_indices(indices, rank, world)

    pipe, dtype, generator = load_setup(args)
    _, h, _ = latent_shape(pipe, args.height, args.width)
    hrv = load_hrv_for(args, pipe) if "hrv" in args.methods else None
    settings = {m: settings_from(args, m, h) for m in args.methods}
    jobs = []
    for i in indices:
        item = prompts[i]
        concepts = concepts_for(args, len(item.nouns)) if hrv is not None else [None] * len(item.nouns)
        if hrv is not None:
            for concept in concepts:
                hrv.row(concept)
        jobs.append(PromptJob(item.prompt, word_targets(pipe.tokenizer, item.prompt, item.nouns), list(item.nouns),
                              concepts, eot_position(pipe.tokenizer, item.prompt)))
    bar = tqdm(total=len(jobs) * len(args.methods) * len(seeds), unit="image", disable=args.quiet,
               desc=f"rank {rank}" if world > 1 else "multi-object")
    made = 0
    for job in jobs:
        for method in args.methods:
            out_dir = image_dir(args.output_path, method, experiment, job.prompt)
            new = generate_to_folder(pipe, job, seeds, settings[method], out_dir, hrv=hrv, generator=generator,
                                     batch_size=args.batch_size, negative_prompt=_negative(args), decode=args.decode,
                                     height=args.height, width=args.width, progress=bar,
                                     metadata={"model_card": args.model_card, "dtype": dtype,
                                               "prompt_set": prompt_set_name(args.prompt_set)})
            bar.update(len(seeds) - len(new))
            made += len(new)
            if new:
                write_grid(out_dir, seeds, out_dir.parent / f"{out_dir.name}.png")
    bar.close()
    print(f"{made} images generated under {args.output_path} (exp_{experiment}; {len(jobs)} prompts, "
          f"{len(args.methods)} methods, {len(seeds)} seeds)")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
