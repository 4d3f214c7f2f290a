"""The Attend-and-Excite flags that the one-prompt command (``attend_excite.py``) and the multi-object benchmark
(``multi_object.py``) share, and what they resolve to: the mode, ``AttendExciteSettings``, each target's concept and
the ``RunOptions`` of a run. A flag module like ``flags.py``, not a command.

The model, generation, output and HRV flags are the shared groups of ``flags.py``; ``add_attend_excite_flags`` adds
the method's own on top of them.
"""
from __future__ import annotations

import argparse

from hrv_diffusion.cli.common import nonnegative_float, nonnegative_int, positive_float, positive_int
from hrv_diffusion.errors import UserError

COMPILE_HELP = ("compile every UNet region but the cross-attention layers (torch.compile, forward and backward): for "
                "long GPU runs, after a one-time compile of minutes")
BATCH_HELP = "seeds per UNet call (each seed's update is its own: a batch gives the images of one seed at a time)"
DEFAULT_CONCEPT = "Animals"  # the reference's README: "--concepts Animals Animals"


def parse_thresholds(values) -> dict[int, float]:
    """["0:0.05", "10:0.5"] -> {0: 0.05, 10: 0.5}."""
    out = {}
    for value in values or []:
        step, sep, threshold = str(value).partition(":")
        try:
            if not sep:
                raise ValueError
            out[int(step)] = float(threshold)
        except ValueError:
            raise UserError(f"--thresholds takes EVALUATION:THRESHOLD pairs like 0:0.05 10:0.5, not {value!r}") from None
    return out


def add_attend_excite_flags(p: argparse.ArgumentParser) -> None:
    """The A&E method's flags: the reference's, then those added here."""
    g = p.add_argument_group("method (published flags)")
    g.add_argument("--negative_prompt", action="store_true", help="use the reference's fixed negative prompt instead "
                   "of '' (SD 1.x)")
    g.add_argument("--concepts", nargs="+", default=None, help="A&E-HRV: one concept per target token, or one for "
                   f"all (default: {DEFAULT_CONCEPT} for every target, as the reference's 'Animals Animals')")
    g.add_argument("--max_iter_to_alter", type=nonnegative_int, default=25,
                   help="gradient steps at evaluations 0 .. N-1")
    g.add_argument("--attention_res", type=positive_int, default=None,
                   help="R of the R x R maps (default: latent/8 for A&E-HRV, latent/4 for standard A&E, at least 8: "
                        "8 and 16 on SD v1.4 at 512², 16 and 32 on SDXL at 1024², 8 on the toy)")
    g.add_argument("--thresholds", nargs="+", default=["0:0.05", "10:0.5", "20:0.8"], metavar="EVAL:THRESHOLD",
                   help="iterative refinement at these evaluations while loss > 1 - threshold "
                        "(default: 0:0.05 10:0.5 20:0.8)")
    g.add_argument("--scale_factor", type=nonnegative_float, default=20.0, help="step size scale")
    g.add_argument("--scale_range", type=nonnegative_float, nargs=2, default=[1.0, 0.5], metavar=("START", "END"),
                   help="step size at evaluation i = scale_factor * sqrt(linspace(START, END, T))[i] (default: 1.0 0.5)")
    g.add_argument("--smooth_attentions", action="store_true", help="smooth each token's map before its max")
    g.add_argument("--sigma", type=positive_float, default=0.5, help="smoothing σ")
    g.add_argument("--kernel_size", type=positive_int, default=3, help="smoothing kernel size")
    g.add_argument("--experiment_num", default=None, help="names the folder exp_N (default: None -> exp_None; the "
                   "benchmark runner: the prompt set's name)")
    g = p.add_argument_group("method (added)")
    g.add_argument("--anchor", choices=["reference", "diffusers"], default="reference",
                   help="defaults of the map details: reference = softmax over tokens 1..76, a true Gaussian when "
                        "smoothing, smoothing only with --smooth_attentions; diffusers = diffusers' / the original "
                        "A&E's: tokens 1..75, their kernel, always smoothed (default: reference)")
    g.add_argument("--kernel", choices=["gaussian", "diffusers"], default=None,
                   help="gaussian = exp(-x²/2σ²); diffusers = exp(-(x/2σ)²), √2 wider (default: from --anchor)")
    g.add_argument("--token_slice", choices=["1:77", "1:-1", "1:eot"], default=None,
                   help="token columns of the ×100 softmax (default: from --anchor: 1:77, diffusers 1:-1)")
    g.add_argument("--max_refinement_steps", type=nonnegative_int, default=20,
                   help="refinement steps at most per threshold evaluation")
    g.add_argument("--generator", choices=["auto", "cuda", "cpu"], default="auto",
                   help="latents from torch.Generator(cuda) (the reference; depends on the GPU model) or (cpu) "
                        "(portable); auto = cuda on a CUDA device (default: auto)")


