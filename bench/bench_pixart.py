"""GPU benchmark of HRV construction on the real PixArt-Σ transformer (random weights, fp16, 1024²): the cost of voting.

The transformer is ``PixArtTransformer2DModel`` with PixArt-Σ XL-2 1024-MS's real config (28 blocks x 16 heads = 448
CA heads, width 1152, patch 2, ``sample_size`` 128: 1024² images, a 64x64 query grid), random seeded weights drawn
on the GPU, in fp16. Only the weights are random (no download is possible here), so the compute is the real one.

The text side is NOT the real one: the 4.7B-parameter T5-XXL is not built. The pipeline's ``encode_prompt`` is given
random seeded T5-shaped states instead, (B, 300, 4096) with an attention mask (a random 8..40 valid tokens per
prompt; 1 for the empty negative, T5("")'s lone ``</s>``), passed through the pipeline's own ``encode_prompt`` as
``prompt_embeds``. The concept words' stored rows (340 words of the paper's concept set, (W, 77, 4096), a sink row,
1..3 word tokens and an end row each) are random too: the vote needs only these bank rows. So the timings below
leave out T5 (run once per prompt batch in a real run, and once per word for the bank) and the VAE (HRV construction
never decodes).

In one process, on the same prompts, latents, batch and card, it times per prompt, interleaved ``--reps`` times:
  - ``hrv``: ``run_relevance``, the code path of ``hrv-relevance`` (hooked processors + ``RelevanceVotes`` at every
    CA layer and evaluation; the paper's PNDM, 50 steps = 51 evaluations, CFG 7.5; the shard written),
  - ``plain``: the same loop (``core.loop.generate``) with no controller: the stock diffusers processors,
  - ``hooked``: the same loop with the hooked processors and a no-op controller (the hooks' own cost),
and reports s/prompt for each and ``vote_overhead = hrv / plain - 1`` (the goal: <= 10 %). ``--compile_votes``: the
vote computation compiled, as ``hrv-relevance --compile`` does on PixArt (the transformer stays eager in every mode).

    python bench/bench_pixart.py --batch 4 --prompts 8 --out bench/results/pixart_sigma_hrv_h100.json
    python bench/bench_pixart.py --smoke --out /tmp/pixart_smoke.json   # tiny-pixart on the CPU, seconds
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hrv_diffusion.core.attention import Controller  # noqa: E402
from hrv_diffusion.core.families import pixart  # noqa: E402
from hrv_diffusion.core.heads import head_layout  # noqa: E402
from hrv_diffusion.core.loop import generate, latent_shape, num_evaluations, seed_latents  # noqa: E402
from hrv_diffusion.core.models import load_pipeline, paper_scheduler  # noqa: E402
from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description  # noqa: E402
from hrv_diffusion.hrv.construction import RelevanceSettings, run_relevance  # noqa: E402
from hrv_diffusion.hrv.embeddings import TextEmbeddings  # noqa: E402
from hrv_diffusion.hrv.prompts import load_prompts  # noqa: E402
from hrv_diffusion.hrv.shards import load_shard  # noqa: E402
from hrv_diffusion.hrv.votes import derived_seed  # noqa: E402

SIGMA = "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
SEED = 22  # RelevanceSettings' default seed
MODES = ("plain", "hooked", "hrv")
FULL = dict(batch=4, prompts=8, steps=50, warmup_steps=3, reps=2)
SMOKE = dict(batch=2, prompts=2, steps=2, warmup_steps=1, reps=1)


def sigma_pipeline(device: str, dtype: torch.dtype):
    """A PixArt-Σ pipeline with the real transformer (random weights drawn on ``device``), no T5, no VAE, and the
    paper's PNDM over PixArt's linear betas (1e-4 .. 0.02), as ``load_pipeline(..., scheduler="pndm")`` makes it."""
    from diffusers import DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    torch.manual_seed(0)
    with torch.device(device):
        transformer = PixArtTransformer2DModel.from_config(pixart.CONFIGS[SIGMA]).to(dtype).eval()
    own = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear")
    pipe = PixArtSigmaPipeline(tokenizer=None, text_encoder=None, vae=None, transformer=transformer,
                               scheduler=paper_scheduler(own.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def random_text(pipe, channels: int) -> int:
    """Replace ``pipe.encode_prompt`` (on this instance) by seeded random T5-shaped states fed to the pipeline's own
    ``encode_prompt`` as ``prompt_embeds``; returns the text length T (the pipeline's own: α 120, Σ 300)."""
    length = pixart.text_length(pipe)
    own = type(pipe).encode_prompt
    device = pipe._execution_device

    def states(texts, empty_len):  # (B, T, D) float32 and (B, T) masks, seeded by each text
        embeds, masks = [], []
        for text in texts:
            g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
            valid = empty_len if text == "" else int(torch.randint(8, 41, (1,), generator=g))
            embeds.append(torch.randn(length, channels, generator=g))
            masks.append((torch.arange(length) < valid).long())
        return torch.stack(embeds).to(device), torch.stack(masks).to(device)

    def encode_prompt(prompt, do_classifier_free_guidance=True, negative_prompt="", num_images_per_prompt=1,
                      device=None, clean_caption=False, max_sequence_length=length, **kwargs):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else list(negative_prompt)
        embeds, mask = states(prompts, 1)
        neg, neg_mask = states(negatives, 1)
        return own(pipe, prompts, do_classifier_free_guidance, num_images_per_prompt=num_images_per_prompt,
                   device=device, prompt_embeds=embeds, prompt_attention_mask=mask, negative_prompt_embeds=neg,
                   negative_prompt_attention_mask=neg_mask, max_sequence_length=max_sequence_length)

    pipe.encode_prompt = encode_prompt
    return length


def random_words(num_words: int, channels: int) -> TextEmbeddings:
    """Stored word rows (W, 77, D) float32: row 0 a shared sink, then 1..3 word tokens and an end row (random)."""
    g = torch.Generator().manual_seed(1)
    n = torch.randint(1, 4, (num_words,), generator=g)  # word tokens per word
    embeddings = torch.zeros(num_words, pixart.MAX_LENGTH, channels)
    embeddings[:, 0] = torch.randn(channels, generator=g)  # the sink, the same for every word
    for w, k in enumerate(n.tolist()):
        embeddings[w, 1 : k + 2] = torch.randn(k + 1, channels, generator=g)
    return TextEmbeddings(embeddings=embeddings, token_lengths=n + 2, metadata={"random": True})


def timed(fn, cuda: bool):
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny-pixart on the CPU in float32 (the same code, seconds)")
    p.add_argument("--batch", type=int, help="prompts per batch (CFG makes 2x rows); default 4, smoke 2")
    p.add_argument("--prompts", type=int, help="timed prompts per mode and rep (after a warm-up batch); default 8, "
                   "smoke 2")
    p.add_argument("--steps", type=int, help="default hrv-relevance's 50 PNDM steps = 51 evaluations; smoke 2")
    p.add_argument("--warmup_steps", type=int, help="steps of each mode's warm-up batch; default 3, smoke 1")
    p.add_argument("--reps", type=int, help="interleaved repetitions of the three modes; default 2, smoke 1")
    p.add_argument("--compile_votes", action="store_true", help="torch.compile the vote (hrv-relevance --compile)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    defaults = SMOKE if args.smoke else FULL
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)

    cuda = not args.smoke
    if args.smoke:
        pipe, dtype_name = load_pipeline("tiny-pixart"), "float32"
    else:
        pipe, dtype_name = sigma_pipeline("cuda", torch.float16).to("cuda"), "float16"
    transformer = pipe.transformer
    channels = transformer.config.caption_channels
    text_len = random_text(pipe, channels)
    concepts = read_concept_set(resolve_description("340_final_text_descriptions"))
    words = random_words(len(concepts.flat_words), channels)
    prompts = load_prompts("imagenet")[: args.batch + args.prompts]
    warm, run = list(range(args.batch)), list(range(args.batch, args.batch + args.prompts))
    layout = head_layout(pipe)
    shape = latent_shape(pipe)
    evaluations = num_evaluations(pipe, args.steps)
    import diffusers

    report = {
        "model": SIGMA if not args.smoke else "tiny-pixart", "weights": "random (seeded)", "smoke": args.smoke,
        "card": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
        "diffusers": diffusers.__version__, "dtype": dtype_name, "ca_heads": layout.num_heads,
        "blocks": len(layout.layers), "latent": list(shape), "query_grid": [n // pixart.downsampling(transformer.config) for n in shape[1:]],
        "text": f"random T5-shaped states (B, {text_len}, {channels}) with masks; no T5 built",
        "words": f"{len(concepts.flat_words)} random bank words (W, {pixart.MAX_LENGTH}, {channels}), 1..3 tokens",
        "scheduler": type(pipe.scheduler).__name__, "steps": args.steps, "evaluations": evaluations,
        "guidance_scale": 7.5, "batch": args.batch, "prompts": args.prompts, "reps": args.reps,
        "compile_votes": args.compile_votes,
        "params_m": sum(p.numel() for p in transformer.parameters()) / 1e6,
    }
    results = Path(tempfile.mkdtemp())
    meta = {"concept_fingerprint": concepts.fingerprint(), "concept_names": list(concepts.names),
            "prompt_fingerprint": "bench"}

    def loop(indices, steps, controllers):
        finite = True
        for start in range(0, len(indices), args.batch):
            batch = indices[start : start + args.batch]
            latents = torch.cat([seed_latents([derived_seed(SEED, i)], shape) for i in batch])
            out = generate(pipe, [prompts[i] for i in batch], latents, num_inference_steps=steps,
                           guidance_scale=7.5, controllers=controllers)
            finite &= bool(torch.isfinite(out.latents).all())
        return finite

    def hrv(indices, steps):
        settings = RelevanceSettings(model_card="random-pixart-sigma", model_version="random", description="paper",
                                     prompt="bench", batch_size=args.batch, dtype=dtype_name,
                                     num_inference_steps=steps, checkpoint_every=10**9, compile=args.compile_votes)
        [path] = run_relevance(pipe, settings, concepts, words, prompts, indices, meta, results, progress=False)
        counts = load_shard(path).counts  # (T, H, C)
        path.unlink()
        return int(counts.sum())

    modes = {"plain": lambda i, s: loop(i, s, ()), "hooked": lambda i, s: loop(i, s, [Controller()]), "hrv": hrv}
    for name, fn in modes.items():  # warm-up: one batch of few steps each
        seconds, _ = timed(lambda: fn(warm, args.warmup_steps), cuda)
        print(f"warm-up {name}: {seconds:.2f} s", flush=True)
    times = {name: [] for name in MODES}
    for rep in range(args.reps):
        for name in MODES:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            seconds, out = timed(lambda: modes[name](run, args.steps), cuda)
            times[name].append(seconds / len(run))
            if cuda:
                report[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            if name == "hrv":
                report["votes_total"], report["votes_expected"] = out, len(run) * evaluations * layout.num_heads
            else:
                report[f"{name}_final_latents_finite"] = out
            print(f"rep {rep} {name}: {times[name][-1]:.3f} s/prompt", flush=True)
        summarize(report, times)
        write(report, args.out)  # after every rep: a run cut short keeps what it measured
    print(json.dumps(report, indent=1), flush=True)
    return report


def summarize(report: dict, times: dict) -> None:
    for name, values in times.items():
        report[f"{name}_s_per_prompt_reps"] = values
        report[f"{name}_s_per_prompt"] = statistics.median(values)
    report["reps_done"] = len(times["hrv"])
    report["vote_overhead"] = report["hrv_s_per_prompt"] / report["plain_s_per_prompt"] - 1
    report["hook_overhead"] = report["hooked_s_per_prompt"] / report["plain_s_per_prompt"] - 1


def write(report: dict, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
