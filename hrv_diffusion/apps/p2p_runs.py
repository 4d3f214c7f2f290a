"""Editing runs into the published folder layout: the plan of a run and its batch function.

    {output}/exp_{N}/source/{source prompt}/{seed}.png                       the plain source image
    {output}/exp_{N}/{method}/{source prompt}_to_{target prompt}/{seed}.png  method: original_p2p, Color_0.9, ...
    {output}/exp_{N}/masks/{source prompt}_to_{target prompt}/{seed}.png     the swapped words' region (optional)
    {output}/exp_{N}/comparison/{source prompt}_to_{target prompt}.png       labelled figure: a row per seed, a
                                                                             column per source / method (hrv-p2p)

The output side is the run harness's (``apps/runs.py``): folder names made safe (the paper's prompts keep theirs),
each folder claimed with a ``manifest.json`` saying what its images were made with (model, dtype, steps, the
method's settings, the HRV's fingerprint), images that exist skipped so a run resumes where it stopped, and a folder
whose manifest disagrees with the run refused with one line naming ``--overwrite``.

A source prompt's image is generated once per seed and shared by every pair and method that starts from it: each
seed is one group ``[source, edits...]`` of a batch, and batches hold many groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hrv_diffusion.apps.output_paths import safe_folder_name
from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits
from hrv_diffusion.apps.runs import MANIFEST, OutputTree, RunReport, run_batches
from hrv_diffusion.errors import UserError

__all__ = ["MANIFEST", "SOURCE_FOLDER", "MASK_FOLDER", "COMPARISON_FOLDER", "RESERVED", "method_folder",
           "pair_folder", "Pair", "RunSettings", "EditLayout", "PlannedGroup", "unique_sources", "plan_groups",
           "run_edits", "write_comparison"]

SOURCE_FOLDER, MASK_FOLDER, COMPARISON_FOLDER = "source", "masks", "comparison"
RESERVED = (SOURCE_FOLDER, MASK_FOLDER, COMPARISON_FOLDER)
RETRY_HINT = "use another --experiment_num or --output_path"


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
    """The folders of one experiment ``{output}/exp_{N}`` and the manifests they are claimed with, on an
    ``OutputTree`` rooted at ``output_path``."""

    def __init__(self, output_path, experiment_num, settings: RunSettings, overwrite: bool = False):
        self.tree = OutputTree(output_path, overwrite=overwrite, retry_hint=RETRY_HINT)
        self._exp = f"exp_{experiment_num}"
        self.exp_dir = self.tree.folder(self._exp)
        self.settings, self.overwrite = settings, overwrite

    def source_dir(self, source: str) -> Path:
        return self.tree.folder(self._exp, SOURCE_FOLDER, self.tree.name(source))

    def edit_dir(self, spec: EditSpec, source: str, target: str) -> Path:
        if spec.name in RESERVED:
            raise UserError(f"a method cannot be named {spec.name!r}: that folder holds the {spec.name} images")
        return self.tree.folder(self._exp, self.tree.name(spec.name), pair_folder(source, target))

    def comparison_path(self, source: str, target: str) -> Path:
        return self.tree.folder(self._exp, COMPARISON_FOLDER) / f"{pair_folder(source, target)}.png"

    def mask_dir(self, source: str, target: str) -> Path:
        return self.tree.folder(self._exp, MASK_FOLDER, pair_folder(source, target))

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
        """Check ``folder`` may receive images made as ``manifest`` says (``OutputTree.claim``)."""
        self.tree.claim(folder, manifest)

    def missing(self, path: Path) -> bool:
        return self.tree.missing(path)


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

    @property
    def files(self) -> int:
        return (self.source_path is not None) + len(self.edit_paths) + len(self.mask_paths)


def unique_sources(pairs: list[Pair]) -> list[str]:
    """Source prompts in order of first appearance (the unit that runs are split by)."""
    return list(dict.fromkeys(p.source_prompt for p in pairs))


def _claim_folders(source: str, pairs: list[Pair], layout: EditLayout, masks: bool):
    """Claim the folders of one source prompt: its source folder, (pair, spec, folder) of every edit, and the mask
    folder of every target prompt (when ``masks``)."""
    source_dir = layout.source_dir(source)
    layout.claim(source_dir, layout.source_manifest(source))
    edit_dirs = [(pair, spec, layout.edit_dir(spec, source, pair.target_prompt)) for pair in pairs
                 for spec in pair.specs]
    for pair, spec, folder in edit_dirs:
        layout.claim(folder, layout.edit_manifest(pair, spec))
    mask_dirs = {}
    for pair in pairs if masks else ():
        mask_dirs[pair.target_prompt] = layout.mask_dir(source, pair.target_prompt)
        layout.claim(mask_dirs[pair.target_prompt], layout.mask_manifest(pair))
    return source_dir, edit_dirs, mask_dirs


def plan_groups(pairs: list[Pair], seeds, layout: EditLayout, masks: bool = False) -> list[PlannedGroup]:
    """One group per (source prompt, seed) that still misses an image: its source image, an edit, or a mask."""
    by_source: dict[str, list[Pair]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source_prompt, []).append(pair)
    missing = layout.missing
    planned = []
    for source, group_pairs in by_source.items():
        source_dir, edit_dirs, mask_dirs = _claim_folders(source, group_pairs, layout, masks)
        for seed in seeds:
            source_path = source_dir / f"{seed}.png"
            edits, paths = [], []
            for pair, spec, folder in edit_dirs:
                if missing(folder / f"{seed}.png"):
                    edits.append(Edit(pair.target_prompt, spec, pair.target_token))
                    paths.append(folder / f"{seed}.png")
            mask_paths = {t: d / f"{seed}.png" for t, d in mask_dirs.items() if missing(d / f"{seed}.png")}
            if edits or mask_paths or missing(source_path):
                group = Group(source, int(seed), tuple(edits), tuple(mask_paths))
                planned.append(PlannedGroup(group, source_path if missing(source_path) else None, paths, mask_paths))
    return planned


def expected_files(pairs: list[Pair], seeds, masks: bool = False) -> int:
    """How many images a complete run of ``pairs`` x ``seeds`` has: a source per source prompt, an edit per pair
    and method, a mask per pair (when ``masks``), each per seed."""
    per_seed = len(unique_sources(pairs)) + sum(len(p.specs) + bool(masks) for p in pairs)
    return per_seed * len(list(seeds))


# ------------------------------------------------------------------------------------------------ running

def batch_files(out, batch: list[PlannedGroup], counts: dict):
    """The (path, pixels) pairs of one ``generate_edits`` output ``out`` for the planned groups ``batch``, counting
    each kind of image written into ``counts`` (``sources``, ``edits``, ``masks``)."""
    rows_of: dict[int, list[int]] = {}
    for row in out.edit_rows:
        rows_of.setdefault(row.group, []).append(row.row)
    files = []
    for g, plan in enumerate(batch):
        if plan.source_path is not None:
            files.append((plan.source_path, out.images[out.source_rows[g]]))
            counts["sources"] += 1
        for row, path in zip(rows_of.get(g, []), plan.edit_paths):
            files.append((path, out.images[row]))
            counts["edits"] += 1
        for target, path in plan.mask_paths.items():
            files.append((path, out.masks[g, target]))
            counts["masks"] += 1
    return files


def run_edits(pipe, pairs: list[Pair], seeds, layout: EditLayout, *, hrv=None, batch_size: int = 16,
              masks: bool = False, progress=None) -> RunReport:
    """Generate and write every missing image of ``pairs`` x ``seeds`` (see the module docstring). The report's
    ``details`` count the ``sources``, ``edits`` and ``masks`` written; ``progress`` (a tqdm bar) counts edits."""
    s = layout.settings
    planned = plan_groups(pairs, seeds, layout, masks)
    layout.tree.commit()
    counts = {"sources": 0, "edits": 0, "masks": 0}
    report = RunReport(root=layout.exp_dir, details=counts)
    report.present = expected_files(pairs, seeds, masks) - sum(p.files for p in planned)
    if progress is not None and hasattr(progress, "reset"):  # a tqdm bar: count the edits still to make
        progress.reset(total=sum(len(p.group.edits) for p in planned))

    def make_batch(batch: list[PlannedGroup]):
        out = generate_edits(pipe, [p.group for p in batch], hrv=hrv, num_inference_steps=s.num_inference_steps,
                             guidance_scale=s.guidance_scale, decode=s.decode, self_max_queries=s.self_max_queries,
                             blend_resolution=s.blend_resolution, height=s.height, width=s.width)
        if progress is not None:
            progress.update(sum(len(p.group.edits) for p in batch))
        return batch_files(out, batch, counts)

    return run_batches(planned, make_batch, batch_size=batch_size, rows=lambda plan: plan.rows, report=report)


# ------------------------------------------------------------------------------------------------ figure

def method_label(spec: EditSpec) -> str:
    """A comparison column's label: what the method is, then its folder (which names its strength)."""
    kinds = {"none": "P2P", "hrv": f"P2P-HRV ({spec.concept})", "all_heads": "P2P, all heads restored",
             "head_list": f"P2P, heads of {spec.concept}"}
    return f"{kinds.get(spec.restoration, spec.name)}\n{spec.name}"


