#!/usr/bin/env python
"""Merge the HRV shards in results/ and write final_result/* (replaces extract_head_relevance_vectors.ipynb).

Run from any folder: ``python path/to/extract_head_relevance_vectors.py --help``.
"""
import sys
from pathlib import Path

try:
    import hrv_diffusion  # noqa: F401
except ImportError:  # not installed: use the package next to this script
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from hrv_diffusion.cli.extract import main

if __name__ == "__main__":
    sys.exit(main())
