"""The one denoising loop of the toolkit, for SD 1.x/2.x, SDXL and PixArt-α/Σ pipelines.

Every feature that generates calls ``generate``: HRV construction, ordered weakening, the toy's evaluation and
weakening, and the applications. It does what ``pipe(...)`` does (the pipeline's own ``encode_prompt``, SDXL's
pooled embeddings and time ids, classifier-free guidance, the scheduler's steps, decoding) with the same numbers,
and owns what the applications need to control. What differs between model families (the prompt encoding, the
denoiser's arguments, a variance half of its output) comes from the pipeline's family (``core/families``). It
owns:

- the evaluation index: the loop tells the attention hooks, before every UNet call, which evaluation it is and
  which rows of the batch are conditional, so extra passes (A&E's gradient passes) never shift the index;
- the initial latents, made in one place (``seed_latents``, ``sequential_latents``);
- the latent size of each UNet call, which places every attention layer's queries on its grid;
- ``StepHook``s, called before and after each scheduler step, which may replace the latents; ``before`` may run
  with autograd and conditional-only UNet passes (``loop.noise(latents, t, step, rows="cond")``), on a subset of
  the samples (``loop.subset(rows)``) and ending after a chosen attention layer (``stop_after``: the pass is run
  for what its controllers read, not for its output);
- decoding to uint8 with an explicit policy: ``truncate`` (``(x * 255).astype(uint8)``, what the reference's own
  loops do: weakening, P2P, SD-HRV) or ``round`` (diffusers' PIL path, which the reference's A&E uses).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from hrv_diffusion.core.attention import AttentionHooks
from hrv_diffusion.core.conditioning import Conditioning
from hrv_diffusion.core.families import denoiser, family_of
from hrv_diffusion.core.models import is_sdxl

__all__ = ["Conditioning", "DenoisingLoop", "Generation", "StepHook", "decode_latents", "encode_prompts", "generate",
           "latent_shape", "num_evaluations", "seed_latents", "sequential_latents", "to_uint8"]

DECODE_POLICIES = ("truncate", "round")


# ------------------------------------------------------------------------------------------------ latents

def latent_shape(pipe, height: int | None = None, width: int | None = None) -> tuple[int, int, int]:
    """(C, h, w) of one latent: the denoiser's own sample size, or ``height``/``width`` in pixels."""
    config = denoiser(pipe).config
    size = config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if height is not None:
        h = height // pipe.vae_scale_factor
    if width is not None:
        w = width // pipe.vae_scale_factor
    return config.in_channels, h, w


def seed_latents(seeds, shape, device: str = "cpu") -> torch.Tensor:
    """(B, *shape) float32: image b from its own ``torch.Generator(device).manual_seed(seeds[b])``, as the
    reference's weakening, P2P and SD-HRV code does on the CPU (A&E uses a CUDA generator). Returned on the CPU."""
    return torch.cat([torch.randn((1, *shape), generator=torch.Generator(device).manual_seed(int(s)), device=device)
                      for s in seeds]).cpu()


def sequential_latents(seed: int, count: int, shape) -> torch.Tensor:
    """(count, *shape) float32: one CPU generator seeded ``seed``, one draw per image in order (the reference's
    HRV construction)."""
    generator = torch.Generator().manual_seed(int(seed))
    return torch.cat([torch.randn((1, *shape), generator=generator) for _ in range(count)] or [torch.empty(0, *shape)])


# ------------------------------------------------------------------------------------------------ prompts

def encode_prompts(pipe, prompts: list[str], negative_prompt=None, cfg: bool = True,
                   height: int | None = None, width: int | None = None) -> Conditioning:
    """The pipeline's own ``encode_prompt``, through its family (SD: "" or ``negative_prompt`` as negatives; SDXL:
    zeros for an empty negative, pooled embeddings and time ids for ``height`` x ``width``, crop (0, 0); PixArt:
    T5 with the text masks)."""
    if isinstance(negative_prompt, str):  # one negative for every prompt
        negative_prompt = [negative_prompt] * len(prompts)
    return family_of(pipe).encode_prompts(pipe, prompts, negative_prompt, cfg, height, width)


