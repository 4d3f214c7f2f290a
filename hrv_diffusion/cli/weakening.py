"""head_perturbation_analysis.py: generate ordered-weakening images (MoRHF vs LeRHF) for one concept.

Keeps the reference's flags. For each prompt and each (order, k, seed) it weakens the first k heads of the concept
in HRV order (top = most relevant first, bottom = least relevant first) by the reweighting factor and saves
``{output_path}/exp_{X}/{prompt}/{order}/{order}_{k}/{seed}.png``. Existing images are skipped (resumable);
``--subset_running`` or ``torchrun`` split the prompts over processes.

Every prompt folder has a manifest.json (model, concept, HRV fingerprint, head source, dtype, factor, window,
steps, size, ...). A run continues a folder only when its settings match the manifest; otherwise it stops before
loading the model and names the difference (``--overwrite`` regenerates such folders). ``--concept`` defaults to the
experiment's own concept; another concept on an experiment's prompts needs ``--allow_other_concept``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, finite_float, nonempty_file, nonnegative_int,
                                      positive_int, prompt_text, step_fraction)
from hrv_diffusion.cli.flags import (SD_CARD, SDXL_CARD, add_generation_flags, add_hrv_flags, add_model_flags,
                                     add_output_flags, add_split_flags)

PROGRAM = "head_perturbation_analysis.py"
BATCH_HELP = ("at most this many images per pipeline call; a prompt's distinct images (84 of the default 90) are "
              "split into even batches. 84 = one call per prompt: 39 GiB on SD v1.4, fastest on an 80 GB card")
COMPILE_HELP = ("compile the UNet's forward, its cross-attention layers left eager: 10.0x the reference way against "
                "8.5x for compiled regions on an H100 (docs/performance.md), after a one-time compile of about a minute "
                "(long GPU runs)")


def build_parser(default_card: str = SD_CARD, prog: str | None = None) -> argparse.ArgumentParser:
    description = __doc__
    if default_card == SDXL_CARD:  # the SDXL script names itself
        description = "head_perturbation_analysis_sdxl.py" + __doc__.split(":", 1)[1].replace(
            "for one concept.", "for one concept, on SDXL (stabilityai/stable-diffusion-xl-base-1.0 by default).", 1)
    p = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    add_model_flags(p.add_argument_group("model"), default_card=default_card, compile_help=COMPILE_HELP)
    add_weakening_flags(p.add_argument_group("prompts and heads"))
    g = p.add_argument_group("head order")
    add_hrv_flags(g, hrv_default=None, description_file=True)
    add_hrv_file_flags(g)
    add_generation_flags(p.add_argument_group("generation"), seeds=[10, 20, 30], batch_size=16, batch_help=BATCH_HELP)
    g = p.add_argument_group("output and processes")
    add_output_flags(g, default_path="./ordered_weakening_analysis/hp_outputs")
    add_split_flags(g)
    return p


def add_weakening_flags(g) -> None:
    """Which prompts, which concept's heads, and how they are weakened."""
    g.add_argument("--prompt", type=prompt_text, default=None, help="one prompt (default: all prompts of --experiment_num)")
    g.add_argument("--prompt_file", type=nonempty_file, default=None,
                   help="prompts, one per line (instead of the experiment's)")
    g.add_argument("--experiment_num", default="1", help="1-9, 91-95, 991 (see construct_prompts.py --list)")
    g.add_argument("--concept", nargs="+", default=None,
                   help="the concept whose heads are weakened (default: the experiment's concept, e.g. Image Style "
                        "for experiment 5)")
    g.add_argument("--allow_other_concept", action="store_true",
                   help="allow a --concept other than the experiment's own (e.g. Color heads on exp 5's style prompts)")
    g.add_argument("--reweighting_factor", type=finite_float, default=-2.0,
                   help="the weakened heads' attention to the prompt tokens is multiplied by this")
    g.add_argument("--reweighting_steps", type=step_fraction, nargs=2, default=[0.0, 1.01],
                   help="window over evaluations [int(s*T), int(e*T))")
    g.add_argument("--heads_to_be_perturbed", type=nonnegative_int, nargs="+", default=None,
                   help="k list (default: 0 1 11 ... 121 128 for 128 heads; 0 11 111 ... 1211 1300 for 1300)")
    g.add_argument("--weaken", choices=["prompt_tokens", "concept_word"], default="prompt_tokens",
                   help="prompt_tokens = every word token of the prompt (the reference); concept_word = only the "
                        "concept item's tokens")
    g.add_argument("--concept_word", default=None,
                   help="the word for --weaken concept_word (default: the experiment's item)")


