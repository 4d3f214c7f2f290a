"""Merge HRV shards and write the published outputs (replaces the reference's extraction notebook).

    python extract_head_relevance_vectors.py                      # results/ -> final_result/
    python extract_head_relevance_vectors.py --output_dir runs/a  # runs/a/results/ -> runs/a/final_result/
    python extract_head_relevance_vectors.py --shards results/x_rank_0.npz results/x_rank_1.npz

``--output_dir`` means what it means in head_relevance_calculation.py and descriptions_to_text_embeddings.py: the
project folder that holds results/ (the shards) and receives final_result/ (the HRVs).

Shards in ``--results_dir`` (or the ``--shards`` given) are used when their metadata matches ``--prompt``,
``--description``, the model version of ``--model_card`` and ``--negative_prompt``; others are skipped with a note.

Strict by default: when the shards miss prompts or epochs, hold an unfinished checkpoint, or a shard file is
unreadable, nothing is written; a short summary and a non-zero exit say what is missing. ``--allow_partial``
writes the files anyway and records the coverage in ``coverage_{stem}.json`` and in the tidy CSV.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.hrv.files import write_published
from hrv_diffusion.hrv.shards import (NotAShardError, Shard, ShardFormatError, find_shards, index_ranges, load_shard,
                                      merge_shards)
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int, run_cli, output_folder
from hrv_diffusion.cli.flags import SD_CARD, SDXL_CARD
from hrv_diffusion.errors import UserError

SHARD_MAKER = "head_relevance_calculation.py"


class ExtractError(UserError):
    """A problem the user can fix; printed as one ``error:`` line."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        formatter_class=HelpFormatter,
        prog="extract_head_relevance_vectors.py",
        description="Merge HRV vote-count shards and write category_vectors, head_index, head_roles, ... files. "
                    f"Assumes SD v1.4's shards (--model_card {SD_CARD}); choose another model "
                    "with --model_card.",
    )
    parser.add_argument("--results_dir", default=None,
                        help="folder with the shards (*.npz); default OUTPUT_DIR/results")
    parser.add_argument("--shards", nargs="+", type=Path, help="explicit shard files (instead of --results_dir)")
    parser.add_argument("--output_dir", type=output_folder, default=".",
                        help="project folder, as in head_relevance_calculation.py: shards are read from "
                             "OUTPUT_DIR/results, HRVs written to OUTPUT_DIR/final_result; default .")
    parser.add_argument("--final_result", type=output_folder, default=None,
                        help="where the HRV files go (the weakening scripts' --final_result); default "
                             "OUTPUT_DIR/final_result")
    parser.add_argument("--model_version", default=None,
                        help="the model's name in shard and HRV file names; default: recognized from --model_card")
    parser.add_argument("--prompt", default="imagenet", help="prompt list name (or file) the shards were made with")
    parser.add_argument("--description", default="340_final_text_descriptions", help="concept word set name")
    parser.add_argument("--model_card", default=SD_CARD,
                        help="the model the shards were made with; only its shards are used (matched by model version: "
                             f"sd_v1_4 for the default SD v1.4; pass {SDXL_CARD} for SDXL, "
                             "toy or tiny-sd for the built-in models, or the same card or folder given to "
                             "head_relevance_calculation.py)")
    parser.add_argument("--negative_prompt", action="store_true", help="select shards made with the negative prompt")
    parser.add_argument("--epochs", type=positive_int, default=None,
                        help="use epochs 1..E (all must be present); default: every epoch found")
    parser.add_argument("--allow_partial", action="store_true",
                        help="write HRVs even when prompts, epochs or shard files are missing or unfinished; the "
                             "coverage is recorded in coverage_*.json and the tidy CSV (default: refuse)")
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
        except NotAShardError as error:  # some other .npz
            notes.append(f"skipped {path}: {error}")
            continue
        except ShardFormatError as error:  # a damaged shard: the run is incomplete
            notes.append(f"corrupt {path}: {error}")
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
    folder = Path(args.results_dir) if args.results_dir else Path(args.output_dir) / "results"
    how = f"make shards with {SHARD_MAKER} (or pass --results_dir / --shards)"
    if not folder.is_dir():
        raise ExtractError(f"results folder {folder.resolve()} does not exist; {how}")
    paths = find_shards(folder)
    if not paths:
        raise ExtractError(f"no HRV shards (*.npz) in {folder.resolve()}; {how}")
    return paths, str(folder.resolve())


