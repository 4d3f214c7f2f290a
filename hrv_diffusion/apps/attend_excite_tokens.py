"""Which tokens Attend-and-Excite excites: given indices, given words, or the prompt's nouns.

Positions count the start token as 0 (``--token_indices 2 5`` for "a cat and a frog"); a text encoder without a start
token (T5, PixArt's) counts the first word as 0 (``--token_indices 1 4``). The text axis (its length and first
word position) is the pipeline's, ``core/families.text_axis``; the defaults are CLIP's (77 tokens, SOT).
A word given by name
(``--token_words cat frog``) excites all of its BPE pieces, its score being the max over them. Without either,
the prompt's nouns are used when a part-of-speech tagger with its data is installed (``pip install
'hrv-diffusion[nltk]'`` and the ``averaged_perceptron_tagger_eng`` data: nothing is ever downloaded); otherwise the
command prints the tokens with their indices and asks (in a terminal) or exits with a message saying what to pass.
"""
from __future__ import annotations

import sys

from hrv_diffusion.core.families import TextAxis
from hrv_diffusion.core.tokens import word_positions_in_window
from hrv_diffusion.errors import UserError

NOUN_TAGS = ("NN", "NNS", "NNP", "NNPS")
MAX_TOKENS = 77
CLIP_AXIS = TextAxis(MAX_TOKENS, 1, False)


class TaggerUnavailable(RuntimeError):
    """No part-of-speech tagger with its data is installed."""


def token_table(tokenizer, prompt: str, axis: TextAxis = CLIP_AXIS) -> list[tuple[int, str]]:
    """(position, token) of every token of ``prompt``, SOT (if any) and EOT included (diffusers' ``get_indices``)."""
    ids = tokenizer(prompt, truncation=True, max_length=axis.length).input_ids
    return list(enumerate(tokenizer.convert_ids_to_tokens(ids)))


def format_token_table(tokenizer, prompt: str, axis: TextAxis = CLIP_AXIS) -> str:
    return "  ".join(f"{i}:{token}" for i, token in token_table(tokenizer, prompt, axis))


def eot_position(tokenizer, prompt: str, axis: TextAxis = CLIP_AXIS) -> int:
    """Position of the end token of ``prompt`` (76 when the prompt fills CLIP's 77 tokens)."""
    return len(tokenizer(prompt, truncation=True, max_length=axis.length).input_ids) - 1


def word_targets(tokenizer, prompt: str, words, axis: TextAxis = CLIP_AXIS) -> list[list[int]]:
    """For each word, its token positions in ``prompt`` (all BPE pieces; a word that occurs twice: both)."""
    targets = []
    for word in words:
        positions = word_positions_in_window(tokenizer, prompt, word, "the target word", axis.length)
        if not positions:
            raise UserError(f"the word {word!r} is not in the prompt {prompt!r} (words are matched exactly, split at "
                            f"spaces). Its tokens: {format_token_table(tokenizer, prompt, axis)}")
        targets.append(positions)
    return targets


def nltk_tagger():
    """nltk's ``pos_tag`` if nltk and its tagger data are installed (never downloads), else TaggerUnavailable."""
    try:
        import nltk
    except ImportError:
        raise TaggerUnavailable("nltk is not installed (pip install 'hrv-diffusion[nltk]')") from None
    for name in ("taggers/averaged_perceptron_tagger_eng", "taggers/averaged_perceptron_tagger"):
        try:
            nltk.data.find(name)
            return nltk.pos_tag
        except LookupError:
            continue
    raise TaggerUnavailable("nltk's tagger data is not installed (python -m nltk.downloader "
                            "averaged_perceptron_tagger_eng, where there is network)")


def noun_words(prompt: str, tagger=None) -> list[str]:
    """The words of ``prompt`` (split at spaces, punctuation stripped) that ``tagger`` tags as nouns, in order."""
    tagger = tagger or nltk_tagger()
    words = [w.strip(".,;:!?\"'()") for w in prompt.split()]
    words = [w for w in words if w]
    return [word for word, tag in tagger(words) if tag in NOUN_TAGS]


def resolve_targets(tokenizer, prompt: str, token_indices=None, words=None, tagger=None,
                    interactive: bool | None = None, axis: TextAxis = CLIP_AXIS) -> tuple[list[list[int]], list[str]]:
    """(positions per target, a label per target) from indices, words, nouns or (in a terminal) the user.

    ``interactive``: ask on stdin when nothing else gives the targets (default: only if stdin is a terminal);
    ``axis``: the pipeline's text axis (positions 1.. after CLIP's SOT, 0.. for T5)."""
    if token_indices and words:
        raise UserError("--token_indices and --token_words both name the targets: pass one of them")
    table = token_table(tokenizer, prompt, axis)
    listing = format_token_table(tokenizer, prompt, axis)
    if token_indices:
        last = len(table) - 2  # the last word token
        bad = [i for i in token_indices if not axis.first <= int(i) <= last]
        if bad:
            raise UserError(f"--token_indices {bad} are not word tokens of the prompt ({axis.first}..{last}): "
                            f"{listing}")
        return [[int(i)] for i in token_indices], [table[int(i)][1] for i in token_indices]
    if words:
        return word_targets(tokenizer, prompt, words, axis), list(words)
    try:
        nouns = list(dict.fromkeys(noun_words(prompt, tagger)))
    except TaggerUnavailable as error:
        reason = str(error)
    else:
        if nouns:
            return word_targets(tokenizer, prompt, nouns, axis), nouns
        reason = "the tagger found no noun"
    if interactive is None:
        interactive = sys.stdin is not None and sys.stdin.isatty()
    if not interactive:
        raise UserError(f"no target tokens: pass --token_indices (positions below) or --token_words ({reason}). "
                        f"Tokens of {prompt!r}: {listing}")
    print(f"Tokens of {prompt!r}: {listing}")
    answer = input("Indices of the tokens to alter, separated by spaces: ")
    try:
        indices = [int(x) for x in answer.replace(",", " ").split()]
    except ValueError:
        raise UserError(f"not a list of token indices: {answer!r}") from None
    return resolve_targets(tokenizer, prompt, indices, interactive=False, axis=axis)
