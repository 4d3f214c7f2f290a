#!/usr/bin/env python3
"""Train the toy text-to-image model (hrv_diffusion.toy): the VAE, then the UNet; save a diffusers folder.

    python3 toy/train.py --out runs/toy --time_budget_minutes 9      # GPU (one H100: about 10 minutes in all)
    python3 toy/train.py --out /tmp/toy_smoke --smoke                 # CPU, seconds: a check that it all runs
    python3 toy/train.py --out runs/toy --resume --time_budget_minutes 12   # continue a run

1. data: ``--n_images`` training scenes (held-out color-shape pairs excluded) drawn with numpy, precomputed once.
2. VAE (AutoencoderKL, 32x32 -> 4x16x16): MSE reconstruction + a small KL, for ``--vae_fraction`` of the budget
   or ``--vae_steps``; then every image is encoded once and the latent scaling factor is set to 1 / std.
3. UNet: epsilon prediction with SD v1.4's noise schedule (scaled_linear 0.00085-0.012, 1000 steps), 10% empty
   captions (classifier-free guidance), AdamW, bf16 autocast on CUDA, an EMA of the weights (what is saved).
   The text encoder is frozen (see hrv_diffusion/toy/model.py), so caption embeddings are computed once.
4. The EMA UNet, the VAE and the text encoder are saved with ``save_pretrained`` to ``--model_dir``
   (default OUT/model); a few held-out captions are generated and scored into OUT/eval.json.

Training stops cleanly at ``--time_budget_minutes`` of wall time (counted over all resumed runs, data
generation included; the final save and evaluation come after it) or at the step limits. OUT/checkpoint.pt is
written every ``--checkpoint_every`` steps and at the end; ``--resume`` continues from it. OUT/train_log.jsonl has
one JSON line per logged step (phase, step, losses, seconds) and per event.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere, with or without the package installed
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


@dataclass
class Settings:
    out: str = "toy_run"
    model_dir: str = ""  # default: OUT/model
    seed: int = 0
    n_images: int = 100_000
    two_object_fraction: float = 0.3
    workers: int = 0  # data rendering processes; 0: all CPUs
    time_budget_minutes: float = 10.0
    vae_fraction: float = 0.12  # of the time budget, at most
    vae_steps: int = 4000
    vae_batch: int = 256
    vae_lr: float = 1e-3
    kl_weight: float = 1e-4  # on the KL per latent element, against the MSE per pixel value in [-1, 1]
    unet_steps: int = 1_000_000
    unet_batch: int = 512
    unet_lr: float = 5e-4
    warmup_steps: int = 500
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cfg_drop: float = 0.1
    checkpoint_every: int = 1000
    log_every: int = 50
    eval_images: int = 256
    eval_steps: int = 50
    eval_guidance: float = 7.5
    device: str = "auto"
    compile: bool = False
    tokenizer: str = ""  # folder with vocab.json + merges.txt; default: hrv_diffusion.core.tokenizer (needs open_clip)
    resume: bool = False
    smoke: bool = False


SMOKE = dict(n_images=128, vae_steps=6, unet_steps=6, vae_batch=16, unet_batch=16, warmup_steps=2,
             checkpoint_every=3, log_every=2, eval_images=4, eval_steps=3, workers=1, device="cpu")
# Settings a resumed run must share with the checkpoint (the data and models they define).
MUST_MATCH = ("seed", "n_images", "two_object_fraction")


def parse(argv=None) -> Settings:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(Settings):
        if f.type in ("bool", bool):
            p.add_argument(f"--{f.name}", action="store_true", default=None)
        else:
            kind = {"int": int, "float": float, "str": str}[f.type if isinstance(f.type, str) else f.type.__name__]
            p.add_argument(f"--{f.name}", type=kind, default=None)
    p.add_argument("--write_tokenizer", metavar="DIR", help="write the CLIP vocab.json and merges.txt to DIR (for a "
                   "machine without open_clip: then pass --tokenizer DIR there) and exit")
    args = vars(p.parse_args(argv))
    folder = args.pop("write_tokenizer")
    if folder:
        raise SystemExit(write_tokenizer(folder))
    settings = Settings()
    if args.get("smoke"):
        settings = Settings(**{**asdict(settings), **SMOKE})
    given = {k: v for k, v in args.items() if v is not None}
    return Settings(**{**asdict(settings), **given})


def write_tokenizer(folder: str) -> int:
    import shutil

    from hrv_diffusion.core.tokenizer import clip_vocab_files

    Path(folder).mkdir(parents=True, exist_ok=True)
    for path in clip_vocab_files():
        shutil.copy(path, Path(folder) / Path(path).name)
    print(f"wrote vocab.json and merges.txt to {folder}")
    return 0


def load_tokenizer(folder: str):
    """The real CLIP tokenizer: from ``folder`` (vocab.json, merges.txt) or hrv_diffusion.core.tokenizer."""
    from transformers import CLIPTokenizer

    if folder:
        tokenizer = CLIPTokenizer(str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"),
                                  pad_token="<|endoftext|>", model_max_length=77)
    else:
        from hrv_diffusion.core.tokenizer import clip_tokenizer

        try:
            tokenizer = clip_tokenizer()
        except RuntimeError as error:
            raise SystemExit(f"{error}\nWithout open_clip: run `python3 toy/train.py --write_tokenizer DIR` where it "
                             f"is installed, and pass --tokenizer DIR here.") from None
    ids = tokenizer("a photo of a cat").input_ids
    if ids != [49406, 320, 1125, 539, 320, 2368, 49407]:
        raise SystemExit(f"the tokenizer does not give the CLIP ids ({ids}); check --tokenizer")
    return tokenizer


class Log:
    """Appends one JSON object per line to OUT/train_log.jsonl and echoes it."""

    def __init__(self, path: Path, clock):
        self.path, self.clock = path, clock

    def __call__(self, **record):
        record = {"seconds": round(self.clock(), 2), **record}
        line = json.dumps(record)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        print(line, flush=True)


def save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def state_digest(module) -> str:
    """sha256 of a module's tensors: the checkpoint keeps this, not the 9.6 MB frozen text encoder."""
    import hashlib

    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def to_unit(images_u8: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [-1, 1]."""
    return images_u8.permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def encode_text(text_encoder, ids: torch.Tensor, device, dtype, chunk: int = 4096) -> torch.Tensor:
    """(N, 77) token ids -> (N, 77, D) last hidden states of the frozen encoder, in ``dtype`` on ``device``."""
    out = [text_encoder(ids[i:i + chunk].to(device))[0].to(dtype) for i in range(0, len(ids), chunk)]
    return torch.cat(out)


@torch.no_grad()
def encode_latents(vae, images: torch.Tensor, device, chunk: int = 1024):
    """Posterior mean and std (N, 4, 16, 16) of every image, fp16 on CUDA (fp32 on CPU)."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    means, stds = [], []
    for i in range(0, len(images), chunk):
        with autocast(device):
            dist = vae.encode(to_unit(images[i:i + chunk])).latent_dist
        means.append(dist.mean.float().to(dtype))
        stds.append(dist.std.float().to(dtype))
    return torch.cat(means), torch.cat(stds)


def train_vae(s: Settings, vae, images, gen, state, log, elapsed, budget, ckpt) -> int:
    device = images.device
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    step = 0
    if state and state.get("opt_vae"):
        opt.load_state_dict(state["opt_vae"])
        step = state["vae_step"]
    vae.train()
    deadline = elapsed() + s.vae_fraction * budget  # the VAE's share, from now
    while step < s.vae_steps and elapsed() < deadline:
        idx = torch.randint(len(images), (s.vae_batch,), generator=gen, device=device)
        x = to_unit(images[idx])  # (B, 3, 32, 32)
        with autocast(device):
            dist = vae.encode(x).latent_dist
            z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen, device=device, dtype=dist.mean.dtype)
            rec = vae.decode(z).sample  # (B, 3, 32, 32)
        rec_loss = F.mse_loss(rec.float(), x)
        kl = dist.kl().float().mean() / z[0].numel()  # per latent element
        loss = rec_loss + s.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % s.log_every == 0 or step == 1:
            log(phase="vae", step=step, loss=round(loss.item(), 6), rec=round(rec_loss.item(), 6),
                kl=round(kl.item(), 4))
        if step % s.checkpoint_every == 0:
            ckpt(phase="vae", vae_step=step, opt_vae=opt.state_dict())
    vae.eval()
    ckpt(phase="unet", vae_step=step, opt_vae=None)  # the VAE is final: the next run starts the UNet
    log(event="vae_done", step=step)
    return step


