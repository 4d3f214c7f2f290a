"""Bad inputs of issue 22 (model families), items of helper "pixwin": on PixArt a word past the pipeline's T5 length
(tiny-pixart: PixArt-α's 120 tokens, not the T5 tokenizer's 512) is refused as a word past CLIP's 77 is on a UNet.
Same format as ``bad_inputs_14a.py``; optional ``setup`` (a function of ``SETUPS``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PIXART = ["--model_card", "tiny-pixart", "--n_inference_steps", "2", "--seeds", "1", "--quiet"]
LONG = " ".join(["a"] * 125)  # 125 one-token words: what follows is past tiny-pixart's 120-token T5 window
HRV = ["--hrv", "final_result/pixart.npy"]

CASES = [
    {"command": ["hrv-weakening", *PIXART, *HRV, "--heads_to_be_perturbed", "0", "--prompt", f"a {LONG} red car",
                 "--concept", "Color", "--weaken", "concept_word", "--concept_word", "red"], "setup": "pixart_hrv",
     "input": "weakening --concept_word past PixArt's T5 window (tiny-pixart: 120 tokens)",
     "expect": "--concept_word 'red' is past the 120-token window of the text encoder", "exit": 2},
    {"command": ["hrv-p2p", *PIXART, "--prompts", f"a car {LONG} blue", f"a car {LONG} red", "--concepts", "--save_original_p2p",
                 "--output_path", "out"],
     "input": "P2P on PixArt with the swapped word past its T5 window (120 tokens)",
     "expect": "the swapped word 'blue' is past the 120-token window of the text encoder", "exit": 2},
    {"command": ["hrv-reduce-misinterpretation", *PIXART, *HRV, "--prompt", f"A vase {LONG} in lavender",
                 "--selected_token", "lavender", "--output_path", "out"], "setup": "pixart_hrv",
     "input": "SD-HRV on PixArt: --selected_token past its T5 window (120 tokens)",
     "expect": "--selected_token 'lavender' is past the 120-token window of the text encoder", "exit": 2},
    {"command": ["hrv-attend-excite", *PIXART, "--run_standard_attend_excite", "--prompt",
                 f"a cat {LONG} and a dog", "--token_words", "cat", "dog", "--output_path", "out"],
     "input": "A&E on PixArt: --token_words past its T5 window (120 tokens)",
     "expect": "the target word 'dog' is past the 120-token window of the text encoder", "exit": 2},
]


def pixart_hrv(folder: Path) -> None:
    """An HRV of the paper's 34 concepts over tiny-pixart's 12 CA heads."""
    (folder / "final_result").mkdir(exist_ok=True)
    np.save(folder / "final_result" / "pixart.npy", np.random.default_rng(1).random((34, 12)).astype(np.float32))


SETUPS = {f.__name__: f for f in (pixart_hrv,)}
