"""The rerun table: every application that writes images, on the toy with the small settings of
tests/fixtures/record_app_images.py, rerun into a finished output folder

- with the same settings: regenerates nothing and rewrites no image (same inode and mtime of every PNG), and its
  report counts 0 images made;
- with one result-changing setting changed (``App.changed``): exits 2 with one ``error:`` line naming ``--overwrite``
  and leaves every image untouched;
- with that setting changed and ``--overwrite``: exits 0, rewrites every image, and the images equal those of a
  fresh run with the new settings in another folder.

Each case works on its own copy of one fresh run per application and settings (made once per module)."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from test_app_images import load_recorder

recorder = load_recorder()
TABLE = [app for app in recorder.APPS if app.changed]
CASES = ("same_settings_change_nothing", "changed_setting_is_refused", "overwrite_regenerates")
NOTHING_MADE = re.compile(r"\b0 (?:[\w-]+ ){0,3}?(?:generated|written)\b")
SOMETHING_MADE = re.compile(r"\b[1-9]\d* (?:[\w-]+ ){0,3}?(?:generated|written)\b")


@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """``fresh_run(app, changed)``: the output root of one fresh run of ``app`` (with ``app.changed`` when
    ``changed``), made on first use."""
    roots: dict[tuple[str, bool], Path] = {}

    def get(app, changed: bool) -> Path:
        if (app.name, changed) not in roots:
            out = tmp_path_factory.mktemp(f"{app.name}_{'changed' if changed else 'recorded'}") / app.name
            done = recorder.run_app(app, out, *(app.changed if changed else ()))
            assert done.returncode == 0, done.stderr
            roots[app.name, changed] = out
        return roots[app.name, changed]

    return get


def file_states(root: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime in ns) of every PNG under ``root``, by relative path."""
    return {p.relative_to(root).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*.png"))}


def touched(before: dict, after: dict) -> list[str]:
    """The PNGs written, replaced or removed between two ``file_states``."""
    return sorted(path for path in before.keys() | after.keys() if before.get(path) != after.get(path))


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("app", TABLE, ids=[app.name for app in TABLE])
def test_rerun(app, case, fresh_run, tmp_path):
    root = tmp_path / app.name
    shutil.copytree(fresh_run(app, False), root)
    before, hashes_before = file_states(root), recorder.png_hashes(root)
    assert before, "the fresh run wrote no image"
    if case == "same_settings_change_nothing":
        done = recorder.run_app(app, root)
        assert done.returncode == 0, done.stderr
        rewritten = touched(before, file_states(root))
        assert not rewritten, f"a rerun with the same settings rewrote {rewritten}"
        assert NOTHING_MADE.search(done.stdout) and not SOMETHING_MADE.search(done.stdout), done.stdout
    elif case == "changed_setting_is_refused":
        done = recorder.run_app(app, root, *app.changed)
        errors = error_lines(done.stderr)
        assert done.returncode == 2, f"exit {done.returncode} after {' '.join(app.changed)}; stdout: {done.stdout}"
        assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
        assert "--overwrite" in errors[0], errors[0]
        assert not touched(before, file_states(root)) and recorder.png_hashes(root) == hashes_before
    else:
        done = recorder.run_app(app, root, *app.changed, "--overwrite")
        assert done.returncode == 0, done.stderr
        after = file_states(root)
        kept = sorted(path for path in before if after.get(path) == before[path])
        assert not kept, f"--overwrite kept {len(kept)} of {len(before)} images: {kept}"
        expected = recorder.png_hashes(fresh_run(app, True))
        assert expected != hashes_before, f"{' '.join(app.changed)} changes no image: not a result-changing setting"
        assert recorder.png_hashes(root) == expected
