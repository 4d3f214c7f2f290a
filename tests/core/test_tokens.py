"""Token utilities (core/tokens.py): word positions and Prompt-to-Prompt's mappers, against hand-worked cases."""
from __future__ import annotations

import pytest
import torch

from hrv_diffusion.core.tokenizer import clip_tokenizer
from hrv_diffusion.core.tokens import refinement_mapper, word_swap_mapper, word_token_positions


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer()


def test_word_positions(tok):
    assert word_token_positions(tok, "a blue car", "blue") == [2]
    assert word_token_positions(tok, "a blue car", "red") == []
    assert word_token_positions(tok, "a blue car", "Blue") == []  # exact, case-sensitive words
    assert word_token_positions(tok, "a cat and a dog", "a") == [1, 4]  # every occurrence
    assert word_token_positions(tok, "a black cat and a white dog", "white dog") == [6, 7]
    assert word_token_positions(tok, "a black cat and a white dog", 2) == [3]  # a word index
    pieces = tok.tokenize("rose-colored")
    assert len(pieces) == 3  # rose, -, colored: all of them belong to the word
    assert word_token_positions(tok, "A rose-colored vase", "rose-colored") == [2, 3, 4]
    assert word_token_positions(tok, "A rose-colored vase", "vase") == [5]


def test_word_swap_mapper_equal_token_counts_is_the_identity(tok):
    assert torch.equal(word_swap_mapper(tok, "a blue car", "a red car"), torch.eye(77))
    assert torch.equal(word_swap_mapper(tok, "a blue car on a sunny day", "a red car on a rainy day"), torch.eye(77))


def test_word_swap_mapper_three_pieces_to_one(tok):
    source, target = "a polka-dot shirt", "a leopard shirt"
    assert word_token_positions(tok, source, "polka-dot") == [2, 3, 4]
    assert word_token_positions(tok, target, "leopard") == [2]
    expected = torch.zeros(77, 77)
    expected[0, 0] = expected[1, 1] = 1  # before the swapped word: position to position
    expected[2:5, 2] = 1  # every source piece to the one target piece (weight 1/1)
    for j in range(3, 75):  # after the last swap the reference writes M[j, j] while i runs to 77: j = 3 .. 74
        expected[j, j] = 1
    assert torch.equal(word_swap_mapper(tok, source, target), expected)


def test_word_swap_mapper_one_piece_to_three(tok):
    source, target = "a leopard shirt", "a polka-dot shirt"
    expected = torch.zeros(77, 77)
    expected[0, 0] = expected[1, 1] = 1
    expected[2, 2:5] = 1 / 3  # the source piece spread over the three target pieces
    for j in range(5, 77):  # the tail: i runs 3 .. 76 and j 5 .. 76 (stops at 77)
        expected[j, j] = 1
    assert torch.equal(word_swap_mapper(tok, source, target), expected)


def test_word_swap_mapper_needs_equal_word_counts(tok):
    with pytest.raises(ValueError, match="same number of words"):
        word_swap_mapper(tok, "a car", "a red car")


def test_refinement_mapper_added_word(tok):
    mapper, alphas = refinement_mapper(tok, "a car", "a red car")  # [SOT a car EOT] -> [SOT a red car EOT]
    assert mapper[:5].tolist() == [0, 1, -1, 2, 3]  # "red" has no source token
    assert alphas[:5].tolist() == [1, 1, 0, 1, 1]
    assert mapper[5:].tolist() == list(range(5, 77)) and (alphas[5:] == 1).all()  # padding maps to itself


def test_refinement_mapper_identical_prompts(tok):
    mapper, alphas = refinement_mapper(tok, "a photo of a cat", "a photo of a cat")
    assert mapper.tolist() == list(range(77)) and (alphas == 1).all()


def test_words_past_the_text_encoders_window_are_one_error(tok):
    """Issue 20: a word past the 77-token window is an error saying so, not "not in the prompt" or a no-op."""
    from hrv_diffusion.core.tokens import word_positions_in_window
    from hrv_diffusion.errors import UserError

    filler = " ".join(["a"] * 80)  # one token each
    prompt = f"a red car {filler} zebra"
    assert word_positions_in_window(tok, prompt, "red") == [2]
    assert word_positions_in_window(tok, prompt, "giraffe") == []  # absent: the caller says so
    assert word_token_positions(tok, prompt, "zebra") == [84]  # the tokenizer finds it, past the window
    with pytest.raises(UserError, match=r"--target_token 'zebra' is past the 77-token window of the text encoder: "
                                        r"the prompt .* has 86 tokens .* shorten the prompt"):
        word_positions_in_window(tok, prompt, "zebra", "--target_token")
    with pytest.raises(UserError, match="the word 'zebra' is past"):  # a word index names its word
        word_positions_in_window(tok, prompt, len(prompt.split()) - 1)
    edge = " ".join(["a"] * 74)  # the 75th word token is the last the encoder sees (76 is the end token)
    assert word_positions_in_window(tok, f"{edge} zebra", "zebra") == [75]
    with pytest.raises(UserError):
        word_positions_in_window(tok, f"{edge} a zebra", "zebra")  # position 76: the end token's place


def test_word_positions_ignore_runs_of_spaces(tok):
    """A double space or a tab does not shift the words: the tokenizer ignores them, so must the word split."""
    single = word_token_positions(tok, "a red circle on white", "circle")
    assert single  # the word is there
    for text in ("a red  circle on white", "  a red circle on white", "a\tred circle  on white"):
        assert word_token_positions(tok, text, "circle") == single
        assert word_token_positions(tok, text, 2) == single
    assert word_token_positions(tok, "a red  circle", "red circle") == word_token_positions(tok, "a red circle",
                                                                                          "red circle")


def test_the_window_is_the_pipelines_text_length_not_the_t5_tokenizers_512(tok):
    """Issue 22: T5's tokenizer says 512 tokens, PixArt-α encodes 120. A word is in the window exactly when the
    tokenizer, truncating at the pipeline's length as the pipeline does, keeps it before the end token."""
    from hrv_diffusion.core.t5_tokenizer import t5_tokenizer
    from hrv_diffusion.core.tokens import token_window, word_positions_in_window
    from hrv_diffusion.errors import UserError

    t5 = t5_tokenizer()
    assert token_window(t5) == 512 and token_window(t5, 120) == 120
    for fillers in (116, 117, 118, 119, 130):
        prompt = " ".join(["a"] * fillers) + " red car"
        ids = t5(prompt, truncation=True, max_length=120).input_ids  # what PixArt-α's encoder sees
        seen = t5.convert_ids_to_tokens(ids[:-1])  # without the end token
        assert word_token_positions(t5, prompt, "car") == [fillers + 1]  # 0-based: no start token
        if "▁car" in seen:
            assert word_positions_in_window(t5, prompt, "car", "--concept_word", 120) == [fillers + 1]
        else:
            with pytest.raises(UserError, match=r"--concept_word 'car' is past the 120-token window of the text "
                                                r"encoder: the prompt .* has \d+ tokens \(end included\) and the "
                                                r"encoder sees only the first 119 word tokens"):
                word_positions_in_window(t5, prompt, "car", "--concept_word", 120)
        assert word_positions_in_window(t5, prompt, "car") == [fillers + 1]  # 512 without the pipeline's length
    prompt = " ".join(["a"] * 80) + " zebra"  # CLIP: the explicit 77 is the tokenizer's own window
    with pytest.raises(UserError, match="past the 77-token window"):
        word_positions_in_window(tok, prompt, "zebra", "the word", 77)
