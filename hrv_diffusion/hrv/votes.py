"""Head relevance votes: the published HRV construction, batched and on the GPU.

At every CA call (layer, evaluation) each prompt draws one word per concept. The layer's conditional-half queries
attend to ``[SOT, words of concept 0, words of concept 1, ...]`` (keys = this layer's ``to_k`` of the stored word
embeddings); the softmax runs over all those keys (SOT included), is averaged over query positions, then over each
word's tokens (SOT excluded); each head votes for its argmax concept. ``counts[t, g, c]`` adds the votes.

Faithful to the reference (SNU-DRL/HRV) except where it is not reproducible: words are drawn from a generator
seeded per (seed, epoch, prompt) instead of torch's unseeded global RNG. Generation itself is not perturbed.
"""
from __future__ import annotations

import numpy as np
import torch

from hrv_diffusion.core.attention import Controller, UNetCall
from hrv_diffusion.core.families import denoiser, family_of
from hrv_diffusion.core.heads import AttnLayer, HeadLayout
from hrv_diffusion.core.loop import StepHook


def derived_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy's SeedSequence): independent streams per (seed, prompt, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


class WordBank:
    """Per CA layer, the keys of every concept word's tokens, computed once per run.

    Row 0 of each layer's bank is the sink key, the same for every word (UNet: CLIP's SOT, the text encoder being
    causal; PixArt: the empty prompt's ``</s>``); the other rows are the word tokens of all words, packed.
    ``tokens[w, i]`` is the bank row of word w's i-th token. The keys come through the layer's own key path, as
    the model's family computes them (UNet: ``to_k``; PixArt: ``to_k`` of ``caption_projection``).
    ``upcast``: the layers whose module asks for float32 scores (``upcast_attention``: SD 2.x 768-v, whose float16
    scores can overflow); their votes are computed in float32 whatever the model's dtype.
    """

    def __init__(self, unet, layout: HeadLayout, embeddings: torch.Tensor, token_lengths: torch.Tensor):
        # embeddings (W, 77, D), row 0 the sink; token_lengths (W,) including the sink and the end token
        n_words = token_lengths.long() - 2  # (W,) word tokens per word
        if int(n_words.min()) < 1:
            raise ValueError("every concept word needs at least one token")
        n_max = int(n_words.max())
        rows = [embeddings[0, 0]]  # SOT
        tokens = torch.zeros(len(n_words), n_max, dtype=torch.long)
        for w, n in enumerate(n_words.tolist()):
            tokens[w, :n] = torch.arange(len(rows), len(rows) + n)
            rows.extend(embeddings[w, 1 : n + 1])
        packed = torch.stack(rows)  # (1 + sum n, D)
        model = denoiser(unet)
        family = family_of(model)
        param = next(model.parameters())
        packed = packed.to(device=param.device, dtype=param.dtype)
        self.keys = {}  # module name -> (R, h, d)
        with torch.no_grad():
            for layer in layout.layers:
                key = family.bank_keys(model, layer, packed)  # (R, h * d): the layer's own key path
                self.keys[layer.module_name] = key.view(len(packed), layer.heads, -1)
        self.upcast = {layer.module_name for layer in layout.layers
                       if getattr(model.get_submodule(layer.module_name), "upcast_attention", False)}
        self.tokens = tokens.to(param.device)  # (W, n_max)
        self.valid = (torch.arange(n_max)[None] < n_words[:, None]).to(param.device)  # (W, n_max)
        self.n_words = n_words.to(param.device)  # (W,)


