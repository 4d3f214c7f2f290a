"""Which model an HRV's head count belongs to, to name it when an HRV of another model is passed.

The paper's models are named by their published head counts (``PAPER_HEAD_COUNTS``, the released head_index
files), SD 2.x by its UNet config's (``HUB_HEAD_COUNTS``: 16 CA layers of 5, 10 and 20 heads, checked in
tests/core/test_heads.py on the real config); the built-in models' counts come from their own UNet configs
(``head_count``: a UNet on the meta device, no weights read).
"""
from __future__ import annotations

from functools import lru_cache

PAPER_HEAD_COUNTS = {128: "SD v1.x (sd_v1_4)", 1300: "SDXL (sd_xl_base_1_0)"}
HUB_HEAD_COUNTS = {195: "SD 2.x (sd_v2_1, sd_v2_1_base, sd_v2, sd_v2_base)"}


@lru_cache(maxsize=None)
def head_count(card: str) -> int | None:
    """The CA head count of ``card`` from its denoiser's config (no weights), None when the config cannot be read."""
    from hrv_diffusion.core.families import model_from_config
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import load_unet_config
    from hrv_diffusion.errors import UserError

    try:
        return head_layout(model_from_config(load_unet_config(card))).num_heads
    except (UserError, OSError):
        return None


def models_with_heads(count: int) -> list[str]:
    """Names of the known models with ``count`` CA heads: the paper's, SD 2.x, then the built-in ones."""
    from hrv_diffusion.core.hub import BUILT_IN

    names = [known[count] for known in (PAPER_HEAD_COUNTS, HUB_HEAD_COUNTS) if count in known]
    return names + [name for name in BUILT_IN if head_count(name) == count]


def describe_heads(count: int) -> str:
    """``an HRV of SD v1.x (sd_v1_4) (128 heads)``, or ``an HRV of a model with 77 heads`` for an unknown count."""
    names = models_with_heads(count)
    return f"an HRV of {' or '.join(names)} ({count} heads)" if names else f"an HRV of a model with {count} heads"