# ------------------------------------------------------------------------------------------------ the loop

class StepHook:
    """Called around each scheduler step; either method may return new latents (or None to keep them).

    ``before(step, t, latents, loop)`` runs before the step's guided UNet call, under autograd when ``grad`` is
    True: it may run conditional-only passes, ``loop.noise(latents, t, step, rows="cond")`` (A&E's update).
    ``after(step, t, latents)`` runs after the scheduler step (P2P's local blending).
    """

    grad = False

    def before(self, step: int, t, latents: torch.Tensor, loop: "DenoisingLoop") -> torch.Tensor | None:
        return None

    def after(self, step: int, t, latents: torch.Tensor) -> torch.Tensor | None:
        return None


class DenoisingLoop:
    """The UNet of one generation, called with the right rows and evaluation index."""

    def __init__(self, pipe, conditioning: Conditioning, guidance_scale: float, hooks: AttentionHooks | None = None):
        self.pipe, self.conditioning, self.guidance_scale, self.hooks = pipe, conditioning, guidance_scale, hooks
        self.cfg = guidance_scale > 1.0 and conditioning.uncond is not None

    def subset(self, rows: torch.Tensor) -> "DenoisingLoop":
        """The same loop (pipeline, guidance, hooks, so the same evaluation index) on samples ``rows`` (a 1-D
        index into the B samples) of its conditioning: ``loop.subset(rows).noise(latents[rows], t, step)``."""
        return DenoisingLoop(self.pipe, self.conditioning.subset(rows), self.guidance_scale, self.hooks)

    def noise(self, latents: torch.Tensor, t, step: int, rows: str = "cfg",
              stop_after: str | None = None) -> torch.Tensor | None:
        """Predicted noise for ``latents`` (B, C, h, w) at timestep ``t``, evaluation ``step``.

        ``rows="cfg"``: one UNet call on [uncond, cond] (or cond alone without CFG), combined by the guidance
        scale. ``rows="cond"``: the conditional rows only, no guidance (a gradient pass). ``stop_after``: the
        module name of a hooked attention layer; the call ends once that layer's controllers have run and None
        is returned (a pass made only for what the controllers read)."""
        guided = rows == "cfg" and self.cfg
        batch = latents.shape[0]
        embeds, added = self.conditioning.rows("cfg" if guided else "cond")
        sample = torch.cat([latents] * 2) if guided else latents
        sample = self.pipe.scheduler.scale_model_input(sample, t)
        if self.hooks is None and stop_after is not None:
            raise ValueError("stop_after needs attention hooks: the loop has no controllers")
        if self.hooks is not None:
            cond = slice(batch, 2 * batch) if guided else slice(0, batch)
            self.hooks.set_call(step, cond, tuple(latents.shape[-2:]), stop_after)
        model = denoiser(self.pipe)
        forward = self.hooks.call_unet if self.hooks is not None else model
        out = family_of(model).predict(forward, model.config, sample, t, embeds, added)  # (B', C, h, w)
        if out is None:  # ended after ``stop_after``
            return None
        if guided:
            uncond, cond = out.chunk(2)
            out = uncond + self.guidance_scale * (cond - uncond)
        return out


@dataclass
class Generation:
    latents: torch.Tensor  # (B, C, h, w) final latents
    images: np.ndarray | None  # (B, H, W, 3) uint8, when decoded


def num_evaluations(pipe, num_inference_steps: int) -> int:
    """UNet evaluations of a generation (PNDM with 50 steps: 51)."""
    pipe.scheduler.set_timesteps(num_inference_steps)
    return len(pipe.scheduler.timesteps)


