"""The one denoising loop (core/loop.py) on the tiny pipelines, CPU.

Oracles: diffusers' own ``pipe(...)`` for the plain loop (same numbers, bit for bit), autograd against central
finite differences in float64 for gradients through attention maps, and direct computations elsewhere.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from hrv_diffusion.core.attention import Controller
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import (StepHook, decode_latents, encode_prompts, generate, latent_shape,
                                     num_evaluations, seed_latents, sequential_latents, to_uint8)
from hrv_diffusion.core.maps import AttentionMaps
from hrv_diffusion.core.models import load_pipeline

MODELS = ["tiny-sd", "tiny-sd2", "tiny-sdxl"]  # tiny-sd2: v-prediction
PROMPTS = ["a photo of a cat", "a red car"]
STEPS = 3  # PNDM: 4 evaluations


@pytest.fixture(scope="module")
def pipes():
    return {name: load_pipeline(name) for name in MODELS}


def plain(pipe, prompts, latents, output_type="latent", **kw):
    kw.setdefault("guidance_scale", 7.5)  # the paper's (SDXL's pipeline default is 5.0)
    with torch.no_grad():
        return pipe(prompts, latents=latents, num_inference_steps=STEPS, output_type=output_type, **kw).images


class Steps(Controller):
    """Records (step, conditional rows shown) of every CA call."""

    def __init__(self):
        self.seen = []

    def observe(self, layer, call, query, key):
        self.seen.append((call.step, query.shape[0]))


# ------------------------------------------------------------------------------------------ same as pipe(...)

@pytest.mark.parametrize("name", MODELS)
def test_latents_equal_the_pipeline_bit_for_bit(pipes, name):
    pipe = pipes[name]
    latents = seed_latents([3, 4], latent_shape(pipe))
    ours = generate(pipe, PROMPTS, latents, num_inference_steps=STEPS).latents
    assert torch.equal(ours, plain(pipe, PROMPTS, latents))


@pytest.mark.parametrize("name", MODELS)
def test_round_decode_equals_the_pipelines_pil_images(pipes, name):
    pipe = pipes[name]
    latents = seed_latents([5, 6], latent_shape(pipe))
    ours = generate(pipe, PROMPTS, latents, num_inference_steps=STEPS, decode="round").images
    pil = plain(pipe, PROMPTS, latents, output_type="pil")
    assert ours.dtype == np.uint8 and ours.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(ours, np.stack([np.asarray(image) for image in pil]))


def test_without_guidance_and_with_a_negative_prompt(pipes):
    pipe = pipes["tiny-sd"]
    latents = seed_latents([7], latent_shape(pipe))
    for kw in ({"guidance_scale": 1.0}, {"negative_prompt": ["blurry"]}):
        ours = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS, **kw).latents
        assert torch.equal(ours, plain(pipe, PROMPTS[:1], latents, **kw))
    # One negative string for a batch of prompts (the pipeline wants a list).
    twice = generate(pipe, PROMPTS, seed_latents([7, 7], latent_shape(pipe)), num_inference_steps=STEPS,
                     negative_prompt="blurry").latents
    alone = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS, negative_prompt="blurry").latents
    torch.testing.assert_close(twice[:1], alone, atol=1e-4, rtol=1e-5)  # batch 2 vs 1: rounding only


def test_another_scheduler_and_its_init_noise_sigma(pipes):
    pipe = pipes["tiny-sdxl"]
    pndm = pipe.scheduler
    try:
        from diffusers import EulerDiscreteScheduler

        pipe.scheduler = EulerDiscreteScheduler.from_config(pndm.config)
        latents = seed_latents([8], latent_shape(pipe))
        ours = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS).latents
        assert pipe.scheduler.init_noise_sigma > 1  # the loop scales the noise, as the pipeline does
        assert torch.equal(ours, plain(pipe, PROMPTS[:1], latents))
    finally:
        pipe.scheduler = pndm


# ------------------------------------------------------------------------------------------ latents and decoding

def test_seed_latents_one_generator_per_image_and_sequential_latents():
    shape = (4, 8, 8)
    batch = seed_latents([1, 2, 1], shape)
    assert batch.shape == (3, *shape) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[0], torch.randn((1, *shape), generator=torch.Generator().manual_seed(1))[0])
    assert torch.equal(batch[0], batch[2]) and not torch.equal(batch[0], batch[1])
    drawn = sequential_latents(22, 3, shape)
    g = torch.Generator().manual_seed(22)
    expected = torch.cat([torch.randn((1, *shape), generator=g) for _ in range(3)])
    assert torch.equal(drawn, expected)
    assert sequential_latents(22, 0, shape).shape == (0, *shape)


def test_to_uint8_truncates_or_rounds():
    from diffusers.image_processor import VaeImageProcessor

    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    images[0, 0, 0, :5] = torch.tensor([0.5 / 255, 1.5 / 255, 254.5 / 255, 1.0, 0.9999 / 255])
    for dtype in (torch.float32, torch.float16):
        x = images.to(dtype)
        pil = np.stack([np.asarray(im) for im in VaeImageProcessor.numpy_to_pil(VaeImageProcessor.pt_to_numpy(x))])
        np.testing.assert_array_equal(to_uint8(x, "round"), pil)  # diffusers' PIL path, halfway cases to even
        reference = (x.float().permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)  # the reference's loops
        np.testing.assert_array_equal(to_uint8(x, "truncate"), reference)
    assert to_uint8(images[:1, :, :1, :5], "truncate")[0, 0, :, 0].tolist() == [0, 1, 254, 255, 0]
    with pytest.raises(ValueError, match="decode"):
        to_uint8(images, "floor")


def test_decode_truncates_by_default_and_never_exceeds_rounding(pipes):
    pipe = pipes["tiny-sd"]
    latents = seed_latents([9], latent_shape(pipe))
    result = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS)
    assert result.images is None  # no VAE unless asked
    truncated, rounded = decode_latents(pipe, result.latents), decode_latents(pipe, result.latents, "round")
    diff = rounded.astype(int) - truncated.astype(int)
    assert diff.min() == 0 and diff.max() == 1 and (diff == 1).any()


def test_bad_arguments(pipes):
    pipe = pipes["tiny-sd"]
    latents = seed_latents([1], latent_shape(pipe))
    with pytest.raises(ValueError, match="decode"):
        generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS, decode="nearest")
    with pytest.raises(ValueError, match="2 prompts for 1 latents"):
        generate(pipe, PROMPTS, latents, num_inference_steps=STEPS)


# ------------------------------------------------------------------------------------------ evaluation index, rows

def test_pndm_50_steps_are_51_evaluations_and_ddim_50(pipes):
    pipe = pipes["tiny-sd"]
    assert num_evaluations(pipe, 50) == 51
    steps = Steps()
    generate(pipe, PROMPTS[:1], seed_latents([1], latent_shape(pipe)), num_inference_steps=50, controllers=[steps])
    layers = len(head_layout(pipe.unet).layers)
    assert [s for s, _ in steps.seen] == [s for s in range(51) for _ in range(layers)]
    pndm, pipe.scheduler = pipe.scheduler, DDIMScheduler.from_config(pipe.scheduler.config)
    try:
        assert num_evaluations(pipe, 50) == 50
    finally:
        pipe.scheduler = pndm


class ExtraPasses(StepHook):
    """Three conditional-only passes per step, with and without autograd: the index must not move."""

    grad = True

    def before(self, step, t, latents, loop):
        for _ in range(3):
            loop.noise(latents.detach().requires_grad_(True), t, step, rows="cond")
        return None


def test_extra_passes_keep_the_evaluation_index_and_show_only_conditional_rows(pipes):
    pipe = pipes["tiny-sdxl"]
    steps = Steps()
    latents = seed_latents([1, 2], latent_shape(pipe))
    with_passes = generate(pipe, PROMPTS, latents, num_inference_steps=STEPS, controllers=[steps],
                           step_hooks=[ExtraPasses()]).latents
    layers = len(head_layout(pipe.unet).layers)
    per_step = [(s, 2) for s in range(STEPS + 1) for _ in range(4 * layers)]  # 3 extra passes + the guided one
    assert steps.seen == per_step  # 2 rows: the conditional ones, in cond-only passes and in the CFG batch of 4
    assert torch.equal(with_passes, generate(pipe, PROMPTS, latents, num_inference_steps=STEPS).latents)


class Replace(StepHook):
    def __init__(self, before_at=None, after_at=None):
        self.before_at, self.after_at, self.calls = before_at, after_at, []

    def before(self, step, t, latents, loop):
        self.calls.append(("before", step, torch.is_grad_enabled()))
        return torch.zeros_like(latents) if step == self.before_at else None

    def after(self, step, t, latents):
        self.calls.append(("after", step, torch.is_grad_enabled()))
        return torch.zeros_like(latents) if step == self.after_at else None


def test_step_hooks_replace_latents_before_and_after_a_step(pipes):
    pipe = pipes["tiny-sd"]
    latents = seed_latents([1], latent_shape(pipe))
    hook = Replace(after_at=STEPS)  # zero the latents after the last step
    out = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS, step_hooks=[hook]).latents
    assert torch.equal(out, torch.zeros_like(out))
    assert hook.calls == [(w, s, False) for s in range(STEPS + 1) for w in ("before", "after")]
    # Replacing before step 0 is starting from other noise.
    zero_start = generate(pipe, PROMPTS[:1], latents, num_inference_steps=STEPS, step_hooks=[Replace(before_at=0)])
    from_zeros = generate(pipe, PROMPTS[:1], torch.zeros_like(latents), num_inference_steps=STEPS)
    assert torch.equal(zero_start.latents, from_zeros.latents)


# ------------------------------------------------------------------------------------------ gradients

def test_gradient_of_an_attention_map_loss_matches_finite_differences():
    """d loss / d latent through the UNet and a map store with autograd (tiny-sd, float64, central differences)."""
    pipe = load_pipeline("tiny-sd").to(dtype=torch.float64)
    layout = head_layout(pipe.unet)
    conditioning = encode_prompts(pipe, ["a red car"], cfg=False)
    store = AttentionMaps(layout, 4, tokens=[2, 3], keep_grad=True)
    t = torch.tensor(501)

    from hrv_diffusion.core.attention import AttentionHooks
    from hrv_diffusion.core.loop import DenoisingLoop

    def loss_of(latents):
        store.reset()
        with AttentionHooks(pipe.unet, [store]) as hooks:
            DenoisingLoop(pipe, conditioning, 1.0, hooks).noise(latents, t, 0, rows="cond")
        maps = store.average()  # (1, 1, 4, 4, 2)
        weights = torch.linspace(-1, 1, 16, dtype=torch.float64).view(4, 4)
        return (maps[..., 0] * weights).sum() + (maps[..., 1] ** 2).sum()  # smooth, so differences converge

    z = seed_latents([11], latent_shape(pipe)).double().requires_grad_(True)
    grad, = torch.autograd.grad(loss_of(z), z)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # directional derivatives along random directions
        v = torch.randn(z.shape, generator=g, dtype=torch.float64)
        eps = 1e-5
        with torch.no_grad():
            numeric = (loss_of(z + eps * v) - loss_of(z - eps * v)) / (2 * eps)
        analytic = (grad * v).sum()
        # measured: relative differences of 1e-10 and below (float64); 1e-6 leaves room for other CPUs
        assert abs(float(numeric - analytic)) <= 1e-6 * abs(float(analytic)) + 1e-12, (float(numeric), float(analytic))
    assert grad.abs().max() > 0


# ------------------------------------------------------------------------------------------ subsets and early stops

@pytest.mark.parametrize("name", MODELS)
def test_subset_is_the_same_loop_on_some_samples(pipes, name):
    """``loop.subset(rows)``: the conditioning (SDXL's pooled embeddings and time ids too) of those samples, the same
    evaluation index and guidance: its noise equals the whole batch's noise at those rows."""
    from hrv_diffusion.core.attention import AttentionHooks
    from hrv_diffusion.core.loop import DenoisingLoop

    pipe = pipes[name]
    prompts = ["a photo of a cat", "a red car", "a blue bird"]
    conditioning = encode_prompts(pipe, prompts)
    latents = seed_latents([1, 2, 3], latent_shape(pipe))
    rows = torch.tensor([2, 0])
    t = torch.tensor(501)
    steps = Steps()
    with torch.no_grad(), AttentionHooks(pipe.unet, [steps]) as hooks:
        loop = DenoisingLoop(pipe, conditioning, 7.5, hooks)
        for which in ("cond", "cfg"):
            whole = loop.noise(latents, t, 4, rows=which)
            steps.seen.clear()
            some = loop.subset(rows).noise(latents[rows], t, 4, rows=which)
            torch.testing.assert_close(some, whole[rows], atol=1e-5, rtol=1e-5)  # batch of 2 vs 3: kernel rounding
            assert {s for s, _ in steps.seen} == {4} and {b for _, b in steps.seen} == {2}
    sub = conditioning.subset(rows)
    assert torch.equal(sub.cond, conditioning.cond[rows]) and torch.equal(sub.uncond, conditioning.uncond[rows])
    if conditioning.added is not None:
        assert all(torch.equal(sub.added[k], conditioning.added[k][rows]) for k in conditioning.added)


@pytest.mark.parametrize("name", MODELS)
def test_noise_stop_after_reads_the_same_maps_and_returns_none(pipes, name):
    """A pass stopped after the store's last layer records exactly the maps of a whole pass, with autograd."""
    from hrv_diffusion.core.attention import AttentionHooks
    from hrv_diffusion.core.loop import DenoisingLoop

    pipe = pipes[name]
    layout = head_layout(pipe.unet)
    conditioning = encode_prompts(pipe, PROMPTS, cfg=False)
    latents = seed_latents([1, 2], latent_shape(pipe)).requires_grad_(True)
    first = layout.layers[: len(layout.layers) // 2]
    store = AttentionMaps(layout, 4, layers={layer.module_name for layer in first}, keep_grad=True)
    assert store.last_layer == first[-1].module_name
    maps = []
    with torch.enable_grad(), AttentionHooks(pipe.unet, [store]) as hooks:
        loop = DenoisingLoop(pipe, conditioning, 1.0, hooks)
        for stop in (None, store.last_layer):
            store.reset()
            out = loop.noise(latents, torch.tensor(501), 0, rows="cond", stop_after=stop)
            assert (out is None) == (stop is not None)
            maps.append(store.maps)
    assert torch.equal(maps[0], maps[1]) and maps[1].requires_grad
    with pytest.raises(ValueError, match="needs attention hooks"):
        DenoisingLoop(pipe, conditioning, 1.0).noise(latents, torch.tensor(501), 0, rows="cond", stop_after="x")
