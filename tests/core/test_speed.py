"""Regional compilation: which modules are compiled, and the traced pipeline gives the same results."""
from __future__ import annotations

import torch

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import generate as denoise
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.core.speed import compile_regions, compile_unet_regions
from hrv_diffusion.apps.weakening import HeadWeakening, weakened_tokens


def test_regions_cover_group_norms_and_never_cross_attention():
    unet = load_pipeline("tiny-sd").unet
    names = compile_regions(unet)
    modules = dict(unet.named_modules())
    assert not any(n.endswith("attn2") or ".attn2." in n for n in names)
    assert any(n.endswith("attn1") for n in names) and any(n.endswith(".ff") for n in names)
    # every group norm is compiled, alone or inside a compiled region
    norms = [n for n, m in modules.items() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(any(n == r or n.startswith(r + ".") for r in names) for n in norms)
    assert "conv_norm_out" in names and any(n.endswith("attentions.0.norm") for n in names)
    assert len(set(names)) == len(names) and not any(a.startswith(b + ".") for a in names for b in names)


def weakened_generation(pipe):
    """``generate(factor)``: 2 latents of tiny-sd, 3 steps, random halves of the heads weakened by ``factor``."""
    layout = head_layout(pipe.unet)
    masks = torch.rand(2, layout.num_heads, generator=torch.Generator().manual_seed(0)) < 0.5
    tokens = weakened_tokens(pipe.tokenizer, "a red car").expand(2, -1)
    latents = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(0))

    def generate(factor=-2.0):
        control = HeadWeakening(layout, masks, tokens, factor, num_evaluations=4)
        return denoise(pipe, ["a red car"] * 2, latents, num_inference_steps=3, controllers=[control]).latents

    return generate


def test_compiled_regions_keep_the_weakened_generation():
    pipe = load_pipeline("tiny-sd")
    generate = weakened_generation(pipe)
    eager = generate()
    compile_unet_regions(pipe.unet, backend="eager")  # dynamo tracing, no code generation (fast on CPU)
    compiled = generate()
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)  # channels-last convs round differently
    assert (compiled - generate(factor=1.0)).abs().max() > 1e-2  # the weakening still acts
    torch._dynamo.reset()


def test_skipped_modules_are_not_compiled():
    unet = load_pipeline("tiny-sd").unet
    layout = head_layout(unet)
    hooked = {layer.module_name for layer in layout.self_layers if layer.num_queries <= 64}
    names = compile_regions(unet, skip=hooked)
    assert hooked and not hooked & set(names)
    assert set(compile_regions(unet)) - set(names) == hooked


def test_tf32_matmuls_switches_and_restores():
    from hrv_diffusion.core.speed import tf32_matmuls

    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with tf32_matmuls(False):
            assert torch.backends.cuda.matmul.allow_tf32 is False
        with tf32_matmuls():
            assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.backends.cuda.matmul.allow_tf32 is False
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_compiled_blocks_keep_the_weakened_generation():
    """compile_unet_blocks (transformer models or the whole UNet compiled, cross-attention through graph breaks):
    the same weakened generation as eager, and no recompilation from one generation to the next."""
    from torch._dynamo.utils import counters

    from hrv_diffusion.core.speed import compile_unet_blocks

    for whole in (False, True):
        pipe = load_pipeline("tiny-sd")
        generate = weakened_generation(pipe)
        eager = generate()
        torch._dynamo.reset()
        counters.clear()
        compile_unet_blocks(pipe.unet, backend="eager", whole=whole)
        compiled = generate()
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0  # dynamo traced the UNet
        torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=1e-4)  # channels-last convs round differently
        assert (compiled - generate(factor=1.0)).abs().max() > 1e-2  # the weakening still acts
        assert counters["stats"]["unique_graphs"] == graphs  # the step index and factors did not recompile
        torch._dynamo.reset()


def test_compiled_whole_unet_keeps_the_hrv_votes():
    """HRV construction's --compile (the whole forward, cross-attention layers eager): the same vote counts as the
    eager UNet on the tiny model, and the cross-attention modules are the graph breaks."""
    from hrv_diffusion.core.speed import compile_unet_blocks
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.embeddings import encode_words
    from hrv_diffusion.hrv.votes import RelevanceVotes, WordBank, sample_words

    pipe = load_pipeline("tiny-sd")
    concepts = read_concept_set(resolve_description("340_final_text_descriptions"))
    layout = head_layout(pipe.unet)
    bank = WordBank(pipe.unet, layout, *encode_words(pipe, list(concepts.flat_words)))
    latents = torch.randn((2, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    choices = torch.stack([sample_words(concepts.word_counts, 4, len(layout.layers), torch.Generator().manual_seed(i))
                           for i in range(2)])  # (B, T, layers, C)

    def counts():
        votes = RelevanceVotes(bank, layout, 4, concepts.num_concepts)
        votes.set_choices(choices)
        denoise(pipe, ["a cat", "a dog"], latents, num_inference_steps=3, controllers=[votes])
        return votes.counts

    eager = counts()
    compile_unet_blocks(pipe.unet, backend="eager", whole=True)
    modules = dict(pipe.unet.named_modules())
    assert all(hasattr(modules[layer.module_name].forward, "_torchdynamo_disable") for layer in layout.layers)
    assert torch.equal(counts(), eager) and eager.sum() == 4 * layout.num_heads * 2
    torch._dynamo.reset()


def test_compiled_whole_unet_keeps_the_p2p_edits():
    """P2P's --compile (the whole forward, cross-attention and the edited self-attention layers eager): the same
    source and edited latents as eager on the tiny model, and no recompilation between two runs."""
    from torch._dynamo.utils import counters

    from hrv_diffusion.apps.p2p import Edit, EditSpec, Group, generate_edits
    from hrv_diffusion.core.speed import compile_unet_blocks

    pipe = load_pipeline("tiny-sd")
    spec = EditSpec("original_p2p", cross_replace_steps=0.8, self_replace_steps=0.6)
    groups = [Group("a blue car", 3, (Edit("a red car", spec, "red"),))]

    def edit():
        return torch.from_numpy(generate_edits(pipe, groups, num_inference_steps=3, self_max_queries=64).images).float()

    eager = edit()
    hooked = [layer.module_name for layer in head_layout(pipe.unet).self_layers if layer.num_queries <= 64]
    assert hooked
    torch._dynamo.reset()
    counters.clear()
    compile_unet_blocks(pipe.unet, backend="eager", whole=True, skip=hooked)
    compiled = edit()
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0
    assert (compiled - eager).abs().max() <= 1  # uint8 images; channels-last convs round differently
    assert torch.equal(edit(), compiled) and counters["stats"]["unique_graphs"] == graphs
    torch._dynamo.reset()
