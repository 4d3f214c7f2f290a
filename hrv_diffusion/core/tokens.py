"""Token utilities: where a word sits among a prompt's tokens, and Prompt-to-Prompt's token alignments.

Positions count the start token as 0, so the first word's first token is 1 (the convention of the reference's
``get_word_inds`` and of ``--token_indices``); a tokenizer without a start token (T5, PixArt's) starts at 0. A word split by the BPE into several pieces ("rose-colored" ->
rose, -, colored) has all of its positions.

- ``word_token_positions(tokenizer, prompt, word)``: every position of ``word`` (one word, several words, or a
  word index) among the whitespace-separated words of ``prompt``.
- ``word_positions_in_window(tokenizer, prompt, word, label, window)``: those positions that the text encoder sees;
  a word found only past the window is one UserError saying so (every application that takes a word of a prompt
  uses it). The window is the pipeline's text length, start and end tokens included (``families.text_axis(pipe)
  .length``: CLIP 77, PixArt-α 120, Σ 300); without one, ``tokenizer.model_max_length`` (77 for CLIP; not the
  pipeline's length for T5, whose tokenizer says 512), so callers that have the pipeline pass its length.
- ``word_swap_mapper(tokenizer, source, target)``: P2P's replacement mapper (77 x 77) for prompts of equal
  word counts: swapped words map token to token when their token counts agree, else every source piece maps to
  every target piece with weight 1/|target pieces|. The reference's tail rule (``M[j, j]``, not ``M[i, j]``,
  after the last swapped word) is kept: after a swap of unequal token counts the tail is misaligned, as there.
- ``refinement_mapper(tokenizer, source, target)``: P2P's refinement alignment for prompts that differ by added
  words: a global alignment of the token ids (gap 0, match 1, mismatch -1), giving for every target position
  its source position and whether it has one.
"""
from __future__ import annotations

import numpy as np
import torch

from hrv_diffusion.errors import UserError

MAX_TOKENS = 77


def _has_start_token(tokenizer, ids: list[int]) -> bool:
    """Whether the tokenizer put a start token first (CLIP's SOT; T5 has none)."""
    start = getattr(tokenizer, "bos_token_id", None)
    return start is not None and bool(ids) and ids[0] == start


def _pieces(tokenizer, text: str) -> tuple[list[str], int]:
    """Each token of ``text`` decoded on its own, without start and end tokens, and the position of the first
    (1 after a start token, 0 without one)."""
    ids = tokenizer.encode(text)
    first = 1 if _has_start_token(tokenizer, ids) else 0
    return [tokenizer.decode([t]).strip("#") for t in ids[first:-1]], first


def word_token_positions(tokenizer, text: str, word: str | int) -> list[int]:
    """Token positions (1-based after SOT; 0-based without a start token) of ``word`` in ``text``: every occurrence of a word or of a run of
    words (exact, case-sensitive match on whitespace-separated words: runs of spaces count as one, as in the
    tokenizer), or the word at index ``word`` if an int.
    Tokens are matched to words by their decoded lengths, as Prompt-to-Prompt does."""
    words = text.split()
    if isinstance(word, (int, np.integer)):
        positions = {int(word)}
    else:
        target = word.split()
        starts = [i for i in range(len(words) - len(target) + 1) if words[i : i + len(target)] == target]
        positions = {i + j for i in starts for j in range(len(target))}
    out, ptr, length = [], 0, 0
    pieces, first = _pieces(tokenizer, text)
    for i, piece in enumerate(pieces):
        length += len(piece)
        if ptr in positions:
            out.append(i + first)
        if ptr < len(words) and length >= len(words[ptr]):
            ptr, length = ptr + 1, 0
    return out


def token_window(tokenizer, window: int | None = None) -> int:
    """The text encoder's window: ``window`` (the pipeline's text length) when given, else
    ``tokenizer.model_max_length`` (77 for CLIP), else ``MAX_TOKENS``."""
    if window is not None:
        return int(window)
    limit = getattr(tokenizer, "model_max_length", None)
    return int(limit) if isinstance(limit, int) and 2 < limit < 10 ** 6 else MAX_TOKENS


def past_window_message(tokenizer, prompt: str, word, label: str = "the word", window: int | None = None) -> str:
    """The error for a word of ``prompt`` (a word, or a word index) that lies past the text encoder's window
    (``token_window(tokenizer, window)``): the encoder truncates the prompt there, so the word has no effect.
    ``label`` names it (e.g. ``--target_token``)."""
    limit = token_window(tokenizer, window)
    ids = tokenizer.encode(prompt)
    seen = limit - 1 - (1 if _has_start_token(tokenizer, ids) else 0)  # word tokens before the end token
    shown_word = prompt.split()[word] if isinstance(word, (int, np.integer)) else word
    shown = prompt if len(prompt) <= 80 else prompt[:77] + "..."
    ends = "start and end included" if seen == limit - 2 else "end included"
    return (f"{label} {shown_word!r} is past the {limit}-token window of the text encoder: the prompt {shown!r} has "
            f"{len(ids)} tokens ({ends}) and the encoder sees only the first {seen} word tokens, so "
            "the word would have no effect: shorten the prompt so that the word comes earlier")


