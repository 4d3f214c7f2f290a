"""Runs of Attend-and-Excite: prompt folders claimed with what their images depend on, filled seed by seed.

Layout (the reference's): ``{output_path}/{mode folder}/exp_{n}/{prompt}/`` holds ``{seed}.png``, ``{seed}.json``
(the per-evaluation telemetry) and ``manifest.json`` (``folder_manifest``: everything the folder's images depend
on); ``exp_{n}/{prompt}.png`` is the grid of the folder's seeds (labelled: method, prompt, targets, seeds). A
rerun with the same settings makes only the missing seeds; a folder made with other settings is refused
(``OutputTree.claim``) unless ``--overwrite``.

    folders = plan_folders(tree, jobs, {"hrv": settings}, experiment_num)
    report = run_plan(pipe, tree, folders, seeds, options, hrv=hrv, batch_size=4)

``run_plan`` claims every folder first (``claim_folders``: a conflict is refused before anything is written),
then generates the missing seeds of each (``generate_folders``) and writes its grid where it changed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from hrv_diffusion.apps.attend_excite import (MODE_FOLDERS, AttendExciteSettings, Targets, concept_groups,
                                              generate_attend_excite, telemetry_summary)
from hrv_diffusion.apps.runs import OutputTree, RunReport, run_batches
from hrv_diffusion.errors import UserError
from hrv_diffusion.io import write_png

# Recorded in the manifest but no conflict: a local folder and the hub id of one model give the same images, an
# HRV's path does not matter (its fingerprint is compared), nor the targets' labels (their positions are).
IGNORED = ("model_card", "hrv_source", "targets")
METHOD_NAMES = {"hrv": "A&E-HRV", "standard": "Attend-and-Excite", "sd": "standard SD (no A&E)"}  # grid titles


def image_dir(output_path, mode: str, experiment_num, prompt: str) -> Path:
    """``{output_path}/{mode folder}/exp_{n}/{prompt}`` (the reference's layout; the prompt made safe)."""
    return OutputTree(output_path).folder(MODE_FOLDERS[mode], f"exp_{experiment_num}", OutputTree.name(prompt))


@dataclass
class PromptJob:
    """One prompt of a run: its targets (token positions and labels) and each target's concept."""

    prompt: str
    positions: list  # K lists of token positions
    labels: list  # K labels (the word or token of each target)
    concepts: list  # K concept names (A&E-HRV)
    eot: int


@dataclass(frozen=True)
class RunOptions:
    """What a run's images depend on besides the method's settings and the prompt's targets."""

    model_card: str
    model_version: str
    dtype: str
    scheduler: str
    generator: str  # "cpu" | "cuda": the latents' torch.Generator
    decode: str
    height: int | None  # pixels asked for (None: the model's); the manifest records the size made
    width: int | None
    image_size: tuple  # (height, width) in pixels of the images made
    negative_prompt: str | None
    hrv_source: str | None = None  # A&E-HRV: the HRV (its fingerprint is what the images depend on)
    hrv_fingerprint: str | None = None
    metadata: dict = field(default_factory=dict)  # more keys of each seed's telemetry (model card, prompt set)


@dataclass
class PromptFolder:
    """One folder of the plan: a prompt under one mode's settings, and the seeds still to make there."""

    path: Path
    job: PromptJob
    settings: AttendExciteSettings
    todo: list = field(default_factory=list)


def folder_manifest(job: PromptJob, settings: AttendExciteSettings, options: RunOptions) -> dict:
    """The settings a folder's images are made with. Plain SD records only what plain generation reads (a changed
    A&E setting keeps its images); standard A&E has no concepts or HRV."""
    method = settings.to_dict()
    if settings.mode == "sd":
        method = {k: method[k] for k in ("mode", "num_inference_steps", "guidance_scale")}
    hrv = settings.mode == "hrv"
    return {
        "prompt": job.prompt, "settings": method,
        "model_card": options.model_card, "model_version": options.model_version, "dtype": options.dtype,
        "scheduler": options.scheduler, "generator": options.generator, "decode": options.decode,
        "height": options.image_size[0], "width": options.image_size[1], "negative_prompt": options.negative_prompt,
        "token_indices": job.positions if settings.mode != "sd" else None,
        "targets": job.labels if settings.mode != "sd" else None,
        "concepts": list(job.concepts) if hrv else None,
        "hrv_source": options.hrv_source if hrv else None, "hrv_fingerprint": options.hrv_fingerprint if hrv else None,
    }


def plan_folders(tree: OutputTree, jobs: list[PromptJob], settings: dict, experiment_num) -> list[PromptFolder]:
    """One folder per job and mode (``settings``: {mode: AttendExciteSettings}), jobs first, in the reference's
    layout under ``tree``."""
    return [PromptFolder(tree.folder(MODE_FOLDERS[mode], f"exp_{experiment_num}", tree.name(job.prompt)), job,
                         mode_settings)
            for job in jobs for mode, mode_settings in settings.items()]


def claim_folders(tree: OutputTree, folders: list[PromptFolder], seeds, options: RunOptions) -> int:
    """Claim every folder with its manifest (a conflict is refused before anything is written), write the
    manifests, and fill each folder's ``todo`` with the seeds whose PNG or JSON is missing. Returns the number of
    seeds already there."""
    for folder in folders:
        tree.claim(folder.path, folder_manifest(folder.job, folder.settings, options))
    tree.commit()
    present = 0
    for folder in folders:
        folder.todo = [int(s) for s in seeds
                       if tree.missing(folder.path / f"{s}.png") or tree.missing(folder.path / f"{s}.json")]
        present += len(seeds) - len(folder.todo)
    return present


def initial_latents(seeds, shape, generator: str = "cpu") -> torch.Tensor:
    """(B, *shape) float32 on the CPU: seed b from ``torch.Generator(generator).manual_seed(seeds[b])``. "cuda"
    is the reference's and diffusers' example (its numbers depend on the GPU model); "cpu" is portable."""
    if generator == "cuda" and not torch.cuda.is_available():
        raise UserError("--generator cuda needs CUDA: use --generator cpu (different latents, same method)")
    from hrv_diffusion.core.loop import seed_latents

    return seed_latents(seeds, shape, device=generator)


def telemetry(job: PromptJob, seed: int, settings: AttendExciteSettings, options: RunOptions, records: list) -> dict:
    """``{seed}.json``: the prompt, targets, settings and each evaluation's loss, maxima and refinement."""
    hrv = settings.mode == "hrv"
    return {
        "prompt": job.prompt, "seed": seed, "mode": settings.mode, "generator": options.generator,
        "token_indices": job.positions, "targets": job.labels, "concepts": list(job.concepts) if hrv else None,
        "hrv": {"source": options.hrv_source, "fingerprint": options.hrv_fingerprint} if hrv else None,
        "settings": settings.to_dict(), **options.metadata,
        "summary": telemetry_summary(records), "steps": records,
    }


def seed_batch(pipe, folder: PromptFolder, options: RunOptions, hrv=None):
    """The batch function of ``folder``: seeds -> their (path, image) and (path, telemetry) pairs."""
    from hrv_diffusion.core.loop import latent_shape

    job, settings = folder.job, folder.settings
    distinct, groups = concept_groups(list(job.concepts))
    hrv_rows = hrv.rows(distinct) if settings.mode == "hrv" else None  # (G, H)
    shape = latent_shape(pipe, options.height, options.width)  # (C, h, w)

    def make(seeds: list) -> list:
        targets = Targets.build([job.positions] * len(seeds), [job.eot] * len(seeds), groups)
        result = generate_attend_excite(pipe, [job.prompt] * len(seeds),
                                        initial_latents(seeds, shape, options.generator), targets, settings, hrv_rows,
                                        negative_prompt=options.negative_prompt, decode=options.decode,
                                        height=options.height, width=options.width)
        files = []
        for b, seed in enumerate(seeds):
            files.append((folder.path / f"{seed}.png", result.images[b]))
            files.append((folder.path / f"{seed}.json", telemetry(job, seed, settings, options, result.records[b])))
        return files

    return make


def generate_folders(pipe, folders: list[PromptFolder], seeds, options: RunOptions, *, hrv=None,
                     batch_size: int = 4, progress=None, report: RunReport | None = None) -> RunReport:
    """Make each folder's ``todo`` seeds in ``pack``ed batches (each seed's update is its own, so a batch gives
    the images of one seed at a time), then its grid where it changed. ``hrv``: an ``HRV`` ordered for this UNet."""
    report = report if report is not None else RunReport()
    for folder in folders:
        if folder.todo:
            run_batches(folder.todo, seed_batch(pipe, folder, options, hrv), batch_size=batch_size,
                        progress=progress, report=report)
        grid_path = folder.path.parent / f"{folder.path.name}.png"
        if write_grid(folder, seeds, grid_path, changed=bool(folder.todo)):
            report.written += 1
    return report


def _seed_images(folder: Path, seeds) -> list[Path]:
    return [Path(folder) / f"{s}.png" for s in seeds if (Path(folder) / f"{s}.png").is_file()]


def grid_title(folder: PromptFolder) -> str:
    """What a grid shows: the method, the prompt and (A&E) its targets, with their concepts for A&E-HRV."""
    job, mode = folder.job, folder.settings.mode
    title = f"{METHOD_NAMES[mode]}: {job.prompt!r}"
    if mode == "sd":
        return title
    targets = [f"{label} ({concept})" if mode == "hrv" else str(label)
               for label, concept in zip(job.labels, job.concepts or [None] * len(job.labels))]
    return f"{title}\ntargets: {', '.join(targets)}"


def labelled_seed_grid(files: list[Path], title: str) -> np.ndarray:
    """The labelled grid of seed images ``files`` (``{seed}.png``): ceil(sqrt(n)) columns as the reference's grid,
    each image enlarged and captioned with its seed, ``title`` on top."""
    from hrv_diffusion.apps.grids import labelled_grid, read_rgb

    columns = math.ceil(math.sqrt(len(files)))
    cells = [read_rgb(f) for f in files]
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    captions = [[f"seed {f.stem}" for f in files[i : i + columns]] for i in range(0, len(files), columns)]
    return labelled_grid(rows, cell_labels=captions, title=title).picture


def write_grid(folder: PromptFolder, seeds, path, changed: bool = True) -> bool:
    """Write the labelled grid of the seeds' images that exist (``exp_{n}/{prompt}.png``, where the reference's is);
    when ``changed`` is False (no new image in the folder), only if the grid there has other pixels (missing, other
    seeds). Returns whether it was written."""
    from hrv_diffusion.apps.grids import write_figure

    files = _seed_images(folder.path, seeds)
    if not files:
        return False
    return write_figure(labelled_seed_grid(files, grid_title(folder)), path, force=changed)


def run_plan(pipe, tree: OutputTree, folders: list[PromptFolder], seeds, options: RunOptions, *, hrv=None,
             batch_size: int = 4, quiet: bool = False, desc: str | None = None) -> RunReport:
    """Claim ``folders``, then generate their missing seeds with a progress bar; the report counts the images
    made, the files written and the seeds already there."""
    from tqdm.auto import tqdm

    report = RunReport(root=tree.root)
    report.present = claim_folders(tree, folders, seeds, options)
    with tqdm(total=sum(len(f.todo) for f in folders), unit="image", disable=quiet, desc=desc) as bar:
        generate_folders(pipe, folders, seeds, options, hrv=hrv, batch_size=batch_size, progress=bar, report=report)
    return report
