"""``hrv-heads MODEL``: list the cross-attention (CA) heads of a UNet in the published HRV order (of a PixArt
transformer: its blocks in order).

One line per CA head, tab-separated: the label as the released files write it, the diffusers module of its
layer, and the latent grid of that layer's queries::

    down, layer: 0, head: 0<TAB>down_blocks.0.attentions.0.transformer_blocks.0.attn2<TAB>64x64

Line i is head i of every HRV vector, so ``hrv-heads ... | sed -n 42p`` names head 41 (0-based).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

from hrv_diffusion.errors import UserError
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter

EXAMPLES = """\
examples:
  hrv-heads --config-only CompVis/stable-diffusion-v1-4        # 128 heads, from unet/config.json only
  hrv-heads --config-only path/to/unet/config.json --summary   # counts per place
  hrv-heads tiny-sdxl --labels-only                            # built-in tiny model, no download
  hrv-heads --config-only PixArt-alpha/PixArt-XL-2-1024-MS     # 448 heads (block 0..27 x 16), no download
  hrv-heads --model_card tiny-pixart                           # tiny PixArt: block 0, head 0 ...
  hrv-heads /models/my-sdxl-folder                             # a local diffusers folder (weights loaded)

MODEL is a hub id (used from the Hugging Face cache when offline), a local diffusers folder (with
model_index.json), the path of a UNet config.json (always read without weights), or tiny-sd / tiny-sd2 / tiny-sdxl /
tiny-pixart. PixArt-α/Σ (PixArt-alpha/PixArt-XL-2-1024-MS, PixArt-alpha/PixArt-Sigma-XL-2-1024-MS) list their
transformer blocks in order, labelled "block 12, head 3".
Exit status: 0 on success, 2 when the model cannot be found or read.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="hrv-heads",
        description="List the cross-attention (CA) heads of a Stable Diffusion UNet in the published HRV order\n"
        "(place down, mid, up; then the layer in forward order; then the head), one per line:\n"
        "label<TAB>module name<TAB>query resolution. Line i is entry i of every HRV vector.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("model", metavar="MODEL", nargs="?", default=None,
                        help="hub id, local diffusers folder, path to a UNet config.json, or toy / tiny-sd / tiny-sd2 / "
                        "tiny-sdxl / tiny-pixart")
    parser.add_argument("--model_card", default=None, help="MODEL as a flag, as in the other commands")
    parser.add_argument("--config-only", action="store_true",
                        help="build the UNet from its config alone on the meta device: no weights are read or "
                        "downloaded, no memory is used (default: load the pipeline's UNet)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--labels-only", action="store_true",
                        help="print only the labels, one per line (the layout of the released head_index files)")
    output.add_argument("--summary", action="store_true",
                        help="print only the number of heads per place and in total")
    return parser


class _UsageError(UserError):
    """A MODEL argument that names nothing usable; reported as one line."""


def _looks_like_path(model: str) -> bool:
    """A file-system path rather than a hub id (``owner/name``) or a built-in name."""
    return model.endswith(".json") or model.startswith((".", "/", "~")) or model.count("/") > 1


def load_unet(model: str, config_only: bool):
    """The denoiser whose heads we list: a meta-device one from the config, or the pipeline's own (a UNet, or a
    PixArt transformer; the real PixArt-α/Σ cards build from the configs written in ``core/families/pixart``)."""
    from hrv_diffusion.core.families import denoiser, pixart
    from hrv_diffusion.core.heads import unet_from_config
    from hrv_diffusion.core.hub import BUILT_IN
    from hrv_diffusion.core.models import load_pipeline, load_unet_config

    if config_only and model in pixart.CONFIGS:
        return pixart.from_config(pixart.CONFIGS[model])
    if model in BUILT_IN:  # a built-in name wins over a folder of that name (the checkout's toy/ scripts)
        return denoiser(load_pipeline(model))
    path = Path(model).expanduser()
    if _looks_like_path(model) and not path.exists():
        raise _UsageError(f"no such file or folder: {model}")
    if path.is_dir() and not (path / "model_index.json").exists():
        if (path / "config.json").is_file():
            path = path / "config.json"  # a UNet folder (e.g. some-model/unet) rather than a pipeline folder
        elif not (config_only and (path / "unet" / "config.json").is_file()):
            raise _UsageError(f"{model} is not a diffusers folder: no model_index.json, unet/config.json "
                              "or config.json in it")
    if path.is_file() or config_only:  # a config.json has no weights to load
        try:
            config = load_unet_config(str(path) if path.exists() else model)
        except json.JSONDecodeError as error:
            raise _UsageError(f"{model} is not a JSON file: {error}") from None
        if isinstance(config, dict) and pixart.is_config(config):
            return pixart.from_config(config)
        if not isinstance(config, dict) or "block_out_channels" not in config:
            raise _UsageError(f"{model} is not a UNet config (no block_out_channels)")
        try:
            return unet_from_config(config)
        except (TypeError, ValueError, KeyError) as error:
            raise _UsageError(f"cannot build a UNet from the config of {model}: {error}") from None
    return denoiser(load_pipeline(str(path) if path.exists() else model))


def summary_line(layout) -> str:
    """``128 CA heads in 16 layers (down 48, mid 8, up 72)``; a UNet lists all three places, even empty ones."""
    from hrv_diffusion.core.heads import PLACES

    heads = Counter()
    for layer in layout.layers:
        heads[layer.place] += layer.heads
    unet = not heads or set(heads) <= set(PLACES[:3])
    places = ", ".join(f"{place} {heads[place]}" for place in (PLACES[:3] if unet else heads))
    return f"{layout.num_heads} CA heads in {len(layout.layers)} layers ({places})"


def format_lines(layout, labels_only: bool = False) -> list[str]:
    """One line per CA head in the published order: label, or label<TAB>module<TAB>HxW."""
    lines = []
    for layer in layout.layers:
        height, width = layer.resolution
        for head in range(layer.heads):
            label = layer.label(head)
            lines.append(label if labels_only else f"{label}\t{layer.module_name}\t{height}x{width}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if bool(args.model) == bool(args.model_card):
        parser.error("give the model once: MODEL or --model_card MODEL")
    args.model = args.model or args.model_card

    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import ModelNotAvailableError

    try:
        with warnings.catch_warnings():  # diffusers' own deprecation noise from huggingface_hub
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            layout = head_layout(load_unet(args.model, args.config_only))
    except (_UsageError, ModelNotAvailableError) as error:
        # One line, hints included. Here MODEL is positional, so the hint's "--model_card PATH" reads "PATH".
        message = " ".join(str(error).split()).replace("--model_card ", "")
        print(f"error: {message}", file=sys.stderr)
        return 2
    if layout.num_heads == 0:
        print(f"error: {args.model} has no cross-attention layers", file=sys.stderr)
        return 2

    lines = [summary_line(layout)] if args.summary else format_lines(layout, args.labels_only)
    try:
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `hrv-heads ... | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
