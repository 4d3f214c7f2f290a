"""Every command runs on ``--model_card toy`` with no other flag (issue 20): the toy's concept set, shipped HRVs,
prompts and a CPU-sized run are its defaults."""
from __future__ import annotations

import pytest

from toy_commands import TOY_COMMANDS, run_line

@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("toy_defaults")  # shared: later commands read what earlier ones wrote


@pytest.mark.parametrize("line", TOY_COMMANDS)
def test_command_runs_on_the_toy_with_no_other_flag(line, folder):
    code, err, added = run_line(line, folder)
    assert code == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    if line.split()[0] != "hrv-heads":
        assert added, f"{line} wrote nothing"


def test_help_lists_the_toy_defaults(capsys):
    from hrv_diffusion.cli.adjust import main

    with pytest.raises(SystemExit):
        main(["--model_card", "toy", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "With --model_card toy the defaults are the toy model's:" in out
    assert "--selected_token red-striped" in out and "--undesired Background" in out


def test_toy_defaults_do_not_touch_other_models_or_given_flags():
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
