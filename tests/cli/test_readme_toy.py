"""The README's "Try it on the toy" block works as written: its commands are each ``--model_card toy`` alone and
are run by ``test_toy_defaults.py``; its Python example runs here."""
from __future__ import annotations

import shlex

from toy_commands import readme_block, readme_commands, readme_python


def test_the_block_has_one_command_per_application():
    commands = readme_commands()
    assert len(commands) >= 10
    for line in commands:
        words = shlex.split(line)
        assert words[-2:] == ["--model_card", "toy"], line
        assert words[0].startswith("hrv-") or (words[0] == "python" and words[1].startswith("applications/")), line
    assert "--min_factor 0" in readme_block()  # the toy's SD-HRV caveat


def test_the_python_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_python(), "README.md (toy block)", "exec"), namespace)
    batch = namespace["batch"]
    assert batch.standard.shape == batch.adjusted.shape == (2, 32, 32, 3)
    assert batch.adjusted.dtype.name == "uint8"
