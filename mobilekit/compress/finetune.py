"""Fine-tuning a compressed model on its training run's data, and its run directory.

A compression command reads a run directory (config.json + model.keras from
`mobilekit train`), compresses the model, fine-tunes it on the same data with the same
normalisation, and writes a new run directory that `mobilekit eval` / `export` / `bench`
accept like any other:

  OUT/config.json   the source run's config + "compression" (method, settings, source run)
  OUT/model.keras   the compressed model (pruning wrappers stripped)
  OUT/metrics.json  val_accuracy (after fine-tuning) + the method's own measurements
"""
import math
import os
from pathlib import Path

from mobilekit.io import write_json_atomic

# Fine-tuning starts at this fraction of the run's learning rate (cosine decay to 0).
# Channel-pruned mobilenet_v2 0.5 on the synthetic set, 2 epochs: 0.3 recovered 23.0 %
# val accuracy (source 23.6 %), 0.1 only 19.4 % (tools/bench_channel_prune.py).
DEFAULT_LR_FACTOR = 0.3
PRECISE_BN_BATCHES = 20


def load_source(run_dir):
    """(model, config) of a training run directory."""
    from mobilekit.loading import load_keras
    from mobilekit.train.rundir import BEST, load_run

    config = load_run(run_dir)
    path = Path(run_dir) / BEST
    if not path.is_file():
        raise FileNotFoundError(f"run directory {str(run_dir)!r} has no {BEST} "
                                "(no epoch completed)")
    for key in ("data", "resolution", "mean", "std", "num_classes"):
        if config.get(key) is None:
            raise ValueError(f"{Path(run_dir) / 'config.json'} lacks {key!r}; expected a run "
                             "directory written by `mobilekit train`")
    return load_keras(path), config


def datasets(config, batch_size=None, seed=0):
    """(train dataset with one-hot labels, val dataset with int labels, steps per epoch)."""
    from mobilekit.data import load_dataset
    from mobilekit.keras import tf

    batch = batch_size or config.get("batch_size") or 32
    res = int(config["resolution"])
    train, info = load_dataset(config["data"], "train", res, batch, training=True, seed=seed,
                               mean=config["mean"], std=config["std"])
    val, _ = load_dataset(config["data"], "val", res, batch, training=False,
                          mean=config["mean"], std=config["std"])
    classes = info["num_classes"]
    if classes != config["num_classes"]:
        raise ValueError(f"{config['data']} has {classes} classes; the run was trained on "
                         f"{config['num_classes']}")
    train = train.map(lambda x, y: (x, tf.one_hot(y, classes)))
    return train, val, math.ceil(info["num_examples"] / batch)


def accuracy(model, val_ds):
    """Top-1 accuracy of a Keras model over a dataset of (images, int labels)."""
    from mobilekit.train.evaluate import update_counts

    counts = {"top1": 0, "top5": 0, "n": 0}
    for images, labels in val_ds:
        update_counts(counts, model(images, training=False).numpy(), labels.numpy())
    return counts["top1"] / max(counts["n"], 1)


def outputs_logits(model):
    """False when the last layer applies softmax (the loss then takes probabilities)."""
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", "") != "softmax"


