"""Model loading (hrv_diffusion.core.models) and the offline CLIP tokenizer, on the tiny pipelines. No network."""
from __future__ import annotations

import json
import time

import pytest
import torch
from diffusers import (DDIMScheduler, EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline,
                       StableDiffusionXLPipeline)

from hrv_diffusion.core.models import (ModelNotAvailableError, is_sdxl, load_model_index, load_pipeline,
                                  load_unet_config, model_version, paper_scheduler)
from hrv_diffusion.core.tokenizer import clip_tokenizer

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat", OpenAI CLIP BPE


@pytest.fixture
def offline(monkeypatch):
    """Offline hub: the env var for subprocesses and anything read later, and the constant that
    huggingface_hub read at import time (what its download functions check)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------- schedulers


def test_tiny_sd_gets_paper_pndm():
    pipe = load_pipeline("tiny-sd")
    assert isinstance(pipe, StableDiffusionPipeline) and not is_sdxl(pipe)
    assert isinstance(pipe.scheduler, PNDMScheduler)
    assert pipe.scheduler.config.skip_prk_steps
    pipe.scheduler.set_timesteps(50)
    assert len(pipe.scheduler.timesteps) == 51  # 50 steps -> 51 UNet evaluations


def test_tiny_sdxl_is_sdxl_and_gets_pndm_too():
    pipe = load_pipeline("tiny-sdxl")
    assert isinstance(pipe, StableDiffusionXLPipeline) and is_sdxl(pipe)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.skip_prk_steps
    pipe.scheduler.set_timesteps(50)
    assert len(pipe.scheduler.timesteps) == 51


def test_tiny_sd2_is_sd_with_v_prediction_kept_by_the_paper_pndm():
    """SD 2.1 (768-v) predicts v: the paper's PNDM replaces its DDIM and keeps the prediction type."""
    pipe = load_pipeline("tiny-sd2")
    assert isinstance(pipe, StableDiffusionPipeline) and not is_sdxl(pipe)
    assert isinstance(pipe.scheduler, PNDMScheduler) and pipe.scheduler.config.skip_prk_steps
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    own = load_pipeline("tiny-sd2", scheduler="model").scheduler
    assert isinstance(own, DDIMScheduler) and own.config.prediction_type == "v_prediction"
    config = pipe.unet.config
    assert config.use_linear_projection and config.upcast_attention
    assert list(config.attention_head_dim) == [1, 2, 4, 4]  # a head count per block, as SD 2.x's (5, 10, 20, 20)
    heads = {m.heads for n, m in pipe.unet.named_modules() if n.endswith("attn2") and n.startswith("down_blocks.2")}
    assert heads == {4} and pipe.unet.down_blocks[2].attentions[0].transformer_blocks[0].attn2.to_q.out_features == 64


def test_scheduler_model_keeps_the_models_own():
    pipe = load_pipeline("tiny-sdxl", scheduler="model")
    assert isinstance(pipe.scheduler, EulerDiscreteScheduler)
    assert isinstance(load_pipeline("tiny-sd", scheduler="model").scheduler, PNDMScheduler)  # its own is PNDM
    with pytest.raises(ValueError, match="scheduler"):
        load_pipeline("tiny-sd", scheduler="ddim")


def test_paper_scheduler_keeps_the_models_betas():
    own = load_pipeline("tiny-sdxl", scheduler="model").scheduler
    pndm = paper_scheduler(own.config)
    assert isinstance(pndm, PNDMScheduler)
    for key in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type"):
        assert pndm.config[key] == own.config[key]
    assert pndm.config.skip_prk_steps and pndm.config.steps_offset == 1 and not pndm.config.set_alpha_to_one


# ---------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype, expected", [("float16", torch.float16), ("bfloat16", torch.bfloat16),
                                             (torch.float16, torch.float16), ("float32", torch.float32)])
@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sd2", "tiny-sdxl"])
def test_dtype_is_applied(name, dtype, expected):
    pipe = load_pipeline(name, dtype=dtype)
    assert pipe.unet.dtype == expected
    assert pipe.vae.dtype == expected
    assert pipe.text_encoder.dtype == expected
    if is_sdxl(pipe):
        assert pipe.text_encoder_2.dtype == expected


# ---------------------------------------------------------------- model_version


