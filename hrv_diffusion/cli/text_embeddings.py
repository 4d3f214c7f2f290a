"""Encode a concept set's words with a model's text encoder (step 1 of the HRV pipeline).

Writes ``OUTPUT_DIR/word_lists/text_embedding_{description}_{model_version}.safetensors`` and prints its path.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, nonnegative_int, output_folder, positive_int,
                                      run_cli)
from hrv_diffusion.cli.flags import SD_CARD
from hrv_diffusion.core.models import DTYPES
from hrv_diffusion.hrv.concepts import (DEFAULT_DESCRIPTION, check_token_lengths, description_name,
                                        read_concept_set, resolve_description)
from hrv_diffusion.hrv.embeddings import build_text_embeddings, embeddings_path, save_text_embeddings


@dataclass
class TextEmbeddingSettings:
    """One run's settings (the parsed command line)."""

    description: str = DEFAULT_DESCRIPTION
    model_card: str = SD_CARD
    gpu_num: int = 0
    device: str | None = None
    dtype: str = "float32"
    batch_size: int = 32
    output_dir: str = "."
    num_concepts: int | None = None
    num_words_per_concept: int | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="descriptions_to_text_embeddings.py",
        description="Encode every word of a concept set with the text encoder of a Stable Diffusion model. "
                    "Writes OUTPUT_DIR/word_lists/text_embedding_{description}_{model_version}.safetensors "
                    "(embeddings (W, 77, D) float32, token lengths with SOT and EOT, and metadata naming the "
                    "model and the concept set) and prints its path.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--description", default=DEFAULT_DESCRIPTION,
                        help="concept set: a file path, or a NAME looked up as descriptions/NAME.txt|.csv in the "
                             "current directory, then in the project's descriptions/ folder")
    parser.add_argument("--model_card", default=SD_CARD,
                        help="hub id (from the local cache), local diffusers folder, or tiny-sd / tiny-sd2 / tiny-sdxl")
    parser.add_argument("--gpu_num", type=nonnegative_int, default=0, help="use cuda:GPU_NUM when CUDA is available")
    parser.add_argument("--device", default=None, help="torch device (e.g. cpu, cuda:1); overrides --gpu_num")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="model dtype; the stored embeddings are float32 either way")
    parser.add_argument("--batch_size", type=positive_int, default=32, help="words encoded per text-encoder call")
    parser.add_argument("--output_dir", type=output_folder, default=".", help="folder that receives word_lists/")
    parser.add_argument("--prompt", default=None,
                        help="ignored here: accepted so that the three HRV scripts take the same flags")
    parser.add_argument("--num_concepts", type=positive_int, default=None,
                        help="check that the set has this many concepts (the paper: 34)")
    parser.add_argument("--num_words_per_concept", type=positive_int, default=None,
                        help="check that every concept has this many words (the paper: 10); also splits a "
                             "words-only file into concepts")
    return parser


def run(settings: TextEmbeddingSettings) -> str:
    """Encode and save; returns the written path."""
    path = resolve_description(settings.description)
    cs = read_concept_set(path, settings.num_concepts, settings.num_words_per_concept)
    from hrv_diffusion.cli.common import check_output_dir
    from hrv_diffusion.cli.context import RunContext

    check_output_dir(settings.output_dir, "--output_dir")  # before the model is loaded
    ctx = RunContext.from_args(settings)  # the text encoder only: any scheduler
    check_token_lengths(cs, ctx.pipe.tokenizer)
    name = description_name(path)
    te = build_text_embeddings(ctx.pipe, cs, settings.model_card, name, batch_size=settings.batch_size)
    out = embeddings_path(settings.output_dir, name, ctx.model_version)
    save_text_embeddings(out, te)
    print(f"{cs.num_concepts} concepts, {len(cs.flat_words)} words -> {tuple(te.embeddings.shape)}",
          file=sys.stderr)
    return str(out)


TOY_DEFAULTS = {"description": "toy_concepts"}


def main(argv: list[str] | None = None) -> int:
    from hrv_diffusion.cli.common import use_toy_defaults

    parser = build_parser()
    use_toy_defaults(parser, argv, TOY_DEFAULTS)
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        build_parser().error("--batch_size must be at least 1")
    settings = TextEmbeddingSettings(**{k: v for k, v in vars(args).items()
                                        if k != "prompt" and not k.startswith("_")})
    return run_cli(lambda s: print(run(s)), settings)


if __name__ == "__main__":
    raise SystemExit(main())
