#!/usr/bin/env python
"""Count cross-attention head votes for HRVs on SDXL (see --help). Same implementation as
head_relevance_calculation.py, with SDXL's card and a smaller batch by default."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from hrv_diffusion.cli.relevance import main_sdxl

if __name__ == "__main__":
    raise SystemExit(main_sdxl())
