"""The paper's published HRVs: the pinned reference commit, where its files are cached, and how they are checked.

The reference repository (``PAPER_REPOSITORY``) at ``PAPER_COMMIT`` holds the ``final_result/`` files whose HRVs
the paper reports. ``paper_dir()`` is the folder they are cached in (``cache_dir()``; override with
``HRV_DIFFUSION_CACHE``) and ``paper_files(model_version)`` the HRV and head index of one model (for the built-in
toy model, the files shipped in the package). Every published file is listed in the manifest shipped in the
package (``data/published_manifest.tsv``) with its size and its git blob id, the sha1 of
``b"blob <size>\\0" + content`` that ``git hash-object`` prints; ``mismatch`` and ``check_paper_file`` compare a
file with it. ``vectors.load_hrv`` (loading) and ``published.fetch_published`` (downloading) both build on this
module.
"""
from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from hrv_diffusion.errors import UserError

# The reference repository (SNU-DRL/HRV) at the commit whose results the paper's HRVs are.
PAPER_REPOSITORY = "SNU-DRL/HRV"
PAPER_COMMIT = "414122f1ddc0005fcca20d02575a019ebe7c7310"
PAPER_STEM = "epoch_1_to_1_neg_prompt_False_merged_340_final_text_descriptions_{model}"
PAPER_MODELS = ("sd_v1_4", "sd_xl_base_1_0")
TOY_HRV_DIR = Path(__file__).resolve().parents[1] / "data" / "toy_hrv"
TOY_STEM = "epoch_1_to_1_neg_prompt_False_toy_toy_concepts_toy"
# The toy models' shipped HRVs (256 toy captions each; docs/toy.md): the toy UNet's and the toy DiT's.
TOY_VERSIONS = ("toy", "toy_dit")

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "published_manifest.tsv"
BROWSE_URL = f"https://github.com/{PAPER_REPOSITORY}/tree/{PAPER_COMMIT}/final_result"
KINDS = ("hrv", "per_timesteps", "ranking_list", "head_roles", "output_ba")
CHUNK = 1 << 16  # bytes read or written at a time


def cache_dir() -> Path:
    """``$HRV_DIFFUSION_CACHE``, else ``$XDG_CACHE_HOME/hrv-diffusion``, else ``~/.cache/hrv-diffusion``."""
    if os.environ.get("HRV_DIFFUSION_CACHE"):
        return Path(os.environ["HRV_DIFFUSION_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "hrv-diffusion"


def paper_dir() -> Path:
    """Where the paper's result files are kept: ``cache_dir()/published/<commit>/final_result``."""
    return cache_dir() / "published" / PAPER_COMMIT / "final_result"


def paper_files(model_version: str) -> tuple[Path, Path]:
    """(category_vectors, head_index) paths of the paper's HRV for ``sd_v1_4`` / ``sd_xl_base_1_0``, or of the toy
    models' shipped ones (``toy``, ``toy_dit``)."""
    if model_version in TOY_VERSIONS:
        stem = TOY_STEM.removesuffix("toy") + model_version
        return (TOY_HRV_DIR / f"category_vectors_{stem}.npy", TOY_HRV_DIR / f"head_index_{stem}.npy")
    if model_version not in PAPER_MODELS:
        raise UserError(f"the paper published HRVs for SD v1.4 and SDXL base 1.0 only, not for {model_version!r}: "
                        "build HRVs for this model (head_relevance_calculation.py, extract_head_relevance_vectors.py) "
                        "and pass their category_vectors .npy with --hrv")
    stem = PAPER_STEM.format(model=model_version)
    folder = paper_dir()
    return folder / f"category_vectors_{stem}.npy", folder / f"head_index_{stem}.npy"


@dataclass(frozen=True)
class PublishedFile:
    """One row of the manifest."""

    model: str  # sd_v1_4 | sd_xl_base_1_0
    kind: str  # one of KINDS
    size: int | None  # bytes; None = not recorded (checked by the blob id alone)
    blob: str  # git blob id, 40 hex digits
    path: str  # path in the reference repository, e.g. final_result/category_vectors_....npy

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def read_manifest(path: str | os.PathLike = MANIFEST) -> list[PublishedFile]:
    """The manifest's rows (tab-separated: model, kind, size, git_blob, path; ``#`` lines are comments)."""
    path = Path(path)
    rows = [line.rstrip("\n").split("\t") for line in path.read_text(encoding="utf-8").splitlines(keepends=True)
            if line.strip() and not line.startswith("#")]
    if not rows or rows[0] != ["model", "kind", "size", "git_blob", "path"]:
        raise ValueError(f"{path}: expected the header 'model, kind, size, git_blob, path' (tab-separated)")
    entries = []
    for number, row in enumerate(rows[1:], start=2):
        if len(row) != 5 or row[1] not in KINDS or len(row[3]) != 40 or not (row[2].isdigit() or row[2] == "-"):
            raise ValueError(f"{path}, data row {number - 1}: not 'model, kind, size|-, 40-hex blob id, path': {row}")
        entries.append(PublishedFile(row[0], row[1], int(row[2]) if row[2] != "-" else None, row[3].lower(), row[4]))
    return entries


class _BlobHasher:
    """The git blob id of a stream of known total size, fed in chunks."""

    def __init__(self, size: int):
        self.sha1 = hashlib.sha1(b"blob %d\0" % size)
        self.size = 0

    def update(self, chunk: bytes):
        self.sha1.update(chunk)
        self.size += len(chunk)


def git_blob_id(data: bytes) -> str:
    """sha1 of ``b"blob <len>\\0" + data``: what ``git hash-object`` prints for a file with these bytes."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_blob_id(path: str | os.PathLike) -> str:
    path = Path(path)
    hasher = _BlobHasher(path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return hasher.sha1.hexdigest()


def mismatch(path: str | os.PathLike, entry: PublishedFile) -> str | None:
    """Why the file at ``path`` is not ``entry``'s published file (size or blob id), or None when it is."""
    size = Path(path).stat().st_size
    if entry.size is not None and size != entry.size:
        return f"{size} bytes, the published file has {entry.size}"
    blob = file_blob_id(path)
    if blob != entry.blob:
        return f"git blob id {blob}, the published file has {entry.blob}"
    return None


def check_paper_file(path: Path, manifest: str | os.PathLike = MANIFEST) -> None:
    """Refuse a cached paper file that is not the published one (``load_hrv("paper")`` calls this)."""
    entry = next((e for e in read_manifest(manifest) if e.name == path.name), None)
    if entry is None:
        return
    problem = mismatch(path, entry)
    if problem:
        raise UserError(f"{path} is not the published file ({problem}): delete it and run `hrv-published`")


def manual_instructions(folder: Path) -> str:
    """What to do without the network, in one sentence (the command names ``--cache_dir`` unless ``folder`` is the
    default); ``--verify_only`` checks the files copied and lists the others as not copied."""
    where = "" if Path(folder) == paper_dir() else f" --cache_dir {shlex.quote(str(folder))}"
    return (f"download the files of {BROWSE_URL} (at least category_vectors_* and head_index_* of your model) on a "
            f"machine with network, put them into {folder}, then run `hrv-published --verify_only{where}` to check "
            "them")


def missing_message(model_version: str, folder: Path) -> str:
    """The error for ``--hrv paper`` when the paper's files are not in the cache."""
    return (f"the paper's HRVs for {model_version} are not downloaded: run `hrv-published` (needs network once), "
            f"or {manual_instructions(folder)}")
