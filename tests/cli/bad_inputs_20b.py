"""Bad inputs of issue 20 ("a researcher's first hour"), items of helper 20b: output paths that are files, scores
of images never generated or unreadable, CLIP checkpoints of another architecture, words past the text encoder's
token window, hrv-published offline, intended-sense ties. Same format as ``bad_inputs_14a.py``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

P2P = ["hrv-p2p", "--prompts", "a blue car", "a red car", "--target_token", "red", "--model_card", "tiny-sd",
       "--n_inference_steps", "2", "--seeds", "1", "--quiet", "--replace_all_heads"]
AE = ["hrv-attend-excite", "--model_card", "tiny-sd", "--n_inference_steps", "2", "--seeds", "1", "--quiet",
      "--hrv", "final_result/a.npy"]
CV = "category_vectors_epoch_1_to_1_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4.npy"
LONG = " ".join(["a"] * 80)  # 80 one-token words: what follows is past CLIP's 77-token window
SCORE_ONE = ["--prompt_set", "prompts.txt", "--experiment_num", "animals", "--output_path", "outs", "--methods", "sd"]

CASES = [
    # item 8: an output folder (or an output file's folder) that is a file, refused before anything loads
    {"command": [*P2P, "--output_path", "out"], "setup": "out_is_a_file",
     "input": "P2P --output_path that is a file", "expect": "--output_path out is a file: pass a folder", "exit": 2},
    {"command": [*AE, "--prompt", "a cat and a dog", "--token_words", "cat", "--output_path", "out/ae"],
     "setup": "out_is_a_file", "input": "A&E --output_path inside a file",
     "expect": "--output_path out/ae is inside out, which is a file: pick another path", "exit": 2},
    {"command": ["hrv-published", "--cache_dir", "out", "--verify_only", "--quiet"], "setup": "out_is_a_file",
     "input": "hrv-published --cache_dir that is a file", "expect": "--cache_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-weakening-prompts", "--experiment_num", "1", "--out", "out/prompts.txt"],
     "setup": "out_is_a_file", "input": "weakening prompts --out inside a file",
     "expect": "--out out/prompts.txt is inside out, which is a file", "exit": 2},
    {"command": ["hrv-weakening-scores", "--experiment_num", "1", "--results_dir", "out"], "setup": "out_is_a_file",
     "input": "weakening scores --results_dir that is a file", "expect": "--results_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-weakening-plots", "--experiment_num", "1", "--plots_dir", "out"], "setup": "out_is_a_file",
     "input": "weakening plots --plots_dir that is a file", "expect": "--plots_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-multi-object-scores", *SCORE_ONE, "--out_dir", "out"], "setup": "out_is_a_file",
     "input": "multi-object scores --out_dir that is a file", "expect": "--out_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-p2p-scores", "--results_dir", "out"], "setup": "out_is_a_file",
     "input": "P2P scores --results_dir that is a file", "expect": "--results_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-visualize", "--output_dir", "out"], "setup": "out_is_a_file",
     "input": "hrv-visualize --output_dir that is a file", "expect": "--output_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["hrv-demo", "--output_dir", "out"], "setup": "out_is_a_file",
     "input": "hrv-demo --output_dir that is a file", "expect": "--output_dir out is a file: pass a folder",
     "exit": 2},
    {"command": ["python", "toy/p2p_eval.py", "--out", "out"], "setup": "out_is_a_file",
     "input": "toy/p2p_eval.py --out that is a file", "expect": "--out out is a file: pass a folder", "exit": 2},
    {"command": ["python", "toy/adjust_eval.py", "--out", "out/x"], "setup": "out_is_a_file",
     "input": "toy/adjust_eval.py --out inside a file", "expect": "--out out/x is inside out, which is a file",
     "exit": 2},
    {"command": ["hrv-intended-sense", "folder", "--desired_text", "a", "--undesired_text", "b", "--out", "."],
     "input": "intended-sense --out that is a folder", "expect": "--out . is a folder: pass a file path", "exit": 2},
    # item 1: words past the text encoder's 77-token window
    {"command": ["hrv-p2p", "--prompts", f"{LONG} blue car", f"{LONG} red car", "--target_token", "red",
                 "--model_card", "tiny-sd", "--use_soft_vector", "--hrv", "final_result/a.npy"], "setup": "hrvs",
     "input": "P2P-HRV --target_token past the text encoder's 77-token window",
     "expect": "--target_token 'red' is past the 77-token window of the text encoder", "exit": 2},
    {"command": ["hrv-p2p", "--prompts", f"a car {LONG} blue", f"a car {LONG} red", "--target_token", "car",
                 "--model_card", "tiny-sd", "--use_soft_vector", "--hrv", "final_result/a.npy"], "setup": "hrvs",
     "input": "P2P with the swapped word past the text encoder's 77-token window",
     "expect": "the swapped word 'blue' is past the 77-token window of the text encoder", "exit": 2},
    {"command": [*AE, "--prompt", f"a cat {LONG} and a dog", "--token_words", "cat", "dog"], "setup": "hrvs",
     "input": "A&E --token_words past the text encoder's 77-token window",
     "expect": "the target word 'dog' is past the 77-token window of the text encoder", "exit": 2},
    {"command": ["hrv-reduce-misinterpretation", "--model_card", "tiny-sd", "--prompt", f"A vase {LONG} in lavender",
                 "--selected_token", "lavender", "--hrv", "final_result/a.npy"], "setup": "hrvs",
     "input": "SD-HRV --selected_token past the text encoder's 77-token window",
     "expect": "--selected_token 'lavender' is past the 77-token window of the text encoder", "exit": 2},
    {"command": ["hrv-weakening", "--model_card", "tiny-sd", "--seeds", "10", "--heads_to_be_perturbed", "0",
                 "--prompt", f"a {LONG} red car", "--concept", "Color", "--weaken", "concept_word", "--concept_word",
                 "red", "--hrv", "final_result/a.npy", "--n_inference_steps", "2", "--quiet"], "setup": "hrvs",
     "input": "weakening --concept_word past the text encoder's 77-token window",
     "expect": "--concept_word 'red' is past the 77-token window of the text encoder", "exit": 2},
    # item 4: hrv-published offline
    {"command": ["hrv-published", "--cache_dir", "cache", "--verify_only", "--quiet"], "setup": "bad_copy",
     "input": "hrv-published --verify_only with a hand-copied file that is not the published one",
     "expect": f"moved aside to {CV}.mismatch", "exit": 2},
    {"command": ["hrv-published", "--cache_dir", "cache", "--verify_only", "--quiet"],
     "input": "hrv-published --verify_only before any file was copied",
     "expect": "none of the 66 published files asked for is in cache", "exit": 2},
    # item 3: --seeds that were never generated
    {"command": ["hrv-multi-object-scores", *SCORE_ONE, "--seeds", "0", "99"], "setup": "one_seed_generated",
     "input": "multi-object scores --seeds of which one was never generated",
     "expect": "1 of the 2 images of --seeds 0 99 are missing", "exit": 2},
    # item 7: a CLIP checkpoint of another architecture
    {"command": ["hrv-multi-object-scores", *SCORE_ONE, "--clip_model", "ViT-S-32", "--clip_pretrained",
                 "other.pt", "--device", "cpu"], "setup": "other_clip_checkpoint",
     "input": "a CLIP checkpoint of another architecture than --clip_model",
     "expect": "the CLIP checkpoint other.pt does not fit the architecture --clip_model ViT-S-32", "exit": 2},
]


# ----------------------------------------------------------------------------------------------- setups

def hrvs(folder: Path) -> None:
    (folder / "final_result").mkdir(exist_ok=True)
    np.save(folder / "final_result" / "a.npy", np.random.default_rng(1).random((34, 22)).astype(np.float32))


def out_is_a_file(folder: Path) -> None:
    hrvs(folder)
    (folder / "out").write_text("a file")


def one_seed_generated(folder: Path) -> None:
    from PIL import Image

    from hrv_diffusion.apps.attend_excite_runs import image_dir

    (folder / "prompts.txt").write_text("a cat and a dog\n")
    image = image_dir(folder / "outs", "sd", "animals", "a cat and a dog") / "0.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(image)


def other_clip_checkpoint(folder: Path) -> None:
    import torch

    one_seed_generated(folder)
    torch.save({"positional_embedding": torch.zeros(77, 8)}, folder / "other.pt")


def bad_copy(folder: Path) -> None:
    (folder / "cache").mkdir()
    np.save(folder / "cache" / CV, np.zeros((34, 128), np.float32))


SETUPS = {f.__name__: f for f in (bad_copy, hrvs, out_is_a_file, one_seed_generated, other_clip_checkpoint)}
