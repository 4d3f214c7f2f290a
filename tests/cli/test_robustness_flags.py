"""Issue 14, item 5: flags that agree between scripts. Local copies of the paper's models keep the published names,
weakening finds the HRV that exists, and --output_dir is the project folder in every HRV script."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hrv_diffusion.core.models import model_version

SD14_UNET = {"cross_attention_dim": 768, "block_out_channels": [320, 640, 1280, 1280], "sample_size": 64}
SDXL_UNET = {"cross_attention_dim": 2048, "block_out_channels": [320, 640, 1280], "sample_size": 128,
             "addition_embed_type": "text_time"}


def local_copy(root: Path, name: str, unet: dict) -> str:
    (root / name / "unet").mkdir(parents=True)
    (root / name / "unet" / "config.json").write_text(json.dumps(unet))
    (root / name / "model_index.json").write_text("{}")
    return str(root / name)


def test_local_copies_of_the_paper_models_keep_the_published_names(tmp_path):
    assert model_version(local_copy(tmp_path, "stable-diffusion-v1-4", SD14_UNET)) == "sd_v1_4"
    assert model_version(local_copy(tmp_path, "my sd copy", SD14_UNET) + "/") == "sd_v1_4"
    assert model_version(local_copy(tmp_path, "stable-diffusion-xl-base-1.0", SDXL_UNET)) == "sd_xl_base_1_0"
    # v1.5 has v1.4's config: a folder that names another version keeps its name; so do other models
    assert model_version(local_copy(tmp_path, "stable-diffusion-v1-5", SD14_UNET)) == "stable_diffusion_v1_5"
    other = dict(SD14_UNET, cross_attention_dim=1024)  # SD 2.x
    assert model_version(local_copy(tmp_path, "stable-diffusion-2-1", other)) == "stable_diffusion_2_1"
    assert model_version("CompVis/stable-diffusion-v1-4") == "sd_v1_4" and model_version("tiny-sd") == "tiny_sd"


# ----------------------------------------------------------------------------------------------- weakening's HRV

STEM = "epoch_1_to_1_neg_prompt_False_{}_340_final_text_descriptions_{}.npy"


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "final_result").mkdir()
    return tmp_path


def save_hrv(project: Path, prompt: str, mv: str = "tiny_sd") -> Path:
    path = project / "final_result" / ("category_vectors_" + STEM.format(prompt, mv))
    np.save(path, np.random.default_rng(0).random((34, 22)).astype(np.float32))
    return path


WEAKEN = ["--model_card", "tiny-sd", "--prompt", "a red car", "--concept", "Color", "--seeds", "10",
          "--heads_to_be_perturbed", "0", "--n_inference_steps", "2", "--quiet"]


def test_weakening_uses_the_one_hrv_there_is(project, capsys):
    from hrv_diffusion.cli.weakening import main

    path = save_hrv(project, "imagenet")  # what head_relevance_calculation.py makes by default
    assert main(WEAKEN) == 0
    out = capsys.readouterr().out
    assert "using the HRV of prompt list 'imagenet'" in out and "1 images generated" in out
    manifest = json.loads(next(project.rglob("manifest.json")).read_text())
    assert manifest["hrv_file"] == str(Path("final_result") / path.name)


def test_weakening_names_the_candidates(project, capsys):
    from hrv_diffusion.cli.weakening import main

    assert main(WEAKEN) == 2
    err = capsys.readouterr().err
    assert "no HRV file final_result/category_vectors_" + STEM.format("merged", "tiny_sd") in err
    save_hrv(project, "imagenet")
    save_hrv(project, "mine")
    assert main(WEAKEN) == 2
    assert "prompt lists imagenet, mine but none of 'merged': choose one with --prompt_type" in capsys.readouterr().err
    assert main(WEAKEN + ["--prompt_type", "mine"]) == 0


def test_weakening_model_version_names_the_files(project, capsys):
    from hrv_diffusion.cli.weakening import main

    save_hrv(project, "merged", mv="sd_v1_4")
    assert main(WEAKEN) == 2
    assert main(WEAKEN + ["--model_version", "sd_v1_4"]) == 0


# ----------------------------------------------------------------------------------------------- --output_dir

def test_extract_output_dir_is_the_project_folder(tmp_path, monkeypatch, capsys):
    from hrv_diffusion.cli.extract import main
    from test_robustness_extract import write_rank  # tests/ is on sys.path (rootdir-less test modules)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "a" / "results").mkdir(parents=True)
    for rank, indices in ((0, range(3)), (1, range(3, 6))):
        write_rank(tmp_path / "runs" / "a" / "results", rank, indices)
    assert main(["--output_dir", "runs/a/final_result"]) == 2  # the old meaning
    err = capsys.readouterr().err
    assert "--output_dir is the project folder" in err and "pass --output_dir runs/a or --final_result" in err
    assert main(["--output_dir", "runs/a"]) == 0
    assert len(list((tmp_path / "runs" / "a" / "final_result").glob("category_vectors_*.npy"))) == 2
    assert main(["--output_dir", "runs/a", "--final_result", "hrvs"]) == 0
    assert (tmp_path / "hrvs" / "340_final_ranking_list.npy").is_file()
