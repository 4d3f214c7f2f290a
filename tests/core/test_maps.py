"""The attention-map store (core/maps.py): resampling, weighting, aggregation, autograd, bounded memory."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hrv_diffusion.core.attention import Controller
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.maps import AttentionMaps, blur_for, gaussian_blur, resample_maps
from hrv_diffusion.core.models import load_pipeline

STEPS = 2  # PNDM: 3 evaluations


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def pipe(request):
    return load_pipeline(request.param)


class Recorder(Controller):
    """Keeps every CA probability tensor it is shown: the independent record the store is checked against."""

    def __init__(self):
        self.probs = []  # (layer, step, probs (Bc, h, N, T))

    def reads_probs(self, layer, call):
        return True

    def read_probs(self, layer, call, probs):
        self.probs.append((layer, call.step, probs.clone()))


# ------------------------------------------------------------------------------------------ resampling

def test_gaussian_blur_equals_torchvision():
    from torchvision.transforms.functional import gaussian_blur as tv_blur

    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for res, target in ((16, 8), (32, 8), (64, 8), (32, 16)):
        k, sigma = blur_for(res, target)
        torch.testing.assert_close(gaussian_blur(images, (k, k), (sigma, sigma)), tv_blur(images, [k, k], [sigma, sigma]),
                                   atol=1e-6, rtol=1e-6)


def test_blur_kernels_are_the_specs():
    # k = res // R + 1, sigma = 0.3 ((k - 1) / 2 - 1) + 0.8 (OpenCV's default), as A&E-HRV resamples
    assert [blur_for(r, 8)[0] for r in (16, 32, 64)] == [3, 5, 9]
    assert [round(blur_for(r, 8)[1], 6) for r in (16, 32, 64)] == [0.8, 1.1, 1.7]
    assert blur_for(8, 16) == (1, 0.5) and blur_for(16, 16)[0] == 1  # no blur when not shrinking


def test_resample_up_down_and_identity():
    maps = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(1))
    assert resample_maps(maps, (16, 16)) is maps
    up = resample_maps(maps, (32, 32))
    torch.testing.assert_close(up, F.interpolate(maps, size=(32, 32), mode="bicubic", align_corners=False))
    k, s = blur_for(16, 8)
    down = resample_maps(maps, (8, 8))
    torch.testing.assert_close(down, F.interpolate(gaussian_blur(maps, (k, k), (s, s)), size=(8, 8), mode="bicubic",
                                                   align_corners=False))


# ------------------------------------------------------------------------------------------ the store on a UNet

def direct_maps(records, layout, resolution, weights, tokens, steps=None):
    """The store's definition computed by hand, head by head: Σ w[g,h] resample(P_h[..., tokens])."""
    total = None
    for layer, step, probs in records:
        if steps is not None and step not in steps:
            continue
        h, w = layer.resolution
        for head in range(layer.heads):
            grid = probs[:, head, :, tokens].permute(0, 2, 1).reshape(probs.shape[0], len(tokens), h, w)
            resampled = resample_maps(grid, (resolution, resolution)).permute(0, 2, 3, 1)  # (Bc, R, R, K)
            term = weights[:, layer.offset + head].view(1, -1, 1, 1, 1) * resampled[:, None]  # (Bc, G, R, R, K)
            total = term if total is None else total + term
    return total


def test_store_equals_head_by_head_definition(pipe):
    layout = head_layout(pipe.unet)
    latents = seed_latents([1, 2], latent_shape(pipe))
    tokens = [1, 2, 4]
    weights = torch.rand(2, layout.num_heads, generator=torch.Generator().manual_seed(3))  # two groups
    store = AttentionMaps(layout, 8, head_weights=weights, tokens=tokens, steps={0, 2})
    recorder = Recorder()
    generate(pipe, ["a red car", "a blue bird"], latents, num_inference_steps=STEPS, controllers=[store, recorder])
    expected = direct_maps(recorder.probs, layout, 8, weights, tokens, steps={0, 2})
    assert store.maps.shape == (2, 2, 8, 8, 3)
    torch.testing.assert_close(store.maps, expected, atol=1e-5, rtol=1e-5)  # heads reduced before resampling
    assert store.calls == 2 * len(layout.layers)
    torch.testing.assert_close(store.weight_sum, 2 * weights.sum(1))
    torch.testing.assert_close(store.average(), expected / (2 * weights.sum(1)).view(1, 2, 1, 1, 1))


def test_uniform_weights_on_chosen_layers_are_the_plain_head_mean(pipe):
    layout = head_layout(pipe.unet)
    res = layout.layers[0].resolution[0]
    chosen = [layer for layer in layout.layers if layer.resolution == (res, res)]
    store = AttentionMaps(layout, res, layers=lambda layer: layer.resolution == (res, res))
    recorder = Recorder()
    generate(pipe, ["a red car"], seed_latents([5], latent_shape(pipe)), num_inference_steps=STEPS,
             controllers=[store, recorder])
    heads = torch.cat([probs[:, :, :, :] for layer, _, probs in recorder.probs if layer in chosen], dim=1)
    mean = heads.mean(1).reshape(1, res, res, -1)  # (1, R, R, T): mean over heads and evaluations
    torch.testing.assert_close(store.average()[:, 0], mean, atol=1e-6, rtol=1e-6)
    assert set(store.weights) == {layer.module_name for layer in chosen}  # other layers are not read


