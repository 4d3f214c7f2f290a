"""A&E and A&E-HRV: against diffusers' own pipeline, the map stores against direct per-head computations, the loss,
thresholds, refinement and step sizes against direct procedural code, batching, memory design, dtypes."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrv_diffusion.apps import attend_excite as ae
from hrv_diffusion.apps.attend_excite import (AttendExcite, AttendExciteSettings, Targets, attend_excite_loss,
                                              generate_attend_excite, max_attention, smoothing_kernel, step_sizes,
                                              token_map_store)
from hrv_diffusion.core.attention import AttentionHooks, Controller, HookedAttnProcessor
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import latent_shape, num_evaluations, seed_latents
from hrv_diffusion.core.models import load_pipeline

PROMPT = "a cat and a frog"  # SOT a cat and a frog EOT: targets 2 and 5, EOT at 6


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd")


def settings(**kw) -> AttendExciteSettings:
    base = dict(mode="standard", attention_res=8, num_inference_steps=6, max_iter_to_alter=4,
                thresholds={0: 0.05, 2: 0.5})
    return AttendExciteSettings(**{**base, **kw})


def targets(batch: int = 1) -> Targets:
    return Targets.build([[2, 5]] * batch, [6] * batch)


# ------------------------------------------------------------------------------------------------ the oracle

def test_standard_equals_diffusers_pipeline(pipe):
    """Standard A&E with diffusers' options (tokens 1..75, its kernel, always smoothed) equals diffusers'
    StableDiffusionAttendAndExcitePipeline on tiny-sd: same generators, token indices, PNDM and guidance.

    Tolerance: diffusers runs explicit attention (baddbmm, softmax, bmm) in every layer and one sample per
    gradient pass; we run fused SDPA except where maps are read, and the seeds as one batch. Those differ by float32
    rounding (~1e-7 relative per UNet call), and the 13 gradient steps of size ~20 carry it into the final latents
    (max |latent| ~ 24). Each option alone moves the latents 20x to 10000x more than that (asserted below)."""
    from diffusers import StableDiffusionAttendAndExcitePipeline

    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    oracle = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
    oracle.set_progress_bar_config(disable=True)
    seeds = [1, 2]
    s = settings(smooth_attentions=True, kernel="diffusers", token_slice="1:-1")
    expected = oracle([PROMPT] * 2, token_indices=[[2, 5]] * 2, num_inference_steps=s.num_inference_steps,
                      guidance_scale=7.5, generator=[torch.Generator().manual_seed(x) for x in seeds],
                      max_iter_to_alter=s.max_iter_to_alter, thresholds=s.thresholds, scale_factor=20,
                      attn_res=(8, 8), output_type="latent").images
    ours = generate_attend_excite(pipe, [PROMPT] * 2, seed_latents(seeds, latent_shape(pipe)), targets(2), s,
                                  decode=None)
    scale = expected.abs().max()
    torch.testing.assert_close(ours.latents, expected, atol=float(scale) * 5e-6, rtol=0)
    # each option alone moves the latents far more than the tolerance
    for other in (replace(s, mode="sd"), replace(s, kernel="gaussian"), replace(s, token_slice="1:77")):
        moved = generate_attend_excite(pipe, [PROMPT] * 2, seed_latents(seeds, latent_shape(pipe)), targets(2), other,
                                       decode=None).latents
        assert (moved - expected).abs().max() > 20 * float(scale) * 5e-6, other
    # the records: refinement ran at both threshold evaluations, to its limit (random weights)
    for record in ours.records:
        assert [r["step"] for r in record] == [0, 1, 2, 3]
        assert [r.get("refinement_iterations") for r in record] == [20, None, 20, None]
        assert all(r["updated"] for r in record)


def test_standard_equals_diffusers_pipeline_on_tiny_sd2():
    """The same oracle on SD 2.x's miniature (v-prediction, "!" padding, 8 x 8 layers in two down and three up
    blocks), at the same tolerance; no refinement (no thresholds), to stay fast."""
    from diffusers import StableDiffusionAttendAndExcitePipeline

    pipe = load_pipeline("tiny-sd2")
    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    oracle = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
    oracle.set_progress_bar_config(disable=True)
    s = settings(smooth_attentions=True, kernel="diffusers", token_slice="1:-1", thresholds={})
    expected = oracle([PROMPT], token_indices=[[2, 5]], num_inference_steps=s.num_inference_steps,
                      guidance_scale=7.5, generator=[torch.Generator().manual_seed(1)],
                      max_iter_to_alter=s.max_iter_to_alter, thresholds=s.thresholds, scale_factor=20,
                      attn_res=(8, 8), output_type="latent").images
    ours = generate_attend_excite(pipe, [PROMPT], seed_latents([1], latent_shape(pipe)), targets(1), s, decode=None)
    torch.testing.assert_close(ours.latents, expected, atol=float(expected.abs().max()) * 5e-6, rtol=0)
    assert [r["step"] for r in ours.records[0]] == [0, 1, 2, 3] and all(r["updated"] for r in ours.records[0])


# ------------------------------------------------------------------------------------------------ the maps

class Capture(Controller):
    """Keeps every CA layer's conditional probabilities (an independent reader)."""

    def __init__(self):
        self.probs = {}

    def reads_probs(self, layer, call):
        return True

    def read_probs(self, layer, call, probs):
        self.probs[layer.module_name] = probs.detach().clone()


