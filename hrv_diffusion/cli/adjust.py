"""applications/reduce_misinterpretation.py: SD-HRV / SDXL-HRV concept adjusting (SD v1.x and SDXL).

The word --selected_token of --prompt (all of its BPE pieces) gets, in every cross-attention head k, its
post-softmax attention multiplied by m_k = 2·HRV[desired, k] − HRV[undesired, k] (each HRV element first clamped
at --clamping_value: 9 by default for SDXL, no clamp for SD v1.x, as the reference's notebooks), on the conditional
half, at every evaluation, without renormalization. The standard and the adjusted image of each seed come from the
same starting noise, generated in one batch (--batch_size rows per call), and are written in the published layout:

    {output_path}/prompt_{NN}_{prompt, spaces -> _}/standard_sd/{seed}.png       (SDXL: sdxl_prompt_.../standard_sdxl)
    {output_path}/prompt_{NN}_{prompt, spaces -> _}/sd-hrv/{seed}.png            (SDXL: .../sdxl-hrv)
    {output_path}/prompt_{NN}_{prompt, spaces -> _}/side_by_side.png             (top: standard, bottom: adjusted)

Existing images are kept (resume) unless --overwrite; manifest.json records the settings. See docs/adjust.md.
"""
from __future__ import annotations

import argparse
import json

from hrv_diffusion.cli.p2p import show_defaults
from hrv_diffusion.cli.relevance import SD_CARD
from hrv_diffusion.cli.common import (ArgumentParser, finite_float, nonnegative_float, nonnegative_int, positive_int,
                                      step_fraction)

GRID = "side_by_side.png"
MANIFEST = "manifest.json"


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("the reference's settings")
    g.add_argument("--prompt", default="A vase in lavender color", help="the prompt")
    g.add_argument("--selected_token", "--word", "--target_token", dest="word", default=None,
                   help="the word of the prompt to adjust, all of its BPE pieces (e.g. lavender, rose-colored); "
                        "required")
    g.add_argument("--desired", default="Color", help="the concept the word should be read as")
    g.add_argument("--undesired", default="Plants",
                   help="the concept the word should not be read as ('none': strengthen the desired one only)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=list(range(1, 11)),
                   help="one image pair per seed")
    g.add_argument("--clamping_value", "--clamp", dest="clamp", default="auto",
                   help="upper bound of every HRV element before 2·d − u: a number, 'none', or 'auto' (9 for SDXL, "
                        "none for SD v1.x, as the reference's notebooks)")
    g.add_argument("--reweight_steps", type=step_fraction, nargs=2, default=[0.0, 1.01], metavar=("START", "END"),
                   help="adjusted evaluations [int(START·(S+1)), int(END·(S+1))): the reference's [0, 1.01] = all")
    g.add_argument("--model_card", default=SD_CARD,
                   help="hub id or local folder of an SD 1.x/2.x or SDXL model, or toy / tiny-sd / tiny-sdxl")
    g.add_argument("--n_inference_steps", type=positive_int, default=50,
                   help="PNDM steps (50 steps = 51 UNet evaluations)")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--prompt_num", type=nonnegative_int, default=1, help="NN of the output folder prompt_NN_...")
    g.add_argument("--output_path", default="./reduce_misinterpretation_outputs", help="root of the outputs")
    g.add_argument("--gpu_num", type=nonnegative_int, default=0, help="CUDA device index")
    a = p.add_argument_group("added")
    a.add_argument("--hrv", default="paper",
                   help="'paper' (the paper's HRVs for SD v1.4 / SDXL from the cache hrv-published fills; the toy's "
                        "shipped HRVs for --model_card toy) or an HRV built here (a category_vectors .npy or its "
                        "folder); other models need their own HRV")
    a.add_argument("--description", default=None,
                   help="the concept set of the HRV rows (default: toy_concepts for the toy model, else the paper's "
                        "340_final_text_descriptions)")
    a.add_argument("--weights", nargs="+", default=None, metavar="CONCEPT=WEIGHT",
                   help="any weighted combination instead of 2·desired − undesired, e.g. Color=2 Plants=-1 "
                        "Material=0.5")
    a.add_argument("--min_factor", type=finite_float, default=None,
                   help="lower bound of the head factors (the reference has none: factors can be negative)")
    a.add_argument("--renormalize", action="store_true",
                   help="divide each query's adjusted probabilities by their sum (needs --min_factor >= 0; slower: "
                        "explicit attention on the adjusted rows)")
    a.add_argument("--batch_size", type=positive_int, default=16,
                   help="rows per pipeline call; a seed's standard and adjusted images are two rows")
    a.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = float16 on CUDA, float32 on CPU; float32 is the faithful mode")
    a.add_argument("--device", default=None, help="torch device (default: cuda:GPU_NUM if available, else cpu)")
    a.add_argument("--decode", choices=["truncate", "round"], default="truncate",
                   help="uint8 conversion: truncate as the reference's notebooks, or round as diffusers' PIL path")
    a.add_argument("--overwrite", action="store_true",
                   help="regenerate existing images and replace a folder made with other settings")
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    show_defaults(p)
    return p


def parse_clamp(value, sdxl: bool) -> float | None:
    from hrv_diffusion.apps.adjust import SDXL_CLAMP
    from hrv_diffusion.errors import UserError

    text = str(value).strip().lower()
    if text == "auto":
        return SDXL_CLAMP if sdxl else None
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise UserError(f"--clamping_value takes a number, 'none' or 'auto', not {value!r}") from None


