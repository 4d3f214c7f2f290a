"""head_perturbation_analysis.py: generate ordered-weakening images (MoRHF vs LeRHF) for one concept.

Keeps the reference's flags. For each prompt and each (order, k, seed) it weakens the first k heads of the concept
in HRV order (top = most relevant first, bottom = least relevant first) by the reweighting factor and saves
``{output_path}/exp_{X}/{prompt}/{order}/{order}_{k}/{seed}.png``. Existing images are skipped (resumable);
``--subset_running`` or ``torchrun`` split the prompts over processes.

Every prompt folder has a manifest.json (model, concept, HRV fingerprint, head source, dtype, factor, window,
steps, ...). A run continues a folder only when its settings match the manifest; otherwise it stops before loading
the model and names the difference (``--overwrite`` regenerates such folders). ``--concept`` defaults to the
experiment's own concept; another concept on an experiment's prompts needs ``--allow_other_concept``.
"""
from __future__ import annotations

import argparse
import os
import sys
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
    g.add_argument("--prompt_type", default=None, help="prompt-list name in the HRV file names (default: merged if "
                   "its HRV is in --final_result, else the one prompt list whose HRV is there)")
    g.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[10, 20, 30], help="one image per seed")
    g.add_argument("--concept", nargs="+", default=None,
                   help="the concept whose heads are weakened (default: the experiment's concept, e.g. Image Style "
                        "for experiment 5)")
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
    g.add_argument("--hrv", default=None,
                   help="'paper' (the paper's HRVs, from the cache hrv-published fills; the toy's ship with the "
                        "package; with --head_roles, the paper's head_roles CSVs) or a category_vectors .npy built "
                        "here (default: the published name in --final_result)")
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
    g.add_argument("--overwrite", action="store_true",
                   help="regenerate prompt folders made with other settings (their images are deleted first)")
    g.add_argument("--allow_other_concept", action="store_true",
                   help="allow a --concept other than the experiment's own (e.g. Color heads on exp 5's style prompts)")
    g.add_argument("--model_version", default=None,
                   help="the model's name in HRV file names (sd_v1_4, sd_xl_base_1_0, ...); default: recognized "
                        "from --model_card")
    return p


def _concept(args, exp) -> str:
    """--concept, else the experiment's; a concept that contradicts the experiment needs --allow_other_concept."""
    from hrv_diffusion.apps.weakening_experiments import experiment
    from hrv_diffusion.errors import UserError

    if args.concept:
        concept = " ".join(args.concept)
        if exp is not None and concept != exp.concept and not args.allow_other_concept:
            raise UserError(f"experiment {exp.number} weakens {exp.concept!r} heads, not {concept!r}: drop --concept "
                            f"(it defaults to the experiment's), or pass --allow_other_concept to weaken {concept!r} "
                            "heads on these prompts")
        return concept
    if exp is not None:
        return exp.concept
    try:
        concept = experiment(args.experiment_num).concept
    except ValueError:
        raise UserError(f"--experiment_num {args.experiment_num!r} names no experiment: pass --concept") from None
    print(f"note: weakening {concept} heads, the concept of --experiment_num {args.experiment_num} (pass --concept "
          "to choose another)", file=sys.stderr)
    return concept


def find_prompt_type(final: Path, names_for, requested: str | None, head_roles: bool) -> str:
    """The prompt-list name of the HRV files in ``final``: ``requested`` if given, else ``merged`` if present, else
    the only one present. ``names_for(prompt_type)`` gives the ``OutputNames``."""
    import re

    from hrv_diffusion.errors import UserError

    probe = names_for("PROMPT")
    wanted = probe.head_roles("top", 1) if head_roles else probe.category_vectors()
    if head_roles:  # any k
        wanted = wanted.replace("_top_1_", "_top_K_")
    pattern = re.compile(re.escape(wanted).replace("PROMPT", "(.+)").replace("_top_K_", "_top_[0-9]+_") + "$")
    found = sorted({m.group(1) for p in (final.iterdir() if final.is_dir() else ()) if (m := pattern.match(p.name))})
    what = "head_roles" if head_roles else "HRV"
    if requested is not None:
        return requested
    if "merged" in found:
        return "merged"
    if len(found) == 1:
        print(f"using the {what} of prompt list {found[0]!r} in {final} (no 'merged' one)")
        return found[0]
    looked = names_for("merged").head_roles("top", 1) if head_roles else names_for("merged").category_vectors()
    if not found:
        raise UserError(f"no {what} file {final / looked}, nor one of another prompt list: make it with "
                        "extract_head_relevance_vectors.py, or pass --final_result, --prompt_type or --hrv")
    raise UserError(f"{final} has {what} files of prompt lists {', '.join(found)} but none of 'merged': choose one "
                    "with --prompt_type")


