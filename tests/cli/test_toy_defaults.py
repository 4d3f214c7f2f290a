"""Every command runs on ``--model_card toy`` with no other flag (issue 20): the toy's concept set, shipped HRVs,
prompts and a CPU-sized run are its defaults. The commands are those of the README's "Try it on the toy" block
(``toy_commands.readme_commands``), run in their order in one copy of the checkout, as the README says."""
from __future__ import annotations

import shlex
import tomllib
from types import SimpleNamespace

import pytest

from bad_inputs_run import REPO, SCRIPTS
from doc_commands import copy_checkout
from toy_commands import readme_commands, run_line

COMMANDS = readme_commands()
# Console scripts the block does not run, and why.
NOT_RUN = {
    "hrv-relevance-sdxl": "the same main as hrv-relevance (an SDXL default card; --model_card toy overrides it)",
    "hrv-weakening-sdxl": "the same main as hrv-weakening (an SDXL default card; --model_card toy overrides it)",
    "hrv-demo": "the toy is its default model (tests/cli/test_demo.py)",
    "hrv-published": "downloads the paper's HRVs; the toy's ship with the package",
    "hrv-weakening-prompts": "the paper's experiment prompts (no model)",
    "hrv-weakening-scores": "CLIP scores of the paper's experiments",
    "hrv-weakening-plots": "plots of hrv-weakening-scores",
    "hrv-multi-object-scores": "CLIP scores of images (no model card)",
    "hrv-p2p-scores": "CLIP scores of images (no model card)",
    "hrv-intended-sense": "CLIP scores of images (no model card)",
}


def script_of(line: str) -> str:
    """The console script a command line runs (an applications/ script: the one whose main it fronts)."""
    words = shlex.split(line)
    if words[0] != "python":
        return words[0]
    source = (REPO / words[1]).read_text(encoding="utf-8")
    module = source.split("from hrv_diffusion.cli.", 1)[1].split(" import", 1)[0]
    return next(name for name, target in SCRIPTS.items() if target == f"hrv_diffusion.cli.{module}:main")


def test_every_console_script_is_run_or_said_why_not():
    scripts = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"])
    run = {script_of(line) for line in COMMANDS}
    assert scripts == run | set(NOT_RUN), (scripts - run - set(NOT_RUN), (run | set(NOT_RUN)) - scripts)
    assert not run & set(NOT_RUN)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    # The README runs the block from the checkout: a copy of it (its toy/ scripts folder must not shadow the
    # built-in toy model); shared, since later commands read what earlier ones wrote.
    return copy_checkout(tmp_path_factory.mktemp("toy_defaults"))


@pytest.mark.parametrize("line", COMMANDS)
def test_command_runs_on_the_toy_with_no_other_flag(line, folder):
    assert shlex.split(line)[-2:] == ["--model_card", "toy"] and line.count("--") == 1  # no other flag
    code, err, added = run_line(line, folder)
    assert code == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    if script_of(line) != "hrv-heads":  # hrv-heads prints only
        assert added, f"{line} wrote nothing"


def test_help_lists_the_toy_defaults(capsys):
    from hrv_diffusion.cli.adjust import main

    with pytest.raises(SystemExit):
        main(["--model_card", "toy", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "With --model_card toy (or toy-dit) the defaults are the toy model's:" in out
    assert "--selected_token red-striped" in out and "--undesired Background" in out


def test_toy_defaults_leave_other_models_and_given_flags_alone():
    from hrv_diffusion.cli.adjust import TOY_DEFAULTS, build_parser
    from hrv_diffusion.cli.common import use_toy_defaults

    parser = build_parser()
    use_toy_defaults(parser, ["--model_card", "tiny-sd"], TOY_DEFAULTS)
    assert parser.parse_args(["--model_card", "tiny-sd"]).undesired == "Plants"  # the paper's
    parser = build_parser()
    argv = ["--model_card", "toy", "--undesired", "Shape"]
    use_toy_defaults(parser, argv, TOY_DEFAULTS)
    args = parser.parse_args(argv)
    assert args.undesired == "Shape" and args.desired == "Color" and args.word == "red-striped"


def test_a_required_flag_has_the_toys_default_on_the_toy_only(capsys):
    from hrv_diffusion.cli.attend_excite import TOY_DEFAULTS, build_parser
    from hrv_diffusion.cli.common import use_toy_defaults

    parser = build_parser()
    use_toy_defaults(parser, ["--model_card", "toy"], TOY_DEFAULTS)
    assert parser.parse_args(["--model_card", "toy"]).prompt == TOY_DEFAULTS["prompt"]
    parser = build_parser()
    use_toy_defaults(parser, ["--model_card", "tiny-sd"], TOY_DEFAULTS)
    with pytest.raises(SystemExit):
        parser.parse_args(["--model_card", "tiny-sd"])  # --prompt is still required


def test_sd_hrv_summary_warns_on_the_toy_with_the_papers_rule_only():
    from hrv_diffusion.cli.adjust import toy_note

    assert "--min_factor 0 keeps it" in toy_note(SimpleNamespace(card="toy"), SimpleNamespace(min_factor=None))
    assert toy_note(SimpleNamespace(card="toy"), SimpleNamespace(min_factor=0.0)) == ""
    assert toy_note(SimpleNamespace(card="tiny-sd"), SimpleNamespace(min_factor=None)) == ""


def test_a_and_e_targets_the_toys_shape_words():
    from hrv_diffusion.cli.attend_excite import target_words

    args = SimpleNamespace(model_card="toy", prompt="a red circle and a blue  square.", token_words=None,
                           token_indices=None)
    assert target_words(args) == ["circle", "square"]
    assert target_words(SimpleNamespace(**{**vars(args), "model_card": "tiny-sd"})) is None
