"""The demo's speed-up keeps its results, and what users are told about speed and random weights (issue 14, item 7).

The demo counts votes in one-thread worker processes, each on a contiguous part of the prompts (threads that wait
for each other made the toy model several times slower on a shared 2-core machine; bench/demo_profile.py); the
HRVs must be those of a single process.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from hrv_diffusion.cli import demo
from hrv_diffusion.core.device import usable_cpus


def _hrv(folder):
    final = folder / "final_result"
    return np.load(next(p for p in final.glob("category_vectors_*.npy") if not p.stem.endswith("per_timesteps")))


def test_workers_give_the_hrvs_of_one_process(tmp_path, monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)  # the demo changes into its output folder
    threads = torch.get_num_threads()
    small = ["--prompts", "4", "--batch_size", "2"]
    try:
        assert demo.main(["--output_dir", str(tmp_path / "one"), *small, "--workers", "1"]) == 0
    finally:
        torch.set_num_threads(threads)  # one worker runs in-process with --threads
    assert demo.main(["--output_dir", str(tmp_path / "two"), *small, "--workers", "2"]) == 0
    shards = sorted(p.name for p in (tmp_path / "two" / "results").glob("*.npz"))
    assert len(shards) == 2 and "_1_2_" in shards[0] and "_2_2_" in shards[1]  # one shard per worker
    np.testing.assert_array_equal(_hrv(tmp_path / "one"), _hrv(tmp_path / "two"))
    assert (tmp_path / "two" / "hrv_heatmap.png").is_file()


def test_default_workers():
    assert demo.default_workers(64, 16) == min(usable_cpus(), 4)
    assert demo.default_workers(4, 16) == 1  # one batch: one process
    args = demo.build_parser().parse_args([])
    assert args.workers is None and args.threads == 1


def test_subset_argv():
    argv = demo.votes_command(["--model_card", "toy"], "toy", 64, 16, 2, 2, quiet=True)
    assert argv[-6:] == ["--subset_running", "--numerator", "2", "--denominator", "2", "--quiet"]


def test_tiny_models_announce_random_weights(monkeypatch, capsys):
    from hrv_diffusion.core import models

    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr(models, "_WARNED_RANDOM", set())
    models.load_pipeline("tiny-sd")
    models.load_pipeline("tiny-sd")  # once per process
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tiny-sd" in err[0] and "random weights" in err[0]


def test_toy_weakening_eval_shows_progress(tmp_path, capsys):
    import runpy
    import sys

    from conftest import REPO

    argv = sys.argv
    sys.argv = [str(REPO / "toy/weakening_eval.py"), "--concepts", "Color", "--k", "0", "1", "--n", "2",
                "--steps", "2", "--out", str(tmp_path)]
    try:
        with pytest.raises(SystemExit) as done:
            runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    err = capsys.readouterr().err
    assert "weakening" in err and "3/3" in err  # k=0 once, k=1 for top and bottom
    assert json.loads((tmp_path / "weakening_results.json").read_text())["k"] == [0, 1]


def test_readme_states_the_measured_time():
    from conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "in about a minute" not in readme
    assert "How long on a CPU (2 cores" in readme and "bench/results/make_demo_fresh_clone_cpu.log" in readme
    cited = [path for word in readme.split() if (path := word.strip("`(),.;")).startswith("bench/results/")
             and path.endswith((".log", ".json"))]
    assert cited
    assert all((REPO / path).is_file() for path in cited), cited
