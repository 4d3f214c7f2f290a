"""Flag groups that the commands share, each flag with one name, one type and one help text everywhere.

A command builds its parser from its own flags plus these groups, with its own defaults where the reference's
scripts differ (``--seeds``, ``--batch_size``, ``--output_path``, A&E's float32). ``context.RunContext`` turns the
parsed flags into a device, a dtype, a pipeline, a head layout, a concept set and an HRV, once.
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli.common import nonnegative_float, nonnegative_int, output_folder, positive_int
from hrv_diffusion.core.hub import BUILT_IN as BUILT_IN_MODELS
from hrv_diffusion.errors import UserError

SD_CARD = "CompVis/stable-diffusion-v1-4"
SDXL_CARD = "stabilityai/stable-diffusion-xl-base-1.0"
BUILT_IN = ", ".join(BUILT_IN_MODELS)
DTYPE_CHOICES = ("auto", "float32", "float16", "bfloat16")


def add_model_flags(g, *, default_card: str = SD_CARD, dtype: str = "auto", scheduler: bool = False,
                    compile_help: str | None = None) -> None:
    """``--model_card --model_version --gpu_num --device --dtype`` (``--scheduler``, ``--compile`` when asked)."""
    g.add_argument("--model_card", default=default_card,
                   help=f"hub id or local diffusers folder of an SD 1.x/2.x or SDXL model, or a built-in model "
                        f"({BUILT_IN})")
    g.add_argument("--model_version", default=None,
                   help="the model's name in HRV file names (sd_v1_4, sd_xl_base_1_0, ...); default: recognized "
                        "from --model_card")
    g.add_argument("--gpu_num", type=nonnegative_int, default=0,
                   help="CUDA device index (under torchrun: LOCAL_RANK)")
    g.add_argument("--device", default=None, help="torch device (default: cuda:GPU_NUM if available, else cpu)")
    faithful = " (the reference's)" if dtype == "float32" else ""
    g.add_argument("--dtype", choices=DTYPE_CHOICES, default=dtype,
                   help=f"auto = float16 on CUDA, float32 on CPU; float32 is the faithful mode (default: {dtype}"
                        f"{faithful})")
    if scheduler:
        g.add_argument("--scheduler", choices=["pndm", "model"], default="pndm",
                       help="pndm = the paper's sampler (50 steps = 51 UNet evaluations); model = the card's own")
    if compile_help is not None:
        g.add_argument("--compile", action="store_true", help=compile_help)


def add_generation_flags(g, *, seeds, batch_size: int, batch_help: str, decode: str | None = None) -> None:
    """``--seeds --n_inference_steps --guidance_scale --height --width --batch_size`` (``--decode`` when given a
    default)."""
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=list(seeds), help="one image per seed")
    g.add_argument("--n_inference_steps", type=positive_int, default=50,
                   help="PNDM steps (50 steps = 51 UNet evaluations)")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--height", type=positive_int, default=None,
                   help="image height in pixels, a multiple of 8 (default: the model's, 512 for SD v1.4, 1024 for "
                        "SDXL)")
    g.add_argument("--width", type=positive_int, default=None,
                   help="image width in pixels, a multiple of 8 (default: the model's)")
    g.add_argument("--batch_size", type=positive_int, default=batch_size, help=batch_help)
    if decode is not None:
        g.add_argument("--decode", choices=["truncate", "round"], default=decode,
                       help="uint8 conversion: truncate = (x * 255).astype(uint8), the reference's weakening, P2P "
                            "and SD-HRV loops; round = diffusers' PIL path, the reference's A&E")


def add_output_flags(g, *, default_path: str) -> None:
    """``--output_path --overwrite --quiet``."""
    g.add_argument("--output_path", type=output_folder, default=default_path, help="root folder of the outputs")
    g.add_argument("--overwrite", action="store_true",
                   help="regenerate the images even where they exist; folders made with other settings are emptied "
                        "of their images first (without it such folders are refused, and existing images are kept: "
                        "a rerun continues where a run stopped)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def add_hrv_flags(g, *, hrv_default: str | None = "paper", hrv_files: bool = False,
                  description_file: bool = False, class_list: bool = False) -> None:
    """``--hrv --description`` (``--category_vectors_path --head_index_path``, ``--description_file_path``,
    ``--class_list_path`` where the reference's script has them)."""
    g.add_argument("--hrv", default=hrv_default,
                   help="'paper' (the paper's HRVs for SD v1.4 / SDXL, from the cache hrv-published fills; the toy's "
                        "shipped HRVs for --model_card toy) or an HRV built here (a category_vectors_*.npy, or the "
                        "folder holding it)")
    g.add_argument("--description", default=None,
                   help="the concept set of the HRV rows: a name (descriptions/NAME.txt) or a path (default: "
                        "toy_concepts for the toy model, else the paper's 340_final_text_descriptions)")
    if description_file:
        g.add_argument("--description_file_path", default=None, help="the concept set as a file (as --description)")
    if class_list:
        g.add_argument("--class_list_path", default=None, help="the reference's concept list (as --description)")
    if hrv_files:
        g.add_argument("--category_vectors_path", default=None,
                       help="an HRV file category_vectors_*.npy (instead of --hrv)")
        g.add_argument("--head_index_path", default=None,
                       help="the head labels of --category_vectors_path (default: the head_index_*.npy beside it)")


class SplitValue(argparse.Action):
    """Stores ``--numerator`` / ``--denominator`` and notes that it was given (``check_split`` refuses it without
    ``--subset_running``, whatever the command's default)."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        given = [d for d in getattr(namespace, "_split_given", []) if d != self.dest]
        setattr(namespace, "_split_given", [*given, self.dest])


def add_split_flags(g) -> None:
    """``--subset_running --numerator --denominator`` (torchrun's RANK / WORLD_SIZE split further)."""
    g.add_argument("--subset_running", action="store_true",
                   help="run only part NUMERATOR of DENOMINATOR of the prompts (to split a run over processes)")
    g.add_argument("--numerator", type=positive_int, default=1, action=SplitValue,
                   help="with --subset_running: which part to run, 1..DENOMINATOR")
    g.add_argument("--denominator", type=positive_int, default=1, action=SplitValue,
                   help="with --subset_running: into how many equal, contiguous parts the prompts are split")


def check_split(args) -> None:
    """Refuse ``--numerator``/``--denominator`` given without ``--subset_running`` (they would be ignored), and a
    ``--numerator`` beyond ``--denominator``; a command without the split flags passes."""
    given = getattr(args, "_split_given", [])
    if not getattr(args, "subset_running", False):
        if given:
            flags = " ".join(f"--{name} {getattr(args, name)}" for name in ("numerator", "denominator")
                             if name in given)
            raise UserError(f"{flags} need{'s' if len(given) == 1 else ''} --subset_running (or drop "
                            f"{'it' if len(given) == 1 else 'them'})")
        return
    numerator, denominator = args.numerator, args.denominator
    if not 1 <= numerator <= denominator:
        raise UserError(f"--numerator must be in 1..--denominator, got --numerator {numerator} --denominator "
                        f"{denominator}")
