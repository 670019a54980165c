"""Latency model per target: a per-operator lookup table fitted to end-to-end timings.

The Python LiteRT interpreter has no per-operator profiler, so on the host the table is
fitted (nn-Meter's kernel-level idea, least squares instead of timing kernels one by one):
every sampled model is cut into operators read off its Keras graph (BatchNorm folds into
the conv, as the converter does), each keyed on op type, kernel and stride (`conv_k3_s2`,
`dwconv_k5_s1`, `add`, `hard_swish`, ...) with its MACs and the elements it reads and
writes (from the shapes); then per key three costs, per op, per MMAC and per million
elements, are fitted with non-negative least squares on relative error to the measured
end-to-end medians of the converted fp32 / int8 models. The LUT file holds these costs
per dtype together with the target, delegate and thread count it was measured with; a
prediction for another target or thread count is refused (ValueError).

Targets: host (LiteRT in this process, XNNPACK). local / adb / gpu are not implemented
here: building for them raises ValueError naming what is available.
"""
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice
from mobilekit.io import write_json_atomic

FORMAT = "mobilekit-latency-lut/1"
TARGETS = ("host", "local", "adb", "gpu")
IMPLEMENTED_TARGETS = ("host",)
DTYPES = ("fp32", "int8")
FEATURES = ("count", "mmacs", "melements")
RIDGE = 1e-3  # keeps keys seen in few samples from soaking up the noise
MEASURE_RUNS = 40


def check_target(target):
    check_choice("target", target, TARGETS)
    if target not in IMPLEMENTED_TARGETS:
        raise ValueError(f"latency models for --target {target} are not implemented yet "
                         f"(no per-operator timing path for it here); available: "
                         f"{', '.join(IMPLEMENTED_TARGETS)}")


# ---------------------------------------------------------------- operators of a model


def _elements(shape):
    return int(np.prod([d for d in shape[1:] if d is not None]))


def _shape(tensor_shape):
    return tensor_shape[0] if isinstance(tensor_shape, list) else tensor_shape


def model_ops(model):
    """[(key, macs, elements)] of the operators that run after conversion."""
    from mobilekit.keras import keras

    L = keras.layers
    ops = []
    for layer in model.layers:
        name = type(layer).__name__
        if isinstance(layer, (L.InputLayer, L.BatchNormalization, L.Dropout)):
            continue
        out = _shape(layer.output_shape)
        ins = layer.input_shape if isinstance(layer.input_shape, list) else [layer.input_shape]
        elements = _elements(out) + sum(_elements(s) for s in ins)
        macs = 0
        if isinstance(layer, L.DepthwiseConv2D):
            k, s = layer.kernel_size[0], layer.strides[0]
            key = f"dwconv_k{k}_s{s}"
            macs = k * k * _elements(out) * layer.depth_multiplier // layer.depth_multiplier
        elif isinstance(layer, L.Conv2D):
            k, s = layer.kernel_size[0], layer.strides[0]
            cin = ins[0][-1]
            groups = getattr(layer, "groups", 1)
            macs = k * k * cin // groups * _elements(out)
            if ins[0][1] == 1 and ins[0][2] == 1:
                key = "conv_on_1x1"  # squeeze-excite convs: overhead, not arithmetic
            else:
                key = f"{'gconv' if groups > 1 else 'conv'}_k{k}_s{s}"
        elif isinstance(layer, L.Dense):
            key, macs = "dense", ins[0][-1] * out[-1]
        elif isinstance(layer, L.Add):
            key = "add"
        elif isinstance(layer, L.Multiply) or name == "GateScale":
            key = "mul"
        elif isinstance(layer, L.GlobalAveragePooling2D):
            key = "mean"
        elif isinstance(layer, L.Concatenate):
            key = "concat"
        elif name == "HardSwish":
            key = "hard_swish"
        elif name == "HardSigmoid":
            key = "hard_sigmoid"
        elif isinstance(layer, (L.ReLU, L.Activation)):
            key = f"act_{getattr(layer, 'activation', None).__name__}" if isinstance(
                layer, L.Activation) else "relu"
        else:
            key = name.lower()
        ops.append((key, int(macs), int(elements)))
    return ops


def op_features(model):
    """{key: [count, MMACs, M elements]} summed over the model's operators."""
    feats = {}
    for key, macs, elements in model_ops(model):
        f = feats.setdefault(key, [0, 0.0, 0.0])
        f[0] += 1
        f[1] += macs / 1e6
        f[2] += elements / 1e6
    return feats


# ---------------------------------------------------------------- measuring on the host


