"""``hrv-visualize``: pictures and tables of HRVs (the paper's, ones built here, or the toy's).

Writes into --output_dir: ``concept_heatmaps`` (one panel per concept: one row per CA layer, its heads as
columns), ``concept_similarity`` (cosine similarity of the concepts' HRVs), ``timestep_similarity`` (of the
per-evaluation HRVs, averaged over concepts; when a ``*_per_timesteps.npy`` is found), each as PNG and PDF, and
``top_heads.csv`` / ``top_heads.md`` (each concept's --top_k most relevant heads).

examples:
  hrv-visualize --hrv paper --model_version sd_v1_4          # the paper's SD v1.4 HRVs (run hrv-published first)
  hrv-visualize --hrv paper --model_version sd_xl_base_1_0   # SDXL: 70 layers of 10 or 20 heads
  hrv-visualize --hrv paper --model_version toy              # the toy model's HRVs, shipped with the package
  hrv-visualize --hrv final_result/ --description 340_final_text_descriptions   # HRVs built here
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hrv_diffusion.cli.common import ArgumentParser, positive_int, output_folder

MODEL_VERSIONS = ("sd_v1_4", "sd_xl_base_1_0", "toy", "toy_dit")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="hrv-visualize", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hrv", default="paper",
                   help="'paper' (the paper's HRVs of --model_version, from the cache hrv-published fills; the toy's "
                        "ship with the package) or an HRV built here: a category_vectors_*.npy or the final_result "
                        "folder holding it (default: paper)")
    p.add_argument("--model_card", default=None,
                   help="the model whose HRVs are shown (a hub id, folder or built-in name such as toy): sets "
                        "--model_version from it")
    p.add_argument("--model_version", default="sd_v1_4",
                   help=f"whose paper HRVs: {', '.join(MODEL_VERSIONS)}; also names the default output folder "
                        "(default: sd_v1_4)")
    p.add_argument("--description", default=None,
                   help="the concept set the HRV was built from, giving its row names (default: toy_concepts for "
                        "the toy, else 340_final_text_descriptions)")
    p.add_argument("--per_timesteps", default=None,
                   help="per-timestep HRVs (T, C, H) .npy (default: the *_per_timesteps.npy beside the HRV, if any)")
    p.add_argument("--concepts", nargs="+", default=None,
                   help="only these concepts, in this order (default: all, in the concept set's order)")
    p.add_argument("--top_k", type=positive_int, default=10,
                   help="heads per concept in the top-heads table (default: 10)")
    p.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=["png", "pdf"],
                   help="figure formats (default: png pdf)")
    p.add_argument("--shared_scale", action="store_true",
                   help="one color scale (0 to the largest value) for all heatmap panels (default: one per panel)")
    p.add_argument("--output_dir", type=output_folder, default=None,
                   help="default: ./hrv_visualization/<model_version or HRV name>")
    return p


def hrv_files(source: str, model_version: str) -> tuple[Path, Path | None]:
    """(category_vectors path, its per-timestep sibling or None) of ``--hrv``."""
    from hrv_diffusion.hrv.paper import paper_files
    from hrv_diffusion.hrv.vectors import _category_vectors_in

    if source == "paper":
        vectors = paper_files(model_version)[0]
    else:
        vectors = Path(source)
        if vectors.is_dir():
            vectors = _category_vectors_in(vectors)
    sibling = vectors.with_name(f"{vectors.stem}_per_timesteps.npy")
    return vectors, sibling if sibling.is_file() else None


def load_per_timestep(path: Path, hrv):
    """(T, C, H) values of ``path`` with columns in ``hrv``'s head order."""
    import numpy as np

    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.files import read_hrv

    index = path.with_name(path.name.replace("category_vectors_", "head_index_", 1))
    if index.is_file() and index != path:
        values, labels = read_hrv(path, index)
    else:
        values, labels = np.load(path, allow_pickle=False), list(hrv.labels)
    if values.ndim != 3 or values.shape[1:] != hrv.values.shape:
        raise UserError(f"{path.name} has shape {values.shape}; per-timestep HRVs of this HRV are "
                        f"(T, {hrv.values.shape[0]}, {hrv.values.shape[1]})")
    if list(labels) != list(hrv.labels):
        if sorted(labels) != sorted(hrv.labels):
            raise UserError(f"{path.name}: its head labels are not those of the HRV: pass the per-timestep file of "
                            "the same run")
        values = values[..., [list(labels).index(label) for label in hrv.labels]]
    return values


def run(args) -> int:
    import numpy as np

    from hrv_diffusion.apps.visualize import visualize
    from hrv_diffusion.cli.context import default_description
    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.vectors import load_hrv

    if args.hrv == "paper" and args.model_version not in MODEL_VERSIONS:
        raise UserError(f"--model_version must be one of {', '.join(MODEL_VERSIONS)} with --hrv paper, "
                        f"not {args.model_version!r}")
    if args.top_k < 1:
        raise UserError(f"--top_k must be at least 1, got {args.top_k}")
    names = read_concept_set(resolve_description(args.description or default_description(args.model_version))).names
    hrv = load_hrv(args.hrv, args.model_version, names)
    vectors_path, per_step_path = hrv_files(args.hrv, args.model_version)
    if args.per_timesteps:
        per_step_path = Path(args.per_timesteps)
        if not per_step_path.is_file():
            raise UserError(f"no per-timestep file {per_step_path}")
    per_step = load_per_timestep(per_step_path, hrv) if per_step_path else None
    concepts = list(args.concepts or hrv.concepts)
    rows = [hrv.concepts.index(c) if c in hrv.concepts else hrv.row(c) for c in concepts]  # row() names the fix
    values = hrv.values[rows]  # (C', H)
    if per_step is not None:
        per_step = per_step[:, rows]  # (T, C', H)
    default_name = args.model_version if args.hrv == "paper" else vectors_path.stem.removeprefix("category_vectors_")
    out = Path(args.output_dir or Path("hrv_visualization") / default_name)
    paths = visualize(np.asarray(values), list(hrv.labels), concepts, out, per_timestep=per_step, k=args.top_k,
                      formats=tuple(args.formats), shared_scale=args.shared_scale)
    if per_step is None:
        print(f"no per-timestep HRVs beside {vectors_path.name}: no timestep_similarity (pass --per_timesteps)")
    print(f"{values.shape[0]} concepts x {values.shape[1]} heads: wrote {len(paths)} files to {out}")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    args = build_parser().parse_args(argv)
    if args.model_card:
        from hrv_diffusion.core.models import model_version

        args.model_version = model_version(args.model_card)
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())
