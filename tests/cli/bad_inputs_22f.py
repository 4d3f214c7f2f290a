"""Bad inputs of issue 22 (model families), items of helper "family": applications that run on UNets only, given a
PixArt model. Same format as ``bad_inputs_14a.py``."""
from __future__ import annotations

PIXART = ["--model_card", "tiny-pixart", "--n_inference_steps", "2", "--seeds", "1", "--quiet"]
ONLY_UNETS = "runs on UNet models only for now (SD 1.x/2.x/XL, the toy); --model_card tiny-pixart is a pixart model"

CASES = [
    {"command": ["hrv-p2p", *PIXART, "--prompts", "a blue car", "a red car", "--target_token", "red",
                 "--replace_all_heads", "--output_path", "out"],
     "input": "P2P-HRV on a PixArt model (not ported yet)", "expect": f"hrv-p2p {ONLY_UNETS}", "exit": 2},
    {"command": ["hrv-attend-excite", *PIXART, "--run_standard_attend_excite", "--prompt", "a cat and a dog",
                 "--token_words", "cat", "dog", "--output_path", "out"],
     "input": "A&E on a PixArt model (not ported yet)", "expect": f"hrv-attend-excite {ONLY_UNETS}", "exit": 2},
]
