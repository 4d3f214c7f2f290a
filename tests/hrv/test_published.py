"""hrv-published: fetching the paper's files from a server on loopback, checking them, resuming, offline errors."""
from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SHARED_REFERENCE
from hrv_diffusion.cli.published import main as published_main
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.paper import MANIFEST, file_blob_id, git_blob_id, paper_dir, paper_files, read_manifest
from hrv_diffusion.hrv.published import fetch_published, select
from hrv_diffusion.hrv.vectors import load_hrv

STEM = "epoch_1_to_1_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4"
CV, HI = f"category_vectors_{STEM}.npy", f"head_index_{STEM}.npy"
ROLES = "head_roles_ba_epoch_1_to_1_top_1_neg_prompt_False_merged_340_final_text_descriptions_sd_v1_4.csv"


def sd14_labels() -> list[str]:
    layers = [("down", 6), ("mid", 1), ("up", 9)]
    return [f"{place}, layer: {i}, head: {h}" for place, n in layers for i in range(n) for h in range(8)]


def npy_bytes(array) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


class Server:
    """A static file server on 127.0.0.1 in a thread; ``requests`` lists the paths asked for."""

    def __init__(self, root: Path):
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def repo(tmp_path):
    """A fake repository (3 SD v1.4 files, fake values) served on loopback, and a manifest for it."""
    root = tmp_path / "served"
    (root / "final_result").mkdir(parents=True)
    values = np.random.default_rng(0).random((34, 128)).astype(np.float32)
    contents = {
        CV: npy_bytes(values),
        HI: npy_bytes(np.array(sd14_labels())),
        ROLES: b"Category,Head position\r\nAnimals,\"['up, layer: 8, head: 3']\"\r\n",
    }
    lines = ["# a test manifest", "model\tkind\tsize\tgit_blob\tpath"]
    for (name, data), kind in zip(contents.items(), ["hrv", "hrv", "head_roles"]):
        (root / "final_result" / name).write_bytes(data)
        size = "-" if kind == "head_roles" else str(len(data))  # one row without a recorded size
        lines.append(f"sd_v1_4\t{kind}\t{size}\t{git_blob_id(data)}\tfinal_result/{name}")
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("\n".join(lines) + "\n")
    server = Server(root)
    yield {"root": root, "manifest": manifest, "url": server.url, "server": server, "values": values,
           "contents": contents, "cache": tmp_path / "cache"}
    server.close()


def fetch(repo, **kwargs):
    kwargs.setdefault("base_url", repo["url"])
    return fetch_published(repo["cache"], models=("sd_v1_4",), kinds=("hrv", "head_roles"),
                           manifest=repo["manifest"], progress=False, **kwargs)


