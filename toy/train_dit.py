#!/usr/bin/env python3
"""Train the toy diffusion transformer (hrv_diffusion/toy/dit.py) on the toy world; save its transformer.

    python3 toy/train_dit.py --out runs/toy_dit --time_budget_minutes 6     # GPU (one H100)
    python3 toy/train_dit.py --out /tmp/toy_dit_smoke --smoke                # CPU, seconds: a check that it all runs
    python3 toy/train_dit.py --out runs/toy_dit --resume --time_budget_minutes 9   # continue a run

The toy UNet's recipe (toy/train.py), with its trained VAE and frozen text encoder kept as they are:
1. data: ``--n_images`` training scenes (held-out color-shape pairs excluded), encoded once by the toy's VAE (its
   scaling factor) and its frozen CLIP text encoder.
2. the transformer: epsilon prediction with SD v1.4's noise schedule, 10% empty captions, AdamW with warm-up, bf16
   autocast on CUDA, an EMA of the weights (what is saved); ``toy/train.py``'s loop (``train_unet``).
3. the EMA transformer and the scheduler go to ``--model_dir`` (default OUT/model; ``hrv_diffusion/data/toy_dit`` is
   the shipped one), and held-out and training captions are generated and scored into OUT/eval.json.

Training stops at ``--time_budget_minutes`` of wall time (over resumed runs) or ``--steps``. OUT/checkpoint.pt is
written every ``--checkpoint_every`` steps and at the end; OUT/train_log.jsonl has one JSON line per logged step.
"""
from __future__ import annotations

import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
for path in (str(ROOT), str(ROOT / "toy")):  # the package, and toy/train.py's training loop
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

from train import Log, encode_latents, encode_text, save_checkpoint, train_unet  # noqa: E402


@dataclass
class Settings:
    out: str = "toy_dit_run"
    model_dir: str = ""
    seed: int = 0
    n_images: int = 100_000
    two_object_fraction: float = 0.3
    workers: int = 0
    time_budget_minutes: float = 6.0
    steps: int = 1_000_000
    batch: int = 512
    lr: float = 4e-4
    warmup_steps: int = 500
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_drop: float = 0.1
    checkpoint_every: int = 2000
    log_every: int = 100
    eval_images: int = 256
    eval_steps: int = 50
    device: str = "auto"
    compile: bool = False
    resume: bool = False
    smoke: bool = False


SMOKE = dict(n_images=64, steps=4, batch=8, warmup_steps=2, checkpoint_every=2, log_every=2, eval_images=4,
             eval_steps=3, workers=1, device="cpu")
MUST_MATCH = ("seed", "n_images", "two_object_fraction")


def parse(argv=None) -> Settings:
    from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, fraction, nonnegative_int, positive_float,
                                          positive_int)

    d = Settings()
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--out", default=d.out, help="run folder: checkpoint, log, evaluation")
    p.add_argument("--model_dir", default="", help="where the trained transformer goes (default: OUT/model)")
    p.add_argument("--seed", type=nonnegative_int, default=d.seed, help="seed of the data and the initialization")
    p.add_argument("--n_images", type=positive_int, default=d.n_images, help="training scenes rendered")
    p.add_argument("--two_object_fraction", type=fraction, default=d.two_object_fraction,
                   help="fraction of the scenes with two objects")
    p.add_argument("--workers", type=nonnegative_int, default=d.workers, help="data rendering processes (0: all CPUs)")
    p.add_argument("--time_budget_minutes", type=positive_float, default=d.time_budget_minutes,
                   help="wall-clock budget of the training")
    p.add_argument("--steps", type=positive_int, default=d.steps, help="optimizer steps, at most")
    p.add_argument("--batch", type=positive_int, default=d.batch, help="batch size")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="peak learning rate (AdamW)")
    p.add_argument("--warmup_steps", type=nonnegative_int, default=d.warmup_steps, help="learning-rate warm-up steps")
    p.add_argument("--weight_decay", type=fraction, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--ema_decay", type=fraction, default=d.ema_decay, help="decay of the weights' moving average")
    p.add_argument("--cfg_drop", type=fraction, default=d.cfg_drop, help="fraction of captions dropped to ''")
    p.add_argument("--checkpoint_every", type=positive_int, default=d.checkpoint_every, help="checkpoint every N steps")
    p.add_argument("--log_every", type=positive_int, default=d.log_every, help="log every N steps")
    p.add_argument("--eval_images", type=nonnegative_int, default=d.eval_images,
                   help="images generated per split by the final evaluation (0: none)")
    p.add_argument("--eval_steps", type=positive_int, default=d.eval_steps, help="PNDM steps of the evaluation")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device, help="auto: cuda if available")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    p.add_argument("--smoke", action="store_true", help="a few steps on tiny data on the CPU, to check the code path")
    args = vars(p.parse_args(argv))
    base = asdict(Settings(**SMOKE)) if args["smoke"] else asdict(d)
    given = {k: v for k, v in args.items() if v != getattr(d, k)}  # flags given on the command line win
    return Settings(**{**base, **given})


