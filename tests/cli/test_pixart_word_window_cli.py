"""The commands check a PixArt prompt's words with its T5 tokens on its own text length (issue 22).

A word past CLIP's 77 tokens but inside tiny-pixart's 120 (PixArt-α's length) runs through hrv-p2p and
hrv-reduce-misinterpretation on tiny-pixart: the early CLIP check (kept for UNet cards, bad_inputs_20b.py) is not
applied to a PixArt card. Words past the 120 tokens are refused (bad_inputs_22g.py; the functions:
tests/apps/test_pixart_word_window.py).
"""
from __future__ import annotations

import numpy as np
import pytest

from hrv_diffusion.cli import adjust, p2p
from hrv_diffusion.core.models import reads_t5_text
from hrv_diffusion.core.tokenizer import clip_tokenizer
from hrv_diffusion.core.tokens import word_positions_in_window
from hrv_diffusion.errors import UserError

FAR = " ".join(["a"] * 85)  # 85 one-token words (CLIP and T5): what follows is past CLIP's window, not T5's 120
RUN = ["--model_card", "tiny-pixart", "--seeds", "1", "--n_inference_steps", "2", "--quiet"]


def test_the_prompts_word_is_past_clips_window_only():
    with pytest.raises(UserError, match="past the 77-token window"):
        word_positions_in_window(clip_tokenizer(), f"a car {FAR} red", "red")


def test_t5_cards_are_known_before_loading(tmp_path):
    """From the card's name or its model_index.json's text encoder; the toy DiT (a PixArt transformer) reads CLIP;
    unreadable cards are taken for CLIP ones (loading reports them)."""
    import json

    from hrv_diffusion.core.models import TOY_DIT_DIR

    assert reads_t5_text("tiny-pixart") and reads_t5_text("PixArt-alpha/PixArt-Sigma-XL-2-1024-MS")
    cards = ("tiny-sd", "tiny-sdxl", "toy", "toy-dit", str(TOY_DIT_DIR), str(tmp_path / "missing"))
    assert not any(reads_t5_text(c) for c in cards)
    for name, text in (("sigma", "T5EncoderModel"), ("sd", "CLIPTextModel")):
        (tmp_path / name).mkdir()
        index = {"_class_name": "PixArtSigmaPipeline", "text_encoder": ["transformers", text]}
        (tmp_path / name / "model_index.json").write_text(json.dumps(index))
    assert reads_t5_text(str(tmp_path / "sigma")) and not reads_t5_text(str(tmp_path / "sd"))


def test_hrv_p2p_runs_a_swap_past_clips_window_on_tiny_pixart(tmp_path):
    out = tmp_path / "p2p"
    assert p2p.main([*RUN, "--prompts", f"a car {FAR} blue", f"a car {FAR} red", "--concepts",
                     "--save_original_p2p", "--output_path", str(out)]) in (0, None)
    assert len(list((out / "exp_1" / "original_p2p").rglob("1.png"))) == 1


def test_sd_hrv_adjusts_a_word_past_clips_window_on_tiny_pixart(tmp_path):
    hrv = tmp_path / "hrv.npy"
    np.save(hrv, np.full((34, 12), 1.0, np.float32))  # the paper's 34 concepts x tiny-pixart's 12 CA heads
    out = tmp_path / "adjust"
    assert adjust.main([*RUN, "--prompt", f"a car {FAR} red", "--selected_token", "red", "--hrv", str(hrv),
                        "--output_path", str(out)]) in (0, None)
    assert len(list(out.rglob("sd-hrv/1.png"))) == 1
