"""applications/p2p_hrv.py: edit an image with Prompt-to-Prompt and P2P-HRV (SD v1.x and SDXL).

Keeps the reference's flags and output layout. For each seed, the source prompt's image is generated once and
shared by the P2P baseline (--save_original_p2p) and P2P-HRV for every --concepts entry, all in one batch:

    {output_path}/exp_{N}/source/{source}/{seed}.png
    {output_path}/exp_{N}/original_p2p/{source}_to_{target}/{seed}.png
    {output_path}/exp_{N}/{concept}_{self_replace_steps}/{source}_to_{target}/{seed}.png

P2P-HRV: during the cross window the target prompt attends like the source (word-swap mapper), except the
--target_token columns, which keep the target's own attention times the head's HRV value for the concept. Existing
images are skipped (resume); each folder's manifest.json records its settings. See docs/p2p.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hrv_diffusion.cli.relevance import SD_CARD
from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, fraction, nonnegative_float, nonnegative_int,
                                      positive_int)

DEFAULT_SEEDS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]


def add_model_flags(g, default_card: str = SD_CARD) -> None:
    """The published flags that the benchmark runner shares (model, steps, windows, HRV files)."""
    g.add_argument("--gpu_num", type=nonnegative_int, default=0, help="CUDA device index (under torchrun: LOCAL_RANK)")
    g.add_argument("--model_card", default=default_card,
                   help="hub id or local folder of an SD 1.x/2.x or SDXL model, or toy / tiny-sd / tiny-sdxl")
    g.add_argument("--n_inference_steps", type=positive_int, default=50,
                   help="PNDM steps (50 steps = 51 UNet evaluations)")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--token_restoration_start_step", type=nonnegative_int, default=0,
                   help="first UNet evaluation at which P2P-HRV restores the target token (before it: plain P2P)")
    g.add_argument("--replace_all_heads", action="store_true",
                   help="restore the target token in every head with factor 1 (folder all_heads_{self}); "
                        "--use_soft_vector wins when both are given")
    g.add_argument("--cross_replace_steps", type=fraction, default=0.8,
                   help="P2P-HRV cross-attention window: evaluations < int(f * (steps + 1))")
    g.add_argument("--self_replace_steps", type=fraction, default=0.9,
                   help="P2P-HRV self-attention window: evaluations < int(f * steps)")
    g.add_argument("--original_p2p_cross_replace_steps", type=fraction, default=0.8,
                   help="the P2P baseline's cross window")
    g.add_argument("--original_p2p_self_replace_steps", type=fraction, default=0.4,
                   help="the P2P baseline's self window")
    g.add_argument("--experiment_num", default="1", help="outputs go to OUTPUT_PATH/exp_N")
    g.add_argument("--category_vectors_path", default=None,
                   help="HRV file (category_vectors_*.npy; its head_index_*.npy beside it); overrides --hrv")
    g.add_argument("--head_index_path", default=None,
                   help="head labels of --category_vectors_path (default: beside it)")


def add_mode_flags(g) -> None:
    """The published flags that choose the methods."""
    g.add_argument("--use_soft_vector", action="store_true",
                   help="P2P-HRV: restore the target token in every head times the head's HRV value (folder "
                        "{concept}_{self})")
    g.add_argument("--save_original_p2p", action="store_true", help="also make the P2P baseline (folder original_p2p)")
    g.add_argument("--head_list_path", default=None,
                   help="the reference's deprecated mode (neither --use_soft_vector nor --replace_all_heads): restore "
                        "the target token, factor 1, only in the heads a head_roles CSV lists for the concept")
    g.add_argument("--complement", action="store_true", help="head-list mode: use every head not in the list")
    g.add_argument("--negative_prompt", action="store_true", help="accepted and ignored, as in the reference")


def add_added_flags(g) -> None:
    g.add_argument("--hrv", default="paper",
                   help="'paper' (the paper's HRVs for SD v1.4 / SDXL, from the cache hrv-published fills; the "
                        "toy's shipped HRVs for --model_card toy) or an HRV built here (a category_vectors .npy or "
                        "its folder)")
    g.add_argument("--description", default=None,
                   help="the concept set the HRV rows belong to (default: toy_concepts for the toy model, else "
                        "the paper's 340_final_text_descriptions)")
    g.add_argument("--class_list_path", default=None, help="the reference's concept list; same as --description")
    g.add_argument("--edit", choices=["replace", "refine"], default="replace",
                   help="replace = word swap (equal word counts, the reference); refine = prompts that differ by "
                        "added words (P2P's refinement alignment); method folders get a _refine suffix")
    g.add_argument("--reweight", nargs="+", default=[], metavar="WORD=FACTOR",
                   help="also scale the attention to words of the target prompt (P2P's reweighting); suffix "
                        "_reweight")
    g.add_argument("--reweight_with_hrv", action="store_true",
                   help="P2P-HRV methods: reweight factor x the head's HRV value")
    g.add_argument("--local_blend", nargs=2, default=None, metavar=("SOURCE_WORDS", "TARGET_WORDS"),
                   help="keep the image outside the region these words attend to (P2P's local blending, from "
                        "the map store); suffix _blend")
    g.add_argument("--blend_with_hrv", action="store_true",
                   help="P2P-HRV methods: blending maps weighted by the HRV instead of a mean over heads")
    g.add_argument("--blend_threshold", type=fraction, default=0.3,
                   help="local blending keeps the pixels whose max-normalized word map exceeds this")
    g.add_argument("--blend_resolution", type=positive_int, default=None,
                   help="resolution of the blending and mask maps (default: the model's CA resolution nearest to a "
                        "quarter of the latent side: 16 for SD v1.4, 32 for SDXL)")
    g.add_argument("--mapper_tail", choices=["reference", "aligned"], default="reference",
                   help="word-swap mapper after the last swapped word: reference = M[j, j] (misaligned after a swap "
                        "that changes the token count, as published) or aligned = M[i, j]; aligned adds _aligned")
    g.add_argument("--self_max_queries", type=positive_int, default=None,
                   help="self-attention is replaced in layers with at most this many queries (default: "
                        "(latent side / 4)^2: 256 = 16x16 for SD v1.4 as in the reference, 1024 for SDXL)")
    g.add_argument("--save_masks", action="store_true",
                   help="also write each pair's swapped-word region in the source image (masks/), for the "
                        "preservation metrics")
    g.add_argument("--batch_size", type=positive_int, default=16,
                   help="at most this many images (rows) per pipeline call; a seed's source and edits stay together")
    g.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = float16 on CUDA, float32 on CPU; float32 is the faithful mode")
    g.add_argument("--device", default=None, help="torch device (default: cuda:GPU_NUM if available, else cpu)")
    g.add_argument("--compile", action="store_true",
                   help="compile the UNet regions that are not edited (faster for long GPU runs after 1-2 minutes "
                        "of compilation)")
    g.add_argument("--decode", choices=["truncate", "round"], default="truncate",
                   help="uint8 conversion: truncate as the reference's P2P script, or round as diffusers' PIL path")
    g.add_argument("--overwrite", action="store_true",
                   help="regenerate images that exist and replace folders made with other settings")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    g = p.add_argument_group("published flags")
    g.add_argument("--prompts", nargs="+", default=None, metavar="PROMPT", help="SOURCE TARGET (required)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=DEFAULT_SEEDS, help="one image per seed")
    g.add_argument("--concepts", nargs="*", default=["Color"],
                   help="one P2P-HRV method and folder per concept; no value: the P2P baseline alone")
    g.add_argument("--target_token", default=None,
                   help="the word of the target prompt that P2P-HRV restores, e.g. red (required for P2P-HRV)")
    g.add_argument("--output_path", default="./applications/image_editing_outputs", help="root of the outputs")
    add_model_flags(g)
    add_mode_flags(g)
    add_added_flags(p.add_argument_group("added"))
    show_defaults(p)
    return p


def show_defaults(parser: argparse.ArgumentParser) -> None:
    """Append "(default: ...)" to the help of every flag that has a default and does not say it already."""
    for action in parser._actions:
        default = action.default
        if action.help and default is not None and default is not False and default not in ([], argparse.SUPPRESS) \
                and "(default" not in action.help:
            action.help += f" (default: {' '.join(map(str, default)) if isinstance(default, list) else default})"


def _reweights(items) -> tuple[tuple[str, float], ...]:
    from hrv_diffusion.errors import UserError

    out = []
    for item in items:
        word, sep, value = item.rpartition("=")
        try:
            out.append((word, float(value)))
        except ValueError:
            sep = ""
        if not sep or not word:
            raise UserError(f"--reweight takes WORD=FACTOR, e.g. red=2, not {item!r}")
    return tuple(out)


def default_description(card: str) -> str:
    return "toy_concepts" if card == "toy" else "340_final_text_descriptions"


def method_specs(args, layout=None) -> list:
    """The EditSpecs of a run from the flags (``layout`` is needed by the head-list mode only)."""
    from hrv_diffusion.apps.p2p import EditSpec
    from hrv_diffusion.apps.p2p_runs import method_folder
    from hrv_diffusion.errors import UserError

    suffix = ("_refine" if args.edit == "refine" else "") + ("_aligned" if args.mapper_tail == "aligned" else "")
    suffix += ("_reweight" if args.reweight else "") + ("_blend" if args.local_blend else "")
    common = dict(edit=args.edit, reweight=_reweights(args.reweight), local_blend=tuple(args.local_blend or ()) or None,
                  blend_threshold=args.blend_threshold, mapper_tail=args.mapper_tail)
    specs = []
    if args.save_original_p2p:
        specs.append(EditSpec(method_folder("original_p2p", None, None, suffix),
                              cross_replace_steps=args.original_p2p_cross_replace_steps,
                              self_replace_steps=args.original_p2p_self_replace_steps, **common))
    hrv_extras = dict(reweight_with_hrv=args.reweight_with_hrv, blend_with_hrv=args.blend_with_hrv)
    windows = dict(cross_replace_steps=args.cross_replace_steps, self_replace_steps=args.self_replace_steps,
                   token_restoration_start_step=args.token_restoration_start_step)
    if not args.concepts:
        if not specs:
            raise UserError("nothing to make: pass --concepts (P2P-HRV) or --save_original_p2p (the P2P baseline)")
        return specs
    if args.use_soft_vector:
        for concept in args.concepts:
            specs.append(EditSpec(method_folder("hrv", concept, args.self_replace_steps, suffix), restoration="hrv",
                                  concept=concept, **windows, **common, **hrv_extras))
    elif args.replace_all_heads:
        if args.reweight_with_hrv or args.blend_with_hrv:
            raise UserError("--reweight_with_hrv and --blend_with_hrv need --use_soft_vector (a concept's HRV)")
        specs.append(EditSpec(method_folder("all_heads", None, args.self_replace_steps, suffix),
                              restoration="all_heads", **windows, **common))
    elif args.head_list_path:
        from hrv_diffusion.hrv.files import read_head_roles

        path = Path(args.head_list_path)
        if not path.is_file():
            raise UserError(f"no head-list file {path}: pass a head_roles_*.csv (extract_head_relevance_vectors.py "
                            "writes them), or use --use_soft_vector")
        roles = read_head_roles(path)
        for concept in args.concepts:
            if concept not in roles:
                raise UserError(f"concept {concept!r} is not in {path.name}; it has: {', '.join(roles)}")
            heads = tuple(roles[concept])
            if layout is not None:
                for label in heads:
                    layout.index_of(label)
                if args.complement:
                    heads = tuple(label for label in layout.labels if label not in set(heads))
            kind = "complement" if args.complement else "head_list"
            specs.append(EditSpec(method_folder(kind, concept, args.self_replace_steps, suffix),
                                  restoration="head_list", concept=None, head_list=heads, **windows, **common))
    else:
        raise UserError("choose how P2P-HRV restores the target token: --use_soft_vector (the paper's P2P-HRV: "
                        "times the head's HRV value), --replace_all_heads (factor 1 in every head) or "
                        "--head_list_path FILE (the reference's deprecated head-list mode); or pass --concepts "
                        "with no value and --save_original_p2p for the P2P baseline alone")
    return specs


def concept_names(args) -> tuple[str, ...]:
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description

    description = args.class_list_path or args.description or default_description(args.model_card)
    return read_concept_set(resolve_description(description)).names


def check_concepts(args, concepts) -> None:
    from hrv_diffusion.errors import UserError

    names = concept_names(args)
    for concept in concepts:
        if concept not in names:
            raise UserError(f"unknown concept {concept!r}; the concept set has: {', '.join(names)}")


def load_run_hrv(args, model_version: str, concepts_needed, layout):
    """The HRV in ``layout``'s head order (or None when no method needs one)."""
    from hrv_diffusion.hrv.vectors import load_hrv
    from hrv_diffusion.errors import UserError

    if not concepts_needed:
        return None
    names = concept_names(args)
    if args.category_vectors_path and args.head_index_path:
        import numpy as np

        from hrv_diffusion.hrv.files import read_hrv
        from hrv_diffusion.hrv.vectors import HRV

        values, labels = read_hrv(args.category_vectors_path, args.head_index_path)
        if values.ndim != 2 or values.shape[0] != len(names):
            raise UserError(f"{args.category_vectors_path} has shape {values.shape}; the concept set has "
                            f"{len(names)} concepts")
        hrv = HRV(values.astype(np.float32), tuple(names), tuple(labels), str(args.category_vectors_path))
        return hrv.for_layout(layout)
    return load_hrv(args.category_vectors_path or args.hrv, model_version, names, layout)