def test_model_version(tmp_path):
    assert model_version("CompVis/stable-diffusion-v1-4") == "sd_v1_4"
    assert model_version("stabilityai/stable-diffusion-xl-base-1.0") == "sd_xl_base_1_0"
    assert model_version("runwayml/stable-diffusion-v1-5") == "runwayml_stable_diffusion_v1_5"
    assert model_version("tiny-sd") == "tiny_sd"
    assert model_version("tiny-sdxl") == "tiny_sdxl"
    assert model_version("tiny-sd2") == "tiny_sd2"
    assert model_version("stabilityai/stable-diffusion-2-1") == "sd_v2_1"
    assert model_version("stabilityai/stable-diffusion-2-1-base") == "sd_v2_1_base"
    assert model_version("stabilityai/stable-diffusion-2") == "sd_v2"
    assert model_version("stabilityai/stable-diffusion-2-base") == "sd_v2_base"
    folder = tmp_path / "My Model (v2.1)"
    folder.mkdir()
    assert model_version(str(folder)) == "my_model_v2_1"  # a local folder: its own name, sanitized
    assert model_version(str(folder) + "/") == "my_model_v2_1"
    assert model_version("???") == "model"


# ---------------------------------------------------------------- not available offline


def test_missing_hub_model_raises_helpful_error_fast(offline):
    import diffusers.pipelines  # noqa: F401  (import time is not what we measure)

    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as error:
        load_pipeline("hrv-diffusion-tests/no-such-model")
    elapsed = time.perf_counter() - start
    message = str(error.value)
    assert "hrv-diffusion-tests/no-such-model" in message
    assert "local diffusers folder" in message and "model_index.json" in message  # the local-folder option
    assert "cache" in message and "HF_HOME" in message  # the cache option
    assert "tiny-sd" in message
    assert elapsed < 5.0, f"offline failure took {elapsed:.1f} s (network retries?)"


def test_missing_unet_config_and_model_index_raise_the_same_error(offline, tmp_path):
    with pytest.raises(ModelNotAvailableError, match="not in the local Hugging Face cache"):
        load_unet_config("hrv-diffusion-tests/no-such-model")
    with pytest.raises(ModelNotAvailableError, match="does not exist") as error:
        load_model_index(str(tmp_path / "no_such_folder"))
    assert "hf download" not in str(error.value)  # a folder is not downloaded


# ---------------------------------------------------------------- local folders


@pytest.mark.parametrize("name, cls", [("tiny-sd", StableDiffusionPipeline), ("tiny-sd2", StableDiffusionPipeline),
                                       ("tiny-sdxl", StableDiffusionXLPipeline)])
def test_local_folder_round_trip(tmp_path, offline, name, cls):
    """The pipeline class comes from the folder's model_index.json, not from its (neutral) name."""
    original = load_pipeline(name)
    folder = tmp_path / "model_a"
    original.save_pretrained(folder)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == cls.__name__

    loaded = load_pipeline(str(folder))
    assert type(loaded) is cls
    assert is_sdxl(loaded) == (cls is StableDiffusionXLPipeline)
    assert isinstance(loaded.scheduler, PNDMScheduler) and loaded.scheduler.config.skip_prk_steps
    assert model_version(str(folder)) == "model_a"
    assert load_unet_config(str(folder))["cross_attention_dim"] == original.unet.config.cross_attention_dim
    for (key, value), (key2, value2) in zip(original.unet.state_dict().items(), loaded.unet.state_dict().items()):
        assert key == key2 and torch.equal(value, value2)
    assert loaded.tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert loaded.tokenizer.pad_token == original.tokenizer.pad_token  # SD 2.x's "!" survives the round trip
    assert loaded.scheduler.config.prediction_type == original.scheduler.config.prediction_type


def test_unet_config_of_a_json_file_and_a_tiny_model(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"sample_size": 64, "block_out_channels": [320]}))
    assert load_unet_config(str(path)) == {"sample_size": 64, "block_out_channels": [320]}
    assert load_unet_config("tiny-sdxl")["addition_embed_type"] == "text_time"


# ---------------------------------------------------------------- tokenizer


def test_clip_tokenizer_gives_openai_ids():
    tokenizer = clip_tokenizer()
    assert tokenizer("a photo of a cat").input_ids == CAT_IDS
    assert tokenizer.model_max_length == 77


def test_padding_sd_with_endoftext_and_sd2_and_sdxl_tokenizer_2_with_zero():
    sd = load_pipeline("tiny-sd")
    sd2 = load_pipeline("tiny-sd2")
    xl = load_pipeline("tiny-sdxl")

    def padded(tokenizer):
        return tokenizer("a photo of a cat", padding="max_length", max_length=77, truncation=True).input_ids

    assert padded(sd.tokenizer) == CAT_IDS + [49407] * 70
    assert padded(xl.tokenizer) == CAT_IDS + [49407] * 70
    assert padded(xl.tokenizer_2) == CAT_IDS + [0] * 70  # "!" is id 0
    assert xl.tokenizer_2.pad_token_id == 0
    assert padded(sd2.tokenizer) == CAT_IDS + [0] * 70  # SD 2.x (OpenCLIP ViT-H) pads with "!" too
    assert sd2.tokenizer.pad_token == "!" and sd2.tokenizer.pad_token_id == 0


def test_long_prompts_truncate_to_77():
    ids = clip_tokenizer()(" ".join(["cat"] * 200), truncation=True, max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
