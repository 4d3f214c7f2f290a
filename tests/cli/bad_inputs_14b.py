"""Bad inputs of issue 14 item 3 (numbers, empty files, negative k, ...): data for docs/bad-inputs.md and for
``test_bad_inputs.py``, which runs every case.

Each case: ``command`` (argv; the first word is a console script of pyproject.toml, or ``python`` and a script
path), ``input`` (what is wrong), ``expect`` (a substring of the message), ``exit`` (the exit status). Optional:
``setup`` (a function of ``SETUPS`` that prepares the current folder first). Every case here fails before a model
is loaded, with exactly one line on stderr.
"""
from __future__ import annotations

from pathlib import Path

POS = "must be a positive integer, got"
NONNEG = "must be an integer >= 0, got"
PROMPT = ["--prompt", "a cat and a dog"]


def case(command, what, expect, setup=None):
    row = {"command": command, "input": what, "expect": expect, "exit": 2}
    if setup:
        row["setup"] = setup
    return row


CASES = [
    # HRV construction: head_relevance_calculation.py / hrv-relevance
    case(["hrv-relevance", "--max_prompts", "0"], "--max_prompts 0 (ran all 1000 prompts)",
         f"argument --max_prompts: {POS} 0"),
    case(["hrv-relevance", "--max_prompts", "-1"], "--max_prompts -1 (ran 999 prompts)",
         f"argument --max_prompts: {POS} -1"),
    case(["hrv-relevance", "--batch_size", "-3"], "--batch_size -3 (wrote an empty shard, exit 0)",
         f"argument --batch_size: {POS} -3"),
    case(["hrv-relevance", "--batch_size", "0"], "--batch_size 0 (a traceback)", f"argument --batch_size: {POS} 0"),
    case(["hrv-relevance", "--batch_size", "four"], "--batch_size that is not a number",
         "argument --batch_size: must be a positive integer, got 'four'"),
    case(["hrv-relevance", "--num_inference_steps", "0"], "--num_inference_steps 0 (a traceback)",
         f"argument --num_inference_steps: {POS} 0"),
    case(["hrv-relevance", "--epochs", "0"], "--epochs 0 (did nothing, exit 0)", f"argument --epochs: {POS} 0"),
    case(["hrv-relevance", "--checkpoint_every", "0"], "--checkpoint_every 0",
         f"argument --checkpoint_every: {POS} 0"),
    case(["hrv-relevance", "--guidance_scale", "-1"], "a negative --guidance_scale",
         "argument --guidance_scale: must be a number >= 0, got -1"),
    case(["hrv-relevance", "--guidance_scale", "nan"], "--guidance_scale nan",
         "argument --guidance_scale: must be a number >= 0, got nan"),
    case(["hrv-relevance", "--seed", "-5"], "a negative --seed", f"argument --seed: {NONNEG} -5"),
    case(["hrv-relevance", "--gpu_num", "-1"], "a negative --gpu_num", f"argument --gpu_num: {NONNEG} -1"),
    case(["hrv-relevance", "--subset_running", "--numerator", "0"], "--numerator 0",
         f"argument --numerator: {POS} 0"),
    case(["hrv-relevance", "--subset_running", "--denominator", "0"], "--denominator 0",
         f"argument --denominator: {POS} 0"),
    case(["hrv-relevance", "--num_concepts", "0"], "--num_concepts 0", f"argument --num_concepts: {POS} 0"),
    case(["hrv-relevance", "--prompt", "empty.txt"], "an empty prompt file (\"succeeded\")",
         "--prompt empty.txt: the prompt list is empty", setup="empty_prompt_file"),
    case(["hrv-relevance", "--prompt", "blank.txt"], "a prompt file of blank lines",
         "--prompt blank.txt: the prompt list is empty", setup="empty_prompt_file"),
    case(["hrv-relevance-sdxl", "--batch_size", "0"], "SDXL: --batch_size 0",
         "(see hrv-relevance-sdxl --help)"),
    case(["python", "head_relevance_calculation.py", "--max_prompts", "0"], "the script: --max_prompts 0",
         f"argument --max_prompts: {POS} 0"),
    # text embeddings, extraction, the demo
    case(["hrv-text-embeddings", "--batch_size", "0"], "text embeddings: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["hrv-text-embeddings", "--num_words_per_concept", "-2"], "text embeddings: --num_words_per_concept -2",
         f"argument --num_words_per_concept: {POS} -2"),
    case(["hrv-extract", "--epochs", "0"], "extraction: --epochs 0", f"argument --epochs: {POS} 0"),
    case(["hrv-demo", "--prompts", "0"], "demo: --prompts 0", f"argument --prompts: {POS} 0"),
    case(["hrv-demo", "--batch_size", "-1"], "demo: --batch_size -1", f"argument --batch_size: {POS} -1"),
    case(["hrv-demo", "--workers", "0"], "demo: --workers 0", f"argument --workers: {POS} 0"),
    # ordered weakening
    case(["hrv-weakening", "--heads_to_be_perturbed", "0", "11", "-5"], "a negative k (dropped silently)",
         f"argument --heads_to_be_perturbed: {NONNEG} -5"),
    case(["hrv-weakening", "--batch_size", "0"], "weakening: --batch_size 0", f"argument --batch_size: {POS} 0"),
    case(["hrv-weakening", "--n_inference_steps", "0"], "weakening: --n_inference_steps 0",
         f"argument --n_inference_steps: {POS} 0"),
    case(["hrv-weakening", "--reweighting_steps", "0", "2"], "a step window beyond the steps",
         "argument --reweighting_steps: must be a fraction of the steps between 0 and 1.01, got 2"),
    case(["hrv-weakening", "--reweighting_factor", "inf"], "--reweighting_factor inf",
         "argument --reweighting_factor: must be a finite number, got inf"),
    case(["hrv-weakening", "--seeds", "10", "-20"], "a negative seed", f"argument --seeds: {NONNEG} -20"),
    case(["hrv-weakening", "--epochs", "0"], "weakening: --epochs 0", f"argument --epochs: {POS} 0"),
    case(["hrv-weakening", "--prompt_file", "empty.txt"], "an empty --prompt_file",
         "argument --prompt_file: empty.txt is empty: give a file with one prompt per line",
         setup="empty_prompt_file"),
    case(["hrv-weakening", "--prompt_file", "missing.txt"], "a --prompt_file that does not exist",
         "argument --prompt_file: no such file: missing.txt"),
    case(["hrv-weakening-sdxl", "--guidance_scale", "-2"], "SDXL weakening: a negative --guidance_scale",
         "(see hrv-weakening-sdxl --help)"),
    case(["python", "ordered_weakening_analysis/head_perturbation_analysis.py", "--heads_to_be_perturbed", "-3"],
         "the script: a negative k", f"argument --heads_to_be_perturbed: {NONNEG} -3"),
    case(["hrv-weakening-scores", "--experiment_num", "0"], "scores: --experiment_num 0",
         f"argument --experiment_num: {POS} 0"),
    case(["hrv-weakening-scores", "--experiment_num", "1", "--heads_to_be_perturbed", "-1"],
         "scores: a negative k", f"argument --heads_to_be_perturbed: {NONNEG} -1"),
    case(["hrv-weakening-scores", "--experiment_num", "1", "--batch_size", "0"], "scores: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["hrv-weakening-prompts", "--experiment_num", "-1"], "prompts: --experiment_num -1",
         f"argument --experiment_num: {POS} -1"),
    case(["hrv-weakening-plots", "--experiment_num", "1", "--drop_k", "-1"], "plots: a negative k to drop",
         f"argument --drop_k: {NONNEG} -1"),
    case(["hrv-weakening-plots", "--experiment_num", "1", "--grid_prompts", "0"], "plots: --grid_prompts 0",
         f"argument --grid_prompts: {POS} 0"),
    # P2P-HRV (applications/p2p_hrv.py, hrv-p2p) and its benchmark
    case(["hrv-p2p", "--cross_replace_steps", "1.5"], "P2P: --cross_replace_steps above 1",
         "argument --cross_replace_steps: must be a number between 0 and 1, got 1.5"),
    case(["hrv-p2p", "--self_replace_steps", "-0.1"], "P2P: a negative --self_replace_steps",
         "argument --self_replace_steps: must be a number between 0 and 1, got -0.1"),
    case(["hrv-p2p", "--n_inference_steps", "0"], "P2P: --n_inference_steps 0",
         f"argument --n_inference_steps: {POS} 0"),
    case(["hrv-p2p", "--batch_size", "0"], "P2P: --batch_size 0", f"argument --batch_size: {POS} 0"),
    case(["hrv-p2p", "--blend_threshold", "2"], "P2P: --blend_threshold 2",
         "argument --blend_threshold: must be a number between 0 and 1, got 2"),
    case(["hrv-p2p", "--seeds", "-1"], "P2P: a negative seed", f"argument --seeds: {NONNEG} -1"),
    case(["hrv-p2p", "--token_restoration_start_step", "-1"], "P2P: a negative start step",
         f"argument --token_restoration_start_step: {NONNEG} -1"),
    case(["python", "applications/p2p_hrv.py", "--original_p2p_cross_replace_steps", "3"],
         "the script: a P2P window above 1",
         "argument --original_p2p_cross_replace_steps: must be a number between 0 and 1, got 3"),
    case(["hrv-p2p-benchmark", "--max_pairs", "0"], "P2P benchmark: --max_pairs 0", f"argument --max_pairs: {POS} 0"),
    case(["hrv-p2p-benchmark", "--seeds", "x"], "P2P benchmark: a seed that is not a number",
         "argument --seeds: must be an integer >= 0, got 'x'"),
    case(["hrv-p2p-scores", "--batch_size", "0"], "P2P scores: --batch_size 0", f"argument --batch_size: {POS} 0"),
    # Attend-and-Excite (applications/attend_and_excite_hrv.py, hrv-attend-excite) and the multi-object benchmark
    case(["hrv-attend-excite"], "A&E: no --prompt", "the following arguments are required: --prompt"),
    case(["hrv-attend-excite", *PROMPT, "--n_inference_steps", "0"], "A&E: --n_inference_steps 0",
         f"argument --n_inference_steps: {POS} 0"),
    case(["hrv-attend-excite", *PROMPT, "--kernel_size", "0"], "A&E: --kernel_size 0",
         f"argument --kernel_size: {POS} 0"),
    case(["hrv-attend-excite", *PROMPT, "--sigma", "0"], "A&E: --sigma 0",
         "argument --sigma: must be a positive number, got 0"),
    case(["hrv-attend-excite", *PROMPT, "--token_indices", "2", "-1"], "A&E: a negative token index",
         f"argument --token_indices: {NONNEG} -1"),
    case(["hrv-attend-excite", *PROMPT, "--max_iter_to_alter", "-2"], "A&E: --max_iter_to_alter -2",
         f"argument --max_iter_to_alter: {NONNEG} -2"),
    case(["hrv-attend-excite", *PROMPT, "--batch_size", "0"], "A&E: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["hrv-attend-excite", *PROMPT, "--height", "-512"], "A&E: a negative --height",
         f"argument --height: {POS} -512"),
    case(["python", "applications/attend_and_excite_hrv.py", *PROMPT, "--scale_factor", "-20"],
         "the script: a negative --scale_factor", "argument --scale_factor: must be a number >= 0, got -20"),
    case(["hrv-multi-object", "--num_seeds", "0"], "multi-object: --num_seeds 0", f"argument --num_seeds: {POS} 0"),
    case(["hrv-multi-object", "--max_prompts", "0"], "multi-object: --max_prompts 0",
         f"argument --max_prompts: {POS} 0"),
    case(["hrv-multi-object", "--prompt_set", "empty.txt"], "multi-object: an empty prompt file",
         "empty.txt has no prompt", setup="empty_prompt_file"),
    case(["hrv-multi-object-scores", "--seeds", "-1"], "multi-object scores: a negative seed",
         f"argument --seeds: {NONNEG} -1"),
    # the toy model's scripts
    case(["python", "toy/weakening_eval.py", "--k", "0", "-7"], "toy weakening: a negative k",
         f"argument --k: {NONNEG} -7"),
    case(["python", "toy/weakening_eval.py", "--n", "0"], "toy weakening: --n 0", f"argument --n: {POS} 0"),
    case(["python", "toy/p2p_eval.py", "--steps", "0"], "toy P2P: --steps 0", f"argument --steps: {POS} 0"),
    case(["python", "toy/attend_excite_eval.py", "--out", "x.json", "--batch_size", "0"], "toy A&E: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["python", "toy/sample_eval.py", "--model", "toy", "--two_object_fraction", "1.5"],
         "toy sampling: a fraction above 1",
         "argument --two_object_fraction: must be a number between 0 and 1, got 1.5"),
    case(["python", "toy/train.py", "--n_images", "0"], "toy training: --n_images 0",
         f"argument --n_images: {POS} 0"),
    case(["python", "toy/train.py", "--cfg_drop", "2"], "toy training: --cfg_drop 2",
         "argument --cfg_drop: must be a number between 0 and 1, got 2"),
    # SD-HRV (applications/reduce_misinterpretation.py, hrv-reduce-misinterpretation), its measure, HRV pictures
    case(["hrv-reduce-misinterpretation", "--batch_size", "0"], "SD-HRV: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["hrv-reduce-misinterpretation", "--n_inference_steps", "-5"], "SD-HRV: negative --n_inference_steps",
         f"argument --n_inference_steps: {POS} -5"),
    case(["hrv-reduce-misinterpretation", "--reweight_steps", "0", "2"], "SD-HRV: a window end above 1.01",
         "argument --reweight_steps: must be a fraction of the steps between 0 and 1.01, got 2"),
    case(["hrv-reduce-misinterpretation", "--seeds", "-1"], "SD-HRV: a negative seed",
         f"argument --seeds: {NONNEG} -1"),
    case(["hrv-intended-sense", "--batch_size", "0"], "intended-sense measure: --batch_size 0",
         f"argument --batch_size: {POS} 0"),
    case(["hrv-visualize", "--top_k", "0"], "HRV pictures: --top_k 0", f"argument --top_k: {POS} 0"),
    case(["hrv-published", "--timeout", "0"], "paper HRV download: --timeout 0",
         "argument --timeout: must be a positive number, got 0"),
    case(["python", "toy/adjust_eval.py", "--n", "-1"], "toy SD-HRV: --n -1", f"argument --n: {NONNEG} -1"),
    # silent no-ops and silently ignored input
    *[case([command, *flags, "--numerator", "2", "--denominator", "4"],
           f"{what}: --numerator 2 --denominator 4 without --subset_running (ignored: ran all)",
           "--numerator 2 --denominator 4 need --subset_running (or drop them)")
      for command, flags, what in (("hrv-relevance", [], "HRV construction"),
                                   ("hrv-weakening", [], "weakening"),
                                   ("hrv-p2p-benchmark", [], "P2P benchmark"),
                                   ("hrv-multi-object", [], "multi-object"))],
    case(["python", "applications/multi_object_benchmark.py", "--numerator", "2", "--denominator", "4"],
         "the script: --numerator 2 --denominator 4 without --subset_running",
         "--numerator 2 --denominator 4 need --subset_running (or drop them)"),
    case(["hrv-weakening", "--subset_running", "--numerator", "3", "--denominator", "2"],
         "weakening: --numerator beyond --denominator",
         "--numerator must be in 1..--denominator, got --numerator 3 --denominator 2"),
    case(["hrv-weakening", "--prompt", ""], "weakening: an empty --prompt (ran all 50 prompts of the experiment)",
         "argument --prompt: must be a prompt with words, got ''"),
    case(["hrv-weakening", "--prompt", "  "], "weakening: a blank --prompt",
         "argument --prompt: must be a prompt with words"),
    case(["hrv-reduce-misinterpretation", "--prompt", ""], "SD-HRV: an empty --prompt",
         "argument --prompt: must be a prompt with words, got ''"),
    case(["hrv-attend-excite", "--prompt", " "], "A&E: a blank --prompt",
         "argument --prompt: must be a prompt with words"),
    case(["hrv-p2p", "--prompts", "a red car", ""], "P2P: an empty target prompt",
         "argument --prompts: must be a prompt with words, got ''"),
    case(["hrv-attend-excite", *PROMPT, "--token_words", "cat", "--token_indices", "2"],
         "A&E: --token_words and --token_indices together (the indices won, the words were ignored)",
         "argument --token_indices: not allowed with argument --token_words"),
    case(["hrv-intended-sense", "folder", "--desired_text", "a vase", "--undesired_text", "A vase"],
         "intended-sense measure: the same text for both senses (\"intended 0.0%\": every image ties)",
         "--desired_text, --undesired_text: the desired and the undesired sense are the same text ('a vase')"),
    case(["hrv-intended-sense", "folder", "--phrases", "phrases.csv"],
         "intended-sense measure: a --phrases row with the same text for both senses",
         "phrases.csv line 2 (prompt 'A rose vase'): the desired and the undesired sense are the same text",
         setup="same_senses_file"),
    case(["hrv-p2p", "--prompts", "a red car", "a red car"], "P2P: the same source and target prompt (a no-op edit)",
         "--prompts: the source and the target prompt are the same ('a red car'): there is nothing to edit"),
    case(["python", "applications/p2p_hrv.py", "--prompts", "a red car", "A red  car"],
         "the script: source and target prompts that differ only in case and spaces (the same tokens)",
         "--prompts: the source and the target prompt are the same"),
]


def empty_prompt_file(folder: Path) -> None:
    (folder / "empty.txt").write_text("")
    (folder / "blank.txt").write_text("\n   \n\t\n")


def same_senses_file(folder: Path) -> None:
    (folder / "phrases.csv").write_text("prompt,desired_text,undesired_text\nA rose vase,a rose vase,a rose vase\n")


SETUPS = {"empty_prompt_file": empty_prompt_file, "same_senses_file": same_senses_file}
