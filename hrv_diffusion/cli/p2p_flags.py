"""Flag groups and option parsing that ``hrv-p2p`` and ``hrv-p2p-benchmark`` share (a shared module, no command).

``add_window_flags`` (the published windows and ``--experiment_num``), ``add_mode_flags`` (which methods),
``add_added_flags`` (P2P's extras: refine, reweight, local blend, masks), ``add_shared_groups`` (the run harness's
model, generation, output and HRV groups with P2P's defaults) and ``method_specs``: the ``EditSpec`` of every
method the flags ask for.
"""
from __future__ import annotations

from pathlib import Path

from hrv_diffusion.cli.common import fraction, nonnegative_int, positive_int
from hrv_diffusion.cli.flags import (add_generation_flags, add_hrv_flags, add_model_flags, add_output_flags)

DEFAULT_SEEDS = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]
COMPILE_HELP = ("compile the UNet regions that are not edited (faster for long GPU runs after 1-2 minutes of "
                "compilation)")
BATCH_HELP = "at most this many images (rows) per pipeline call; a seed's source and edits stay together"


def add_shared_groups(g, *, output_path: str) -> None:
    """The harness's flag groups with P2P's defaults: seeds 10..100, 16 rows a batch, truncating decode."""
    add_model_flags(g, compile_help=COMPILE_HELP)
    add_generation_flags(g, seeds=DEFAULT_SEEDS, batch_size=16, batch_help=BATCH_HELP, decode="truncate")
    add_output_flags(g, default_path=output_path)
    add_hrv_flags(g, hrv_files=True, class_list=True)


def add_window_flags(g) -> None:
    """The published flags of the windows and the restoration, and ``--experiment_num``."""
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
    """P2P's extras beyond the reference: refinement, reweighting, local blending, masks, the mapper's tail."""
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


# ------------------------------------------------------------------------------------------------ methods

def reweights(items) -> tuple[tuple[str, float], ...]:
    """``--reweight red=2 car=0.5`` -> (("red", 2.0), ("car", 0.5))."""
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


def _suffix(args) -> str:
    suffix = ("_refine" if args.edit == "refine" else "") + ("_aligned" if args.mapper_tail == "aligned" else "")
    return suffix + ("_reweight" if args.reweight else "") + ("_blend" if args.local_blend else "")


def method_specs(args, layout=None) -> list:
    """The EditSpecs of a run from the flags (``layout`` is needed by the head-list mode only)."""
    from hrv_diffusion.apps.p2p import EditSpec
    from hrv_diffusion.apps.p2p_runs import method_folder
    from hrv_diffusion.errors import UserError

    suffix = _suffix(args)
    common = dict(edit=args.edit, reweight=reweights(args.reweight), local_blend=tuple(args.local_blend or ()) or None,
                  blend_threshold=args.blend_threshold, mapper_tail=args.mapper_tail)
    specs = []
    if args.save_original_p2p:
        specs.append(EditSpec(method_folder("original_p2p", None, None, suffix),
                              cross_replace_steps=args.original_p2p_cross_replace_steps,
                              self_replace_steps=args.original_p2p_self_replace_steps, **common))
    windows = dict(cross_replace_steps=args.cross_replace_steps, self_replace_steps=args.self_replace_steps,
                   token_restoration_start_step=args.token_restoration_start_step, **common)
    if not args.concepts:
        if not specs:
            raise UserError("nothing to make: pass --concepts (P2P-HRV) or --save_original_p2p (the P2P baseline)")
        return specs
    if args.use_soft_vector:
        hrv_extras = dict(reweight_with_hrv=args.reweight_with_hrv, blend_with_hrv=args.blend_with_hrv)
        for concept in args.concepts:
            specs.append(EditSpec(method_folder("hrv", concept, args.self_replace_steps, suffix), restoration="hrv",
                                  concept=concept, **windows, **hrv_extras))
    elif args.replace_all_heads:
        if args.reweight_with_hrv or args.blend_with_hrv:
            raise UserError("--reweight_with_hrv and --blend_with_hrv need --use_soft_vector (a concept's HRV)")
        specs.append(EditSpec(method_folder("all_heads", None, args.self_replace_steps, suffix),
                              restoration="all_heads", **windows))
    elif args.head_list_path:
        specs += head_list_specs(args, layout, suffix, windows)
    else:
        raise UserError("choose how P2P-HRV restores the target token: --use_soft_vector (the paper's P2P-HRV: "
                        "times the head's HRV value), --replace_all_heads (factor 1 in every head) or "
                        "--head_list_path FILE (the reference's deprecated head-list mode); or pass --concepts "
                        "with no value and --save_original_p2p for the P2P baseline alone")
    return specs


def head_list_specs(args, layout, suffix: str, windows: dict) -> list:
    """The reference's head-list mode: factor 1 in the heads ``--head_list_path`` lists for each concept (or, with
    ``--complement``, in every other head of ``layout``)."""
    from hrv_diffusion.apps.p2p import EditSpec
    from hrv_diffusion.apps.p2p_runs import method_folder
    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.files import read_head_roles

    path = Path(args.head_list_path)
    if not path.is_file():
        raise UserError(f"no head-list file {path}: pass a head_roles_*.csv (extract_head_relevance_vectors.py "
                        "writes them), or use --use_soft_vector")
    roles = read_head_roles(path)
    specs = []
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
                              restoration="head_list", concept=None, head_list=heads, **windows))
    return specs


# ------------------------------------------------------------------------------------------------ settings

def run_settings(args, ctx, hrv):
    """The run's ``RunSettings`` from the flags and the loaded model of ``ctx`` (a ``RunContext``): the defaults
    of ``--self_max_queries`` and ``--blend_resolution`` follow the model and ``--height/--width``."""
    from hrv_diffusion.apps.p2p import default_blend_resolution, default_self_max_queries
    from hrv_diffusion.apps.p2p_runs import RunSettings

    pipe, height, width = ctx.pipe, ctx.height, ctx.width
    return RunSettings(
        model_card=args.model_card, model_version=ctx.model_version, dtype=ctx.dtype,
        num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale, decode=args.decode,
        self_max_queries=args.self_max_queries or default_self_max_queries(pipe, height, width),
        blend_resolution=args.blend_resolution or default_blend_resolution(pipe, ctx.layout, height, width),
        height=height, width=width,
        hrv=None if hrv is None else hrv.source, hrv_fingerprint=None if hrv is None else hrv.fingerprint())


def compile_skip(ctx, settings) -> list[str]:
    """The self-attention layers P2P edits (at most ``self_max_queries`` queries): ``--compile`` leaves them
    eager."""
    latent = ctx.latent_shape()[1:]  # the generation's (h, w): the edited layers are chosen at this size
    return [layer.module_name for layer in ctx.layout.self_layers
            if layer.queries(latent) <= settings.self_max_queries]
