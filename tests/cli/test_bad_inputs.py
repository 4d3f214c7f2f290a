"""Every bad input of docs/bad-inputs.md gives its exit status and one clear line (issue 14).

Cases of this session (``bad_inputs_14b.py``): stderr is exactly one line, holding the expected text. Cases of
``bad_inputs_14a.py`` and later files such as ``bad_inputs_20b.py`` (they load tiny models, so tqdm may write too): exactly one ``error:`` line,
holding the expected text, and no traceback. ``python tests/cli/make_bad_inputs_table.py`` rewrites the table.
"""
from __future__ import annotations

import pytest
import torch

from bad_inputs_run import load_cases, run_case

CASES = load_cases()


def test_enough_cases():
    assert len([c for s, c, _ in CASES if s == "bad_inputs_14b"]) >= 45


@pytest.mark.parametrize("source,case,setups", CASES, ids=[f"{s[-3:]}: {c['input']}" for s, c, _ in CASES])
def test_bad_input(source, case, setups, tmp_path):
    if case.get("needs_no_cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, err = run_case(case, setups, tmp_path)
    assert code == case["exit"], err
    assert "Traceback" not in err, err
    if source == "bad_inputs_14b":
        lines = err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert case["expect"] in lines[0], err
    else:
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and case["expect"] in errors[0], err


def test_table_is_current():
    """docs/bad-inputs.md lists every case (regenerate with python tests/cli/make_bad_inputs_table.py)."""
    from make_bad_inputs_table import TABLE

    text = TABLE.read_text(encoding="utf-8")
    for _, case, _ in CASES:
        assert case["input"].replace("|", "\\|") in text, f"{case['input']!r} missing from {TABLE}"
