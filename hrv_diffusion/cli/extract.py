"""Merge HRV shards and write the published outputs (replaces the reference's extraction notebook).

    python extract_head_relevance_vectors.py                      # results/ -> final_result/
    python extract_head_relevance_vectors.py --results_dir runs/a --output_dir runs/a/final_result
    python extract_head_relevance_vectors.py --shards results/x_rank_0.npz results/x_rank_1.npz

Shards in ``--results_dir`` (or the ``--shards`` given) are used when their metadata matches ``--prompt``,
``--description``, the model version of ``--model_card`` and ``--negative_prompt``; others are skipped with a note.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.hrv.files import write_published
from hrv_diffusion.hrv.shards import Shard, ShardFormatError, find_shards, load_shard, merge_shards
from hrv_diffusion.cli.common import run_cli
from hrv_diffusion.errors import UserError
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int

SHARD_MAKER = "head_relevance_calculation.py"


class ExtractError(UserError):
    """A problem the user can fix; printed as one ``error:`` line."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        formatter_class=HelpFormatter,
        prog="extract_head_relevance_vectors.py",
        description="Merge HRV vote-count shards and write category_vectors, head_index, head_roles, ... files. "
                    "Assumes SD v1.4's shards (--model_card CompVis/stable-diffusion-v1-4); choose another model "
                    "with --model_card.",
    )
    parser.add_argument("--results_dir", default="results", help="folder with the shards (*.npz)")
    parser.add_argument("--shards", nargs="+", type=Path, help="explicit shard files (instead of --results_dir)")
    parser.add_argument("--output_dir", default="final_result", help="where to write")
    parser.add_argument("--prompt", default="imagenet", help="prompt list name (or file) the shards were made with")
    parser.add_argument("--description", default="340_final_text_descriptions", help="concept word set name")
    parser.add_argument("--model_card", default="CompVis/stable-diffusion-v1-4",
                        help="the model the shards were made with; only its shards are used (matched by model version: "
                             "sd_v1_4 for the default SD v1.4; pass stabilityai/stable-diffusion-xl-base-1.0 for SDXL, "
                             "toy or tiny-sd for the built-in models, or the same card or folder given to "
                             "head_relevance_calculation.py)")
    parser.add_argument("--negative_prompt", action="store_true", help="select shards made with the negative prompt")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="use epochs 1..E (all must be present); default: every epoch found")
    return parser


def _model_version(card: str) -> str:
    from hrv_diffusion.core.models import model_version  # imports torch: only when needed

    return model_version(card)


def _describe(meta: dict) -> str:
    return (f"prompt={meta.get('prompt')} description={meta.get('description')} "
            f"model_version={meta.get('model_version')} negative_prompt={bool(meta.get('negative_prompt', False))}")


def select_shards(paths: list[Path], *, prompt: str, description: str, model_version: str, negative_prompt: bool,
                  epochs: int | None) -> tuple[list[Shard], list[str]]:
    """Load ``paths`` and keep the shards of the wanted run. Returns (shards, notes about skipped files)."""
    wanted = {"prompt": prompt, "description": description, "model_version": model_version}
    selected, notes, others = [], [], {}
    for path in paths:
        try:
            shard = load_shard(path)
        except ShardFormatError as error:
            notes.append(f"skipped {path}: {error}")
            continue
        meta = shard.metadata
        differs = [f"{key} {meta.get(key)!r}" for key, value in wanted.items() if meta.get(key) != value]
        if bool(meta.get("negative_prompt", False)) != negative_prompt:
            differs.append(f"negative_prompt {bool(meta.get('negative_prompt', False))}")
        if epochs is not None and not 1 <= shard.epoch <= epochs:
            differs.append(f"epoch {shard.epoch}")
        if differs:
            notes.append(f"skipped {path}: {', '.join(differs)}")
            others[_describe(meta)] = others.get(_describe(meta), 0) + 1
        else:
            selected.append(shard)
    if not selected and others:
        found = "; ".join(f"{run} ({n} shard(s))" for run, n in others.items())
        raise ExtractError(
            f"no shard matches prompt={prompt} description={description} model_version={model_version} "
            f"negative_prompt={negative_prompt}; found: {found} (set --prompt/--description/--model_card/"
            f"--negative_prompt to match)"
        )
    return selected, notes


def _shard_paths(args) -> tuple[list[Path], str]:
    if args.shards:
        missing = [str(p) for p in args.shards if not p.is_file()]
        if missing:
            raise ExtractError(f"shard file(s) not found: {', '.join(missing)}")
        return list(args.shards), "the --shards given"
    folder = Path(args.results_dir)
    how = f"make shards with {SHARD_MAKER} (or pass --results_dir / --shards)"
    if not folder.is_dir():
        raise ExtractError(f"results folder {folder.resolve()} does not exist; {how}")
    paths = find_shards(folder)
    if not paths:
        raise ExtractError(f"no HRV shards (*.npz) in {folder.resolve()}; {how}")
    return paths, str(folder.resolve())


def run(args) -> list[Path]:
    from hrv_diffusion.hrv.concepts import description_name
    from hrv_diffusion.hrv.prompts import prompt_name

    args.prompt, args.description = prompt_name(args.prompt), description_name(args.description)
    model_version = _model_version(args.model_card)
    paths, where = _shard_paths(args)
    shards, notes = select_shards(paths, prompt=args.prompt, description=args.description,
                                  model_version=model_version, negative_prompt=args.negative_prompt,
                                  epochs=args.epochs)
    for note in notes:
        print(note)
    if not shards:
        raise ExtractError(f"no HRV shards in {where}; make shards with {SHARD_MAKER}")
    merged = merge_shards(shards)
    epochs = merged.metadata["epochs"]
    if args.epochs is not None and epochs != list(range(1, args.epochs + 1)):
        missing = sorted(set(range(1, args.epochs + 1)) - set(epochs))
        raise ExtractError(f"--epochs {args.epochs} asks for epochs 1..{args.epochs} but epoch(s) {missing} have no shards")
    if epochs != list(range(1, max(epochs) + 1)):
        merged.report.append(f"warning: epochs {epochs} are not 1..{max(epochs)}, yet the file names say "
                             f"epoch_1_to_{max(epochs)}")
    for line in merged.report:
        print(line)
    meta = merged.metadata
    for key in ("head_labels", "concept_names"):
        if not meta.get(key):
            raise ExtractError(f"the shards' metadata has no {key}; re-make them with {SHARD_MAKER}")
    return write_published(
        args.output_dir, merged.counts, merged.num_prompts, meta["head_labels"], meta["concept_names"],
        epochs=epochs, negative_prompt=args.negative_prompt, prompt=args.prompt, description=args.description,
        model_version=model_version,
    )


def main(argv=None) -> int:
    return run_cli(_main, build_parser().parse_args(argv))


def _main(args) -> int:
    written = run(args)
    print(f"wrote {len(written)} files to {Path(args.output_dir).resolve()}:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