def test_blob_id_is_gits(tmp_path):
    data = b"head relevance\n"
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    if shutil.which("git"):
        expected = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True).stdout.strip()
        assert git_blob_id(data) == expected == file_blob_id(path)
    assert git_blob_id(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_fetch_verifies_writes_tidy_csv_and_skips_what_it_has(repo):
    report = fetch(repo)
    assert sorted(report.downloaded) == sorted(repo["contents"]) and report.verified == []
    for name, data in repo["contents"].items():
        assert (repo["cache"] / name).read_bytes() == data
    assert not list(repo["cache"].glob(".*tmp"))  # no temporary files left
    tidy = pd.read_csv(repo["cache"] / "hrv_merged_340_final_text_descriptions_sd_v1_4.csv")
    assert len(tidy) == 34 * 128 and tidy["value"].to_numpy() == pytest.approx(repo["values"].reshape(-1))
    assert tidy.loc[17 * 128, "concept"] == "Color" and tidy.loc[0, "head"] == "down, layer: 0, head: 0"
    asked = len(repo["server"].requests)
    again = fetch(repo)
    assert again.downloaded == [] and sorted(again.verified) == sorted(repo["contents"])
    assert len(repo["server"].requests) == asked  # nothing downloaded twice


def test_resume_downloads_only_the_missing_file(repo):
    repo["cache"].mkdir()
    (repo["cache"] / CV).write_bytes(repo["contents"][CV])
    report = fetch(repo)
    assert report.verified == [CV] and sorted(report.downloaded) == sorted([HI, ROLES])
    assert not any(CV in path for path in repo["server"].requests)


def test_a_corrupt_local_file_is_replaced(repo):
    repo["cache"].mkdir()
    (repo["cache"] / HI).write_bytes(b"garbage")
    report = fetch(repo)
    assert HI in report.downloaded and (repo["cache"] / HI).read_bytes() == repo["contents"][HI]


def test_a_corrupt_served_file_is_refused_and_deleted(repo):
    served = repo["root"] / "final_result"
    (served / ROLES).write_bytes(repo["contents"][ROLES].replace(b"head: 3", b"head: 4"))  # same size, other bytes
    (served / CV).write_bytes(repo["contents"][CV][:-4])  # truncated
    with pytest.raises(UserError) as error:
        fetch(repo)
    message = str(error.value)
    assert f"{ROLES} from" in message and "git blob id" in message
    assert f"{CV} from" in message and "bytes, the published file has" in message
    assert "hrv-published --verify_only" in message and str(repo["cache"]) in message
    assert sorted(p.name for p in repo["cache"].iterdir()) == [HI]  # the good file stays, bad ones never land


def test_a_file_the_server_lacks_is_named(repo):
    (repo["root"] / "final_result" / ROLES).unlink()
    with pytest.raises(UserError, match=rf"1 of 3 published files missing.*{ROLES} \(HTTP 404\)"):
        fetch(repo)


def test_verify_only_needs_no_network_and_moves_bad_files_aside(repo):
    repo["cache"].mkdir()
    for name, data in repo["contents"].items():
        (repo["cache"] / name).write_bytes(data)
    report = fetch(repo, base_url="http://127.0.0.1:9", verify_only=True)
    assert len(report.verified) == 3 and report.downloaded == [] and report.not_copied == []
    (repo["cache"] / ROLES).write_bytes(b"x")  # a hand-copied file that is not the published one
    with pytest.raises(UserError, match=f"{ROLES} .*moved aside to {ROLES}.mismatch.*copy them again"):
        fetch(repo, verify_only=True)
    assert not (repo["cache"] / ROLES).exists() and (repo["cache"] / f"{ROLES}.mismatch").read_bytes() == b"x"


def test_verify_only_checks_what_was_copied_and_lists_the_rest(repo):
    """The offline advice: copy category_vectors_* and head_index_* only, then --verify_only (issue 20)."""
    repo["cache"].mkdir()
    for name in (CV, HI):
        (repo["cache"] / name).write_bytes(repo["contents"][name])
    report = fetch(repo, base_url="http://127.0.0.1:9", verify_only=True)
    assert sorted(report.verified) == sorted([CV, HI]) and report.not_copied == [ROLES]
    assert [p.name for p in report.tidy] == ["hrv_merged_340_final_text_descriptions_sd_v1_4.csv"]
    (repo["cache"] / CV).unlink()
    (repo["cache"] / HI).unlink()
    with pytest.raises(UserError, match=rf"none of the 3 published files asked for is in {repo['cache']}"):
        fetch(repo, verify_only=True)


def test_the_offline_advice_works_as_written(tmp_path, monkeypatch, capsys):
    """Run the command that the advice names, after doing what it says, with the shipped manifest."""
    import re
    import shlex

    from hrv_diffusion.hrv.paper import manual_instructions

    folder = SHARED_REFERENCE / "final_result"
    if not all((folder / p.name).is_file() for p in paper_files("sd_v1_4")):
        pytest.skip(f"published reference data not found at {folder}")
    for cache in (None, tmp_path / "mine"):  # the default cache, and a --cache_dir
        monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "c"))
        target = cache or paper_dir()
        advice = manual_instructions(target)
        assert "category_vectors_* and head_index_*" in advice and str(target) in advice
        target.mkdir(parents=True)
        for path in paper_files("sd_v1_4"):
            shutil.copy(folder / path.name, target / path.name)
        command = shlex.split(re.search(r"`([^`]*)`", advice).group(1))
        assert command[0] == "hrv-published" and published_main([*command[1:], "--quiet"]) == 0
        out = capsys.readouterr().out
        entries = select(read_manifest(MANIFEST))
        assert f"2 verified in {target}" in out and f"{len(entries) - 2} not copied" in out
        assert (target / "hrv_merged_340_final_text_descriptions_sd_v1_4.csv").is_file()


