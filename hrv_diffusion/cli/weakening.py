"""head_perturbation_analysis.py: generate ordered-weakening images (MoRHF vs LeRHF) for one concept.

Keeps the reference's flags. For each prompt and each (order, k, seed) it weakens the first k heads of the concept
in HRV order (top = most relevant first, bottom = least relevant first) by the reweighting factor and saves
``{output_path}/exp_{X}/{prompt}/{order}/{order}_{k}/{seed}.png``. Existing images are skipped (resumable);
``--subset_running`` or ``torchrun`` split the prompts over processes.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from hrv_diffusion.cli.relevance import SD_CARD, SDXL_CARD
from hrv_diffusion.cli.common import (ArgumentParser, HelpFormatter, finite_float, nonempty_file, nonnegative_float,
                                      nonnegative_int, positive_int, step_fraction)


def build_parser(default_card: str = SD_CARD, prog: str | None = None) -> argparse.ArgumentParser:
    description = __doc__
    if default_card == SDXL_CARD:  # the SDXL script names itself
        description = "head_perturbation_analysis_sdxl.py" + __doc__.split(":", 1)[1].replace(
            "for one concept.", "for one concept, on SDXL (stabilityai/stable-diffusion-xl-base-1.0 by default).", 1)
    p = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter)
    g = p.add_argument_group("published flags")
    g.add_argument("--gpu_num", type=nonnegative_int, default=0, help="CUDA device index (under torchrun: LOCAL_RANK)")
    g.add_argument("--prompt", default=None, help="one prompt (default: all prompts of --experiment_num)")
    g.add_argument("--model_card", default=default_card,
                   help="hub id, local diffusers folder, or a built-in model (toy, tiny-sd, tiny-sdxl)")
    g.add_argument("--description_file_path", default=None, help="concept set giving the HRV row names "
                   "(default: --description resolved like the other scripts)")
    g.add_argument("--description", default="340_final_text_descriptions",
                   help="concept set: a name (descriptions/NAME.txt) or a path")
    g.add_argument("--prompt_type", default="merged", help="prompt-list name in the HRV file names")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[10, 20, 30], help="one image per seed")
    g.add_argument("--concept", nargs="+", default=["Color"], help="the concept whose heads are weakened")
    g.add_argument("--reweighting_factor", type=finite_float, default=-2.0,
                   help="the weakened heads' attention to the prompt tokens is multiplied by this")
    g.add_argument("--reweighting_steps", type=step_fraction, nargs=2, default=[0.0, 1.01],
                   help="window over evaluations [int(s*T), int(e*T))")
    g.add_argument("--heads_to_be_perturbed", type=nonnegative_int, nargs="+", default=None,
                   help="k list (default: 0 1 11 ... 121 128 for 128 heads; 0 11 111 ... 1211 1300 for 1300)")
    g.add_argument("--output_path", default="./ordered_weakening_analysis/hp_outputs", help="root of the images")
    g.add_argument("--n_inference_steps", type=positive_int, default=50, help="PNDM steps (50 = 51 UNet evaluations)")
    g.add_argument("--guidance_scale", type=nonnegative_float, default=7.5, help="classifier-free guidance scale")
    g.add_argument("--epochs", type=positive_int, default=1, help="used in the HRV file names")
    g.add_argument("--experiment_num", default="1", help="1-9, 91-95, 991 (see construct_prompts.py --list)")
    g = p.add_argument_group("added")
    g.add_argument("--prompt_file", type=nonempty_file, default=None,
                   help="prompts, one per line (instead of the experiment's)")
    g.add_argument("--final_result", default="final_result", help="folder of the HRV files")
    g.add_argument("--hrv", default=None, help="category_vectors .npy (default: the published name in --final_result)")
    g.add_argument("--head_roles", action="store_true",
                   help="take head order from the head_roles CSVs in --final_result (the paper's exact tie order)")
    g.add_argument("--weaken", choices=["prompt_tokens", "concept_word"], default="prompt_tokens",
                   help="prompt_tokens = every word token of the prompt (the reference); concept_word = only the "
                        "concept item's tokens")
    g.add_argument("--concept_word", default=None, help="the word for --weaken concept_word (default: the experiment's item)")
    g.add_argument("--batch_size", type=positive_int, default=16,
                   help="at most this many images per pipeline call; a prompt's distinct images (84 of the "
                   "default 90) are split into even batches. 84 = one call per prompt: 39 GiB on SD v1.4, fastest on "
                   "an 80 GB card")
    g.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"], default="auto",
                   help="auto = float16 on CUDA, float32 on CPU")
    g.add_argument("--device", default=None, help="torch device (default: cuda:GPU_NUM if available, else cpu)")
    g.add_argument("--subset_running", action="store_true",
                   help="run only part NUMERATOR of DENOMINATOR of the prompts (to split a run over processes)")
    g.add_argument("--numerator", type=positive_int, default=1,
                   help="with --subset_running: which part to run, 1..DENOMINATOR")
    g.add_argument("--denominator", type=positive_int, default=1,
                   help="with --subset_running: into how many equal, contiguous parts the prompts are split")
    g.add_argument("--compile", action="store_true", help="compile the UNet regions but cross-attention: about 10%% faster after a one-time "
                   "compile of 1-2 minutes (long GPU runs)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from hrv_diffusion.hrv.concepts import description_name, read_concept_set, resolve_description
    from hrv_diffusion.hrv.construction import rank_indices, subset_indices
    from hrv_diffusion.apps.weakening_experiments import build_prompts, clip_text_for, experiment
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.models import load_pipeline, model_version
    from hrv_diffusion.apps.output_paths import safe_folder_name
    from hrv_diffusion.hrv.prompts import read_prompt_file
    from hrv_diffusion.hrv.files import OutputNames, default_k_list
    from hrv_diffusion.apps.weakening import HeadRolesHeads, HrvHeads, generate_weakened, plan_jobs, prompt_dir

    concept = " ".join(args.concept)
    exp = None
    if args.prompt:
        prompts = [args.prompt]
    elif args.prompt_file:
        prompts = read_prompt_file(Path(args.prompt_file))
    else:
        exp = experiment(int(args.experiment_num))
        prompts = build_prompts(exp)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    indices = subset_indices(len(prompts), args.numerator, args.denominator) if args.subset_running else list(range(len(prompts)))
    indices = rank_indices(indices, rank, world)

    concepts = read_concept_set(Path(args.description_file_path) if args.description_file_path
                                else resolve_description(args.description))
    if concept not in concepts.names:
        raise ValueError(f"unknown concept {concept!r}; the concept set has: {', '.join(concepts.names)}")
    row = concepts.names.index(concept)
    mv = model_version(args.model_card)
    names = OutputNames(last_epoch=args.epochs, negative_prompt=False, prompt=args.prompt_type,
                        description=description_name(args.description), model_version=mv)
    final = Path(args.final_result)

    device = resolve_device(args.device, args.gpu_num)
    dtype = resolve_dtype(args.dtype, device)
    pipe = load_pipeline(args.model_card, dtype=dtype, device=device)
    if args.compile:
        from hrv_diffusion.core.speed import compile_unet_regions

        compile_unet_regions(pipe.unet)
    layout = head_layout(pipe.unet)
    if args.head_roles:
        ranked = HeadRolesHeads(lambda order, k: final / names.head_roles(order, k), concept, layout)
    else:
        hrv_path = Path(args.hrv) if args.hrv else final / names.category_vectors()
        if not hrv_path.exists():
            raise FileNotFoundError(f"no HRV file {hrv_path}: make it with extract_head_relevance_vectors.py or pass --hrv")
        hrv = np.load(hrv_path)
        if hrv.shape != (concepts.num_concepts, layout.num_heads):
            raise ValueError(f"{hrv_path.name} has shape {hrv.shape}; this model and concept set need "
                             f"({concepts.num_concepts}, {layout.num_heads}): use the HRV of the same model and concepts")
        ranked = HrvHeads(hrv[row])
    k_list = args.heads_to_be_perturbed or [0] + default_k_list(layout.num_heads)
    if max(k_list) > layout.num_heads:
        raise ValueError(f"k={max(k_list)} is more than the model's {layout.num_heads} CA heads")
    jobs = plan_jobs(k_list, args.seeds)
    bar = tqdm(total=len(indices) * len(jobs), unit="image", disable=args.quiet, desc=f"weakening {concept}")
    made = 0
    for i in indices:
        prompt = prompts[i]
        word = None
        if args.weaken == "concept_word":
            word = args.concept_word or (clip_text_for(safe_folder_name(prompt), exp) if exp else None)
            if word is None:
                raise ValueError("--weaken concept_word needs --concept_word for a single prompt or prompt file")
        out_dir = prompt_dir(args.output_path, args.experiment_num, prompt)
        n = generate_weakened(pipe, prompt, ranked, jobs, out_dir, factor=args.reweighting_factor,
                              window=tuple(args.reweighting_steps), concept_word=word,
                              num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale,
                              batch_size=args.batch_size, progress=bar)
        bar.update(len(jobs) - n)  # images that already existed
        made += n
    bar.close()
    print(f"{made} images generated under {Path(args.output_path) / f'exp_{args.experiment_num}'}")
    return 0


def main(argv=None, default_card: str = SD_CARD, prog: str | None = None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser(default_card, prog).parse_args(argv))


def main_sdxl(argv=None) -> int:
    from hrv_diffusion.cli.common import sdxl_prog

    return main(argv, default_card=SDXL_CARD, prog=sdxl_prog("hrv-weakening-sdxl"))