class RelevanceVotes(Controller, StepHook):
    """Counts which concept each CA head attends to most.

    ``counts``: (T, H, C) float32 on the UNet's device; host copies happen only when the caller asks.
    Before each batch, ``set_choices(choices)`` gives the sampled words, (B, T, layers, C) word indices.

    ``graph_safe``: the votes read the evaluation index from a device tensor that they set before each step as a
    step hook of the generation (``generate(..., step_hooks=[votes])``), so one CUDA graph of the guided UNet call
    counts right at every step (``generate(..., graphs=GraphCache())``, a fresh cache per generation: its graph
    reads this batch's words and prompts). Off: the index is the call's Python int (no step hook needed).
    """

    def __init__(self, bank: WordBank, layout: HeadLayout, num_evaluations: int, num_concepts: int,
                 compile: bool = False, graph_safe: bool = False):
        self.bank, self.layout = bank, layout
        # Compiling fuses the softmax, masking and means into few kernels (one graph per layer shape).
        self.head_votes = torch.compile(head_votes, dynamic=False) if compile else head_votes
        self.ordinal = {layer.module_name: i for i, layer in enumerate(layout.layers)}
        device = bank.tokens.device
        self.counts = torch.zeros(num_evaluations, layout.num_heads, num_concepts, device=device)
        self.choices = None
        self.step = torch.zeros((), dtype=torch.long, device=device) if graph_safe else None  # the evaluation index

    def set_choices(self, choices: torch.Tensor) -> None:
        self.choices = choices.to(self.bank.tokens.device)

    def before(self, step: int, t, latents: torch.Tensor, loop) -> None:
        if self.step is not None:
            self.step.fill_(step)

    def observe(self, layer: AttnLayer, call: UNetCall, query: torch.Tensor, key: torch.Tensor) -> None:
        batch, heads, _, head_dim = query.shape  # (B, h, N, d)
        step = call.step if self.step is None else self.step
        words = self.choices[:batch, step, self.ordinal[layer.module_name]]  # (B, C)
        bank = self.bank.keys[layer.module_name]  # (R, h, d)
        tokens, valid = self.bank.tokens[words], self.bank.valid[words]  # (B, C, n_max)
        keys = torch.cat([bank[:1].expand(batch, 1, heads, head_dim), bank[tokens.flatten(1)]], dim=1)  # (B, L, h, d), L = 1 + C * n_max
        keep = torch.cat([valid.new_ones(batch, 1), valid.flatten(1)], dim=1)  # (B, L)
        if layer.module_name in self.bank.upcast:  # no-op in float32
            query, keys = query.float(), keys.float()
        votes = self.head_votes(query, keys, keep, valid, self.bank.n_words[words])  # (B, h)
        if self.step is None:
            block = self.counts[call.step, layer.offset : layer.offset + heads]  # (h, C) view
            block.scatter_add_(1, votes.T, torch.ones_like(votes.T, dtype=block.dtype))
            return
        _, num_heads, num_concepts = self.counts.shape  # flat cells (step, head, concept): no host value needed
        rows = (self.step * num_heads + layer.offset + torch.arange(heads, device=votes.device)) * num_concepts
        cells = (rows + votes).flatten()  # (B * h,)
        self.counts.view(-1).scatter_add_(0, cells, torch.ones_like(cells, dtype=self.counts.dtype))


def head_votes(query, keys, keep, valid, n_words) -> torch.Tensor:
    """The concept each head attends to most, for each sample: (B, h) indices.

    query (B, h, N, d); keys (B, L, h, d) = [SOT, C concepts x n_max tokens]; keep (B, L) real keys;
    valid (B, C, n_max) real word tokens; n_words (B, C) word tokens per sampled word.
    """
    logits = torch.matmul(query, keys.permute(0, 2, 3, 1)).float() * query.shape[-1] ** -0.5  # (B, h, N, L)
    logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
    probs = logits.softmax(dim=-1).mean(dim=2)  # (B, h, L): softmax over all keys (SOT included), mean over N
    per_token = probs[..., 1:].unflatten(-1, valid.shape[1:]) * valid[:, None]  # (B, h, C, n_max)
    scores = per_token.sum(-1) / n_words[:, None]  # (B, h, C): mean over each word's tokens, SOT excluded
    return scores.argmax(dim=-1)  # the first maximum, like torch.argmax in the reference


def sample_words(word_counts: list[int], num_evaluations: int, num_layers: int, generator: torch.Generator) -> torch.Tensor:
    """One word per concept for every (evaluation, CA layer): (T, layers, C) indices into the flat word list."""
    counts = torch.tensor(word_counts)
    offsets = torch.cumsum(counts, 0) - counts
    u = torch.rand(num_evaluations, num_layers, len(word_counts), generator=generator, dtype=torch.float64)
    return offsets + (u * counts).long().clamp_max(counts - 1)