def test_a_cache_folder_that_is_a_file_is_one_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "c").write_text("a file")
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "c"))
    assert published_main(["--verify_only", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is inside {tmp_path / 'c'}, which is a file: pick another path" in err
    assert "$HRV_DIFFUSION_CACHE" in err


def test_offline_with_nothing_cached_is_one_clear_error(repo, tmp_path, monkeypatch, capsys):
    repo["server"].close()  # nothing listens there any more
    with pytest.raises(UserError, match="cannot reach .*nothing is cached.*hrv-published --verify_only"):
        fetch(repo)
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("HRV_DIFFUSION_PUBLISHED_URL", repo["url"])
    assert published_main(["--quiet", "--models", "sd_v1_4", "--kinds", "hrv"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach") and err.count("\n") == 1
    assert str(paper_dir()) in err and "hrv-published" in err
    with pytest.raises(UserError, match="not downloaded: run `hrv-published`") as error:  # and the applications
        load_hrv("paper", "sd_v1_4", [f"c{i}" for i in range(34)])
    assert str(paper_dir()) in str(error.value)


def test_cli_fills_the_cache_that_load_hrv_reads(repo, monkeypatch, capsys):
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(repo["cache"]))
    assert published_main(["--print_dir"]) == 0
    assert capsys.readouterr().out.strip() == str(paper_dir())
    report = fetch_published(models=("sd_v1_4",), kinds=("hrv",), base_url=repo["url"], manifest=repo["manifest"],
                             progress=False)
    assert report.folder == paper_dir() and paper_files("sd_v1_4")[0].is_file()
    # the fake values are not the paper's: load_hrv("paper") checks the cached files against the shipped manifest
    with pytest.raises(UserError, match="is not the published file.*hrv-published"):
        load_hrv("paper", "sd_v1_4", [f"c{i}" for i in range(34)])


def test_shipped_manifest_lists_what_load_hrv_needs():
    entries = read_manifest(MANIFEST)
    assert len(entries) == 68 and all(e.path.startswith("final_result/") for e in entries)
    for model in ("sd_v1_4", "sd_xl_base_1_0"):
        names = {e.name for e in select(entries, (model,), ("hrv",))}
        assert {p.name for p in paper_files(model)} == names
        assert len(select(entries, (model,), ("head_roles",))) == 28
    with pytest.raises(UserError, match="unknown kind"):
        select(entries, kinds=("pictures",))


def test_shared_reference_files_match_the_shipped_manifest(tmp_path, monkeypatch):
    folder = SHARED_REFERENCE / "final_result"
    if not folder.is_dir():
        pytest.skip(f"published reference data not found at {folder}")
    cache = tmp_path / "cache"
    shutil.copytree(folder, cache)
    entries = {e.name: e for e in read_manifest(MANIFEST)}
    present = [p.name for p in cache.iterdir()]
    assert present and all(name in entries for name in present)
    report = fetch_published(cache, verify_only=True, progress=False)  # the shared copy holds a subset
    assert sorted(report.verified) == sorted(n for n in present if n in {e.name for e in select(entries.values())})
    assert report.not_copied and report.moved_aside == []
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith("hrv_")) == sorted(present)  # none deleted
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "c"))
    paper_dir().mkdir(parents=True)
    for path in paper_files("sd_v1_4"):
        shutil.copy(cache / path.name, path)
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description

    names = read_concept_set(resolve_description("340_final_text_descriptions")).names
    hrv = load_hrv("paper", "sd_v1_4", names)
    assert hrv.values.shape == (34, 128) and hrv.values.sum(1) == pytest.approx(128, rel=1e-4)
