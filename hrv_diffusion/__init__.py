"""hrv-diffusion: Head Relevance Vectors for the cross-attention heads of text-to-image diffusion models.

The public entry points, importable from the package (loaded on first use, so ``import hrv_diffusion`` stays
cheap):

- models and generation: ``load_pipeline``, ``generate``, ``seed_latents``, ``latent_shape``, ``head_layout``;
- attention control: ``Controller``, ``AttentionHooks``, ``AttentionMaps``, ``StepHook``;
- HRVs: ``read_concept_set``, ``load_hrv``, ``HRV``;
- applications: ``generate_adjusted`` + ``Adjustment`` (SD-HRV), ``generate_edits`` + ``EditSpec`` (P2P-HRV),
  ``generate_attend_excite`` + ``AttendExciteSettings`` (A&E-HRV), ``HeadWeakening`` (ordered weakening);
- runs: ``OutputTree``, ``run_batches``.

Everything else lives in its module (``hrv_diffusion.core``, ``.hrv``, ``.apps``, ``.cli``).
"""
__version__ = "0.1.0"

_EXPORTS = {
    "load_pipeline": "hrv_diffusion.core.models",
    "generate": "hrv_diffusion.core.loop",
    "seed_latents": "hrv_diffusion.core.loop",
    "latent_shape": "hrv_diffusion.core.loop",
    "StepHook": "hrv_diffusion.core.loop",
    "head_layout": "hrv_diffusion.core.heads",
    "Controller": "hrv_diffusion.core.attention",
    "AttentionHooks": "hrv_diffusion.core.attention",
    "AttentionMaps": "hrv_diffusion.core.maps",
    "read_concept_set": "hrv_diffusion.hrv.concepts",
    "load_hrv": "hrv_diffusion.hrv.vectors",
    "HRV": "hrv_diffusion.hrv.vectors",
    "generate_adjusted": "hrv_diffusion.apps.adjust",
    "Adjustment": "hrv_diffusion.apps.adjust",
    "generate_edits": "hrv_diffusion.apps.p2p",
    "EditSpec": "hrv_diffusion.apps.p2p",
    "generate_attend_excite": "hrv_diffusion.apps.attend_excite",
    "AttendExciteSettings": "hrv_diffusion.apps.attend_excite",
    "HeadWeakening": "hrv_diffusion.apps.weakening",
    "OutputTree": "hrv_diffusion.apps.runs",
    "run_batches": "hrv_diffusion.apps.runs",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'hrv_diffusion' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__():
    return sorted(__all__)
