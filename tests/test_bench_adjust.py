"""bench/bench_adjust.py --smoke: the benchmark's code path on tiny-sd and tiny-sdxl on the CPU."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_writes_the_report(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_adjust", ROOT / "bench" / "bench_adjust.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "adjust.json"
    bench.main(["--smoke", "--steps", "2", "--reps", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"sd", "sdxl"} and report["evaluations"] == 3
    for model, result in report["models"].items():
        assert result["plain_s"] > 0 and result["adjusted_s"] > 0
        assert result["ratio"] == result["adjusted_s"] / result["plain_s"]
        assert result["max_abs_uint8_factor_one_vs_plain"] == 0  # factors of 1: the plain images, bit for bit
    assert report["models"]["sdxl"]["clamp"] == 9.0 and report["models"]["sd"]["clamp"] is None
