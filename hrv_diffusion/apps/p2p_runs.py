"""Editing runs into the published folder layout: plan, skip what exists, batch, write PNGs and manifests.

    {output}/exp_{N}/source/{source prompt}/{seed}.png                       the plain source image
    {output}/exp_{N}/{method}/{source prompt}_to_{target prompt}/{seed}.png  method: original_p2p, Color_0.9, ...
    {output}/exp_{N}/masks/{source prompt}_to_{target prompt}/{seed}.png     the swapped words' region (optional)

Folder names made from prompts go through ``safe_folder_name`` (the paper's prompts keep their names). Every
folder holds a ``manifest.json`` saying what its images were made with (model, dtype, steps, the method's
settings, the HRV's fingerprint). Images that exist are skipped, so a run resumes where it stopped; a folder whose
manifest disagrees with the run stops it with a clear error instead (the reference silently kept stale images when
only the cross window changed), unless ``overwrite``.

A source prompt's image is generated once per seed and shared by every pair and method that starts from it: each
seed is one group ``[source, edits...]`` of a batch, and batches hold many groups.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hrv_diffusion.apps.output_paths import child_dir, safe_folder_name
from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.shards import atomic_output

MANIFEST = "manifest.json"
SOURCE_FOLDER, MASK_FOLDER = "source", "masks"
RESERVED = (SOURCE_FOLDER, MASK_FOLDER)


def method_folder(spec_kind: str, concept: str | None, self_replace_steps, suffix: str = "") -> str:
    """The published method folder names: ``original_p2p``; ``{concept}_{self}`` (P2P-HRV, --use_soft_vector);
    ``all_heads_{self}`` (--replace_all_heads); ``complement_of_{concept}`` / ``{concept}`` (head-list mode)."""
    names = {"original_p2p": "original_p2p", "hrv": f"{concept}_{self_replace_steps}",
             "all_heads": f"all_heads_{self_replace_steps}", "complement": f"complement_of_{concept}",
             "head_list": f"{concept}"}
    return names[spec_kind] + suffix


def pair_folder(source: str, target: str) -> str:
    return safe_folder_name(f"{source}_to_{target}")


@dataclass(frozen=True)
class Pair:
    """A (source, target) prompt pair, the word P2P-HRV restores and the methods to run; ``info`` goes into the
    manifests (e.g. the benchmark set)."""

    source_prompt: str
    target_prompt: str
    target_token: str | None
    specs: tuple[EditSpec, ...]
    info: tuple[tuple[str, str], ...] = ()


@dataclass
class RunSettings:
    """What every image of a run depends on besides its method (written into the manifests)."""

    model_card: str
    model_version: str
    dtype: str
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    decode: str = "truncate"
    self_max_queries: int | None = None
    blend_resolution: int | None = None
    height: int | None = None
    width: int | None = None
    hrv: str | None = None  # where the HRV came from
    hrv_fingerprint: str | None = None

    def source_part(self) -> dict:
        """What a plain source image depends on."""
        keys = ("model_card", "model_version", "dtype", "num_inference_steps", "guidance_scale", "decode", "height",
                "width")
        return {k: getattr(self, k) for k in keys}


class EditLayout:
    """Paths and manifests of one experiment folder ``{output}/exp_{N}``."""

    def __init__(self, output_path, experiment_num, settings: RunSettings, overwrite: bool = False):
        Path(output_path).mkdir(parents=True, exist_ok=True)
        self.exp_dir = child_dir(output_path, f"exp_{experiment_num}")
        self.settings, self.overwrite = settings, overwrite
        self._checked: dict[Path, dict] = {}

    def source_dir(self, source: str) -> Path:
        return child_dir(self.exp_dir, Path(SOURCE_FOLDER) / safe_folder_name(source))

    def edit_dir(self, spec: EditSpec, source: str, target: str) -> Path:
        if spec.name in RESERVED:
            raise UserError(f"a method cannot be named {spec.name!r}: that folder holds the {spec.name} images")
        return child_dir(self.exp_dir, Path(safe_folder_name(spec.name)) / pair_folder(source, target))

    def mask_dir(self, source: str, target: str) -> Path:
        return child_dir(self.exp_dir, Path(MASK_FOLDER) / pair_folder(source, target))

    # -------------------------------------------------------------------------------------- manifests

    def source_manifest(self, source: str) -> dict:
        return {"kind": "source", "source_prompt": source, **self.settings.source_part()}

    def edit_manifest(self, pair: Pair, spec: EditSpec) -> dict:
        s = self.settings
        return {"kind": "edit", "source_prompt": pair.source_prompt, "target_prompt": pair.target_prompt,
                "target_token": pair.target_token, "method": spec.to_dict(), **dict(pair.info), **s.source_part(),
                "self_max_queries": s.self_max_queries, "blend_resolution": s.blend_resolution,
                "hrv": s.hrv if spec.uses_hrv else None,
                "hrv_fingerprint": s.hrv_fingerprint if spec.uses_hrv else None}

    def mask_manifest(self, pair: Pair) -> dict:
        from hrv_diffusion.apps.p2p import MASK_THRESHOLD

        return {"kind": "mask", "source_prompt": pair.source_prompt, "target_prompt": pair.target_prompt,
                "threshold": MASK_THRESHOLD, "blend_resolution": self.settings.blend_resolution,
                **self.settings.source_part()}

    def claim(self, folder: Path, manifest: dict) -> None:
        """Check ``folder`` may receive images made as ``manifest`` says: same manifest, or a new folder."""
        manifest = json.loads(json.dumps(manifest))  # tuples -> lists, as read back
        if folder in self._checked:
            return
        path = folder / MANIFEST
        if not self.overwrite:
            if path.is_file():
                stored = json.loads(path.read_text())
                if stored != manifest:
                    old, new = _flat(stored), _flat(manifest)
                    key = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
                    raise UserError(f"{folder} was made with {key}={old.get(key)!r}, this run has "
                                    f"{new.get(key)!r}: use another --experiment_num or --output_path, or "
                                    "pass --overwrite to regenerate its images")
            elif folder.is_dir() and any(folder.glob("*.png")):
                raise UserError(f"{folder} holds images without a {MANIFEST} (made by another tool or version?): "
                                "use another --experiment_num or --output_path, or pass --overwrite")
        self._checked[folder] = manifest

    def write_manifests(self) -> None:
        for folder, manifest in self._checked.items():
            with atomic_output(folder / MANIFEST) as temp:
                temp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _flat(data: dict, prefix: str = "") -> dict:
    """{"method": {"edit": "replace"}} -> {"method.edit": "replace"}."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


