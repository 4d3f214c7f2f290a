"""Word positions on PixArt are checked against the pipeline's T5 length (tiny-pixart: PixArt-α's 120), not the
T5 tokenizer's 512 nor CLIP's 77 (issue 22).

The independent expectation: a word is in the window exactly when ``tokenizer(prompt, truncation=True,
max_length=T)`` (what the pipeline's ``encode_prompt`` does) keeps one of its tokens before the end token. A word
past it is one UserError naming the window, in weakening (``--concept_word``), SD-HRV adjusting
(``--selected_token``), P2P (``generate_edits``) and A&E (``--token_words``), as on CLIP.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hrv_diffusion.apps.adjust import Adjustment, ConceptAdjuster
from hrv_diffusion.apps.attend_excite_tokens import word_targets
from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits
from hrv_diffusion.apps.weakening import weakened_tokens
from hrv_diffusion.core.families import text_axis
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.tiny_pixart import tiny_pixart_pipeline
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.vectors import HRV

P2P = EditSpec("original_p2p", cross_replace_steps=0.8, self_replace_steps=0.4)


@pytest.fixture(scope="module")
def pipe():
    return tiny_pixart_pipeline()


def prompt_with(fillers: int, word: str = "red") -> str:
    return " ".join(["a"] * fillers) + f" {word} car"  # "a" is one T5 token: the word is token ``fillers``


def seen_by_the_encoder(pipe, prompt: str, word: str) -> bool:
    """Whether the pipeline's truncation at its own text length keeps ``word``'s token before the end token."""
    ids = pipe.tokenizer(prompt, truncation=True, max_length=text_axis(pipe).length).input_ids
    return f"▁{word}" in pipe.tokenizer.convert_ids_to_tokens(ids[:-1])


def test_tiny_pixart_encodes_fewer_tokens_than_its_tokenizer_allows(pipe):
    assert text_axis(pipe).length == 120 < pipe.tokenizer.model_max_length == 512
    assert seen_by_the_encoder(pipe, prompt_with(118), "red")  # token 118: the last word token
    assert not seen_by_the_encoder(pipe, prompt_with(119), "red")  # token 119: the end token's place


@pytest.mark.parametrize("fillers", [90, 118, 119, 150])
def test_weakening_concept_word(pipe, fillers):
    prompt, length = prompt_with(fillers), text_axis(pipe).length
    if seen_by_the_encoder(pipe, prompt, "red"):
        mask = weakened_tokens(pipe.tokenizer, prompt, "red", length)  # (T,)
        assert mask.shape == (length,) and mask.nonzero().flatten().tolist() == [fillers]
    else:
        with pytest.raises(UserError, match="--concept_word 'red' is past the 120-token window of the text encoder"):
            weakened_tokens(pipe.tokenizer, prompt, "red", length)


@pytest.mark.parametrize("fillers", [90, 119])
def test_sd_hrv_selected_token(pipe, fillers):
    layout = head_layout(pipe)
    values = np.full((2, layout.num_heads), 1.0, np.float32)  # (C, H): rows sum to H
    hrv = HRV(values, ("Color", "Shape"), tuple(layout.labels), "synthetic")
    prompt, length = prompt_with(fillers), text_axis(pipe).length
    make = lambda: ConceptAdjuster([prompt], [Adjustment("red", {"Color": 2.0})], hrv, layout, pipe.tokenizer, 2,
                                   text_length=length)
    if seen_by_the_encoder(pipe, prompt, "red"):
        factors = make().factors[0]  # (H, T)
        assert factors.shape == (layout.num_heads, length)
        assert torch.equal((factors != 1).any(0).nonzero().flatten(), torch.tensor([fillers]))
    else:
        with pytest.raises(UserError, match="--selected_token 'red' is past the 120-token window"):
            make()


def test_p2p_swapped_word_past_the_window_is_refused_before_generating(pipe):
    far = " ".join(["a"] * 125)
    group = Group(f"a car {far} blue", 1, (Edit(f"a car {far} red", P2P),))
    assert not seen_by_the_encoder(pipe, group.source_prompt, "blue")
    with pytest.raises(UserError, match="the swapped word 'blue' is past the 120-token window"):
        generate_edits(pipe, [group], num_inference_steps=2)


def test_attend_excite_target_word(pipe):
    axis = text_axis(pipe)
    assert word_targets(pipe.tokenizer, prompt_with(90), ["red"], axis) == [[90]]  # past CLIP's 77: fine
    with pytest.raises(UserError, match="the target word 'red' is past the 120-token window"):
        word_targets(pipe.tokenizer, prompt_with(119), ["red"], axis)
