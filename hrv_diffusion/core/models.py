"""Loading the text-to-image pipeline that every script uses.

``load_pipeline(card)`` accepts a hub id (CompVis/stable-diffusion-v1-4, stabilityai/stable-diffusion-xl-base-1.0,
stabilityai/stable-diffusion-2-1 and the other SD 2.x cards of ``SD2_CARDS``, other SD 1.x / 2.x / SDXL cards), a
local diffusers folder, or a built-in tiny model name. It picks the SD or
SDXL pipeline from the model's own ``model_index.json`` and, by default, installs the paper's sampler.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path

import torch

from hrv_diffusion.core.device import DTYPES
from hrv_diffusion.core.hub import BUILT_IN, ModelNotAvailableError, check_card_files
from hrv_diffusion.errors import UserError


# SD 2.x (OpenCLIP ViT-H text encoder, 195 CA heads): 2.1 and 2.0 at 768 px (v-prediction), their -base at 512 px.
SD2_CARDS = {
    "stabilityai/stable-diffusion-2-1": "sd_v2_1",
    "stabilityai/stable-diffusion-2-1-base": "sd_v2_1_base",
    "stabilityai/stable-diffusion-2": "sd_v2",
    "stabilityai/stable-diffusion-2-base": "sd_v2_base",
}

# Names in HRV file names: the reference's for its two models, ``SD2_CARDS``'s for SD 2.x; other cards get a
# sanitized name of their own.
MODEL_VERSIONS = {
    "CompVis/stable-diffusion-v1-4": "sd_v1_4",
    "stabilityai/stable-diffusion-xl-base-1.0": "sd_xl_base_1_0",
    **SD2_CARDS,
    "toy-dit": "toy_dit",
}


# Pipelines of the PixArt family, loaded by their own class (model_index.json's _class_name), and its hub ids (the
# keys of core/families/pixart.CONFIGS; not imported from there, which imports this module through the UNet family).
PIXART_PIPELINES = ("PixArtAlphaPipeline", "PixArtSigmaPipeline")
PIXART_CARDS = ("PixArt-alpha/PixArt-XL-2-1024-MS", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS")

# The built-in toy model (issue 4): a small SD-structured model trained on synthetic colored shapes.
TOY_MODEL_DIR = Path(__file__).resolve().parents[1] / "data" / "toy"
# The toy diffusion transformer (issue 22, hrv_diffusion/toy/dit.py): its transformer, with the toy's VAE and text.
TOY_DIT_DIR = Path(__file__).resolve().parents[1] / "data" / "toy_dit"
ALIASES = {"toy": TOY_MODEL_DIR, "toy-dit": TOY_DIT_DIR}


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "model"


def paper_model_from_config(folder: str | Path) -> str | None:
    """``sd_v1_4`` or ``sd_xl_base_1_0`` when the diffusers folder holds a copy of a paper model, from its UNet
    config: SD v1.x (cross_attention_dim 768, block_out_channels 320 640 1280 1280, sample_size 64) and SDXL base
    (addition_embed_type text_time, cross_attention_dim 2048, sample_size 128); else None. SD v1.5 has the
    config of v1.4: a folder whose name says another 1.x version (``..._v1_5``) is not taken for v1.4."""
    import json

    config_file = Path(folder) / "unet" / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    cross, size = config.get("cross_attention_dim"), config.get("sample_size")
    if config.get("addition_embed_type") == "text_time" and cross == 2048 and size == 128:
        return "sd_xl_base_1_0"
    if cross == 768 and list(config.get("block_out_channels") or []) == [320, 640, 1280, 1280] and size == 64:
        other = re.search(r"(?:^|_)v?1_([0-9])(?:_|$)", _sanitized(Path(folder).resolve().name))
        return None if other and other.group(1) != "4" else "sd_v1_4"
    return None


def model_version(card: str) -> str:
    """``sd_v1_4`` / ``sd_xl_base_1_0`` for the paper's models (hub ids, or local folders recognized by
    ``paper_model_from_config``), ``sd_v2_1`` etc. for the SD 2.x hub ids, else a file-name-safe form of the card (a
    local folder: its name; SD 2.0 and 2.1 share one UNet config, so a folder is not recognized by it)."""
    if card in MODEL_VERSIONS:
        return MODEL_VERSIONS[card]
    if card in ALIASES:
        return card
    if Path(card).is_dir():
        return paper_model_from_config(card) or _sanitized(Path(card.rstrip("/")).name)
    name = Path(card.rstrip("/")).name if Path(card).exists() else card
    return _sanitized(name)


def _not_available(card: str, what: str, error: Exception) -> ModelNotAvailableError:
    return ModelNotAvailableError(
        f"Cannot load the {what} of {card!r}: it is not a local diffusers folder and is not in the Hugging Face "
        f"cache ({type(error).__name__}). Provide it one of these ways:\n"
        f"  - download it once where there is network: hf download {card}\n"
        f"    (the cache in ~/.cache/huggingface, or HF_HOME, is then used offline), or\n"
        f"  - pass --model_card /path/to/a/diffusers/folder (with model_index.json), or\n"
        f"  - use a built-in model: --model_card {' | '.join(BUILT_IN)} (toy: a small trained model)"
    )


def load_model_index(card: str) -> dict:
    """The pipeline's model_index.json (tells SD from SDXL)."""
    local_only = check_card_files(card)  # fails in seconds when the files are nowhere and the hub is unreachable
    from diffusers import DiffusionPipeline

    try:
        return dict(DiffusionPipeline.load_config(card, local_files_only=local_only))
    except Exception as error:  # diffusers raises OSError/EnvironmentError/ValueError variants offline
        raise _not_available(card, "model_index.json", error) from None