# ------------------------------------------------------------------------------------------------ planning

@dataclass
class PlannedGroup:
    """A group to generate and where each of its images goes (None: already there, not written)."""

    group: Group
    source_path: Path | None
    edit_paths: list[Path | None]
    mask_paths: dict[str, Path] = field(default_factory=dict)  # target prompt -> path

    @property
    def rows(self) -> int:
        return self.group.size


def unique_sources(pairs: list[Pair]) -> list[str]:
    """Source prompts in order of first appearance (the unit that runs are split by)."""
    return list(dict.fromkeys(p.source_prompt for p in pairs))


def plan_groups(pairs: list[Pair], seeds, layout: EditLayout, masks: bool = False) -> list[PlannedGroup]:
    """One group per (source prompt, seed) that still misses an image: its source image, an edit, or a mask."""
    by_source: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source_prompt, []).append(pair)
    missing = lambda path: layout.overwrite or not path.is_file()  # noqa: E731
    planned = []
    for source, group_pairs in by_source.items():
        source_dir = layout.source_dir(source)
        layout.claim(source_dir, layout.source_manifest(source))
        edit_dirs = [(pair, spec, layout.edit_dir(spec, source, pair.target_prompt))
                     for pair in group_pairs for spec in pair.specs]
        for pair, spec, folder in edit_dirs:
            layout.claim(folder, layout.edit_manifest(pair, spec))
        mask_dirs = {p.target_prompt: layout.mask_dir(source, p.target_prompt) for p in group_pairs} if masks else {}
        for pair in group_pairs if masks else ():
            layout.claim(mask_dirs[pair.target_prompt], layout.mask_manifest(pair))
        for seed in seeds:
            source_path = source_dir / f"{seed}.png"
            edits, paths = [], []
            for pair, spec, folder in edit_dirs:
                path = folder / f"{seed}.png"
                if missing(path):
                    edits.append(Edit(pair.target_prompt, spec, pair.target_token))
                    paths.append(path)
            mask_paths = {t: d / f"{seed}.png" for t, d in mask_dirs.items() if missing(d / f"{seed}.png")}
            if edits or mask_paths or missing(source_path):
                group = Group(source, int(seed), tuple(edits), tuple(mask_paths))
                planned.append(PlannedGroup(group, source_path if missing(source_path) else None, paths, mask_paths))
    return planned


