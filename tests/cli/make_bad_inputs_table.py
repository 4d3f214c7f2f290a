"""Rewrite docs/bad-inputs.md: every bad input of tests/cli/bad_inputs_*.py, run, with the message it gives.

    python tests/cli/make_bad_inputs_table.py
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bad_inputs_run import REPO, display, load_cases, run_case  # noqa: E402

TABLE = REPO / "docs" / "bad-inputs.md"
HEADER = """# Bad inputs and their messages

Every input below was run (`python tests/cli/make_bad_inputs_table.py` regenerates this table; `tests/cli/test_bad_inputs.py`
checks each case's exit status and message). A bad value of a flag stops before anything is loaded, with one line:
`error: argument --FLAG: must be ..., got VALUE (see PROG --help)` and exit status 2. Problems found later (files,
concepts, shards, manifests) give one `error: ...` line, exit status 2, and no traceback
(`HRV_DIFFUSION_DEBUG=1` shows it).

| # | command | what is wrong | message | exit |
|---|---------|---------------|---------|------|
"""


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def main() -> int:
    rows = []
    for n, (source, case, setups) in enumerate(load_cases(), 1):
        with tempfile.TemporaryDirectory() as tmp:
            code, err = run_case(case, setups, Path(tmp))
        lines = [line for line in err.splitlines() if line.startswith("error:")] or err.strip().splitlines()[-1:]
        message = lines[0] if lines else "(no message)"
        rows.append(f"| {n} | `{cell(display(case['command']))}` | {cell(case['input'])} | {cell(message)} | {code} |")
        print(rows[-1], flush=True)
    TABLE.write_text(HEADER + "\n".join(rows) + "\n", encoding="utf-8")
    print(f"wrote {TABLE} ({len(rows)} inputs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
