"""Image-text scorers: ``Scorer`` (anything with ``score(images, texts) -> np.ndarray``), the paper's CLIP score
(``ClipScorer``: open_clip ViT-H-14 laion2b_s32b_b79k, fp32, raw cosine similarity) and ``load_scorer`` for a
scorer named on the command line (``module:callable``, e.g. a toy evaluator for the tiny demo model).

Shared by the ordered-weakening scores, the intended-sense check, the P2P scores and the multi-object scores.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence, runtime_checkable

import numpy as np

from hrv_diffusion.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


@runtime_checkable
class Scorer(Protocol):
    """Scores images against texts: ``score(images, texts)[i]`` compares ``images[i]`` with ``texts[i]``."""

    def score(self, images: "list[Image.Image]", texts: list[str]) -> np.ndarray:
        ...


class ClipWeightsUnavailable(UserError):
    """The CLIP weights cannot be found offline (or downloaded); the message says how to provide them."""


def _looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.endswith((".bin", ".pt", ".pth", ".safetensors"))


# open_clip's ``hf_hub`` entry of the paper's CLIP, so that its check needs no import of open_clip (seconds);
# tests/core/test_hub.py checks it against open_clip's own table.
KNOWN_HUB_REPOS = {("ViT-H-14", "laion2b_s32b_b79k"): "laion/CLIP-ViT-H-14-laion2B-s32B-b79K/"}


def _hub_entry(model_name: str, pretrained: str | None) -> str:
    """open_clip's ``hf_hub`` entry of a tag (``org/repo/``), "" for none or an unknown model or tag; the paper's
    CLIP from ``KNOWN_HUB_REPOS``, without importing open_clip (seconds)."""
    if (model_name, pretrained) in KNOWN_HUB_REPOS:
        return KNOWN_HUB_REPOS[model_name, pretrained]
    try:
        import open_clip

        return (open_clip.get_pretrained_cfg(model_name, pretrained or "") or {}).get("hf_hub", "")
    except Exception:  # noqa: BLE001 - an unknown model or tag is open_clip's to report
        return ""


def _weights_help(model_name: str, pretrained: str | None, cause: str) -> str:
    hub = _hub_entry(model_name, pretrained).rstrip("/")
    where = f" (Hugging Face repo {hub})" if hub else ""
    fetch = (f"`hf download {_hub_repo(hub)[0]}`" if hub else
             f"`python -c \"import open_clip; open_clip.create_model_and_transforms('{model_name}', "
             f"pretrained='{pretrained}')\"`")
    return (
        f"CLIP weights for model {model_name!r}, pretrained {pretrained!r}{where} are not available ({cause}). "
        "Provide them in one of three ways: "
        f"(1) the Hugging Face cache: on a machine with internet run {fetch} "
        "and copy its cache (~/.cache/huggingface, or $HF_HOME) to this machine; "
        "(2) an open_clip cache folder holding the downloaded file: pass cache_dir=... (--clip_cache_dir); "
        "(3) a local checkpoint file: pretrained=/path/to/open_clip_pytorch_model.bin (--clip_pretrained "
        "/path/to/open_clip_pytorch_model.bin), keeping the model name (--clip_model) of its architecture."
    )


def _hub_repo(hub: str) -> tuple[str, list[str]]:
    """open_clip's ``hf_hub`` entry (``org/repo/`` or ``org/repo/file``) -> (repo id, candidate weight files)."""
    parts = hub.strip("/").split("/")
    files = [parts[2]] if len(parts) > 2 and parts[2] else [
        "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
    return "/".join(parts[:2]), files


def check_clip_weights(model_name: str, pretrained: str | None, cache_dir: str | None = None) -> None:
    """Fail in seconds, not after a minute of download retries, when the weights of an open_clip tag on the hub are
    not in the Hugging Face cache and the hub cannot be reached (``core.hub.hub_reachable``)."""
    if not pretrained or _looks_like_path(pretrained):
        return
    from huggingface_hub import try_to_load_from_cache

    hub = _hub_entry(model_name, pretrained)
    if not hub:
        return
    from hrv_diffusion.core.hub import hub_reachable, why_unreachable

    repo, files = _hub_repo(hub)
    if any(isinstance(try_to_load_from_cache(repo, f, cache_dir=cache_dir), str) for f in files):
        return
    if not hub_reachable():
        raise ClipWeightsUnavailable(_weights_help(model_name, pretrained, f"not in the Hugging Face cache, and "
                                                   f"they cannot be downloaded now: {why_unreachable()}"))


_MISSING_WEIGHTS = ("failed to download", "not a known tag", "cannot find the requested files", "locate the file",
                    "no such file", "offline", "connection")


def _short(text: str, limit: int = 240) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def _load_error(error: Exception, model_name: str, pretrained: str | None) -> Exception:
    """The user error that ``error`` of ``create_model_and_transforms`` means, else ``error`` itself: an unknown
    model name, weights not found offline, or a checkpoint file of another architecture than ``model_name``."""
    text = str(error)
    if text.startswith("Model config for"):
        return ValueError(f"unknown CLIP model {model_name!r} (open_clip.list_models() lists the known ones; "
                          "hf-hub:ORG/REPO and local-dir:/path also work)")
    if any(marker in text.lower() for marker in _MISSING_WEIGHTS):
        return ClipWeightsUnavailable(_weights_help(model_name, pretrained, _short(text)))
    other_shape = isinstance(error, AssertionError) or "size mismatch" in text or "state_dict" in text
    if other_shape and pretrained and _looks_like_path(pretrained):
        return UserError(f"the CLIP checkpoint {pretrained} does not fit the architecture --clip_model {model_name} "
                         f"({_short(text, 160) or type(error).__name__}): pass the architecture it was trained "
                         "with as --clip_model (open_clip.list_models() lists them; the paper's is ViT-H-14), or a "
                         f"{model_name} checkpoint as --clip_pretrained")
    return error


class ClipScorer:
    """The paper's CLIP score: the raw cosine similarity of the normalized image and text embeddings.

    No x100 scaling, no clamping at 0; the model runs in fp32 with its own preprocess (ViT-H-14: resize 224
    bicubic, center crop) and tokenizer. Text embeddings are cached per text.

    ``pretrained`` is an open_clip tag (``laion2b_s32b_b79k``) or a local checkpoint path. When the weights
    cannot be found offline, ``ClipWeightsUnavailable`` says how to provide them. ``open_clip`` is imported here
    only, so the rest of the package works without it.
    """

    def __init__(self, model_name: str = "ViT-H-14", pretrained: str | None = "laion2b_s32b_b79k",
                 device: str | None = None, batch_size: int = 32, cache_dir: str | None = None):
        device = _checked_device(device)
        pretrained = os.fspath(pretrained) if pretrained else None
        if pretrained and _looks_like_path(pretrained) and not Path(pretrained).is_file():
            raise ClipWeightsUnavailable(_weights_help(model_name, pretrained, f"no file {pretrained}"))
        check_clip_weights(model_name, pretrained, cache_dir)  # the paper's CLIP: before open_clip's slow import
        try:
            import open_clip
        except ImportError as error:
            raise ImportError("ClipScorer needs open_clip: pip install 'hrv-diffusion[clip]' "
                              "(open_clip_torch and torchvision)") from error
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, precision="fp32", device=device, cache_dir=cache_dir)
            tokenizer = open_clip.get_tokenizer(model_name, cache_dir=cache_dir)
        except (RuntimeError, OSError, ValueError, AssertionError) as error:  # hub errors are OSError/Runtime
            translated = _load_error(error, model_name, pretrained)
            if translated is error:
                raise
            raise translated from error
        self._setup(model, preprocess, tokenizer, device, batch_size)
        self.model_name, self.pretrained = model_name, pretrained

    @classmethod
    def from_model(cls, model, preprocess, tokenizer, device: str | None = None, batch_size: int = 32) -> "ClipScorer":
        """Wrap a CLIP built in code: ``model`` with ``encode_image``/``encode_text``, ``preprocess(PIL) -> (3, h, w)``
        tensor, ``tokenizer(list[str]) -> (n, L)`` token ids."""
        scorer = cls.__new__(cls)
        scorer._setup(model, preprocess, tokenizer, _checked_device(device), batch_size)
        scorer.model_name, scorer.pretrained = type(model).__name__, None
        return scorer

    def _setup(self, model, preprocess, tokenizer, device, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.device = device
        self.model = model.to(device).float().eval()
        self.preprocess, self.tokenizer, self.batch_size = preprocess, tokenizer, int(batch_size)
        self._text_cache: dict = {}

    def _text_embeddings(self, texts: Sequence[str]):
        import torch

        new = [t for t in dict.fromkeys(texts) if t not in self._text_cache]
        for start in range(0, len(new), self.batch_size):
            chunk = new[start : start + self.batch_size]
            with torch.inference_mode():
                tokens = self.tokenizer(chunk).to(self.device)  # (n, L)
                features = self.model.encode_text(tokens).float()  # (n, D)
                features = features / features.norm(dim=-1, keepdim=True)
            for text, row in zip(chunk, features):
                self._text_cache[text] = row
        return torch.stack([self._text_cache[t] for t in texts])  # (n, D)

    def score(self, images: "list[Image.Image]", texts: list[str]) -> np.ndarray:
        """Cosine similarity of ``images[i]`` and ``texts[i]``: (n,) float64 (computed in fp32)."""
        import torch

        if len(images) != len(texts):
            raise ValueError(f"{len(images)} images but {len(texts)} texts: one text per image is needed")
        out = np.empty(len(images), dtype=np.float64)
        for start in range(0, len(images), self.batch_size):
            stop = start + self.batch_size
            pixels = torch.stack([self.preprocess(image.convert("RGB")) for image in images[start:stop]])
            with torch.inference_mode():
                features = self.model.encode_image(pixels.to(self.device, torch.float32)).float()  # (b, D)
                features = features / features.norm(dim=-1, keepdim=True)
                text = self._text_embeddings(texts[start:stop]).to(features.device)  # (b, D)
                out[start:stop] = (features * text).sum(dim=-1).cpu().numpy()
        return out


def _checked_device(device) -> str:
    """``device`` checked (``--device cuda`` without CUDA is a one-line UserError), else the default device."""
    from hrv_diffusion.core.device import resolve_device

    return resolve_device(str(device)) if device else _default_device()


def _default_device() -> str:
    from hrv_diffusion.core.device import resolve_device

    return resolve_device(None)


def load_scorer(spec: str) -> Scorer:
    """``module:callable`` (``--scorer``) -> the scorer the callable returns when called without arguments."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--scorer must look like module:callable, got {spec!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"cannot load --scorer {spec!r}: {error}") from None
    scorer = factory()
    if not isinstance(scorer, Scorer):
        raise ValueError(f"--scorer {spec!r} returned {type(scorer).__name__}, which has no score(images, texts)")
    return scorer
