"""Folder names from prompts: adversarial prompts never name a folder outside the output tree."""
from __future__ import annotations

import os
import re

import pytest

from hrv_diffusion.apps.weakening_experiments import EXPERIMENTS, build_prompts
from hrv_diffusion.apps.output_paths import MAX_BYTES, MAX_CHARS, child_dir, safe_folder_name

ADVERSARIAL = ["../../etc", "a/b", "\x00", ".", "..", "", "x" * 500, "é" * 500, "🙂" * 200, "a\\b", "..\\..\\x",
               "/etc/passwd", ".hidden", " ... ", "a\nb\tc\x7f", "..a..", "a/../../b", "\ud800lone surrogate",
               "....//....//", "C:\\Windows", " spaced prompt ", "猫の写真"]


def check_safe(name: str):
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert ".." not in name
    assert all(ord(c) >= 32 and c != "\x7f" for c in name)
    assert len(name) <= MAX_CHARS and len(name.encode("utf-8")) <= MAX_BYTES


@pytest.mark.parametrize("prompt", ADVERSARIAL)
def test_adversarial_prompts_give_safe_names(prompt, tmp_path):
    name = safe_folder_name(prompt)
    check_safe(name)
    assert safe_folder_name(prompt) == name  # deterministic
    folder = child_dir(tmp_path, name)
    assert folder.parent == tmp_path.resolve()
    folder.mkdir()  # the file system accepts it
    assert folder.is_dir()


def test_paper_prompts_are_unchanged():
    for exp in EXPERIMENTS.values():
        for prompt in build_prompts(exp):
            assert safe_folder_name(prompt) == prompt
    assert safe_folder_name("a cubist style painting of a castle") == "a cubist style painting of a castle"


def _hashed(name: str, kept: str) -> bool:
    """``name`` is ``kept`` + '-' + 10 hex digits (a changed prompt keeps a name of its own)."""
    return re.fullmatch(re.escape(kept) + r"-[0-9a-f]{10}", name) is not None


def test_what_is_removed():
    assert _hashed(safe_folder_name("a/b"), "ab")
    assert _hashed(safe_folder_name("../../etc"), "etc")
    assert _hashed(safe_folder_name("a\\b"), "ab")
    assert _hashed(safe_folder_name("a\x00b"), "ab")
    assert _hashed(safe_folder_name(" spaced prompt "), "spaced prompt")
    assert safe_folder_name("猫の写真") == "猫の写真"
    assert safe_folder_name("photo of a T-shirt, 4k") == "photo of a T-shirt, 4k"


def test_long_and_empty_names_stay_distinct():
    a, b = "x" * 500, "x" * 499 + "y"
    assert safe_folder_name(a) != safe_folder_name(b)
    assert len(safe_folder_name(a)) == MAX_CHARS
    assert len({safe_folder_name(p) for p in ["", ".", "..", "\x00"]}) == 4
    assert safe_folder_name("").startswith("prompt-")
    assert safe_folder_name("x" * MAX_CHARS) == "x" * MAX_CHARS  # exactly at the limit: unchanged


def test_not_a_string():
    with pytest.raises(TypeError):
        safe_folder_name(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["..", "../x", "a/../../b", "/etc", "", ".", "a/..", "x\x00"])
def test_child_dir_refuses_escapes(tmp_path, name):
    with pytest.raises(ValueError):
        child_dir(tmp_path / "root", name)


def test_child_dir_accepts_children_and_refuses_symlinks_out(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    assert child_dir(root, "a b") == (root / "a b").resolve()
    assert child_dir(root, "exp_5/a red car") == (root / "exp_5" / "a red car").resolve()
    assert child_dir(str(root), "a/../b") == (root / "b").resolve()  # stays inside: fine
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, root / "link")
    with pytest.raises(ValueError):
        child_dir(root, "link")
    assert not (root / "a b").exists()  # nothing is created


def test_prompts_that_sanitize_alike_get_distinct_folders():
    """Issue 14: 'a/b' and 'ab' (and 'a cat' with a trailing space) used to share one folder of images."""
    groups = [["ab", "a/b", "a\\b", "a\x00b"], ["a red car", "a red car ", " a red car", "a red/car"],
              ["x" * 500, "x" * 499 + "/"]]
    for prompts in groups:
        names = [safe_folder_name(p) for p in prompts]
        assert len(set(names)) == len(prompts), names
    assert safe_folder_name("ab") == "ab" and safe_folder_name("a red car") == "a red car"  # safe prompts unchanged