def train_unet(s: Settings, unet, ema, latents, text, empty, gen, state, log, elapsed, budget, ckpt) -> int:
    from hrv_diffusion.toy.model import toy_scheduler

    mean, std, scale = latents
    device = mean.device
    alphas_cumprod = toy_scheduler().alphas_cumprod.to(device)  # (1000,) SD v1.4's schedule
    opt = torch.optim.AdamW(unet.parameters(), lr=s.unet_lr, weight_decay=s.weight_decay)
    step = 0
    if state and state.get("opt_unet"):
        opt.load_state_dict(state["opt_unet"])
        step = state["unet_step"]
    model = torch.compile(unet) if s.compile else unet
    params, ema_params = list(unet.parameters()), list(ema.parameters())
    unet.train()
    window, window_start = [], time.perf_counter()
    while step < s.unet_steps and elapsed() < budget:
        for group in opt.param_groups:
            group["lr"] = s.unet_lr * min(1.0, (step + 1) / max(1, s.warmup_steps))
        b = s.unet_batch
        idx = torch.randint(len(mean), (b,), generator=gen, device=device)
        eps_z = torch.randn(mean[idx].shape, generator=gen, device=device)
        z = (mean[idx].float() + std[idx].float() * eps_z) * scale  # (B, 4, 16, 16)
        noise = torch.randn(z.shape, generator=gen, device=device)
        t = torch.randint(0, len(alphas_cumprod), (b,), generator=gen, device=device)
        a = alphas_cumprod[t].view(-1, 1, 1, 1)
        noisy = a.sqrt() * z + (1 - a).sqrt() * noise
        cond = text[idx].float()  # (B, 77, D)
        drop = torch.rand(b, generator=gen, device=device) < s.cfg_drop
        cond = torch.where(drop.view(-1, 1, 1), empty.float().expand_as(cond), cond)
        with autocast(device):
            pred = model(noisy, t, cond).sample
        loss = F.mse_loss(pred.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            decay = min(s.ema_decay, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        step += 1
        window.append(loss.detach())
        if step % s.log_every == 0 or step == 1:
            seconds = time.perf_counter() - window_start
            log(phase="unet", step=step, loss=round(torch.stack(window).mean().item(), 6),
                lr=round(opt.param_groups[0]["lr"], 7), images_per_s=round(len(window) * b / max(seconds, 1e-9)))
            window, window_start = [], time.perf_counter()
        if step % s.checkpoint_every == 0:
            ckpt(phase="unet", unet_step=step, opt_unet=opt.state_dict())
    unet.eval()
    if step % s.checkpoint_every:  # not saved just above
        ckpt(phase="unet", unet_step=step, opt_unet=opt.state_dict())
    log(event="unet_done", step=step)
    return step


def main(argv=None) -> int:
    s = parse(argv)
    from hrv_diffusion.toy.data import make_dataset
    from hrv_diffusion.toy.model import assemble_pipeline, build_toy_models, folder_bytes, save_toy_pipeline

    out = Path(s.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = Path(s.model_dir or out / "model")
    ckpt_path = out / "checkpoint.pt"
    state = None
    if s.resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        wrong = [k for k in MUST_MATCH if state["settings"][k] != getattr(s, k)]
        if wrong:
            raise SystemExit(f"{ckpt_path} was made with other {', '.join(wrong)}: "
                             + ", ".join(f"{k}={state['settings'][k]}" for k in wrong))
    start, before = time.perf_counter(), (state["elapsed_s"] if state else 0.0)

    def elapsed() -> float:
        return before + time.perf_counter() - start

    log = Log(out / "train_log.jsonl", elapsed)
    budget = s.time_budget_minutes * 60.0
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if s.device == "auto" else s.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(event="resume" if state else "start", settings=asdict(s), device=str(device), torch=torch.__version__,
        from_step={"vae": state["vae_step"], "unet": state["unet_step"]} if state else None)

    # 1. data (before CUDA is touched, so that forked render workers are safe)
    images, captions, _ = make_dataset(s.n_images, s.seed, "train", s.two_object_fraction,
                                       workers=s.workers or os.cpu_count() or 1)
    tokenizer = load_tokenizer(s.tokenizer)
    ids = tokenizer(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    empty_ids = tokenizer([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    images = torch.from_numpy(images).to(device)  # (N, 32, 32, 3) uint8
    log(event="data", images=len(images), captions_max_tokens=int((ids != tokenizer.pad_token_id).sum(1).max()) + 1)

    vae, unet, text_encoder = build_toy_models(s.seed)  # the frozen text encoder is a function of the seed
    ema = copy.deepcopy(unet).requires_grad_(False)
    text_digest = state_digest(text_encoder)
    if state:
        if state["text_encoder_digest"] != text_digest:
            raise SystemExit("the text encoder rebuilt from the seed differs from the checkpoint's (another torch "
                             "random generator?): resume where the run started")
        vae.load_state_dict(state["vae"])
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
    vae.to(device)
    unet.to(device)
    ema.to(device)
    text_encoder.to(device)
    gen = torch.Generator(device=device).manual_seed(s.seed + 1)
    if state:
        gen.set_state(state["generator"])
    progress = {"phase": state["phase"] if state else "vae", "vae_step": state["vae_step"] if state else 0,
                "unet_step": state["unet_step"] if state else 0, "opt_vae": state.get("opt_vae") if state else None,
                "opt_unet": state.get("opt_unet") if state else None,
                "scaling_factor": state.get("scaling_factor") if state else None}

    def ckpt(**update):
        """Record progress and write OUT/checkpoint.pt (everything a resumed run needs)."""
        progress.update(update)
        save_checkpoint(ckpt_path, {**progress, "settings": asdict(s), "elapsed_s": elapsed(),
                                    "generator": gen.get_state(), "vae": vae.state_dict(), "unet": unet.state_dict(),
                                    "ema": ema.state_dict(), "text_encoder_digest": text_digest})
        log(event="checkpoint", phase=progress["phase"], vae_step=progress["vae_step"],
            unet_step=progress["unet_step"])

    try:
        # 2. VAE
        if progress["phase"] == "vae":
            train_vae(s, vae, images, gen, state, log, elapsed, budget, ckpt)
        vae.eval().requires_grad_(False)
        mean, std = encode_latents(vae, images, device)
        if progress["scaling_factor"] is None:
            sample = mean[:8192].float() + std[:8192].float() * torch.randn(mean[:8192].shape, generator=gen,
                                                                            device=device)
            progress["scaling_factor"] = float(1.0 / sample.std())
        scale = progress["scaling_factor"]
        vae.register_to_config(scaling_factor=scale)
        del images
        text_dtype = torch.float16 if device.type == "cuda" else torch.float32
        text = encode_text(text_encoder, ids, device, text_dtype)  # (N, 77, D)
        empty = encode_text(text_encoder, empty_ids, device, text_dtype)  # (1, 77, D)
        log(event="encoded", scaling_factor=round(scale, 5), latent_std=round(float(mean.float().std()), 4),
            posterior_std=round(float(std.float().mean()), 5))
        # 3. UNet
        train_unet(s, unet, ema, (mean, std, scale), text, empty, gen, state, log, elapsed, budget, ckpt)
    except KeyboardInterrupt:
        ckpt()
        log(event="interrupted", vae_step=progress["vae_step"], unet_step=progress["unet_step"])
        return 130

    # 4. save the EMA weights as a diffusers folder, then check prompt following on held-out pairs
    pipe = assemble_pipeline(vae.eval(), ema.eval(), text_encoder, tokenizer)
    save_toy_pipeline(pipe, model_dir)
    log(event="saved", model_dir=str(model_dir), bytes=folder_bytes(model_dir))
    if s.eval_images:
        from hrv_diffusion.toy.evaluate import evaluate_pipeline

        results = {}
        for split in ("heldout", "train"):
            r = evaluate_pipeline(pipe, n=s.eval_images, seed=s.seed + 1000, split=split, steps=s.eval_steps,
                                  guidance=s.eval_guidance, batch_size=256)
            results[split] = {k: v for k, v in r.items() if k != "counts"}
            log(event="eval", split=split, accuracy=r["accuracy"], eval_seconds=r["seconds"])
        (out / "eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