def reads_t5_text(card: str) -> bool:
    """Whether a card's text encoder is T5 (PixArt-α/Σ), known before loading and without the network:
    ``tiny-pixart``, the PixArt-α/Σ hub ids, or a local folder or cached hub id whose ``model_index.json`` names a
    T5 text encoder. False for CLIP cards (the UNets; ``toy-dit``, a PixArt transformer reading CLIP) and for cards
    that cannot be read (loading reports those)."""
    import json

    from hrv_diffusion.core.hub import in_hf_cache

    card = str(card)
    if card in BUILT_IN:
        return card == "tiny-pixart"
    if card in PIXART_CARDS:
        return True
    index = Path(card).expanduser() / "model_index.json"
    if not index.is_file() and in_hf_cache(card):
        from huggingface_hub import try_to_load_from_cache

        index = Path(try_to_load_from_cache(card, "model_index.json"))
    try:
        text_encoder = json.loads(index.read_text()).get("text_encoder") or ["", ""]
    except (OSError, ValueError, AttributeError):
        return False
    return str(text_encoder[-1]).startswith("T5")


def is_sdxl_index(model_index: dict) -> bool:
    return "text_encoder_2" in model_index or "XL" in str(model_index.get("_class_name", ""))


def load_unet_config(card: str) -> dict:
    """The UNet config of a card, a local folder, or a path to a config.json file."""
    import json

    path = Path(ALIASES.get(card, card))
    card = str(path) if card in ALIASES else card
    if path.is_file():
        return json.loads(path.read_text())
    if card in _tiny_models():
        pipe = _tiny_models()[card]()
        return dict((getattr(pipe, "unet", None) or pipe.transformer).config)  # the UNet's, or PixArt's transformer's
    local_only = check_card_files(card)  # before diffusers loads: no files and no hub fail in seconds
    from diffusers import UNet2DConditionModel

    try:
        subfolder = "transformer" if (path / "transformer" / "config.json").is_file() else "unet"  # PixArt's
        return dict(UNet2DConditionModel.load_config(card, subfolder=subfolder, local_files_only=local_only))
    except Exception as error:
        raise _not_available(card, "UNet config", error) from None


