"""applications/reduce_misinterpretation.py: SD-HRV / SDXL-HRV concept adjusting (SD v1.x and SDXL).

The word --selected_token of --prompt (all of its BPE pieces) gets, in every cross-attention head k, its
post-softmax attention multiplied by m_k = 2·HRV[desired, k] − HRV[undesired, k] (each HRV element first clamped
at --clamping_value: 9 by default for SDXL, no clamp for SD v1.x, as the reference's notebooks), on the conditional
half, at every evaluation, without renormalization. The standard and the adjusted image of each seed come from the
same starting noise, generated in one batch (--batch_size rows per call), and are written in the published layout:

    {output_path}/prompt_{NN}_{prompt, spaces -> _}/standard_sd/{seed}.png       (SDXL: sdxl_prompt_.../standard_sdxl)
    {output_path}/prompt_{NN}_{prompt, spaces -> _}/sd-hrv/{seed}.png            (SDXL: .../sdxl-hrv)
    {output_path}/prompt_{NN}_{prompt, spaces -> _}/side_by_side.png   (labelled: top standard, bottom adjusted)

manifest.json records the settings. A rerun makes only the missing images; a folder made with other settings is
refused unless --overwrite (which regenerates its images). See docs/adjust.md.
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli.common import (TOY_CARDS, ArgumentParser, HelpFormatter, finite_float, nonnegative_int,
                                      prompt_text, step_fraction)
from hrv_diffusion.cli.flags import add_generation_flags, add_hrv_flags, add_model_flags, add_output_flags

PROGRAM = "reduce_misinterpretation.py"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("the reference's settings")
    g.add_argument("--prompt", type=prompt_text, default="A vase in lavender color", help="the prompt")
    g.add_argument("--selected_token", "--word", "--target_token", dest="word", default=None,
                   help="the word of the prompt to adjust, all of its BPE pieces (e.g. lavender, rose-colored); "
                        "required")
    g.add_argument("--desired", default="Color", help="the concept the word should be read as")
    g.add_argument("--undesired", default="Plants",
                   help="the concept the word should not be read as ('none': strengthen the desired one only)")
    g.add_argument("--clamping_value", "--clamp", dest="clamp", default="auto",
                   help="upper bound of every HRV element before 2·d − u: a number, 'none', or 'auto' (9 for SDXL, "
                        "none for SD v1.x, as the reference's notebooks)")
    g.add_argument("--reweight_steps", type=step_fraction, nargs=2, default=[0.0, 1.01], metavar=("START", "END"),
                   help="adjusted evaluations [int(START·(S+1)), int(END·(S+1))): the reference's [0, 1.01] = all")
    g.add_argument("--prompt_num", type=nonnegative_int, default=1, help="NN of the output folder prompt_NN_...")
    add_model_flags(p.add_argument_group("model"))
    add_generation_flags(p.add_argument_group("generation"), seeds=range(1, 11), batch_size=16,
                         batch_help="rows per pipeline call; a seed's standard and adjusted images are two rows",
                         decode="truncate")
    add_output_flags(p.add_argument_group("output"), default_path="./reduce_misinterpretation_outputs")
    a = p.add_argument_group("HRV and adjustment")
    add_hrv_flags(a)
    a.add_argument("--weights", nargs="+", default=None, metavar="CONCEPT=WEIGHT",
                   help="any weighted combination instead of 2·desired − undesired, e.g. Color=2 Plants=-1 "
                        "Material=0.5")
    a.add_argument("--min_factor", type=finite_float, default=None,
                   help="lower bound of the head factors (the reference has none: factors can be negative)")
    a.add_argument("--renormalize", action="store_true",
                   help="divide each query's adjusted probabilities by their sum (needs --min_factor >= 0; slower: "
                        "explicit attention on the adjusted rows)")
    return p


def parse_clamp(value, sdxl: bool) -> float | None:
    from hrv_diffusion.apps.adjust import SDXL_CLAMP
    from hrv_diffusion.errors import UserError

    text = str(value).strip().lower()
    if text == "auto":
        return SDXL_CLAMP if sdxl else None
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--clamping_value takes a number, 'none' or 'auto', not {value!r}") from None


def parse_weights(args) -> dict[str, float]:
    from hrv_diffusion.apps.adjust import sd_hrv_weights
    from hrv_diffusion.errors import UserError

    if not args.weights:
        undesired = None if str(args.undesired).lower() == "none" else args.undesired
        return sd_hrv_weights(args.desired, undesired)
    out = {}
    for item in args.weights:
        concept, sep, value = item.rpartition("=")
        try:
            out[concept] = float(value)
        except ValueError:
            sep = ""
        if not sep or not concept:
            raise UserError(f"--weights takes CONCEPT=WEIGHT, e.g. Color=2 Plants=-1, not {item!r}")
    return out


def adjustment_from(args, ctx):
    """The adjustment the flags ask for, checked before anything loads (word, batch size, concepts, clamp)."""
    from hrv_diffusion.apps.adjust import Adjustment, word_columns
    from hrv_diffusion.core.models import reads_t5_text
    from hrv_diffusion.core.tokenizer import clip_tokenizer
    from hrv_diffusion.errors import UserError

    if not args.word:
        raise UserError("--selected_token is required: the word of the prompt to adjust, e.g. --selected_token "
                        f"{args.prompt.split()[-1]!r}")
    if args.batch_size < 2:
        raise UserError("--batch_size must be at least 2: a seed's standard and adjusted images are two rows")
    weights = parse_weights(args)
    ctx.check_concepts(weights)
    if not reads_t5_text(args.model_card):  # PixArt's T5 words: checked once loaded, on its own text length
        word_columns(clip_tokenizer(), args.prompt, args.word)
    return Adjustment(args.word, weights, clamp=parse_clamp(args.clamp, ctx.is_sdxl()),
                      steps=tuple(args.reweight_steps), min_factor=args.min_factor, renormalize=args.renormalize)


def claim(args, ctx, settings):
    """The run's output tree and folders, after checking the prompt folder against ``settings`` but the HRV's
    fingerprint (it needs the loaded UNet's head order: ``run`` claims the folder with it after loading)."""
    from hrv_diffusion.apps.adjust_runs import AdjustFolders
    from hrv_diffusion.apps.runs import OutputTree

    hint = "use another --output_path or --prompt_num"
    early = OutputTree(args.output_path, overwrite=args.overwrite, ignore=("hrv_fingerprint",), retry_hint=hint)
    folders = AdjustFolders.of(early, args.prompt, args.prompt_num, ctx.is_sdxl())
    early.claim(folders.root, settings.manifest())
    return OutputTree(args.output_path, overwrite=args.overwrite, retry_hint=hint), folders


def run(args) -> int:
    from dataclasses import replace

    from tqdm.auto import tqdm

    from hrv_diffusion.apps.adjust_runs import (ROWS_PER_SEED, AdjustSettings, batch_maker, seeds_to_make,
                                                write_side_by_side)
    from hrv_diffusion.apps.runs import run_batches
    from hrv_diffusion.cli.common import interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext

    ctx = RunContext.from_args(args)
    adjustment = adjustment_from(args, ctx)
    ctx.check_hrv()  # a missing download or an HRV of other concepts fails before the model loads
    settings = AdjustSettings(args.prompt, ctx.card, ctx.model_version, ctx.dtype, args.n_inference_steps,
                              args.guidance_scale, args.decode, adjustment, str(ctx.hrv_source),
                              height=args.height, width=args.width)
    tree, folders = claim(args, ctx, settings)
    ctx.latent_shape()  # loads the model; a size the UNet cannot take fails here
    settings = replace(settings, hrv_fingerprint=ctx.hrv.fingerprint())
    tree.claim(folders.root, settings.manifest())
    tree.commit()
    todo = seeds_to_make(tree, folders, args.seeds)
    bar = tqdm(total=len(todo), unit="seed", disable=args.quiet, desc="SD-HRV")
    try:
        with sigterm_as_interrupt():
            report = run_batches(todo, batch_maker(ctx.pipe, tree, folders, settings, ctx.hrv),
                                 batch_size=args.batch_size, rows=lambda seed: ROWS_PER_SEED, progress=bar)
    except KeyboardInterrupt:
        return interrupted(args, folders.root, PROGRAM)
    finally:
        bar.close()
    report.root, report.present = folders.root, ROWS_PER_SEED * len(dict.fromkeys(args.seeds)) - report.written
    grid = "written" if write_side_by_side(folders, args.seeds, settings) else "unchanged"
    print(f"{report.line()}; side by side ({grid}): {folders.grid}{toy_note(ctx, args)}")
    return 0


TOY_NOTE = ("; note: on the toy the paper's rule (negative head factors allowed) often blanks the object (2-3 of 4 "
            "seeds); --min_factor 0 keeps it (docs/adjust.md)")


def toy_note(ctx, args) -> str:
    """The toy's caveat for the summary line, when the paper's unbounded rule ran on the toy."""
    return TOY_NOTE if ctx.card in TOY_CARDS and args.min_factor is None else ""


# The toy's word read two ways (docs/adjust.md): a color and a striped background; 4 seeds, 20 steps (CPU-sized).
TOY_DEFAULTS = {"prompt": "a red-striped circle", "word": "red-striped", "desired": "Color",
                "undesired": "Background", "seeds": [1, 2, 3, 4], "n_inference_steps": 20}


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import cli_main

    return cli_main(run, build_parser(), argv, PROGRAM, toy_defaults=TOY_DEFAULTS)


if __name__ == "__main__":
    raise SystemExit(main())
