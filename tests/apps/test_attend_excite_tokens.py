"""Target tokens of A&E: given indices, words (all BPE pieces), nouns from a tagger, or a clear message."""
from __future__ import annotations

import io

import pytest

from hrv_diffusion.apps.attend_excite_tokens import (TaggerUnavailable, eot_position, format_token_table, noun_words,
                                                     resolve_targets, token_table, word_targets)
from hrv_diffusion.core.tokenizer import clip_tokenizer
from hrv_diffusion.errors import UserError


@pytest.fixture(scope="module")
def tok():
    return clip_tokenizer()


def fake_tagger(words):
    nouns = {"cat", "dog", "vase"}
    return [(w, "NN" if w in nouns else "DT" if w == "a" else "JJ") for w in words]


def test_table_and_eot(tok):
    assert token_table(tok, "a cat and a frog") == [(0, "<|startoftext|>"), (1, "a</w>"), (2, "cat</w>"),
                                                    (3, "and</w>"), (4, "a</w>"), (5, "frog</w>"), (6, "<|endoftext|>")]
    assert eot_position(tok, "a cat and a frog") == 6
    assert eot_position(tok, " ".join(["cat"] * 100)) == 76
    assert "2:cat</w>" in format_token_table(tok, "a cat and a frog")


def test_indices_words_and_pieces(tok):
    assert resolve_targets(tok, "A black cat and a white dog", [3, 7]) == ([[3], [7]], ["cat</w>", "dog</w>"])
    positions, labels = resolve_targets(tok, "a rose-colored vase and a cat", words=["rose-colored", "cat"])
    assert positions == [[2, 3, 4], [8]] and labels == ["rose-colored", "cat"]
    with pytest.raises(UserError, match="not in the prompt"):
        word_targets(tok, "a cat", ["dog"])
    with pytest.raises(UserError, match="not word tokens"):
        resolve_targets(tok, "a cat", [0])


def test_nouns_from_a_tagger(tok):
    assert noun_words("a black cat, and a white dog.", fake_tagger) == ["cat", "dog"]
    positions, labels = resolve_targets(tok, "a black cat and a white dog", tagger=fake_tagger)
    assert positions == [[3], [7]] and labels == ["cat", "dog"]


def unavailable(words):
    raise TaggerUnavailable("nltk is not installed")


def test_no_tagger_lists_tokens_and_never_blocks(tok, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: input() must not be called
    monkeypatch.setattr("builtins.input", lambda *_: pytest.fail("input() called without a terminal"))
    with pytest.raises(UserError, match=r"--token_indices.*1:a</w>  2:cat</w>"):
        resolve_targets(tok, "a cat and a frog", tagger=unavailable)


def test_terminal_asks(tok, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", lambda *_: "2 5")
    assert resolve_targets(tok, "a cat and a frog", tagger=unavailable, interactive=True)[0] == [[2], [5]]
    assert "5:frog</w>" in capsys.readouterr().out


def test_indices_and_words_together_are_refused(tok):
    with pytest.raises(UserError, match="--token_indices and --token_words both name the targets"):
        resolve_targets(tok, "A black cat and a white dog", [3], words=["dog"])


def test_a_target_word_past_the_window_says_so(tok):
    """Issue 20: not "the word is not in the prompt" (it is, but the text encoder never sees it)."""
    prompt = f"a cat {' '.join(['a'] * 80)} and a dog"
    assert word_targets(tok, prompt, ["cat"]) == [[2]]
    with pytest.raises(UserError, match="the target word 'dog' is past the 77-token window of the text encoder"):
        word_targets(tok, prompt, ["cat", "dog"])
    with pytest.raises(UserError, match="'bird' is not in the prompt"):
        word_targets(tok, prompt, ["bird"])
