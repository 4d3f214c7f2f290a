"""hrv-intended-sense: how often SD-HRV images show the intended sense of the adjusted word (CLIP zero-shot).

    hrv-intended-sense reduce_misinterpretation_outputs/prompt_02_A_vase_in_lavender_color \\
        --desired_text "a lavender-colored vase" --undesired_text "a vase with lavender flowers"

Each image of a prompt folder (written by applications/reduce_misinterpretation.py) is compared with the two
phrases; it shows the intended sense when CLIP finds it closer to the desired phrase (a tie is not intended, and is
counted apart). Written: a summary CSV (one row per prompt and method, standard and adjusted: the rate of intended
images, the number and share of ties, the mean P(desired) of a two-way softmax at CLIP's logit scale 100, the
number of images) and a per-image CSV beside it. Per-prompt phrases:
--phrases FILE (columns prompt,desired_text,undesired_text). See docs/adjust.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hrv_diffusion.cli.common import ArgumentParser, positive_int, output_folder, output_file


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="prompt folders of reduce_misinterpretation.py outputs")
    p.add_argument("--desired_text", default=None, help="phrase of the desired sense, e.g. 'a lavender-colored vase'")
    p.add_argument("--undesired_text", default=None,
                   help="phrase of the undesired sense, e.g. 'a vase with lavender flowers'")
    p.add_argument("--phrases", default=None,
                   help="CSV with columns prompt,desired_text,undesired_text: phrases per prompt (instead of the two "
                        "flags)")
    p.add_argument("--out", type=output_file, default="intended_sense.csv",
                   help="summary CSV; the per-image CSV is written beside it with suffix _per_image (default: "
                        "%(default)s)")
    p.add_argument("--clip_model", default="ViT-H-14", help="open_clip model name (default: %(default)s)")
    p.add_argument("--clip_pretrained", default="laion2b_s32b_b79k",
                   help="open_clip pretrained tag, or a local checkpoint path (default: %(default)s)")
    p.add_argument("--clip_cache_dir", type=output_folder, default=None,
                   help="open_clip cache folder for the weights (optional)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--batch_size", type=positive_int, default=32,
                   help="images per CLIP forward pass (default: %(default)s)")
    p.add_argument("--scorer", default=None, metavar="MODULE:CALLABLE",
                   help="another scorer instead of CLIP: a callable returning an object with score(images, texts) "
                        "-> cosine similarities")
    return p


def run(args) -> int:
    from hrv_diffusion.apps.intended_sense import (PER_IMAGE_COLUMNS, SUMMARY_COLUMNS, Senses, distinct_senses,
                                                   measure, prompt_images, read_senses, write_rows)
    from hrv_diffusion.errors import UserError

    if args.phrases:
        table = read_senses(args.phrases)

        def senses_for(prompt):
            if prompt not in table:
                raise UserError(f"{args.phrases} has no row for the prompt {prompt!r}")
            return table[prompt]
    elif args.desired_text and args.undesired_text:
        senses = distinct_senses(Senses(args.desired_text, args.undesired_text), "--desired_text, --undesired_text")

        def senses_for(prompt):
            return senses
    else:
        raise UserError("pass the two senses: --desired_text 'a lavender-colored vase' --undesired_text 'a vase with "
                        "lavender flowers' (or --phrases FILE)")
    for folder in args.folders:  # checked before CLIP loads
        senses_for(prompt_images(folder)[0])
    if args.scorer:
        from hrv_diffusion.apps.clip import load_scorer

        scorer = load_scorer(args.scorer)
    else:
        from hrv_diffusion.apps.clip import ClipScorer

        try:
            scorer = ClipScorer(args.clip_model, args.clip_pretrained, device=args.device,
                                batch_size=args.batch_size, cache_dir=args.clip_cache_dir)
        except ImportError as error:
            raise UserError(str(error)) from None
    summary, per_image = measure(scorer, args.folders, senses_for)
    out = Path(args.out)
    write_rows(out, summary, SUMMARY_COLUMNS)
    per_image_path = out.with_name(f"{out.stem}_per_image{out.suffix or '.csv'}")
    write_rows(per_image_path, per_image, PER_IMAGE_COLUMNS)
    for row in summary:
        print(f"{row['prompt']!r} {row['method']:<8} intended {row['intended_rate']:.1%} of {row['n_images']}, "
              f"ties {row['n_ties']} ({row['tie_rate']:.1%}) (mean P(desired) {row['mean_p_desired']:.3f})")
    ties = sum(row["n_ties"] for row in summary)
    if ties:
        print(f"note: {ties} of {len(per_image)} images tie (CLIP finds them as close to both phrases): they count "
              "as not intended (intended = closer to the desired phrase); the tie columns give them apart")
    print(f"wrote {out} and {per_image_path}")
    return 0


def main(argv=None) -> int:
    from hrv_diffusion.cli.common import run_cli

    return run_cli(run, build_parser().parse_args(argv))
