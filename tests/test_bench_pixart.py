"""bench/bench_pixart.py --smoke: the PixArt benchmark's code path (random text, hooks, votes) on tiny-pixart, CPU."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_writes_the_report(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_pixart", ROOT / "bench" / "bench_pixart.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "pixart.json"
    bench.main(["--smoke", "--out", str(out)])  # smoke defaults: 2 prompts in a batch of 2, 2 steps, 1 rep
    report = json.loads(out.read_text())
    assert report["model"] == "tiny-pixart" and report["card"] == "cpu" and report["reps_done"] == 1
    # PNDM (the paper's scheduler): 2 steps -> 3 evaluations; tiny-pixart: 3 blocks x 4 heads
    assert report["scheduler"] == "PNDMScheduler" and report["evaluations"] == 3 and report["ca_heads"] == 12
    assert report["votes_total"] == report["votes_expected"] == 2 * 3 * 12  # one vote per prompt, evaluation, head
    for mode in ("plain", "hooked", "hrv"):
        assert report[f"{mode}_s_per_prompt"] == report[f"{mode}_s_per_prompt_reps"][0] > 0
    assert report["vote_overhead"] == report["hrv_s_per_prompt"] / report["plain_s_per_prompt"] - 1
    assert report["hook_overhead"] == report["hooked_s_per_prompt"] / report["plain_s_per_prompt"] - 1
    assert report["plain_final_latents_finite"] and report["hooked_final_latents_finite"]
    assert "no T5 built" in report["text"] and report["query_grid"] == [8, 8]
