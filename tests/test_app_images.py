"""Every application writes, on the toy model at its default size, the same PNG files as the code of commit c45f000
did: byte for byte (SHA-256) on a machine like the recording one, and otherwise pixel for pixel up to the CPU's
rounding (at most 2 grey levels, at most 1% of the values; fp32 kernels differ between CPUs); the labelled figures
drawn from them are pinned by name only: tests/fixtures/app_images.json,
written by tests/fixtures/record_app_images.py, whose command table (``APPS``: small settings, several batches where
a command has ``--batch_size``) this test reruns."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest


def load_recorder():
    """tests/fixtures/record_app_images.py as a module (one instance shared by the tests that use its table)."""
    if "record_app_images" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "record_app_images", Path(__file__).with_name("fixtures") / "record_app_images.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["record_app_images"]


recorder = load_recorder()
RECORDED = json.loads(recorder.FIXTURE.read_text())
PIXELS = dict(np.load(recorder.PIXELS))


def test_the_record_covers_every_application():
    assert sorted(RECORDED) == sorted(app.name for app in recorder.APPS)
    for name, record in RECORDED.items():
        assert record["count"] == len(record["images"]) > 0, name


@pytest.mark.parametrize("app", recorder.APPS, ids=[app.name for app in recorder.APPS])
def test_images_equal_the_record(app, tmp_path):
    expected = RECORDED[app.name]
    if "matplotlib" in expected:
        import matplotlib

        if matplotlib.__version__ != expected["matplotlib"]:
            pytest.skip(f"recorded with matplotlib {expected['matplotlib']}, whose version its PNGs hold")
    out = tmp_path / app.name
    done = recorder.run_app(app, out)
    assert done.returncode == 0, done.stderr
    hashes = recorder.png_hashes(out, figures=False)
    assert sorted(hashes) == sorted(expected["images"]), "other PNG files than recorded"
    assert recorder.figure_paths(out) == expected["figures"], "other figures than recorded"
    assert len(hashes) == expected["count"]
    changed = sorted(path for path, digest in hashes.items() if digest != expected["images"][path])
    made = recorder.pixels(out)
    far = {path: why for path in changed if (why := recorder.far_from(made[path], PIXELS[f"{app.name}/{path}"]))}
    assert not far, f"{len(far)} of {len(hashes)} images differ from the record beyond rounding: {far}"
