"""Where a model's files are, found before anything loads: a built-in name, a local folder, or a hub id in the
Hugging Face cache; and whether the hub can be reached at all (one quick check), so that a machine without network
fails in seconds with one clear error instead of spending half a minute in download retries.

- ``check_card_name(card)``: no files read: refuses a name that is neither a built-in model (``BUILT_IN``), nor an
  existing local folder, nor shaped like a hub id ``owner/name``, and a local path that does not exist.
- ``check_card_files(card)``: also refuses a folder without ``model_index.json``, and a hub id that is not in the
  cache while the hub cannot be reached; returns whether the loaders should read the cache only.
- ``hub_reachable()``: False under ``HF_HUB_OFFLINE=1``, else whether the hub (``HF_ENDPOINT``) answers an HTTP
  request within ``REACH_TIMEOUT`` seconds; asked once per process.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from hrv_diffusion.errors import UserError

BUILT_IN = ("toy", "toy-dit", "tiny-sd", "tiny-sd2", "tiny-sdxl", "tiny-pixart")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
REACH_TIMEOUT = 2.0  # seconds
DEFAULT_ENDPOINT = "https://huggingface.co"


class ModelNotAvailableError(UserError):
    """The weights are neither in a local folder nor in the Hugging Face cache (and no network)."""


def built_in_list() -> str:
    return ", ".join(BUILT_IN)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` set to 1/true/yes/on (read now, not at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def _endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


@lru_cache(maxsize=None)
def _answers(url: str, timeout: float) -> bool:
    """Whether ``url`` gives any HTTP answer within ``timeout`` s (through the environment's proxy, if any)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except urllib.error.HTTPError:  # an answer, if not a 200
        return True
    except (OSError, ValueError):  # refused, unroutable, no DNS, timed out, a malformed endpoint
        return False


def hub_reachable(timeout: float = REACH_TIMEOUT) -> bool:
    """Whether the Hugging Face hub can be reached (False under ``HF_HUB_OFFLINE``); at most ``timeout`` s, once
    per address and process."""
    return not hub_offline() and _answers(_endpoint(), timeout)


def why_unreachable() -> str:
    if hub_offline():
        return "HF_HUB_OFFLINE is set"
    return f"{_endpoint()} does not answer within {REACH_TIMEOUT:g} s"


def looks_like_hub_id(card: str) -> bool:
    return bool(HUB_ID.match(card)) and not card.startswith((".", "~"))


def in_hf_cache(repo_id: str, filename: str = "model_index.json") -> bool:
    """Whether ``filename`` of the hub repo ``repo_id`` is in the local Hugging Face cache (nothing downloaded)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except Exception:  # noqa: BLE001 - an invalid repo id is simply not cached
        return False


def get_weights_hint() -> str:
    return (f"or use a built-in model that needs no download: --model_card toy (a small trained model; also "
            f"toy-dit, its diffusion transformer, and {', '.join(BUILT_IN[2:])} with random weights)")


def check_card_name(card: str) -> None:
    """Refuse, reading no file, a card that cannot be a model: not built in, not a local path, not ``owner/name``."""
    card = str(card)
    if card in BUILT_IN or Path(card).expanduser().exists():
        return
    if looks_like_hub_id(card):
        return
    if "/" in card or os.sep in card or card.startswith((".", "~")):
        raise ModelNotAvailableError(f"--model_card {card}: the folder {card} does not exist; pass an existing "
                                     f"diffusers folder (with model_index.json), a hub id, {get_weights_hint()}")
    raise ModelNotAvailableError(f"unknown model card {card!r}: it is neither a built-in model ({built_in_list()}) "
                                 f"nor an existing local folder (nor a hub id, which looks like owner/name, e.g. "
                                 f"CompVis/stable-diffusion-v1-4)")


def check_card_files(card: str) -> bool:
    """``check_card_name``, then refuse a local folder without ``model_index.json`` and a hub id that is neither
    cached nor downloadable now (the hub cannot be reached). Returns True when only the cache should be read
    (cached, hub unreachable: no retries)."""
    card = str(card)
    check_card_name(card)
    path = Path(card).expanduser()
    if card in BUILT_IN:
        return True
    if path.exists():
        if path.is_dir() and not (path / "model_index.json").is_file():
            raise ModelNotAvailableError(f"--model_card {card}: the folder has no model_index.json, so it is not a "
                                         f"diffusers model folder; pass one, {get_weights_hint()}")
        return True
    if in_hf_cache(card):
        return not hub_reachable()
    if hub_reachable():
        return False  # downloadable: the loader downloads it
    raise ModelNotAvailableError(
        f"--model_card {card} is not a built-in model ({built_in_list()}), not a local folder, and not in the local "
        f"Hugging Face cache ({hf_cache_dir()}), and it cannot be downloaded now ({why_unreachable()}): run "
        f"`hf download {card}` on a machine with internet and copy its cache folder here (or set HF_HOME to it), "
        f"pass a local diffusers folder (with model_index.json), {get_weights_hint()}")


def hf_cache_dir() -> str:
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        return str(HF_HUB_CACHE)
    except ImportError:  # pragma: no cover
        return "~/.cache/huggingface/hub"
