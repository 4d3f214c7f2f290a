"""The run harness: folder claims, resume, the batching rule, atomic writes and the run report."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from hrv_diffusion.apps.runs import MANIFEST, OutputTree, RunReport, pack, run_batches
from hrv_diffusion.errors import UserError


def _even(n, size):
    """The rule stated independently: ceil(n / size) batches whose sizes differ by at most one."""
    if n == 0:
        return []
    count = -(-n // size)
    sizes = [n // count + (1 if i >= count - n % count else 0) for i in range(count)]
    return sizes


@pytest.mark.parametrize("n,size", [(87, 32), (10, 4), (1, 16), (16, 16), (17, 16), (5, 1), (100, 7)])
def test_pack_of_single_rows_is_fewest_even_batches(n, size):
    batches = pack([1] * n, size)
    lengths = [b.stop - b.start for b in batches]
    assert sorted(lengths) == sorted(_even(n, size))
    assert [b.start for b in batches] == [sum(lengths[:i]) for i in range(len(lengths))]  # consecutive, complete
    assert sum(lengths) == n


def test_pack_of_groups_never_splits_a_group_and_respects_the_limit():
    sizes = [5, 1, 1, 9, 2, 3, 3, 3]
    batches = pack(sizes, 6)
    covered = [i for b in batches for i in range(b.start, b.stop)]
    assert covered == list(range(len(sizes)))
    for b in batches:
        rows = sum(sizes[b])
        assert rows <= 6 or b.stop - b.start == 1  # the 9-row group runs alone
    # no fewer batches are possible: a greedy first fit uses as many
    greedy, rows = 1, 0
    for s in sizes:
        if rows and rows + s > 6:
            greedy, rows = greedy + 1, 0
        rows += s
    assert len(batches) == greedy


def test_pack_refuses_a_batch_size_below_one():
    with pytest.raises(UserError, match="--batch_size"):
        pack([1, 1], 0)


def test_claim_new_folder_then_same_settings_pass_and_commit_writes_the_manifest(tmp_path):
    tree = OutputTree(tmp_path)
    folder = tree.folder("exp_1", tree.name("a red car"))
    tree.claim(folder, {"steps": 50, "window": (0, 1)})
    assert not (folder / MANIFEST).exists()  # nothing is written before every claim passed
    tree.commit()
    assert json.loads((folder / MANIFEST).read_text()) == {"steps": 50, "window": [0, 1]}
    again = OutputTree(tmp_path)
    again.claim(folder, {"steps": 50, "window": (0, 1)})  # tuples compare equal to the stored lists


def _image(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)


def test_claim_refuses_other_settings_naming_the_key_and_overwrite(tmp_path):
    tree = OutputTree(tmp_path)
    folder = tree.folder("exp_1", "p")
    tree.claim(folder, {"steps": 50, "method": {"factor": 2.0}})
    tree.commit()
    _image(folder / "1.png")
    with pytest.raises(UserError) as error:
        OutputTree(tmp_path).claim(folder, {"steps": 50, "method": {"factor": 3.0}})
    message = str(error.value)
    assert "method.factor=2.0" in message and "method.factor=3.0" in message and "--overwrite" in message


def test_a_manifest_without_images_is_no_conflict(tmp_path):
    """A run that stopped before its first image (a bad setting found late) leaves nothing to protect."""
    tree = OutputTree(tmp_path)
    folder = tree.folder("p")
    tree.claim(folder, {"steps": 50})
    tree.commit()
    again = OutputTree(tmp_path)
    again.claim(folder, {"steps": 20})
    again.commit()
    assert json.loads((folder / MANIFEST).read_text()) == {"steps": 20}


def test_ignored_keys_do_not_conflict(tmp_path):
    tree = OutputTree(tmp_path, ignore=("version",))
    folder = tree.folder("p")
    tree.claim(folder, {"steps": 50, "version": "0.1"})
    tree.commit()
    OutputTree(tmp_path, ignore=("version",)).claim(folder, {"steps": 50, "version": "0.2"})


def test_images_without_a_manifest_are_refused(tmp_path):
    folder = tmp_path / "p"
    folder.mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "1.png")
    with pytest.raises(UserError, match="without a manifest.json"):
        OutputTree(tmp_path).claim(folder, {"steps": 50})


def test_overwrite_empties_a_folder_of_other_settings_and_keeps_other_files(tmp_path):
    tree = OutputTree(tmp_path)
    folder = tree.folder("p")
    tree.claim(folder, {"steps": 50})
    tree.commit()
    (folder / "sub").mkdir()
    (folder / "sub" / "1.png").write_bytes(b"old")
    (folder / "1.json").write_text("{}")
    (folder / "notes.txt").write_text("mine")
    tree = OutputTree(tmp_path, overwrite=True)
    tree.claim(folder, {"steps": 20})
    assert tree.missing(folder / "sub" / "1.png")  # regenerated under --overwrite
    tree.commit()
    assert not (folder / "sub" / "1.png").exists() and not (folder / "1.json").exists()
    assert (folder / "notes.txt").read_text() == "mine"
    assert json.loads((folder / MANIFEST).read_text()) == {"steps": 20}


def test_missing_is_resume(tmp_path):
    tree = OutputTree(tmp_path)
    (tmp_path / "a.png").write_bytes(b"x")
    assert not tree.missing(tmp_path / "a.png") and tree.missing(tmp_path / "b.png")


@pytest.mark.parametrize("name", ["../escape", "a/../../b", "/abs"])
def test_folders_never_leave_the_root(tmp_path, name):
    with pytest.raises(ValueError):
        OutputTree(tmp_path / "out").folder(name)


def test_prompt_names_are_sanitized(tmp_path):
    tree = OutputTree(tmp_path)
    folder = tree.folder("exp_1", tree.name("../../etc/passwd"))
    assert folder.parent == (tmp_path / "exp_1").resolve() and "/" not in folder.name and ".." not in folder.name


def test_run_batches_writes_every_file_atomically_and_reports(tmp_path):
    made = []

    def make_batch(items):
        made.append(list(items))
        for i in items:
            yield tmp_path / f"{i}.png", np.full((4, 4, 3), i, np.uint8)
            yield tmp_path / f"{i}.json", {"seed": i}

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

    bar = Bar()
    report = run_batches(list(range(7)), make_batch, batch_size=3, progress=bar)
    assert made == [[0, 1], [2, 3, 4], [5, 6]]  # 7 in 3 batches of even size, in order
    assert report.generated == 7 and report.written == 14 and bar.n == 7
    for i in range(7):
        assert np.asarray(Image.open(tmp_path / f"{i}.png"))[0, 0, 0] == i
        assert json.loads((tmp_path / f"{i}.json").read_text()) == {"seed": i}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]  # no temporary file left
    assert "7 images generated (14 files written)" in RunReport(7, 14, 0).line()


def test_run_batches_keeps_finished_files_when_interrupted(tmp_path):
    def make_batch(items):
        if items[0] >= 2:
            raise KeyboardInterrupt
        return [(tmp_path / f"{i}.png", np.zeros((2, 2, 3), np.uint8)) for i in items]

    with pytest.raises(KeyboardInterrupt):
        run_batches(list(range(6)), make_batch, batch_size=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.png", "1.png"]
