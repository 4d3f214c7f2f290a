"""The paper's HRVs, one command away: fetch the published result files and check them byte for byte.

``fetch_published()`` (console script ``hrv-published``) downloads the ``final_result/`` files of the reference
repository (SNU-DRL/HRV) at the pinned commit into ``paper.paper_dir()``, the folder ``load_hrv("paper", ...)``
reads. Every file is checked against the manifest shipped in the package (``paper.read_manifest``): its size and
its git blob id, the sha1 of ``b"blob <size>\\0" + content`` that ``git hash-object`` prints. A file that
does not match is moved aside (NAME.mismatch) and reported; a download goes to a temporary file that replaces the
target only once it matched, so the folder never holds a half-written or unchecked file. Files already there and
matching are kept (a second run downloads nothing). Then the project's tidy CSV (one row per concept and head) is
written beside the HRVs of each model.

Offline, the files can be put into the folder by hand (``manual_instructions``); ``hrv-published --verify_only``
then checks those there without the network and lists the others as not copied.
"""
from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.paper import (
    BROWSE_URL, CHUNK, KINDS, MANIFEST, PAPER_COMMIT, PAPER_MODELS, PAPER_REPOSITORY, PublishedFile,
    manual_instructions, mismatch, paper_dir, read_manifest,
)
from hrv_diffusion.io import atomic_output

BASE_URL = f"https://raw.githubusercontent.com/{PAPER_REPOSITORY}/{PAPER_COMMIT}"
BASE_URL_ENV = "HRV_DIFFUSION_PUBLISHED_URL"  # e.g. a mirror, or a local server in tests
DEFAULT_KINDS = ("hrv", "per_timesteps", "ranking_list", "head_roles")  # output_ba: large, used by nothing here
PAPER_DESCRIPTION = "340_final_text_descriptions"


def select(entries, models=PAPER_MODELS, kinds=DEFAULT_KINDS) -> list[PublishedFile]:
    """The entries of the given models and kinds, in manifest order."""
    for kind in kinds:
        if kind not in KINDS:
            raise UserError(f"unknown kind {kind!r}; the kinds are: {', '.join(KINDS)}")
    for model in models:
        if model not in PAPER_MODELS:
            raise UserError(f"the paper published files for {', '.join(PAPER_MODELS)} only, not {model!r}")
    return [e for e in entries if e.model in models and e.kind in kinds]


@dataclass
class FetchReport:
    folder: Path
    downloaded: list[str] = field(default_factory=list)
    verified: list[str] = field(default_factory=list)  # already present and matching
    tidy: list[Path] = field(default_factory=list)
    not_copied: list[str] = field(default_factory=list)  # --verify_only: not in the folder, so not checked
    moved_aside: list[str] = field(default_factory=list)  # NAME.mismatch: files there that did not match


def _url(base_url: str, entry: PublishedFile) -> str:
    return f"{base_url.rstrip('/')}/{urllib.parse.quote(entry.path)}"


def _download(url: str, target: Path, entry: PublishedFile, timeout: float) -> None:
    """Download ``url`` into ``target`` atomically; raise UserError (after deleting it) if it is not ``entry``."""
    with atomic_output(target) as temp:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(temp, "wb") as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
        problem = mismatch(temp, entry)
        if problem:  # the temporary file is removed by atomic_output; nothing replaces the target
            raise UserError(f"{entry.name} from {url} does not match the manifest ({problem}): deleted it; "
                            "the server may be serving other content, try again or check --base_url")


def move_aside(path: Path) -> Path:
    """Move a file that is not the published one to ``NAME.mismatch`` (replacing an older one): a hand-copied file
    is kept for the user to inspect, and no longer read as the published file."""
    aside = path.with_name(path.name + ".mismatch")
    os.replace(path, aside)
    return aside


def _check_present(target: Path, entry: PublishedFile, report: FetchReport) -> str | None:
    """Check a file that is in the folder: a match is counted as verified (None); one that does not match is moved
    aside (``move_aside``), and what was wrong returned."""
    problem = mismatch(target, entry)
    if problem is None:
        report.verified.append(entry.name)
        return None
    report.moved_aside.append(move_aside(target).name)
    return f"{entry.name} ({problem}; moved aside to {report.moved_aside[-1]})"


