"""Where the ordered weakening's head order comes from: an HRV (the paper's, or a file built here) or the head_roles
CSVs of ``extract_head_relevance_vectors.py`` (the paper's exact tie order).

``resolve_heads`` finds the source and checks it before the model loads; its ``HeadSource`` says what goes into the
prompt folders' manifests (kind, file, fingerprint) and, once the model's head layout is known, ranks the heads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hrv_diffusion.apps.weakening import HeadRolesHeads, HrvHeads, file_fingerprint
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.files import OutputNames


@dataclass(frozen=True)
class HrvFolder:
    """The HRV files of one model and concept set in ``path`` (``--final_result``), under their published names."""

    path: Path
    epochs: int
    description: str  # the concept set's name in the file names
    model_version: str

    def names(self, prompt_type: str) -> OutputNames:
        return OutputNames(last_epoch=self.epochs, negative_prompt=False, prompt=prompt_type,
                           description=self.description, model_version=self.model_version)


def find_prompt_type(folder: HrvFolder, requested: str | None, head_roles: bool) -> str:
    """The prompt-list name of the HRV files in the folder: ``requested`` if given, else ``merged`` if present, else
    the only one present."""
    if requested is not None:
        return requested
    probe = folder.names("PROMPT")
    wanted = probe.head_roles("top", 1).replace("_top_1_", "_top_K_") if head_roles else probe.category_vectors()
    pattern = re.compile(re.escape(wanted).replace("PROMPT", "(.+)").replace("_top_K_", "_top_[0-9]+_") + "$")
    final = folder.path
    found = sorted({m.group(1) for p in (final.iterdir() if final.is_dir() else ()) if (m := pattern.match(p.name))})
    what = "head_roles" if head_roles else "HRV"
    if "merged" in found:
        return "merged"
    if len(found) == 1:
        print(f"using the {what} of prompt list {found[0]!r} in {final} (no 'merged' one)")
        return found[0]
    merged = folder.names("merged")
    looked = merged.head_roles("top", 1) if head_roles else merged.category_vectors()
    if not found:
        raise UserError(f"no {what} file {final / looked}, nor one of another prompt list: make it with "
                        "extract_head_relevance_vectors.py, or pass --final_result, --prompt_type or --hrv")
    raise UserError(f"{final} has {what} files of prompt lists {', '.join(found)} but none of 'merged': choose one "
                    "with --prompt_type")


@dataclass(frozen=True)
class HeadSource:
    """A checked source of head order: ``kind`` "hrv" (``hrv`` is what ``load_hrv`` reads) or "head_roles" (the
    files ``roles`` names in the folder ``file``); ``fingerprint`` identifies the files' bytes."""

    kind: str
    file: str
    fingerprint: str
    hrv: str | None = None
    roles: OutputNames | None = None

    def ranked(self, concept: str, concept_names, model_version: str, layout):
        """``ranked(order, k)``: the k global head indices of ``concept`` to weaken, in ``layout``'s head order."""
        if self.kind == "head_roles":
            folder, names = Path(self.file), self.roles
            return HeadRolesHeads(lambda order, k: folder / names.head_roles(order, k), concept, layout)
        from hrv_diffusion.hrv.vectors import load_hrv

        return HrvHeads(load_hrv(self.hrv, model_version, concept_names, layout).row(concept))


def resolve_heads(hrv: str | None, head_roles: bool, folder: HrvFolder, prompt_type: str | None,
                  concept_names) -> HeadSource:
    """The head source of ``--hrv`` (``paper``, a file, or None: the published name in ``--final_result``) and
    ``--head_roles``, read once now so that a missing or unreadable file fails before the model loads."""
    from hrv_diffusion.hrv.paper import paper_files
    from hrv_diffusion.hrv.vectors import load_hrv

    if hrv == "paper":
        paper = paper_files(folder.model_version)[0]
        if head_roles:  # the paper's head_roles CSVs, beside its HRV
            folder = HrvFolder(paper.parent, folder.epochs, folder.description, folder.model_version)
        else:
            load_hrv("paper", folder.model_version, concept_names)
            return HeadSource("hrv", str(paper), file_fingerprint([paper]), hrv="paper")
    if head_roles:
        names = folder.names(find_prompt_type(folder, prompt_type, head_roles=True))
        files = sorted(folder.path.glob(f"head_roles_ba_epoch_1_to_{names.last_epoch}_*_{names._tail}.csv"))
        return HeadSource("head_roles", str(folder.path), file_fingerprint(files), roles=names)
    if hrv is None:
        hrv = folder.path / folder.names(find_prompt_type(folder, prompt_type, False)).category_vectors()
    path = Path(hrv)
    load_hrv(path, folder.model_version, concept_names)
    files = [path] if path.is_file() else sorted(p for p in path.glob("category_vectors_*.npy")
                                                  if not p.stem.endswith("per_timesteps"))
    return HeadSource("hrv", str(path), file_fingerprint(files), hrv=str(path))
