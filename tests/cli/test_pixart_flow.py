"""The HRV construction commands on ``--model_card tiny-pixart`` (the PixArt family), in process, in one folder:
hrv-heads, hrv-text-embeddings, hrv-relevance and hrv-extract, with the family's label grammar in every output."""
from __future__ import annotations

import numpy as np

from hrv_diffusion.cli import extract, heads, relevance, text_embeddings
from hrv_diffusion.core.families import pixart
from hrv_diffusion.hrv.shards import load_shard

CARD = ["--model_card", "tiny-pixart"]


def test_hrv_heads_lists_blocks_and_the_real_configs_without_weights(capsys):
    assert heads.main([*CARD, "--labels-only"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"block {b}, head {h}" for b in range(3) for h in range(4)]
    for card in pixart.CONFIGS:
        assert heads.main(["--config-only", card, "--summary"]) == 0
        assert capsys.readouterr().out.strip() == "448 CA heads in 28 layers (block 448)"


def test_construction_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    common = [*CARD, "--description", "toy_concepts", "--output_dir", "out"]
    assert text_embeddings.main(common) in (0, None)
    assert relevance.main([*common, "--prompt", "toy", "--max_prompts", "2", "--batch_size", "2",
                           "--num_inference_steps", "2", "--quiet"]) in (0, None)
    [shard_file] = (tmp_path / "out" / "results").glob("*_tiny_pixart.npz")
    shard = load_shard(shard_file)
    evaluations, num_heads, num_concepts = shard.counts.shape
    assert num_heads == 12 and shard.metadata["head_labels"][-1] == "block 2, head 3"
    assert (shard.counts.sum(-1) == 2).all()  # one vote per prompt, head and evaluation
    assert extract.main([*common, "--prompt", "toy"]) in (0, None)
    [hrv] = (tmp_path / "out" / "final_result").glob("category_vectors_*_tiny_pixart.npy")
    vectors = np.load(hrv)
    assert vectors.shape == (num_concepts, 12)
    np.testing.assert_allclose(vectors.sum(1), 12, rtol=1e-5)  # an HRV sums to the number of heads