def _tiny_models():
    from hrv_diffusion.core.tiny import TINY_MODELS

    return TINY_MODELS


def paper_scheduler(config):
    """PNDM with skip_prk_steps, as in the paper: 50 steps give 51 UNet evaluations. The model's own betas
    and prediction type are kept; SDXL's scheduler is replaced the same way as in the reference."""
    from diffusers import PNDMScheduler

    return PNDMScheduler.from_config(
        config, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
    )


_WARNED_RANDOM: set[str] = set()  # tiny models already announced in this process (one line each)


def warn_random_weights(card: str) -> None:
    """One line on stderr, once per process: ``tiny-sd``/``tiny-sd2``/``tiny-sdxl`` have random weights (silent
    under pytest)."""
    if card in _WARNED_RANDOM or "PYTEST_CURRENT_TEST" in os.environ:
        return
    _WARNED_RANDOM.add(card)
    print(f"note: {card} is a tiny model with random weights, built in code: its outputs show the machinery "
          "working, not meaningful images or HRVs (use --model_card toy for a trained one)", file=sys.stderr)


def load_pipeline(card: str, dtype: str | torch.dtype = "float32", device: str | torch.device = "cpu",
                  scheduler: str = "pndm"):
    """Load a SD 1.x/2.x, SDXL or PixArt-α/Σ pipeline. ``scheduler``: "pndm" (the paper's) or "model" (the card's
    own)."""
    if scheduler not in ("pndm", "model"):
        raise ValueError(f"scheduler must be 'pndm' or 'model', not {scheduler!r}")
    from hrv_diffusion.core.device import resolve_device

    device = resolve_device(str(device))  # a CUDA device without CUDA: one UserError before any weight is read
    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if card == "toy-dit":  # its folder holds the transformer only: the toy's VAE and text encoder complete it
        from hrv_diffusion.toy.dit import load_toy_dit

        pipe = load_toy_dit(TOY_DIT_DIR, torch_dtype, load_pipeline("toy", torch_dtype, scheduler="model"))
    elif (card := str(ALIASES.get(card, card))) in _tiny_models():
        warn_random_weights(card)
        pipe = _tiny_models()[card]()
        if torch_dtype != torch.float32:
            pipe = pipe.to(dtype=torch_dtype)
    else:
        local_only = check_card_files(card)  # before the pipelines load: no files and no hub fail in seconds
        from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

        index = load_model_index(card)
        cls = StableDiffusionXLPipeline if is_sdxl_index(index) else StableDiffusionPipeline
        extra = {"local_files_only": local_only}
        # The reference applies no watermark to SDXL images, and the SD 1.x safety checker is off.
        extra.update({"add_watermarker": False} if cls is StableDiffusionXLPipeline
                     else {"safety_checker": None, "requires_safety_checker": False})
        if index.get("_class_name") in PIXART_PIPELINES:  # PixArt-α / Σ (core/families/pixart.py)
            import diffusers

            cls, extra = getattr(diffusers, index["_class_name"]), {"local_files_only": extra["local_files_only"]}
        try:
            with warnings.catch_warnings():  # diffusers >= 0.42 renames torch_dtype; 0.30-0.41 know only it
                warnings.filterwarnings("ignore", message=".*torch_dtype.*deprecated", category=FutureWarning)
                pipe = cls.from_pretrained(card, torch_dtype=torch_dtype, **extra)
        except Exception as error:
            if isinstance(error, (OSError, EnvironmentError)) or "offline" in str(error).lower():
                raise _not_available(card, "weights", error) from None
            raise
    if scheduler == "pndm":
        pipe.scheduler = paper_scheduler(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def is_sdxl(pipe) -> bool:
    return getattr(pipe, "text_encoder_2", None) is not None
