"""Training throughput: mobilekit's mobilenet_v1 vs tf_keras.applications.MobileNet.

Both models (alpha 0.75, 128 px, 10 classes) are trained on the same mobilekit tf.data
pipeline (synthetic data, TRAIN transform) with the same compile settings. Measurements
alternate between the two models (A B A B ...) so that machine noise hits both alike;
each measurement times `--steps` training steps after a warm-up. The input pipeline alone
(iterating the dataset, no model) is timed the same way, to show it is not the bottleneck.

    python tools/bench_train_speed.py [--rounds 3] [--steps 20] [--batch-size 32]

Prints JSON: images/s per model (median over rounds), their ratio (target >= 0.95), and
the pipeline's images/s.
"""
import argparse
import json
import statistics
import time

import mobilekit  # noqa: F401  (selects tf_keras)
from mobilekit.data import load_dataset
from mobilekit.keras import keras, tf
from mobilekit.zoo.registry import create_model

ALPHA, RESOLUTION, CLASSES = 0.75, 128, 10


def compiled(model):
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model


def models():
    ours = create_model("mobilenet_v1", alpha=ALPHA, resolution=RESOLUTION, num_classes=CLASSES)
    ref = keras.applications.MobileNet(alpha=ALPHA, weights=None, classes=CLASSES,
                                       input_shape=(RESOLUTION, RESOLUTION, 3),
                                       classifier_activation=None)
    return {"mobilekit": compiled(ours), "keras.applications": compiled(ref)}


def time_training(model, batches):
    """Images/s of `train_on_batch` over batches already drawn from the pipeline.

    Drawing them first keeps a per-`fit` cost (a fresh dataset iterator refilling its
    shuffle buffer) out of the comparison; the pipeline is timed on its own below.
    """
    model.train_on_batch(*batches[0])  # trace + warm up
    start = time.perf_counter()
    for x, y in batches:
        model.train_on_batch(x, y)
    return sum(len(x) for x, _ in batches) / (time.perf_counter() - start)


def time_pipeline(ds, steps, batch):
    it = iter(ds)
    next(it)
    start = time.perf_counter()
    for _ in range(steps):
        next(it)
    return steps * batch / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    ds, _ = load_dataset("synthetic", "train", RESOLUTION, args.batch_size, training=True, seed=0)
    ds = ds.repeat()
    candidates = models()
    batches = [(x.numpy(), y.numpy()) for x, y in ds.take(args.steps)]
    speeds = {name: [] for name in candidates}
    pipeline = []
    for r in range(args.rounds):
        order = list(candidates) if r % 2 == 0 else list(reversed(candidates))
        for name in order:
            speeds[name].append(time_training(candidates[name], batches))
        pipeline.append(time_pipeline(ds, args.steps * 3, args.batch_size))
    med = {name: statistics.median(v) for name, v in speeds.items()}
    print(json.dumps({
        "images_per_sec": {k: round(v, 1) for k, v in med.items()},
        "all_rounds": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
        "ratio_mobilekit_over_keras": round(med["mobilekit"] / med["keras.applications"], 3),
        "pipeline_images_per_sec": round(statistics.median(pipeline), 1),
        "setup": {"alpha": ALPHA, "resolution": RESOLUTION, "batch_size": args.batch_size,
                  "steps": args.steps, "rounds": args.rounds,
                  "threads": tf.config.threading.get_inter_op_parallelism_threads()},
    }, indent=2))


if __name__ == "__main__":
    main()
