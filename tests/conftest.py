"""Shared test helpers.

``SHARED_REFERENCE``: the reference data published with the paper, found relative to the repository
(``../shared/reference`` beside the checkout), never by an absolute path. Tests that compare with it skip only
when it is truly absent; no other test depends on it.
"""
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


def shared_reference_file(relative: str) -> Path:
    """The path of a published reference file; skips the calling test when the shared folder is absent."""
    path = SHARED_REFERENCE / relative
    if not path.is_file():
        pytest.skip(f"published reference data not found at {path}")
    return path
