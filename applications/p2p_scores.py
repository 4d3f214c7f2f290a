#!/usr/bin/env python
"""Editing metrics of P2P outputs (see --help). Front-end of hrv_diffusion.cli.p2p_scores."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrv_diffusion.cli.p2p_scores import main

if __name__ == "__main__":
    raise SystemExit(main())