def add_hrv_file_flags(g) -> None:
    """Where the HRV files built here are, and under which published names."""
    g.add_argument("--final_result", default="final_result",
                   help="folder of the HRV files; without --hrv, the HRV of its published name is used")
    g.add_argument("--prompt_type", default=None, help="prompt-list name in the HRV file names (default: merged if "
                   "its HRV is in --final_result, else the one prompt list whose HRV is there)")
    g.add_argument("--epochs", type=positive_int, default=1, help="used in the HRV file names")
    g.add_argument("--head_roles", action="store_true",
                   help="take head order from the head_roles CSVs in --final_result (with --hrv paper: the paper's) "
                        "instead of an HRV: the paper's exact tie order")


def _concept(args, exp) -> str:
    """--concept, else the experiment's; a concept that contradicts the experiment needs --allow_other_concept."""
    from hrv_diffusion.apps.weakening_experiments import experiment
    from hrv_diffusion.errors import UserError

    if args.concept:
        concept = " ".join(args.concept)
        if exp is not None and concept != exp.concept and not args.allow_other_concept:
            raise UserError(f"experiment {exp.number} weakens {exp.concept!r} heads, not {concept!r}: drop --concept "
                            f"(it defaults to the experiment's), or pass --allow_other_concept to weaken {concept!r} "
                            "heads on these prompts")
        return concept
    if exp is not None:
        return exp.concept
    try:
        concept = experiment(args.experiment_num).concept
    except ValueError:
        raise UserError(f"--experiment_num {args.experiment_num!r} names no experiment: pass --concept") from None
    print(f"note: weakening {concept} heads, the concept of --experiment_num {args.experiment_num} (pass --concept "
          "to choose another)", file=sys.stderr)
    return concept


def prompts_of(args):
    """(prompts, experiment): ``--prompt``, ``--prompt_file`` (no experiment) or the prompts of ``--experiment_num``."""
    from hrv_diffusion.apps.weakening_experiments import build_prompts, experiment
    from hrv_diffusion.hrv.prompts import read_prompt_file

    if args.prompt:
        return [args.prompt], None
    if args.prompt_file:
        return read_prompt_file(Path(args.prompt_file)), None
    exp = experiment(int(args.experiment_num))
    return build_prompts(exp), exp


def concept_word(args, prompt: str, exp) -> str | None:
    """The word whose tokens are weakened (``--weaken concept_word``), None for every prompt token."""
    from hrv_diffusion.apps.output_paths import safe_folder_name
    from hrv_diffusion.apps.weakening_experiments import clip_text_for

    if args.weaken != "concept_word":
        return None
    word = args.concept_word or (clip_text_for(safe_folder_name(prompt), exp) if exp else None)
    if word is None:
        raise ValueError("--weaken concept_word needs --concept_word for a single prompt or prompt file")
    return word


def claim_folders(args, ctx, tree, prompts: list[str], exp, concept: str, source) -> dict:
    """{prompt folder: WeakeningSettings} of this process's prompts, each folder claimed (refused on a conflict)."""
    from hrv_diffusion import __version__
    from hrv_diffusion.apps.weakening import WeakeningSettings
    from hrv_diffusion.cli.common import check_output_dir

    folders = {}
    for i in ctx.my_indices(len(prompts)):
        folder = tree.folder(tree.name(prompts[i]))
        check_output_dir(folder, "--output_path")
        settings = WeakeningSettings(
            model_version=ctx.model_version, model_card=args.model_card, concept=concept, head_source=source.kind,
            hrv_file=source.file, hrv_fingerprint=source.fingerprint, dtype=ctx.dtype,
            reweighting_factor=args.reweighting_factor, reweighting_steps=tuple(args.reweighting_steps),
            n_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale, weaken=args.weaken,
            experiment_num=args.experiment_num, version=__version__, prompt=prompts[i],
            concept_word=concept_word(args, prompts[i], exp), height=args.height, width=args.width)
        tree.claim(folder, settings)
        folders[folder] = settings
    return folders


