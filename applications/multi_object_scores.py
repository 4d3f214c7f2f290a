#!/usr/bin/env python
"""CLIP scores of multi-object images, as the A&E paper evaluates them (see --help). Front-end of hrv_diffusion.cli.multi_object_scores."""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrv_diffusion.cli.multi_object_scores import main

if __name__ == "__main__":
    raise SystemExit(main())
