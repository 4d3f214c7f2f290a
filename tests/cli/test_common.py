"""cli/common.py: output paths that cannot be made are refused, naming the flag, before a command runs."""
from __future__ import annotations

import pytest

from hrv_diffusion.cli.common import (ArgumentParser, check_outputs, output_file, output_folder, output_problem,
                                      run_cli)
from hrv_diffusion.errors import UserError


def test_output_problem(tmp_path):
    (tmp_path / "file").write_text("x")
    (tmp_path / "dir").mkdir()
    file, folder = tmp_path / "file", tmp_path / "dir"
    assert output_problem(folder, "--o") is None and output_problem(tmp_path / "new" / "deeper", "--o") is None
    assert output_problem(file, "--o") == f"--o {file} is a file: pass a folder"
    assert output_problem(file / "x", "--o") == f"--o {file / 'x'} is inside {file}, which is a file: pick another path"
    assert output_problem(file, "--out", is_file=True) is None  # an existing file is overwritten
    assert output_problem(folder, "--out", is_file=True) == f"--out {folder} is a folder: pass a file path"
    assert "is inside" in output_problem(tmp_path / "file" / "a.csv", "--out", is_file=True)


def test_parsed_output_flags_are_checked_before_the_command_runs(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    parser = ArgumentParser(prog="cmd")
    parser.add_argument("--output_dir", type=output_folder, default=str(tmp_path / "file"))  # a default too
    parser.add_argument("--out", type=output_file, default=None)
    ran = []
    assert run_cli(ran.append, parser.parse_args([])) == 2 and ran == []
    assert capsys.readouterr().err == f"error: --output_dir {tmp_path / 'file'} is a file: pass a folder\n"
    args = parser.parse_args(["--output_dir", str(tmp_path / "new"), "--out", str(tmp_path)])
    with pytest.raises(UserError, match="--out .* is a folder"):
        check_outputs(args)
    assert run_cli(ran.append, parser.parse_args(["--output_dir", str(tmp_path / "new")])) == 0 and len(ran) == 1
