"""The curated public API: every listed name resolves to the object in its module, and importing is cheap."""
import importlib
import subprocess
import sys

import hrv_diffusion


def test_every_export_is_the_module_object():
    for name, module in hrv_diffusion._EXPORTS.items():
        assert getattr(hrv_diffusion, name) is getattr(importlib.import_module(module), name), name


def test_import_does_not_load_torch():
    code = "import sys, hrv_diffusion; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
