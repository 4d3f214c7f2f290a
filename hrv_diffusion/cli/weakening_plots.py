"""draw_plots.py: MoRHF vs LeRHF curves from the scores CSVs (replaces hp_draw_plots.ipynb), and image grids.

For each experiment, reads ``{results_dir}/hp_scores_wo_category_exp_{X}.csv`` and writes
``{plots_dir}/plot_wo_category_{concept}.png`` and ``.pdf`` (an experiment whose concept an earlier-numbered one
already has, i.e. the out-of-distribution 91-95, gets ``_exp_{X}`` appended so that it does not overwrite it).
With ``--grid``, also ``{plots_dir}/grid_exp_{X}_seed_{seed}.png``: prompts x k, MoRHF and LeRHF rows.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hrv_diffusion.cli.common import run_cli
from hrv_diffusion.errors import UserError
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, output_folder, positive_int

EXAMPLES = """\
examples:
  python ordered_weakening_analysis/draw_plots.py --experiment_num 5
  python ordered_weakening_analysis/draw_plots.py --experiment_num 1 2 3 4 5 6 7 8 9 --grid
  python ordered_weakening_analysis/draw_plots.py --scores my_scores.csv --concept "Image Style"

Exit status: 0 on success, 2 when a scores CSV is missing or malformed or an experiment is unknown.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="draw_plots.py",
        description="Plot ordered-weakening scores: MoRHF (most relevant heads first) vs LeRHF (least first).",
        epilog=EXAMPLES, formatter_class=HelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--experiment_num", type=positive_int, nargs="+", help="experiments to plot (1-9, 91-95, 991)")
    what.add_argument("--scores", type=Path, help="one Key,Value scores CSV to plot (needs --concept)")
    parser.add_argument("--concept", default=None, help="plot title (default: the experiment's concept)")
    parser.add_argument("--results_dir", default="./ordered_weakening_analysis/hp_results",
                        help="where the scores CSVs are (default: %(default)s)")
    parser.add_argument("--plots_dir", type=output_folder, default="./ordered_weakening_analysis/hp_plots",
                        help="where the plots are written (default: %(default)s)")
    parser.add_argument("--drop_k", type=nonnegative_int, nargs="*", default=None,
                        help="k values left out of the curves (default: 1, and also 11 when the largest k is 1300 "
                             "(SDXL), as in the paper; give no value to keep all)")
    parser.add_argument("--ylabel", default="CLIP Score", help="y-axis label (default: %(default)s)")
    parser.add_argument("--no_pdf", action="store_true", help="write only the PNG")
    grid = parser.add_argument_group("image grids (--grid)")
    grid.add_argument("--grid", action="store_true",
                      help="also write a prompts x k grid of the generated images (with --experiment_num)")
    grid.add_argument("--output_path", default="./ordered_weakening_analysis/hp_outputs",
                      help="the generation output folder holding exp_{X}/ (default: %(default)s)")
    grid.add_argument("--grid_seed", type=nonnegative_int, default=10,
                      help="which seed's images (default: %(default)s)")
    grid.add_argument("--grid_prompts", type=positive_int, default=5,
                      help="how many prompt folders (the first in name order; default: %(default)s)")
    return parser


class PlotError(UserError):
    """A problem the user can fix; printed as one ``error:`` line."""


def _default_drop(summary) -> list[int]:
    return [1, 11] if int(summary["k"].max()) == 1300 else [1]


def plot_name(exp) -> str:
    """``plot_wo_category_{concept}``, plus ``_exp_{X}`` when an earlier-numbered experiment has the same concept."""
    from hrv_diffusion.apps.weakening_experiments import EXPERIMENTS
    from hrv_diffusion.apps.output_paths import safe_folder_name

    name = f"plot_wo_category_{safe_folder_name(exp.concept)}"
    if any(other.concept == exp.concept and other.number < exp.number for other in EXPERIMENTS.values()):
        name += f"_exp_{exp.number}"
    return name


def _plot(summary, concept: str, stem: str, args) -> list[Path]:
    from hrv_diffusion.apps.weakening_plots import plot_weakening_curves

    drop = _default_drop(summary) if args.drop_k is None else args.drop_k
    png = Path(args.plots_dir) / f"{stem}.png"
    return plot_weakening_curves(summary, concept, png, False if args.no_pdf else None, drop_k=drop,
                                 ylabel=args.ylabel)


def _grid(exp, summary, args) -> Path:
    from hrv_diffusion.apps.weakening_plots import image_grid

    exp_dir = Path(args.output_path) / exp.folder
    if not exp_dir.is_dir():
        raise PlotError(f"--grid: no image folder {exp_dir} (set --output_path)")
    prompts = sorted(p.name for p in exp_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    drop = set(_default_drop(summary) if args.drop_k is None else args.drop_k)
    ks = sorted(k for k in set(summary["k"]) if k not in drop)
    path = Path(args.plots_dir) / f"grid_exp_{exp.number}_seed_{args.grid_seed}.png"
    image_grid(args.output_path, exp, prompts[: args.grid_prompts], ("top", "bottom"), ks, args.grid_seed, path)
    return path


def run(args) -> list[Path]:
    from hrv_diffusion.apps.weakening_experiments import experiment
    from hrv_diffusion.apps.weakening_scores import read_scores_csv, scores_csv_name

    written = []
    if args.scores is not None:
        if not args.concept:
            raise PlotError("--scores needs --concept (the plot title)")
        if not args.scores.is_file():
            raise PlotError(f"no scores file {args.scores}")
        summary = read_scores_csv(args.scores)
        from hrv_diffusion.apps.output_paths import safe_folder_name

        written += _plot(summary, args.concept, f"plot_wo_category_{safe_folder_name(args.concept)}", args)
        return written
    for number in args.experiment_num:
        exp = experiment(number)
        csv_path = Path(args.results_dir) / scores_csv_name(exp.number)
        if not csv_path.is_file():
            raise PlotError(f"no scores file {csv_path}: run calculate_similarity.py --experiment_num {exp.number} "
                            "first (or set --results_dir)")
        summary = read_scores_csv(csv_path)
        written += _plot(summary, args.concept or exp.concept, plot_name(exp), args)
        if args.grid:
            written.append(_grid(exp, summary, args))
    return written


def main(argv=None) -> int:
    return run_cli(_main, build_parser().parse_args(argv))


def _main(args) -> int:
    written = run(args)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
