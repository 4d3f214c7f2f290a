"""fp16 / bf16 vs fp32 HRV votes on the built-in tiny models (CPU): vote agreement and HRV rank correlation.

    python bench/agreement_tiny.py --out bench/results/agreement_tiny.json
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.construction import RelevanceSettings, run_relevance  # noqa: E402
from hrv_diffusion.hrv.embeddings import TextEmbeddings, encode_words  # noqa: E402
from hrv_diffusion.core.models import load_pipeline  # noqa: E402
from hrv_diffusion.hrv.prompts import load_prompts  # noqa: E402
from hrv_diffusion.hrv.files import hrv_from_rank, relevance  # noqa: E402
from hrv_diffusion.hrv.shards import load_shard  # noqa: E402


def counts_for(card, dtype, prompts, concepts):
    pipe = load_pipeline(card, dtype=dtype)
    emb, lengths = encode_words(pipe, list(concepts.flat_words))
    te = TextEmbeddings(embeddings=emb, token_lengths=lengths, metadata={})
    settings = RelevanceSettings(model_card=card, model_version=card, description="paper", prompt="agreement",
                                 batch_size=16, dtype=dtype)
    meta = {"concept_fingerprint": concepts.fingerprint(), "concept_names": list(concepts.names), "prompt_fingerprint": "x"}
    [path] = run_relevance(pipe, settings, concepts, te, prompts, list(range(len(prompts))), meta,
                           Path(tempfile.mkdtemp()), progress=False)
    return load_shard(path).counts


def spearman(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    concepts = read_concept_set(resolve_description("340_final_text_descriptions"))
    prompts = load_prompts("imagenet")[: args.prompts]
    report = {"device": "cpu", "torch": torch.__version__, "prompts": len(prompts), "steps": 50, "models": {}}
    for card in ("tiny-sd", "tiny-sdxl"):
        ref = counts_for(card, "float32", prompts, concepts)
        hrv_ref = hrv_from_rank(relevance(ref))
        for dtype in ("float16", "bfloat16"):
            low = counts_for(card, dtype, prompts, concepts)
            hrv = hrv_from_rank(relevance(low))
            rho = [spearman(a, b) for a, b in zip(hrv, hrv_ref)]
            report["models"][f"{card} {dtype}"] = {
                "vote_histogram_overlap_vs_fp32": float(np.minimum(low, ref).sum() / ref.sum()),
                "hrv_spearman_mean": float(np.nanmean(rho)), "hrv_spearman_min": float(np.nanmin(rho))}
            print(card, dtype, report["models"][f"{card} {dtype}"], flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