def convert_for_latency(model, dtype, path, random_init=False):
    """Write the TFLite file of `model` in `dtype`, int8 calibrated on random images.

    random_init: the model is untrained, so its BatchNorm statistics are re-estimated on
    those images first (mobilekit.export.pipeline.reestimate_batchnorm): with fresh
    statistics int8 ranges collapse and XNNPACK refuses the residual ADDs, and the file
    would run 10x slower than the same network trained.
    """
    from mobilekit.export.convert import convert

    check_choice("dtype", dtype, DTYPES)
    shape = tuple(model.inputs[0].shape[1:])
    data = np.random.default_rng(0).standard_normal((16,) + shape).astype(np.float32)
    if random_init:
        from mobilekit.export.pipeline import reestimate_batchnorm

        reestimate_batchnorm(model, data)
    if dtype != "int8":
        data = None
    Path(path).write_bytes(convert(model, dtype, representative_data=data))
    return path


def measure_file(path, threads=1, runs=MEASURE_RUNS, passes=2):
    """Median invoke time (µs) on the host: the lower of `passes` medians of `runs` runs
    (a load burst from another process on a shared machine lifts one pass, rarely both)."""
    from mobilekit.bench.host import interleaved_medians

    return min(interleaved_medians([path], rounds=runs, threads=threads, warmup_runs=5)[0]
               for _ in range(passes))


def measure_points(points, resolution, dtypes, threads, log=print, workdir=None):
    """[{point, features, measured_us: {dtype: µs}}] for sampled points (models built,
    converted and timed one by one)."""
    from mobilekit.keras import keras
    from mobilekit.search.spaces import build

    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for i, point in enumerate(points):
            model = build(point, resolution)
            row = {"point": point, "features": op_features(model), "measured_us": {}}
            for dtype in dtypes:
                path = convert_for_latency(model, dtype, Path(tmp) / f"m{i}_{dtype}.tflite",
                                           random_init=True)
                row["measured_us"][dtype] = round(measure_file(path, threads), 2)
                os.unlink(path)
            keras.backend.clear_session()
            log(f"[{i + 1}/{len(points)}] {point['model']}: "
                + ", ".join(f"{d} {v / 1e3:.3f} ms" for d, v in row["measured_us"].items()))
            rows.append(row)
    return rows


# ---------------------------------------------------------------- fitting and predicting


def fit(rows, dtype):
    """{"base_us", "ops": {key: {us_per_op, us_per_mmac, us_per_melement}}} by NNLS on
    relative error with a small ridge."""
    from scipy.optimize import nnls

    keys = sorted({k for r in rows for k in r["features"]})
    columns = [(k, j) for k in keys for j in range(len(FEATURES))]

    def design(r):
        return [1.0] + [r["features"].get(k, [0, 0, 0])[j] for k, j in columns]

    X = np.array([design(r) for r in rows], float)
    y = np.array([r["measured_us"][dtype] for r in rows], float)
    Xr, yr = X / y[:, None], np.ones(len(y))  # relative error: divide each row by its target
    scale = np.maximum(np.abs(Xr).max(axis=0), 1e-12)
    Xs = Xr / scale
    n = Xs.shape[1]
    A = np.vstack([Xs, math.sqrt(RIDGE * len(y)) * np.eye(n)])
    b = np.concatenate([yr, np.zeros(n)])
    coef = nnls(A, b, maxiter=50 * n)[0] / scale
    table = {k: {} for k in keys}
    for (k, j), c in zip(columns, coef[1:]):
        table[k][("us_per_op", "us_per_mmac", "us_per_melement")[j]] = round(float(c), 6)
    return {"base_us": round(float(coef[0]), 4), "ops": table}


def predict_features(table, features):
    total = table["base_us"]
    for key, (count, mmacs, melements) in features.items():
        cost = table["ops"].get(key)
        if cost is None:
            # An operator the table never saw: priced like the mean of its kind's keys.
            cost = _fallback(table, key)
        total += (cost["us_per_op"] * count + cost["us_per_mmac"] * mmacs
                  + cost["us_per_melement"] * melements)
    return total


def _fallback(table, key):
    kind = key.split("_")[0]
    similar = [v for k, v in table["ops"].items() if k.split("_")[0] == kind] or \
        list(table["ops"].values())
    return {f: float(np.mean([v[f] for v in similar]))
            for f in ("us_per_op", "us_per_mmac", "us_per_melement")}