def run(args) -> int:
    from tqdm.auto import tqdm

    from hrv_diffusion.apps.p2p import Edit, check_edit
    from hrv_diffusion.apps.p2p_runs import EditLayout, Pair, run_edits
    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.models import model_version
    from hrv_diffusion.core.tokenizer import clip_tokenizer
    from hrv_diffusion.errors import UserError

    if not args.prompts or len(args.prompts) != 2:
        raise UserError("--prompts takes two prompts: SOURCE TARGET, e.g. --prompts \"a blue car\" \"a red car\"")
    source, target = args.prompts
    specs = method_specs(args)  # checks the flags before anything loads
    tokenizer = clip_tokenizer()  # the CLIP tokenizer of SD 1.x / SDXL, to check words before loading the model
    for spec in specs:
        check_edit(tokenizer, source, Edit(target, spec, args.target_token))
    mv = model_version(args.model_card)
    hrv_concepts = sorted({s.concept for s in specs if s.uses_hrv})
    check_concepts(args, args.concepts)

    device = resolve_device(args.device, args.gpu_num)
    dtype = resolve_dtype(args.dtype, device)
    pipe = load_run_pipeline(args, dtype, device)
    from hrv_diffusion.core.heads import head_layout

    layout = head_layout(pipe.unet)
    if args.head_list_path:
        specs = method_specs(args, layout)
    hrv = load_run_hrv(args, mv, hrv_concepts, layout)
    settings = run_settings(args, pipe, mv, dtype, hrv)
    maybe_compile(args, pipe, settings, specs)
    exp = EditLayout(args.output_path, args.experiment_num, settings, overwrite=args.overwrite)
    pair = Pair(source, target, args.target_token, tuple(specs))
    bar = tqdm(unit="edit", disable=args.quiet, desc="P2P edits")
    report = run_edits(pipe, [pair], args.seeds, exp, hrv=hrv, batch_size=args.batch_size, masks=args.save_masks,
                       progress=bar)
    bar.close()
    print(f"{report.edits_written} edited and {report.sources_written} source images written under {exp.exp_dir} "
          f"({', '.join(s.name for s in specs)})")
    return 0