def generate(pipe, prompts: list[str], latents: torch.Tensor, *, num_inference_steps: int = 50,
             guidance_scale: float = 7.5, negative_prompt=None, controllers=(), step_hooks=(),
             decode: str | None = None, conditioning: Conditioning | None = None,
             height: int | None = None, width: int | None = None, graphs=None) -> Generation:
    """Denoise ``latents`` (B, C, h, w), unscaled noise (e.g. ``seed_latents``), for ``prompts`` (B).

    ``controllers`` are installed on the attention layers for this generation; ``step_hooks`` run around each
    step; ``decode`` ("truncate" | "round" | None) gives uint8 images, None skips the VAE. ``graphs`` (a
    ``core/graphs.GraphCache``) captures the guided UNet call once and replays it at every step: only for
    controllers that do the same at every guided call (A&E's store, which records only in its own passes)."""
    if decode not in (None, *DECODE_POLICIES):
        raise ValueError(f"decode must be one of {DECODE_POLICIES} or None, not {decode!r}")
    if len(prompts) != latents.shape[0]:
        raise ValueError(f"{len(prompts)} prompts for {latents.shape[0]} latents")
    unet = denoiser(pipe)
    device, dtype = pipe._execution_device, unet.dtype
    scheduler = pipe.scheduler
    with torch.no_grad():
        if conditioning is None:
            conditioning = encode_prompts(pipe, list(prompts), negative_prompt, guidance_scale > 1.0, height, width)
        scheduler.set_timesteps(num_inference_steps, device=device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(0)
        latents = latents.to(device, dtype) * scheduler.init_noise_sigma
        extra = pipe.prepare_extra_step_kwargs(None, 0.0)
    hooks = AttentionHooks(unet, controllers) if controllers else None
    loop = DenoisingLoop(pipe, conditioning, guidance_scale, hooks)
    with hooks if hooks is not None else nullcontext():
        for step, t in enumerate(scheduler.timesteps):
            for hook in step_hooks:
                with torch.enable_grad() if hook.grad else torch.no_grad():
                    new = hook.before(step, t, latents, loop)
                if new is not None:
                    latents = new.detach()
            with torch.no_grad():
                noise = guided_noise(loop, latents, t, step, graphs)
                latents = scheduler.step(noise, t, latents, **extra, return_dict=False)[0]
                for hook in step_hooks:
                    new = hook.after(step, t, latents)
                    if new is not None:
                        latents = new
    images = decode_latents(pipe, latents, decode) if decode else None
    return Generation(latents, images)


def guided_noise(loop: DenoisingLoop, latents: torch.Tensor, t, step: int, graphs=None) -> torch.Tensor:
    """``loop.noise(latents, t, step)``, replayed from a CUDA graph of ``graphs`` when given (on CUDA)."""
    if graphs is None:
        return loop.noise(latents, t, step)
    make = lambda: lambda x, timestep: (loop.noise(x, timestep, step),)  # noqa: E731
    return graphs(("guided", tuple(latents.shape)), make, latents, torch.as_tensor(t, device=latents.device))[0]


# ------------------------------------------------------------------------------------------------ decoding

def to_uint8(images: torch.Tensor, policy: str = "truncate") -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8 on the host, converted on the device in float32.

    ``truncate``: ``(x * 255).astype(uint8)``, the reference's own loops. ``round``: round half to even, the
    values of diffusers' PIL output (``numpy_to_pil``)."""
    scaled = images.float().mul(255)
    if policy == "round":
        scaled = scaled.round()
    elif policy != "truncate":
        raise ValueError(f"decode policy must be one of {DECODE_POLICIES}, not {policy!r}")
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def decode_latents(pipe, latents: torch.Tensor, policy: str = "truncate") -> np.ndarray:
    """Latents -> (B, H, W, 3) uint8 through the VAE, as the pipelines decode (SDXL upcasts an fp16 VAE that
    asks for it; no watermark), then ``to_uint8``."""
    vae = pipe.vae
    upcast = is_sdxl(pipe) and vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        vae.to(torch.float32)
    latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if is_sdxl(pipe) and mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    images = vae.decode(latents, return_dict=False)[0]
    if upcast:
        vae.to(torch.float16)
    return to_uint8((images * 0.5 + 0.5).clamp(0, 1), policy)