def write_comparison(layout: EditLayout, pair: Pair, seeds, force: bool = False) -> bool:
    """Write ``exp_{N}/comparison/{source}_to_{target}.png``: a row per seed, columns the source image, then each
    method of ``pair`` (P2P, P2P-HRV per concept and strength), labelled and enlarged; an image that is missing
    leaves its cell grey. Written when ``force`` (images were made) or when the picture there differs (missing,
    other seeds); whether it was written (``layout.comparison_path`` says where)."""
    from hrv_diffusion.apps.grids import labelled_grid, read_rgb, write_figure

    seeds = list(dict.fromkeys(seeds))
    folders = [layout.source_dir(pair.source_prompt)]
    folders += [layout.edit_dir(spec, pair.source_prompt, pair.target_prompt) for spec in pair.specs]
    rows = [[read_rgb(f / f"{s}.png") if (f / f"{s}.png").is_file() else None for f in folders] for s in seeds]
    if all(image is None for row in rows for image in row):
        return False
    columns = ["source image"] + [method_label(spec) for spec in pair.specs]
    title = f"{pair.source_prompt!r} -> {pair.target_prompt!r}"
    if pair.target_token:
        title += f" (P2P-HRV restores the word {pair.target_token!r})"
    grid = labelled_grid(rows, row_labels=[f"seed {s}" for s in seeds], column_labels=columns, title=title)
    return write_figure(grid.picture, layout.comparison_path(pair.source_prompt, pair.target_prompt), force=force)
