#!/usr/bin/env python
"""A&E-HRV vs standard A&E vs plain generation on the toy model, scored by the toy's analytic evaluator.

Two-object captions that name every attribute (``data.sample_scenes(n, two_object_fraction=1.0, mention="all")``),
image i from seed SEED + i (CPU generator) for every method. Targets: the two shape nouns; A&E-HRV weights the
heads by the toy's shipped HRV of the concept Shape. Per image the evaluator reads the objects back; the rates:

- ``objects_found``: the evaluator finds two objects;
- ``shape_and_color``: both objects are there with their shape and color (the A&E question: no object neglected,
  attributes bound to the right object);
- ``all_attributes``: both objects right on every named attribute (color, shape, size, position).

Writes JSON (settings, rates per method, one record per image) after every batch; ``--resume`` continues it.

    python toy/attend_excite_eval.py --n 64 --out docs/toy/attend_excite.json
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hrv_diffusion.cli.common import ArgumentParser, HelpFormatter, nonnegative_int, positive_int  # noqa: E402
from hrv_diffusion.cli.common import check_outputs, output_file  # noqa: E402

METHODS = ("sd", "standard", "hrv")


def shape_targets(tokenizer, caption: str, scene: dict) -> list[list[int]]:
    """The token position of each object's shape noun, in caption order (every shape word is one CLIP token)."""
    ids = tokenizer(caption).input_ids
    shapes = {tokenizer(obj["shape"]).input_ids[1] for obj in scene["objects"]}
    positions = [p for p, token in enumerate(ids) if token in shapes]
    if len(positions) != 2:
        raise RuntimeError(f"expected two shape nouns in {caption!r}, found positions {positions}")
    return [[p] for p in positions]


def image_record(reading, scene) -> dict:
    from hrv_diffusion.toy import evaluator

    counts = evaluator.score([reading], [scene])
    ok = lambda a: counts[a]["total"] > 0 and counts[a]["correct"] == counts[a]["total"]  # noqa: E731
    return {"objects_found": len(reading.objects) == 2,
            "shape_and_color": ok("shape") and ok("color"),
            "all_attributes": all(ok(a) for a in ("color", "shape", "size", "position")),
            "read": [[o.color, o.shape, o.size, o.position] for o in reading.objects]}


def write(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)


def paired(report: dict) -> dict:
    """For each pair of methods with the same images: on how many images (shape_and_color) both, only the first,
    only the second, or neither succeed (the counts of a McNemar test)."""
    out = {}
    done = [m for m in METHODS if len(report["images"].get(m, [])) == report["config"]["n"]]
    for i, a in enumerate(done):
        for b in done[i + 1 :]:
            pairs = [(x["shape_and_color"], y["shape_and_color"]) for x, y in zip(report["images"][a], report["images"][b])]
            out[f"{a}_vs_{b}"] = {"both": sum(x and y for x, y in pairs), f"only_{a}": sum(x and not y for x, y in pairs),
                                  f"only_{b}": sum(y and not x for x, y in pairs),
                                  "neither": sum(not x and not y for x, y in pairs)}
    return out


