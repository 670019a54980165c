"""Training-step time of zoo models with grouped convs: tf_keras's XLA path vs TensorFlow's own.

For each model, two copies with the same weights: one as tf_keras builds it (every grouped
Conv2D through an XLA-compiled op) and one after
`mobilekit.layers.group_conv.train_grouped_convs_without_xla`. Both train on the same
random batch with SGD; after a warm-up step, steps alternate between the two copies round
by round so that machine load hits both alike. Prints the median seconds per step and the
ratio; --out writes JSON.

Example:
  python tools/bench_grouped_training.py --models regnetx_200mf,shufflenet_v1 --steps 5
"""
import argparse
import json
import platform
import statistics
import time

import numpy as np

from mobilekit.keras import keras, tf
from mobilekit.layers.group_conv import train_grouped_convs_without_xla
from mobilekit.zoo.registry import create_model


def compiled(model):
    model.compile(optimizer=keras.optimizers.SGD(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def measure(name, resolution, batch, steps):
    xla = create_model(name, resolution=resolution, num_classes=10)
    plain = create_model(name, resolution=resolution, num_classes=10)
    plain.set_weights(xla.get_weights())
    switched = train_grouped_convs_without_xla(plain)
    models = {"xla": compiled(xla), "plain": compiled(plain)}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, resolution, resolution, 3)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    times = {k: [] for k in models}
    for model in models.values():
        model.train_on_batch(x, y)  # trace and compile
    for _ in range(steps):
        for key, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times[key].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "resolution": resolution, "batch": batch, "steps": steps,
            "grouped_convs": switched, "xla_s_per_step": med["xla"],
            "plain_s_per_step": med["plain"], "xla_over_plain": med["xla"] / med["plain"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="regnetx_200mf,shufflenet_v1")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        row = measure(name, args.resolution, args.batch, args.steps)
        rows.append(row)
        print(f"{name}: {row['grouped_convs']} grouped convs, {row['xla_s_per_step']:.3f} s/step "
              f"XLA vs {row['plain_s_per_step']:.3f} s/step plain "
              f"({row['xla_over_plain']:.1f}x)", flush=True)
    if args.out:
        meta = {"machine": platform.processor() or platform.machine(),
                "tensorflow": tf.__version__, "rows": rows}
        with open(args.out, "w") as f:
            json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()
