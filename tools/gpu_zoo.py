"""The zoo on LiteRT's real GPU delegate: every model exported to fp32, fp16 and int8 with
`mobilekit export`, then `mobilekit delegates` on each file.

Writes OUT/models/*.tflite (reused when present), OUT/delegates.json and OUT/gpu_zoo.md: per
model and file, full / partial / none, the ops left on the CPU with the delegate's reason,
the max relative error against the reference kernels and the top-1 agreement, for the GPU
(fp16 arithmetic, the delegate's default) beside XNNPACK. Random weights (BatchNorm
statistics re-estimated, as `export` does for zoo names), random inputs: coverage and
numerics do not need a trained model; accuracy does not enter.

Usage:
  python tools/gpu_zoo.py --out gpu_zoo                          # card widths, 128 px
  python tools/gpu_zoo.py --out gpu_zoo --models mobilenet_v1,faceboxes --resolution 224
On a machine without a GPU the adapter is Mesa's lavapipe: coverage and numerics are the
delegate's own; no timing from it is a GPU figure.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import mobilekit
from mobilekit.report.writers import write_markdown_table
from mobilekit.zoo.registry import get_entry

QUANTS = ("fp32", "fp16", "int8")


def export(name, quant, resolution, out):
    path = out / "models" / f"{name}_{quant}.tflite"
    if path.exists():
        return path
    cmd = [sys.executable, "-m", "mobilekit", "export", name, "--quant", quant, "--out",
           str(path), "--no-gpu-check"]
    if name != "faceboxes":
        cmd += ["--resolution", str(max(resolution, get_entry(name).min_resolution)),
                "--num-classes", "10"]
    if quant == "int8":
        cmd += ["--calib-data", "random", "--calib-samples", "16"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return path


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default=None, help="comma-separated (default: the zoo)")
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args(argv)
    from mobilekit.bench.delegates import delegate_report

    names = args.models.split(",") if args.models else mobilekit.list_models()
    (args.out / "models").mkdir(parents=True, exist_ok=True)
    reports, rows = [], []
    for name in names:
        for quant in QUANTS:
            path = export(name, quant, args.resolution, args.out)
            report = delegate_report(path, ("gpu", "xnnpack"), ("fp16",),
                                     samples=args.samples, timing=False)
            reports.append(report)
            gpu, xnn = report["rows"]
            num = gpu.get("numerics") or {}
            rel = max((o["max_rel"] or 0.0 for o in num.get("outputs", [])), default=None)
            steps = [o["max_steps"] for o in num.get("outputs", []) if "max_steps" in o]
            agree = num.get("top1_agreement")
            rows.append([name, quant, gpu["accelerated"] or "failed",
                         "; ".join(f"{o['op']}: {o['reason']}" for o in gpu["fallback_ops"])
                         or (gpu["error"] if not gpu["ok"] else "-"),
                         None if rel is None else f"{rel:.2g}",
                         max(steps) if steps else "-",
                         None if agree is None else f"{100 * agree:.0f} %",
                         "yes" if (gpu.get("static") or {}).get("compatible") else "no",
                         xnn["accelerated"]])
            print(" | ".join(str(c) for c in rows[-1]), flush=True)
    (args.out / "delegates.json").write_text(json.dumps(reports, indent=1))
    adapter = next((r["rows"][0]["gpu_adapter"] for r in reports if r["rows"][0]["gpu_adapter"]),
                   None)
    write_markdown_table(
        args.out / "gpu_zoo.md",
        ["model", "file", "GPU", "CPU fallback / error", "max rel err (fp16 GPU)",
         "max int8 steps", "top-1 agreement", "static analyzer: compatible", "XNNPACK"],
        rows, title="The zoo on LiteRT's GPU delegate",
        notes=[f"adapter: {adapter}", f"{args.samples} random inputs per file, "
               f"{args.resolution} px (FaceBoxes: its default input)"])


if __name__ == "__main__":
    main()
