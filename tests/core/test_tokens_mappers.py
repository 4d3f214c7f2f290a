"""Prompt-to-Prompt's token alignments (core/tokens.py) against mappers written out by hand from the token lists.

Token lists (the real CLIP BPE, start token at 0):
  "a blue car"                          -> SOT a blue car EOT
  "a T-shirt with a polka-dot pattern"  -> SOT a t - shirt with a polka - dot pattern EOT   (polka-dot: 7, 8, 9)
  "a T-shirt with a leopard pattern"    -> SOT a t - shirt with a leopard pattern EOT       (leopard: 7)
"""
from __future__ import annotations

import pytest
import torch

from hrv_diffusion.core.tokenizer import clip_tokenizer
from hrv_diffusion.core.tokens import refinement_mapper, word_swap_mapper, word_token_positions

T = 77
POLKA = "a T-shirt with a polka-dot pattern"
LEOPARD = "a T-shirt with a leopard pattern"


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer()


def expected(entries: dict[tuple[int, int], float]) -> torch.Tensor:
    m = torch.zeros(T, T)
    for (i, j), value in entries.items():
        m[i, j] = value
    return m


def test_token_positions_of_multi_piece_words(tok):
    assert word_token_positions(tok, POLKA, "polka-dot") == [7, 8, 9]
    assert word_token_positions(tok, LEOPARD, "leopard") == [7]
    assert word_token_positions(tok, "a blue car", "red") == []


def test_equal_token_counts_give_the_identity(tok):
    """One-token swap: every position maps to itself, including the padding (the tail rule M[j, j])."""
    assert torch.equal(word_swap_mapper(tok, "a blue car", "a red car"), torch.eye(T))
    assert torch.equal(word_swap_mapper(tok, "a blue car", "a red car", tail="aligned"), torch.eye(T))


def test_three_pieces_to_one_reference_tail(tok):
    """polka-dot (7, 8, 9) -> leopard (7): all three source pieces feed target 7 with weight 1/|T| = 1; then the
    reference's tail sets M[j, j] from j = 8 on, so target 'pattern' (8) reads source 8 (the '-' of polka-dot).
    The loop stops when the source index i (two ahead of j) reaches 77: j = 75 and 76 map from nothing."""
    entries = {(i, i): 1.0 for i in range(7)}
    entries.update({(7, 7): 1.0, (8, 7): 1.0, (9, 7): 1.0})
    entries.update({(j, j): 1.0 for j in range(8, T - 2)})
    assert torch.equal(word_swap_mapper(tok, POLKA, LEOPARD), expected(entries))


def test_three_pieces_to_one_aligned_tail(tok):
    """The aligned tail maps source i to target j after the swap: 'pattern' 10 -> 8, EOT 11 -> 9, ..."""
    entries = {(i, i): 1.0 for i in range(7)}
    entries.update({(7, 7): 1.0, (8, 7): 1.0, (9, 7): 1.0})
    entries.update({(i, i - 2): 1.0 for i in range(10, T)})
    assert torch.equal(word_swap_mapper(tok, POLKA, LEOPARD, tail="aligned"), expected(entries))


def test_one_piece_to_three(tok):
    """leopard (7) -> polka-dot (7, 8, 9): the source piece spreads 1/3 to each target piece; the reference tail
    then continues at j = 10 with M[10, 10] (source 10 is padding past 'pattern' 8 and EOT 9)."""
    entries = {(i, i): 1.0 for i in range(7)}
    entries.update({(7, 7): 1 / 3, (7, 8): 1 / 3, (7, 9): 1 / 3})
    entries.update({(j, j): 1.0 for j in range(10, T)})
    torch.testing.assert_close(word_swap_mapper(tok, LEOPARD, POLKA), expected(entries), atol=0, rtol=0)


def test_word_swap_needs_equal_word_counts(tok):
    with pytest.raises(ValueError, match="same number of words"):
        word_swap_mapper(tok, "a blue car", "a big red car")


def test_refinement_of_an_added_word(tok):
    """'a red car' -> 'a red sports car': target 'sports' (3) has no source token (alpha 0); 'car' (4) and EOT (5)
    read source 3 and 4; past the target prompt (6...) positions map to themselves with alpha 1."""
    mapper, alphas = refinement_mapper(tok, "a red car", "a red sports car")
    assert mapper[:6].tolist() == [0, 1, 2, -1, 3, 4]
    assert torch.equal(mapper[6:], torch.arange(6, T))
    assert alphas[:6].tolist() == [1, 1, 1, 0, 1, 1] and bool((alphas[6:] == 1).all())


def test_refinement_of_a_swapped_word_leaves_it_unmapped(tok):
    """A same-length swap aligned globally (mismatch -1, gaps 0): the new word gets no source token."""
    mapper, alphas = refinement_mapper(tok, "a blue car", "a red car")
    assert mapper[:5].tolist() == [0, 1, -1, 3, 4]
    assert alphas[:5].tolist() == [1, 1, 0, 1, 1]
