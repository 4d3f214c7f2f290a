"""An HRV construction run: prompts in batches through the pipeline while ``RelevanceVotes`` counts.

One call of ``run_relevance`` handles the prompts of one process (a subset and/or a distributed rank) and writes
one shard per epoch. Shards are checkpointed every ``checkpoint_every`` prompts with atomic writes; with
``resume`` a run continues from its shard without redoing or double-counting a prompt.

Seeding. ``per_prompt`` (default): prompt i's latent comes from a generator seeded by (seed, i), and its words from
(seed, epoch, i), so results do not depend on batching or on how prompts are split over processes.
``legacy``: the reference exactly: one CPU generator seeded ``seed`` (22) per epoch and per process, one ``randn``
per prompt in list order (a subset process re-seeds, as the reference does).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from hrv_diffusion import __version__
from hrv_diffusion.core.graphs import GraphCache, graphs_supported
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, num_evaluations, seed_latents, sequential_latents
from hrv_diffusion.core.models import is_sdxl
from hrv_diffusion.hrv.votes import RelevanceVotes, WordBank, derived_seed, sample_words
from hrv_diffusion.hrv.shards import MATCH_KEYS, Shard, load_shard, save_shard

# Our --negative_prompt text: a common list of defects, like the reference's but not its string (which we do not
# reproduce). The paper's HRVs use no negative prompt.
NEGATIVE_PROMPT = (
    "ugly, bad anatomy, bad proportions, blurry, cropped, deformed, disfigured, duplicate, error, extra limbs, "
    "gross proportions, jpeg artifacts, low quality, lowres, malformed, morbid, mutated, mutilated, out of frame, "
    "poorly drawn, text, watermark, worst quality"
)


@dataclass
class RelevanceSettings:
    """What a run does; written into every shard's metadata."""

    model_card: str
    model_version: str
    description: str
    prompt: str
    epochs: int = 1
    num_inference_steps: int = 50
    guidance_scale: float = 7.5
    negative_prompt: bool = False
    seed: int = 22
    seeding: str = "per_prompt"  # or "legacy"
    batch_size: int = 8
    dtype: str = "float32"
    subset: list[int] | None = None  # [numerator, denominator]
    checkpoint_every: int = 100
    compile: bool = False  # torch.compile the vote computation (GPU runs)
    cuda_graphs: bool = False  # replay each batch's guided UNet call from a CUDA graph (where graphs_supported)
    extra: dict = field(default_factory=dict)


class RelevanceInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM turned into it) stopped a run; the finished prompts were saved first.

    ``path``: the shard written (None when no prompt had finished), ``done`` / ``total``: prompts of this process
    in that shard, ``epoch``: the epoch that was running."""

    def __init__(self, path: Path | None, done: int, total: int, epoch: int):
        super().__init__(f"interrupted in epoch {epoch}: {done} of {total} prompts saved")
        self.path, self.done, self.total, self.epoch = path, done, total, epoch


def subset_indices(num_prompts: int, numerator: int, denominator: int) -> list[int]:
    """The reference's --subset_running slice: lines[(n-1)*N//d : n*N//d]."""
    if not 1 <= numerator <= denominator:
        raise ValueError(f"--numerator must be in 1..--denominator, got {numerator}/{denominator}")
    return list(range((numerator - 1) * num_prompts // denominator, numerator * num_prompts // denominator))


def rank_indices(indices: list[int], rank: int, world_size: int) -> list[int]:
    """Contiguous share of one distributed rank."""
    n = len(indices)
    return indices[rank * n // world_size : (rank + 1) * n // world_size]


def shard_path(results_dir: Path, settings: RelevanceSettings, epoch: int, rank: int, world_size: int) -> Path:
    s = settings
    name = f"{s.prompt}_{s.description}_ba_epoch_{epoch}_neg_prompt_{s.negative_prompt}"
    if s.subset:
        name += f"_{s.subset[0]}_{s.subset[1]}"
    if world_size > 1:
        name += f"_rank_{rank}_of_{world_size}"
    return Path(results_dir) / f"{name}_{s.model_version}.npz"


def _latents(indices: list[int], run_order: list[int], shape: tuple, settings: RelevanceSettings) -> dict[int, torch.Tensor]:
    """CPU float32 latents for ``indices`` (a subset of ``run_order``), keyed by prompt index."""
    if settings.seeding == "legacy":  # one randn per prompt of the run, in list order, as the reference does
        position = {i: n for n, i in enumerate(run_order)}
        drawn = sequential_latents(settings.seed, max((position[i] for i in indices), default=-1) + 1, shape)
        return {i: drawn[position[i] : position[i] + 1] for i in indices}
    return {i: seed_latents([derived_seed(settings.seed, i)], shape) for i in indices}


def run_relevance(pipe, settings: RelevanceSettings, concept_set, text_embeddings, prompts: list[str],
                  indices: list[int], metadata: dict, results_dir: Path, rank: int = 0, world_size: int = 1,
                  resume: bool = False, progress: bool = True) -> list[Path]:
    """Run the prompts ``indices`` (into ``prompts``) for every epoch; return the shard paths written."""
    layout = head_layout(pipe)
    evaluations = num_evaluations(pipe, settings.num_inference_steps)
    bank = WordBank(pipe, layout, text_embeddings.embeddings, text_embeddings.token_lengths)
    shape = latent_shape(pipe)
    # the reference SDXL script ignores --negative_prompt (zero negatives)
    negative = NEGATIVE_PROMPT if settings.negative_prompt and not is_sdxl(pipe) else None

    meta = dict(metadata, **{k: v for k, v in asdict(settings).items() if k != "extra"}, **settings.extra,
                num_evaluations=evaluations, head_labels=layout.labels, rank=rank, world_size=world_size,
                num_prompts_total=len(prompts), version=__version__)
    graphed = settings.cuda_graphs and graphs_supported(pipe)
    written = []
    for epoch in range(1, settings.epochs + 1):
        path = shard_path(results_dir, settings, epoch, rank, world_size)
        epoch_meta = dict(meta, epoch=epoch)
        votes = RelevanceVotes(bank, layout, evaluations, concept_set.num_concepts, compile=settings.compile,
                               graph_safe=graphed)
        done = _votes_already_in(path, votes, epoch_meta, resume)
        finished = set(done)
        todo = [i for i in indices if i not in finished]
        latents = _latents(todo, indices, shape, settings)
        bar = tqdm(total=len(indices), initial=len(done), desc=f"HRV epoch {epoch}", unit="prompt",
                   disable=not progress)
        since_checkpoint, saved = 0, len(done)
        finished_counts = votes.counts.clone()  # (T, H, C) the votes of the prompts in ``done`` only
        try:
            for start in range(0, len(todo), settings.batch_size):
                batch = todo[start : start + settings.batch_size]
                choices = torch.stack([
                    sample_words(concept_set.word_counts, evaluations, len(layout.layers),
                                 torch.Generator().manual_seed(derived_seed(settings.seed, epoch, i, 1)))
                    for i in batch])  # (B, T, layers, C)
                votes.set_choices(choices)
                generate(pipe, [prompts[i] for i in batch], torch.cat([latents.pop(i) for i in batch]),
                         num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                         negative_prompt=negative, controllers=[votes], step_hooks=[votes],
                         graphs=GraphCache() if graphed else None)  # latents only: no VAE; a graph per batch
                done += batch
                finished_counts.copy_(votes.counts)
                since_checkpoint += len(batch)
                bar.update(len(batch))
                if since_checkpoint >= settings.checkpoint_every and len(done) < len(indices):
                    _save(path, votes, done, dict(epoch_meta, complete=False))
                    since_checkpoint, saved = 0, len(done)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM made one: keep every finished prompt (not the batch it cut)
            bar.close()
            if len(done) > saved:
                votes.counts.copy_(finished_counts)
                _save(path, votes, done, dict(epoch_meta, complete=False))
            raise RelevanceInterrupted(path if done else None, len(done), len(indices), epoch) from None
        bar.close()
        _save(path, votes, done, dict(epoch_meta, complete=True))
        written.append(path)
    return written


def _votes_already_in(path: Path, votes: RelevanceVotes, metadata: dict, resume: bool) -> list[int]:
    """The prompts of an existing shard at ``path``, their votes added into ``votes``; [] when there is none.

    An existing shard is continued only with ``resume`` and only when it was written by the same run."""
    if not path.exists():
        return []
    if not resume:
        raise FileExistsError(f"{path} exists: pass --resume to continue it, or delete it to start over")
    shard = load_shard(path)
    _check_resumable(shard.metadata, metadata, path)
    votes.counts += torch.from_numpy(shard.counts).to(votes.counts)  # (T, H, C)
    return shard.prompt_indices.tolist()


def _save(path: Path, votes: RelevanceVotes, done: list[int], metadata: dict) -> None:
    counts = votes.counts.round().to(torch.int64).cpu().numpy()  # (T, H, C)
    save_shard(path, Shard(counts=counts, prompt_indices=np.asarray(done, dtype=np.int64), metadata=metadata))


def _check_resumable(stored: dict, current: dict, path: Path) -> None:
    """Refuse to resume a shard of another run (``MATCH_KEYS``) or another shard of this run."""
    for key in (*MATCH_KEYS, "subset", "rank", "world_size", "epoch"):
        if json.dumps(stored.get(key)) != json.dumps(current.get(key)):
            raise ValueError(
                f"cannot resume {path}: it was written with {key}={stored.get(key)!r}, this run has "
                f"{current.get(key)!r}. Use the same flags, or delete the file to start over."
            )