class NoiseModel(torch.nn.Module):
    """The transformer called as ``toy/train.py``'s loop calls a UNet: ``model(noisy, t, text).sample``."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, noisy, t, text):  # (B, 4, 16, 16), (B,), (B, 77, 48)
        return self.transformer(noisy, encoder_hidden_states=text, timestep=t,
                                added_cond_kwargs={"resolution": None, "aspect_ratio": None})


def main(argv=None) -> int:
    s = parse(argv)
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.toy.data import make_dataset
    from hrv_diffusion.toy.dit import assemble_toy_dit, build_toy_dit, save_toy_dit
    from hrv_diffusion.toy.model import folder_bytes

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(s.model_dir or out / "model")
    ckpt_path = out / "checkpoint.pt"
    state = None
    if s.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        wrong = [k for k in MUST_MATCH if state["settings"][k] != getattr(s, k)]
        if wrong:
            raise SystemExit(f"{ckpt_path} was made with other {', '.join(wrong)}: pass the same values")
    start, before = time.perf_counter(), (state["elapsed_s"] if state else 0.0)

    def elapsed() -> float:
        return before + time.perf_counter() - start

    log = Log(out / "train_log.jsonl", elapsed)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    log(event="resume" if state else "start", settings=asdict(s), device=str(device), torch=torch.__version__)

    # 1. data (rendered before CUDA is touched, so that forked workers are safe), encoded by the toy's frozen parts
    images, captions, _ = make_dataset(s.n_images, s.seed, "train", s.two_object_fraction,
                                       workers=s.workers or os.cpu_count() or 1)
    toy = load_pipeline("toy", scheduler="model")
    vae, text_encoder, tokenizer = toy.vae.to(device).requires_grad_(False), toy.text_encoder.to(device), toy.tokenizer
    mean, std = encode_latents(vae, torch.from_numpy(images).to(device), device)  # (N, 4, 16, 16)
    del images
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    text = encode_text(text_encoder, ids, device, dtype)  # (N, 77, 48)
    empty = encode_text(text_encoder, tokenizer([""], padding="max_length", max_length=77,
                                                return_tensors="pt").input_ids, device, dtype)  # (1, 77, 48)
    scale = vae.config.scaling_factor
    log(event="encoded", images=len(mean), scaling_factor=scale, latent_std=round(float(mean.float().std() * scale), 4))

    # 2. the transformer
    model = NoiseModel(build_toy_dit(s.seed))
    ema = copy.deepcopy(model).requires_grad_(False)
    if state:
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
    model.to(device)
    ema.to(device)
    gen = torch.Generator(device=device).manual_seed(s.seed + 1)
    if state:
        gen.set_state(state["generator"])
    progress = {"unet_step": state["unet_step"] if state else 0, "opt_unet": state.get("opt_unet") if state else None}

    def ckpt(**update):
        progress.update({k: v for k, v in update.items() if k in progress})
        save_checkpoint(ckpt_path, {**progress, "settings": asdict(s), "elapsed_s": elapsed(),
                                    "generator": gen.get_state(), "model": model.state_dict(),
                                    "ema": ema.state_dict()})
        log(event="checkpoint", step=progress["unet_step"])

    loop = SimpleNamespace(unet_lr=s.lr, unet_steps=s.steps, unet_batch=s.batch, warmup_steps=s.warmup_steps,
                           weight_decay=s.weight_decay, ema_decay=s.ema_decay, cfg_drop=s.cfg_drop,
                           log_every=s.log_every, checkpoint_every=s.checkpoint_every, compile=s.compile)
    try:
        train_unet(loop, model, ema, (mean, std, scale), text, empty, gen, progress, log, elapsed,
                   s.time_budget_minutes * 60.0, ckpt)
    except KeyboardInterrupt:
        ckpt()
        log(event="interrupted", step=progress["unet_step"])
        return 130

    # 3. save the EMA transformer, then check prompt following
    pipe = assemble_toy_dit(ema.transformer.float().eval(), toy)
    save_toy_dit(pipe, model_dir)
    log(event="saved", model_dir=str(model_dir), bytes=folder_bytes(model_dir))
    if s.eval_images:
        from hrv_diffusion.toy.evaluate import evaluate_pipeline

        results = {}
        for split in ("heldout", "train"):
            r = evaluate_pipeline(pipe, n=s.eval_images, seed=s.seed + 1000, split=split, steps=s.eval_steps,
                                  batch_size=256)
            results[split] = {k: v for k, v in r.items() if k != "counts"}
            log(event="eval", split=split, accuracy=r["accuracy"], eval_seconds=r["seconds"])
        (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
