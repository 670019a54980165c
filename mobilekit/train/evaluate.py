"""Top-1/top-5 accuracy of a .keras model, a .tflite model or a run directory.

One code path: a backend gives a predict function (float32 normalised NHWC batch ->
float logits/scores), and the same loop and metric code count the hits. Preprocessing
is the EVAL transform of mobilekit.data with mean/std from (first found): explicit
arguments, the run directory's config.json, the .tflite's embedded metadata, the
dataset's own statistics.
"""
import importlib.util
import time
from pathlib import Path

import numpy as np

BACKENDS = (".keras", ".tflite")


def evaluate(model_path, spec="synthetic", resolution=None, batch_size=64, mean=None, std=None,
             limit=None):
    """dict with top1, top5, num_samples, num_classes, model, backend, data, resolution,
    mean, std, us_per_image (wall-clock, whole loop)."""
    model_file, run_config = resolve_model(model_path)
    predict, input_size, num_outputs, meta = _backend(model_file)
    resolution = _resolution(resolution, input_size, run_config, meta, model_file)
    mean, std = _normalization(mean, std, run_config, meta)
    from mobilekit.data import load_dataset

    ds, info = load_dataset(spec, "val", resolution, batch_size, training=False, mean=mean, std=std)
    if num_outputs != info["num_classes"]:
        raise ValueError(f"{model_file} outputs {num_outputs} classes but {spec} has "
                         f"{info['num_classes']} classes; evaluate it on matching data")
    counts = {"top1": 0, "top5": 0, "n": 0}
    start = time.perf_counter()
    for images, labels in ds:
        update_counts(counts, predict(images.numpy()), labels.numpy())
        if limit and counts["n"] >= limit:
            break
    elapsed = time.perf_counter() - start
    n = counts["n"]
    return {"top1": counts["top1"] / n, "top5": counts["top5"] / n, "num_samples": n,
            "num_classes": info["num_classes"], "model": str(model_file),
            "backend": model_file.suffix.lstrip("."), "data": str(spec), "resolution": resolution,
            "mean": info["mean"], "std": info["std"],
            "us_per_image": round(elapsed / n * 1e6, 1)}


def update_counts(counts, scores, labels):
    """Add one batch's top-1 / top-5 hits (ties broken by class index, like argsort)."""
    k = min(5, scores.shape[-1])
    top = np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    counts["top1"] += int((top[:, 0] == labels).sum())
    counts["top5"] += int((top == labels[:, None]).any(axis=1).sum())
    counts["n"] += len(labels)


def resolve_model(path):
    """(model file, run config or None) for a run directory, a .keras or a .tflite path."""
    from mobilekit.train.rundir import BEST, is_run_dir, load_run

    path = Path(path)
    if path.is_dir():
        config = load_run(path)
        if not (path / BEST).is_file():
            raise FileNotFoundError(f"run directory {str(path)!r} has no {BEST} yet "
                                    "(no epoch completed)")
        return path / BEST, config
    if not path.exists():
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    if path.suffix not in BACKENDS:
        raise ValueError(f"model must be a run directory or a file ending in "
                         f"{', '.join(BACKENDS)}; got {str(path)!r}")
    config = load_run(path.parent) if is_run_dir(path.parent) else None
    return path, config


def _backend(model_file):
    """(predict fn, (h, w) or None, number of outputs, metadata dict or None)."""
    if model_file.suffix == ".keras":
        return keras_backend(model_file)
    return tflite_backend(model_file)


def keras_backend(path):
    from mobilekit.loading import load_keras

    model = load_keras(path)

    def predict(batch):
        return model(batch, training=False).numpy()

    return predict, tuple(model.input_shape[1:3]), model.output_shape[-1], None


def tflite_backend(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    state = {"batch": int(inp["shape"][0])}
    meta = _tflite_metadata(path)
    layout = (meta or {}).get("input_layout")  # space-to-depth files (mobilekit.export.stem)
    size = layout["image_size"] if layout else inp["shape"][1:3]

    def predict(batch):
        if layout:
            from mobilekit.export.stem import apply_input_layout

            batch = apply_input_layout(batch, layout)
        if len(batch) != state["batch"]:
            interpreter.resize_tensor_input(inp["index"], [len(batch), *inp["shape"][1:]])
            interpreter.allocate_tensors()
            state["batch"] = len(batch)
        interpreter.set_tensor(inp["index"], quantize(batch, inp))
        interpreter.invoke()
        return dequantize(interpreter.get_tensor(out["index"]), out)

    return predict, tuple(int(v) for v in size), int(out["shape"][-1]), meta


def quantize(batch, detail):
    """float -> the input's integer type via its (scale, zero point); float inputs pass."""
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return batch.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)


def dequantize(values, detail):
    if not np.issubdtype(values.dtype, np.integer):
        return values.astype(np.float32)
    scale, zero = detail["quantization"]
    return (values.astype(np.float32) - zero) * scale


def _tflite_metadata(path):
    # The metadata reader belongs to mobilekit.export; evaluation works without it.
    if importlib.util.find_spec("mobilekit.export.metadata") is None:
        return None
    from mobilekit.export.metadata import read_metadata

    return read_metadata(path)


def _resolution(resolution, input_size, run_config, meta, model_file):
    fixed = input_size if input_size and None not in input_size else None
    if fixed and fixed[0] != fixed[1]:
        raise ValueError(f"{model_file} has a non-square input {fixed}; only square inputs are "
                         "evaluated")
    if resolution is not None:
        if fixed and fixed[0] != resolution:
            raise ValueError(f"--resolution {resolution} does not match {model_file}'s input "
                             f"size {fixed[0]}")
        return resolution
    if fixed:
        return int(fixed[0])
    for source in (run_config or {}, meta or {}):
        if source.get("resolution") or source.get("input_size"):
            return int(source.get("resolution") or source["input_size"][0])
    raise ValueError(f"{model_file} accepts any input size; give --resolution")


def _normalization(mean, std, run_config, meta):
    for source in (run_config, meta):
        if source and source.get("mean") and source.get("std"):
            mean = source["mean"] if mean is None else mean
            std = source["std"] if std is None else std
    return mean, std  # None: load_dataset falls back to the dataset's own statistics


def paired_drop(reference_hits, other_hits):
    """Top-1 drop (points) of `other` against `reference` scored on the same images, with
    its standard error from the discordant images (McNemar: sqrt(b + c) / n): on a few
    hundred images the drop moves by a point with the subset, so only pairs tell it."""
    import math

    a = np.asarray(reference_hits, bool)
    b = np.asarray(other_hits, bool)
    n, reference_only, other_only = len(a), int((a & ~b).sum()), int((b & ~a).sum())
    return {"images": n, "float_top1": float(a.mean()), "int8_top1": float(b.mean()),
            "drop_points": 100 * (reference_only - other_only) / n,
            "drop_se_points": 100 * math.sqrt(reference_only + other_only) / n,
            "float_only": reference_only, "int8_only": other_only}
