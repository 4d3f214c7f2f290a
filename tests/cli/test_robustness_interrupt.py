"""Issue 14, item 4: Ctrl-C and SIGTERM save the finished prompts (even before the first checkpoint) and print one
line with what was saved and the --resume command; resuming gives the uninterrupted counts."""
from __future__ import annotations

import os
import shlex
import signal

import numpy as np
import pytest

import hrv_diffusion.hrv.construction as construction
from hrv_diffusion.cli import relevance as relevance_cli
from hrv_diffusion.cli import text_embeddings as text_embeddings_cli
from hrv_diffusion.hrv.shards import load_shard

CONCEPTS = "[Animals]\ndog\ncat\n\n[Color]\nred\nblue\n"
PROMPTS = ["a cat", "a red car", "a dog", "a blue bird", "a castle"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mini.txt").write_text(CONCEPTS)
    (tmp_path / "prompt_list_few.txt").write_text("\n".join(PROMPTS) + "\n")
    assert text_embeddings_cli.main(["--model_card", "tiny-sd", "--description", "mini.txt"]) == 0
    return tmp_path


def flags(output_dir="."):
    return ["--model_card", "tiny-sd", "--description", "mini.txt", "--prompt", "prompt_list_few.txt",
            "--num_inference_steps", "2", "--batch_size", "2", "--dtype", "float32", "--quiet",
            "--output_dir", output_dir]  # checkpoint_every 100: the run is shorter than one interval


def stop_in_call(monkeypatch, call: int, how):
    original, calls = construction.generate, []

    def generate(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            how()
        return original(*args, **kwargs)

    monkeypatch.setattr(construction, "generate", generate)
    return original


def ctrl_c():
    raise KeyboardInterrupt


def sigterm():
    os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("how", [ctrl_c, sigterm], ids=["ctrl-c", "sigterm"])
def test_interrupt_saves_finished_prompts_and_prints_resume(project, monkeypatch, capsys, how):
    capsys.readouterr()
    original = stop_in_call(monkeypatch, 3, how)  # batches [0, 1], [2, 3] finish; [4] is cut
    assert relevance_cli.main(flags()) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted: saved 4 of 5 prompts of epoch 1 to results/")
    assert "; continue with: head_relevance_calculation.py " in err and err.rstrip().endswith("--resume")
    [path] = (project / "results").iterdir()
    shard = load_shard(path)
    assert shard.metadata["complete"] is False and shard.prompt_indices.tolist() == [0, 1, 2, 3]
    assert (shard.counts.sum(-1) == 4).all()  # the cut batch left no votes

    monkeypatch.setattr(construction, "generate", original)
    command = shlex.split(err.split("continue with: ")[1])
    assert relevance_cli.main(command[1:]) == 0
    resumed = load_shard(path)
    assert resumed.metadata["complete"] is True and resumed.prompt_indices.tolist() == [0, 1, 2, 3, 4]
    embeddings = ["--embeddings", "word_lists/text_embedding_mini_tiny_sd.safetensors"]
    assert relevance_cli.main(flags("whole") + embeddings) == 0
    [whole] = (project / "whole" / "results").iterdir()
    np.testing.assert_array_equal(resumed.counts, load_shard(whole).counts)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is restored


def test_interrupt_before_any_prompt_saves_nothing(project, monkeypatch, capsys):
    capsys.readouterr()
    stop_in_call(monkeypatch, 1, ctrl_c)
    assert relevance_cli.main(flags()) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted: no prompt had finished, nothing saved; continue with: ")
    assert not (project / "results").exists() or not list((project / "results").iterdir())


@pytest.mark.parametrize("how", [ctrl_c, sigterm], ids=["ctrl-c", "sigterm"])
def test_weakening_interrupt_keeps_finished_images(tmp_path, monkeypatch, capsys, how):
    import hrv_diffusion.apps.weakening as weakening
    from hrv_diffusion.cli.weakening import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "final_result").mkdir()
    np.save(tmp_path / "final_result" / "a.npy", np.random.default_rng(1).random((34, 22)).astype(np.float32))
    args = ["--model_card", "tiny-sd", "--prompt", "a red car", "--concept", "Color", "--seeds", "10",
            "--heads_to_be_perturbed", "0", "3", "--n_inference_steps", "2", "--hrv", "final_result/a.npy",
            "--batch_size", "1", "--quiet"]
    original, calls = weakening.generate, []

    def generate(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            how()
        return original(*a, **k)

    monkeypatch.setattr(weakening, "generate", generate)
    assert main(args) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("interrupted: the finished images are saved under ")
    assert err.rstrip().endswith("--batch_size 1 --quiet") and "head_perturbation_analysis.py --model_card" in err
    assert len(list(tmp_path.rglob("*.png"))) == 2  # the k = 0 image, under top_0 and bottom_0
    monkeypatch.setattr(weakening, "generate", original)
    assert main(args) == 0
    assert "2 images generated (2 files written), 2 already present" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