def load_run_pipeline(args, dtype: str, device: str):
    from hrv_diffusion.core.models import load_pipeline

    return load_pipeline(args.model_card, dtype=dtype, device=device)


def run_settings(args, pipe, mv: str, dtype: str, hrv):
    from hrv_diffusion.apps.p2p import default_blend_resolution, default_self_max_queries
    from hrv_diffusion.apps.p2p_runs import RunSettings
    from hrv_diffusion.core.heads import head_layout

    return RunSettings(
        model_card=args.model_card, model_version=mv, dtype=dtype, num_inference_steps=args.n_inference_steps,
        guidance_scale=args.guidance_scale, decode=args.decode,
        self_max_queries=args.self_max_queries or default_self_max_queries(pipe),
        blend_resolution=args.blend_resolution or default_blend_resolution(pipe, head_layout(pipe.unet)),
        hrv=None if hrv is None else hrv.source, hrv_fingerprint=None if hrv is None else hrv.fingerprint())


def maybe_compile(args, pipe, settings, specs) -> None:
    """``--compile``: every UNet region but the cross-attention and the self-attention layers P2P edits."""
    if not args.compile:
        return
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.speed import compile_unet_regions

    hooked = [layer.module_name for layer in head_layout(pipe.unet).self_layers
              if layer.num_queries <= settings.self_max_queries]
    compile_unet_regions(pipe.unet, skip=hooked)


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
