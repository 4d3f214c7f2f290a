"""core/hub.py: a model card is checked before anything loads, and a machine without network fails in seconds."""
from __future__ import annotations

import socket
import time

import pytest

from hrv_diffusion.core.hub import (BUILT_IN, ModelNotAvailableError, check_card_files, check_card_name,
                                    hub_reachable)
from hrv_diffusion.core.hub import in_hf_cache
from hrv_diffusion.core.models import SD2_CARDS, TOY_MODEL_DIR, load_pipeline, load_unet_config, model_version

MISSING = "hrv-diffusion-tests/no-such-model"


def closed_port() -> int:
    """A local TCP port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["closed", "silent"])
def no_network(request, monkeypatch):
    """HF_HUB_OFFLINE unset, the hub at a closed local port, or at one that accepts connections and never answers
    (as a firewall that drops packets: the request times out)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    silent = None
    if request.param == "silent":
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        request.addfinalizer(silent.close)
    endpoint = f"http://127.0.0.1:{silent.getsockname()[1] if silent else closed_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint, raising=False)


def test_a_typo_is_an_unknown_model_card_listing_the_built_in_ones():
    with pytest.raises(ModelNotAvailableError) as error:
        check_card_name("toyy")
    message = str(error.value)
    assert "unknown model card 'toyy'" in message and "local folder" in message
    assert all(name in message for name in BUILT_IN) and "toy" in BUILT_IN
    assert "concept" not in message and "hf download" not in message


def test_a_missing_local_folder_is_not_sent_to_the_hub(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for card in ("./toy", str(tmp_path / "nothing"), "~/no_such_model_folder_here"):
        with pytest.raises(ModelNotAvailableError) as error:
            check_card_name(card)
        assert "does not exist" in str(error.value) and "hf download" not in str(error.value)


def test_a_folder_without_model_index_is_refused(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(ModelNotAvailableError, match="no model_index.json"):
        check_card_files(str(tmp_path))


def test_built_in_and_local_models_pass_without_network(no_network):
    check_card_name("toy")
    assert check_card_files(str(TOY_MODEL_DIR)) is True  # read locally only
    check_card_name("CompVis/stable-diffusion-v1-4")  # a hub id's name is fine; its files are checked on load


def test_offline_flag_is_respected_without_any_connection(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("urllib.request.urlopen", lambda *a, **k: pytest.fail("connected while offline"))
    assert hub_reachable() is False


def test_an_uncached_hub_model_fails_within_5_s_without_HF_HUB_OFFLINE(no_network):
    import diffusers.pipelines  # noqa: F401  (import time is not what we measure)

    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as error:
        load_pipeline(MISSING)
    elapsed = time.perf_counter() - start
    message = str(error.value)
    assert f"hf download {MISSING}" in message and "--model_card toy" in message
    assert all(name in message for name in BUILT_IN)
    assert "does not answer" in message
    assert elapsed < 5.0, f"took {elapsed:.1f} s (hub retries?)"


def test_sd2_hub_cards_load_from_pretrained_or_fail_within_5_s_offline(no_network):
    """The SD 2.x hub ids go through the same --model_card path as SD v1.4: from_pretrained from the cache, or, when
    they are not cached and the hub cannot be reached, one error naming the download command (no weights here)."""
    import diffusers.pipelines  # noqa: F401  (import time is not what we measure)

    start = time.perf_counter()
    for card in SD2_CARDS:
        assert model_version(card) == SD2_CARDS[card] and model_version(card).startswith("sd_v2")
        if in_hf_cache(card):
            continue  # cached on this machine: it would load
        for load in (load_pipeline, load_unet_config):  # the weights, and hrv-heads --config-only's config
            with pytest.raises(ModelNotAvailableError) as error:
                load(card)
            assert f"hf download {card}" in str(error.value) and "tiny-sd2" in str(error.value)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, f"4 cards took {elapsed:.1f} s (hub retries?)"


def test_clip_weights_not_cached_fail_within_5_s_without_HF_HUB_OFFLINE(no_network, tmp_path):
    pytest.importorskip("open_clip")
    from hrv_diffusion.apps.clip import ClipWeightsUnavailable, check_clip_weights

    start = time.perf_counter()
    with pytest.raises(ClipWeightsUnavailable) as error:
        check_clip_weights("ViT-H-14", "laion2b_s32b_b79k", cache_dir=str(tmp_path))
    elapsed = time.perf_counter() - start
    assert "hf download laion/CLIP-ViT-H-14-laion2B-s32B-b79K" in str(error.value)
    assert elapsed < 5.0, f"took {elapsed:.1f} s (hub retries?)"


def test_the_papers_clip_repo_is_open_clips():
    """The paper's CLIP is checked without importing open_clip: its hub repo must be the one open_clip names."""
    import open_clip

    from hrv_diffusion.apps.clip import KNOWN_HUB_REPOS

    for (model, tag), repo in KNOWN_HUB_REPOS.items():
        assert open_clip.get_pretrained_cfg(model, tag)["hf_hub"] == repo
