"""``RunContext``: what a command's flags resolve to, resolved once, in one place, for every command.

    ctx = RunContext.from_args(args)      # device, dtype, model version, rank and world: nothing loaded yet
    ctx.check_concepts(["Color"])         # the concept set, checked before the model loads
    ctx.check_hrv()                       # an HRV that cannot be read fails here, before the model loads
    pipe, layout, hrv = ctx.pipe, ctx.layout, ctx.hrv   # loaded on first use, once

Flags read (those a command has; see ``flags.py``): ``--model_card --model_version --gpu_num --device --dtype
--scheduler --compile``, ``--height --width``, ``--hrv --description --description_file_path --class_list_path
--category_vectors_path --head_index_path``, ``--subset_running --numerator --denominator``; torchrun's ``RANK``
and ``WORLD_SIZE`` from the environment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from hrv_diffusion.errors import UserError

TOY_DESCRIPTION = "toy_concepts"
PAPER_DESCRIPTION = "340_final_text_descriptions"


def default_description(card: str) -> str:
    """The concept set a model's shipped HRVs are over: the toy's own five concepts, else the paper's 34."""
    from hrv_diffusion.cli.common import TOY_CARDS
    from hrv_diffusion.hrv.paper import TOY_VERSIONS

    return TOY_DESCRIPTION if card in TOY_CARDS or card in TOY_VERSIONS else PAPER_DESCRIPTION


def _flag(args, name: str, default=None):
    return getattr(args, name, default)


