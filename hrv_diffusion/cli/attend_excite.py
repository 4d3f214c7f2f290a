"""attend_and_excite_hrv.py: multi-object generation with A&E-HRV (default), standard A&E or plain SD.

Keeps the reference's flags (SNU-DRL/HRV applications/attend_and_excite_hrv.py). Writes
``{output_path}/{attend_and_excite-hrv|original_attend_and_excite|standard_sd}/exp_{n}/{prompt}/{seed}.png``, a
``{seed}.json`` beside each image with the per-evaluation telemetry (loss, max attention per target, refinement
iterations, whether each threshold was met), the folder's ``manifest.json`` (the settings its images are made with)
and the grid ``exp_{n}/{prompt}.png``. A rerun makes only the missing seeds; a folder made with other settings is
refused unless --overwrite.

Example (the reference's README command):
  python applications/attend_and_excite_hrv.py --prompt "A black cat and a white dog" --seeds 20 \\
      --token_indices 3 7 --smooth_attentions --concepts Animals Animals --hrv paper
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli import attend_excite_flags as ae
from hrv_diffusion.cli.common import TOY_CARDS, ArgumentParser, HelpFormatter, nonnegative_int, prompt_text
from hrv_diffusion.cli.flags import add_generation_flags, add_hrv_flags, add_model_flags, add_output_flags

PROGRAM = "hrv-attend-excite"
OUTPUT_PATH = "./applications/multi_concept_outputs"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("prompt")
    g.add_argument("--prompt", type=prompt_text, required=True, help="the prompt (also the folder name)")
    targets = g.add_mutually_exclusive_group()  # one way to name the targets: both would leave one unused
    targets.add_argument("--token_indices", type=nonnegative_int, nargs="+", default=None,
                   help="positions of the tokens to excite, SOT = 0 (T5, PixArt: the first word = 0) (default: "
                        "--token_words, else the prompt's nouns when nltk and its tagger data are installed, else the "
                        "tokens are listed)")
    targets.add_argument("--token_words", nargs="+", default=None, help="words to excite (all of their BPE pieces)")
    g.add_argument("--run_standard_attend_excite", action="store_true",
                   help="standard A&E: the mean over the heads of the CA layers at ATTENTION_RES (no HRV)")
    g.add_argument("--run_standard_sd", action="store_true", help="plain generation, no update (wins over "
                   "--run_standard_attend_excite)")
    ae.add_attend_excite_flags(p)
    add_model_flags(p.add_argument_group("model"), dtype="float32", scheduler=True, compile_help=ae.COMPILE_HELP)
    add_generation_flags(p.add_argument_group("generation"), seeds=[42], batch_size=4, batch_help=ae.BATCH_HELP,
                         decode="round")
    add_output_flags(p.add_argument_group("output"), default_path=OUTPUT_PATH)
    add_hrv_flags(p.add_argument_group("HRV (A&E-HRV)"), hrv_files=True, description_file=True)
    return p


def run(args) -> int:
    from hrv_diffusion.apps.attend_excite_runs import IGNORED, PromptJob, plan_folders, run_plan
    from hrv_diffusion.apps.attend_excite_tokens import eot_position, resolve_targets
    from hrv_diffusion.apps.runs import OutputTree
    from hrv_diffusion.cli.common import check_output_dir, interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext
    from hrv_diffusion.core.families import text_axis

    ctx, mode = RunContext.from_args(args), ae.mode_of(args)
    check_output_dir(args.output_path, "--output_path")
    ae.parse_thresholds(args.thresholds)
    if mode == "hrv":  # before the model loads
        ctx.check_concepts(args.concepts or [])
        ctx.check_hrv()
    tokenizer, axis = ctx.pipe.tokenizer, text_axis(ctx.pipe)
    ctx.compile()
    positions, labels = resolve_targets(tokenizer, args.prompt, args.token_indices, target_words(args), axis=axis)
    _, h, _ = ctx.latent_shape()  # (C, h, w)
    settings = ae.settings_from(args, mode, h, ctx.pipe)
    concepts = ae.concepts_for(args, len(positions)) if mode == "hrv" else [None] * len(positions)
    ctx.check_concepts(c for c in concepts if c is not None)
    job = PromptJob(args.prompt, positions, labels, concepts, eot_position(tokenizer, args.prompt, axis))
    tree = OutputTree(args.output_path, overwrite=args.overwrite, ignore=IGNORED)
    folders = plan_folders(tree, [job], {mode: settings}, args.experiment_num)
    hrv = ctx.hrv if mode == "hrv" else None
    try:
        with sigterm_as_interrupt():
            report = run_plan(ctx.pipe, tree, folders, args.seeds, ae.run_options(args, ctx, hrv), hrv=hrv,
                              batch_size=args.batch_size, quiet=args.quiet, desc=mode)
    except KeyboardInterrupt:
        return interrupted(args, folders[0].path, PROGRAM)
    report.root = folders[0].path
    print(report.line())
    return 0


# Two toy shapes, excited with the toy's Shape heads (targets: the prompt's shape words); 20 steps (CPU-sized).
TOY_DEFAULTS = {"prompt": "a red circle and a blue square", "concepts": ["Shape"], "n_inference_steps": 20}


def target_words(args) -> list[str] | None:
    """``--token_words``; on the toy without targets given, the prompt's shape words (its nouns, no tagger)."""
    if args.token_words or args.token_indices or args.model_card not in TOY_CARDS:
        return args.token_words
    from hrv_diffusion.toy.data import SHAPES

    words = [w.strip(".,;:!?") for w in args.prompt.split()]
    return [w for w in dict.fromkeys(words) if w in SHAPES] or None


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import cli_main

    return cli_main(run, build_parser(), argv, PROGRAM, toy_defaults=TOY_DEFAULTS)
