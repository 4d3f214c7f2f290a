"""Bad inputs of issue 14 items 1, 2, 4 and 5, as data for the docs/bad-inputs.md table and for
``test_bad_inputs_14a.py``, which runs every case.

Each case: ``command`` (argv; the first word is a console script of pyproject.toml, or ``python`` and a script
path), ``input`` (what is wrong), ``expect`` (a substring of the one-line ``error:`` message), ``exit`` (the exit
status). Optional: ``setup`` (a function of this module that prepares the current folder first, named in
``SETUPS``) and ``needs_no_cuda`` (the case is about a machine without CUDA).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_WEAKEN = ["hrv-weakening", "--model_card", "tiny-sd", "--seeds", "10", "--heads_to_be_perturbed", "0",
               "--n_inference_steps", "2", "--quiet"]
ONE_PROMPT = ["--prompt", "a red car"]
EXP5_FIRST = ["--experiment_num", "5", "--subset_running", "--numerator", "1", "--denominator", "50"]
HRV = ["--hrv", "final_result/a.npy"]

CASES = [
    # item 1: weakening keeps no images of other settings
    {"command": [*TINY_WEAKEN, *EXP5_FIRST, "--concept", "Color", *HRV], "setup": "hrvs",
     "input": "a --concept that contradicts the experiment (Color heads on exp 5's Image Style prompts)",
     "expect": "experiment 5 weakens 'Image Style' heads, not 'Color'", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Animals", *HRV], "setup": "weakened_color",
     "input": "weakening again into a prompt folder made for another concept",
     "expect": "made with concept='Color', this run has concept='Animals'", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color", "--hrv", "final_result/b.npy"],
     "setup": "weakened_color", "input": "weakening again into a prompt folder made with another HRV file",
     "expect": "hrv_fingerprint", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color", *HRV, "--reweighting_factor", "0.5"],
     "setup": "weakened_color", "input": "weakening again into a prompt folder made with another factor",
     "expect": "made with reweighting_factor=-2.0, this run has reweighting_factor=0.5", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color", *HRV], "setup": "images_without_manifest",
     "input": "a prompt folder with images of an older version (no manifest.json)",
     "expect": "holds images without a manifest.json", "exit": 2},
    # item 2: extraction is strict
    {"command": ["hrv-extract"], "setup": "one_rank_of_two", "input": "a missing shard (rank 1 of 2)",
     "expect": "the shards hold 3 of 6 (epoch, prompt) pairs", "exit": 2},
    {"command": ["hrv-extract"], "setup": "corrupt_shard", "input": "a corrupt (truncated) shard",
     "expect": "pass --allow_partial", "exit": 2},
    {"command": ["hrv-extract"], "setup": "unfinished_checkpoint",
     "input": "an interrupted run's checkpoint (complete: false)", "expect": "pass --allow_partial", "exit": 2},
    # item 4: no traceback
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color", *HRV, "--output_path", "out"],
     "setup": "out_is_a_file", "input": "weakening --output_path that is a file",
     "expect": "--output_path out is a file: pass a folder", "exit": 2},
    {"command": ["hrv-relevance", "--model_card", "tiny-sd", "--output_dir", "out"], "setup": "out_is_a_file",
     "input": "relevance --output_dir that is a file", "expect": "--output_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-text-embeddings", "--model_card", "tiny-sd", "--output_dir", "out"], "setup": "out_is_a_file",
     "input": "text embeddings --output_dir that is a file", "expect": "--output_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-extract", "--final_result", "out"], "setup": "out_is_a_file",
     "input": "extract --final_result that is a file", "expect": "--final_result out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-relevance", "--model_card", "tiny-sd", "--device", "cuda"], "needs_no_cuda": True,
     "input": "--device cuda on a machine without CUDA (relevance)", "expect": "CUDA is not available", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color", *HRV, "--device", "cuda"], "setup": "hrvs",
     "needs_no_cuda": True, "input": "--device cuda on a machine without CUDA (weakening)",
     "expect": "CUDA is not available", "exit": 2},
    {"command": ["hrv-weakening-scores", "--experiment_num", "1", "--device", "cuda"], "setup": "weakening_images",
     "needs_no_cuda": True, "input": "--device cuda on a machine without CUDA (CLIP scoring)",
     "expect": "CUDA is not available", "exit": 2},
    {"command": ["python", "toy/p2p_eval.py", "--device", "cuda"], "needs_no_cuda": True,
     "input": "--device cuda on a machine without CUDA (toy scripts)", "expect": "CUDA is not available",
     "exit": 2},
    # item 5: flags that agree
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color"], "setup": "no_hrv",
     "input": "weakening without --hrv when --final_result holds no HRV of this model",
     "expect": "no HRV file final_result/category_vectors_epoch_1_to_1_neg_prompt_False_merged_", "exit": 2},
    {"command": [*TINY_WEAKEN, *ONE_PROMPT, "--concept", "Color"], "setup": "two_prompt_lists",
     "input": "weakening without --hrv when --final_result holds HRVs of two prompt lists, none 'merged'",
     "expect": "choose one with --prompt_type", "exit": 2},
    {"command": ["hrv-extract", "--output_dir", "final_result"], "setup": "two_ranks",
     "input": "extract --output_dir in its old meaning (the HRV folder itself)",
     "expect": "--output_dir is the project folder", "exit": 2},
]


# ----------------------------------------------------------------------------------------------- setups

def hrvs(folder: Path) -> None:
    (folder / "final_result").mkdir(exist_ok=True)
    for seed, name in ((1, "a.npy"), (2, "b.npy")):
        np.save(folder / "final_result" / name, np.random.default_rng(seed).random((34, 22)).astype(np.float32))


def weakened_color(folder: Path) -> None:
    from hrv_diffusion.cli.weakening import main

    hrvs(folder)
    assert main([*TINY_WEAKEN[1:], *ONE_PROMPT, "--concept", "Color", *HRV]) == 0


def images_without_manifest(folder: Path) -> None:
    weakened_color(folder)
    next(folder.rglob("manifest.json")).unlink()


def weakening_images(folder: Path) -> None:
    from PIL import Image

    path = folder / "ordered_weakening_analysis" / "hp_outputs" / "exp_1" / "a red car" / "top" / "top_0" / "10.png"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(path)


def out_is_a_file(folder: Path) -> None:
    hrvs(folder)
    (folder / "out").write_text("a file")


def no_hrv(folder: Path) -> None:
    (folder / "final_result").mkdir()


def two_prompt_lists(folder: Path) -> None:
    (folder / "final_result").mkdir()
    for prompt in ("imagenet", "mine"):
        name = f"category_vectors_epoch_1_to_1_neg_prompt_False_{prompt}_340_final_text_descriptions_tiny_sd.npy"
        np.save(folder / "final_result" / name, np.ones((34, 22), np.float32))


def _rank(folder: Path, rank: int, indices, complete: bool = True) -> Path:
    from test_robustness_extract import write_rank

    (folder / "results").mkdir(exist_ok=True)
    return write_rank(folder / "results", rank, indices, complete)


def one_rank_of_two(folder: Path) -> None:
    _rank(folder, 0, range(3))


def two_ranks(folder: Path) -> None:
    _rank(folder, 0, range(3))
    _rank(folder, 1, range(3, 6))


def corrupt_shard(folder: Path) -> None:
    _rank(folder, 0, range(3))
    path = _rank(folder, 1, range(3, 6))
    path.write_bytes(path.read_bytes()[:100])


def unfinished_checkpoint(folder: Path) -> None:
    _rank(folder, 0, range(3))
    _rank(folder, 1, range(3, 5), complete=False)


SETUPS = {f.__name__: f for f in (hrvs, weakened_color, images_without_manifest, weakening_images, out_is_a_file,
                                  no_hrv, two_prompt_lists, one_rank_of_two, two_ranks, corrupt_shard,
                                  unfinished_checkpoint)}
