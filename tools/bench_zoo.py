"""Whole-zoo host benchmark: every zoo model exported to fp32 and int8, timed on this host.

Steps (each resumable; exports already in OUT/models are reused):
  1. export   every model of `mobilekit.list_models()` (card default input; faceboxes at
              640x480) with `mobilekit.export` to OUT/models/<name>_fp32.tflite and
              <name>_int8.tflite (+ X.json reports with MACs). Random weights with BatchNorm
              statistics re-estimated on the calibration images: latency does not depend on
              the weight values, only on the graph and on realistic activation ranges.
  2. sweep    `mobilekit bench OUT/models/*.tflite --delegate D --threads 1 --plots
              --accuracy <card top-1>...` -> OUT/sweep/results.{jsonl,csv,md} and the plots
              (latency vs MACs, latency vs published ImageNet top-1 with its Pareto front).
  3. paired   int8 vs fp32 of each model timed round-robin (interleaved invokes, XNNPACK,
              1 thread) -> OUT/int8_vs_fp32.md / .json; with --s2d also the int8 file in
              the space-to-depth input layout (`export --s2d-input`). Ratios from this step, not from the
              sweep, because the two files of a pair are then measured under the same load.

Usage:
  python tools/bench_zoo.py --out bench_zoo                       # everything
  python tools/bench_zoo.py --out bench_zoo --models mobilenet_v2,ghostnet --steps export,paired
Host numbers, not phone numbers.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import mobilekit
from mobilekit.report.writers import write_markdown_table

SKIP = {"regnet"}  # the design space itself; its default is regnetx_400mf, listed on its own
INPUT_SHAPES = {"faceboxes": (480, 640, 3)}  # the 640x480 detector bar
QUANTS = ("fp32", "int8")
CALIB_SAMPLES = 32
S2D_SUFFIX = "_s2d"  # int8 in the space-to-depth input layout (export --s2d-input)


def zoo_names(only=None):
    names = [n for n in mobilekit.list_models() if n not in SKIP]
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            raise SystemExit(f"unknown model(s): {', '.join(unknown)}")
        names = [n for n in names if n in only]
    return names


def export_all(names, models_dir, s2d=False):
    from mobilekit.export.pipeline import export

    models_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        kwargs = {"input_shape": INPUT_SHAPES[name]} if name in INPUT_SHAPES else {}
        variants = [(q, False) for q in QUANTS] + ([("int8", True)] if s2d else [])
        for quant, s2d_input in variants:
            out = models_dir / f"{name}_{quant}{S2D_SUFFIX if s2d_input else ''}.tflite"
            if out.is_file() and out.with_suffix(".json").is_file():
                continue
            start = time.perf_counter()
            try:
                export(name, quant, calib_data="random", calib_samples=CALIB_SAMPLES, out=out,
                       model_kwargs=kwargs, s2d_input=s2d_input)
            except ValueError as exc:  # no strided 3-channel stem: no s2d variant
                print(f"skipped {out.name}: {exc}", flush=True)
                continue
            print(f"exported {out.name} in {time.perf_counter() - start:.0f} s", flush=True)


def published_top1(name):
    top1 = mobilekit.get_card(name).get("top1")
    return None if top1 is None else top1 / 100.0


def sweep(names, models_dir, out_dir, delegates, num_runs):
    files = [str(models_dir / f"{n}_{q}.tflite") for n in names for q in QUANTS]
    accuracies = [f"--accuracy={n}_{q}={published_top1(n)}" for n in names for q in QUANTS
                  if published_top1(n) is not None]
    command = [sys.executable, "-m", "mobilekit", "bench", *files, "--target", "host",
               "--delegate", delegates, "--threads", "1", "--num-runs", str(num_runs),
               "--min-secs", "1", "--max-secs", "60", "--out", str(out_dir), "--plots",
               *accuracies]
    print("running: mobilekit bench <%d files> --delegate %s --threads 1 --plots ..."
          % (len(files), delegates), flush=True)
    subprocess.run(command, check=True)


def paired(names, models_dir, out_dir, rounds):
    from mobilekit.bench.host import interleaved_medians

    rows = []
    for name in names:
        paths = [models_dir / f"{name}_{q}.tflite" for q in QUANTS]
        s2d = models_dir / f"{name}_int8{S2D_SUFFIX}.tflite"
        times = interleaved_medians(paths + ([s2d] if s2d.is_file() else []), rounds=rounds)
        fp32_us, int8_us = times[:2]
        reports = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
        rows.append({"model": name, "macs": reports[0].get("macs"),
                     "fp32_ms": fp32_us / 1e3, "int8_ms": int8_us / 1e3,
                     "int8_over_fp32": int8_us / fp32_us,
                     "int8_s2d_ms": times[2] / 1e3 if len(times) > 2 else None,
                     "int8_s2d_over_fp32": times[2] / fp32_us if len(times) > 2 else None,
                     "size_ratio": paths[1].stat().st_size / paths[0].stat().st_size,
                     "int8_partitions": reports[1]["xnnpack"]["partitions"],
                     "int8_float_ops": reports[1]["float_ops"]})
        s2d_text = (f"  int8 s2d {times[2] / 1e3:8.2f} ms ({times[2] / fp32_us:.3f})"
                    if len(times) > 2 else "")
        print(f"{name:22s} fp32 {fp32_us / 1e3:8.2f} ms  int8 {int8_us / 1e3:8.2f} ms  "
              f"int8/fp32 {int8_us / fp32_us:.3f}{s2d_text}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "int8_vs_fp32.json").write_text(json.dumps(rows, indent=2))
    faster = sum(r["int8_over_fp32"] < 1 for r in rows)
    faster_s2d = sum(min(r["int8_over_fp32"], r["int8_s2d_over_fp32"] or 9) < 1 for r in rows)
    write_markdown_table(
        out_dir / "int8_vs_fp32.md",
        ["model", "MMACs", "fp32 ms", "int8 ms", "int8/fp32", "int8 s2d ms", "int8 s2d/fp32",
         "int8 size / fp32", "int8 XNNPACK partitions"],
        [[r["model"], f"{(r['macs'] or 0) / 1e6:.0f}", f"{r['fp32_ms']:.2f}",
          f"{r['int8_ms']:.2f}", f"{r['int8_over_fp32']:.3f}", _opt(r["int8_s2d_ms"], ".2f"),
          _opt(r["int8_s2d_over_fp32"], ".3f"), f"{r['size_ratio']:.3f}",
          r["int8_partitions"]] for r in rows],
        title="int8 vs fp32, XNNPACK, 1 thread, interleaved invokes",
        notes=[f"{faster} of {len(rows)} models run faster in int8 than in fp32 on this host; "
               f"{faster_s2d} with the space-to-depth input layout where it applies",
               f"median of {rounds} round-robin invokes per file; host numbers, not phone "
               "numbers"])
    return rows


def _opt(value, fmt):
    return "-" if value is None else format(value, fmt)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_zoo"))
    parser.add_argument("--models", default=None, help="comma-separated subset of the zoo")
    parser.add_argument("--steps", default="export,sweep,paired")
    parser.add_argument("--delegate", default="xnnpack,cpu", help="sweep delegates")
    parser.add_argument("--num-runs", type=int, default=20, help="sweep: minimum timed runs")
    parser.add_argument("--rounds", type=int, default=30, help="paired: round-robin invokes")
    parser.add_argument("--s2d", action="store_true",
                        help="also export/time int8 in the space-to-depth input layout")
    args = parser.parse_args()
    names = zoo_names(args.models.split(",") if args.models else None)
    steps = set(args.steps.split(","))
    models_dir = args.out / "models"
    if "export" in steps:
        export_all(names, models_dir, s2d=args.s2d)
    if "sweep" in steps:
        sweep(names, models_dir, args.out / "sweep", args.delegate, args.num_runs)
    if "paired" in steps:
        paired(names, models_dir, args.out, args.rounds)


if __name__ == "__main__":
    main()
