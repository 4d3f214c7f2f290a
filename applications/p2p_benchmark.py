#!/usr/bin/env python
"""The paper's five editing sets with P2P and P2P-HRV (see --help). Front-end of hrv_diffusion.cli.p2p_benchmark."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrv_diffusion.cli.p2p_benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