def fine_tune(model, config, train_ds, steps_per_epoch, epochs, lr=None, callbacks=(),
              verbose=0):
    """Compile `model` with the run's optimizer kind and loss and fit it for `epochs`.

    lr: peak learning rate (cosine decay to 0); None = DEFAULT_LR_FACTOR x the run's.
    Returns the per-epoch history dict of `fit`.
    """
    from mobilekit.keras import keras
    from mobilekit.layers.group_conv import train_grouped_convs_without_xla

    if epochs <= 0:
        return {}
    peak = lr if lr is not None else DEFAULT_LR_FACTOR * _run_lr(config)
    schedule = keras.optimizers.schedules.CosineDecay(peak, steps_per_epoch * epochs)
    if config.get("optimizer") == "sgd":
        optimizer = keras.optimizers.SGD(schedule, momentum=config.get("momentum", 0.9),
                                         nesterov=True)
    else:
        optimizer = keras.optimizers.Adam(schedule)
    loss = keras.losses.CategoricalCrossentropy(
        from_logits=outputs_logits(model), label_smoothing=config.get("label_smoothing", 0.0))
    train_grouped_convs_without_xla(model)
    model.compile(optimizer=optimizer, loss=loss,
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    history = model.fit(train_ds, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    return {k: [float(v) for v in values] for k, values in history.history.items()}


def _run_lr(config):
    return float(config.get("scaled_lr") or config.get("lr") or 1e-3)


def recalibrate_bn(model, train_ds, batches=PRECISE_BN_BATCHES):
    """Recompute BatchNorm moving statistics as the exact mean over `batches` batches.

    A compressed network's activations change (removed channels, factorised or sparse
    kernels), so the old moving statistics are stale; the trainer's precise-BN does this.
    """
    from mobilekit.train.trainer import PreciseBN

    if batches > 0:
        PreciseBN(model, train_ds, batches).on_test_begin()


def cost_summary(before, after):
    """MACs / params of two models (mobilekit.profile) and the fractions kept."""
    from mobilekit.profile import profile_model

    a, b = profile_model(before), profile_model(after)
    return {"macs_before": a["macs"], "macs_after": b["macs"],
            "macs_fraction": round(b["macs"] / a["macs"], 4) if a["macs"] else None,
            "params_before": a["params"], "params_after": b["params"],
            "params_fraction": round(b["params"] / a["params"], 4) if a["params"] else None}


def default_out(run_dir, suffix):
    """RUN_DIR-<suffix>, or RUN_DIR-<suffix>-2, ... (first name not taken)."""
    base = Path(run_dir)
    for i in range(1, 10000):
        path = base.with_name(f"{base.name}-{suffix}" + ("" if i == 1 else f"-{i}"))
        if not path.exists():
            return path
    raise RuntimeError(f"no free output directory for {base}-{suffix}")


def claim_out(path):
    """Create an empty output directory; refuse one that already holds files."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ValueError(f"--out {str(path)!r} exists and is not an empty directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_run(out, config, model, metrics, compression):
    """config.json (+ compression), model.keras and metrics.json in `out` (atomic each)."""
    from mobilekit.train.rundir import BEST, CONFIG, METRICS

    out = claim_out(out) if not Path(out).is_dir() else Path(out)
    config = {k: v for k, v in config.items() if k != "run_dir"}
    config["compression"] = compression
    write_json_atomic(out / CONFIG, config)
    from mobilekit.keras import keras

    # An uncompiled view of the same layers: model.keras holds no optimizer or loss.
    clean = keras.Model(model.inputs, model.outputs, name=model.name)
    tmp = out / f".model.{os.getpid()}.tmp.keras"
    clean.save(tmp)
    os.replace(tmp, out / BEST)
    write_json_atomic(out / METRICS, metrics)
    return out


def compress_run(run_dir, method, compress, out=None, epochs=2, lr=None, batch_size=None,
                 precise_bn=PRECISE_BN_BATCHES, callbacks=(), finish=None, measure=None,
                 settings=None, measure_compressed=True, verbose=0):
    """The shared job of every compression command; returns (out dir, metrics).

    compress(model, steps_per_epoch) -> (model to fine-tune, method report dict);
    finish(trained model) -> final model (e.g. strip the pruning wrappers);
    measure(final, source, out dir) -> report dict after fine-tuning (e.g. sparsity);
    both reports are merged into metrics.json. Accuracies: source_val_accuracy (the run's
    model), compressed_val_accuracy (before fine-tuning; skipped when
    measure_compressed=False), val_accuracy (after fine-tuning + BN recalibration).
    """
    import time

    source, config = load_source(run_dir)
    out = claim_out(out or default_out(run_dir, method))
    try:
        train_ds, val_ds, steps = datasets(config, batch_size)
        metrics = {"method": method, "source_run": str(run_dir),
                   "source_val_accuracy": accuracy(source, val_ds)}
        model, report = compress(source, steps)
        if measure_compressed:
            metrics["compressed_val_accuracy"] = accuracy(model, val_ds)
        start = time.perf_counter()
        history = fine_tune(model, config, train_ds, steps, epochs, lr, callbacks, verbose)
        final = finish(model) if finish else model
        recalibrate_bn(final, train_ds, precise_bn if epochs > 0 else 0)
        after = measure(final, source, out) if measure else {}
        metrics.update(val_accuracy=accuracy(final, val_ds), epochs=epochs,
                       fine_tune_seconds=round(time.perf_counter() - start, 1),
                       fine_tune_lr=lr if lr is not None else DEFAULT_LR_FACTOR * _run_lr(config),
                       history=history, **report, **after)
        compression = {"method": method, "source_run": str(run_dir), **(settings or {})}
        write_run(out, config, final, metrics, compression)
    except BaseException:
        if not any(out.iterdir()):
            out.rmdir()  # nothing written: leave no empty directory behind
        raise
    return out, metrics
