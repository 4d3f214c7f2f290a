"""HRVs in memory and where applications get them (hrv/vectors.py)."""
from __future__ import annotations

import numpy as np
import pytest

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.errors import UserError
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.paper import cache_dir, paper_dir, paper_files
from hrv_diffusion.hrv.vectors import HRV, load_hrv

TOY = tuple(read_concept_set(resolve_description("toy_concepts")).names)


@pytest.fixture(scope="module")
def toy_layout():
    return head_layout(load_pipeline("toy").unet)


def test_toy_paper_hrv_ships_in_the_package(toy_layout):
    hrv = load_hrv("paper", "toy", TOY, toy_layout)
    assert hrv.values.shape == (5, 56) and hrv.concepts == TOY and list(hrv.labels) == toy_layout.labels
    np.testing.assert_allclose(hrv.values.sum(1), 56, rtol=1e-5)
    assert hrv.row("Color").shape == (56,) and hrv.rows(["Shape", "Color"]).shape == (2, 56)
    with pytest.raises(UserError, match="unknown concept 'Colour'.*Color, Shape"):
        hrv.row("Colour")


def test_cache_location(monkeypatch, tmp_path):
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and paper_dir().is_relative_to(tmp_path / "c")
    monkeypatch.delenv("HRV_DIFFUSION_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "hrv-diffusion"


def test_paper_hrv_not_downloaded_names_the_command_and_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("HRV_DIFFUSION_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="hrv-published") as error:
        load_hrv("paper", "sd_v1_4", [f"c{i}" for i in range(34)])
    assert str(paper_files("sd_v1_4")[0].parent) in str(error.value)
    with pytest.raises(UserError, match="SD v1.4 and SDXL"):
        load_hrv("paper", "tiny_sd", ["a"])


def test_built_hrv_by_path_or_folder_and_wrong_shapes(tmp_path):
    layout = head_layout(load_pipeline("tiny-sd").unet)
    values = np.random.default_rng(0).random((3, layout.num_heads)).astype(np.float32)
    folder = tmp_path / "final_result"
    folder.mkdir()
    np.save(folder / "category_vectors_x.npy", values)
    np.save(folder / "head_index_x.npy", np.array(layout.labels[::-1]))  # columns in reverse label order
    for source in (folder / "category_vectors_x.npy", folder):
        hrv = load_hrv(source, "tiny_sd", ["a", "b", "c"], layout)
        np.testing.assert_array_equal(hrv.values, values[:, ::-1])  # reordered to the layout
    with pytest.raises(UserError, match="3 concepts but the concept set has 2"):
        load_hrv(folder, "tiny_sd", ["a", "b"], layout)
    sdxl = head_layout(load_pipeline("tiny-sdxl").unet)
    with pytest.raises(UserError, match=r"an HRV of tiny-sd \(22 heads\), but the model .* is tiny_sdxl with 48"):
        load_hrv(folder, "tiny_sdxl", ["a", "b", "c"], sdxl)
    with pytest.raises(UserError, match="no HRV file"):
        load_hrv(tmp_path / "missing.npy", "tiny_sd", ["a"], layout)
    np.save(folder / "category_vectors_y.npy", values)
    with pytest.raises(UserError, match="2 category_vectors"):
        load_hrv(folder, "tiny_sd", ["a", "b", "c"], layout)


def test_fingerprint_follows_the_values():
    a = HRV(np.ones((2, 3), np.float32), ("x", "y"), ("1", "2", "3"), "test")
    b = HRV(np.ones((2, 3), np.float32) * 2, ("x", "y"), ("1", "2", "3"), "test")
    assert a.fingerprint() != b.fingerprint() and a.fingerprint() == HRV(a.values.copy(), a.concepts, a.labels, "o").fingerprint()


def test_the_toy_hrvs_are_named_as_the_toys_not_the_papers():
    names = read_concept_set(resolve_description("toy_concepts")).names
    hrv = load_hrv("paper", "toy", names)
    with pytest.raises(UserError) as error:
        hrv.row("Plants")
    assert "the toy's shipped HRVs have: Color, Shape" in str(error.value)
    assert "paper" not in str(error.value)


def test_an_hrv_of_another_model_names_that_model_by_its_head_count(tmp_path):
    from hrv_diffusion.core.head_counts import head_count

    path = tmp_path / "category_vectors_x.npy"
    np.save(path, np.ones((34, 128), dtype=np.float32))  # the paper's SD v1.4 shape
    toy_heads = head_count("toy")
    assert toy_heads == head_layout(load_pipeline("toy").unet).num_heads  # from the config = the loaded UNet's
    with pytest.raises(UserError) as error:
        load_hrv(path, "toy", ["Color", "Shape"], num_heads=toy_heads)
    message = str(error.value)
    assert "is an HRV of SD v1.x (sd_v1_4) (128 heads)" in message and f"toy with {toy_heads} CA heads" in message
    assert "--description" not in message
    np.save(path, np.ones((5, toy_heads), dtype=np.float32))
    with pytest.raises(UserError, match=r"an HRV of toy \(56 heads\), but the model \(--model_card\) is tiny_sd"):
        load_hrv(path, "tiny_sd", ["Color"] * 5, num_heads=head_count("tiny-sd"))
    np.save(path, np.ones((5, 195), dtype=np.float32))  # an SD 2.x HRV given for SD v1.4
    with pytest.raises(UserError, match=r"an HRV of SD 2.x \(sd_v2_1, .*\) \(195 heads\), but .* is sd_v1_4 with 128"):
        load_hrv(path, "sd_v1_4", ["Color"] * 5, num_heads=128)
    np.save(path, np.ones((5, head_count("tiny-sd2")), dtype=np.float32))
    with pytest.raises(UserError, match=r"an HRV of tiny-sd2 \(39 heads\), but the model \(--model_card\) is tiny_sd "):
        load_hrv(path, "tiny_sd", ["Color"] * 5, num_heads=head_count("tiny-sd"))