def coverage(shards: list[Shard], corrupt: list[str]) -> dict:
    """How much of the run the shards hold: per epoch the prompts expected, found and missing (inclusive ranges),
    missing epochs, unfinished checkpoints and corrupt files; ``complete`` when nothing is missing."""
    import numpy as np

    total = shards[0].metadata.get("num_prompts_total")
    found: dict[int, set] = {}
    for shard in shards:
        found.setdefault(shard.epoch, set()).update(shard.prompt_indices.tolist())
    last = max(found)
    epochs = {}
    for epoch in range(1, last + 1):
        have = found.get(epoch, set())
        expected = total if total is not None else len(have)
        missing = np.setdiff1d(np.arange(expected), np.fromiter(have, dtype=np.int64, count=len(have)))
        epochs[epoch] = {"expected": expected, "found": len(have), "missing": [list(r) for r in index_ranges(missing)]}
    unfinished = [shard.name for shard in shards if shard.metadata.get("complete") is False]
    result = {
        "prompts_expected": sum(e["expected"] for e in epochs.values()),
        "prompts_found": sum(e["found"] for e in epochs.values()),
        "epochs": epochs, "missing_epochs": [e for e in epochs if e not in found],
        "unfinished_checkpoints": unfinished, "corrupt_files": list(corrupt),
    }
    result["complete"] = (result["prompts_found"] == result["prompts_expected"] and not unfinished and not corrupt)
    return result


def coverage_summary(cov: dict) -> list[str]:
    """A few lines saying what an incomplete run lacks."""
    lines = [f"incomplete HRV data: {cov['prompts_found']} of {cov['prompts_expected']} (epoch, prompt) pairs found"]
    for epoch, e in cov["epochs"].items():
        if e["found"] != e["expected"]:
            ranges = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in e["missing"][:10])
            more = f", ... ({len(e['missing'])} ranges)" if len(e["missing"]) > 10 else ""
            lines.append(f"  epoch {epoch}: {e['found']} of {e['expected']} prompts; missing {ranges}{more}")
    lines += [f"  unfinished checkpoint: {name}" for name in cov["unfinished_checkpoints"]]
    lines += [f"  corrupt file: {name}" for name in cov["corrupt_files"]]
    return lines


def final_result_dir(args) -> Path:
    """--final_result, else OUTPUT_DIR/final_result."""
    return Path(args.final_result) if args.final_result else Path(args.output_dir) / "final_result"


def _check_folders(args) -> None:
    """Before reading any shard: the old meaning of --output_dir (the HRV folder itself) is refused with the fix,
    and no output folder may be a file."""
    from hrv_diffusion.cli.common import check_output_dir

    out = Path(args.output_dir)
    if not args.final_result and (out.name == "final_result" or any(out.glob("category_vectors_*.npy"))):
        raise ExtractError(f"--output_dir {out} looks like an HRV folder, but --output_dir is the project folder "
                           f"(HRVs go to OUTPUT_DIR/final_result, as in {SHARD_MAKER}): pass --output_dir "
                           f"{out.parent} or --final_result {out}")
    check_output_dir(out, "--output_dir")
    check_output_dir(final_result_dir(args), "--final_result" if args.final_result else "--output_dir")


def run(args) -> list[Path]:
    from hrv_diffusion.hrv.concepts import description_name
    from hrv_diffusion.hrv.prompts import prompt_name

    _check_folders(args)
    args.prompt, args.description = prompt_name(args.prompt), description_name(args.description)
    model_version = args.model_version or _model_version(args.model_card)
    paths, where = _shard_paths(args)
    shards, notes = select_shards(paths, prompt=args.prompt, description=args.description,
                                  model_version=model_version, negative_prompt=args.negative_prompt,
                                  epochs=args.epochs)
    corrupt = [note.split(": ", 1)[0].removeprefix("corrupt ") for note in notes if note.startswith("corrupt ")]
    for note in notes:
        if not note.startswith("corrupt "):
            print(note)
    if not shards:
        if corrupt:
            raise ExtractError(f"the only shards in {where} are corrupt ({', '.join(corrupt)}); re-make them with "
                               f"{SHARD_MAKER}")
        raise ExtractError(f"no HRV shards in {where}; make shards with {SHARD_MAKER}")
    merged = merge_shards(shards)
    cov = coverage(shards, corrupt)
    if not cov["complete"]:
        for line in coverage_summary(cov):
            print(line, file=sys.stderr)
        if not args.allow_partial:
            raise ExtractError(
                f"the shards hold {cov['prompts_found']} of {cov['prompts_expected']} (epoch, prompt) pairs "
                f"(summary above); nothing written: finish the run ({SHARD_MAKER} --resume with the same flags) or "
                "pass --allow_partial to write HRVs from the prompts found")
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
        final_result_dir(args), merged.counts, merged.num_prompts, meta["head_labels"], meta["concept_names"],
        epochs=epochs, negative_prompt=args.negative_prompt, prompt=args.prompt, description=args.description,
        model_version=model_version, coverage=None if cov["complete"] else cov,
    )


TOY_DEFAULTS = {"description": "toy_concepts", "prompt": "toy"}


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import use_toy_defaults

    parser = build_parser()
    use_toy_defaults(parser, argv, TOY_DEFAULTS)
    return run_cli(_main, parser.parse_args(argv))


def _main(args) -> int:
    written = run(args)
    print(f"wrote {len(written)} files to {final_result_dir(args).resolve()}:")
    for path in written:
        print(f"  {path}")
    partial = [p for p in written if p.name.startswith("coverage_")]
    if partial:
        print(f"warning: PARTIAL HRVs (--allow_partial): coverage in {partial[0].name} and the tidy CSV",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