def _failure(entries, unreachable, bad, base_url: str, folder: Path) -> str:
    """The one error of a fetch that left files missing (``unreachable``) or not matching (``bad``)."""
    parts = [f"{len(unreachable)} of {len(entries)} published files missing"] if unreachable else []
    if unreachable:
        parts.append(f"could not be fetched from {base_url}: {', '.join(unreachable[:3])}"
                     f"{' ...' if len(unreachable) > 3 else ''}")
    if bad:
        parts.append(f"not matching the manifest: {'; '.join(bad)}")
    parts.append(f"to work offline, {manual_instructions(folder)}")
    return "; ".join(parts)


def _verify_only(folder: Path, entries, report: FetchReport, models) -> FetchReport:
    """``--verify_only``: check the files that are in ``folder``; those not there are reported as not copied
    (``report.not_copied``), which is no error unless none is there. A file that does not match fails the run."""
    bad = []
    for entry in entries:
        if (folder / entry.name).is_file():
            problem = _check_present(folder / entry.name, entry, report)
            bad += [problem] if problem else []
        else:
            report.not_copied.append(entry.name)
    if bad:
        raise UserError(f"not the published files: {'; '.join(bad)}; copy them again from {BROWSE_URL} (at the "
                        "same path), then run the same command")
    if not report.verified:
        raise UserError(f"none of the {len(entries)} published files asked for is in {folder}: "
                        f"{manual_instructions(folder)}")
    report.tidy = write_tidy_files(folder, models)
    return report


def fetch_published(folder: str | os.PathLike | None = None, *, models=PAPER_MODELS, kinds=DEFAULT_KINDS,
                    base_url: str | None = None, manifest: str | os.PathLike = MANIFEST, verify_only: bool = False,
                    timeout: float = 60.0, progress: bool = True) -> FetchReport:
    """Fetch (or with ``verify_only`` only check) the published files into ``folder`` (default ``paper_dir()``).

    Raises one UserError naming every file that is missing or does not match; files that did match stay, files
    that do not are moved aside to ``NAME.mismatch``. With ``verify_only``, files not in the folder are listed in
    ``report.not_copied`` (no error, unless none of them is there).
    """
    from tqdm.auto import tqdm

    folder = Path(folder) if folder is not None else paper_dir()
    base_url = base_url or os.environ.get(BASE_URL_ENV) or BASE_URL
    entries = select(read_manifest(manifest), models, kinds)
    report = FetchReport(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if verify_only:
        return _verify_only(folder, entries, report, models)
    bad, unreachable = [], []
    for entry in tqdm(entries, desc="published files", unit="file", disable=not progress):
        target = folder / entry.name
        if target.is_file() and _check_present(target, entry, report) is None:
            continue
        url = _url(base_url, entry)
        try:
            _download(url, target, entry, timeout)
        except UserError as error:
            bad.append(str(error))
        except urllib.error.HTTPError as error:  # the server answered, without this file
            unreachable.append(f"{entry.name} (HTTP {error.code})")
        except (urllib.error.URLError, OSError) as error:  # no network, or the server is not there: stop
            reason = getattr(error, "reason", error)
            have = "" if report.verified or report.downloaded else "nothing is cached; "
            raise UserError(f"cannot reach {base_url} ({reason}); {have}to work offline, "
                            f"{manual_instructions(folder)}") from None
        else:
            report.downloaded.append(entry.name)
    report.tidy = write_tidy_files(folder, models)
    if unreachable or bad:
        raise UserError(_failure(entries, unreachable, bad, base_url, folder))
    return report


def write_tidy_files(folder: Path, models=PAPER_MODELS) -> list[Path]:
    """The tidy CSV (``files.write_tidy_csv``) of each model whose HRV and head index are in ``folder``."""
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.files import OutputNames, read_hrv, write_tidy_csv

    written = []
    names = read_concept_set(resolve_description(PAPER_DESCRIPTION)).names
    for model in models:
        out = OutputNames(1, False, "merged", PAPER_DESCRIPTION, model)
        vectors, index = folder / out.category_vectors(), folder / out.head_index()
        if not (vectors.is_file() and index.is_file()):
            continue
        values, labels = read_hrv(vectors, index)
        if values.shape[0] != len(names):
            raise UserError(f"{vectors} has {values.shape[0]} concepts, the paper's concept set {len(names)}")
        written.append(write_tidy_csv(folder / out.tidy(), values, labels, names))
    return written

