"""RunContext: the flags of every command resolved in one place."""
import argparse

import pytest

from hrv_diffusion.cli.common import ArgumentParser
from hrv_diffusion.cli.context import RunContext
from hrv_diffusion.cli.flags import (add_generation_flags, add_hrv_flags, add_model_flags, add_output_flags,
                                     add_split_flags)
from hrv_diffusion.errors import UserError


def _parser():
    p = ArgumentParser(prog="t")
    add_model_flags(p, scheduler=True)
    add_generation_flags(p, seeds=[1], batch_size=4, batch_help="rows")
    add_output_flags(p, default_path="out")
    add_hrv_flags(p, hrv_files=True, description_file=True)
    add_split_flags(p)
    return p


def test_defaults_resolve_on_cpu_without_loading():
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy"]))
    assert (ctx.device, ctx.dtype, ctx.model_version) == ("cpu", "float32", "toy")
    assert "pipe" not in vars(ctx)  # nothing loaded yet
    assert ctx.description == "toy_concepts"
    other = RunContext.from_args(_parser().parse_args(["--model_card", "tiny-sd"]))
    assert other.description == "340_final_text_descriptions"


def test_unknown_concept_names_the_known_ones():
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy"]))
    with pytest.raises(UserError, match="unknown concept 'Colour'.*Color"):
        ctx.check_concepts(["Colour"])


def test_head_index_without_category_vectors_is_refused(tmp_path):
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy", "--head_index_path", "x.npy"]))
    with pytest.raises(UserError, match="--head_index_path needs --category_vectors_path"):
        ctx.check_hrv()


def test_shipped_toy_hrv_is_ordered_for_the_layout():
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy"]))
    ctx.check_hrv()
    assert ctx.hrv.values.shape == (len(ctx.concept_names), ctx.layout.num_heads)
    assert list(ctx.hrv.labels) == ctx.layout.labels


def test_explicit_head_index_is_used(tmp_path):
    import numpy as np

    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy"]))
    ctx.check_hrv()
    labels = ctx.layout.labels
    order = np.arange(len(labels))[::-1]  # a file whose columns are in reversed head order
    values = ctx.hrv.values[:, order]
    np.save(tmp_path / "category_vectors_x.npy", values)
    np.save(tmp_path / "labels.npy", np.array([labels[i] for i in order]))
    args = _parser().parse_args(["--model_card", "toy", "--category_vectors_path", str(tmp_path / "category_vectors_x.npy"),
                                 "--head_index_path", str(tmp_path / "labels.npy")])
    ctx2 = RunContext.from_args(args)
    ctx2.__dict__["pipe"] = ctx.pipe  # same model, no second load
    np.testing.assert_array_equal(ctx2.hrv.values, ctx.hrv.values)


def test_split_by_subset_then_rank(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = _parser().parse_args(["--model_card", "toy", "--subset_running", "--numerator", "2", "--denominator", "2"])
    ctx = RunContext.from_args(args)
    assert ctx.my_indices(10) == [7, 8, 9]  # part 2 of 2 = 5..9, rank 1 of 2 takes the second share


def test_height_not_divisible_by_the_downsampling_is_refused():
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy", "--height", "50"]))
    with pytest.raises(UserError, match="--height 50 is not a multiple of"):
        ctx.latent_shape()
    ok = RunContext.from_args(_parser().parse_args(["--model_card", "toy", "--height", "48", "--width", "32"]))
    ok.__dict__["pipe"] = ctx.pipe
    _, h, w = ok.latent_shape()
    assert (h * ctx.pipe.vae_scale_factor, w * ctx.pipe.vae_scale_factor) == (48, 32)


@pytest.mark.parametrize("flags,message", [
    (["--numerator", "2", "--denominator", "4"], "--numerator 2 --denominator 4 need --subset_running (or drop them)"),
    (["--denominator", "3"], "--denominator 3 needs --subset_running (or drop it)"),
    (["--numerator", "1"], "--numerator 1 needs --subset_running (or drop it)"),  # given, even at its default
])
def test_split_flags_without_subset_running_are_refused(flags, message):
    args = _parser().parse_args(["--model_card", "toy", *flags])
    with pytest.raises(UserError) as error:
        RunContext.from_args(args)
    assert str(error.value) == message


def test_relevance_default_denominator_is_not_a_given_flag():
    from hrv_diffusion.cli.relevance import build_parser

    args = build_parser().parse_args(["--model_card", "toy"])
    assert args.denominator == 5  # the reference's default, unused without --subset_running
    RunContext.from_args(args)
    with pytest.raises(UserError, match="--numerator 2 needs --subset_running"):
        RunContext.from_args(build_parser().parse_args(["--model_card", "toy", "--numerator", "2"]))


def test_numerator_beyond_denominator_is_refused_before_loading():
    args = _parser().parse_args(["--model_card", "toy", "--subset_running", "--numerator", "3", "--denominator", "2"])
    with pytest.raises(UserError, match="--numerator must be in 1..--denominator"):
        RunContext.from_args(args)


def test_default_split_flags_pass():
    ctx = RunContext.from_args(_parser().parse_args(["--model_card", "toy"]))
    assert ctx.my_indices(5) == [0, 1, 2, 3, 4]
