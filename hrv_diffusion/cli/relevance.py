"""head_relevance_calculation.py / head_relevance_calculation_sdxl.py: count the CA-head votes that make HRVs.

Keeps the reference's flags and their meaning, and adds batching, dtype, seeding, output folder, checkpoints and
resume. Runs one process, a subset (--subset_running), or one rank of ``torchrun`` / ``accelerate launch``
(each rank writes its own shard; ``extract_head_relevance_vectors.py`` merges them).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, nonnegative_float, nonnegative_int, output_folder,
                                      positive_int)
from hrv_diffusion.cli.flags import SD_CARD, SDXL_CARD, SplitValue, add_model_flags


def build_parser(default_card: str = SD_CARD, default_batch: int = 16,
                 prog: str | None = None) -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=prog,
        description="Generate images from many prompts while every cross-attention head votes for the concept it "
                    "attends to most; write the vote counts (one shard per process and epoch) to OUTPUT_DIR/results/. "
                    "Then run extract_head_relevance_vectors.py to turn the counts into HRVs.",
        formatter_class=HelpFormatter)
    g = p.add_argument_group("published flags")
    g.add_argument("--subset_running", action="store_true", help="run only part NUMERATOR of DENOMINATOR of the prompts")
    g.add_argument("--numerator", type=positive_int, default=1, action=SplitValue,
                   help="with --subset_running: which part of the prompts to run, 1..DENOMINATOR")
    g.add_argument("--denominator", type=positive_int, default=5, action=SplitValue,
                   help="with --subset_running: into how many equal, contiguous parts the prompt list is split "
                        "(run NUMERATOR = 1..DENOMINATOR, e.g. one per GPU, then extract merges the shards)")
    g.add_argument("--prompt", default="imagenet",
                   help="prompt list: a name (prompt/prompt_list_NAME.txt, here first, then the project's prompt/; "
                        "built in: imagenet, merged) or a path")
    g.add_argument("--description", default="340_final_text_descriptions",
                   help="concept set: a name (descriptions/NAME.txt here first, then the project's) or a path")
    g.add_argument("--negative_prompt", action="store_true",
                   help="use the reference's fixed negative prompt instead of '' (SD 1.x only; not used in the paper)")
    g.add_argument("--epochs", type=positive_int, default=1, help="passes over the prompts; each draws new words")
    g.add_argument("--num_words_per_concept", type=positive_int, default=None,
                   help="check the concept set has this many words per concept")
    g.add_argument("--num_concepts", type=positive_int, default=None,
                   help="check the concept set has this many concepts")
    g = p.add_argument_group("added")
    g.add_argument("--batch_size", type=positive_int, default=default_batch, help="prompts per pipeline call")
    g.add_argument("--seed", type=nonnegative_int, default=22, help="seed of latents and word sampling")
    g.add_argument("--legacy_seeding", action="store_true",
                   help="reproduce the reference's latents: one CPU generator seeded SEED, one randn per prompt in order")
    g.add_argument("--num_inference_steps", type=positive_int, default=50, help="50 PNDM steps = 51 UNet evaluations")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--output_dir", type=output_folder, default=".",
                   help="embeddings are read from OUTPUT_DIR/word_lists, shards written to OUTPUT_DIR/results")
    g.add_argument("--embeddings", default=None, help="text-embedding file (default: OUTPUT_DIR/word_lists/...)")
    g.add_argument("--resume", action="store_true", help="continue existing shards instead of refusing to overwrite them")
    g.add_argument("--checkpoint_every", type=positive_int, default=100, help="save the shard every N prompts")
    g.add_argument("--max_prompts", type=positive_int, default=None, help="use only the first N prompts of the list")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_flags(p.add_argument_group("model"), default_card=default_card, scheduler=True,
                    compile_help="compile the UNet's forward but the cross-attention layers (faster on GPUs for long "
                                 "runs; votes agree with eager ones on about 99.9%% of counts, docs/performance.md)")
    return p


def read_inputs(args, card_version: str):
    """(concept set, its name, prompts, text embeddings), checked before the model loads."""
    from hrv_diffusion.hrv.concepts import check_counts, description_name, read_concept_set, resolve_description
    from hrv_diffusion.hrv.embeddings import embeddings_path, load_text_embeddings
    from hrv_diffusion.hrv.prompts import load_prompts

    concepts = read_concept_set(resolve_description(args.description), args.num_concepts,
                                args.num_words_per_concept)
    check_counts(concepts, args.num_concepts, args.num_words_per_concept)
    description = description_name(args.description)
    prompts = load_prompts(args.prompt)
    if args.max_prompts:
        prompts = prompts[: args.max_prompts]
    emb_file = (Path(args.embeddings) if args.embeddings
                else embeddings_path(Path(args.output_dir), description, card_version))
    if not emb_file.exists():
        raise FileNotFoundError(
            f"no text embeddings at {emb_file}: run first\n  python descriptions_to_text_embeddings.py "
            f"--model_card {args.model_card} --description {args.description} --output_dir {args.output_dir}")
    embeddings = load_text_embeddings(emb_file, expect={"model_version": card_version,
                                                        "concept_fingerprint": concepts.fingerprint()})
    return concepts, description, prompts, embeddings


def relevance_settings(args, ctx, description: str):
    from hrv_diffusion.hrv.construction import RelevanceSettings
    from hrv_diffusion.hrv.prompts import prompt_name

    return RelevanceSettings(
        model_card=args.model_card, model_version=ctx.model_version, description=description,
        prompt=prompt_name(args.prompt), epochs=args.epochs, num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale, negative_prompt=args.negative_prompt, seed=args.seed,
        seeding="legacy" if args.legacy_seeding else "per_prompt", batch_size=args.batch_size, dtype=ctx.dtype,
        subset=[args.numerator, args.denominator] if args.subset_running else None,
        checkpoint_every=args.checkpoint_every, compile=args.compile, extra={"scheduler": args.scheduler})


def run(args) -> int:
    import torch

    from hrv_diffusion.cli.common import check_output_dir, rerun_command, sigterm_as_interrupt
    from hrv_diffusion.cli.context import RunContext
    from hrv_diffusion.core.models import model_version
    from hrv_diffusion.hrv.concepts import check_token_lengths
    from hrv_diffusion.hrv.construction import RelevanceInterrupted, run_relevance
    from hrv_diffusion.hrv.prompts import prompts_fingerprint

    check_output_dir(args.output_dir, "--output_dir")
    check_output_dir(Path(args.output_dir) / "results", "--output_dir")
    ctx = RunContext.from_args(args)  # device (LOCAL_RANK under torchrun), dtype, rank and world size
    if ctx.world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    # the text embeddings are made under the card's own model version, whatever --model_version says
    concepts, description, prompts, embeddings = read_inputs(args, model_version(args.model_card))
    indices = ctx.my_indices(len(prompts))
    check_token_lengths(concepts, ctx.pipe.tokenizer)
    ctx.compile(whole=True)  # HRV construction: the whole forward (docs/performance.md, issue 21)
    metadata = {"concept_fingerprint": concepts.fingerprint(), "concept_names": list(concepts.names),
                "prompt_fingerprint": prompts_fingerprint(prompts)}
    try:
        with sigterm_as_interrupt():
            paths = run_relevance(ctx.pipe, relevance_settings(args, ctx, description), concepts, embeddings,
                                  prompts, indices, metadata, Path(args.output_dir) / "results", rank=ctx.rank,
                                  world_size=ctx.world, resume=args.resume, progress=not args.quiet)
    except RelevanceInterrupted as stop:
        again = rerun_command(args._program, args._argv, ("--resume",))
        saved = (f"saved {stop.done} of {stop.total} prompts of epoch {stop.epoch} to {stop.path}" if stop.path
                 else "no prompt had finished, nothing saved")
        print(f"interrupted: {saved}; continue with: {again}", file=sys.stderr)
        return 130
    for path in paths:
        print(f"rank {ctx.rank}: wrote {path}" if ctx.world > 1 else f"wrote {path}")
    if ctx.world > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return 0


# The toy's concept set and captions; its first 8 of 256 captions (CPU-sized; --max_prompts 256: all).
TOY_DEFAULTS = {"description": "toy_concepts", "prompt": "toy", "max_prompts": 8}


def main(argv=None, default_card: str = SD_CARD, default_batch: int = 16,
         program: str = "head_relevance_calculation.py", prog: str | None = None) -> int:
    from hrv_diffusion.cli.common import program_name, run_cli, use_toy_defaults

    parser = build_parser(default_card, default_batch, prog)
    use_toy_defaults(parser, argv, TOY_DEFAULTS)
    args = parser.parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # to print the --resume command after Ctrl-C
    args._program = program_name(argv, program)
    return run_cli(run, args)


def main_sdxl(argv=None) -> int:
    from hrv_diffusion.cli.common import sdxl_prog

    return main(argv, default_card=SDXL_CARD, default_batch=4, program="head_relevance_calculation_sdxl.py",
                prog=sdxl_prog("hrv-relevance-sdxl"))


if __name__ == "__main__":
    raise SystemExit(main())
