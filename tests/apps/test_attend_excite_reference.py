"""A&E-HRV end to end against an independent re-implementation of the published algorithm (tiny-sd, CPU, fp64).

The expectation is ``reference_latents``: the reference's A&E-HRV written out from the spec (spec-ae-hrv §3-§4
with the audit's corrections), one sample at a time on diffusers' own UNet, text encoder and PNDM scheduler. Its
attention processor computes every CA layer's probabilities explicitly; the per-target map is the sum over every
CA head of HRV[concept, column] / H times the head's map resampled to R (torchvision's Gaussian blur, then
bicubic), the head columns counted here in forward order (down, mid, up; heads in order). Then softmax(100·map)
over tokens 1..76, column idx − 1, a true Gaussian smoothing (reflect padding), the spatial max, the loss
max(0, 1 − min max), gradient steps z ← z − 20·sqrt(linspace(1, 0.5, T))[i]·∇L for i < max_iter_to_alter and the
iterative refinement at the threshold evaluations. It shares nothing with apps/attend_excite.py or core/ but
``seed_latents`` (the initial noise) and the tiny model.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torchvision.transforms.functional import gaussian_blur

from hrv_diffusion.apps.attend_excite import AttendExciteSettings, Targets, generate_attend_excite
from hrv_diffusion.core.loop import latent_shape, seed_latents
from hrv_diffusion.core.models import load_pipeline

PROMPT = "a cat and a frog"  # SOT a cat and a frog EOT: targets 2 ("cat", concept 0) and 5 ("frog", concept 1)
TOKENS, CONCEPTS = (2, 5), (0, 1)
SEEDS = (3, 4)
SETTINGS = AttendExciteSettings(mode="hrv", attention_res=4, num_inference_steps=2, max_iter_to_alter=3,
                                thresholds={0: 0.05, 2: 0.5}, max_refinement_steps=2, smooth_attentions=True)
TOLERANCE = 1e-7  # of the largest |latent|: the library keeps head weights in float32 (~1e-8 relative)
PARTS = ("down_blocks", "mid_block", "up_blocks")


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline("tiny-sd", dtype=torch.float64)


def ca_modules(unet) -> list[tuple[str, Attention]]:
    """The cross-attention modules in the HRV's column order: down, mid, up, each in forward order."""
    found = [(n, m) for n, m in unet.named_modules() if isinstance(m, Attention) and n.endswith("attn2")]
    return sorted(found, key=lambda item: PARTS.index(item[0].split(".")[0]))  # a stable sort keeps the order


def random_hrv(pipe, seed=0) -> np.ndarray:
    """(2, H) float32: random positive per-head weights, each row summing to H as an HRV row does."""
    heads = sum(m.heads for _, m in ca_modules(pipe.unet))
    values = np.random.default_rng(seed).gamma(0.5, size=(2, heads)) + 0.01
    return (values / values.sum(1, keepdims=True) * heads).astype(np.float32)


class ExplicitCrossAttention:
    """Every CA layer computes softmax(QKᵀ/√d) explicitly; while ``record`` is on (a batch-1 conditional pass)
    each layer's probabilities (heads, N, 77) are kept, with their graph."""

    def __init__(self, unet):
        self.unet, self.modules = unet, ca_modules(unet)
        self.record, self.probs = False, {}

    def __enter__(self):
        self.saved = dict(self.unet.attn_processors)
        self.unet.set_attn_processor({**self.saved, **{f"{n}.processor": self._processor(n) for n, _ in self.modules}})
        return self

    def __exit__(self, *exc):
        self.unet.set_attn_processor(self.saved)

    def _processor(self, name):
        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))  # (B*h, N, d)
            k = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # (B*h, 77, d)
            v = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
            probs = torch.softmax(q @ k.transpose(1, 2) * attn.scale, dim=-1)  # (B*h, N, 77)
            if self.record:
                self.probs[name] = probs
            out = attn.batch_to_head_dim(torch.bmm(probs, v))
            return attn.to_out[1](attn.to_out[0](out))
        return call