def test_store_keeps_autograd_only_when_asked(pipe):
    from hrv_diffusion.core.attention import AttentionHooks
    from hrv_diffusion.core.loop import DenoisingLoop, encode_prompts

    layout = head_layout(pipe.unet)
    conditioning = encode_prompts(pipe, ["a red car"], cfg=False)
    z = seed_latents([1], latent_shape(pipe)).requires_grad_(True)
    for keep in (True, False):
        store = AttentionMaps(layout, 4, tokens=[2], keep_grad=keep)
        with torch.enable_grad(), AttentionHooks(pipe.unet, [store]) as hooks:
            DenoisingLoop(pipe, conditioning, 1.0, hooks).noise(z, torch.tensor(500), 0, rows="cond")
        assert store.maps.requires_grad is keep


def test_inactive_store_and_reset(pipe):
    layout = head_layout(pipe.unet)
    store = AttentionMaps(layout, 4)
    store.active = False
    generate(pipe, ["a red car"], seed_latents([1], latent_shape(pipe)), num_inference_steps=STEPS, controllers=[store])
    assert store.maps is None and store.calls == 0
    with pytest.raises(RuntimeError, match="no maps recorded"):
        store.average()
    store.active = True
    generate(pipe, ["a red car"], seed_latents([1], latent_shape(pipe)), num_inference_steps=STEPS, controllers=[store])
    assert store.calls > 0
    store.reset()
    assert store.maps is None and store.calls == 0 and float(store.weight_sum.sum()) == 0


def test_memory_is_bounded_by_what_was_asked(pipe):
    """The store holds one (Bc, G, R, R, K) buffer whatever the number of evaluations."""
    layout = head_layout(pipe.unet)
    store = AttentionMaps(layout, 4, tokens=[1, 2])
    latents = seed_latents([1], latent_shape(pipe))
    generate(pipe, ["a red car"], latents, num_inference_steps=2, controllers=[store])
    short = store.maps.numel()
    store.reset()
    generate(pipe, ["a red car"], latents, num_inference_steps=8, controllers=[store])
    assert store.maps.numel() == short == 1 * 1 * 4 * 4 * 2


def test_bad_weights_shape():
    layout = head_layout(load_pipeline("tiny-sd").unet)
    with pytest.raises(ValueError, match="head_weights"):
        AttentionMaps(layout, 4, head_weights=torch.ones(2, layout.num_heads + 1))


# ------------------------------------------------------------------------------------------ at another size

def test_store_at_a_non_square_size_equals_direct_probabilities(pipe):
    """48 x 32 pixels (24 x 16 latents, not the default 16 x 16): the store equals softmax(Q Kᵀ/√d) computed from
    each layer's inputs, reshaped to the (H, W) its transformer really got, resampled per axis to a non-square R."""
    from direct_attention import DirectProbs

    layout = head_layout(pipe.unet)
    latents = seed_latents([1, 2], latent_shape(pipe, 48, 32))
    assert latents.shape[-2:] == (24, 16)
    tokens, size = [1, 2, 4], (6, 4)
    weights = torch.rand(2, layout.num_heads, generator=torch.Generator().manual_seed(4))
    store = AttentionMaps(layout, size, head_weights=weights, tokens=tokens)
    with DirectProbs(pipe.unet) as direct:
        generate(pipe, ["a red car", "a blue bird"], latents, num_inference_steps=STEPS, controllers=[store],
                 height=48, width=32)
    grids = {grid for _, grid, _ in direct.calls}  # the real grids, none of them the default 16 x 16 or 8 x 8
    assert (12, 8) in grids and grids <= {(24, 16), (12, 8), (6, 4), (3, 2)}  # (6, 4), (3, 2): tiny-sd2's 4 blocks
    expected = None
    offsets = {layer.module_name: layer.offset for layer in layout.layers}
    for name, (h, w), probs in direct.calls:
        cond = probs[probs.shape[0] // 2 :].float()  # (Bc, h, N, T): [uncond, cond] under CFG
        for head in range(cond.shape[1]):
            grid = cond[:, head, :, tokens].permute(0, 2, 1).reshape(cond.shape[0], len(tokens), h, w)
            resampled = resample_maps(grid, size).permute(0, 2, 3, 1)  # (Bc, R_h, R_w, K)
            term = weights[:, offsets[name] + head].view(1, -1, 1, 1, 1) * resampled[:, None]
            expected = term if expected is None else expected + term
    assert store.maps.shape == (2, 2, 6, 4, 3)
    torch.testing.assert_close(store.maps, expected, atol=2e-5, rtol=2e-5)
