"""The A&E command lines (one prompt, the multi-object benchmark runner) and the benchmark's CLIP score."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from figures import only, read
from PIL import Image

from hrv_diffusion.apps.attend_excite import AttendExciteSettings, Targets, generate_attend_excite
from hrv_diffusion.apps.multi_object import load_prompt_set, object_phrases, score_images, summarize
from hrv_diffusion.cli.attend_excite import main as ae_main
from hrv_diffusion.cli.multi_object import main as bench_main
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.loop import latent_shape, seed_latents
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.vectors import load_hrv

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "benchmark_prompts"
QUICK = ["--model_card", "toy", "--n_inference_steps", "2", "--max_iter_to_alter", "2", "--thresholds", "0:0.05",
         "--max_refinement_steps", "2", "--quiet"]


def test_prompt_sets():
    animals, colored = load_prompt_set("animals"), load_prompt_set("colored_animals")
    assert len(animals) == 66 and len(colored) == 150
    names = sorted({n for p in animals for n in p.nouns})
    assert len(names) == 12 and sorted(tuple(sorted(p.nouns)) for p in animals) == sorted(
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :])
    assert all(p.nouns[0] != p.nouns[1] and p.objects[0].split()[1] != p.objects[1].split()[1] for p in colored)
    assert colored[0].prompt == "a green penguin and a purple bear"
    assert colored[0].objects == ("a green penguin", "a purple bear") and colored[0].nouns == ("penguin", "bear")
    assert object_phrases("a cat and a dog and a cow") == ("a cat", "a dog", "a cow")


@pytest.mark.skipif(not REFERENCE.is_dir(), reason="the reference's prompt files are not here")
def test_prompt_sets_equal_the_published_files():
    for name, file in (("animals", "multi_concept_type1_prompts.txt"), ("colored_animals", "multi_concept_type2_prompts.txt")):
        assert [p.prompt for p in load_prompt_set(name)] == (REFERENCE / file).read_text().splitlines()


def test_one_prompt_cli_writes_images_telemetry_and_grid_and_resumes(tmp_path, capsys):
    argv = ["--prompt", "a red circle and a blue square", "--token_words", "circle", "square", "--concepts", "Shape",
            "--seeds", "1", "2", "--output_path", str(tmp_path), "--batch_size", "2", *QUICK, "--thresholds", "0:0.5"]
    assert ae_main(argv) == 0
    folder = tmp_path / "attend_and_excite-hrv" / "exp_None" / "a red circle and a blue square"
    assert sorted(p.name for p in folder.iterdir()) == ["1.json", "1.png", "2.json", "2.png", "manifest.json"]
    record = json.loads((folder / "1.json").read_text())
    assert record["token_indices"] == [[3], [7]] and record["concepts"] == ["Shape", "Shape"]
    # the telemetry and the image are those of a direct A&E-HRV generation of the same inputs (the toy's Shape HRV,
    # CPU seeds 1 and 2, tokens 3 and 7, QUICK's settings at the default R = max(16/8, 8) = 8, a threshold that refines)
    pipe = load_pipeline("toy")
    hrv = load_hrv("paper", "toy", read_concept_set(resolve_description("toy_concepts")).names, head_layout(pipe.unet))
    prompt = "a red circle and a blue square"
    eot = pipe.tokenizer(prompt).input_ids.index(pipe.tokenizer.eos_token_id)
    quick = AttendExciteSettings(mode="hrv", attention_res=8, num_inference_steps=2, max_iter_to_alter=2,
                                 thresholds={0: 0.5}, max_refinement_steps=2)
    direct = generate_attend_excite(pipe, [prompt] * 2, seed_latents([1, 2], latent_shape(pipe)),
                                    Targets.build([[3, 7]] * 2, [eot] * 2, [0, 0]), quick, hrv.rows(["Shape"]))
    refined = []
    for b, seed in enumerate((1, 2)):
        steps = json.loads((folder / f"{seed}.json").read_text())["steps"]
        assert steps == json.loads(json.dumps(direct.records[b])), seed
        assert np.array_equal(np.asarray(Image.open(folder / f"{seed}.png")), direct.images[b]), seed
        # refinement at evaluation 0 as the spec has it: while the loss is above 1 - 0.5, at most 2 iterations
        first = steps[0]
        refined.append(first["loss"] > 0.5)
        assert (first["refinement_iterations"] > 0) == refined[-1]
        if refined[-1]:
            met = first["loss_after_refinement"] <= 0.5
            assert first["threshold_met"] == met and (met or first["refinement_iterations"] == 2)
    assert any(refined)
    assert record["settings"]["attention_res"] == 8 and record["settings"]["token_slice"] == "1:77"  # toy: at least 8
    grid = read(folder.parent / "a red circle and a blue square.png")  # the labelled grid: seeds 1, 2 in a row
    (y1, x1), (y2, x2) = only(grid, read(folder / "1.png")), only(grid, read(folder / "2.png"))
    assert y1 == y2 and x1 < x2
    assert ae_main(argv) == 0
    assert "0 images generated (0 files written), 2 already present" in capsys.readouterr().out
    # standard A&E with the diffusers anchor; plain SD
    assert ae_main([*argv, "--run_standard_attend_excite", "--anchor", "diffusers", "--attention_res", "8"]) == 0
    record = json.loads((tmp_path / "original_attend_and_excite/exp_None/a red circle and a blue square/2.json").read_text())
    assert record["settings"]["kernel"] == "diffusers" and record["settings"]["smooth_attentions"]
    assert ae_main([*argv, "--run_standard_sd", "--concepts", "X", "Y", "Z"]) == 0  # concepts: A&E-HRV only
    assert json.loads((tmp_path / "standard_sd/exp_None/a red circle and a blue square/2.json").read_text())["steps"] == []


@pytest.mark.parametrize("argv,message", [
    (["--token_words", "circle", "--concepts", "Animals"], "unknown concept 'Animals'"),
    (["--token_words", "circle", "square", "--concepts", "Shape", "Color", "Size"], "3 --concepts for 2 target"),
    (["--token_words", "dog"], "'dog' is not in the prompt"),
    (["--token_indices", "3", "--thresholds", "0=0.5"], "EVALUATION:THRESHOLD"),
    (["--token_indices", "3", "--run_standard_attend_excite", "--attention_res", "5"], "pick --attention_res"),
])
def test_one_prompt_cli_errors(tmp_path, capsys, argv, message):
    assert ae_main(["--prompt", "a red circle and a blue square", "--output_path", str(tmp_path), *QUICK, *argv]) == 2
    assert message in capsys.readouterr().err


def test_benchmark_runner_subsets_ranks_and_resumes(tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle and a blue square\na green ring and a pink cross\na teal diamond and a red cross\n")
    base = ["--prompt_set", str(prompts), "--concepts", "Shape", "--num_seeds", "2", "--methods", "hrv", "sd",
            "--output_path", str(tmp_path / "out"), *QUICK]
    assert bench_main([*base, "--subset_running", "--numerator", "2", "--denominator", "2"]) == 0
    exp = tmp_path / "out" / "attend_and_excite-hrv" / "exp_prompts"
    assert sorted(p.name for p in exp.iterdir() if p.is_dir()) == ["a green ring and a pink cross",
                                                                   "a teal diamond and a red cross"]
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert bench_main(base) == 0  # rank 0 of 2: the first prompt (the second exists: skipped, not its share)
    assert "4 images generated" in capsys.readouterr().out
    assert (tmp_path / "out/standard_sd/exp_prompts/a red circle and a blue square/1.png").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert bench_main(base) == 0
    assert "0 images generated" in capsys.readouterr().out


class TextLengthScorer:
    """A stand-in CLIP for the arithmetic: mean pixel / 255 + len(text) / 100."""

    def score(self, images, texts):
        return np.array([np.asarray(i, dtype=np.float64).mean() / 255 + len(t) / 100 for i, t in zip(images, texts)])


def make_images(root: Path, prompts, methods=("hrv", "sd"), seeds=(0, 1)):
    from hrv_diffusion.apps.attend_excite_runs import image_dir

    rng = np.random.default_rng(0)
    for method in methods:
        for p in prompts:
            folder = image_dir(root, method, "animals", p.prompt)
            folder.mkdir(parents=True, exist_ok=True)
            for s in seeds:
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{s}.png")


def test_score_arithmetic(tmp_path):
    prompts = load_prompt_set("colored_animals")[:3]
    make_images(tmp_path, prompts)
    per_image, missing = score_images(tmp_path, "animals", prompts, ["hrv", "sd", "standard"], TextLengthScorer())
    assert len(per_image) == 12 and len(missing) == 3  # no standard images
    row = per_image.iloc[0]
    pixels = np.asarray(Image.open(tmp_path / row["path"]), dtype=np.float64).mean() / 255
    assert row["full_prompt"] == pytest.approx(pixels + len(prompts[0].prompt) / 100)
    assert row["min_object"] == pytest.approx(pixels + min(len(o) for o in prompts[0].objects) / 100)
    summary = summarize(per_image)
    assert list(summary["method"]) == ["hrv", "sd"] and list(summary["images"]) == [6, 6]
    assert summary["min_object"].iloc[0] == pytest.approx(per_image[per_image.method == "hrv"]["min_object"].mean())


def test_scores_cli_with_a_tiny_clip(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from torchvision import transforms

    from hrv_diffusion.apps.clip import ClipScorer
    from hrv_diffusion.cli.multi_object_scores import build_parser, run

    torch.manual_seed(0)
    model = open_clip.CLIP(embed_dim=16, vision_cfg=dict(layers=1, width=32, head_width=16, patch_size=8, image_size=32),
                           text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1)).eval()
    preprocess = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    scorer = ClipScorer.from_model(model, preprocess, tokenizer, device="cpu")
    prompts = load_prompt_set("animals")[:2]
    make_images(tmp_path, prompts, methods=("hrv",), seeds=(3,))
    args = build_parser().parse_args(["--output_path", str(tmp_path), "--methods", "hrv", "--quiet"])
    assert run(args, scorer=scorer) == 0
    per_image = pd.read_csv(tmp_path / "multi_object_scores_per_image_animals.csv")
    image = Image.open(tmp_path / per_image["path"][0]).convert("RGB")
    with torch.no_grad():
        i = model.encode_image(preprocess(image)[None])
        texts = model.encode_text(tokenizer([prompts[0].prompt, *prompts[0].objects]))
    cosines = torch.nn.functional.cosine_similarity(i, texts).tolist()
    assert per_image["full_prompt"][0] == pytest.approx(cosines[0], abs=1e-5)
    assert per_image["min_object"][0] == pytest.approx(min(cosines[1:]), abs=1e-5)
    summary = pd.read_csv(tmp_path / "multi_object_scores_animals.csv")
    assert summary["images"].tolist() == [2]


def test_a_relative_output_path_scores(tmp_path, monkeypatch):
    """The benchmark's default output path is relative: its images are scored (issue 20)."""
    prompts = load_prompt_set("animals")[:2]
    make_images(tmp_path / "applications" / "outs", prompts, methods=("hrv",), seeds=(0,))
    monkeypatch.chdir(tmp_path)
    per_image, missing = score_images("applications/outs", "animals", prompts, ["hrv"], TextLengthScorer())
    assert len(per_image) == 2 and missing == []
    assert (tmp_path / "applications" / "outs" / per_image["path"][0]).is_file()
    assert not Path(per_image["path"][0]).is_absolute()


