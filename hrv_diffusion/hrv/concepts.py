"""Concept sets: the concepts and their words that head relevance is measured against.

A concept set is read from a description file (``descriptions/NAME.txt`` in the working directory, or one of
the sets built into the package: ``340_final_text_descriptions``, the paper's, and ``toy_concepts``). Three formats are detected:

(a) ours: INI-like blocks, ``[Concept name]`` on its own line, then one word per line::

        # comment lines and blank lines are ignored
        [Animals]
        Dog
        Cat

(b) the published list (``340_final_text_list.csv``): a concept header line, then lines ``N. Word``.
    Only the leading ``N. `` is stripped, so digits inside a word are kept ("1. 3D glasses" -> "3D glasses").
    The reference deletes every digit of the line and loses them ("D glasses"). It also reads the file
    with ``csv.reader``, so a word with a comma would be cut there; we keep the whole line.
(c) the published words-only list (``340_final_text_descriptions.txt``): one word per line and no names.
    Names come from a sibling published list (``X_list.csv`` next to ``X_descriptions.txt``) when there
    is one; otherwise the words are split into equal blocks named ``concept_0``, ``concept_1``, ...

All files are read as UTF-8; a BOM and CRLF line ends are tolerated. Words are compared case-insensitively
with runs of whitespace collapsed, since the CLIP tokenizer lower-cases text: "Dog" and "dog" embed alike.
A word may appear only once in the whole set. The paper's set has no such duplicate, within or across
concepts, so a duplicate is an error everywhere.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hrv_diffusion.errors import UserError

DEFAULT_DESCRIPTION = "340_final_text_descriptions"
BUILTIN_DESCRIPTIONS = Path(__file__).resolve().parents[1] / "data" / "descriptions"  # shipped in the package
SUFFIXES = (".txt", ".csv")

_HEADER = re.compile(r"^\[(.*)\]$")  # ours: [Concept name]
_NUMBERED = re.compile(r"^(\d+)\.\s+(.*\S)$")  # published list: N. Word


class ConceptSetError(UserError):
    """A description file or concept set that cannot be used as it is."""


def _key(word: str) -> str:
    """How words are compared: case-folded, whitespace collapsed (CLIP lower-cases its input)."""
    return " ".join(word.casefold().split())


@dataclass(frozen=True)
class ConceptSet:
    """Concept names and, per concept, its words (concept-major). Validated on creation."""

    names: tuple[str, ...]
    words: tuple[tuple[str, ...], ...]

    def __post_init__(self):
        # Accept lists too; store tuples so the set stays hashable and immutable.
        object.__setattr__(self, "names", tuple(self.names))
        object.__setattr__(self, "words", tuple(tuple(ws) for ws in self.words))
        _validate(self)

    @property
    def num_concepts(self) -> int:
        return len(self.names)

    @property
    def flat_words(self) -> tuple[str, ...]:
        """All words, concept 0's first (the row order of the text embeddings)."""
        return tuple(w for ws in self.words for w in ws)

    @property
    def word_counts(self) -> tuple[int, ...]:
        return tuple(len(ws) for ws in self.words)

    @property
    def concept_of_word(self) -> tuple[int, ...]:
        """Concept index of each flat word."""
        return tuple(c for c, ws in enumerate(self.words) for _ in ws)

    @property
    def word_offsets(self) -> tuple[int, ...]:
        """Index in ``flat_words`` of each concept's first word."""
        offsets, start = [], 0
        for n in self.word_counts:
            offsets.append(start)
            start += n
        return tuple(offsets)

    def fingerprint(self) -> str:
        """Short sha256 of the names and words, stored with derived files to refuse mismatched ones."""
        canonical = json.dumps([[n, list(ws)] for n, ws in zip(self.names, self.words)],
                               ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _validate(cs: ConceptSet) -> None:
    if len(cs.names) != len(cs.words):
        raise ConceptSetError(f"{len(cs.names)} concept names but {len(cs.words)} word lists")
    if not cs.names:
        raise ConceptSetError("the concept set is empty: add at least one [Concept] block with words")
    seen_names: set[str] = set()
    where: dict[str, int] = {}  # word key -> index of the concept it was first seen in
    for c, (name, ws) in enumerate(zip(cs.names, cs.words)):
        if not name.strip() or name != name.strip() or "\n" in name:
            raise ConceptSetError(f"concept name {name!r} must be non-empty, one line, without outer spaces")
        if _key(name) in seen_names:
            raise ConceptSetError(f"concept {name!r} appears twice: give each concept one block")
        seen_names.add(_key(name))
        if not ws:
            raise ConceptSetError(f"concept {name!r} has no words: add words under it or remove its header")
        for w in ws:
            if not isinstance(w, str) or not w.strip() or w != w.strip() or "\n" in w:
                raise ConceptSetError(f"word {w!r} of concept {name!r} must be non-empty text on one line, "
                                      f"without outer spaces")
            first = where.setdefault(_key(w), c)
            if first != c:
                raise ConceptSetError(f"word {w!r} of concept {name!r} is already a word of concept "
                                      f"{cs.names[first]!r}: a word may belong to one concept only")
        if len({_key(w) for w in ws}) != len(ws):
            twice = next(w for i, w in enumerate(ws) if _key(w) in {_key(v) for v in ws[:i]})
            raise ConceptSetError(f"word {twice!r} appears twice in concept {name!r}: remove one")


def check_counts(cs: ConceptSet, num_concepts: int | None = None,
                 num_words_per_concept: int | None = None) -> None:
    """Check the published flags (``--num_concepts 34 --num_words_per_concept 10``); None skips a check."""
    if num_concepts is not None and cs.num_concepts != num_concepts:
        raise ConceptSetError(f"the description has {cs.num_concepts} concepts, not --num_concepts {num_concepts}")
    if num_words_per_concept is not None:
        wrong = [f"{n} ({len(ws)})" for n, ws in zip(cs.names, cs.words) if len(ws) != num_words_per_concept]
        if wrong:
            raise ConceptSetError(f"--num_words_per_concept {num_words_per_concept} does not hold for "
                                  f"{', '.join(wrong)}; fix the file or leave the flag out")


def check_token_lengths(cs: ConceptSet, tokenizer) -> tuple[int, ...]:
    """Token count of each word with SOT and EOT; raise if one exceeds ``tokenizer.model_max_length``."""
    limit = tokenizer.model_max_length
    lengths = tuple(len(tokenizer.encode(w)) for w in cs.flat_words)
    for word, n in zip(cs.flat_words, lengths):
        if n > limit:
            raise ConceptSetError(f"word {word!r} is {n} tokens with SOT and EOT, more than the text encoder's "
                                  f"{limit}: shorten it")
    return lengths


# ----- reading and writing -------------------------------------------------------------------------------


def write_concept_set(path: str | os.PathLike, cs: ConceptSet, comment: str | None = None) -> Path:
    """Write ``cs`` in our format (UTF-8, LF). ``comment`` lines go at the top as ``# ...``."""
    for w in cs.flat_words:
        if w.startswith("#") or _HEADER.match(w):
            raise ConceptSetError(f"word {w!r} would read back as a comment or header; it cannot be written")
    lines = [f"# {c}".rstrip() for c in (comment.splitlines() if comment else [])]
    for name, ws in zip(cs.names, cs.words):
        if lines:
            lines.append("")
        lines += [f"[{name}]", *ws]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_concept_set(path: str | os.PathLike, num_concepts: int | None = None,
                     num_words_per_concept: int | None = None) -> ConceptSet:
    """Read a description file in any of the three formats (module docstring), then ``check_counts``.

    For the words-only format without a sibling list, the counts say how to split the words into concepts.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise ConceptSetError(f"{path}: not UTF-8 text ({error.reason}); save it as UTF-8") from None
    try:
        fmt = detect_format(lines)
        if fmt == "ours":
            cs = _parse_ours(lines)
        elif fmt == "list":
            cs = _parse_list(lines)
        else:
            cs = _parse_words_only(path, lines, num_concepts, num_words_per_concept)
        check_counts(cs, num_concepts, num_words_per_concept)
    except ConceptSetError as error:
        raise ConceptSetError(f"{path}: {error}") from None
    return cs


def detect_format(lines: list[str]) -> str:
    """"ours" if a ``[Name]`` line exists, else "list" if a ``N. Word`` line exists, else "words"."""
    content = [s.strip() for s in lines if s.strip()]
    if any(_HEADER.match(s) for s in content if not s.startswith("#")):
        return "ours"
    if any(_NUMBERED.match(s) for s in content):
        return "list"
    return "words"


def _blocks(rows: list[tuple[int, bool, str]]) -> ConceptSet:
    """rows: (line number, is_header, text) -> ConceptSet, with errors naming the line."""
    names: list[str] = []
    words: list[list[str]] = []
    for number, is_header, text in rows:
        if is_header:
            if names and not words[-1]:
                raise ConceptSetError(f"concept {names[-1]!r} has no words: add words under it or remove it")
            names.append(text)
            words.append([])
        elif not names:
            raise ConceptSetError(f"line {number}: word {text!r} comes before the first concept header")
        else:
            words[-1].append(text)
    return ConceptSet(tuple(names), tuple(tuple(ws) for ws in words))


def _parse_ours(lines: list[str]) -> ConceptSet:
    rows = []
    for number, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        header = _HEADER.match(s)
        if header and not header.group(1).strip():
            raise ConceptSetError(f"line {number}: empty concept name '[]'")
        rows.append((number, True, header.group(1).strip()) if header else (number, False, s))
    return _blocks(rows)


def _parse_list(lines: list[str]) -> ConceptSet:
    rows = []
    for number, line in enumerate(lines, 1):
        s = line.strip()
        if not s:
            continue
        numbered = _NUMBERED.match(s)
        rows.append((number, False, numbered.group(2)) if numbered else (number, True, s))
    return _blocks(rows)


def _reference_mangle(line: str) -> str:
    """What the reference's extraction writes for a list line: digits deleted, then ". " deleted."""
    return re.sub(r"[0-9]", "", line).replace(". ", "").strip()


def sibling_list(path: Path) -> Path | None:
    """The published list a words-only file was made from: ``X_list.csv`` beside ``X_descriptions.txt``."""
    if "_descriptions" not in path.stem:
        return None
    stem = path.stem.replace("_descriptions", "_list")
    for suffix in SUFFIXES:
        candidate = path.with_name(stem + suffix)
        if candidate.is_file() and candidate != path:
            return candidate
    return None


def _parse_words_only(path: Path, lines: list[str], num_concepts: int | None,
                      num_words_per_concept: int | None) -> ConceptSet:
    words = [s.strip() for s in lines if s.strip()]
    if not words:
        raise ConceptSetError("the file has no words")
    sibling = sibling_list(path)
    if sibling is not None:
        named = read_concept_set(sibling)
        full = named.flat_words
        if len(full) != len(words) or any(w != f and w != _reference_mangle(f"1. {f}") for w, f in zip(words, full)):
            raise ConceptSetError(f"its words differ from those of {sibling.name} beside it; regenerate one "
                                  f"from the other or move the list away")
        return named  # the list keeps digits that the words-only file may have lost
    total = len(words)
    if num_concepts is None and num_words_per_concept is None:
        raise ConceptSetError(f"a words-only file ({total} words) has no concept names or blocks: pass "
                              f"num_concepts / num_words_per_concept (the paper: 34 and 10), or use our format")
    if num_concepts is None:
        num_concepts, rest = divmod(total, num_words_per_concept)
    elif num_words_per_concept is None:
        num_words_per_concept, rest = divmod(total, num_concepts)
    else:
        rest = total - num_concepts * num_words_per_concept
    if rest or num_concepts <= 0 or num_words_per_concept <= 0:
        raise ConceptSetError(f"{total} words do not split into {num_concepts} concepts of "
                              f"{num_words_per_concept} words")
    k = num_words_per_concept
    return ConceptSet(tuple(f"concept_{c}" for c in range(num_concepts)),
                      tuple(tuple(words[c * k:(c + 1) * k]) for c in range(num_concepts)))


# ----- finding description files ---------------------------------------------------------------------------


def description_folders() -> list[Path]:
    """Where names are looked up, in order: ./descriptions, then the sets built into the package."""
    folders = [Path.cwd() / "descriptions", BUILTIN_DESCRIPTIONS]
    return [f for i, f in enumerate(folders) if f.resolve() not in [g.resolve() for g in folders[:i]]]


def available_descriptions() -> list[str]:
    return sorted({p.stem for f in description_folders() if f.is_dir() for p in f.iterdir()
                   if p.suffix in SUFFIXES and p.is_file()})


def resolve_description(name_or_path: str | os.PathLike) -> Path:
    """An existing file is used as is; a name is looked up as descriptions/NAME.txt, then NAME.csv,
    in the current directory first, then among the sets built into the package."""
    given = Path(name_or_path)
    if given.is_file():
        return given
    name = str(name_or_path)
    tried = []
    for folder in description_folders():
        names = [name] if given.suffix in SUFFIXES else [name + s for s in SUFFIXES]
        for candidate in (folder / n for n in names):
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
    raise ConceptSetError(f"description {name!r} not found; looked in: {', '.join(tried)}. "
                          f"Available names: {', '.join(available_descriptions()) or 'none'}")


def description_name(path: str | os.PathLike) -> str:
    """The name used in output file names: the file name without .txt/.csv."""
    path = Path(path)
    return path.stem if path.suffix in SUFFIXES else path.name