def word_positions_in_window(tokenizer, text: str, word: str | int, label: str = "the word",
                             window: int | None = None) -> list[int]:
    """``word_token_positions`` inside the text encoder's window of ``token_window(tokenizer, window)`` tokens
    (positions up to window - 2; window - 1 is the end token's place). [] when the word is not in ``text``; a
    UserError (``past_window_message``, naming it by ``label``) when it is, but only past the window."""
    positions = word_token_positions(tokenizer, text, word)
    kept = [p for p in positions if p < token_window(tokenizer, window) - 1]
    if positions and not kept:
        raise UserError(past_window_message(tokenizer, text, word, label, window))
    return kept


MAPPER_TAILS = ("reference", "aligned")


def word_swap_mapper(tokenizer, source: str, target: str, max_len: int = MAX_TOKENS,
                     tail: str = "reference") -> torch.Tensor:
    """(max_len, max_len) float32 M, rows = source positions, columns = target positions: mapped target
    attention = source attention @ M.

    ``tail``: after the last swapped word, "reference" sets ``M[j, j]`` (the reference; misaligned when the last
    swap changed the token count), "aligned" sets ``M[i, j]`` (source token i to its own target position j)."""
    if tail not in MAPPER_TAILS:
        raise ValueError(f"tail must be one of {MAPPER_TAILS}, not {tail!r}")
    source_words, target_words = source.split(), target.split()
    if len(source_words) != len(target_words):
        raise ValueError(f"a word swap needs prompts of the same number of words: {source!r} has "
                         f"{len(source_words)}, {target!r} has {len(target_words)}. Use a refinement edit for "
                         "prompts that differ by added words")
    swapped = [i for i, (a, b) in enumerate(zip(source_words, target_words)) if a != b]
    source_pos = [word_token_positions(tokenizer, source, i) for i in swapped]
    target_pos = [word_token_positions(tokenizer, target, i) for i in swapped]
    mapper = np.zeros((max_len, max_len), dtype=np.float64)
    i = j = done = 0
    while i < max_len and j < max_len:
        if done < len(swapped) and source_pos[done] and source_pos[done][0] == i:
            src, tgt = source_pos[done], target_pos[done]
            if len(src) == len(tgt):
                mapper[src, tgt] = 1
            else:
                for t in tgt:
                    mapper[src, t] = 1 / len(tgt)
            done += 1
            i, j = i + len(src), j + len(tgt)
        elif done < len(swapped):
            mapper[i, j] = 1
            i, j = i + 1, j + 1
        else:
            mapper[j if tail == "reference" else i, j] = 1  # the reference's tail rule is M[j, j]
            i, j = i + 1, j + 1
    return torch.from_numpy(mapper).float()


def _global_alignment(x: list[int], y: list[int], gap: int = 0, match: int = 1, mismatch: int = -1) -> np.ndarray:
    """Needleman-Wunsch traceback (1 = left, 2 = up, 3 = diagonal, 4 = origin); ties prefer left, then up."""
    score = np.zeros((len(x) + 1, len(y) + 1), dtype=np.int64)
    score[0, 1:] = (np.arange(len(y)) + 1) * gap
    score[1:, 0] = (np.arange(len(x)) + 1) * gap
    trace = np.zeros_like(score)
    trace[0, 1:], trace[1:, 0], trace[0, 0] = 1, 2, 4
    for i in range(1, len(x) + 1):
        for j in range(1, len(y) + 1):
            left, up = score[i, j - 1] + gap, score[i - 1, j] + gap
            diagonal = score[i - 1, j - 1] + (match if x[i - 1] == y[j - 1] else mismatch)
            best = max(left, up, diagonal)
            score[i, j] = best
            trace[i, j] = 1 if best == left else 2 if best == up else 3
    return trace


def refinement_mapper(tokenizer, source: str, target: str, max_len: int = MAX_TOKENS):
    """(mapper, alphas), both (max_len,): target position j takes source position ``mapper[j]``; ``alphas[j]``
    is 0 where the target token has no source token (a new word), else 1 (and 1 past the target prompt)."""
    x, y = tokenizer.encode(source), tokenizer.encode(target)
    trace = _global_alignment(x, y)
    pairs, i, j = [], len(x), len(y)  # (target position, source position or -1)
    while i > 0 or j > 0:
        step = trace[i, j]
        if step == 3:
            i, j = i - 1, j - 1
            pairs.append((j, i))
        elif step == 1:
            j -= 1
            pairs.append((j, -1))
        elif step == 2:
            i -= 1
        else:
            break
    pairs.reverse()
    aligned = torch.tensor(pairs, dtype=torch.int64)  # (len(y), 2)
    alphas = torch.ones(max_len)
    alphas[: len(aligned)] = aligned[:, 1].ne(-1).float()
    mapper = torch.zeros(max_len, dtype=torch.int64)
    mapper[: len(aligned)] = aligned[:, 1]
    mapper[len(aligned) :] = len(y) + torch.arange(max_len - len(y))
    return mapper, alphas