def resample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(h, 77, r, r) -> (h, 77, R, R): unchanged, bicubic up, or OpenCV-σ Gaussian blur then bicubic down."""
    res = maps.shape[-1]
    if res > size:
        k = res // size + 1
        sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
        maps = gaussian_blur(maps, [k, k], [sigma, sigma])
    if res != size:
        maps = F.interpolate(maps, size=(size, size), mode="bicubic", align_corners=False)
    return maps


def true_gaussian(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = w[:, None] * w[None, :]
    return kernel / kernel.sum()


def loss_of(attention: ExplicitCrossAttention, hrv: np.ndarray, s: AttendExciteSettings):
    """The loss of the last recorded conditional pass: max over targets of max(0, 1 - m_j) (a Python max)."""
    heads = sum(m.heads for _, m in attention.modules)
    weights = torch.as_tensor(hrv, dtype=torch.float64) / heads  # (2, H)
    maxima, column = [], 0
    maps = [0.0] * len(TOKENS)  # per target: (77, R, R)
    for name, module in attention.modules:
        probs = attention.probs[name]  # (h, N, 77), batch 1
        r = int(probs.shape[1] ** 0.5)
        per_head = resample(probs.transpose(1, 2).reshape(module.heads, 77, r, r), s.attention_res)
        for j, concept in enumerate(CONCEPTS):
            w = weights[concept, column : column + module.heads]  # (h,) this layer's heads, in order
            maps[j] = maps[j] + (w[:, None, None, None] * per_head).sum(0)
        column += module.heads
    kernel = true_gaussian(s.kernel_size, s.sigma)
    for j, index in enumerate(TOKENS):
        probs = torch.softmax(maps[j][1:77] * 100, dim=0)  # over tokens 1..76
        image = probs[index - 1]
        if s.smooth_attentions:
            pad = s.kernel_size // 2
            image = F.conv2d(F.pad(image[None, None], (pad,) * 4, mode="reflect"), kernel[None, None])[0, 0]
        maxima.append(image.max())
    return max(max(0, 1.0 - m) for m in maxima)


def reference_latents(pipe, hrv: np.ndarray, seed: int, s: AttendExciteSettings = SETTINGS) -> torch.Tensor:
    """One sample through the spec's main loop (§3): grad pass, refinement, step, then the CFG pass and PNDM."""
    unet, scheduler = pipe.unet, pipe.scheduler
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True)
    scheduler.set_timesteps(s.num_inference_steps)
    timesteps = scheduler.timesteps
    alphas = s.scale_factor * np.sqrt(np.linspace(1.0, 0.5, len(timesteps)))
    z = seed_latents([seed], latent_shape(pipe)).to(torch.float64)
    with ExplicitCrossAttention(unet) as attention:

        def loss_at(x):
            attention.record = True
            unet(x, t, encoder_hidden_states=cond)
            attention.record = False
            return loss_of(attention, hrv, s)

        def step(x, loss, alpha):
            return (x - alpha * torch.autograd.grad(loss, [x])[0]).detach()

        for i, t in enumerate(timesteps):
            with torch.enable_grad():
                z = z.detach().requires_grad_(True)
                loss = loss_at(z)
                if i in s.thresholds and loss > 1.0 - s.thresholds[i]:
                    n, target = 0, max(0.0, 1.0 - s.thresholds[i])
                    while loss > target:
                        n += 1
                        z = z.detach().requires_grad_(True)
                        loss = loss_at(z)
                        if loss != 0:
                            z = step(z, loss, alphas[i])
                        if n >= s.max_refinement_steps:
                            break
                    z = z.detach().requires_grad_(True)
                    loss = loss_at(z)
                if i < s.max_iter_to_alter and loss != 0:
                    z = step(z, loss, alphas[i])
            with torch.no_grad():
                out = unet(torch.cat([z, z]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
                eps = out[:1] + s.guidance_scale * (out[1:] - out[:1])
                z = scheduler.step(eps, t, z.detach()).prev_sample
    return z


def ours(pipe, hrv: np.ndarray, seeds=SEEDS):
    targets = Targets.build([list(TOKENS)] * len(seeds), [6] * len(seeds), list(CONCEPTS))
    out = generate_attend_excite(pipe, [PROMPT] * len(seeds), seed_latents(list(seeds), latent_shape(pipe)),
                                 targets, SETTINGS, hrv, decode=None)
    return out.latents, out.records


def test_ae_hrv_matches_the_reference(pipe):
    """Two seeds in one batch, two targets of different concepts with different random head weights; refinement
    at both threshold evaluations; a gradient step at every evaluation."""
    assert pipe.unet.dtype == torch.float64
    hrv = random_hrv(pipe)
    latents, records = ours(pipe, hrv)
    expected = torch.cat([reference_latents(pipe, hrv, seed) for seed in SEEDS])
    scale = float(expected.abs().max())
    torch.testing.assert_close(latents, expected, atol=TOLERANCE * scale, rtol=0)
    for record in records:  # the run exercised what it claims to
        assert [r.get("refinement_iterations", 0) > 0 for r in record] == [True, False, True]
        assert all(r["updated"] for r in record)
    # a wrong weighting moves the latents far beyond the tolerance: uniform weights, the head order reversed,
    # the two concepts' rows swapped
    for other in (np.ones_like(hrv), hrv[:, ::-1].copy(), hrv[::-1].copy()):
        moved, _ = ours(pipe, other, SEEDS[:1])
        assert (moved - expected[:1]).abs().max() > 1000 * TOLERANCE * scale
