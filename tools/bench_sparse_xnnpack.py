"""XNNPACK sparse inference: MobileNetV2 224 pruned for latency vs dense (fp32, 1 thread).

The model gets the sparse-inference layout (mobilekit.compress.pruning.xnnpack_sparse_layout:
ZeroPadding2D + "valid" for the stride-2 convs), is pruned with tfmot's
PruneForLatencyOnXNNPack policy (1x1 convs only) to each --sparsity with a constant
schedule (one masked training step on random images is enough to apply the masks: the
weights are random, only the zero pattern matters for speed), stripped, and converted
twice: the plain fp32 encoding, and the sparse encoding (converter EXPERIMENTAL_SPARSITY,
which is what switches XNNPACK to its sparse kernels). All models are timed with the
host LiteRT runner (XNNPACK, 1 thread) in alternating rounds; the median of the per-round
medians is reported, plus gzip sizes. The .tflite files stay in --workdir for a run on a
phone (`mobilekit bench --target adb ...`).

Caveat printed with the result: XNNPACK only takes the sparse path on ARM and on x86
CPUs *without* AVX (its hardware config: "on processors with AVX ISA dense inference is
expected to be faster than sparse"). On an AVX host the sparse model runs the dense path.
Usage: python tools/bench_sparse_xnnpack.py [--workdir DIR] [--sparsity 0.75 0.8]
       [--alpha 1.0] [--resolution 224] [--rounds 7] [--json out.json]
"""
import argparse
import json
import platform
import statistics
import sys
from pathlib import Path

import numpy as np

import mobilekit  # noqa: F401  (tf_keras)


def host_has_sparse_path():
    """(expected, reason): XNNPACK disables sparse (CHW) kernels on x86 with AVX."""
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64", "i386", "i686"):
        return True, f"{machine}: XNNPACK sparse kernels available"
    try:
        flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "")
    except OSError:
        flags = ""
    if " avx" in flags:
        return False, ("x86 with AVX: XNNPACK turns sparse inference off here (dense expected "
                       "to be faster); measure on an ARM phone")
    return True, "x86 without AVX: XNNPACK SSE sparse kernels available"


def pruned_variants(model, sparsity):
    """(stripped model pruned to `sparsity` with the XNNPACK policy, its sparsity report)."""
    from mobilekit.compress import pruning
    from mobilekit.keras import keras

    pruned = pruning.prune_model(model, sparsity, "constant", frequency=1, xnnpack_policy=True)
    pruned.compile(optimizer=keras.optimizers.SGD(0.0), run_eagerly=True,
                   loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    shape = (1,) + tuple(model.input_shape[1:])
    images = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    pruned.fit(images, np.zeros(1), epochs=1, verbose=0, callbacks=pruning.pruning_callbacks())
    final = pruning.strip(pruned)
    return final, pruning.sparsity_report(final)


def alternating_latency(paths, rounds):
    from mobilekit.bench.host import run_host

    medians = {name: [] for name in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            row = run_host(path, delegate="xnnpack", threads=1, num_runs=20, min_secs=1.0)
            if not row["ok"]:
                raise RuntimeError(f"{path}: {row['error']}")
            medians[name].append(row["inference_median_us"])
    return {name: round(statistics.median(v), 1) for name, v in medians.items()}, medians


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_sparse_xnnpack")
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.75, 0.8])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from mobilekit.compress import pruning
    from mobilekit.export.convert import convert
    from mobilekit.keras import keras
    from mobilekit.zoo.registry import create_model

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(0)
    base = create_model("mobilenet_v2", resolution=args.resolution, alpha=args.alpha)
    laid = pruning.xnnpack_sparse_layout(base)
    blobs = {"dense_zoo_layout": convert(base, "fp32"), "dense_sparse_layout": convert(laid, "fp32")}
    reports = {}
    for s in args.sparsity:
        final, report = pruned_variants(laid, s)
        reports[f"{s:g}"] = {"sparsity_1x1": _pointwise_sparsity(report),
                             "sparsity_all_kernels": report["sparsity"]}
        blobs[f"pruned_{s:g}_dense_encoding"] = convert(final, "fp32")
        blobs[f"pruned_{s:g}_sparse_encoding"] = pruning.convert_sparse(final)
    paths = {}
    for name, data in blobs.items():
        paths[name] = workdir / f"mobilenet_v2_{args.alpha:g}_{args.resolution}_{name}.tflite"
        paths[name].write_bytes(data)
    latency, rounds = alternating_latency(paths, args.rounds)
    ref = latency["dense_sparse_layout"]
    expected, reason = host_has_sparse_path()
    result = {
        "model": f"mobilenet_v2 alpha {args.alpha:g} @ {args.resolution}, random weights",
        "host_sparse_path_expected": expected, "host_note": reason,
        "pruning": reports,
        "models": {name: {"bytes": len(data), "gzip_bytes": pruning.gzip_size(data),
                          "median_us": latency[name],
                          "speedup_vs_dense": round(ref / latency[name], 3),
                          "round_medians_us": rounds[name], "file": str(paths[name])}
                   for name, data in blobs.items()},
    }
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def _pointwise_sparsity(report):
    rows = [r for r in report["layers"] if r["type"] == "Conv2D" and r["name"] != "stem"]
    zeros, size = sum(r["zeros"] for r in rows), sum(r["size"] for r in rows)
    return round(zeros / size, 4)


if __name__ == "__main__":
    sys.exit(main())
