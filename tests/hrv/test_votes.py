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


def test_layers_that_upcast_attention_vote_in_float32_where_float16_scores_overflow():
    """SD 2.1 (768-v) sets ``upcast_attention`` (its float16 scores can overflow), as tiny-sd2 does: the vote of such
    a layer is computed in float32 from the float16 queries and bank keys, and equals a float64 computation even where
    the float16 scores are infinite. tiny-sd's layers do not upcast."""
    from hrv_diffusion.core.attention import UNetCall
    from hrv_diffusion.hrv.votes import RelevanceVotes, WordBank

    sd = load_pipeline("tiny-sd").unet
    assert WordBank(sd, head_layout(sd), torch.zeros(1, 77, 32), torch.tensor([3])).upcast == set()
    fp32 = load_pipeline("tiny-sd2")
    emb, lengths = encode_words(fp32, list(CONCEPTS.flat_words))
    pipe = load_pipeline("tiny-sd2", dtype="float16")
    layout = head_layout(pipe.unet)
    bank = WordBank(pipe.unet, layout, emb, lengths)
    assert bank.upcast == {layer.module_name for layer in layout.layers}
    layer = layout.layers[-1]  # up, layer 8: 1 head of 16 channels
    votes = RelevanceVotes(bank, layout, 1, CONCEPTS.num_concepts)
    words = torch.tensor([[0, 4, 8]])  # dog, blue, cubist
    choices = words[:, None, None, :].expand(1, 1, len(layout.layers), 3)  # (B, T, layers, C)
    votes.set_choices(choices)
    keys = bank.keys[layer.module_name]  # (R, h, d) float16
    target = int(bank.tokens[4, 0])  # the row of "blue"
    k = keys[target, 0].double()
    query = (k * (2 * 65504 / float(k @ k))).clamp(-6e4, 6e4)  # q·k about 2 x the float16 maximum
    query = torch.stack([query, -query]).half()[None, None]  # (B=1, h=1, N=2, d)
    rows = torch.cat([torch.zeros(1, dtype=torch.long), bank.tokens[words[0]].flatten()])
    assert torch.isinf(query[0, 0] @ keys[rows, 0].T).any()  # float16 scores overflow here
    votes.observe(layer, UNetCall(0), query, None)

    logits = query[0, 0].double() @ keys[rows, 0].double().T * 16 ** -0.5  # (N, L), float64
    valid = bank.valid[words[0]].flatten()
    logits[:, 1:][:, ~valid] = float("-inf")
    probs = logits.softmax(-1).mean(0)[1:].view(3, -1) * bank.valid[words[0]]
    expected = int((probs.sum(-1) / bank.n_words[words[0]]).argmax())
    assert votes.counts[0, layer.offset].tolist() == [float(c == expected) for c in range(3)]


def test_graph_safe_votes_count_like_the_plain_ones(pipe, embeddings):
    """``graph_safe``: the evaluation index from a device tensor that the votes set as a step hook, so a replay of
    the first step's UNet call (``FrozenGraphCache``: the Python of the first call frozen, as a CUDA graph freezes
    it) counts every step right; the plain votes under the same replay count every step as the first."""
    from frozen_graphs import FrozenGraphCache

    from hrv_diffusion.core.loop import generate
    from hrv_diffusion.hrv.votes import RelevanceVotes, WordBank

    layout = head_layout(pipe.unet)
    bank = WordBank(pipe.unet, layout, embeddings.embeddings, embeddings.token_lengths)
    latents = torch.randn((3, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    choices = torch.stack([sample_words(list(CONCEPTS.word_counts), STEPS + 1, len(layout.layers),
                                        torch.Generator().manual_seed(i)) for i in range(3)])  # (B, T, layers, C)

    def counts(graph_safe, graphs=None):
        votes = RelevanceVotes(bank, layout, STEPS + 1, CONCEPTS.num_concepts, graph_safe=graph_safe)
        votes.set_choices(choices)
        generate(pipe, PROMPTS[:3], latents, num_inference_steps=STEPS, controllers=[votes], step_hooks=[votes],
                 graphs=graphs)
        return votes.counts

    plain = counts(False)
    assert plain.sum() == (STEPS + 1) * layout.num_heads * 3  # one vote per evaluation, head and prompt
    replay = FrozenGraphCache()
    assert torch.equal(counts(True, replay), plain)
    assert replay.captures == 1 and replay.replays == STEPS  # one "capture", then every later step replayed
    frozen_plain = counts(False, FrozenGraphCache())
    assert frozen_plain[1:].sum() == 0 and frozen_plain[0].sum() == plain.sum()  # the control: all counted as step 0