def one_pass(pipe, controllers, seed=3):
    z = seed_latents([seed], latent_shape(pipe))
    cond, _ = pipe.encode_prompt([PROMPT], "cpu", 1, False)
    with torch.no_grad(), AttentionHooks(pipe.unet, controllers, cfg=False):
        pipe.unet(z, 500, encoder_hidden_states=cond)


def direct_resample(maps: torch.Tensor, size) -> torch.Tensor:
    """The spec's resampling with torchvision's blur, per axis: (N, C, h, w) -> (N, C, *size) (an int: square)."""
    from torchvision.transforms.functional import gaussian_blur

    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    ks = [res // target + 1 if res > target else 1 for res, target in zip(maps.shape[-2:], size)]  # (k_h, k_w)
    if max(ks) > 1:
        sigmas = [0.3 * ((k - 1) * 0.5 - 1) + 0.8 for k in ks]
        maps = gaussian_blur(maps, [ks[1], ks[0]], [sigmas[1], sigmas[0]])  # torchvision: (x, y)
    return F.interpolate(maps, size=size, mode="bicubic", align_corners=False)


@pytest.mark.parametrize("size", [4, 8, 16])
def test_uniform_hrv_equals_plain_head_average(pipe, size):
    """A&E-HRV's map with an HRV row of ones = the mean over all CA heads of each head's resampled map."""
    layout = head_layout(pipe.unet)
    store = token_map_store(layout, settings(mode="hrv"), np.ones((1, layout.num_heads)), size)
    capture = Capture()
    one_pass(pipe, [capture, store])
    per_head = []
    for layer in layout.layers:
        p = capture.probs[layer.module_name][0]  # (h, N, T)
        grids = p.permute(0, 2, 1).reshape(layer.heads, 77, *layer.resolution)  # (h, T, r, r)
        per_head.append(direct_resample(grids, size))
    expected = torch.cat(per_head).mean(0).permute(1, 2, 0)  # (R, R, T)
    torch.testing.assert_close(store.maps[0, 0], expected, atol=2e-6, rtol=1e-5)


def test_hrv_weights_and_standard_store(pipe):
    """A&E-HRV: group g = Σ_h HRV[g,h]/H · resampled map; standard: mean over the heads of the layers at R."""
    layout = head_layout(pipe.unet)
    hrv = np.random.default_rng(0).random((2, layout.num_heads)).astype(np.float32) * 3
    store = token_map_store(layout, settings(mode="hrv"), hrv, 8)
    standard = token_map_store(layout, settings(mode="standard"), None, 8)
    capture = Capture()
    one_pass(pipe, [capture, store, standard])
    heads, at_8 = [], []
    for layer in layout.layers:
        p = capture.probs[layer.module_name][0]
        grids = p.permute(0, 2, 1).reshape(layer.heads, 77, *layer.resolution)
        heads.append(direct_resample(grids, 8))
        if layer.resolution == (8, 8):
            at_8.append(grids)
    heads = torch.cat(heads)  # (H, T, 8, 8)
    for g in range(2):
        expected = (torch.from_numpy(hrv[g])[:, None, None, None] * heads).sum(0) / layout.num_heads
        torch.testing.assert_close(store.maps[0, g], expected.permute(1, 2, 0), atol=2e-6, rtol=1e-5)
    assert len(at_8) == 4  # down 1, mid, up 0 (two layers): 16 heads
    torch.testing.assert_close(standard.maps[0, 0], torch.cat(at_8).mean(0).permute(1, 2, 0), atol=1e-6, rtol=1e-5)


def direct_token_maps(direct, layout, hrv, size):
    """From ``DirectProbs`` calls of one conditional pass: A&E-HRV's maps (G, R_h, R_w, T) computed head by head on
    each layer's real grid, and the real grid of every layer."""
    offsets = {layer.module_name: layer.offset for layer in layout.layers}
    total, grids = 0, {}
    for name, (h, w), probs in direct.calls:
        grids[name] = (h, w)
        grid = probs[0].float().permute(0, 2, 1).reshape(probs.shape[1], 77, h, w)  # (heads, T, h, w)
        resampled = direct_resample(grid, size)  # (heads, T, R_h, R_w)
        weights = torch.from_numpy(hrv[:, offsets[name] : offsets[name] + probs.shape[1]]).float() / layout.num_heads
        total = total + torch.einsum("gh,htyx->gyxt", weights, resampled)
    return total, grids


def test_stores_at_a_non_square_size(pipe):
    """64 x 32 pixels (32 x 16 latents): A&E-HRV resamples each layer's real grid (32 x 16, 16 x 8) to R x R; standard
    A&E with R = 16 averages the layers whose grid is 16 rows high, on their 16 x 8 grid."""
    from direct_attention import DirectProbs

    layout = head_layout(pipe.unet)
    hrv = np.random.default_rng(2).random((2, layout.num_heads)).astype(np.float32) * 3
    z = seed_latents([3], latent_shape(pipe, 64, 32))
    store = token_map_store(layout, settings(mode="hrv"), hrv, 4, latent=(32, 16))
    standard = token_map_store(layout, settings(mode="standard"), None, 16, latent=(32, 16))
    cond, _ = pipe.encode_prompt([PROMPT], "cpu", 1, False)
    with torch.no_grad(), AttentionHooks(pipe.unet, [store, standard], cfg=False), DirectProbs(pipe.unet) as direct:
        pipe.unet(z, 500, encoder_hidden_states=cond)
    expected, grids = direct_token_maps(direct, layout, hrv, 4)
    assert set(grids.values()) == {(32, 16), (16, 8)}
    assert store.maps.shape == (1, 2, 4, 4, 77)
    torch.testing.assert_close(store.maps[0], expected, atol=2e-6, rtol=1e-5)
    at_16 = [probs[0].float() for name, grid, probs in direct.calls if grid == (16, 8)]  # (heads, N, T) each
    mean = torch.cat(at_16).mean(0).reshape(16, 8, 77)
    assert standard.maps.shape == (1, 1, 16, 8, 77)
    torch.testing.assert_close(standard.maps[0, 0], mean, atol=1e-6, rtol=1e-5)


def test_hrv_mode_at_a_non_square_size_against_direct_maps(pipe):
    """generate_attend_excite at 64 x 32 pixels: the first evaluation's max attention per target equals the one
    computed from direct maps of the same UNet pass; the images have the asked size."""
    from direct_attention import DirectProbs

    layout = head_layout(pipe.unet)
    hrv = np.random.default_rng(3).random((2, layout.num_heads)).astype(np.float32) * 3
    s = settings(mode="hrv", attention_res=4, num_inference_steps=3, max_iter_to_alter=2, thresholds={0: 0.05},
                 max_refinement_steps=2)
    z = seed_latents([7], latent_shape(pipe, 64, 32))
    t = Targets.build([[2, 5]], [6], [0, 1])
    out = generate_attend_excite(pipe, [PROMPT], z, t, s, hrv, height=64, width=32)
    assert out.images.shape == (1, 64, 32, 3) and out.latents.shape[-2:] == (32, 16)
    pipe.scheduler.set_timesteps(s.num_inference_steps)
    first = pipe.scheduler.timesteps[0]
    cond, _ = pipe.encode_prompt([PROMPT], "cpu", 1, False)
    sample = pipe.scheduler.scale_model_input(z * pipe.scheduler.init_noise_sigma, first)
    with torch.no_grad(), DirectProbs(pipe.unet) as direct:
        pipe.unet(sample, first, encoder_hidden_states=cond)
    maps, _ = direct_token_maps(direct, layout, hrv, 4)
    expected = max_attention(maps[None], t, s)[0]  # (K,)
    np.testing.assert_allclose(out.records[0][0]["max_attention"], expected.tolist(), rtol=1e-4, atol=1e-6)


def test_standard_equals_diffusers_pipeline_at_a_non_square_size(pipe):
    """48 x 32 pixels: diffusers' pipeline with ``attn_res=(12, 8)`` reads the layers whose calls have 96 queries;
    standard A&E with R = 12 reads the layers whose grid is 12 rows high at this size: the same maps, the same
    update (tolerance as in ``test_standard_equals_diffusers_pipeline``)."""
    from diffusers import StableDiffusionAttendAndExcitePipeline

    components = {k: v for k, v in pipe.components.items() if k != "image_encoder"}
    oracle = StableDiffusionAttendAndExcitePipeline(**components, requires_safety_checker=False)
    oracle.set_progress_bar_config(disable=True)
    s = settings(attention_res=12, smooth_attentions=True, kernel="diffusers", token_slice="1:-1",
                 num_inference_steps=4, max_iter_to_alter=3, thresholds={0: 0.05})
    expected = oracle([PROMPT], token_indices=[2, 5], num_inference_steps=s.num_inference_steps, height=48, width=32,
                      guidance_scale=7.5, generator=torch.Generator().manual_seed(1), max_iter_to_alter=3,
                      thresholds=s.thresholds, scale_factor=20, attn_res=(12, 8), output_type="latent").images
    ours = generate_attend_excite(pipe, [PROMPT], seed_latents([1], latent_shape(pipe, 48, 32)), targets(), s,
                                  decode=None, height=48, width=32)
    assert ours.latents.shape[-2:] == (24, 16)
    scale = expected.abs().max()
    torch.testing.assert_close(ours.latents, expected, atol=float(scale) * 5e-6, rtol=0)
    assert [r["step"] for r in ours.records[0]] == [0, 1, 2] and "refinement_iterations" in ours.records[0][0]


def test_standard_needs_layers_at_its_resolution(pipe):
    from hrv_diffusion.errors import UserError

    with pytest.raises(UserError, match="8x8, 16x16"):
        token_map_store(head_layout(pipe.unet), settings(mode="standard"), None, 4)


# ------------------------------------------------------------------------------------------------ the math

def test_kernels():
    """The reference's true Gaussian (σ 0.5) and diffusers' kernel (σ √2 larger), 1-D weights and centres."""
    true = smoothing_kernel(3, 0.5, "gaussian")
    wide = smoothing_kernel(3, 0.5, "diffusers")
    torch.testing.assert_close(true.sum(0), torch.tensor([0.1065, 0.7870, 0.1065]), atol=1e-4, rtol=0)
    torch.testing.assert_close(wide.sum(0), torch.tensor([0.2119, 0.5761, 0.2119]), atol=1e-4, rtol=0)
    assert abs(true[1, 1] - 0.619) < 1e-3 and abs(wide[1, 1] - 0.332) < 1e-3
    torch.testing.assert_close(wide, smoothing_kernel(3, 0.5 * 2**0.5, "gaussian"))
    from diffusers.pipelines.deprecated.stable_diffusion_attend_and_excite.pipeline_stable_diffusion_attend_and_excite import GaussianSmoothing  # noqa: E501

    torch.testing.assert_close(wide, GaussianSmoothing().weight[0, 0])


def direct_max(maps, indices, start, stop, kernel=None):
    """The per-token score written out as diffusers / the reference do it, one sample and token at a time."""
    out = []
    for b in range(maps.shape[0]):
        row = []
        for k, index in enumerate(indices):
            a = maps[b, k][..., start:stop] * 100
            a = torch.softmax(a, dim=-1)
            image = a[:, :, index - start]
            if kernel is not None:
                pad = kernel.shape[-1] // 2
                image = F.conv2d(F.pad(image[None, None], (pad,) * 4, mode="reflect"), kernel[None, None])[0, 0]
            row.append(image.max())
        out.append(torch.stack(row))
    return torch.stack(out)


@pytest.mark.parametrize("token_slice,start,stop", [("1:77", 1, 77), ("1:-1", 1, 76), ("1:eot", 1, 6)])
@pytest.mark.parametrize("smooth", [False, True])
def test_max_attention_direct(token_slice, start, stop, smooth):
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(2, 2, 8, 8, 77, generator=g) / 10  # (B, G, R, R, T)
    s = settings(mode="hrv", token_slice=token_slice, smooth_attentions=smooth, sigma=0.7, kernel_size=5)
    got = max_attention(maps, Targets.build([[2, 5]] * 2, [6, 6]), s)
    kernel = smoothing_kernel(5, 0.7) if smooth else None
    torch.testing.assert_close(got, direct_max(maps, [2, 5], start, stop, kernel))


def test_word_targets_take_the_max_over_pieces():
    maps = torch.rand(1, 1, 4, 4, 77, generator=torch.Generator().manual_seed(1))
    s = settings()
    pieces = max_attention(maps, Targets.build([[[3, 4, 5], [7]]], [9], [0, 0]), s)
    single = max_attention(maps, Targets.build([[3, 4, 5, 7]], [9], [0, 0, 0, 0]), s)
    assert pieces[0, 0] == single[0, :3].max() and pieces[0, 1] == single[0, 3]


def test_loss_follows_pythons_max():
    m = torch.tensor([[0.3, 0.6], [0.2, 0.2], [1.2, 1.5], [0.9, 1.1]], requires_grad=True)
    loss = attend_excite_loss(m)
    for b in range(4):  # the reference: max(max(0, 1 - m_k) for k), an int 0 when no term is positive
        expected = max(max(0, 1.0 - float(x)) for x in m[b].detach())
        assert float(loss[b]) == pytest.approx(expected)
    loss.sum().backward()
    # only the first worst token of each sample gets the gradient
    assert m.grad.tolist() == [[-1.0, 0.0], [-1.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]


def test_step_sizes():
    a = step_sizes(20, 51)
    assert len(a) == 51 and a[0] == 20 and a[-1] == pytest.approx(20 * 0.5**0.5)
    assert [round(a[i], 2) for i in (10, 20, 24)] == [18.97, 17.89, 17.44]
    np.testing.assert_allclose(step_sizes(10, 5, (2.0, 1.0)), 10 * np.sqrt([2.0, 1.75, 1.5, 1.25, 1.0]))


# ------------------------------------------------------------------------------------------------ the update

class Analytic(AttendExcite):
    """The hook with an analytic score in place of the UNet: m_k = sigmoid(w_k · z + c_k), per sample."""

    def __init__(self, s, w, c, batch):
        self.w, self.c = w, c
        super().__init__(None, Targets.build([[1, 2]] * batch, [3] * batch), s, 11)

    def _scores(self, z, t, step, loop, rows):
        self.passes += 1
        maxima = torch.sigmoid(torch.einsum("bchw,kchw->bk", z, self.w) + self.c)
        return attend_excite_loss(maxima), maxima


def direct_update(z, s, w, c, alphas, steps):
    """diffusers' procedure for one sample (1, C, h, w), written out; returns the latents and refinement counts."""
    score = lambda x: torch.sigmoid(torch.einsum("bchw,kchw->bk", x, w) + c)[0]  # noqa: E731

    def loss_of(m):
        return max(max(0, 1.0 - v) for v in m)

    def step(x, loss, alpha):
        return x - alpha * torch.autograd.grad(loss, [x])[0]

    counts = []
    for i in range(steps):
        x = z.clone().requires_grad_(True)
        loss = loss_of(score(x))
        if i in s.thresholds and loss > 1.0 - s.thresholds[i]:
            n, target = 0, max(0, 1.0 - s.thresholds[i])
            while loss > target:
                n += 1
                x = x.clone().detach().requires_grad_(True)
                loss = loss_of(score(x))
                if loss != 0:
                    x = step(x, loss, alphas[i])
                if n >= s.max_refinement_steps:
                    break
            x = x.clone().detach().requires_grad_(True)
            loss = loss_of(score(x))
            counts.append(n)
        if i < s.max_iter_to_alter and loss != 0:
            x = step(x, loss, alphas[i])
        z = x.detach()
    return z, counts


def test_refinement_thresholds_and_steps_against_direct_code():
    """Per-sample losses, refinement masks and iteration caps of the batched hook = the procedural loop of one
    sample; the samples reach their targets after different numbers of iterations (or never)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2, 4, 3, 3, generator=g) * 0.2
    c = torch.tensor([-2.0, -0.5])
    z0 = torch.randn(3, 4, 3, 3, generator=g)
    z0[2] = -z0[2] * 4  # a sample far from the target
    s = settings(mode="hrv", max_iter_to_alter=6, thresholds={0: 0.05, 3: 0.5, 7: 0.9}, max_refinement_steps=7,
                 scale_factor=4.0)
    hook = Analytic(s, w, c, 3)
    z = z0.clone()
    for i in range(9):
        with torch.enable_grad():
            new = hook.before(i, 0, z, None)
        z = z if new is None else new
    for b in range(3):
        expected, counts = direct_update(z0[b : b + 1].clone(), s, w, c, hook.alphas, 9)
        torch.testing.assert_close(z[b : b + 1], expected, atol=1e-6, rtol=1e-6)
        got = [r["refinement_iterations"] for r in hook.records[b] if r.get("refinement_iterations")]
        assert got == [n for n in counts if n], b
        assert [r["step"] for r in hook.records[b]] == [0, 1, 2, 3, 4, 5, 7]  # no pass at 6 and 8
    iterations = [sum(r.get("refinement_iterations", 0) for r in hook.records[b]) for b in range(3)]
    assert len(set(iterations)) > 1  # the samples refined differently
    met = [r["threshold_met"] for b in range(3) for r in hook.records[b] if r.get("refinement_iterations")]
    assert True in met and False in met  # refinement reached some targets and missed others


def test_batched_seeds_equal_one_at_a_time_hrv(pipe):
    layout = head_layout(pipe.unet)
    hrv = np.random.default_rng(1).random((2, layout.num_heads)) * 2
    s = settings(mode="hrv", attention_res=4, smooth_attentions=True, max_refinement_steps=3,
                 thresholds={0: 0.05, 2: 0.5}, num_inference_steps=4)
    seeds = [5, 6, 7]
    t = Targets.build([[2, [4, 5]]] * 3, [6] * 3, [0, 1])
    batched = generate_attend_excite(pipe, [PROMPT] * 3, seed_latents(seeds, latent_shape(pipe)), t, s, hrv,
                                     decode=None)
    for b, seed in enumerate(seeds):
        single = generate_attend_excite(pipe, [PROMPT], seed_latents([seed], latent_shape(pipe)),
                                        t.subset(torch.tensor([b])), s, hrv, decode=None)
        torch.testing.assert_close(batched.latents[b : b + 1], single.latents, atol=1e-4, rtol=1e-5)
        assert [r["loss"] for r in batched.records[b]] == pytest.approx([r["loss"] for r in single.records[0]],
                                                                        abs=1e-5)


def test_early_exit_gives_the_same_update(pipe):
    s = settings(mode="standard", num_inference_steps=3, max_iter_to_alter=2, thresholds={})
    latents = seed_latents([4], latent_shape(pipe))
    full = generate_attend_excite(pipe, [PROMPT], latents, targets(), s, decode=None, early_exit=False)
    early = generate_attend_excite(pipe, [PROMPT], latents, targets(), s, decode=None, early_exit=True)
    torch.testing.assert_close(early.latents, full.latents, atol=1e-6, rtol=1e-6)


def test_plain_sd_mode_is_diffusers_plain_generation(pipe):
    """Plain-SD mode = diffusers' own StableDiffusionPipeline from the same latents: its latents and its PIL
    images (rounded), bit for bit, and no gradient pass."""
    latents = seed_latents([4, 5], latent_shape(pipe))
    call = dict(latents=latents, num_inference_steps=4, guidance_scale=7.5)
    expected = pipe([PROMPT] * 2, output_type="latent", **call).images
    pixels = np.stack([np.asarray(image) for image in pipe([PROMPT] * 2, output_type="pil", **call).images])
    ours = generate_attend_excite(pipe, [PROMPT] * 2, latents, targets(2), settings(mode="sd", num_inference_steps=4))
    torch.testing.assert_close(ours.latents, expected, atol=0, rtol=0)
    assert ours.images.dtype == np.uint8 and np.array_equal(ours.images, pixels)
    assert ours.gradient_passes == 0 and ours.records == [[], []]


def test_memory_design(pipe, monkeypatch):
    """Explicit probabilities only in gradient passes, only for the conditional rows and the layers the loss reads;
    no gradient pass at evaluations that neither step nor refine; the weights' requires_grad is restored."""
    calls = []
    original = HookedAttnProcessor._probs

    def spy(attn, query, key, mask, scale):
        calls.append((query.shape[0], query.shape[2], torch.is_grad_enabled()))
        return original(attn, query, key, mask, scale)

    monkeypatch.setattr(HookedAttnProcessor, "_probs", staticmethod(spy))
    s = settings(mode="standard", num_inference_steps=6, max_iter_to_alter=2, thresholds={4: 0.0})
    out = generate_attend_excite(pipe, [PROMPT] * 2, seed_latents([1, 2], latent_shape(pipe)), targets(2), s,
                                 decode=None)
    # passes at evaluations 0, 1 (steps) and 4 (a threshold of 0 asks nothing: no refinement, no step)
    assert out.gradient_passes == 3
    assert [r["step"] for r in out.records[0]] == [0, 1, 4]
    # the 4 CA layers at 8x8, batch 2 (conditional rows), with autograd; nothing at 16x16, nothing in CFG passes
    assert calls == [(2, 64, True)] * 4 * 3
    assert all(p.requires_grad for p in pipe.unet.parameters())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_runs(dtype):
    pipe = load_pipeline("tiny-sd", dtype=dtype)
    s = settings(mode="hrv", attention_res=8, num_inference_steps=2, max_iter_to_alter=2, thresholds={0: 0.05},
                 max_refinement_steps=2)
    hrv = np.ones((1, head_layout(pipe.unet).num_heads))
    out = generate_attend_excite(pipe, [PROMPT], seed_latents([1], latent_shape(pipe)),
                                 Targets.build([[2, 5]], [6], [0, 0]), s, hrv)
    assert out.latents.dtype == dtype and torch.isfinite(out.latents.float()).all()
    assert out.images.shape == (1, 32, 32, 3) and out.records[0][0]["refinement_iterations"] == 2


def test_settings_refuse_bad_values():
    from hrv_diffusion.errors import UserError

    for bad in (dict(mode="x"), dict(token_slice="2:5"), dict(kernel="box"), dict(kernel_size=4), dict(sigma=0),
                dict(attention_res=0), dict(max_refinement_steps=0), dict(scale_range=(1.0,))):
        with pytest.raises(UserError):
            AttendExciteSettings(**bad)


def test_num_evaluations_schedule(pipe):
    assert num_evaluations(pipe, 50) == 51 and len(ae.step_sizes(20, num_evaluations(pipe, 50))) == 51


def test_graphed_pass_function_equals_the_eager_passes(pipe):
    """The function a CUDA graph captures (loss, maxima and gradient in one pass; refinement subsets; the guided
    call through the cache), run as it is off CUDA, gives the eager path's latents, records and pass count exactly."""
    layout = head_layout(pipe.unet)
    hrv = np.random.default_rng(3).dirichlet(np.ones(layout.num_heads), size=2) * layout.num_heads
    s = settings(mode="hrv", attention_res=4, smooth_attentions=True, num_inference_steps=3, max_iter_to_alter=2,
                 thresholds={0: 0.05}, max_refinement_steps=2)
    runs = [generate_attend_excite(pipe, [PROMPT] * 2, seed_latents([4, 5], latent_shape(pipe)),
                                   Targets.build([[2, 5]] * 2, [6] * 2, [0, 1]), s, hrv, decode=None,
                                   cuda_graphs=graphs) for graphs in (False, True)]
    torch.testing.assert_close(runs[1].latents, runs[0].latents, rtol=0, atol=0)
    assert runs[1].records == runs[0].records
    assert runs[1].gradient_passes == runs[0].gradient_passes > 2
