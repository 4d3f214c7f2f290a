"""``hrv-published``: download the paper's HRVs (SD v1.4 and SDXL) and check every file against the manifest.

The files of SNU-DRL/HRV's ``final_result/`` at the pinned commit go into the cache that ``--hrv paper`` reads
(``$HRV_DIFFUSION_CACHE``, else ``$XDG_CACHE_HOME/hrv-diffusion``, else ``~/.cache/hrv-diffusion``). Each file's
size and git blob id must match the manifest shipped in the package; a file that does not is moved aside to
NAME.mismatch. Files
already there and matching are not downloaded again. Then the tidy CSV (one row per concept and head) is written.

examples:
  hrv-published                                   # everything but output_ba, both models
  hrv-published --models sd_v1_4 --kinds hrv      # only SD v1.4's category_vectors and head_index
  hrv-published --verify_only                     # no network: check the files put into the folder by hand
                                                  # (the others are listed as not copied)
  hrv-published --print_dir                       # where the files go
"""
from __future__ import annotations

import argparse

from hrv_diffusion.hrv.paper import KINDS, PAPER_MODELS
from hrv_diffusion.hrv.published import BASE_URL, BASE_URL_ENV, DEFAULT_KINDS
from hrv_diffusion.cli.common import ArgumentParser, positive_float, output_folder


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="hrv-published", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=PAPER_MODELS, default=list(PAPER_MODELS),
                   help="which model's files (default: both)")
    p.add_argument("--kinds", nargs="+", choices=KINDS + ("all",), default=list(DEFAULT_KINDS),
                   help="hrv = category_vectors + head_index; per_timesteps; ranking_list; head_roles (the "
                        "MoRHF/LeRHF CSVs); output_ba (per-head vote CSVs, large); all (default: all but output_ba)")
    p.add_argument("--cache_dir", type=output_folder, default=None,
                   help="the folder to fill (default: the one --hrv paper reads; see --print_dir)")
    p.add_argument("--base_url", default=None,
                   help=f"where the repository's files are served (default: ${BASE_URL_ENV}, else {BASE_URL})")
    p.add_argument("--verify_only", action="store_true",
                   help="do not download: check the files copied into the folder (one that does not match is moved "
                        "aside to NAME.mismatch; the files not there are listed as not copied)")
    p.add_argument("--timeout", type=positive_float, default=60.0, help="seconds to wait for the server (default: 60)")
    p.add_argument("--print_dir", action="store_true", help="print the folder and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    from pathlib import Path

    from hrv_diffusion.cli.common import check_output_dir
    from hrv_diffusion.hrv.paper import paper_dir
    from hrv_diffusion.hrv.published import fetch_published

    folder = Path(args.cache_dir) if args.cache_dir else paper_dir()
    if args.print_dir:
        print(folder)
        return 0
    check_output_dir(folder, "--cache_dir" if args.cache_dir else "the cache folder (set by $HRV_DIFFUSION_CACHE, "
                     "else $XDG_CACHE_HOME or ~/.cache; or pass --cache_dir)")
    kinds = KINDS if "all" in args.kinds else tuple(args.kinds)
    report = fetch_published(folder, models=tuple(args.models), kinds=kinds, base_url=args.base_url,
                             verify_only=args.verify_only, timeout=args.timeout, progress=not args.quiet)
    if args.verify_only:
        print(f"{len(report.verified)} verified in {folder}")
        if report.not_copied:
            print(f"{len(report.not_copied)} not copied (not checked; `hrv-published` downloads them): "
                  f"{', '.join(report.not_copied[:3])}{' ...' if len(report.not_copied) > 3 else ''}")
    else:
        print(f"{len(report.downloaded)} downloaded, {len(report.verified)} already there and verified, in {folder}")
    for name in report.moved_aside:
        print(f"moved aside (not the published file): {folder / name}")
    for path in report.tidy:
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
