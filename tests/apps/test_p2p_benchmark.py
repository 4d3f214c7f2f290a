"""The editing benchmark: its sets, their split over processes, and a tiny run into one tree (tiny-sd)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrv_diffusion.apps.p2p import EditSpec
from hrv_diffusion.apps.p2p_benchmark import SETS, benchmark_pairs, read_pairs, set_file, split_pairs, target_token
from hrv_diffusion.apps.p2p_runs import plan_groups
from hrv_diffusion.apps.runs import pack
from hrv_diffusion.cli.p2p_benchmark import main
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.errors import UserError

PUBLISHED = Path(__file__).resolve().parents[3] / "shared" / "reference" / "benchmark_prompts"


def test_the_five_sets():
    counts = {name: len(read_pairs(set_file(name))) for name in SETS}
    assert counts == {"color": 50, "material": 50, "geometric_patterns": 50, "image_style": 50,
                      "weather_conditions": 25}
    assert set_file("color").read_bytes().startswith(b"source_prompt,target_prompt\r\n")
    pairs = benchmark_pairs(list(SETS), lambda concept: (EditSpec(f"{concept}_0.9"),))
    assert len(pairs) == 225 and len({p.source_prompt for p in pairs}) < 225  # sources shared by several pairs
    first = {dict(p.info)["set"]: p for p in reversed(pairs)}
    assert first["color"].target_token == "brown" and dict(first["color"].info)["concept"] == "Color"
    assert first["geometric_patterns"].target_token == "leopard"
    assert first["image_style"].target_token == "sepia"
    assert first["weather_conditions"].target_token == "snowy"
    assert all(p.target_token in p.target_prompt.split(" ") for p in pairs)


@pytest.mark.skipif(not PUBLISHED.is_dir(), reason="the published prompt files are not beside the repository")
def test_the_shipped_pairs_are_the_published_ones():
    for name in SETS:
        assert read_pairs(set_file(name)) == read_pairs(set_file(name, PUBLISHED))


def test_target_token_needs_a_one_word_swap():
    assert target_token("a cat on a sunny day", "a cat on a snowy day") == "snowy"
    with pytest.raises(UserError, match="one-word swap"):
        target_token("a blue car", "a red bus")


def test_split_covers_every_source_once():
    pairs = benchmark_pairs(["color", "weather_conditions"], lambda c: (EditSpec("m"),))
    parts = [split_pairs(pairs, (n, 3), rank, 2) for n in (1, 2, 3) for rank in (0, 1)]
    sources = [{p.source_prompt for p in part} for part in parts]
    assert sum(len(part) for part in parts) == len(pairs)
    assert all(not (a & b) for i, a in enumerate(sources) for b in sources[i + 1:])  # a source in one process only


def test_pack_is_even_and_bounded():
    def rows(sizes, batch_size):
        return [sum(sizes[part]) for part in pack(sizes, batch_size)]

    # 11 groups of 3 rows = 33 rows at 16: the fewest batches (3), none above 12 rows (rather than 15, 15, 3)
    assert rows([3] * 11, 16) == [12, 9, 12]
    assert rows([3] * 10, 16) == [15, 15]
    assert rows([4] * 10, 16) == [12, 16, 12]  # 40 rows: 3 batches whose cuts lie nearest to 13 and 27 rows
    assert [len(range(10)[part]) for part in pack([20, 3], 16)] == [1, 1]  # a group larger than a batch goes alone


@pytest.fixture(scope="module")
def hrv_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hrv")
    layout = head_layout(load_pipeline("tiny-sd").unet)
    values = np.random.default_rng(1).gamma(0.5, size=(34, layout.num_heads)).astype(np.float32)
    np.save(folder / "category_vectors_x.npy", values / values.sum(1, keepdims=True) * layout.num_heads)
    np.save(folder / "head_index_x.npy", np.array(layout.labels))
    return folder / "category_vectors_x.npy"


def bench(out, hrv_file, *extra):
    return main(["--sets", "color", "geometric_patterns", "--max_pairs", "2", "--seeds", "1", "2", "--model_card",
                 "tiny-sd", "--hrv", str(hrv_file), "--n_inference_steps", "2", "--output_path", str(out),
                 "--quiet", "--batch_size", "6", *extra])


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_split_runs_fill_one_tree_like_a_single_run(tmp_path, hrv_file, capsys):
    assert bench(tmp_path / "whole", hrv_file) == 0
    for n in (1, 2):
        assert bench(tmp_path / "split", hrv_file, "--subset_running", "--numerator", str(n), "--denominator", "2") == 0
    whole, split = tree(tmp_path / "whole"), tree(tmp_path / "split")
    # 4 pairs (4 sources) x 2 seeds: 2 methods and a mask each, plus 4 x 2 source images
    assert len(whole) == 4 * 2 * 3 + 4 * 2
    assert whole.keys() == split.keys()
    assert sorted({k.split("/")[1] for k in whole}) == ["Color_0.9", "Geometric Patterns_0.9", "masks",
                                                         "original_p2p", "source"]
    # the same images, up to batch composition (kernel rounding may move a pixel by one level)
    for key in whole:
        from io import BytesIO

        from PIL import Image

        a, b = (np.asarray(Image.open(BytesIO(t[key]))).astype(int) for t in (whole, split))
        assert np.abs(a - b).max() <= 1, key
    manifest = json.loads((tmp_path / "whole" / "exp_1" / "Color_0.9" / "a blue car_to_a brown car"
                           / "manifest.json").read_text())
    assert manifest["set"] == "color" and manifest["concept"] == "Color" and manifest["target_token"] == "brown"
    capsys.readouterr()
    assert bench(tmp_path / "whole", hrv_file) == 0  # resume: nothing to do
    assert "0 edited, 0 source and 0 mask images written" in capsys.readouterr().out


def test_plan_shares_a_source_between_pairs(tmp_path):
    from hrv_diffusion.apps.p2p_runs import EditLayout, Pair, RunSettings

    spec = EditSpec("m")
    pairs = [Pair("a blue car", "a red car", "red", (spec,)), Pair("a blue car", "a brown car", "brown", (spec,))]
    layout = EditLayout(tmp_path, 1, RunSettings("tiny-sd", "tiny_sd", "float32"))
    groups = plan_groups(pairs, [1, 2], layout, masks=True)
    assert [(g.group.seed, len(g.group.edits), g.group.mask_targets) for g in groups] == [
        (1, 2, ("a red car", "a brown car")), (2, 2, ("a red car", "a brown car"))]
