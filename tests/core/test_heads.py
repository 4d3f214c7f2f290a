"""Head layout in the published order, and the ``hrv-heads`` command.

The expected orders are rebuilt here from the rules of spec-hrv-and-weakening.md §4, independently of
``hrv_diffusion.core.heads``; the UNets are the real SD v1.4 / SDXL-base configs (tests/configs) and SD 2.1's
(``SD21_UNET`` below), built on the meta device, so no weights are needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hrv_diffusion.cli.heads import main
from hrv_diffusion.core.heads import head_layout, parse_label, unet_from_config
from hrv_diffusion.core.tiny import TINY_MODELS

CONFIGS = Path(__file__).parents[1] / "configs"
SD14 = CONFIGS / "sd_v1_4_unet.json"
SDXL = CONFIGS / "sdxl_base_1_0_unet.json"


def labels(place: str, layers, heads: int) -> list[str]:
    return [f"{place}, layer: {layer}, head: {head}" for layer in layers for head in range(heads)]


# Spec §4. SD v1.4: 16 CA layers x 8 heads.
SD14_LABELS = labels("down", range(6), 8) + labels("mid", range(1), 8) + labels("up", range(9), 8)
# SDXL: down l0-3 x10, l4-23 x20; mid l0-9 x20; up l0-29 x20, l30-35 x10.
SDXL_LABELS = (
    labels("down", range(4), 10) + labels("down", range(4, 24), 20) + labels("mid", range(10), 20)
    + labels("up", range(30), 20) + labels("up", range(30, 36), 10)
)


# SD 2.1 (768-v) unet/config.json, written out here (stabilityai/stable-diffusion-2-1 cannot be downloaded in
# tests): SD v1.4's blocks with an OpenCLIP ViT-H context (1024-d), linear projections, and ``attention_head_dim``
# holding the heads per block (diffusers reads it as num_attention_heads): 5, 10, 20 heads of 64 channels.
SD21_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0,
    "in_channels": 4, "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 96,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "upcast_attention": True, "use_linear_projection": True,
}
SD21_BASE_UNET = SD21_UNET | {"sample_size": 64, "upcast_attention": False}  # -2-1-base, 512 px
# Same rules as SD v1.4: down l0-1 x5, l2-3 x10, l4-5 x20; mid l0 x20; up l0-2 x20, l3-5 x10, l6-8 x5.
SD21_LABELS = (
    labels("down", range(2), 5) + labels("down", range(2, 4), 10) + labels("down", range(4, 6), 20)
    + labels("mid", range(1), 20) + labels("up", range(3), 20) + labels("up", range(3, 6), 10)
    + labels("up", range(6, 9), 5)
)


def sd14_layer_rows() -> list[tuple[str, str]]:
    """(module name, resolution) of every SD v1.4 CA head, from the table of spec §4."""
    rows = []
    down_res = [64, 64, 32, 32, 16, 16]
    for layer in range(6):
        name = f"down_blocks.{layer // 2}.attentions.{layer % 2}.transformer_blocks.0.attn2"
        rows += [(name, f"{down_res[layer]}x{down_res[layer]}")] * 8
    rows += [("mid_block.attentions.0.transformer_blocks.0.attn2", "8x8")] * 8
    up_res = [16] * 3 + [32] * 3 + [64] * 3
    for layer in range(9):
        name = f"up_blocks.{1 + layer // 3}.attentions.{layer % 3}.transformer_blocks.0.attn2"
        rows += [(name, f"{up_res[layer]}x{up_res[layer]}")] * 8
    return rows


def run_cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.fixture(scope="module")
def layouts():
    return {
        "sd14": head_layout(unet_from_config(json.loads(SD14.read_text()))),
        "sdxl": head_layout(unet_from_config(json.loads(SDXL.read_text()))),
    }


# ---------------------------------------------------------------- hrv-heads on the real configs


def test_sd14_lines_follow_published_order(capsys):
    code, lines, err = run_cli(capsys, "--config-only", str(SD14))
    assert code == 0, err
    assert len(lines) == 128
    rows = [line.split("\t") for line in lines]
    assert all(len(row) == 3 for row in rows)
    assert [row[0] for row in rows] == SD14_LABELS
    assert [(row[1], row[2]) for row in rows] == sd14_layer_rows()


def test_sdxl_lines_follow_published_order(capsys):
    code, lines, err = run_cli(capsys, "--config-only", str(SDXL))
    assert code == 0, err
    assert len(lines) == 1300
    rows = {row[0]: row[1:] for row in (line.split("\t") for line in lines)}
    assert [line.split("\t")[0] for line in lines] == SDXL_LABELS
    # A few layers whose modules and resolutions are known (1024 px images: 128x128 latents).
    assert rows["down, layer: 0, head: 9"] == ["down_blocks.1.attentions.0.transformer_blocks.0.attn2", "64x64"]
    assert rows["down, layer: 3, head: 0"] == ["down_blocks.1.attentions.1.transformer_blocks.1.attn2", "64x64"]
    assert rows["down, layer: 4, head: 19"] == ["down_blocks.2.attentions.0.transformer_blocks.0.attn2", "32x32"]
    assert rows["down, layer: 23, head: 0"] == ["down_blocks.2.attentions.1.transformer_blocks.9.attn2", "32x32"]
    assert rows["mid, layer: 0, head: 0"] == ["mid_block.attentions.0.transformer_blocks.0.attn2", "32x32"]
    assert rows["mid, layer: 9, head: 19"] == ["mid_block.attentions.0.transformer_blocks.9.attn2", "32x32"]
    assert rows["up, layer: 0, head: 0"] == ["up_blocks.0.attentions.0.transformer_blocks.0.attn2", "32x32"]
    assert rows["up, layer: 29, head: 19"] == ["up_blocks.0.attentions.2.transformer_blocks.9.attn2", "32x32"]
    assert rows["up, layer: 30, head: 0"] == ["up_blocks.1.attentions.0.transformer_blocks.0.attn2", "64x64"]
    assert rows["up, layer: 35, head: 9"] == ["up_blocks.1.attentions.2.transformer_blocks.1.attn2", "64x64"]


@pytest.mark.parametrize("config, size", [(SD21_UNET, 96), (SD21_BASE_UNET, 64)])
def test_sd21_lines_follow_published_order(capsys, tmp_path, config, size):
    """SD 2.1 (and -base): 16 CA layers, 195 heads of 5/10/20 per layer, in SD v1.4's order, on the same modules
    with the latent grids of 768 px (96) or 512 px (64)."""
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    code, lines, err = run_cli(capsys, "--config-only", str(path))
    assert code == 0, err
    assert len(lines) == 195
    rows = [line.split("\t") for line in lines]
    assert [row[0] for row in rows] == SD21_LABELS
    heads = [5, 5, 10, 10, 20, 20, 20, 20, 20, 20, 10, 10, 10, 5, 5, 5]  # per layer, in the order of SD v1.4's rows
    sd14_modules = [module for module, _ in sd14_layer_rows()[::8]]  # one row per layer
    sd14_grids = [int(grid.split("x")[0]) for _, grid in sd14_layer_rows()[::8]]
    expected = [(module, f"{g * size // 64}x{g * size // 64}")
                for module, g, h in zip(sd14_modules, sd14_grids, heads) for _ in range(h)]
    assert [(row[1], row[2]) for row in rows] == expected
    code, lines, _ = run_cli(capsys, "--config-only", str(path), "--summary")
    assert code == 0 and "195" in "\n".join(lines)


def test_sd21_heads_are_named_by_their_count_and_tiny_sd2_is_its_miniature():
    """195 heads name SD 2.x in the message for an HRV of another model; tiny-sd2 has SD 2.1's layers (same modules,
    places, indices, grids relative to the latent) with a fifth of the heads."""
    from hrv_diffusion.core.head_counts import describe_heads

    assert describe_heads(195) == "an HRV of SD 2.x (sd_v2_1, sd_v2_1_base, sd_v2, sd_v2_base) (195 heads)"
    real = head_layout(unet_from_config(SD21_UNET))
    tiny = head_layout(TINY_MODELS["tiny-sd2"]().unet)
    assert real.num_heads == 195 and tiny.num_heads == 39
    assert [(l.place, l.index, l.module_name, l.factor) for l in tiny.layers] == \
        [(l.place, l.index, l.module_name, l.factor) for l in real.layers]
    assert [5 * l.heads for l in tiny.layers] == [l.heads for l in real.layers]


def test_labels_only_and_summary(capsys):
    code, lines, _ = run_cli(capsys, "--config-only", str(SD14), "--labels-only")
    assert code == 0 and lines == SD14_LABELS
    code, lines, _ = run_cli(capsys, "--config-only", str(SD14), "--summary")
    assert code == 0 and lines == ["128 CA heads in 16 layers (down 48, mid 8, up 72)"]
    code, lines, _ = run_cli(capsys, "--config-only", str(SDXL), "--summary")
    assert code == 0 and lines == ["1300 CA heads in 70 layers (down 440, mid 200, up 660)"]


def test_config_json_path_never_loads_weights(capsys):
    """A config.json has no weights: it is read as with --config-only, on the meta device."""
    code, lines, _ = run_cli(capsys, str(SD14), "--summary")
    assert code == 0 and lines == ["128 CA heads in 16 layers (down 48, mid 8, up 72)"]


def test_unet_folder_and_pipeline_folder(capsys, tmp_path):
    """--config-only also reads <folder>/unet/config.json, or <folder>/config.json of a bare UNet folder."""
    pipeline_folder = tmp_path / "model_a"
    (pipeline_folder / "unet").mkdir(parents=True)
    (pipeline_folder / "model_index.json").write_text("{}")
    (pipeline_folder / "unet" / "config.json").write_text(SDXL.read_text())
    for target in (pipeline_folder, pipeline_folder / "unet"):
        code, lines, err = run_cli(capsys, "--config-only", str(target), "--labels-only")
        assert code == 0, err
        assert lines == SDXL_LABELS


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--config-only", "/no/such/folder"], "no such file or folder"),
        (["--config-only", "missing/unet/config.json"], "no such file or folder"),
        (["/no/such/folder"], "no such file or folder"),
    ],
)
def test_cli_errors_are_one_line(capsys, argv, fragment):
    code, lines, err = run_cli(capsys, *argv)
    assert code == 2
    assert lines == []
    assert err.startswith("error: ") and fragment in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_error_on_files_that_are_not_unet_configs(capsys, tmp_path):
    not_json = tmp_path / "config.json"
    not_json.write_text("not json")
    not_unet = tmp_path / "other.json"
    not_unet.write_text('{"_class_name": "AutoencoderKL"}')
    not_diffusers = tmp_path / "empty_folder"
    not_diffusers.mkdir()
    for target in (not_json, not_unet, not_diffusers):
        code, lines, err = run_cli(capsys, "--config-only", str(target))
        assert code == 2 and lines == []
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_cli_error_when_hub_model_is_not_available(capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read once at import
    code, lines, err = run_cli(capsys, "--config-only", "hrv-diffusion-tests/no-such-model")
    assert code == 2 and lines == []
    err_lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(err_lines) == 1 and "no-such-model" in err_lines[0] and "Traceback" not in err
    assert "--model_card" not in err  # hrv-heads takes MODEL positionally


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for word in ("MODEL", "--config-only", "--labels-only", "--summary", "tiny-sd"):
        assert word in out


def test_labels_only_and_summary_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--config-only", str(SD14), "--labels-only", "--summary"])
    assert exit_info.value.code == 2


# ---------------------------------------------------------------- HeadLayout


def test_layout_offsets_follow_spec_formula(layouts):
    """SDXL: down l0-3 -> 10l+h; down l4-23 -> 40+20(l-4)+h; mid -> 440+20l+h; up l0-29 -> 640+20l+h;
    up l30-35 -> 1240+10(l-30)+h. SD v1.4: base (0, 48, 56) + 8l + h."""
    sd14 = {(layer.place, layer.index): layer.offset for layer in layouts["sd14"].layers}
    assert sd14 == {**{("down", l): 8 * l for l in range(6)}, ("mid", 0): 48,
                    **{("up", l): 56 + 8 * l for l in range(9)}}
    sdxl = {(layer.place, layer.index): layer.offset for layer in layouts["sdxl"].layers}
    expected = {}
    for l in range(24):
        expected["down", l] = 10 * l if l < 4 else 40 + 20 * (l - 4)
    for l in range(10):
        expected["mid", l] = 440 + 20 * l
    for l in range(36):
        expected["up", l] = 640 + 20 * l if l < 30 else 1240 + 10 * (l - 30)
    assert sdxl == expected


@pytest.mark.parametrize("model", ["sd14", "sdxl"])
def test_index_of_and_parse_label_round_trip(layouts, model):
    layout = layouts[model]
    for index, label in enumerate(layout.labels):
        assert layout.index_of(label) == index
        place, layer, head = parse_label(label)
        assert f"{place}, layer: {layer}, head: {head}" == label


def test_parse_label_tolerates_spacing():
    assert parse_label("up,layer:8,head:3") == ("up", 8, 3)
    assert parse_label("  mid ,  layer: 0 , head: 7 ") == ("mid", 0, 7)


@pytest.mark.parametrize(
    "label",
    ["", "down layer 0 head 3", "side, layer: 0, head: 0", "down, layer: x, head: 0", "down, head: 0, layer: 0",
     "down, layer: 0", "down, layer: 0, head: 0, extra", "Down, layer: 0, head: 0", "down, layer: 1.5, head: 0"],
)
def test_parse_label_rejects_malformed(label):
    with pytest.raises(ValueError, match="not a head label"):
        parse_label(label)


@pytest.mark.parametrize(
    "label", ["down, layer: 0, head: 8", "down, layer: 6, head: 0", "mid, layer: 1, head: 0",
              "up, layer: 9, head: 0", "up, layer: 0, head: -1", "down, layer: -1, head: 0"],
)
def test_index_of_rejects_heads_outside_the_unet(layouts, label):
    with pytest.raises(ValueError, match="does not exist"):
        layouts["sd14"].index_of(label)


def test_sdxl_head_counts_differ_per_layer(layouts):
    layout = layouts["sdxl"]
    assert layout.index_of("down, layer: 3, head: 9") == 39
    with pytest.raises(ValueError):
        layout.index_of("down, layer: 3, head: 10")  # 10 heads in down_blocks.1
    assert layout.index_of("down, layer: 4, head: 19") == 59
    assert layout.index_of("up, layer: 35, head: 9") == 1299


# ---------------------------------------------------------------- tiny models


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_tiny_layout_matches_modules(name, capsys):
    from diffusers.models.attention_processor import Attention

    from hrv_diffusion.core.families import UNET, denoiser, family_of

    unet = denoiser(TINY_MODELS[name]())  # a UNet, or tiny-pixart's transformer
    layout = head_layout(unet)
    modules = dict(unet.named_modules())
    cross = {n: m for n, m in modules.items() if isinstance(m, Attention) and m.is_cross_attention}
    assert sorted(layer.module_name for layer in layout.layers) == sorted(cross)
    for layer in layout.layers:
        assert layer.heads == cross[layer.module_name].heads
        assert modules[layer.module_name].to_q.out_features % layer.heads == 0
    assert layout.num_heads == sum(m.heads for m in cross.values())
    places = [layer.place for layer in layout.layers]
    if family_of(unet) is UNET:
        assert places == sorted(places, key=("down", "mid", "up").index)
    else:  # a transformer: its blocks in order
        assert [layer.index for layer in layout.layers] == sorted(layer.index for layer in layout.layers)

    # The CLI agrees, with weights and from the config alone.
    code, lines, _ = run_cli(capsys, name, "--labels-only")
    assert code == 0 and lines == layout.labels
    code, config_lines, _ = run_cli(capsys, "--config-only", name)
    assert code == 0 and [line.split("\t")[0] for line in config_lines] == layout.labels


def test_tiny_resolutions_match_a_forward_pass():
    """The resolution printed for each layer is the grid its queries really have (tiny-sdxl, 16x16 latents)."""
    pipe = TINY_MODELS["tiny-sdxl"]()
    unet = pipe.unet
    layout = head_layout(unet)
    seen = {}
    modules = dict(unet.named_modules())
    hooks = [
        modules[layer.module_name].register_forward_pre_hook(
            lambda module, args, kwargs, name=layer.module_name: seen.__setitem__(
                name, (args[0] if args else kwargs["hidden_states"]).shape[1]),
            with_kwargs=True,
        )
        for layer in layout.layers
    ]
    try:
        with torch.no_grad():
            unet(torch.zeros(1, 4, 16, 16), 10, encoder_hidden_states=torch.zeros(1, 77, 64),
                 added_cond_kwargs={"text_embeds": torch.zeros(1, 32), "time_ids": torch.zeros(1, 6)})
    finally:
        for hook in hooks:
            hook.remove()
    assert {layer.module_name: layer.resolution[0] * layer.resolution[1] for layer in layout.layers} == seen


def test_split_gives_each_layer_its_heads():
    import numpy as np
    import torch

    from hrv_diffusion.core.models import load_pipeline

    layout = head_layout(load_pipeline("tiny-sdxl").unet)
    values = torch.arange(3 * layout.num_heads).view(3, layout.num_heads)  # (..., H)
    parts = layout.split(values)
    assert list(parts) == [layer.module_name for layer in layout.layers]
    for layer in layout.layers:
        assert parts[layer.module_name].shape == (3, layer.heads)
        assert parts[layer.module_name][0, 0] == layer.offset  # its first head
    assert torch.equal(torch.cat(list(parts.values()), dim=-1), values)
    assert list(layout.split(np.zeros(layout.num_heads)).values())[0].shape == (layout.layers[0].heads,)
    with pytest.raises(ValueError, match="one value per CA head"):
        layout.split(torch.zeros(layout.num_heads + 1))


def test_self_attention_layers_share_the_block_numbering():
    from hrv_diffusion.core.models import load_pipeline

    layout = head_layout(load_pipeline("tiny-sd").unet)
    assert len(layout.self_layers) == len(layout.layers)
    for cross, self_ in zip(layout.layers, layout.self_layers):
        assert (self_.place, self_.index, self_.resolution, self_.kind) == (cross.place, cross.index, cross.resolution, "self")
        assert self_.module_name == cross.module_name.replace("attn2", "attn1")


@pytest.mark.parametrize("name", ["toy", "tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_query_grid_follows_the_latent_size(name):
    """``layer.grid(latent)`` is the (H, W) of the feature map its transformer really gets, at non-square and odd
    latent sizes too (each halving rounds up); ``resolution`` is that grid at the default size."""
    from direct_attention import DirectProbs

    from hrv_diffusion.core.loop import encode_prompts
    from hrv_diffusion.core.models import load_pipeline

    pipe = load_pipeline(name)
    layout = head_layout(pipe.unet)
    conditioning = encode_prompts(pipe, ["a red car"], cfg=False, height=48, width=32)
    for latent in ((24, 16), (13, 10), (16, 16)):
        with torch.no_grad(), DirectProbs(pipe.unet) as direct:
            pipe.unet(torch.zeros(1, 4, *latent), 10, encoder_hidden_states=conditioning.cond,
                      added_cond_kwargs=conditioning.added)
        seen = {module: grid for module, grid, _ in direct.calls}
        assert {layer.module_name: layer.grid(latent) for layer in layout.layers} == seen, latent
        assert all(probs.shape[2] == grid[0] * grid[1] for _, grid, probs in direct.calls)
        assert all(layer.queries(latent) == seen[layer.module_name][0] * seen[layer.module_name][1]
                   for layer in layout.layers)
    default = (pipe.unet.config.sample_size,) * 2
    assert all(layer.resolution == layer.grid(default) for layer in (*layout.layers, *layout.self_layers))
    with pytest.raises(ValueError, match="latent size"):
        layout.layers[0].grid(None)