def head_source(args, ctx):
    """The checked source of head order (``--hrv``, ``--head_roles``, ``--final_result``), read before the model."""
    from hrv_diffusion.apps.weakening_heads import HrvFolder, resolve_heads
    from hrv_diffusion.hrv.concepts import description_name

    folder = HrvFolder(Path(args.final_result), args.epochs, description_name(ctx.description), ctx.model_version)
    return resolve_heads(args.hrv, args.head_roles, folder, args.prompt_type, ctx.concept_names)


def k_list(args, num_heads: int) -> list[int]:
    from hrv_diffusion.hrv.files import default_k_list

    ks = args.heads_to_be_perturbed or [0] + default_k_list(num_heads)
    if max(ks) > num_heads:
        raise ValueError(f"k={max(ks)} is more than the model's {num_heads} CA heads")
    return ks


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.runs import OutputTree, RunReport
    from hrv_diffusion.apps.weakening import RECORDED, plan_jobs, prune_empty_folders, run_weakening
    from hrv_diffusion.cli.common import check_output_dir, interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext

    ctx = RunContext.from_args(args)
    prompts, exp = prompts_of(args)
    concept = _concept(args, exp)
    check_output_dir(args.output_path, "--output_path")
    ctx.check_concepts([concept])
    source = head_source(args, ctx)
    tree = OutputTree(Path(args.output_path) / f"exp_{args.experiment_num}", overwrite=args.overwrite,
                      ignore=RECORDED, retry_hint="use another --output_path for a new folder")
    folders = claim_folders(args, ctx, tree, prompts, exp, concept, source)
    ctx.compile(whole=True)  # the whole forward (issue 21: faster than regions, same H100 run)
    ctx.latent_shape()  # refuses a --height/--width the model cannot take
    ranked = source.ranked(concept, ctx.concept_names, ctx.model_version, ctx.layout)
    jobs = plan_jobs(k_list(args, ctx.layout.num_heads), args.seeds)
    tree.commit()
    for folder in folders if args.overwrite else ():
        prune_empty_folders(folder)
    bar = tqdm(total=len(folders) * len(jobs), unit="image", disable=args.quiet, desc=f"weakening {concept}")
    report = RunReport(root=tree.root)
    try:
        with sigterm_as_interrupt():
            run_weakening(ctx.pipe, folders, ranked, jobs, batch_size=args.batch_size, overwrite=args.overwrite,
                          progress=bar, report=report)
    except KeyboardInterrupt:
        bar.close()
        return interrupted(args, tree.root, PROGRAM)
    bar.close()
    print(report.line())
    return 0


# The toy's shipped HRVs, one toy caption, its Color heads; one seed and k = 0, 14 of its 56 heads (a quarter);
# 20 steps (CPU-sized).
TOY_DEFAULTS = {"hrv": "paper", "prompt": "a red circle", "concept": ["Color"], "seeds": [10],
                "heads_to_be_perturbed": [0, 14], "n_inference_steps": 20}


def main(argv=None, default_card: str = SD_CARD, program: str = PROGRAM, prog: str | None = None) -> int:
    from hrv_diffusion.cli.common import cli_main

    return cli_main(run, build_parser(default_card, prog), argv, program, toy_defaults=TOY_DEFAULTS)


def main_sdxl(argv=None) -> int:
    from hrv_diffusion.cli.common import sdxl_prog

    return main(argv, default_card=SDXL_CARD, program="head_perturbation_analysis_sdxl.py",
                prog=sdxl_prog("hrv-weakening-sdxl"))
