"""hrv-p2p and hrv-p2p-benchmark on the toy model at a non-default size, and what a rerun does: the same settings
regenerate nothing and rewrite no image; a changed result setting is refused (exit 2, one line naming --overwrite)
with the images untouched; --overwrite regenerates."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from hrv_diffusion.cli.p2p import main as p2p_main
from hrv_diffusion.cli.p2p_benchmark import main as benchmark_main

SOURCE = "a small red circle at the top on a white background"
TARGET = "a small blue circle at the top on a white background"
FAST = ["--model_card", "toy", "--seeds", "1", "--n_inference_steps", "2", "--quiet"]
P2P = [*FAST, "--prompts", SOURCE, TARGET, "--target_token", "blue", "--use_soft_vector", "--concepts", "Color",
       "--save_original_p2p"]
BENCHMARK = [*FAST, "--sets", "color", "--max_pairs", "1", "--methods", "p2p", "p2p_hrv", "--no_masks"]
SMALL = ["--height", "48", "--width", "32"]
COMMANDS = {"p2p": (p2p_main, P2P, 4), "benchmark": (benchmark_main, BENCHMARK, 3)}  # PNGs of one seed (p2p: and
# its comparison figure)


def images(root: Path) -> dict[str, tuple[int, bytes]]:
    """{relative path: (mtime_ns, bytes)} of every PNG under ``root``."""
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(root.rglob("*.png"))}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_non_default_size_and_the_rerun_table(command, tmp_path, capsys):
    main, flags, count = COMMANDS[command]
    run = lambda *extra: main([*flags, "--output_path", str(tmp_path), *extra])  # noqa: E731
    assert run(*SMALL) == 0
    first = images(tmp_path)
    assert len(first) == count
    for path in first:
        if path.startswith("exp_1/comparison/"):
            continue  # the labelled figure
        with Image.open(tmp_path / path) as image:
            assert image.size == (32, 48), path  # (width, height)
    kinds = {json.loads(p.read_text())["kind"] for p in tmp_path.rglob("manifest.json")}
    assert "source" in kinds and "edit" in kinds
    capsys.readouterr()

    assert run(*SMALL) == 0  # the same settings: nothing regenerated, no PNG rewritten
    assert "0 images generated (0 files written)" in capsys.readouterr().out
    assert images(tmp_path) == first

    for changed in (["--cross_replace_steps", "0.5"], ["--guidance_scale", "5"], []):  # [] = the model's size
        assert run(*(SMALL if changed else []), *changed) == 2
        err = capsys.readouterr().err  # the model loads first (its defaults are in the settings): tqdm may write
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "--overwrite" in errors[0] and "Traceback" not in err, err
        assert images(tmp_path) == first

    assert run(*SMALL, "--guidance_scale", "5", "--overwrite") == 0
    again = images(tmp_path)
    assert again.keys() == first.keys()
    assert all(again[p][0] != first[p][0] for p in first)  # every image written again
    assert any(again[p][1] != first[p][1] for p in first)  # with the new guidance scale
    manifests = [json.loads(p.read_text()) for p in tmp_path.rglob("manifest.json")]
    assert {m["guidance_scale"] for m in manifests} == {5.0} and {m["height"] for m in manifests} == {48}


def test_benchmark_masks_at_non_default_size(tmp_path):
    flags = [arg for arg in BENCHMARK if arg != "--no_masks"]
    assert benchmark_main([*flags, *SMALL, "--output_path", str(tmp_path)]) == 0
    masks = sorted((tmp_path / "exp_1" / "masks").rglob("*.png"))
    assert len(masks) == 1
    with Image.open(masks[0]) as mask:
        assert mask.size == (32, 48) and mask.mode == "L"


def test_interrupt_keeps_finished_images_and_prints_the_command_that_continues(tmp_path, monkeypatch, capsys):
    import os
    import signal

    import hrv_diffusion.apps.p2p_runs as p2p_runs

    flags = [*P2P[:P2P.index("--seeds")], "--seeds", "1", "2", *P2P[P2P.index("--seeds") + 2:], "--batch_size", "3",
             "--output_path", str(tmp_path), "--overwrite"]
    original, calls = p2p_runs.generate_edits, []

    def generate_edits(*a, **k):  # SIGTERM (a cluster's preemption) during the second batch
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **k)

    monkeypatch.setattr(p2p_runs, "generate_edits", generate_edits)
    assert p2p_main(flags) == 130
    err = capsys.readouterr().err
    assert "interrupted: the finished images are saved under " in err and "hrv-p2p --model_card toy" in err
    assert "--overwrite" not in err.splitlines()[-1]  # continuing keeps the finished images
    assert sorted(p.name for p in tmp_path.rglob("*.png")) == ["1.png"] * 3  # seed 1's batch, whole
    monkeypatch.setattr(p2p_runs, "generate_edits", original)
    assert p2p_main([f for f in flags if f != "--overwrite"]) == 0
    assert "3 images generated (3 files written), 3 already present" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
