"""The fast vote path against a plain, one-prompt-at-a-time reimplementation of the published algorithm."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrv_diffusion.hrv.concepts import ConceptSet
from hrv_diffusion.hrv.construction import RelevanceSettings, run_relevance
from hrv_diffusion.hrv.embeddings import encode_words, TextEmbeddings
from hrv_diffusion.core.heads import head_layout
from hrv_diffusion.core.models import load_pipeline
from hrv_diffusion.hrv.votes import derived_seed, sample_words
from hrv_diffusion.hrv.shards import load_shard

CONCEPTS = ConceptSet(
    names=("Animals", "Color", "Style"),
    words=(("dog", "cat", "hippopotamus"), ("red", "blue", "turquoise"), ("watercolor", "cubist", "sketch")),
)
PROMPTS = ["a photo of a cat.", "a red car", "an oil painting of a castle", "a dog on the beach"]
STEPS = 3  # PNDM: 4 evaluations


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-sd2"])
def card(request):
    return request.param


@pytest.fixture(scope="module")
def pipe(card):
    return load_pipeline(card)


@pytest.fixture(scope="module")
def embeddings(pipe):
    emb, lengths = encode_words(pipe, list(CONCEPTS.flat_words))
    return TextEmbeddings(embeddings=emb, token_lengths=torch.as_tensor(lengths), metadata={})


class ReferenceVotes:
    """The published hook, written plainly: every Attention call counted to find the step (like the reference),
    one prompt at a time, one key sequence per call, fp32."""

    def __init__(self, unet, embeddings, token_lengths, choices, calls_per_step):
        self.layout = head_layout(unet)
        self.by_name = self.layout.by_module()
        self.E, self.n = embeddings, [int(x) - 2 for x in token_lengths]
        self.choices, self.calls_per_step = choices, calls_per_step  # choices (T, layers, C) for this prompt
        self.calls = 0
        self.counts = torch.zeros(choices.shape[0], self.layout.num_heads, choices.shape[2])

    def processor(self, name):
        ref = self

        def call(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
            step = ref.calls // ref.calls_per_step
            ref.calls += 1
            context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
            q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
            b, h = q.shape[0], attn.heads
            split = lambda x: x.view(b, -1, h, x.shape[-1] // h).transpose(1, 2)
            out = F.softmax(split(q) @ split(k).transpose(-1, -2) * attn.scale, -1) @ split(v)
            if encoder_hidden_states is not None:
                layer = ref.by_name[name.removesuffix(".processor")]
                ordinal = ref.layout.layers.index(layer)
                words = ref.choices[step, ordinal].tolist()
                seq = [ref.E[words[0]][: ref.n[words[0]] + 1]]  # SOT + concept 0's tokens
                seq += [ref.E[w][1 : ref.n[w] + 1] for w in words[1:]]
                keys = attn.to_k(torch.cat(seq)).view(-1, h, q.shape[-1] // h).transpose(0, 1)  # (h, L, d)
                query = split(q)[b // 2]  # conditional half, one prompt: (h, N, d)
                probs = F.softmax(query @ keys.transpose(-1, -2) * attn.scale, -1).mean(1)  # (h, L)
                scores, start = [], 1
                for w in words:
                    scores.append(probs[:, start : start + ref.n[w]].mean(-1))
                    start += ref.n[w]
                vote = torch.stack(scores, -1).argmax(-1)  # (h,)
                ref.counts[step, layer.offset + torch.arange(h), vote] += 1
            out = out.transpose(1, 2).reshape(b, -1, h * out.shape[-1])
            return attn.to_out[1](attn.to_out[0](out))

        return call


def reference_counts(pipe, embeddings, seed=22, epoch=1):
    unet = pipe.unet
    names = list(unet.attn_processors)
    saved = dict(unet.attn_processors)
    pipe.scheduler.set_timesteps(STEPS)
    T = len(pipe.scheduler.timesteps)
    layout = head_layout(unet)
    total = torch.zeros(T, layout.num_heads, CONCEPTS.num_concepts)
    for i, prompt in enumerate(PROMPTS):
        gen = torch.Generator().manual_seed(derived_seed(seed, epoch, i, 1))
        choices = sample_words(list(CONCEPTS.word_counts), T, len(layout.layers), gen)
        ref = ReferenceVotes(unet, embeddings.embeddings, embeddings.token_lengths, choices, len(names))
        unet.set_attn_processor({n: ref.processor(n) for n in names})
        latent = torch.randn((1, 4, 16, 16), generator=torch.Generator().manual_seed(derived_seed(seed, i)))
        with torch.no_grad():
            pipe(prompt=[prompt], latents=latent, num_inference_steps=STEPS, output_type="latent")
        unet.set_attn_processor(dict(saved))  # it pops from the dict it gets
        assert ref.calls == T * len(names)
        total += ref.counts
    return total.long().numpy()


def settings(card="tiny-sd", **kw):
    base = dict(model_card=card, model_version=card.replace("-", "_"), description="test", prompt="test",
                num_inference_steps=STEPS, batch_size=3, checkpoint_every=1)
    return RelevanceSettings(**(base | kw))


META = {"concept_fingerprint": CONCEPTS.fingerprint(), "concept_names": list(CONCEPTS.names), "prompt_fingerprint": "x"}


def test_fast_path_equals_plain_reference(card, pipe, embeddings, tmp_path):
    [path] = run_relevance(pipe, settings(card), CONCEPTS, embeddings, PROMPTS, list(range(len(PROMPTS))), META,
                           tmp_path, progress=False)
    shard = load_shard(path)
    expected = reference_counts(pipe, embeddings)
    heads = head_layout(pipe.unet).num_heads  # tiny-sd 22, tiny-sd2 39
    assert shard.counts.shape == expected.shape == (STEPS + 1, heads, 3)
    assert (shard.counts.sum(-1) == len(PROMPTS)).all()  # one vote per prompt, evaluation and head
    np.testing.assert_array_equal(shard.counts, expected)
    assert sorted(shard.prompt_indices.tolist()) == [0, 1, 2, 3]
