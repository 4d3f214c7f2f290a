"""Word embeddings on the tiny SD, SD 2.x and SDXL pipelines, their file, and the command line."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # the package need not be installed to run the tests
    sys.path.insert(0, str(ROOT))

from hrv_diffusion.cli.text_embeddings import main  # noqa: E402
from hrv_diffusion.hrv.concepts import ConceptSet, write_concept_set  # noqa: E402
from hrv_diffusion.hrv.embeddings import (  # noqa: E402
    TextEmbeddings, build_text_embeddings, embeddings_path, encode_words, load_text_embeddings,
    save_text_embeddings,
)
from hrv_diffusion.core.tiny import tiny_sd2_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline  # noqa: E402

WORDS = ["Dog", "Oak tree", "Rio de Janeiro", "McDonald's", "Red"]
CONCEPTS = ConceptSet(("Animals", "Places", "Other"), (("Dog", "Oak tree"), ("Rio de Janeiro",), ("McDonald's", "Red")))


@pytest.fixture(scope="module")
def sd():
    return tiny_sd_pipeline()


@pytest.fixture(scope="module")
def sdxl():
    return tiny_sdxl_pipeline()


def ids(tokenizer, words):
    return tokenizer(words, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids


def test_sd_embeddings_are_last_hidden_state(sd):
    embeddings, lengths = encode_words(sd, WORDS, batch_size=2)  # 3 chunks
    assert embeddings.shape == (5, 77, 32) and embeddings.dtype == torch.float32
    assert embeddings.device.type == "cpu" and not embeddings.requires_grad
    with torch.no_grad():
        expected = sd.text_encoder(ids(sd.tokenizer, WORDS)).last_hidden_state
    torch.testing.assert_close(embeddings, expected)
    # SOT + word tokens + EOT, with the real CLIP vocabulary.
    assert lengths.dtype == torch.int64
    assert lengths.tolist() == [len(sd.tokenizer(w).input_ids) for w in WORDS]
    assert lengths[0] == 3 and lengths[1] == 4  # "dog"; "oak", "tree"


def test_sd2_embeddings_are_last_hidden_state_padded_with_the_openclip_pad():
    """SD 2.x: the last hidden state of words padded with "!" (id 0). The rows the votes use (SOT, the word's
    tokens, EOT) do not depend on the pad token (the text encoder is causal); the padding rows do."""
    sd2 = tiny_sd2_pipeline()
    embeddings, lengths = encode_words(sd2, WORDS, batch_size=2)
    assert embeddings.shape == (5, 77, 48)
    padded = ids(sd2.tokenizer, WORDS)
    assert (padded[0, int(lengths[0]):] == 0).all()  # "!" after the word's EOT
    eot_padded = padded.clone()
    for row, n in enumerate(lengths.tolist()):
        eot_padded[row, n:] = 49407  # as SD 1.x pads
    with torch.no_grad():
        expected = sd2.text_encoder(padded).last_hidden_state
        other = sd2.text_encoder(eot_padded).last_hidden_state
    torch.testing.assert_close(embeddings, expected)
    for row, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(embeddings[row, :n], other[row, :n], atol=1e-6, rtol=1e-5)
        assert not torch.allclose(embeddings[row, n:], other[row, n:])


def test_sdxl_embeddings_are_penultimate_states_of_both_encoders(sdxl):
    embeddings, lengths = encode_words(sdxl, WORDS, batch_size=3)
    assert embeddings.shape == (5, 77, 64)
    with torch.no_grad():
        first = sdxl.text_encoder(ids(sdxl.tokenizer, WORDS), output_hidden_states=True).hidden_states[-2]
        second = sdxl.text_encoder_2(ids(sdxl.tokenizer_2, WORDS), output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(embeddings, torch.cat([first, second], dim=-1))  # (5, 77, 32 + 32)
    assert lengths.tolist() == [len(sdxl.tokenizer.encode(w)) for w in WORDS]


def test_too_long_word_refused(sd):
    with pytest.raises(ValueError, match="more than 77"):
        encode_words(sd, [" ".join(["cat"] * 80)])


def test_save_load_round_trip_and_mismatch(sd, tmp_path):
    te = build_text_embeddings(sd, CONCEPTS, model_card="tiny-sd", description="small")
    meta = te.metadata
    assert meta["model_version"] == "tiny_sd" and meta["embedding_dim"] == 32 and meta["dtype"] == "float32"
    assert meta["concept_fingerprint"] == CONCEPTS.fingerprint() and meta["words"] == list(CONCEPTS.flat_words)
    assert meta["concept_names"] == ["Animals", "Places", "Other"] and "hrv_diffusion_version" in meta

    path = embeddings_path(tmp_path / "out", "small", "tiny_sd")
    assert path == tmp_path / "out" / "word_lists" / "text_embedding_small_tiny_sd.safetensors"
    save_text_embeddings(path, te)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind
    loaded = load_text_embeddings(path, expect={"model_version": "tiny_sd",
                                                "concept_fingerprint": CONCEPTS.fingerprint()})
    torch.testing.assert_close(loaded.embeddings, te.embeddings, rtol=0, atol=0)
    assert torch.equal(loaded.token_lengths, te.token_lengths) and loaded.metadata == meta
    assert loaded.concept_set == CONCEPTS

    with pytest.raises(ValueError, match=r"model_version='tiny_sd' \(expected 'sd_v1_4'\)") as info:
        load_text_embeddings(path, expect={"model_version": "sd_v1_4", "model_card": "CompVis/stable-diffusion-v1-4"})
    assert "--model_card CompVis/stable-diffusion-v1-4 --description small" in str(info.value)
    assert f"--output_dir {tmp_path / 'out'}" in str(info.value)
    with pytest.raises(ValueError, match="concept_fingerprint"):
        load_text_embeddings(path, expect={"concept_fingerprint": "0" * 16})


def test_load_refuses_foreign_and_missing_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a text-embedding file"):
        load_text_embeddings(tmp_path / "other.safetensors")
    with pytest.raises(FileNotFoundError, match="descriptions_to_text_embeddings.py"):
        load_text_embeddings(tmp_path / "missing.safetensors", expect={"model_card": "tiny-sd"})
    bad = TextEmbeddings(torch.zeros(2, 77, 4), torch.zeros(3, dtype=torch.int64), {"words": ["a", "b"]})
    save_text_embeddings(tmp_path / "bad.safetensors", bad)
    with pytest.raises(ValueError, match="inconsistent"):
        load_text_embeddings(tmp_path / "bad.safetensors")


# ----- command line ------------------------------------------------------------------------------------


@pytest.fixture()
def small_description(tmp_path):
    return write_concept_set(tmp_path / "sets" / "small.txt", CONCEPTS)


@pytest.mark.parametrize("card, dim", [("tiny-sd", 32), ("tiny-sd2", 48), ("tiny-sdxl", 64)])
def test_cli_in_process(card, dim, tmp_path, small_description, monkeypatch, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the default --output_dir is the current directory
    code = main(["--model_card", card, "--description", str(small_description), "--device", "cpu",
                 "--batch_size", "2", "--num_concepts", "3"])
    assert code == 0
    version = card.replace("-", "_")
    path = Path("word_lists") / f"text_embedding_small_{version}.safetensors"
    assert capsys.readouterr().out.strip() == str(path)
    te = load_text_embeddings(elsewhere / path, expect={"description": "small", "model_version": version,
                                                        "concept_fingerprint": CONCEPTS.fingerprint()})
    assert te.embeddings.shape == (5, 77, dim)
    assert sorted(tmp_path.iterdir()) == sorted([elsewhere, small_description.parent])  # nothing else written


def test_cli_errors_are_one_line(tmp_path, small_description, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["--description", "no_such_set", "--model_card", "tiny-sd"]) == 2
    assert main(["--description", str(small_description), "--num_words_per_concept", "2"]) == 2
    assert main(["--description", str(small_description), "--model_card", str(tmp_path / "no_model")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "no_such_set" in lines[0] and "--num_words_per_concept 2" in lines[1] and "tiny-sd" in lines[2]


def test_top_level_script_from_another_directory(tmp_path, small_description):
    """The script finds its package from any directory. This case stops before loading a model, which
    keeps it fast; the in-process tests above cover the full run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    script = str(ROOT / "descriptions_to_text_embeddings.py")
    result = subprocess.run(
        [sys.executable, script, "--model_card", "tiny-sd", "--description", str(small_description),
         "--num_concepts", "34"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1  # no traceback
    assert "3 concepts, not --num_concepts 34" in result.stderr
