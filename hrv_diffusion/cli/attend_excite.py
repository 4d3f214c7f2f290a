"""attend_and_excite_hrv.py: multi-object generation with A&E-HRV (default), standard A&E or plain SD.

Keeps the reference's flags (SNU-DRL/HRV applications/attend_and_excite_hrv.py). Writes
``{output_path}/{attend_and_excite-hrv|original_attend_and_excite|standard_sd}/exp_{n}/{prompt}/{seed}.png``, a
``{seed}.json`` beside each image with the per-evaluation telemetry (loss, max attention per target, refinement
iterations, whether each threshold was met), and the grid ``exp_{n}/{prompt}.png``. Existing images are skipped.

Example (the reference's README command):
  python applications/attend_and_excite_hrv.py --prompt "A black cat and a white dog" --seeds 20 \\
      --token_indices 3 7 --smooth_attentions --concepts Animals Animals --hrv paper
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hrv_diffusion.cli.relevance import SD_CARD
from hrv_diffusion.errors import UserError
from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, nonnegative_float, nonnegative_int, positive_float,
                                      positive_int)


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


def add_method_flags(p: argparse.ArgumentParser) -> None:
    """The flags of the A&E method and of generation, shared by the one-prompt and benchmark commands."""
    g = p.add_argument_group("method (published flags)")
    g.add_argument("--gpu_num", type=nonnegative_int, default=0,
                   help="CUDA device index (default: 0; under torchrun LOCAL_RANK)")
    g.add_argument("--model_card", default=SD_CARD, help=f"hub id, local diffusers folder, toy, tiny-sd or tiny-sdxl "
                   f"(default: {SD_CARD})")
    g.add_argument("--negative_prompt", action="store_true", help="use the reference's fixed negative prompt instead "
                   "of '' (SD 1.x)")
    g.add_argument("--concepts", nargs="+", default=None, help="A&E-HRV: one concept per target token, or one for "
                   "all (default: Animals for every target, as the reference's 'Animals Animals')")
    g.add_argument("--n_inference_steps", type=positive_int, default=50,
                   help="PNDM steps; 50 make 51 evaluations (default: 50)")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="(default: 7.5)")
    g.add_argument("--max_iter_to_alter", type=nonnegative_int, default=25,
                   help="gradient steps at evaluations 0 .. N-1 (default: 25)")
    g.add_argument("--attention_res", type=positive_int, default=None,
                   help="R of the R x R maps (default: latent/8 for A&E-HRV, latent/4 for standard A&E: 8 and 16 on "
                        "SD v1.4 at 512², 16 and 32 on SDXL at 1024²)")
    g.add_argument("--thresholds", nargs="+", default=["0:0.05", "10:0.5", "20:0.8"], metavar="EVAL:THRESHOLD",
                   help="iterative refinement at these evaluations while loss > 1 - threshold "
                        "(default: 0:0.05 10:0.5 20:0.8)")
    g.add_argument("--scale_factor", type=nonnegative_float, default=20.0, help="step size scale (default: 20)")
    g.add_argument("--scale_range", type=nonnegative_float, nargs=2, default=[1.0, 0.5], metavar=("START", "END"),
                   help="step size at evaluation i = scale_factor * sqrt(linspace(START, END, T))[i] (default: 1.0 0.5)")
    g.add_argument("--smooth_attentions", action="store_true", help="smooth each token's map before its max")
    g.add_argument("--sigma", type=positive_float, default=0.5, help="smoothing σ (default: 0.5)")
    g.add_argument("--kernel_size", type=positive_int, default=3, help="smoothing kernel size (default: 3)")
    g.add_argument("--experiment_num", default=None, help="names the folder exp_N (default: None -> exp_None; the "
                   "benchmark runner: the prompt set's name)")
    g.add_argument("--description", default="340_final_text_descriptions",
                   help="concept set of the HRV: its rows' names (default: 340_final_text_descriptions; toy: "
                        "toy_concepts)")
    g.add_argument("--description_file_path", default=None, help="concept set as a file (instead of --description)")
    g.add_argument("--category_vectors_path", default=None, help="HRV file category_vectors_*.npy (instead of --hrv)")
    g.add_argument("--head_index_path", default=None, help="its head_index_*.npy (default: beside it)")
    g = p.add_argument_group("method (added)")
    g.add_argument("--hrv", default="paper", help="the HRV: 'paper' (the published one, fetched by hrv-published; "
                   "the toy's ships with the package) or a category_vectors_*.npy (default: paper)")
    g.add_argument("--anchor", choices=["reference", "diffusers"], default="reference",
                   help="defaults of the map details: reference = softmax over tokens 1..76, a true Gaussian when "
                        "smoothing, smoothing only with --smooth_attentions; diffusers = diffusers' / the original "
                        "A&E's: tokens 1..75, their kernel, always smoothed (default: reference)")
    g.add_argument("--kernel", choices=["gaussian", "diffusers"], default=None,
                   help="gaussian = exp(-x²/2σ²); diffusers = exp(-(x/2σ)²), √2 wider (default: from --anchor)")
    g.add_argument("--token_slice", choices=["1:77", "1:-1", "1:eot"], default=None,
                   help="token columns of the ×100 softmax (default: from --anchor: 1:77, diffusers 1:-1)")
    g.add_argument("--max_refinement_steps", type=nonnegative_int, default=20, help="(default: 20)")
    g.add_argument("--generator", choices=["auto", "cuda", "cpu"], default="auto",
                   help="latents from torch.Generator(cuda) (the reference; depends on the GPU model) or (cpu) "
                        "(portable); auto = cuda on a CUDA device (default: auto)")
    g.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="(default: float32, the reference's)")
    g.add_argument("--device", default=None, help="torch device (default: cuda:GPU_NUM if available, else cpu)")
    g.add_argument("--batch_size", type=positive_int, default=4, help="seeds per batch (default: 4)")
    g.add_argument("--height", type=positive_int, default=None, help="pixels (default: the model's, 512 / 1024)")
    g.add_argument("--width", type=positive_int, default=None, help="pixels (default: the model's)")
    g.add_argument("--scheduler", choices=["pndm", "model"], default="pndm",
                   help="pndm = the paper's sampler; model = the card's own (default: pndm)")
    g.add_argument("--decode", choices=["round", "truncate"], default="round",
                   help="uint8 conversion: round = diffusers' PIL path, the reference's A&E (default: round)")
    g.add_argument("--compile", action="store_true", help="compile every UNet region but the cross-attention layers "
                   "(torch.compile, forward and backward): for long GPU runs, after a one-time compile of minutes")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("prompt")
    g.add_argument("--prompt", required=True, help="the prompt (also the folder name)")
    g.add_argument("--token_indices", type=nonnegative_int, nargs="+", default=None,
                   help="positions of the tokens to excite, SOT = 0 (default: --token_words, else the prompt's nouns "
                        "when nltk and its tagger data are installed, else the tokens are listed)")
    g.add_argument("--token_words", nargs="+", default=None, help="words to excite (all of their BPE pieces)")
    g.add_argument("--output_path", default="./applications/multi_concept_outputs",
                   help="(default: ./applications/multi_concept_outputs)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[42], help="one image per seed (default: 42)")
    g.add_argument("--run_standard_attend_excite", action="store_true",
                   help="standard A&E: the mean over the heads of the CA layers at ATTENTION_RES (no HRV)")
    g.add_argument("--run_standard_sd", action="store_true", help="plain generation, no update (wins over "
                   "--run_standard_attend_excite)")
    add_method_flags(p)
    return p


def mode_of(args) -> str:
    return "sd" if args.run_standard_sd else "standard" if args.run_standard_attend_excite else "hrv"


def settings_from(args, mode: str, latent_size: int):
    from hrv_diffusion.apps.attend_excite import AttendExciteSettings, default_attention_res

    diffusers = args.anchor == "diffusers"
    return AttendExciteSettings(
        mode=mode, attention_res=args.attention_res or default_attention_res(mode, latent_size),
        max_iter_to_alter=args.max_iter_to_alter, thresholds=parse_thresholds(args.thresholds),
        scale_factor=args.scale_factor, scale_range=tuple(args.scale_range),
        max_refinement_steps=args.max_refinement_steps, smooth_attentions=args.smooth_attentions or diffusers,
        sigma=args.sigma, kernel_size=args.kernel_size,
        kernel=args.kernel or ("diffusers" if diffusers else "gaussian"),
        token_slice=args.token_slice or ("1:-1" if diffusers else "1:77"),
        num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale)


def concepts_for(args, count: int) -> list[str]:
    concepts = args.concepts or ["Animals"]
    if len(concepts) == 1:
        return concepts * count
    if len(concepts) != count:
        raise UserError(f"{len(concepts)} --concepts for {count} target tokens: give one per target, or one for all")
    return list(concepts)


def load_setup(args):
    """(pipe, device, generator device, HRV loader) for the parsed flags."""
    import torch

    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.models import load_pipeline

    device = resolve_device(args.device, args.gpu_num)
    if str(device).startswith("cuda"):
        torch.cuda.set_device(torch.device(device))  # the CUDA generator draws on the current device
    dtype = resolve_dtype(args.dtype, device)
    pipe = load_pipeline(args.model_card, dtype=dtype, device=device, scheduler=args.scheduler)
    if args.compile:
        from hrv_diffusion.core.speed import compile_unet_regions

        compile_unet_regions(pipe.unet)
    generator = args.generator if args.generator != "auto" else ("cuda" if str(device).startswith("cuda") else "cpu")
    return pipe, dtype, generator


def load_hrv_for(args, pipe):
    """The HRV ordered for this UNet (``--category_vectors_path`` or ``--hrv``), with its concept names."""
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import model_version
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.files import read_hrv
    from hrv_diffusion.hrv.vectors import HRV, load_hrv

    description = args.description
    if args.model_card == "toy" and description == "340_final_text_descriptions":
        description = "toy_concepts"  # the toy's HRVs are over its own five concepts
    names = read_concept_set(Path(args.description_file_path) if args.description_file_path
                             else resolve_description(description)).names
    layout = head_layout(pipe.unet)
    if args.head_index_path:
        if not args.category_vectors_path:
            raise UserError("--head_index_path needs --category_vectors_path")
        values, labels = read_hrv(Path(args.category_vectors_path), Path(args.head_index_path))
        if values.shape[0] != len(names):
            raise UserError(f"{args.category_vectors_path} has {values.shape[0]} concepts but the concept set has "
                            f"{len(names)}: pass the --description the HRV was built from")
        return HRV(values.astype("float32"), tuple(names), tuple(labels), args.category_vectors_path).for_layout(layout)
    source = args.category_vectors_path or args.hrv
    return load_hrv(source, model_version(args.model_card), names, layout)


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.attend_excite import PromptJob, generate_to_folder, image_dir, write_grid
    from hrv_diffusion.apps.attend_excite_tokens import eot_position, resolve_targets
    from hrv_diffusion.core.loop import latent_shape

    if args.batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
    mode = mode_of(args)
    pipe, dtype, generator = load_setup(args)
    positions, labels = resolve_targets(pipe.tokenizer, args.prompt, args.token_indices, args.token_words)
    _, h, _ = latent_shape(pipe, args.height, args.width)
    settings = settings_from(args, mode, h)
    concepts = concepts_for(args, len(positions)) if mode == "hrv" else [None] * len(positions)
    hrv = load_hrv_for(args, pipe) if mode == "hrv" else None
    if hrv is not None:
        for concept in concepts:
            hrv.row(concept)  # an unknown concept fails here, before any generation
    job = PromptJob(args.prompt, positions, labels, concepts, eot_position(pipe.tokenizer, args.prompt))
    out_dir = image_dir(args.output_path, mode, args.experiment_num, args.prompt)
    bar = tqdm(total=len(args.seeds), unit="image", disable=args.quiet, desc=mode)
    made = generate_to_folder(
        pipe, job, args.seeds, settings, out_dir, hrv=hrv, generator=generator, batch_size=args.batch_size,
        negative_prompt=_negative(args), decode=args.decode, height=args.height, width=args.width,
        metadata={"model_card": args.model_card, "dtype": dtype}, progress=bar)
    bar.update(len(args.seeds) - len(made))
    bar.close()
    write_grid(out_dir, args.seeds, out_dir.parent / f"{out_dir.name}.png")
    print(f"{len(made)} images generated, {len(args.seeds) - len(made)} existed: {out_dir}")
    return 0


def _negative(args):
    from hrv_diffusion.hrv.construction import NEGATIVE_PROMPT

    return NEGATIVE_PROMPT if args.negative_prompt else None


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
