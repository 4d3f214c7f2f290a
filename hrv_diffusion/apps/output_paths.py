"""Folder names made from prompts, and joins that cannot leave their root.

The reference used the raw prompt as a folder name (``hp_outputs/exp_5/a cubist style painting of a castle/...``).
We keep that layout (spaces kept, so the paper's prompts give the same folder names) but sanitize first: a prompt
such as ``../../etc`` or ``a/b`` must never name a folder outside the output tree.
"""
from __future__ import annotations

import hashlib
import os
import unicodedata
from pathlib import Path

MAX_CHARS = 150  # characters of a folder name made from a prompt
MAX_BYTES = 240  # its UTF-8 length: most file systems allow 255 bytes per name
_HASH_CHARS = 10


def _digest(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _fits(name: str, chars: int, size: int) -> bool:
    return len(name) <= chars and len(name.encode("utf-8")) <= size


def safe_folder_name(prompt: str) -> str:
    """A folder name for ``prompt``: the prompt itself when it is already safe (all the paper's prompts are).

    Otherwise: path separators ('/', '\\\\'), control characters (tabs and newlines included), unpaired surrogates
    and every '..' are removed; leading dots and leading/trailing whitespace are stripped. The result never
    contains a separator or NUL, never starts with '.', is never '.' or '..', is never empty and is at most
    ``MAX_CHARS`` characters (and ``MAX_BYTES`` UTF-8 bytes).

    Two different prompts never share a folder: a name that had to be changed (characters removed, or shortened)
    ends in '-' + the first 10 hex digits of the prompt's SHA-1, so ``a/b`` gives ``ab-<hash>`` while ``ab`` keeps
    ``ab``. A prompt with nothing usable left (``''``, ``'..'``, ``'\\x00'``) becomes ``prompt-{sha1 prefix}``.
    """
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, not {type(prompt).__name__}")
    kept = "".join(c for c in prompt if c not in "/\\" and unicodedata.category(c) not in ("Cc", "Cs"))
    while ".." in kept:
        kept = kept.replace("..", "")
    name = kept.strip().lstrip(".").strip()
    if not name:
        return f"prompt-{_digest(prompt)}"
    if name == prompt and _fits(name, MAX_CHARS, MAX_BYTES):
        return name
    suffix = f"-{_digest(prompt)}"
    head = name[: MAX_CHARS - len(suffix)]
    while not _fits(head + suffix, MAX_CHARS, MAX_BYTES):
        head = head[:-1]
    return head.rstrip() + suffix


def child_dir(root: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``root / name`` resolved (symlinks followed), after checking that it lies strictly inside ``root``.

    ``name`` may have several parts (``exp_5/a red car``) but must not be absolute, empty or '.', and must not
    lead out of ``root`` by '..' or a symlink: otherwise ``ValueError``. Nothing is created.
    """
    base = Path(root).resolve()
    name = os.fspath(name)
    if not name or Path(name).is_absolute():
        raise ValueError(f"{name!r} is not a relative folder name inside {base}")
    if "\x00" in name:
        raise ValueError(f"{name!r} contains a NUL character")
    target = (base / name).resolve()
    if target == base or not target.is_relative_to(base):
        raise ValueError(f"{name!r} leads to {target}, which is not inside {base}")
    return target