def test_seeds_never_generated_are_one_error_naming_the_first_and_the_command(tmp_path, monkeypatch, capsys):
    from hrv_diffusion.apps.multi_object import missing_images
    from hrv_diffusion.cli.multi_object_scores import main as scores_main

    prompts = load_prompt_set("animals")[:2]
    make_images(tmp_path / "outs", prompts, methods=("hrv", "sd"), seeds=(0,))
    monkeypatch.chdir(tmp_path)
    missing = missing_images("outs", "animals", prompts, ["hrv", "sd"], [0, 99])
    assert [p.name for p in missing] == ["99.png"] * 4 and all(p.is_absolute() for p in missing)
    (tmp_path / "prompts.txt").write_text("\n".join(p.prompt for p in prompts) + "\n")
    code = scores_main(["--prompt_set", "prompts.txt", "--experiment_num", "animals", "--output_path", "outs",
                        "--methods", "hrv", "sd", "--seeds", "0", "99", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "4 of the 8 images of --seeds 0 99 are missing" in err and f"(first: {missing[0]})" in err
    assert ("python applications/multi_object_benchmark.py --prompt_set prompts.txt --methods hrv sd --seeds 0 99 "
            "--output_path outs --experiment_num animals") in err


def test_an_unreadable_image_is_one_error_naming_it(tmp_path):
    from hrv_diffusion.errors import UserError

    prompts = load_prompt_set("animals")[:1]
    make_images(tmp_path, prompts, methods=("hrv",), seeds=(0,))
    path = next(tmp_path.rglob("0.png"))
    path.write_bytes(path.read_bytes()[:60])  # truncated, as by an interrupted copy
    with pytest.raises(UserError, match=rf"cannot read the image {path} .*delete it and rerun multi_object_bench"):
        score_images(tmp_path, "animals", prompts, ["hrv"], TextLengthScorer())
