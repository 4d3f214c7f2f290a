"""The PixArt family on tiny-pixart: the offline T5 tokenizer, the loop against the stock pipeline, the sink row of
the word embeddings, and the text padding mask kept in the probabilities."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hrv_diffusion.core.attention import Controller
from hrv_diffusion.core.families import pixart
from hrv_diffusion.core.loop import generate, latent_shape, seed_latents
from hrv_diffusion.core.t5_tokenizer import t5_tokenizer
from hrv_diffusion.core.tiny_pixart import TINY_PIXART, tiny_pixart_pipeline

PROMPTS = ["a red circle", "a photo of a blue cat"]


@pytest.fixture(scope="module")
def pipe():
    return tiny_pixart_pipeline()


def test_t5_tokenizer_appends_eos_and_spells_unknown_words():
    tokenizer = t5_tokenizer()
    ids = tokenizer("a red circle").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["▁a", "▁red", "▁circle", "</s>"]
    assert tokenizer("").input_ids == [tokenizer.eos_token_id] == [1]
    assert tokenizer.pad_token_id == 0
    assert tokenizer.convert_ids_to_tokens(tokenizer("zebra").input_ids) == ["▁", "z", "e", "b", "r", "a", "</s>"]


def test_the_loop_equals_the_stock_pipeline(pipe):
    latents = seed_latents([5, 6], latent_shape(pipe))
    ours = generate(pipe, PROMPTS, latents, num_inference_steps=3, guidance_scale=4.5).latents
    stock = pipe(PROMPTS, num_inference_steps=3, guidance_scale=4.5, latents=latents.clone(), output_type="latent",
                 use_resolution_binning=False, clean_caption=False, height=32, width=32).images
    assert torch.equal(ours, stock)


def _t5_alone(pipe, text):
    """T5 of ``text`` tokenized alone, no padding: (tokens, D)."""
    ids = pipe.tokenizer(text, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0][0]


def test_word_rows_are_the_empty_prompt_eos_then_the_word_alone(pipe):
    words = ["cat", "turquoise", "red"]
    embeddings, lengths = pixart.encode_words(pipe, words)
    assert embeddings.shape[:2] == (3, pixart.MAX_LENGTH)
    sink = _t5_alone(pipe, "")[0]  # the empty prompt is its </s> alone
    for w, word in enumerate(words):
        alone = _t5_alone(pipe, word)  # (n + 1, D): the word's tokens, then its own </s>
        n = len(alone) - 1
        assert int(lengths[w]) == n + 2
        assert torch.equal(embeddings[w, 0], embeddings[0, 0])  # one sink for every word
        torch.testing.assert_close(embeddings[w, 0], sink)
        torch.testing.assert_close(embeddings[w, 1 : n + 1], alone[:n])
        # the word's own </s> depends on the word (T5 is bidirectional), which is why it is not the sink
        assert not torch.allclose(alone[n], sink, atol=1e-3)


class MaskReader(Controller):
    """Keeps the conditional rows' probabilities of the first layer call."""

    probs = None

    def reads_probs(self, layer, call):
        return self.probs is None

    def read_probs(self, layer, call, probs):
        self.probs = probs.clone()  # (Bc, h, N, T)


def test_text_padding_keeps_its_bias_in_the_probabilities(pipe):
    reader = MaskReader()
    generate(pipe, PROMPTS, seed_latents([1, 2], latent_shape(pipe)), num_inference_steps=1, guidance_scale=4.5,
             controllers=[reader])
    mask = pipe.tokenizer(PROMPTS, padding="max_length", max_length=reader.probs.shape[-1],
                          return_tensors="pt").attention_mask.bool()  # (B, T)
    padded = reader.probs.masked_select(~mask[:, None, None, :])
    assert padded.numel() and padded.max() < 1e-30  # exp(-10000) underflows: padding gets no probability
    torch.testing.assert_close(reader.probs.sum(-1), torch.ones(reader.probs.shape[:-1]))


def test_the_resolution_condition_follows_the_transformer():
    alpha = pixart.from_config(pixart.CONFIGS["PixArt-alpha/PixArt-XL-2-1024-MS"]).config
    sigma = pixart.from_config(pixart.CONFIGS["PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"]).config
    assert pixart._uses_size(alpha) and not pixart._uses_size(sigma)
    assert not pixart._uses_size(SimpleNamespace(**TINY_PIXART))  # no choice given: only 128 latents use it


def test_a_pixart_folder_loads_through_the_model_card(pipe, tmp_path, capsys):
    from hrv_diffusion.cli import heads
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.models import load_pipeline

    pipe.save_pretrained(tmp_path / "pixart")
    loaded = load_pipeline(str(tmp_path / "pixart"), scheduler="model")
    assert type(loaded).__name__ == "PixArtAlphaPipeline"
    assert head_layout(loaded).labels == head_layout(pipe).labels
    latents = seed_latents([5], latent_shape(pipe))
    ours = generate(loaded, PROMPTS[:1], latents, num_inference_steps=2, guidance_scale=4.5).latents
    assert torch.equal(ours, generate(pipe, PROMPTS[:1], latents, num_inference_steps=2, guidance_scale=4.5).latents)
    assert heads.main([str(tmp_path / "pixart"), "--config-only", "--summary"]) == 0
    assert capsys.readouterr().out.strip() == "12 CA heads in 3 layers (block 12)"


def test_weakening_finds_t5_word_positions_and_acts_on_them(pipe):
    from hrv_diffusion.apps.weakening import HeadWeakening, weakened_tokens
    from hrv_diffusion.core.families import family_of
    from hrv_diffusion.core.heads import head_layout

    prompt, length = "a red zebra", family_of(pipe).text_length(pipe)
    assert length == 120  # PixArtAlphaPipeline's own T5 length
    pieces = pipe.tokenizer.convert_ids_to_tokens(pipe.tokenizer(prompt).input_ids)  # no start token in T5
    assert weakened_tokens(pipe.tokenizer, prompt, "red", length).nonzero().flatten().tolist() == [pieces.index("▁red")]
    zebra = weakened_tokens(pipe.tokenizer, prompt, "zebra", length).nonzero().flatten().tolist()
    assert [pieces[p] for p in zebra] == ["▁", "z", "e", "b", "r", "a"]  # every piece of a spelled word
    layout = head_layout(pipe)
    latents = seed_latents([3], latent_shape(pipe))
    tokens = weakened_tokens(pipe.tokenizer, prompt, None, length)[None]  # (1, T): every word of the prompt
    runs = {}
    for name, heads in (("none", []), ("two", [0, 5])):
        mask = torch.zeros(1, layout.num_heads, dtype=torch.bool)
        mask[0, heads] = True
        weakening = HeadWeakening(layout, mask, tokens, -2.0, (0.0, 1.01), 2)
        runs[name] = generate(pipe, [prompt], latents, num_inference_steps=1, guidance_scale=4.5,
                              controllers=[weakening]).latents
    plain = generate(pipe, [prompt], latents, num_inference_steps=1, guidance_scale=4.5).latents
    assert torch.equal(runs["none"], plain) and not torch.equal(runs["two"], plain)


def test_the_loader_knows_the_pixart_hub_ids_of_the_family():
    from hrv_diffusion.core.models import PIXART_CARDS, reads_t5_text

    assert set(PIXART_CARDS) == set(pixart.CONFIGS)
    assert all(reads_t5_text(card) for card in PIXART_CARDS)
