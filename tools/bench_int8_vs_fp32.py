"""MobileNetV3-Large 224: fp32 vs int8 latency on the host (ai_edge_litert, XNNPACK, 1 thread).

Compares, in one run:
  ours fp32 / ours int8          mobilekit exporter (int8 writes hard-swish unfused)
  ours int8, HARD_SWISH fused    the same model through the plain converter recipe
  keras fp32 / keras int8        tf_keras.applications.MobileNetV3Large(weights=None,
                                 include_preprocessing=False), from_keras_model, the usual way
Random weights and random calibration images: only ratios mean anything. Host numbers,
not phone numbers. Usage: python tools/bench_int8_vs_fp32.py [--runs 50] [--json out.json]
"""
import argparse
import json
import time

import numpy as np

import mobilekit  # noqa: F401  (tf_keras)
from mobilekit.export.convert import convert
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


def latency_us(data, runs, warmup=5):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=data, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    x = np.zeros(inp["shape"], inp["dtype"])
    interp.set_tensor(inp["index"], x)
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - start) * 1e6)
    return float(np.median(times))


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
    models = {
        "ours fp32": lambda: convert(ours, "fp32"),
        "ours int8": lambda: convert(ours, "int8", samples),
        "ours int8 (HARD_SWISH fused)": lambda: plain_int8(
            tf.lite.TFLiteConverter.from_concrete_functions([fused]), samples),
        "keras fp32": lambda: tf.lite.TFLiteConverter.from_keras_model(ref).convert(),
        "keras int8": lambda: plain_int8(tf.lite.TFLiteConverter.from_keras_model(ref), samples),
    }
    rows = []
    for name, build in models.items():
        data = build()
        report = analyze(data)
        row = {"model": name, "size_bytes": len(data), "median_us": latency_us(data, args.runs),
               "xnnpack_partitions": report["xnnpack"]["partitions"],
               "undelegated_ops": report["xnnpack"]["undelegated_ops"],
               "float_ops": report["float_ops"]}
        rows.append(row)
        print(f"{name:30s} {row['size_bytes'] / 1e6:7.2f} MB {row['median_us'] / 1e3:8.2f} ms "
              f"partitions {row['xnnpack_partitions']:3d} undelegated {row['undelegated_ops']}",
              flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
