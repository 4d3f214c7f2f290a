#!/usr/bin/env python
"""SD-HRV / SDXL-HRV concept adjusting (see --help). Front-end of hrv_diffusion.cli.adjust."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrv_diffusion.cli.adjust import main

if __name__ == "__main__":
    raise SystemExit(main())
