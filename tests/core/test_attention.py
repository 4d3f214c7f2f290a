"""AttentionHooks / HookedAttnProcessor on the tiny pipelines (CPU, fp32).

The reference below (``ReferenceProcessor``) is written independently of hrv_diffusion.core.attention: explicit
softmax(Q K^T / sqrt(d)) probabilities, optionally scaled or replaced on the conditional half, times V.
"""
from __future__ import annotations

from collections import Counter

import pytest
import torch
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention

from hrv_diffusion.core.attention import AttentionHooks, Controller
from hrv_diffusion.core.models import load_pipeline

MODELS = ["tiny-sd", "tiny-sd2", "tiny-sdxl"]

# Tolerance between the fused SDPA kernel and an explicit softmax-matmul, fp32 on CPU, on whole UNet outputs
# of magnitude <= 1.7: measured max |diff| 1.1e-6 (token scaling vs reference) and 1.0e-6 (explicit path vs
# SDPA). We assert 2e-6 abs + 2e-6 rel: the measured error with a 2x margin for other CPUs' kernels.
# Where the computation is the same sequence of ops (observers only, scale of ones, restore) we demand
# bitwise equality instead.
ATOL = RTOL = 2e-6


@pytest.fixture(scope="module")
def pipes():
    return {name: load_pipeline(name) for name in MODELS}


def unet_inputs(unet, batch: int, seed: int = 0):
    """Fixed random UNet inputs: latents (B, 4, 16, 16), a timestep, text states (B, 77, D), SDXL extras."""
    g = torch.Generator().manual_seed(seed)
    config = unet.config
    kwargs = {"encoder_hidden_states": torch.randn(batch, 77, config.cross_attention_dim, generator=g)}
    if config.addition_embed_type == "text_time":
        text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        kwargs["added_cond_kwargs"] = {
            "text_embeds": torch.randn(batch, text_dim, generator=g),
            "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]]).repeat(batch, 1),
        }
    sample = torch.randn(batch, config.in_channels, config.sample_size, config.sample_size, generator=g)
    return sample, torch.tensor(501), kwargs


@torch.no_grad()
def run_unet(unet, inputs) -> torch.Tensor:
    sample, timestep, kwargs = inputs
    return unet(sample, timestep, **kwargs).sample


