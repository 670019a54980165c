"""MobileNetV3-Large 224: fp32 vs int8 latency on the host (ai_edge_litert, XNNPACK, 1 thread).

Compares, in one run:
  ours fp32 / ours int8          mobilekit exporter (int8 writes hard-swish unfused)
  ours int8, HARD_SWISH fused    the same model through the plain converter recipe
  keras fp32 / keras int8        tf_keras.applications.MobileNetV3Large(weights=None,
                                 include_preprocessing=False), from_keras_model, the usual way
Random weights, with BatchNorm statistics re-estimated on one batch so activations have
realistic O(1) ranges (fresh random-init activations shrink towards 0 layer after layer,
which makes int8 ADD scale ratios fall outside what XNNPACK accepts). Latencies are
measured round-robin (one invoke of each model in turn) so load changes on a shared host
hit every model alike. Host numbers, not phone numbers; only the ratios mean anything.
Usage: python tools/bench_int8_vs_fp32.py [--runs 50] [--json out.json]
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

import mobilekit  # noqa: F401  (tf_keras)
from mobilekit.bench.host import interleaved_medians
from mobilekit.export.convert import convert
from mobilekit.export.pipeline import reestimate_batchnorm
from mobilekit.export.report import analyze
from mobilekit.keras import keras, tf

RES = 224


def calibration(n=32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, RES, RES, 3)).astype(np.float32)


def plain_int8(converter, samples):
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([s[None]] for s in samples)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def latencies_us(blobs, runs):
    """Median invoke time of each model (XNNPACK, 1 thread), measured round-robin."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, data in enumerate(blobs):
            paths.append(Path(tmp) / f"m{i}.tflite")
            paths[-1].write_bytes(data)
        return interleaved_medians(paths, rounds=runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    samples = calibration()
    ours = mobilekit.create_model("mobilenet_v3_large", resolution=RES)
    spec = tf.TensorSpec([1, RES, RES, 3], tf.float32)
    fused = tf.function(lambda x: ours(x, training=False)).get_concrete_function(spec)
    ref = keras.applications.MobileNetV3Large(weights=None, include_preprocessing=False,
                                              input_shape=(RES, RES, 3))
    for model in (ours, ref):
        reestimate_batchnorm(model, samples[:16])
    models = {
        "ours fp32": lambda: convert(ours, "fp32"),
        "ours int8": lambda: convert(ours, "int8", samples),
        "ours int8 (HARD_SWISH fused)": lambda: plain_int8(
            tf.lite.TFLiteConverter.from_concrete_functions([fused]), samples),
        "keras fp32": lambda: tf.lite.TFLiteConverter.from_keras_model(ref).convert(),
        "keras int8": lambda: plain_int8(tf.lite.TFLiteConverter.from_keras_model(ref), samples),
    }
    rows, blobs = [], []
    for name, build in models.items():
        data = build()
        report = analyze(data)
        blobs.append(data)
        rows.append({"model": name, "size_bytes": len(data),
                     "xnnpack_partitions": report["xnnpack"]["partitions"],
                     "undelegated_ops": report["xnnpack"]["undelegated_ops"],
                     "float_ops": report["float_ops"]})
        print(f"converted {name}", flush=True)
    for row, median in zip(rows, latencies_us(blobs, args.runs)):
        row["median_us"] = median
        print(f"{row['model']:30s} {row['size_bytes'] / 1e6:7.2f} MB {median / 1e3:8.2f} ms "
              f"partitions {row['xnnpack_partitions']:3d} undelegated {row['undelegated_ops']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
