"""End-to-end ground truth on the shipped toy model: weakening the HRV's most relevant heads (MoRHF) hurts the
concept more than weakening its least relevant ones (LeRHF). Small enough for CI (CPU, about a minute)."""

import pytest

from hrv_diffusion.hrv.paper import TOY_HRV_DIR
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.files import OutputNames, read_hrv
from hrv_diffusion.toy.weakening import weakening_curves

FINAL = TOY_HRV_DIR


@pytest.fixture(scope="module")
def toy():
    names = OutputNames(last_epoch=1, negative_prompt=False, prompt="toy", description="toy_concepts",
                        model_version="toy")
    hrv, labels = read_hrv(FINAL / names.category_vectors(), FINAL / names.head_index())
    concepts = list(read_concept_set(resolve_description("toy_concepts")).names)
    return load_pipeline("toy"), hrv, concepts


def test_shipped_toy_hrv_shape(toy):
    _, hrv, concepts = toy
    assert hrv.shape == (len(concepts), 56)
    assert abs(hrv.sum(1) - 56).max() < 1e-3


CONCEPT_UNDER_TEST = "Color"


def test_morhf_below_lerhf(toy):
    pipe, hrv, concepts = toy
    curve = weakening_curves(pipe, hrv, concepts, [CONCEPT_UNDER_TEST], [0, 14], n=16, steps=20)[CONCEPT_UNDER_TEST]["curve"]
    assert curve["top_14"] < curve["bottom_14"], curve
