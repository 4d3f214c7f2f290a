"""The paper's multi-object prompt sets, and scoring their images as the A&E paper does.

Two sets ship in ``hrv_diffusion/data/benchmarks/`` (the pairs of the reference's ``multi_concept_type{1,2}``
files, in their order):

- ``animals``: "a {A} and a {B}", all 66 unordered pairs of 12 animals (bear, bird, cat, deer, dog, fish, fox, frog,
  horse, lion, penguin, squirrel);
- ``colored_animals``: "a {color A} {A} and a {color B} {B}", 150 prompts, two different colors of 10 and two
  different animals.

The targets are the two animal nouns (concept Animals), as the reference's README says (A&E on nouns only).

**Score** (the A&E paper's): CLIP cosine similarity of each image with the full prompt, and with each object phrase
("a cat", "a black cat": the prompt split at " and "); the *minimum object similarity* is the smaller of the two.
Per image, and per method over a prompt set (mean over images: every prompt has the same seeds).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from hrv_diffusion.errors import UserError

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "data" / "benchmarks"
PROMPT_SETS = {"animals": "multi_object_animals.csv", "colored_animals": "multi_object_colored_animals.csv"}
PER_IMAGE_COLUMNS = ["method", "prompt", "seed", "full_prompt", "min_object", "objects", "object_scores", "path"]


@dataclass(frozen=True)
class MultiObjectPrompt:
    prompt: str
    objects: tuple[str, ...]  # the object phrases: "a black cat", "a white dog"
    nouns: tuple[str, ...]  # the words to excite: "cat", "dog"


def object_phrases(prompt: str) -> tuple[str, ...]:
    """The prompt split at " and " (the A&E paper's sub-prompts)."""
    return tuple(part.strip() for part in prompt.split(" and ") if part.strip())


def from_prompt(prompt: str) -> MultiObjectPrompt:
    """A prompt of the form "<phrase> and <phrase> ..."; each phrase's noun is its last word."""
    objects = object_phrases(prompt)
    return MultiObjectPrompt(prompt, objects, tuple(o.split()[-1] for o in objects))


TOY_SET = "multi_object_toy.txt"  # two-shape prompts of the toy model, one per line


def load_prompt_set(name_or_path: str) -> list[MultiObjectPrompt]:
    """``animals`` | ``colored_animals`` (shipped), ``toy`` (the toy model's, shipped), or a text file with one
    prompt per line."""
    if name_or_path in PROMPT_SETS:
        with open(BENCHMARK_DIR / PROMPT_SETS[name_or_path], newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if name_or_path == "animals":
            return [MultiObjectPrompt(f"a {r['animal_1']} and a {r['animal_2']}", (f"a {r['animal_1']}",
                                      f"a {r['animal_2']}"), (r["animal_1"], r["animal_2"])) for r in rows]
        return [MultiObjectPrompt(f"a {r['color_1']} {r['animal_1']} and a {r['color_2']} {r['animal_2']}",
                                  (f"a {r['color_1']} {r['animal_1']}", f"a {r['color_2']} {r['animal_2']}"),
                                  (r["animal_1"], r["animal_2"])) for r in rows]
    path = BENCHMARK_DIR / TOY_SET if name_or_path == "toy" else Path(name_or_path)
    if not path.is_file():
        raise UserError(f"--prompt_set {name_or_path!r}: not {' or '.join(PROMPT_SETS)} and not a file")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError(f"{path} has no prompt")
    return [from_prompt(p) for p in prompts]


def prompt_set_name(name_or_path: str) -> str:
    return name_or_path if name_or_path in (*PROMPT_SETS, "toy") else Path(name_or_path).stem


# ------------------------------------------------------------------------------------------------ scoring

def find_images(folder: Path, seeds=None) -> list[tuple[int, Path]]:
    """(seed, path) of ``{seed}.png`` in ``folder`` (all of them, or those of ``seeds``), by seed."""
    if seeds is not None:
        return [(int(s), folder / f"{s}.png") for s in seeds if (folder / f"{s}.png").is_file()]
    found = [(int(p.stem), p) for p in folder.glob("*.png") if p.stem.isdigit()]
    return sorted(found)


def missing_images(root, experiment_num, prompts: list[MultiObjectPrompt], methods, seeds) -> list[Path]:
    """The ``{seed}.png`` of every method, prompt and seed of ``seeds`` that is not under ``root``, in order."""
    from hrv_diffusion.apps.attend_excite_runs import image_dir

    root = Path(root).resolve()
    missing = []
    for method in methods:
        for item in prompts:
            folder = image_dir(root, method, experiment_num, item.prompt)
            missing += [folder / f"{s}.png" for s in seeds if not (folder / f"{s}.png").is_file()]
    return missing


def score_images(root, experiment_num, prompts: list[MultiObjectPrompt], methods, scorer, seeds=None,
                 progress: bool = False):
    """Score the images of ``{root}/{method folder}/exp_{n}/{prompt}/{seed}.png``: one row per image with the
    full-prompt similarity, each object phrase's and their minimum (``PER_IMAGE_COLUMNS``)."""
    import numpy as np
    import pandas as pd

    from hrv_diffusion.apps.attend_excite_runs import image_dir
    from hrv_diffusion.io import read_rgb

    root = Path(root).resolve()  # image_dir resolves its folders: a relative root must compare with them
    rows, missing = [], []
    for method in methods:
        for item in prompts:
            folder = image_dir(root, method, experiment_num, item.prompt)
            found = find_images(folder, seeds)
            if not found:
                missing.append(str(folder))
            rows += [(method, item, seed, path) for seed, path in found]
    if not rows:
        raise FileNotFoundError(f"no images under {root} for exp_{experiment_num}: generate them first "
                                f"(looked in e.g. {missing[0] if missing else root})")
    iterator = rows
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(rows, unit="image", desc="CLIP")
    out = []
    for method, item, seed, path in iterator:
        image = read_rgb(path, "multi_object_benchmark.py with the same flags")
        texts = [item.prompt, *item.objects]
        scores = np.asarray(scorer.score([image] * len(texts), texts), dtype=np.float64)
        out.append({"method": method, "prompt": item.prompt, "seed": seed, "full_prompt": float(scores[0]),
                    "min_object": float(scores[1:].min()), "objects": " | ".join(item.objects),
                    "object_scores": " | ".join(f"{s:.6f}" for s in scores[1:]),
                    "path": path.relative_to(root).as_posix()})
    frame = pd.DataFrame(out, columns=PER_IMAGE_COLUMNS)
    return frame, missing


def summarize(per_image):
    """Per method: images, prompts, mean full-prompt and mean minimum-object similarity (over images)."""
    import pandas as pd

    grouped = per_image.groupby("method", sort=False)
    return pd.DataFrame({
        "images": grouped.size(), "prompts": grouped["prompt"].nunique(),
        "full_prompt": grouped["full_prompt"].mean(), "min_object": grouped["min_object"].mean(),
    }).reset_index()


def write_csv(frame, path) -> Path:
    from hrv_diffusion.io import atomic_output

    with atomic_output(path) as temp:
        frame.to_csv(temp, index=False)
    return Path(path)