@torch.no_grad()
def run_pipe(pipe, prompts, steps: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return pipe(prompts, num_inference_steps=steps, generator=generator, output_type="latent").images


def cross_attention_modules(unet) -> dict[str, Attention]:
    return {n: m for n, m in unet.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


class ReferenceProcessor:
    """Explicit-probability cross-attention. ``scale``: (B/2, h, T) multiplies the conditional half's
    probabilities per (sample, head, token), no renormalization. ``replace``: a function of the conditional
    half's probabilities (B/2, h, N, T) that returns new ones."""

    def __init__(self, scale=None, replace=None):
        self.scale, self.replace = scale, replace

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert hidden_states.ndim == 3 and attention_mask is None and not attn.residual_connection
        batch, n_query, _ = hidden_states.shape
        heads = attn.heads
        q = attn.to_q(hidden_states)
        k = attn.to_k(encoder_hidden_states)
        v = attn.to_v(encoder_hidden_states)
        d = q.shape[-1] // heads

        def split(x):  # (B, L, h*d) -> (B, h, L, d)
            return x.reshape(batch, -1, heads, d).permute(0, 2, 1, 3)

        q, k, v = split(q), split(k), split(v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)  # (B, h, N, T)
        uncond, cond = probs[: batch // 2], probs[batch // 2 :]
        if self.scale is not None:
            cond = cond * self.scale[:, :, None, :]
        if self.replace is not None:
            cond = self.replace(cond)
        out = torch.cat([uncond, cond]) @ v  # (B, h, N, d)
        out = out.permute(0, 2, 1, 3).reshape(batch, n_query, heads * d)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


class with_processors:
    """Temporarily put processors on named cross-attention modules (the test's own installer)."""

    def __init__(self, unet, processors: dict):
        self.modules = cross_attention_modules(unet)
        self.processors = processors

    def __enter__(self):
        self.saved = {name: self.modules[name].processor for name in self.processors}
        for name, processor in self.processors.items():
            self.modules[name].set_processor(processor)

    def __exit__(self, *exc):
        for name, processor in self.saved.items():
            self.modules[name].set_processor(processor)


class Observer(Controller):
    """Only reads: records what it was shown."""

    def __init__(self):
        self.calls = Counter()  # (module name, step) -> calls
        self.batches = []  # (query batch, key batch)
        self.keys = {}  # module name -> last key seen

    def observe(self, layer, call, query, key):
        self.calls[layer.module_name, call.step] += 1
        self.batches.append((query.shape[0], key.shape[0]))
        self.keys[layer.module_name] = key.clone()


class Scaler(Controller):
    def __init__(self, scales):
        self.scales = scales  # module name -> (B, h, T)

    def token_scale(self, layer, call):
        return self.scales[layer.module_name]


class ProbEditor(Controller):
    """Leaves SDPA on the layers it names; ``edit`` is applied to their probabilities (None: unchanged)."""

    def __init__(self, layers=None, edit=None):
        self.layers, self.edit, self.seen = layers, edit, []

    def edits_probs(self, layer, call):
        return self.layers is None or layer.module_name in self.layers

    def edit_probs(self, layer, call, probs):
        self.seen.append((layer.module_name, tuple(probs.shape)))
        return probs if self.edit is None else self.edit(probs)


def uniform(probs):
    return torch.full_like(probs, 1.0 / probs.shape[-1])


# ---------------------------------------------------------------- observing changes nothing


@pytest.mark.parametrize("name", MODELS)
def test_observer_leaves_unet_output_bitwise_equal(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=4)
    stock = run_unet(unet, inputs)
    observer = Observer()
    with AttentionHooks(unet, [observer]):
        traced = run_unet(unet, inputs)
    assert observer.calls  # it did observe
    # Same operations in the same order (SDPA with the same scale): bitwise equal.
    assert torch.equal(traced, stock)


@pytest.mark.parametrize("name", MODELS)
def test_observer_leaves_pipeline_latents_bitwise_equal(pipes, name):
    pipe = pipes[name]
    stock = run_pipe(pipe, ["a photo of a cat", "a red car"])
    with AttentionHooks(pipe, [Observer()]):
        traced = run_pipe(pipe, ["a photo of a cat", "a red car"])
    assert torch.equal(traced, stock)


# ---------------------------------------------------------------- probability scaling


@pytest.mark.parametrize("name", MODELS)
def test_token_scale_matches_explicit_reference(pipes, name):
    """3 prompts (CFG batch 6), a different random scale per (sample, head, token) and layer, negatives included."""
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=6, seed=1)
    g = torch.Generator().manual_seed(2)
    modules = cross_attention_modules(unet)
    scales = {}
    for module_name, module in modules.items():
        s = torch.randn(3, module.heads, 77, generator=g) * 1.5 + 1.0  # (B_cond, h, T)
        s[0, 0, :5] = -2.0
        s[1, -1, 1] = 0.0
        s[2, :, 2] = 3.0
        scales[module_name] = s

    with AttentionHooks(unet, [Scaler(scales)]):
        traced = run_unet(unet, inputs)
    with with_processors(unet, {n: ReferenceProcessor(scale=s) for n, s in scales.items()}):
        reference = run_unet(unet, inputs)
    plain = run_unet(unet, inputs)

    torch.testing.assert_close(traced, reference, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(traced, plain, atol=1e-3)  # the scaling did something


@pytest.mark.parametrize("name", MODELS)
def test_token_scale_of_ones_is_a_no_op(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=4)
    ones = {n: torch.ones(2, m.heads, 77) for n, m in cross_attention_modules(unet).items()}
    stock = run_unet(unet, inputs)
    with AttentionHooks(unet, [Scaler(ones)]):
        traced = run_unet(unet, inputs)
    torch.testing.assert_close(traced, stock, atol=0, rtol=0)  # V * 1.0 == V exactly


# ---------------------------------------------------------------- explicit probabilities


@pytest.mark.parametrize("name", MODELS)
def test_explicit_probability_path_equals_sdpa(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=4)
    stock = run_unet(unet, inputs)
    editor = ProbEditor()  # every layer, unchanged probabilities
    with AttentionHooks(unet, [editor]):
        explicit = run_unet(unet, inputs)
    assert len(editor.seen) == len(cross_attention_modules(unet))
    torch.testing.assert_close(explicit, stock, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", MODELS)
def test_uniform_map_on_one_layer_matches_reference(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=4)
    target = sorted(cross_attention_modules(unet))[0]
    stock = run_unet(unet, inputs)
    editor = ProbEditor(layers={target}, edit=uniform)
    with AttentionHooks(unet, [editor]):
        edited = run_unet(unet, inputs)
    with with_processors(unet, {target: ReferenceProcessor(replace=uniform)}):
        reference = run_unet(unet, inputs)
    assert [seen[0] for seen in editor.seen] == [target]
    torch.testing.assert_close(edited, reference, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(edited, stock, atol=1e-4)


@pytest.mark.parametrize("name", MODELS)
def test_uniform_map_on_one_attention_call(pipes, name):
    """One CA module called directly: with uniform probabilities the conditional half's output is
    to_out(mean over tokens of V) at every query; the unconditional half is ordinary attention."""
    unet = pipes[name].unet
    target, module = sorted(cross_attention_modules(unet).items())[0]
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(4, 10, module.to_q.in_features, generator=g)  # (2B, N, C)
    text = torch.randn(4, 77, module.to_k.in_features, generator=g)  # (2B, T, D)
    with torch.no_grad():
        stock = module(hidden, encoder_hidden_states=text)
        with AttentionHooks(unet, [ProbEditor(layers={target}, edit=uniform)]):
            edited = module(hidden, encoder_hidden_states=text)
        mean_v = module.to_v(text[2:]).mean(dim=1, keepdim=True)  # (B, 1, h*d)
        expected_cond = module.to_out[1](module.to_out[0](mean_v)).expand(-1, 10, -1)
    torch.testing.assert_close(edited[2:], expected_cond, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(edited[:2], stock[:2], atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------- which half the controllers see


@pytest.mark.parametrize("cfg, seen_batch, first", [(True, 2, 2), (False, 4, 0)])
def test_controllers_see_the_conditional_rows(pipes, cfg, seen_batch, first):
    unet = pipes["tiny-sd"].unet
    inputs = unet_inputs(unet, batch=4)
    observer = Observer()
    with AttentionHooks(unet, [observer], cfg=cfg):
        run_unet(unet, inputs)
    assert set(observer.batches) == {(seen_batch, seen_batch)}
    # The keys shown are those of the conditional rows: the half [2:] of [uncond, cond] under CFG.
    name, module = next(iter(cross_attention_modules(unet).items()))
    text = inputs[2]["encoder_hidden_states"][first:]
    with torch.no_grad():
        key = module.to_k(text).view(seen_batch, 77, module.heads, -1).transpose(1, 2)  # (B, h, T, d)
    torch.testing.assert_close(observer.keys[name], key, atol=0, rtol=0)


def test_set_call_names_the_rows_and_step_of_one_call(pipes):
    unet = pipes["tiny-sd"].unet
    inputs = unet_inputs(unet, batch=4)
    observer = Observer()
    with AttentionHooks(unet, [observer]) as hooks:
        hooks.set_call(7, slice(1, 3))
        run_unet(unet, inputs)
        assert hooks.step == 7
        run_unet(unet, inputs)  # not set: counted on from 7, [uncond, cond] assumed
        assert hooks.step == 8
    assert observer.batches[: len(cross_attention_modules(unet))] == [(2, 2)] * len(cross_attention_modules(unet))
    assert {step for _, step in observer.calls} == {7, 8}


def test_only_controllers_are_accepted(pipes):
    class NotAController:
        def observe(self, layer, call, query, key):
            pass

    with pytest.raises(TypeError, match="Controller"):
        AttentionHooks(pipes["tiny-sd"], [NotAController()])


# ---------------------------------------------------------------- the evaluation index


def test_pndm_50_steps_gives_51_evaluations(pipes):
    pipe = pipes["tiny-sd"]
    assert type(pipe.scheduler).__name__ == "PNDMScheduler"
    observer = Observer()
    with AttentionHooks(pipe, [observer]) as trace:
        run_pipe(pipe, ["a photo of a cat"], steps=50)
    layers = {layer.module_name for layer in trace.layout.layers}
    assert observer.calls == Counter({(layer, step): 1 for layer in layers for step in range(51)})
    assert trace.step == 50


def test_ddim_50_steps_gives_50_evaluations(pipes):
    pipe = pipes["tiny-sd"]
    pndm, pipe.scheduler = pipe.scheduler, DDIMScheduler.from_config(pipe.scheduler.config)
    try:
        observer = Observer()
        with AttentionHooks(pipe, [observer]) as trace:
            run_pipe(pipe, ["a photo of a cat"], steps=50)
    finally:
        pipe.scheduler = pndm
    layers = {layer.module_name for layer in trace.layout.layers}
    assert observer.calls == Counter({(layer, step): 1 for layer in layers for step in range(50)})


def test_reset_restarts_the_step_index(pipes):
    pipe = pipes["tiny-sdxl"]  # PNDM (load_pipeline's default): 3 steps -> 4 evaluations
    observer = Observer()
    with AttentionHooks(pipe, [observer]) as trace:
        run_pipe(pipe, ["a cat"], steps=3)
        first = sorted({step for _, step in observer.calls})
        run_pipe(pipe, ["a cat"], steps=3)  # no reset: the index runs on
        both = sorted({step for _, step in observer.calls})
        observer.calls.clear()
        trace.reset()
        run_pipe(pipe, ["a cat"], steps=3)
        after_reset = sorted({step for _, step in observer.calls})
    assert first == [0, 1, 2, 3]
    assert both == list(range(8))
    assert after_reset == [0, 1, 2, 3]


def test_entering_starts_at_step_zero(pipes):
    unet = pipes["tiny-sd"].unet
    inputs = unet_inputs(unet, batch=2)
    trace = AttentionHooks(unet, [Observer()])
    for _ in range(2):  # the same trace entered twice starts at 0 each time
        with trace:
            run_unet(unet, inputs)
            assert trace.step == 0


# ---------------------------------------------------------------- leaving restores the UNet


def snapshot(unet):
    processors = {n: m.processor for n, m in unet.named_modules() if isinstance(m, Attention)}
    hooks = dict(unet._forward_pre_hooks)
    return processors, hooks


def assert_restored(unet, before, inputs, output_before):
    processors, hooks = before
    now_processors, now_hooks = snapshot(unet)
    assert now_processors.keys() == processors.keys()
    assert all(now_processors[n] is processors[n] for n in processors)  # the same objects
    assert now_hooks.keys() == hooks.keys() and all(now_hooks[k] is hooks[k] for k in hooks)
    assert torch.equal(run_unet(unet, inputs), output_before)


@pytest.mark.parametrize("name", MODELS)
def test_exit_restores_processors_hooks_and_output(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=2)
    before, output_before = snapshot(unet), run_unet(unet, inputs)
    scales = {n: torch.full((1, m.heads, 77), 0.5) for n, m in cross_attention_modules(unet).items()}
    with AttentionHooks(unet, [Scaler(scales), ProbEditor(edit=uniform)]):
        assert unet._forward_pre_hooks.keys() != before[1].keys()  # installed
        changed = run_unet(unet, inputs)
    assert not torch.equal(changed, output_before)
    assert_restored(unet, before, inputs, output_before)


def test_exit_restores_after_an_exception(pipes):
    unet = pipes["tiny-sdxl"].unet
    inputs = unet_inputs(unet, batch=2)
    before, output_before = snapshot(unet), run_unet(unet, inputs)

    with pytest.raises(RuntimeError, match="in the with-block"):
        with AttentionHooks(unet, [Observer()]):
            run_unet(unet, inputs)
            raise RuntimeError("in the with-block")
    assert_restored(unet, before, inputs, output_before)

    class Failing(Controller):
        def observe(self, layer, call, query, key):
            raise RuntimeError("inside the UNet forward")

    with pytest.raises(RuntimeError, match="inside the UNet forward"):
        with AttentionHooks(unet, [Failing()]):
            run_unet(unet, inputs)
    assert_restored(unet, before, inputs, output_before)


# ---------------------------------------------------------------- composition order, readers, self-attention


class Log(Controller):
    """Reads and optionally edits; records the probabilities it read (for one layer)."""

    def __init__(self, layer, reads=True, edit=None):
        self.layer, self.reads, self.edit, self.seen = layer, reads, edit, []

    def reads_probs(self, layer, call):
        return self.reads and layer.module_name == self.layer

    def read_probs(self, layer, call, probs):
        self.seen.append(probs.clone())

    def edits_probs(self, layer, call):
        return self.edit is not None and layer.module_name == self.layer

    def edit_probs(self, layer, call, probs):
        return self.edit(probs)


def test_composition_order(pipes):
    """Scales multiply; each reader sees the edits of the controllers before it in the list, none after."""
    unet = pipes["tiny-sd"].unet
    inputs = unet_inputs(unet, batch=2)
    name, module = sorted(cross_attention_modules(unet).items())[0]
    g = torch.Generator().manual_seed(4)
    s1, s2 = (torch.rand(1, module.heads, 77, generator=g) + 0.5 for _ in range(2))
    before, editor, after = Log(name), Log(name, reads=False, edit=lambda p: p * 2.0), Log(name)
    with AttentionHooks(unet, [before, Scaler({n: s1 if n == name else None for n in cross_attention_modules(unet)}),
                               editor, after, Scaler({n: s2 if n == name else None for n in cross_attention_modules(unet)})]):
        out = run_unet(unet, inputs)
    # the probabilities without any controller, from the module's own projections
    hidden = []
    handle = module.register_forward_pre_hook(lambda m, args, kwargs: hidden.append((args[0], kwargs["encoder_hidden_states"])),
                                              with_kwargs=True)
    run_unet(unet, inputs)
    handle.remove()
    x, text = hidden[0]
    d = module.to_q.out_features // module.heads
    q = module.to_q(x[1:]).view(1, -1, module.heads, d).transpose(1, 2)
    k = module.to_k(text[1:]).view(1, -1, module.heads, d).transpose(1, 2)
    plain = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1).detach()  # (1, h, N, T) conditional row
    scaled = plain * (s1 * s2)[:, :, None, :]
    torch.testing.assert_close(before.seen[0], scaled, atol=1e-6, rtol=1e-5)  # both scales, before the edit
    torch.testing.assert_close(after.seen[0], 2 * scaled, atol=1e-6, rtol=1e-5)  # after the edit
    with with_processors(unet, {name: ReferenceProcessor(scale=s1 * s2, replace=lambda p: 2 * p)}):
        reference = run_unet(unet, inputs)
    torch.testing.assert_close(out, reference, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", MODELS)
def test_a_reader_leaves_the_image_bit_for_bit(pipes, name):
    from hrv_diffusion.core.loop import generate, latent_shape, seed_latents

    pipe = pipes[name]
    latents = seed_latents([1, 2], latent_shape(pipe))
    reader = Log(None)
    reader.reads_probs = lambda layer, call: layer.is_cross  # every CA layer, every evaluation
    plain = generate(pipe, ["a red car", "a cat"], latents, num_inference_steps=2, decode="round")
    read = generate(pipe, ["a red car", "a cat"], latents, num_inference_steps=2, decode="round", controllers=[reader])
    assert len(reader.seen) == 3 * len(cross_attention_modules(pipe.unet))
    assert torch.equal(read.latents, plain.latents) and (read.images == plain.images).all()


class SelfReference:
    """Explicit self-attention whose conditional rows take row ``source``'s probabilities (P2P's self-replacement)."""

    def __init__(self, source: int):
        self.source = source

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        assert encoder_hidden_states is None and hidden_states.ndim == 3 and attn.group_norm is None
        batch, n, _ = hidden_states.shape
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        d = q.shape[-1] // attn.heads
        split = lambda x: x.reshape(batch, -1, attn.heads, d).permute(0, 2, 1, 3)
        q, k, v = split(q), split(k), split(v)
        probs = torch.softmax(q @ k.transpose(-1, -2) / d**0.5, dim=-1)
        half = batch // 2
        cond = probs[half:].clone()
        cond[:] = probs[half + self.source]
        out = torch.cat([probs[:half], cond]) @ v
        out = out.permute(0, 2, 1, 3).reshape(batch, n, attn.heads * d)
        return attn.to_out[1](attn.to_out[0](out)) / attn.rescale_output_factor


class SelfSwap(Controller):
    """Opts in to self-attention: every conditional row takes row 0's self-attention maps on chosen layers."""

    self_attention = True

    def __init__(self, names):
        self.names, self.layers = names, []

    def edits_probs(self, layer, call):
        return layer.kind == "self" and layer.module_name in self.names

    def edit_probs(self, layer, call, probs):
        self.layers.append(layer.module_name)
        return probs[:1].expand_as(probs)


@pytest.mark.parametrize("name", MODELS)
def test_self_attention_edit_matches_an_explicit_reference(pipes, name):
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=4)  # [uncond x2, cond x2]
    layout = AttentionHooks(unet).layout
    chosen = {layer.module_name for layer in layout.self_layers if layer.place == "down"}  # some, not all
    assert chosen and len(chosen) < len(layout.self_layers)
    swap = SelfSwap(chosen)
    with AttentionHooks(unet, [swap]) as hooks:
        edited = run_unet(unet, inputs)
        kinds = {type(m.processor).__name__ for n, m in unet.named_modules() if n.endswith("attn1")}
    assert kinds == {"HookedAttnProcessor"} and set(swap.layers) == chosen
    assert hooks.layout.self_layers[0].kind == "self" and hooks.layout.self_layers[0].offset == -1
    modules = dict(unet.named_modules())
    saved = {n: modules[n].processor for n in chosen}
    try:
        for n in chosen:
            modules[n].set_processor(SelfReference(source=0))
        reference = run_unet(unet, inputs)
    finally:
        for n, p in saved.items():
            modules[n].set_processor(p)
    torch.testing.assert_close(edited, reference, atol=ATOL, rtol=RTOL)
    assert not torch.allclose(edited, run_unet(unet, inputs), atol=1e-4)


def test_self_attention_layers_are_hooked_only_when_asked(pipes):
    unet = pipes["tiny-sd"].unet
    with AttentionHooks(unet, [Observer()]):
        kinds = {type(m.processor).__name__ for n, m in unet.named_modules() if n.endswith("attn1")}
    assert "HookedAttnProcessor" not in kinds
# ---------------------------------------------------------------- editing some rows only, choosing layers


class RowEditor(ProbEditor):
    """Uniform probabilities on conditional row ``row`` of every layer, and it says that is the only row."""

    def __init__(self, row, declare=True):
        super().__init__(edit=lambda probs: probs.index_copy(0, torch.tensor([row]), uniform(probs[row : row + 1])))
        self.row, self.declare = row, declare

    def edited_rows(self, layer, call):
        return torch.tensor([self.row]) if self.declare else None


@pytest.mark.parametrize("name", MODELS)
def test_edited_rows_keep_the_fused_output_elsewhere(pipes, name):
    """With ``edited_rows`` the other rows (the unconditional ones and conditional rows 0 and 2) are bit for bit the
    unhooked UNet's; the edited row equals the all-explicit path's."""
    unet = pipes[name].unet
    inputs = unet_inputs(unet, batch=6)  # [uncond x3, cond x3]
    stock = run_unet(unet, inputs)
    with AttentionHooks(unet, [RowEditor(1)]):
        declared = run_unet(unet, inputs)
    with AttentionHooks(unet, [RowEditor(1, declare=False)]):
        explicit = run_unet(unet, inputs)
    others = [0, 1, 2, 3, 5]
    assert torch.equal(declared[others], stock[others])
    torch.testing.assert_close(declared[4], explicit[4], atol=ATOL, rtol=RTOL)
    assert not torch.allclose(declared[4], stock[4], atol=1e-4)


def test_wants_layer_hooks_only_the_chosen_self_attention_layers(pipes):
    unet = pipes["tiny-sd"].unet
    chosen = "down_blocks.1.attentions.0.transformer_blocks.0.attn1"

    class OneSelfLayer(Controller):
        self_attention = True

        def wants_layer(self, layer):
            return layer.is_cross or layer.module_name == chosen

    with AttentionHooks(unet, [OneSelfLayer(), Observer()]) as hooks:
        names = {layer.module_name for layer in hooks.hooked_layers()}
        processors = {n for n, p in unet.attn_processors.items() if type(p).__name__ == "HookedAttnProcessor"}
    cross = {n for n in cross_attention_modules(unet)}
    assert names == cross | {chosen}
    assert processors == {f"{n}.processor" for n in names}


# ---------------------------------------------------------------- the latent size and the early stop of a call


class Calls(Controller):
    """Records (module name, call) of every CA layer call, and keeps the probabilities it reads."""

    def __init__(self):
        self.seen, self.probs = [], {}

    def reads_probs(self, layer, call):
        return True

    def read_probs(self, layer, call, probs):
        self.seen.append((layer.module_name, call))
        self.probs[layer.module_name] = probs.clone()


@pytest.mark.parametrize("name", MODELS)
def test_each_call_carries_its_latent_size(pipes, name):
    """Under a plain UNet call the pre-hook reads the latent size from the sample; ``set_call`` may say it, and a
    size that disagrees with the sample is refused."""
    unet = pipes[name].unet
    sample, t, kwargs = unet_inputs(unet, batch=2)
    wide = torch.randn(2, 4, 24, 16, generator=torch.Generator().manual_seed(5))  # not the default 16 x 16
    calls = Calls()
    with AttentionHooks(unet, [calls]) as hooks, torch.no_grad():
        unet(wide, t, **kwargs)
        assert {c.latent for _, c in calls.seen} == {(24, 16)}
        hooks.set_call(3, slice(1, 2), (24, 16))
        unet(wide, t, **kwargs)
        assert hooks.call.latent == (24, 16) and hooks.step == 3
        hooks.set_call(4, slice(1, 2))  # not said: read from the sample
        unet(sample, t, **kwargs)
        assert hooks.call.latent == (16, 16)
        hooks.set_call(5, slice(1, 2), (16, 16))
        with pytest.raises(ValueError, match="latent"):
            unet(wide, t, **kwargs)


@pytest.mark.parametrize("name", MODELS)
def test_stop_after_ends_the_call_after_that_layer(pipes, name):
    """With ``stop_after`` the call ends once that layer's controllers have run: the layers before it and it are
    read exactly as in a whole call, none after it, ``call_unet`` returns None; the next call runs to the end."""
    unet = pipes[name].unet
    sample, t, kwargs = unet_inputs(unet, batch=4)
    full = Calls()
    with AttentionHooks(unet, [full]) as hooks, torch.no_grad():
        hooks.set_call(0, slice(2, 4))
        expected = hooks.call_unet(sample, t, **kwargs)[0]
    order = [module for module, _ in full.seen]  # forward order
    assert order == [layer.module_name for layer in hooks.layout.layers]
    stop = order[len(order) // 2]
    part = Calls()
    with AttentionHooks(unet, [part]) as hooks, torch.no_grad():
        hooks.set_call(0, slice(2, 4), stop_after=stop)
        assert hooks.call_unet(sample, t, **kwargs) is None
        assert [module for module, _ in part.seen] == order[: order.index(stop) + 1]
        for module in part.probs:
            assert torch.equal(part.probs[module], full.probs[module])
        hooks.set_call(1, slice(2, 4))  # the stop is not kept
        assert torch.equal(hooks.call_unet(sample, t, **kwargs)[0], expected)
        with pytest.raises(ValueError, match="cannot stop after"):
            hooks.set_call(2, slice(2, 4), stop_after="down_blocks.0.resnets.0")
