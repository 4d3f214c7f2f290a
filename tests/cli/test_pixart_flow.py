"""The commands on ``--model_card tiny-pixart`` (the PixArt family), in process, in one folder: hrv-heads, then
hrv-text-embeddings, hrv-relevance and hrv-extract (the HRV), then the applications that run on it (ordered
weakening, SD-HRV adjusting, visualization, P2P / P2P-HRV and its benchmark, A&E / A&E-HRV and the multi-object
runs), with the family's label grammar in every output."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from hrv_diffusion.cli import (adjust, attend_excite, extract, heads, multi_object, p2p, p2p_benchmark, relevance,
                               text_embeddings, visualize, weakening)
from hrv_diffusion.core.families import pixart
from hrv_diffusion.hrv.shards import load_shard

CARD = ["--model_card", "tiny-pixart"]
COMMON = [*CARD, "--description", "toy_concepts"]


def test_hrv_heads_lists_blocks_and_the_real_configs_without_weights(capsys):
    assert heads.main([*CARD, "--labels-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"block {b}, head {h}" for b in range(3) for h in range(4)]
    for card in pixart.CONFIGS:
        assert heads.main(["--config-only", card, "--summary"]) == 0
        assert capsys.readouterr().out.strip() == "448 CA heads in 28 layers (block 448)"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """An HRV of tiny-pixart built by the three construction commands: (folder, shard file, HRV file)."""
    folder = tmp_path_factory.mktemp("pixart")
    out = ["--output_dir", str(folder / "out")]
    assert text_embeddings.main([*COMMON, *out]) in (0, None)
    assert relevance.main([*COMMON, *out, "--prompt", "toy", "--max_prompts", "2", "--batch_size", "2",
                           "--num_inference_steps", "2", "--quiet"]) in (0, None)
    assert extract.main([*COMMON, *out, "--prompt", "toy"]) in (0, None)
    [shard] = (folder / "out" / "results").glob("*_tiny_pixart.npz")
    [hrv] = (folder / "out" / "final_result").glob("category_vectors_*_tiny_pixart.npy")
    return folder, shard, hrv


def test_construction_runs_end_to_end(built):
    _, shard_file, hrv = built
    shard = load_shard(shard_file)
    evaluations, num_heads, num_concepts = shard.counts.shape
    assert num_heads == 12 and shard.metadata["head_labels"][-1] == "block 2, head 3"
    assert (shard.counts.sum(-1) == 2).all()  # one vote per prompt, head and evaluation
    vectors = np.load(hrv)
    assert vectors.shape == (num_concepts, 12)
    np.testing.assert_allclose(vectors.sum(1), 12, rtol=1e-5)  # an HRV sums to the number of heads


def test_sd_hrv_adjusting_runs_and_changes_the_image(built):
    folder, _, hrv = built
    out = folder / "adjust"
    assert adjust.main([*COMMON, "--hrv", str(hrv), "--prompt", "a red circle", "--selected_token", "red",
                        "--desired", "Color", "--undesired", "Shape", "--seeds", "1", "--n_inference_steps", "2",
                        "--output_path", str(out), "--quiet"]) in (0, None)
    [standard] = out.rglob("standard_sd/1.png")
    [adjusted] = out.rglob("sd-hrv/1.png")
    assert not np.array_equal(np.asarray(Image.open(standard)), np.asarray(Image.open(adjusted)))


def test_ordered_weakening_and_visualization_run(built, monkeypatch):
    folder, _, hrv = built
    monkeypatch.chdir(folder)
    assert weakening.main([*COMMON, "--hrv", str(hrv), "--concept", "Color", "--prompt", "a red circle",
                           "--seeds", "1", "--heads_to_be_perturbed", "0", "2", "--n_inference_steps", "2",
                           "--quiet"]) in (0, None)
    assert len(list((folder / "ordered_weakening_analysis").rglob("*.png"))) == 4  # k = 0 and 2, two orders
    assert visualize.main([*COMMON, "--hrv", str(hrv), "--output_dir", str(folder / "vis")]) in (0, None)
    assert "block 0, head" in (folder / "vis" / "top_heads.md").read_text()


def test_p2p_and_p2p_hrv_run(built):
    """hrv-p2p on tiny-pixart: the P2P baseline, P2P-HRV with the model's own HRV, and the all-heads restoration."""
    folder, _, hrv = built
    out = folder / "p2p"
    flags = [*COMMON, "--prompts", "a red circle", "a blue circle", "--target_token", "blue", "--seeds", "1",
             "--n_inference_steps", "2", "--output_path", str(out), "--quiet"]
    assert p2p.main([*flags, "--hrv", str(hrv), "--use_soft_vector", "--concepts", "Color",
                     "--save_original_p2p", "--local_blend", "red", "blue"]) in (0, None)
    assert p2p.main([*flags, "--replace_all_heads", "--experiment_num", "2"]) in (0, None)
    source = np.asarray(Image.open(out / "exp_1" / "source" / "a red circle" / "1.png"))
    edited = {p.parent.parent.name: np.asarray(Image.open(p)) for p in (out / "exp_1").rglob("*_to_*/1.png")}
    assert sorted(edited) == ["Color_0.9_blend", "original_p2p_blend"]
    assert all(image.shape == source.shape == (32, 32, 3) for image in edited.values())
    assert len(list((out / "exp_2").rglob("*_to_*/1.png"))) == 1


def test_p2p_benchmark_runs(built):
    folder, _, hrv = built
    out = folder / "benchmark"
    assert p2p_benchmark.main([*COMMON, "--hrv", str(hrv), "--sets", "color", "--max_pairs", "1", "--methods", "p2p",
                               "p2p_hrv", "--seeds", "1", "--n_inference_steps", "2", "--output_path", str(out),
                               "--quiet"]) in (0, None)
    assert len(list((out / "exp_1" / "masks").rglob("*.png"))) == 1
    assert len(list(out.rglob("*.png"))) == 4  # the source, the two methods' edits, the mask


@pytest.mark.parametrize("mode", [["--run_standard_attend_excite"], []])
def test_attend_excite_runs(built, mode):
    """hrv-attend-excite on tiny-pixart, standard A&E and A&E-HRV; T5 positions start at the first word (0)."""
    folder, _, hrv = built
    out = folder / f"ae{len(mode)}"
    assert attend_excite.main([*COMMON, *mode, "--prompt", "circle and a blue square", "--token_indices", "0", "4",
                               "--hrv", str(hrv), "--concepts", "Shape", "--seeds", "1", "--n_inference_steps", "2",
                               "--max_iter_to_alter", "2", "--output_path", str(out), "--quiet"]) in (0, None)
    [image] = out.rglob("1.png")
    [telemetry] = out.rglob("1.json")
    steps = json.loads(telemetry.read_text())["steps"]
    assert [s["step"] for s in steps] == [0, 1] and all(len(s["max_attention"]) == 2 for s in steps)
    assert np.asarray(Image.open(image)).shape == (32, 32, 3)


def test_multi_object_runs(built):
    folder, _, hrv = built
    out = folder / "multi"
    assert multi_object.main([*COMMON, "--prompt_set", "toy", "--methods", "hrv", "standard", "sd", "--concepts",
                              "Shape", "--hrv", str(hrv), "--num_seeds", "1", "--n_inference_steps", "2",
                              "--max_iter_to_alter", "1", "--output_path", str(out), "--quiet"]) in (0, None)
    assert len(list(out.rglob("0.png"))) == 6  # 2 prompts x 3 methods