def errors(predicted, measured):
    """RMSPE (%) and the share within ±10 % of predictions against measurements."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = (p - m) / m
    return {"rmspe_pct": round(float(np.sqrt(np.mean(rel ** 2)) * 100), 2),
            "within_10pct": round(float(np.mean(np.abs(rel) <= 0.10)), 3),
            "max_abs_pct": round(float(np.max(np.abs(rel)) * 100), 2), "n": int(len(m))}


# ---------------------------------------------------------------- the LUT file


def build_lut(space_text, samples, seed, resolution, dtypes, threads=1, target="host",
              log=print):
    """Sample `samples` points of the space, measure them and fit one table per dtype."""
    from mobilekit.search.spaces import parse_space, sample

    check_target(target)
    for d in dtypes:
        check_choice("dtype", d, DTYPES)
    if samples < 3:
        raise ValueError(f"--samples must be >= 3 to fit a latency model; got {samples}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    space = parse_space(space_text)
    points = [sample(space, i, seed, resolution) for i in range(samples)]
    t0 = time.time()
    rows = measure_points(points, resolution, dtypes, threads, log)
    lut = {"format": FORMAT, "target": target, "delegate": "xnnpack", "threads": threads,
           "space": space["label"], "seed": seed, "resolution": resolution,
           "features": list(FEATURES), "tables": {}, "fit_error": {}, "samples": rows,
           "measure_seconds": round(time.time() - t0, 1), "host": _host()}
    for d in dtypes:
        table = fit(rows, d)
        lut["tables"][d] = table
        lut["fit_error"][d] = errors([predict_features(table, r["features"]) for r in rows],
                                     [r["measured_us"][d] for r in rows])
    return lut


def _host():
    import platform

    return {"machine": platform.machine(), "cpus": os.cpu_count(), "node": platform.node()}


def write_lut(path, lut):
    return write_json_atomic(path, lut)


def load_lut(path):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latency model {str(path)!r} does not exist "
                                "(build one with `mobilekit latency-model build`)")
    try:
        lut = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not a latency model (invalid JSON: {exc})") from None
    if not isinstance(lut, dict) or lut.get("format") != FORMAT:
        raise ValueError(f"{path} is not a latency model ({FORMAT})")
    return lut


class Predictor:
    """Predicts end-to-end latency (µs) of a Keras model from a LUT, for one target,
    thread count and dtype; refuses a LUT measured for another."""

    def __init__(self, lut, target="host", threads=1, dtype="fp32", path="LUT"):
        if lut["target"] != target:
            raise ValueError(f"latency model {path} was built for target {lut['target']!r}, "
                             f"not {target!r}; build one with --target {target}")
        if lut["threads"] != threads:
            raise ValueError(f"latency model {path} was measured with {lut['threads']} "
                             f"thread(s), not {threads}; build one with --threads {threads}")
        if dtype not in lut["tables"]:
            raise ValueError(f"latency model {path} has no {dtype} table (has "
                             f"{', '.join(lut['tables'])}); build it with --dtype {dtype}")
        self.lut, self.table, self.dtype = lut, lut["tables"][dtype], dtype

    @classmethod
    def load(cls, path, target="host", threads=1, dtype="fp32"):
        return cls(load_lut(path), target, threads, dtype, path)

    def predict(self, model):
        return round(predict_features(self.table, op_features(model)), 2)


def evaluate_lut(lut, space_text=None, samples=10, seed=None, resolution=None, dtypes=None,
                 log=print):
    """Held-out models (another seed) measured end to end against the LUT's predictions."""
    from mobilekit.search.spaces import parse_space, sample

    check_target(lut["target"])
    space = parse_space(space_text or lut["space"])
    seed = lut["seed"] + 1000 if seed is None else seed
    if space["label"] == lut["space"] and seed == lut["seed"]:
        raise ValueError(f"--seed {seed} is the seed the LUT was fitted on; held-out models "
                         "need another")
    resolution = resolution or lut["resolution"]
    dtypes = dtypes or list(lut["tables"])
    points = [sample(space, i, seed, resolution) for i in range(samples)]
    rows = measure_points(points, resolution, dtypes, lut["threads"], log)
    result = {"space": space["label"], "seed": seed, "resolution": resolution,
              "threads": lut["threads"], "target": lut["target"], "dtypes": {}}
    for d in dtypes:
        pred = [predict_features(lut["tables"][d], r["features"]) for r in rows]
        meas = [r["measured_us"][d] for r in rows]
        result["dtypes"][d] = {**errors(pred, meas),
                               "rows": [{"point": r["point"], "features": r["features"],
                                         "predicted_us": round(p, 2), "measured_us": m}
                                        for r, p, m in zip(rows, pred, meas)]}
    return result
