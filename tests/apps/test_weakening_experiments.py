"""The paper's ordered-weakening experiments: prompt counts, exact prompts, CLIP texts, and the prompts CLI."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hrv_diffusion.cli.weakening_prompts import main as prompts_main
from hrv_diffusion.apps.weakening_experiments import (EXPERIMENTS, Experiment, Objects_A, build_prompts, clip_text_for,
                                       experiment)

REPO = Path(__file__).resolve().parents[2]

COUNTS = {1: 50, 2: 20, 3: 10, 4: 50, 5: 50, 6: 25, 7: 10, 8: 10, 9: 10,
          91: 10, 92: 50, 93: 50, 94: 10, 95: 10, 991: 10}


def test_numbers_and_counts():
    assert sorted(EXPERIMENTS) == sorted(COUNTS)
    for number, count in COUNTS.items():
        prompts = build_prompts(experiment(number))
        assert len(prompts) == count == experiment(number).num_prompts
        assert len(set(prompts)) == count


@pytest.mark.parametrize("number, index, prompt", [
    (1, 0, "a red car"), (1, 3, "a red ballon"), (1, 5, "a blue car"), (1, 49, "a brown ball"),
    (2, 0, "a cat on a snowy day"), (2, 1, "a cat on a rainy day"), (2, 19, "a bird on a stormy day"),
    (3, 0, "photo of a cat"), (3, 9, "photo of a horse"),
    (4, 0, "a bowl made of glass"), (4, 10, "a cup made of glass"), (4, 49, "a teapot made of leather"),
    (5, 0, "a cubist style painting of a castle"), (5, 1, "a cubist style painting of a mountain"),
    (5, 5, "a pop art style painting of a castle"), (5, 49, "a sketch style painting of a forest"),
    (6, 0, "a T-shirt with a polka-dot pattern"), (6, 24, "a blanket with a plaid pattern"),
    (7, 7, "photo of a coral reef"), (8, 0, "photo of lemons"), (9, 9, "photo of a TV stand"),
    (91, 2, "photo of a sheep"), (92, 0, "a coral car"), (93, 49, "a teapot made of bronze"),
    (94, 7, "photo of bell peppers"), (95, 5, "photo of a rainforest"), (991, 0, "photo of a salad bowl"),
])
def test_exact_prompts(number, index, prompt):
    assert build_prompts(experiment(number))[index] == prompt


def test_concepts_and_published_spelling():
    assert experiment(5).concept == "Image Style" and experiment(2).concept == "Weather Conditions"
    assert experiment("92").concept == "Color"
    assert "ballon" in Objects_A  # the published spelling, kept
    assert experiment(991).concept == "Tableware"


def test_clip_text():
    assert clip_text_for("a cubist style painting of a castle", experiment(5)) == "cubist"
    assert clip_text_for("a black-and-white style painting of a forest", experiment(5)) == "black-and-white"
    assert clip_text_for("a cat on a foggy day", experiment(2)) == "foggy"  # the '@' list
    assert clip_text_for("a bowl made of jade", experiment(4)) == "jade"
    assert clip_text_for("a pillow with a leopard pattern", experiment(6)) == "leopard"
    assert clip_text_for("a green bench", experiment(1)) == "green"
    # first match in list order, as the reference: "table" comes before "coffee table"
    assert clip_text_for("photo of a coffee table", experiment(9)) == "table"
    for exp in EXPERIMENTS.values():
        for prompt in build_prompts(exp):
            assert clip_text_for(prompt, exp) in exp.text_items


def test_clip_text_without_match_raises():
    with pytest.raises(ValueError, match="contains none of the Image Style items"):
        clip_text_for("a photo of a castle", experiment(5))


def test_unknown_experiment():
    with pytest.raises(KeyError, match="991"):
        experiment(10)
    with pytest.raises(ValueError, match="^no experiment 'x'; the experiments are 1, 2"):
        experiment("x")


def test_template_and_lists_must_agree():
    with pytest.raises(ValueError):
        Experiment(1, "Color", "a ! car", ("red",), ("car",))
    with pytest.raises(ValueError):
        Experiment(1, "Color", "a ! @", ("red",))
    assert Experiment(7, "X", "a ! @", ["red"], ["car"]).text_items == ("car",)


def test_cli_prints_and_writes(tmp_path, capsys):
    assert prompts_main(["--experiment_num", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 50 and lines[0] == "a cubist style painting of a castle"
    out = tmp_path / "p.txt"
    assert prompts_main(["--experiment_num", "2", "--out", str(out)]) == 0
    assert out.read_text().splitlines() == build_prompts(experiment(2))
    assert "wrote 20 prompts" in capsys.readouterr().out
    assert prompts_main(["--experiment_num", "9", "--with_text"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "photo of a bed\tbed"
    assert prompts_main(["--list"]) == 0
    assert "Image Style" in capsys.readouterr().out
    assert prompts_main(["--experiment_num", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no experiment 12") and err.count("\n") == 1


def test_thin_script_runs_from_another_directory(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "ordered_weakening_analysis" / "construct_prompts.py"),
                             "--experiment_num", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "photo of a cat"
