"""applications/p2p_hrv.py: edit an image with Prompt-to-Prompt and P2P-HRV (SD v1.x and SDXL).

Keeps the reference's flags and output layout. For each seed, the source prompt's image is generated once and
shared by the P2P baseline (--save_original_p2p) and P2P-HRV for every --concepts entry, all in one batch:

    {output_path}/exp_{N}/source/{source}/{seed}.png
    {output_path}/exp_{N}/original_p2p/{source}_to_{target}/{seed}.png
    {output_path}/exp_{N}/{concept}_{self_replace_steps}/{source}_to_{target}/{seed}.png
    {output_path}/exp_{N}/comparison/{source}_to_{target}.png   (labelled: a row per seed, source and each method)

P2P-HRV: during the cross window the target prompt attends like the source (word-swap mapper), except the
--target_token columns, which keep the target's own attention times the head's HRV value for the concept. Existing
images are skipped (resume); each folder's manifest.json records its settings. See docs/p2p.md.
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli.common import TOY_CARDS, ArgumentParser, HelpFormatter, cli_main, prompt_text
from hrv_diffusion.cli.p2p_flags import add_added_flags, add_mode_flags, add_shared_groups, add_window_flags

PROGRAM = "hrv-p2p"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("published flags")
    g.add_argument("--prompts", type=prompt_text, nargs="+", default=None, metavar="PROMPT", help="SOURCE TARGET (required)")
    g.add_argument("--concepts", nargs="*", default=["Color"],
                   help="one P2P-HRV method and folder per concept; no value: the P2P baseline alone")
    g.add_argument("--target_token", default=None,
                   help="the word of the target prompt that P2P-HRV restores, e.g. red (required for P2P-HRV)")
    add_window_flags(g)
    add_mode_flags(g)
    add_shared_groups(p.add_argument_group("model, generation, outputs and HRV"),
                      output_path="./applications/image_editing_outputs")
    add_added_flags(p.add_argument_group("added"))
    return p


def checked_specs(args) -> list:
    """The methods of the flags, with the prompts and the target token checked (before anything loads)."""
    from hrv_diffusion.apps.p2p import Edit, check_edit, check_edit_flags
    from hrv_diffusion.cli.p2p_flags import method_specs
    from hrv_diffusion.core.models import reads_t5_text
    from hrv_diffusion.core.tokenizer import clip_tokenizer
    from hrv_diffusion.errors import UserError

    if not args.prompts or len(args.prompts) != 2:
        raise UserError("--prompts takes two prompts: SOURCE TARGET, e.g. --prompts \"a blue car\" \"a red car\"")
    source, target = args.prompts
    if " ".join(source.lower().split()) == " ".join(target.lower().split()):  # the same tokens to CLIP
        raise UserError(f"--prompts: the source and the target prompt are the same ({source!r}): there is nothing "
                        "to edit; give a target that differs, e.g. --prompts \"a blue car\" \"a red car\"")
    if args.model_card in TOY_CARDS and not args.target_token:  # the toy's default: the one swapped word, if one
        from hrv_diffusion.apps.p2p import swapped_words

        swapped = swapped_words(source, target) if len(source.split()) == len(target.split()) else []
        args.target_token = target.split()[swapped[0]] if len(swapped) == 1 else None
    specs = method_specs(args)
    # Words are checked here with the CLIP tokenizer (SD 1.x / 2.x / SDXL, the toys), before the model loads; a T5
    # card's (PixArt-α/Σ) words are T5 tokens on its own text length (120, 300), checked by generate_edits once loaded.
    t5 = reads_t5_text(args.model_card)
    tokenizer = None if t5 else clip_tokenizer()
    for spec in specs:
        edit = Edit(target, spec, args.target_token)
        if t5:
            check_edit_flags(source, edit)
        else:
            check_edit(tokenizer, source, edit)
    return specs


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.p2p_runs import EditLayout, Pair, run_edits, write_comparison
    from hrv_diffusion.cli.common import check_output_dir, interrupted, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext
    from hrv_diffusion.cli.p2p_flags import compile_skip, method_specs, run_settings

    specs = checked_specs(args)
    check_output_dir(args.output_path, "--output_path")
    ctx = RunContext.from_args(args)
    ctx.check_concepts(args.concepts)
    uses_hrv = any(s.uses_hrv for s in specs)
    if uses_hrv:
        ctx.check_hrv()
    ctx.latent_shape()  # loads the model; a --height/--width it cannot make fails here
    if args.head_list_path:
        specs = method_specs(args, ctx.layout)
    hrv = ctx.hrv if uses_hrv else None
    settings = run_settings(args, ctx, hrv)
    exp = EditLayout(args.output_path, args.experiment_num, settings, overwrite=args.overwrite)
    pair = Pair(*args.prompts, args.target_token, tuple(specs))
    ctx.compile(skip=compile_skip(ctx, settings))
    bar = tqdm(unit="edit", disable=args.quiet, desc="P2P edits")
    try:
        with sigterm_as_interrupt():
            report = run_edits(ctx.pipe, [pair], args.seeds, exp, hrv=hrv, batch_size=args.batch_size,
                               masks=args.save_masks, progress=bar)
    except KeyboardInterrupt:
        return interrupted(args, exp.exp_dir, PROGRAM)
    finally:
        bar.close()
    done = report.details
    state = "written" if write_comparison(exp, pair, args.seeds, force=report.written > 0) else "unchanged"
    print(f"{done['edits']} edited and {done['sources']} source images written "
          f"({', '.join(s.name for s in specs)}); {report.line()}; "
          f"comparison ({state}): {exp.comparison_path(*args.prompts)}")
    return 0


# A toy color swap with the paper's P2P-HRV (the toy's Color HRV); 2 seeds, 20 steps (CPU-sized). Without
# --target_token the toy restores the one swapped word (checked_specs).
TOY_DEFAULTS = {"prompts": ["a red circle", "a blue circle"], "use_soft_vector": True, "n_inference_steps": 20,
                "seeds": [10, 20]}


def main(argv=None) -> int:
    return cli_main(run, build_parser(), argv, PROGRAM, toy_defaults=TOY_DEFAULTS)
