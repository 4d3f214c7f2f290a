"""Encode a concept set's words with a model's text encoder (same name and flags as the reference script).

    python descriptions_to_text_embeddings.py --model_card CompVis/stable-diffusion-v1-4

See ``--help`` and ``hrv_diffusion.cli.text_embeddings``.
"""
import sys
from pathlib import Path

try:
    from hrv_diffusion.cli.text_embeddings import main
except ImportError:  # run from a checkout without installing: use the package beside this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from hrv_diffusion.cli.text_embeddings import main

if __name__ == "__main__":
    raise SystemExit(main())