def parse_weights(args) -> dict[str, float]:
    from hrv_diffusion.apps.adjust import sd_hrv_weights
    from hrv_diffusion.errors import UserError

    if not args.weights:
        undesired = None if str(args.undesired).lower() == "none" else args.undesired
        return sd_hrv_weights(args.desired, undesired)
    out = {}
    for item in args.weights:
        concept, sep, value = item.rpartition("=")
        try:
            out[concept] = float(value)
        except ValueError:
            sep = ""
        if not sep or not concept:
            raise UserError(f"--weights takes CONCEPT=WEIGHT, e.g. Color=2 Plants=-1, not {item!r}")
    return out


def folder_names(prompt: str, prompt_num: int, sdxl: bool) -> tuple[str, str, str]:
    """(prompt folder, standard folder, adjusted folder) of the published layout."""
    from hrv_diffusion.apps.output_paths import safe_folder_name

    name = safe_folder_name(f"{'sdxl_' if sdxl else ''}prompt_{prompt_num:02d}_{prompt.replace(' ', '_')}")
    return name, ("standard_sdxl" if sdxl else "standard_sd"), ("sdxl-hrv" if sdxl else "sd-hrv")


def run(args) -> int:
    import numpy as np
    from PIL import Image
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.adjust import Adjustment, generate_adjusted, side_by_side, word_columns
    from hrv_diffusion.apps.output_paths import child_dir
    from hrv_diffusion.apps.p2p_runs import save_png, write_json
    from hrv_diffusion.cli.p2p import concept_names
    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import is_sdxl_index, load_model_index, load_pipeline, model_version
    from hrv_diffusion.core.tokenizer import clip_tokenizer
    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.vectors import load_hrv

    if not args.word:
        raise UserError("--selected_token is required: the word of the prompt to adjust, e.g. --selected_token "
                        f"{args.prompt.split(' ')[-1]!r}")
    if args.batch_size < 2:
        raise UserError("--batch_size must be at least 2: a seed's standard and adjusted images are two rows")
    weights = parse_weights(args)
    args.class_list_path = None
    names = concept_names(args)
    for concept in weights:
        if concept not in names:
            raise UserError(f"unknown concept {concept!r}; the concept set has: {', '.join(names)}")
    word_columns(clip_tokenizer(), args.prompt, args.word)  # before anything loads
    from hrv_diffusion.core.models import ALIASES
    from hrv_diffusion.core.tiny import TINY_MODELS

    card = args.model_card
    sdxl = card == "tiny-sdxl" if card in TINY_MODELS else is_sdxl_index(load_model_index(str(ALIASES.get(card, card))))
    adjustment = Adjustment(args.word, weights, clamp=parse_clamp(args.clamp, sdxl), steps=tuple(args.reweight_steps),
                            min_factor=args.min_factor, renormalize=args.renormalize)
    mv = model_version(card)
    if str(args.hrv) == "paper":
        load_hrv("paper", mv, names)  # the missing-download error before the model loads

    device = resolve_device(args.device, args.gpu_num)
    dtype = resolve_dtype(args.dtype, device)
    pipe = load_pipeline(card, dtype=dtype, device=device)
    layout = head_layout(pipe.unet)
    hrv = load_hrv(args.hrv, mv, names, layout)

    prompt_folder, standard_name, adjusted_name = folder_names(args.prompt, args.prompt_num, sdxl)
    root = child_dir(args.output_path, prompt_folder)
    standard_dir, adjusted_dir = root / standard_name, root / adjusted_name
    manifest = {"prompt": args.prompt, "model_card": card, "model_version": mv, "dtype": dtype,
                "num_inference_steps": args.n_inference_steps, "guidance_scale": args.guidance_scale,
                "decode": args.decode, "adjustment": adjustment.to_dict(), "hrv": hrv.source,
                "hrv_fingerprint": hrv.fingerprint()}
    manifest_path = root / MANIFEST
    if manifest_path.is_file() and not args.overwrite:
        old = json.loads(manifest_path.read_text())
        if old != manifest:
            changed = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise UserError(f"{root} was made with other settings ({', '.join(changed)}): pass --overwrite to "
                            "replace its images, or another --output_path / --prompt_num")
    seeds = list(dict.fromkeys(args.seeds))
    todo = [s for s in seeds if args.overwrite or not ((standard_dir / f"{s}.png").is_file()
                                                      and (adjusted_dir / f"{s}.png").is_file())]
    root.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, manifest)
    per_call = args.batch_size // 2
    bar = tqdm(total=len(todo), unit="seed", disable=args.quiet, desc="SD-HRV")
    for start in range(0, len(todo), per_call):
        chunk = todo[start : start + per_call]
        out = generate_adjusted(pipe, [args.prompt] * len(chunk), chunk, adjustment, hrv=hrv,
                                num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale,
                                decode=args.decode)
        for seed, standard, adjusted in zip(chunk, out.standard, out.adjusted):
            save_png(standard, standard_dir / f"{seed}.png")
            save_png(adjusted, adjusted_dir / f"{seed}.png")
        bar.update(len(chunk))
    bar.close()

    def read(folder):
        return np.stack([np.asarray(Image.open(folder / f"{s}.png").convert("RGB")) for s in seeds])

    save_png(side_by_side([read(standard_dir), read(adjusted_dir)]), root / GRID)
    print(f"{len(todo)} standard and {len(todo)} adjusted images written under {root} "
          f"({len(seeds) - len(todo)} seeds kept); side by side: {root / GRID}")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