def mode_of(args) -> str:
    """hrv (A&E-HRV), standard (``--run_standard_attend_excite``) or sd (``--run_standard_sd``, which wins)."""
    return "sd" if getattr(args, "run_standard_sd", False) else (
        "standard" if getattr(args, "run_standard_attend_excite", False) else "hrv")


def settings_from(args, mode: str, latent_size: int, model=None):
    """The ``AttendExciteSettings`` of ``mode`` from the flags; ``latent_size`` (h) and the family of ``model`` (a
    pipeline; None: a UNet) give the default R."""
    from hrv_diffusion.apps.attend_excite import AttendExciteSettings, default_attention_res

    diffusers = args.anchor == "diffusers"
    return AttendExciteSettings(
        mode=mode, attention_res=args.attention_res or default_attention_res(mode, latent_size, model),
        max_iter_to_alter=args.max_iter_to_alter, thresholds=parse_thresholds(args.thresholds),
        scale_factor=args.scale_factor, scale_range=tuple(args.scale_range),
        max_refinement_steps=args.max_refinement_steps, smooth_attentions=args.smooth_attentions or diffusers,
        sigma=args.sigma, kernel_size=args.kernel_size,
        kernel=args.kernel or ("diffusers" if diffusers else "gaussian"),
        token_slice=args.token_slice or ("1:-1" if diffusers else "1:77"),
        num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale)


def concepts_for(args, count: int) -> list[str]:
    """One concept per target: ``--concepts`` (one for all, or one each), else Animals for every target."""
    concepts = args.concepts or [DEFAULT_CONCEPT]
    if len(concepts) == 1:
        return concepts * count
    if len(concepts) != count:
        raise UserError(f"{len(concepts)} --concepts for {count} target tokens: give one per target, or one for all")
    return list(concepts)


def negative_prompt(args) -> str | None:
    """The reference's fixed negative prompt with ``--negative_prompt``, else None ('')."""
    from hrv_diffusion.hrv.construction import NEGATIVE_PROMPT

    return NEGATIVE_PROMPT if args.negative_prompt else None


def generator_of(args, device) -> str:
    """``--generator``, with auto = cuda on a CUDA device, else cpu."""
    if args.generator != "auto":
        return args.generator
    return "cuda" if str(device).startswith("cuda") else "cpu"


def run_options(args, ctx, hrv=None, metadata: dict | None = None):
    """The ``RunOptions`` of a command run: ``ctx`` a ``RunContext`` with its pipeline loaded."""
    from hrv_diffusion.apps.attend_excite_runs import RunOptions

    _, h, w = ctx.latent_shape()  # (C, h, w)
    factor = ctx.pipe.vae_scale_factor
    return RunOptions(
        model_card=ctx.card, model_version=ctx.model_version, dtype=ctx.dtype,
        scheduler=getattr(args, "scheduler", "pndm"), generator=generator_of(args, ctx.device), decode=args.decode,
        height=args.height, width=args.width, image_size=(h * factor, w * factor),
        negative_prompt=negative_prompt(args),
        hrv_source=hrv.source if hrv is not None else None,
        hrv_fingerprint=hrv.fingerprint() if hrv is not None else None,
        metadata={"model_card": ctx.card, "dtype": ctx.dtype, **(metadata or {})})