def merge(paths, out: Path) -> int:
    """One report from reports of the same settings (each method taken from the report that finished it)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = {"config": reports[0]["config"], "methods": {}, "images": {}}
    for report in reports:
        if report["config"] != merged["config"]:
            raise SystemExit("the reports were made with different settings")
        for method, rates in report["methods"].items():
            if rates["images"] == merged["config"]["n"]:
                merged["methods"][method] = rates
                merged["images"][method] = report["images"][method]
    merged["paired"] = paired(merged)
    write(merged, out)
    print(json.dumps({"methods": merged["methods"], "paired": merged["paired"]}, indent=1))
    return 0


def main(argv=None) -> int:
    p = ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--n", type=positive_int, default=64, help="captions, one seed each (default: 64)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="scenes and latents: seed + i (default: 0)")
    p.add_argument("--split", default="all", help="scene split: all, train or heldout (default: all)")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS), help="methods to evaluate")
    p.add_argument("--res_standard", type=positive_int, default=8,
                   help="standard A&E: the CA layers at RxR (default: 8)")
    p.add_argument("--res_hrv", type=positive_int, default=8, help="A&E-HRV: maps resampled to RxR (default: 8)")
    p.add_argument("--concept", default="Shape", help="the HRV concept of the shape nouns (default: Shape)")
    p.add_argument("--steps", type=positive_int, default=50, help="PNDM steps (default: 50)")
    p.add_argument("--batch_size", type=positive_int, default=32, help="(default: 32)")
    p.add_argument("--device", default="cpu", help="(default: cpu)")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads (default: torch's; 1 is fastest on a busy "
                   "machine)")
    p.add_argument("--max_refinement_steps", type=nonnegative_int, default=20, help="(default: 20)")
    p.add_argument("--resume", action="store_true", help="continue an existing --out")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="merge reports of the same settings that ran different methods into --out, and stop")
    p.add_argument("--out", type=output_file, required=True, help="JSON file")
    args = p.parse_args(argv)
    check_outputs(args)  # an --out that is a file (a folder): one line, before the model loads
    if args.merge:
        return merge(args.merge, Path(args.out))

    import torch

    from hrv_diffusion.apps.attend_excite import (AttendExciteSettings, Targets, generate_attend_excite,
                                                  telemetry_summary)
    from hrv_diffusion.apps.attend_excite_tokens import eot_position
    from hrv_diffusion.core.heads import head_layout
    from hrv_diffusion.core.loop import latent_shape, seed_latents
    from hrv_diffusion.core.models import load_pipeline
    from hrv_diffusion.hrv.concepts import read_concept_set, resolve_description
    from hrv_diffusion.hrv.vectors import load_hrv
    from hrv_diffusion.toy import data, evaluator

    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = load_pipeline("toy", device=args.device)
    tokenizer = pipe.tokenizer
    hrv = load_hrv("paper", "toy", read_concept_set(resolve_description("toy_concepts")).names, head_layout(pipe.unet))
    scenes = data.sample_scenes(args.n, seed=args.seed, split=args.split, two_object_fraction=1.0, mention="all")
    captions = [s["caption"] for s in scenes]
    settings = {m: AttendExciteSettings(mode=m, attention_res=args.res_hrv if m == "hrv" else args.res_standard,
                                        num_inference_steps=args.steps, max_refinement_steps=args.max_refinement_steps)
                for m in METHODS}
    config = {"n": args.n, "seed": args.seed, "split": args.split, "steps": args.steps, "concept": args.concept,
              "res_standard": args.res_standard, "res_hrv": args.res_hrv, "targets": "the two shape nouns",
              "latents": "torch.Generator('cpu').manual_seed(seed + i)", "guidance_scale": 7.5,
              "hrv": {"source": "toy (shipped)", "fingerprint": hrv.fingerprint()},
              "settings": {m: settings[m].to_dict() for m in METHODS}}
    out = Path(args.out)
    report = {"config": config, "methods": {}, "images": {}}
    if out.exists():
        if not args.resume:
            raise SystemExit(f"{out} exists: pass --resume to continue it")
        old = json.loads(out.read_text())
        if old["config"] != config:
            raise SystemExit(f"{out} was made with other settings: {old['config']}")
        report = old
    from tqdm.auto import tqdm

    shape = latent_shape(pipe)
    bar = tqdm(total=len(args.methods) * args.n, desc="A&E images", unit="image",
               initial=sum(len(report["images"].get(m, [])) for m in args.methods))
    for method in args.methods:
        records = report["images"].setdefault(method, [])
        start_time = time.perf_counter()
        for start in range(len(records), args.n, args.batch_size):
            index = list(range(start, min(start + args.batch_size, args.n)))
            batch = [captions[i] for i in index]
            targets = Targets.build([shape_targets(tokenizer, captions[i], scenes[i]) for i in index],
                                    [eot_position(tokenizer, c) for c in batch], [0, 0])
            result = generate_attend_excite(pipe, batch, seed_latents([args.seed + i for i in index], shape),
                                            targets, settings[method], hrv.rows([args.concept]), decode="round")
            readings = evaluator.read_images(result.images)
            for j, i in enumerate(index):
                record = {"i": i, "caption": captions[i], **image_record(readings[j], scenes[i]),
                          "telemetry": telemetry_summary(result.records[j])}
                records.append(record)
            bar.update(len(index))
            report["methods"][method] = {
                "images": len(records),
                **{key: sum(r[key] for r in records) / len(records)
                   for key in ("objects_found", "shape_and_color", "all_attributes")},
                "refinement_iterations_mean": sum(r["telemetry"]["refinement_iterations"] for r in records) / len(records),
                "seconds_this_run": round(time.perf_counter() - start_time, 1),
            }
            write(report, out)
            print(method, json.dumps(report["methods"][method]), flush=True)
    bar.close()
    report["paired"] = paired(report)
    write(report, out)
    for method, rates in report["methods"].items():
        print(f"{method:9s} shape+color {rates['shape_and_color']:.3f}  all {rates['all_attributes']:.3f}  "
              f"found {rates['objects_found']:.3f}  ({rates['images']} images)")
    return 0


if __name__ == "__main__":
    from hrv_diffusion.cli.common import run_cli  # bad input: one line, exit 2

    raise SystemExit(run_cli(lambda _: main(), None))
