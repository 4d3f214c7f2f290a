"""construct_prompts.py: the prompts of an ordered-weakening experiment, one per line.

Replaces the reference's hp_construct_prompts.ipynb, which wrote a shell script of background jobs: the generation
script now takes ``--experiment_num`` itself (all prompts, batched), so this command only shows or saves the
prompts, e.g. to split them by hand or to pass a subset with ``--prompt_file``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, positive_int, output_file

EXAMPLES = """\
examples:
  python ordered_weakening_analysis/construct_prompts.py --list
  python ordered_weakening_analysis/construct_prompts.py --experiment_num 5            # 50 prompts to stdout
  python ordered_weakening_analysis/construct_prompts.py --experiment_num 5 --out exp5_prompts.txt
  python ordered_weakening_analysis/construct_prompts.py --experiment_num 5 --with_text   # prompt<TAB>CLIP text

Exit status: 0 on success, 2 for an unknown experiment or an unwritable --out.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="construct_prompts.py",
        description="Print (or write) the prompts of one ordered-weakening experiment, one per line; "
                    "--list shows every experiment.",
        epilog=EXAMPLES, formatter_class=HelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment_num", type=positive_int,
                      help="1-9, 91-95 (out-of-distribution items) or 991 (Tableware)")
    what.add_argument("--list", action="store_true", help="list the experiments: number, concept, template, count")
    parser.add_argument("--out", type=output_file, default=None,
                        help="write the prompts to this file (default: stdout)")
    parser.add_argument("--with_text", action="store_true",
                        help="add a tab and the CLIP text of each prompt (the concept item used for scoring)")
    return parser


def _list_name(items) -> str:
    """The name of an item list (``Objects_A``), or its items when it is not one of ours."""
    from hrv_diffusion.apps.weakening_experiments import ITEM_LISTS

    return next((name for name, values in ITEM_LISTS.items() if tuple(values) == tuple(items)), ", ".join(items))


def _listing() -> str:
    from hrv_diffusion.apps.weakening_experiments import EXPERIMENTS

    lines = ["exp  concept                 n   template                     item1 x item2 -> CLIP text items"]
    for exp in EXPERIMENTS.values():
        lists = " x ".join(_list_name(items) for items in (exp.item1, exp.item2) if items)
        lines.append(f"{exp.number:<4} {exp.concept:<23} {exp.num_prompts:<3} {exp.template!r:<28} "
                     f"{lists} -> {_list_name(exp.text_items)}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from hrv_diffusion.apps.weakening_experiments import build_prompts, clip_text_for, experiment
    from hrv_diffusion.cli.common import run_cli

    if args.list:
        print(_listing())
        return 0

    def write(args) -> int:
        exp = experiment(args.experiment_num)
        prompts = build_prompts(exp)
        lines = [f"{p}\t{clip_text_for(p, exp)}" if args.with_text else p for p in prompts]
        text = "\n".join(lines) + "\n"
        if args.out is None:
            sys.stdout.write(text)
        else:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"wrote {len(prompts)} prompts of exp {exp.number} ({exp.concept}) to {args.out}")
        return 0

    return run_cli(write, args)


if __name__ == "__main__":
    sys.exit(main())