def pack(groups: list[PlannedGroup], batch_size: int) -> list[list[PlannedGroup]]:
    """Consecutive groups in the fewest batches of at most ``batch_size`` rows (a larger group alone), as even in
    rows as the group sizes allow, so that a compiled UNet sees few shapes."""
    if batch_size < 1:
        raise UserError(f"--batch_size must be at least 1, got {batch_size}")

    def greedy(limit: int) -> list[list[PlannedGroup]]:
        batches, current, rows = [], [], 0
        for group in groups:
            if current and rows + group.rows > limit:
                batches.append(current)
                current, rows = [], 0
            current.append(group)
            rows += group.rows
        return batches + ([current] if current else [])

    fewest = greedy(batch_size)
    total = sum(g.rows for g in groups)
    for limit in range(-(-total // max(len(fewest), 1)), batch_size):  # the smallest limit that needs no more batches
        even = greedy(limit)
        if len(even) <= len(fewest):
            return even
    return fewest


# ------------------------------------------------------------------------------------------------ running

def save_png(pixels: np.ndarray, path: Path) -> None:
    """Write (H, W, 3) uint8 or (H, W) bool pixels as a PNG, atomically."""
    from PIL import Image

    image = Image.fromarray(pixels.astype(np.uint8) * 255 if pixels.dtype == bool else pixels)
    with atomic_output(path) as temp:
        image.save(temp, format="PNG")


@dataclass
class RunReport:
    groups: int = 0
    rows_generated: int = 0
    sources_written: int = 0
    edits_written: int = 0
    masks_written: int = 0


def run_edits(pipe, pairs: list[Pair], seeds, layout: EditLayout, *, hrv=None, batch_size: int = 16,
              masks: bool = False, progress=None) -> RunReport:
    """Generate and write every missing image of ``pairs`` x ``seeds`` (see the module docstring)."""
    s = layout.settings
    planned = plan_groups(pairs, seeds, layout, masks)
    layout.write_manifests()
    report = RunReport(groups=len(planned))
    if progress is not None and hasattr(progress, "reset"):  # a tqdm bar: count the edits still to make
        progress.reset(total=sum(len(p.group.edits) for p in planned))
    pending = []
    with ThreadPoolExecutor(max_workers=8) as writer:
        for batch in pack(planned, batch_size):
            out = generate_edits(pipe, [p.group for p in batch], hrv=hrv, num_inference_steps=s.num_inference_steps,
                                 guidance_scale=s.guidance_scale, decode=s.decode, self_max_queries=s.self_max_queries,
                                 blend_resolution=s.blend_resolution, height=s.height, width=s.width)
            rows_of = {}
            for row in out.edit_rows:
                rows_of.setdefault(row.group, []).append(row.row)
            for g, plan in enumerate(batch):
                if plan.source_path is not None:
                    pending.append(writer.submit(save_png, out.images[out.source_rows[g]], plan.source_path))
                    report.sources_written += 1
                for row, path in zip(rows_of.get(g, []), plan.edit_paths):
                    pending.append(writer.submit(save_png, out.images[row], path))
                    report.edits_written += 1
                for target, path in plan.mask_paths.items():
                    pending.append(writer.submit(save_png, out.masks[g, target], path))
                    report.masks_written += 1
            report.rows_generated += out.images.shape[0]
            if progress is not None:
                progress.update(sum(len(p.group.edits) for p in batch))
    for future in pending:
        future.result()  # re-raise a failed write
    return report


def write_json(path, data: dict) -> Path:
    with atomic_output(path) as temp:
        temp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")
    return Path(path)


def read_manifest(folder) -> dict | None:
    path = Path(folder) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def relative(path: Path, root) -> str:
    return os.path.relpath(path, root)
