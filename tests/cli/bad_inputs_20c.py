"""Bad inputs of issue 20 ("a researcher's first hour"), helper c: misleading messages on the toy model.

Same format as ``bad_inputs_14a.py``: each case has ``command``, ``input``, ``expect`` (a substring of the one
``error:`` line) and ``exit``; optional ``setup`` (a function of ``SETUPS``).
"""
from __future__ import annotations

from pathlib import Path

CASES = [
    {"command": ["hrv-attend-excite", "--model_card", "toyy", "--prompt", "a red circle"],
     "input": "a typo in --model_card (toyy): reported as an unknown model card, not an unknown concept",
     "expect": "unknown model card 'toyy': it is neither a built-in model (toy, toy-dit, tiny-sd, tiny-sd2, tiny-sdxl",
     "exit": 2},
    {"command": ["hrv-weakening", "--model_card", "toyy"],
     "input": "a typo in --model_card before any HRV file is looked for (weakening)",
     "expect": "unknown model card 'toyy'", "exit": 2},
    {"command": ["hrv-relevance", "--model_card", "./toy_model"],
     "input": "a --model_card folder that does not exist (not sent to the hub)",
     "expect": "--model_card ./toy_model: the folder ./toy_model does not exist", "exit": 2},
    {"command": ["hrv-text-embeddings", "--model_card", "half_model"], "setup": "folder_without_index",
     "input": "a --model_card folder that is not a diffusers model (no model_index.json)",
     "expect": "the folder has no model_index.json", "exit": 2},
    {"command": ["hrv-reduce-misinterpretation", "--model_card", "toy", "--prompt", "a red  circle on white",
                 "--selected_token", "square"],
     "input": "SD-HRV: a word not in a prompt with a double space (the words offered are the prompt's words)",
     "expect": "pass one of 'a', 'red', 'circle', 'on', 'white'", "exit": 2},
]


def folder_without_index(folder: Path) -> None:
    (folder / "half_model" / "unet").mkdir(parents=True)


SETUPS = {"folder_without_index": folder_without_index}


def sd_shaped_hrv(folder: Path) -> None:
    import numpy as np

    np.save(folder / "category_vectors_sd.npy", np.ones((34, 128), dtype=np.float32))


SETUPS["sd_shaped_hrv"] = sd_shaped_hrv
CASES.append(
    {"command": ["hrv-reduce-misinterpretation", "--model_card", "toy", "--hrv", "category_vectors_sd.npy"],
     "setup": "sd_shaped_hrv", "input": "an HRV of SD v1.4 (34 x 128) on the toy: named as such, not blamed on "
     "--description", "expect": "category_vectors_sd.npy is an HRV of SD v1.x (sd_v1_4) (128 heads), but the model "
     "(--model_card) is toy with 56 CA heads", "exit": 2})
