"""The toy SD-HRV evaluation (hrv_diffusion/toy/adjust.py): the cases and the bookkeeping of the readings."""
import numpy as np
import pytest

from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.core.tokens import word_token_positions
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
from hrv_diffusion.hrv.vectors import load_hrv
from hrv_diffusion.toy import adjust, data


def test_items_name_both_readings():
    tok = load_pipeline("toy").tokenizer
    color = adjust.items("color_word", 16)
    assert color[0] == {"prompt": "a circle in red", "word": "red", "seed": 0, "color": "red", "background": None}
    assert {i["color"] for i in color} == set(data.COLORS)
    background = adjust.items("background_word", 6, seed=5)
    assert [i["background"] for i in background[:3]] == ["white", "black", "gray"] and background[0]["seed"] == 5
    assert all(i["color"] is None for i in background)
    compound = adjust.items("compound", 8)
    assert compound[1]["prompt"].startswith("a orange-striped ") and compound[1]["background"] == "striped"
    for item in color + background + compound:
        assert word_token_positions(tok, item["prompt"], item["word"])  # the word is found, every piece
    assert len(word_token_positions(tok, compound[0]["prompt"], compound[0]["word"])) == 3
    with pytest.raises(ValueError):
        adjust.items("nope", 1)


def test_readings_of_a_drawn_scene():
    scene = {"objects": [{"color": "red", "shape": "circle", "size": "large", "position": "center",
                          "cx": 16.0, "cy": 16.0, "d": 15.0}], "background": "striped"}
    image = data.render_scene(scene)
    r = adjust.readings(image, {"color": "red", "background": "striped"})
    assert r["as_color"] and r["as_background"] and r["object_color"] == "red"
    assert not adjust.readings(image, {"color": None, "background": "white"})["as_background"]


def test_evaluate_bookkeeping():
    pipe = load_pipeline("toy")
    names = read_concept_set(resolve_description("toy_concepts")).names
    hrv = load_hrv("paper", "toy", names, head_layout(pipe.unet))
    result = adjust.evaluate(pipe, hrv, "compound", n=3, steps=2, batch_size=2)
    assert set(result["rates"]) == {"standard", "toward_Color", "toward_Background"}
    for name, rates in result["rates"].items():
        assert rates["as_background"] == pytest.approx(np.mean([i[name]["as_background"] for i in result["items"]]))
    assert [i["seed"] for i in result["items"]] == [0, 1, 2]
