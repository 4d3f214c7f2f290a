#!/usr/bin/env python
"""The prompts of an ordered-weakening experiment (see --help). Front-end of hrv_diffusion.cli.weakening_prompts."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrv_diffusion.cli.weakening_prompts import main

if __name__ == "__main__":
    raise SystemExit(main())
