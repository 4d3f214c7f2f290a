"""applications/reduce_misinterpretation.py (hrv_diffusion/cli/adjust.py) on tiny-sd / tiny-sdxl with synthetic
HRVs of the paper's shape (34 concepts)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from figures import locate, only
from PIL import Image

from hrv_diffusion.apps.adjust import Adjustment, generate_adjusted
from hrv_diffusion.cli.adjust import main
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.vectors import load_hrv

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "A vase in lavender color"
FOLDER = "prompt_02_A_vase_in_lavender_color"


def hrv_file(folder: Path, name: str, heads: int | None = None) -> Path:
    layout = head_layout(load_pipeline(name).unet)
    H = heads or layout.num_heads
    values = np.random.default_rng(0).gamma(0.3, size=(34, H)).astype(np.float32)
    values[17, 0] += 30.0  # Color: one element far above the SDXL clamp of 9
    values = values / values.sum(1, keepdims=True) * H
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / f"category_vectors_{name}.npy", values)
    if heads is None:
        np.save(folder / f"head_index_{name}.npy", np.array(layout.labels))
    return folder / f"category_vectors_{name}.npy"


@pytest.fixture(scope="module")
def hrvs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hrv")
    return {name: hrv_file(folder, name) for name in ("tiny-sd", "tiny-sdxl")}


def run(tmp_path, card, hrv, *extra):
    return main(["--prompt", PROMPT, "--selected_token", "lavender", "--desired", "Color", "--undesired", "Plants",
                 "--seeds", "1", "2", "3", "--model_card", card, "--hrv", str(hrv), "--n_inference_steps", "3",
                 "--prompt_num", "2", "--output_path", str(tmp_path), "--batch_size", "4", "--quiet", *extra])


def read(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_published_layout_grid_and_the_api(tmp_path, hrvs, capsys):
    assert run(tmp_path, "tiny-sd", hrvs["tiny-sd"]) == 0
    root = tmp_path / FOLDER
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert files == ["sd-hrv/1.png", "sd-hrv/2.png", "sd-hrv/3.png", "side_by_side.png",
                     "standard_sd/1.png", "standard_sd/2.png", "standard_sd/3.png"]
    assert "6 images generated (6 files written), 0 already present" in capsys.readouterr().out
    # the images are the API's (seeds batched 2 per call here; batching does not change them beyond rounding)
    names = read_concept_set(resolve_description("340_final_text_descriptions")).names
    pipe = load_pipeline("tiny-sd")
    hrv = load_hrv(hrvs["tiny-sd"], "tiny_sd", names, head_layout(pipe.unet))
    out = generate_adjusted(pipe, [PROMPT] * 3, [1, 2, 3], Adjustment.sd_hrv("lavender", "Color", "Plants"), hrv=hrv,
                            num_inference_steps=3)
    for i, seed in enumerate([1, 2, 3]):
        assert np.abs(read(root / "sd-hrv" / f"{seed}.png").astype(int) - out.adjusted[i]).max() <= 1
        assert np.abs(read(root / "standard_sd" / f"{seed}.png").astype(int) - out.standard[i]).max() <= 1
    grid = read(root / "side_by_side.png")  # top standard, bottom adjusted, seeds left to right (enlarged)
    places = {(kind, seed): only(grid, read(root / kind / f"{seed}.png")) for kind in ("standard_sd", "sd-hrv")
              for seed in (1, 2, 3)}
    assert places["standard_sd", 1][0] == places["standard_sd", 3][0] < places["sd-hrv", 1][0]
    assert places["standard_sd", 1][1] == places["sd-hrv", 1][1] < places["sd-hrv", 2][1] < places["sd-hrv", 3][1]
    assert grid.shape[0] > 2 * 192 and grid.shape[1] > 3 * 192  # readable: each 32-pixel image 192 pixels or more
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["adjustment"]["weights"] == {"Color": 2.0, "Plants": -1.0}
    assert manifest["adjustment"]["clamp"] is None  # SD v1.x: no clamp
    # resume, then different settings are refused
    assert run(tmp_path, "tiny-sd", hrvs["tiny-sd"]) == 0
    assert "0 images generated (0 files written), 6 already present" in capsys.readouterr().out
    assert run(tmp_path, "tiny-sd", hrvs["tiny-sd"], "--clamping_value", "3") == 2
    assert "made with adjustment.clamp=None, this run has adjustment.clamp=3.0" in capsys.readouterr().err


def test_sdxl_layout_and_default_clamp(tmp_path, hrvs):
    assert run(tmp_path, "tiny-sdxl", hrvs["tiny-sdxl"], "--seeds", "1") == 0
    root = tmp_path / f"sdxl_{FOLDER}"
    assert (root / "standard_sdxl" / "1.png").is_file() and (root / "sdxl-hrv" / "1.png").is_file()
    assert json.loads((root / "manifest.json").read_text())["adjustment"]["clamp"] == 9.0


@pytest.mark.parametrize("extra,message", [
    (["--selected_token", "violet"], "error: the word 'violet' is not in the prompt 'A vase in lavender color'"),
    (["--desired", "Colour"],
     "error: unknown concept 'Colour'; the concept set 340_final_text_descriptions has: Animals, Plants"),
    (["--weights", "Color"], "error: --weights takes CONCEPT=WEIGHT"),
    (["--clamping_value", "big"], "error: --clamping_value takes a number"),
    (["--renormalize"], "error: renormalizing needs non-negative factors"),
])
def test_one_line_errors(tmp_path, hrvs, capsys, extra, message):
    assert run(tmp_path, "tiny-sd", hrvs["tiny-sd"], *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def test_wrong_hrv_shape_and_no_paper_hrv_for_tiny_models(tmp_path, hrvs, capsys):
    wrong = hrv_file(tmp_path / "wrong", "tiny-sd", heads=20)  # tiny-sd has 22 CA heads
    assert run(tmp_path, "tiny-sd", wrong) == 2
    err = capsys.readouterr().err
    assert "an HRV of a model with 20 heads, but the model (--model_card) is tiny_sd with 22 CA heads" in err
    assert run(tmp_path, "tiny-sd", "paper") == 2
    assert "the paper published HRVs for SD v1.4 and SDXL base 1.0 only" in capsys.readouterr().err


def test_weights_and_the_toy_with_its_shipped_hrv(tmp_path, capsys):
    code = main(["--prompt", "a circle on a red background", "--selected_token", "red", "--weights", "Color=2",
                 "Background=-1", "--seeds", "5", "--model_card", "toy", "--n_inference_steps", "3",
                 "--output_path", str(tmp_path), "--quiet"])
    assert code == 0, capsys.readouterr().err
    root = tmp_path / "prompt_01_a_circle_on_a_red_background"
    assert json.loads((root / "manifest.json").read_text())["adjustment"]["weights"] == {"Color": 2.0,
                                                                                         "Background": -1.0}
    grid = read(root / "side_by_side.png")
    assert only(grid, read(root / "standard_sd/5.png"))[0] < only(grid, read(root / "sd-hrv/5.png"))[0]


def test_script_help():
    out = subprocess.run([sys.executable, str(ROOT / "applications" / "reduce_misinterpretation.py"), "--help"],
                         capture_output=True, text=True, check=True).stdout
    for flag in ("--selected_token", "--desired", "--undesired", "--clamping_value", "--hrv", "--batch_size"):
        assert flag in out


# ------------------------------------------------------------------------------------------------ reruns, sizes

TOY = ["--prompt", "a circle on a red background", "--selected_token", "red", "--desired", "Color", "--undesired",
       "Background", "--model_card", "toy", "--n_inference_steps", "3", "--batch_size", "4", "--quiet"]
TOY_FOLDER = "prompt_01_a_circle_on_a_red_background"


def toy_run(root, *extra):
    return main([*TOY, "--seeds", "1", "2", "3", "--output_path", str(root), *extra])


def stamps(folder: Path) -> dict[str, int]:
    """{relative path: mtime_ns} of every file under ``folder``."""
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def test_rerun_table(tmp_path, capsys, monkeypatch):
    """Same settings: nothing regenerated, no PNG rewritten (side_by_side.png too); a changed result setting: exit 2
    naming --overwrite, before the model loads, images untouched; --overwrite: regenerated with the new setting."""
    assert toy_run(tmp_path) == 0
    root = tmp_path / TOY_FOLDER
    pngs = {k: v for k, v in stamps(root).items() if k.endswith(".png")}
    assert len(pngs) == 7  # 3 standard, 3 adjusted, the side-by-side picture
    capsys.readouterr()

    assert toy_run(tmp_path) == 0
    assert "0 images generated (0 files written), 6 already present" in capsys.readouterr().out
    assert {k: v for k, v in stamps(root).items() if k.endswith(".png")} == pngs

    import hrv_diffusion.core.models as models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the settings were checked")

    with monkeypatch.context() as m:
        m.setattr(models, "load_pipeline", no_model)
        for flag, value, key in [("--guidance_scale", "5", "guidance_scale"),
                                 ("--clamping_value", "3", "adjustment.clamp"),
                                 ("--n_inference_steps", "4", "num_inference_steps"),
                                 ("--height", "48", "height")]:
            assert toy_run(tmp_path, flag, value) == 2, flag
            line = error_line(capsys)
            assert f"made with {key}=" in line and "--overwrite" in line, line
    assert {k: v for k, v in stamps(root).items() if k.endswith(".png")} == pngs  # no image touched or added

    before = {seed: read(root / "sd-hrv" / f"{seed}.png") for seed in (1, 2, 3)}
    assert toy_run(tmp_path, "--guidance_scale", "5", "--overwrite") == 0
    assert "6 images generated (6 files written), 0 already present" in capsys.readouterr().out
    after = stamps(root)
    assert all(after[k] != pngs[k] for k in pngs), "every image is written again"
    assert json.loads((root / "manifest.json").read_text())["guidance_scale"] == 5.0
    assert any(not np.array_equal(before[s], read(root / "sd-hrv" / f"{s}.png")) for s in before)
    # the new images are those of guidance 5, from a run in a fresh folder
    assert toy_run(tmp_path / "fresh", "--guidance_scale", "5") == 0
    for name in ("sd-hrv/1.png", "standard_sd/3.png", "side_by_side.png"):
        assert np.array_equal(read(root / name), read(tmp_path / "fresh" / TOY_FOLDER / name)), name


def test_resume_writes_only_the_missing_images_and_the_grid(tmp_path, capsys):
    assert toy_run(tmp_path) == 0
    root = tmp_path / TOY_FOLDER
    (root / "sd-hrv" / "2.png").unlink()
    kept = stamps(root)
    capsys.readouterr()
    assert toy_run(tmp_path) == 0
    assert "2 images generated (1 files written), 5 already present" in capsys.readouterr().out
    now = stamps(root)
    changed = sorted(k for k in now if now[k] != kept.get(k))
    assert changed == ["manifest.json", "sd-hrv/2.png"]  # the grid's pixels did not change: not rewritten
    # fewer seeds: no image is made, the grid shows the seeds asked for
    assert main([*TOY, "--seeds", "3", "1", "--output_path", str(tmp_path)]) == 0
    grid = read(root / "side_by_side.png")
    (top, left), (bottom, right) = only(grid, read(root / "standard_sd/3.png")), only(grid, read(root / "sd-hrv/1.png"))
    assert top < bottom and left < right  # seed 3 first, seed 1 second
    assert not locate(grid, read(root / "sd-hrv/2.png"))


def test_interrupt_keeps_finished_images_and_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    import hrv_diffusion.apps.adjust_runs as runs

    calls = []
    real = runs.generate_adjusted

    def stop_second_call(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runs, "generate_adjusted", stop_second_call)
    assert main([*TOY, "--seeds", "1", "2", "3", "4", "--batch_size", "4", "--output_path", str(tmp_path),
                 "--overwrite"]) == 130
    assert calls == [[1, 2], [3, 4]]  # 8 rows in batches of 4: two seeds a call
    root = tmp_path / TOY_FOLDER
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == [
        "sd-hrv/1.png", "sd-hrv/2.png", "standard_sd/1.png", "standard_sd/2.png"]
    err = capsys.readouterr().err
    assert f"the finished images are saved under {root}" in err
    assert "continue with (it skips them): reduce_misinterpretation.py --prompt" in err and "--overwrite" not in err


@pytest.mark.parametrize("card", ["toy", "tiny-sdxl"])
def test_non_square_size(tmp_path, hrvs, card):
    extra = ["--hrv", str(hrvs[card]), "--undesired", "Plants"] if card in hrvs else []
    code = main([*TOY, "--model_card", card, "--seeds", "1", "2", "--height", "48", "--width", "32",
                 "--output_path", str(tmp_path), *extra])
    assert code == 0
    root = next(tmp_path.iterdir())
    for path in root.rglob("[0-9].png"):
        assert read(path).shape == (48, 32, 3), path
    assert len(list(root.rglob("[0-9].png"))) == 4
    grid = read(root / "side_by_side.png")
    assert all(len(locate(grid, read(path))) == 1 for path in root.rglob("[0-9].png"))  # 48 x 32 cells, enlarged
    manifest = json.loads((root / "manifest.json").read_text())
    assert (manifest["height"], manifest["width"]) == (48, 32)


def test_default_size_manifest_has_no_size_keys(tmp_path):
    """Folders of the model's size keep the manifest keys they had before --height/--width existed."""
    assert toy_run(tmp_path, "--seeds", "1") == 0
    manifest = json.loads((tmp_path / TOY_FOLDER / "manifest.json").read_text())
    assert sorted(manifest) == ["adjustment", "decode", "dtype", "guidance_scale", "hrv", "hrv_fingerprint",
                                "model_card", "model_version", "num_inference_steps", "prompt"]


def test_size_not_a_multiple_is_one_line(tmp_path, capsys):
    assert toy_run(tmp_path, "--height", "50") == 2
    assert "--height 50 is not a multiple of" in error_line(capsys)