def run(args) -> int:
    import numpy as np
    from tqdm.auto import tqdm

    from hrv_diffusion import __version__
    from hrv_diffusion.cli.common import check_output_dir, rerun_command, sigterm_as_interrupt
    from hrv_diffusion.errors import UserError
    from hrv_diffusion.hrv.concepts import description_name, read_concept_set, resolve_description
    from hrv_diffusion.hrv.construction import rank_indices, subset_indices
    from hrv_diffusion.apps.weakening_experiments import build_prompts, clip_text_for, experiment
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.device import resolve_device, resolve_dtype
    from hrv_diffusion.core.models import load_pipeline, model_version
    from hrv_diffusion.apps.output_paths import safe_folder_name
    from hrv_diffusion.hrv.prompts import read_prompt_file
    from hrv_diffusion.hrv.files import OutputNames, default_k_list
    from hrv_diffusion.apps.weakening import (HeadRolesHeads, HrvHeads, clear_prompt_folder, file_fingerprint,
                                              generate_weakened, manifest_conflict, plan_jobs, prompt_dir,
                                              write_manifest)

    exp = None
    if args.prompt:
        prompts = [args.prompt]
    elif args.prompt_file:
        prompts = read_prompt_file(Path(args.prompt_file))
    else:
        exp = experiment(int(args.experiment_num))
        prompts = build_prompts(exp)
    concept = _concept(args, exp)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    indices = subset_indices(len(prompts), args.numerator, args.denominator) if args.subset_running else list(range(len(prompts)))
    indices = rank_indices(indices, rank, world)
    check_output_dir(args.output_path, "--output_path")
    out_dirs = {i: prompt_dir(args.output_path, args.experiment_num, prompts[i]) for i in indices}
    for folder in out_dirs.values():
        check_output_dir(folder, "--output_path")

    concepts = read_concept_set(Path(args.description_file_path) if args.description_file_path
                                else resolve_description(args.description))
    if concept not in concepts.names:
        raise ValueError(f"unknown concept {concept!r}; the concept set has: {', '.join(concepts.names)}")
    row = concepts.names.index(concept)
    mv = args.model_version or model_version(args.model_card)
    final = Path(args.final_result)

    def names_for(prompt_type):
        return OutputNames(last_epoch=args.epochs, negative_prompt=False, prompt=prompt_type,
                           description=description_name(args.description), model_version=mv)

    paper_hrv = None
    if args.hrv == "paper":  # the paper's (or the toy's shipped) files: checked here, before the model loads
        from hrv_diffusion.hrv.paper import paper_files
        from hrv_diffusion.hrv.vectors import load_hrv

        if args.head_roles:
            final = paper_files(mv)[0].parent
        else:
            paper_hrv = load_hrv("paper", mv, concepts.names)
    if paper_hrv is not None:
        hrv_path = paper_files(mv)[0]
        head_source, fingerprint = "hrv", file_fingerprint([hrv_path])
    elif args.head_roles:
        names = names_for(find_prompt_type(final, names_for, args.prompt_type, head_roles=True))
        role_files = sorted(final.glob(f"head_roles_ba_epoch_1_to_{names.last_epoch}_*_{names._tail}.csv"))
        head_source, hrv_path, fingerprint = "head_roles", None, file_fingerprint(role_files)
    else:
        if args.hrv:
            hrv_path = Path(args.hrv)
        else:
            hrv_path = final / names_for(find_prompt_type(final, names_for, args.prompt_type, False)).category_vectors()
        if not hrv_path.is_file():
            raise FileNotFoundError(f"no HRV file {hrv_path}: make it with extract_head_relevance_vectors.py or pass --hrv")
        head_source, fingerprint = "hrv", file_fingerprint([hrv_path])

    device = resolve_device(args.device, args.gpu_num)
    dtype = resolve_dtype(args.dtype, device)
    words = {}
    for i in indices:
        word = None
        if args.weaken == "concept_word":
            word = args.concept_word or (clip_text_for(safe_folder_name(prompts[i]), exp) if exp else None)
            if word is None:
                raise ValueError("--weaken concept_word needs --concept_word for a single prompt or prompt file")
        words[i] = word
    settings = {"model_version": mv, "model_card": args.model_card, "concept": concept, "head_source": head_source,
                "hrv_file": str(hrv_path) if hrv_path else str(final), "hrv_fingerprint": fingerprint,
                "dtype": dtype, "reweighting_factor": args.reweighting_factor,
                "reweighting_steps": list(args.reweighting_steps), "n_inference_steps": args.n_inference_steps,
                "guidance_scale": args.guidance_scale, "weaken": args.weaken, "experiment_num": args.experiment_num,
                "version": __version__}
    manifests = {i: dict(settings, prompt=prompts[i], concept_word=words[i]) for i in indices}
    if not args.overwrite:
        conflicts = [c for i in indices if (c := manifest_conflict(out_dirs[i], manifests[i]))]
        if conflicts:
            more = f" (and {len(conflicts) - 1} more prompt folder(s))" if len(conflicts) > 1 else ""
            raise UserError(f"{conflicts[0]}{more}: pass --overwrite to regenerate, or --output_path for a new folder")

    pipe = load_pipeline(args.model_card, dtype=dtype, device=device)
    if args.compile:
        from hrv_diffusion.core.speed import compile_unet_regions

        compile_unet_regions(pipe.unet)
    layout = head_layout(pipe.unet)
    if paper_hrv is not None:
        ranked = HrvHeads(paper_hrv.for_layout(layout).row(concept))
    elif args.head_roles:
        ranked = HeadRolesHeads(lambda order, k: final / names.head_roles(order, k), concept, layout)
    else:
        hrv = np.load(hrv_path)
        if hrv.shape != (concepts.num_concepts, layout.num_heads):
            raise ValueError(f"{hrv_path.name} has shape {hrv.shape}; this model and concept set need "
                             f"({concepts.num_concepts}, {layout.num_heads}): use the HRV of the same model and concepts")
        ranked = HrvHeads(hrv[row])
    k_list = args.heads_to_be_perturbed or [0] + default_k_list(layout.num_heads)
    if max(k_list) > layout.num_heads:
        raise ValueError(f"k={max(k_list)} is more than the model's {layout.num_heads} CA heads")
    jobs = plan_jobs(k_list, args.seeds)
    root = Path(args.output_path) / f"exp_{args.experiment_num}"
    bar = tqdm(total=len(indices) * len(jobs), unit="image", disable=args.quiet, desc=f"weakening {concept}")
    stats = {"images": 0, "files": 0, "present": 0}
    try:
        with sigterm_as_interrupt():
            for i in indices:
                out_dir = out_dirs[i]
                if args.overwrite:
                    clear_prompt_folder(out_dir)
                write_manifest(out_dir, manifests[i])
                made = generate_weakened(pipe, prompts[i], ranked, jobs, out_dir, factor=args.reweighting_factor,
                                  window=tuple(args.reweighting_steps), concept_word=words[i],
                                  num_inference_steps=args.n_inference_steps, guidance_scale=args.guidance_scale,
                                  batch_size=args.batch_size, progress=bar, stats=stats)
                bar.update(len(jobs) - made)  # jobs whose images already existed
    except KeyboardInterrupt:
        bar.close()
        again = rerun_command(getattr(args, "_program", "head_perturbation_analysis.py"), getattr(args, "_argv", None))
        print(f"interrupted: the finished images are saved under {root}; continue with the same command (it skips "
              f"them): {again}", file=sys.stderr)
        return 130
    bar.close()
    print(f"{stats['images']} images generated ({stats['files']} files written), {stats['present']} already "
          f"present, under {root}")
    return 0


def main(argv=None, default_card: str = SD_CARD, program: str = "head_perturbation_analysis.py",
         prog: str | None = None) -> int:
    from hrv_diffusion.cli.common import program_name, run_cli

    args = build_parser(default_card, prog).parse_args(argv)
    args._argv = list(sys.argv[1:] if argv is None else argv)  # to print the command that continues after Ctrl-C
    args._program = program_name(argv, program)
    return run_cli(run, args)


def main_sdxl(argv=None) -> int:
    from hrv_diffusion.cli.common import sdxl_prog

    return main(argv, default_card=SDXL_CARD, program="head_perturbation_analysis_sdxl.py",
                prog=sdxl_prog("hrv-weakening-sdxl"))
