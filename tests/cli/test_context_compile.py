"""RunContext.compile: --compile compiles regions, or the whole forward for HRV construction (issue 21)."""
import torch

from hrv_diffusion.cli.common import ArgumentParser
from hrv_diffusion.cli.context import RunContext
from hrv_diffusion.cli.flags import add_model_flags


def _context(*argv, card="tiny-sd"):
    p = ArgumentParser(prog="t")
    add_model_flags(p, scheduler=True, compile_help="compile")
    return RunContext.from_args(p.parse_args(["--model_card", card, *argv]))


def _disabled(module) -> bool:
    return hasattr(module.forward, "_torchdynamo_disable")


def test_whole_compiles_the_forward_and_leaves_cross_attention_eager():
    ctx = _context("--compile")
    ctx.compile(whole=True)  # torch.compile is lazy: nothing is traced before the first call
    unet = ctx.pipe.unet
    modules = dict(unet.named_modules())
    assert "forward" in vars(unet)  # the instance's forward is the compiled one
    assert all(_disabled(modules[layer.module_name]) for layer in ctx.layout.layers)
    assert not any(_disabled(modules[layer.module_name]) for layer in ctx.layout.self_layers)
    torch._dynamo.reset()


def test_without_the_flag_nothing_is_compiled():
    ctx = _context()
    ctx.compile(whole=True)
    assert "forward" not in vars(ctx.pipe.unet)


def test_whole_leaves_the_skipped_self_attention_layers_eager_too():
    """P2P's --compile: the whole forward, its edited self-attention layers eager beside the cross-attention ones."""
    ctx = _context("--compile")
    edited = [layer.module_name for layer in ctx.layout.self_layers][:2]
    ctx.compile(skip=edited, whole=True)
    modules = dict(ctx.pipe.unet.named_modules())
    assert "forward" in vars(ctx.pipe.unet)
    assert all(_disabled(modules[name]) for name in edited)
    others = [layer.module_name for layer in ctx.layout.self_layers if layer.module_name not in edited]
    assert others and not any(_disabled(modules[name]) for name in others)
    torch._dynamo.reset()


def test_a_pixart_transformer_stays_eager():
    """PixArt: --compile compiles only the HRV vote (the run's settings); the denoiser is left as it is."""
    ctx = _context("--compile", card="tiny-pixart")
    ctx.compile(whole=True)
    ctx.compile()
    assert "forward" not in vars(ctx.pipe.transformer)