@dataclass
class RunContext:
    """The resolved flags of one command run (see the module docstring)."""

    args: object
    card: str
    device: str
    dtype: str
    model_version: str
    rank: int = 0
    world: int = 1
    _loaded: dict = field(default_factory=dict, repr=False)

    @classmethod
    def from_args(cls, args) -> "RunContext":
        from hrv_diffusion.core.device import resolve_device, resolve_dtype
        from hrv_diffusion.cli.flags import check_split
        from hrv_diffusion.core.models import model_version

        check_split(args)
        card = args.model_card
        device = resolve_device(_flag(args, "device"), _flag(args, "gpu_num", 0))
        dtype = resolve_dtype(_flag(args, "dtype", "auto"), device)
        version = _flag(args, "model_version") or model_version(card)
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        return cls(args, card, device, dtype, version, rank, world)

    # ---------------------------------------------------------------------------------------------- model

    @property
    def height(self) -> int | None:
        return _flag(self.args, "height")

    @property
    def width(self) -> int | None:
        return _flag(self.args, "width")

    def is_sdxl(self) -> bool:
        """Whether the card is an SDXL model, read from its model index (nothing is loaded)."""
        from hrv_diffusion.core.models import ALIASES, is_sdxl_index, load_model_index
        from hrv_diffusion.core.tiny import TINY_MODELS

        if self.card in TINY_MODELS:
            return self.card == "tiny-sdxl"
        return is_sdxl_index(load_model_index(str(ALIASES.get(self.card, self.card))))

    @cached_property
    def pipe(self):
        """The pipeline, loaded once on ``device`` in ``dtype`` (with the paper's PNDM unless ``--scheduler
        model``); the CUDA device is made current (A&E's CUDA generator draws on it)."""
        import torch

        from hrv_diffusion.core.models import load_pipeline

        if str(self.device).startswith("cuda"):
            torch.cuda.set_device(torch.device(self.device))
        return load_pipeline(self.card, dtype=self.dtype, device=self.device,
                             scheduler=_flag(self.args, "scheduler", "pndm"))

    def compile(self, skip=(), whole: bool = False) -> None:
        """``--compile``: compile every UNet region but the cross-attention layers and the modules ``skip``;
        ``whole``: the UNet's forward as one, the cross-attention layers and ``skip`` left eager
        (``compile_unet_blocks``). Other families' denoisers stay eager (only the HRV vote is compiled, by the run's
        settings)."""
        from hrv_diffusion.core.families import UNET, family_of

        if _flag(self.args, "compile") and family_of(self.pipe) is UNET:
            from hrv_diffusion.core.speed import compile_unet_blocks, compile_unet_regions

            if whole:
                compile_unet_blocks(self.pipe.unet, whole=True, skip=list(skip))
            else:
                compile_unet_regions(self.pipe.unet, skip=list(skip))

    @cached_property
    def layout(self):
        """The CA head layout of the pipeline's denoiser (its family's order: the published one for a UNet)."""
        from hrv_diffusion.core.heads import head_layout

        return head_layout(self.pipe)

    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one latent at ``--height/--width`` (the model's size by default)."""
        from hrv_diffusion.core.loop import latent_shape

        from hrv_diffusion.core.families import denoiser, family_of

        pipe = self.pipe
        model = denoiser(pipe)
        factor = pipe.vae_scale_factor * family_of(model).downsampling(model.config)
        for name, value in (("height", self.height), ("width", self.width)):
            if value is not None and value % factor:
                raise UserError(f"--{name} {value} is not a multiple of {factor} (the VAE's and the denoiser's "
                                f"downsampling): try {max(factor, value // factor * factor)}")
        return latent_shape(pipe, self.height, self.width)

    # ---------------------------------------------------------------------------------------------- concepts

    @property
    def description(self) -> str:
        """The concept set's name or path: ``--description_file_path``, ``--class_list_path``, ``--description``,
        else the model's default (``default_description``)."""
        for name in ("description_file_path", "class_list_path", "description"):
            if _flag(self.args, name):
                return str(_flag(self.args, name))
        return default_description(self.card)

    @cached_property
    def concept_set(self):
        from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description

        return read_concept_set(resolve_description(self.description))

    @property
    def concept_names(self) -> tuple[str, ...]:
        return tuple(self.concept_set.names)

    def check_concepts(self, concepts) -> None:
        """Refuse a concept that is not in the concept set, listing the ones that are."""
        for concept in concepts:
            if concept not in self.concept_names:
                raise UserError(f"unknown concept {concept!r}; the concept set {Path(self.description).stem} has: "
                                f"{', '.join(self.concept_names)}")

    # ---------------------------------------------------------------------------------------------- HRV

    @property
    def hrv_source(self) -> str:
        """``--category_vectors_path`` if given, else ``--hrv``."""
        source = _flag(self.args, "category_vectors_path") or _flag(self.args, "hrv")
        if source is None:
            raise UserError("no HRV given: pass --hrv paper or --hrv a category_vectors_*.npy")
        return str(source)

    def _load_hrv(self, layout=None):
        from hrv_diffusion.hrv.vectors import load_hrv

        head_index = _flag(self.args, "head_index_path")
        if head_index and not _flag(self.args, "category_vectors_path"):
            raise UserError("--head_index_path needs --category_vectors_path")
        return load_hrv(self.hrv_source, self.model_version, self.concept_names, layout, head_index=head_index,
                        num_heads=self.num_heads_before_loading() if layout is None else None)

    def num_heads_before_loading(self) -> int | None:
        """The model's CA head count: the loaded layout's, else from its UNet config (no weights; None when the
        config is not at hand)."""
        if "layout" in self.__dict__:
            return self.layout.num_heads
        from hrv_diffusion.core.head_counts import head_count

        return head_count(self.card)

    def check_hrv(self) -> None:
        """Read the HRV without the model: a missing download or a file of other concepts fails here."""
        self._load_hrv()

    @cached_property
    def hrv(self):
        """The HRV with its columns in this UNet's head order."""
        return self._load_hrv(self.layout)

    # ---------------------------------------------------------------------------------------------- processes

    def my_indices(self, count: int) -> list[int]:
        """The indices of ``count`` prompts this process runs: ``--subset_running`` part NUMERATOR of
        DENOMINATOR, then this torchrun rank's contiguous share."""
        from hrv_diffusion.hrv.construction import rank_indices, subset_indices

        indices = list(range(count))
        if _flag(self.args, "subset_running"):
            indices = subset_indices(count, self.args.numerator, self.args.denominator)
        return rank_indices(indices, self.rank, self.world)
