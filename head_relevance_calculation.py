#!/usr/bin/env python
"""Count cross-attention head votes for HRVs on SD 1.x/2.x (see --help). Front-end of hrv_diffusion.cli.relevance."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from hrv_diffusion.cli.relevance import main

if __name__ == "__main__":
    raise SystemExit(main())
