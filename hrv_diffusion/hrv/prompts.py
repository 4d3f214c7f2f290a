"""Generation prompts for HRV construction.

``--prompt NAME`` means ``prompt/prompt_list_NAME.txt``, looked up in the working directory first, then among the
lists built into the package; a path works too. Built in:

- ``imagenet``: the 1000 prompts ``a photo of a {class}.`` made from the ImageNet class names that open_clip ships
  (they equal the published ``prompt_list_imagenet.txt``; ``imagenet_prompts`` rebuilds them from open_clip);
- ``toy``: 256 captions of the toy world, for the toy model's HRVs;
- ``merged`` (the paper's 2100 prompts): ``imagenet`` followed by 1100 PromptHero prompts, which are not ours to
  ship: put them in ``prompt/prompt_list_prompt-hero_1100.txt``, or provide ``prompt/prompt_list_merged.txt``.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
from pathlib import Path

from hrv_diffusion.errors import UserError

BUILTIN_PROMPTS = Path(__file__).resolve().parents[1] / "data" / "prompts"  # shipped in the package
PROMPT_HERO = "prompt-hero_1100"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names of open_clip, read from its source without importing it (no torchvision)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None:
        raise RuntimeError("the imagenet prompts come from open_clip's class names: pip install open_clip_torch")
    source = Path(list(spec.submodule_search_locations)[0], "zero_shot_metadata.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "IMAGENET_CLASSNAMES":
            return list(ast.literal_eval(node.value))
    raise RuntimeError("IMAGENET_CLASSNAMES not found in open_clip's zero_shot_metadata.py")


def imagenet_prompts() -> list[str]:
    return [f"a photo of a {name}." for name in imagenet_class_names()]


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per line; the newline (LF or CRLF) is stripped and blank lines are skipped."""
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [line for line in lines if line.strip()]


def _candidates(name: str) -> list[Path]:
    file = f"prompt_list_{name}.txt"
    return [Path.cwd() / "prompt" / file, BUILTIN_PROMPTS / file]


def _find(name: str) -> Path | None:
    return next((path for path in _candidates(name) if path.is_file()), None)


def load_prompts(name_or_path: str) -> list[str]:
    """Resolve ``--prompt`` as described in the module docstring; a list without any prompt is a ``UserError``."""
    prompts = _load_prompts(name_or_path)
    if not prompts:
        raise UserError(f"--prompt {name_or_path}: the prompt list is empty (no non-blank line): give a file with "
                        "one prompt per line")
    return prompts


def _load_prompts(name_or_path: str) -> list[str]:
    path = Path(name_or_path)
    if path.suffix and path.is_file():
        return read_prompt_file(path)
    found = _find(name_or_path)
    if found is not None:
        return read_prompt_file(found)
    if name_or_path == "merged":
        hero = _find(PROMPT_HERO)
        if hero is None:
            raise FileNotFoundError(
                "--prompt merged is the paper's 2100 prompts: the 1000 imagenet prompts plus 1100 PromptHero prompts, "
                "which we cannot ship. Put the PromptHero prompts (one per line) in "
                f"prompt/prompt_list_{PROMPT_HERO}.txt in this folder, or use --prompt imagenet."
            )
        return load_prompts("imagenet") + read_prompt_file(hero)
    looked = "\n  ".join(str(p) for p in _candidates(name_or_path))
    raise FileNotFoundError(
        f"no prompt list {name_or_path!r}: looked for\n  {looked}\n"
        "Pass a file with one prompt per line, or a built-in name: imagenet, merged."
    )


def prompt_name(name_or_path: str) -> str:
    """The name used in output file names: ``prompt/prompt_list_few.txt`` -> ``few``; a name stays as it is."""
    path = Path(name_or_path)
    return path.stem.removeprefix("prompt_list_") if path.suffix else name_or_path


def prompts_fingerprint(prompts: list[str]) -> str:
    return hashlib.sha256("\n".join(prompts).encode("utf-8")).hexdigest()[:16]
