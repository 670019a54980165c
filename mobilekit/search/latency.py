"""Latency model per target: a per-operator lookup table fitted to end-to-end timings.

The Python LiteRT interpreter has no per-operator profiler, so on the host the table is
partly fitted: every sampled model is cut into operators read off its Keras graph
(BatchNorm folds into the conv, as the converter does), each keyed on op type, kernel and
stride (`conv_k3_s2`, `dwconv_k5_s1`, `add`, `hard_swish`, ...) with its MACs and the
elements it reads and writes (from the shapes). Depthwise convs, whose cost per MAC is far
from constant (7x7 runs 10-300x slower per MAC than 5x5 on XNNPACK here, int8 worst), are
also timed one by one as single-op models on a grid of output sides x channel counts
(nn-Meter's kernel-level tables; cost per output pixel, interpolated log-log). Then
per key four costs, per op, per MMAC, per million elements and a scale on the kernel
table's time, are fitted with non-negative least squares on relative error to the measured
end-to-end medians of the converted fp32 / int8 models. The LUT file holds these costs
per dtype together with the target, delegate and thread count it was measured with; a
prediction for another target or thread count is refused (ValueError).

Targets: host (LiteRT in this process, XNNPACK) here. local / adb (benchmark_model's
per-operator profile) and gpu (LiteRT's GPU accelerator, end to end) are built by
mobilekit.search.profiled into the same LUT format (and measured there by its Runner, also
in the search); build_lut / evaluate_lut here are the host's (check_target).
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
FEATURES = ("count", "mmacs", "melements", "kernel_us")
COSTS = ("us_per_op", "us_per_mmac", "us_per_melement", "kernel_scale")
RIDGE = 1e-3  # keeps keys seen in few samples from soaking up the noise
MEASURE_RUNS = 40


def check_target(target):
    check_choice("target", target, TARGETS)
    if target not in IMPLEMENTED_TARGETS:
        raise ValueError(f"the host latency model is not implemented for --target {target} "
                         f"(available: {', '.join(IMPLEMENTED_TARGETS)}); "
                         f"`mobilekit latency-model build --target {target}` builds its LUT")


# ---------------------------------------------------------------- operators of a model


def _elements(shape):
    return int(np.prod([d for d in shape[1:] if d is not None]))


def _shape(tensor_shape):
    return tensor_shape[0] if isinstance(tensor_shape, list) else tensor_shape


def model_ops(model, names=False):
    """[(key, macs, elements, (channels, output pixels))] of the operators that run after
    conversion; the last item only for kernel-table keys (depthwise convs), else None.
    names: each tuple starts with the Keras layer's name (mobilekit.search.profiled maps
    profiled TFLite operators back to layers by it)."""
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
        macs, ref = 0, None
        if isinstance(layer, L.DepthwiseConv2D):
            k, s = layer.kernel_size[0], layer.strides[0]
            key = f"dwconv_k{k}_s{s}"
            macs = k * k * _elements(out)
            ref = (int(out[-1]), int(out[1]), int(out[1] * out[2]))
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
        ops.append(((layer.name,) if names else ()) + (key, int(macs), int(elements), ref))
    return ops


def is_kernel_key(key):
    """Keys timed one by one into a kernel table: depthwise convs, whose cost per MAC
    changes by 10-300x with the kernel size and dtype on XNNPACK (7x7 int8 on AVX2)."""
    return key.startswith("dwconv_")


def op_features(model):
    """{key: [count, MMACs, M elements, [[channels, side, pixels], ...]]} over the model's
    operators (the list only for kernel-table keys)."""
    feats = {}
    for key, macs, elements, ref in model_ops(model):
        f = feats.setdefault(key, [0, 0.0, 0.0, []])
        f[0] += 1
        f[1] += macs / 1e6
        f[2] += elements / 1e6
        if ref is not None:
            f[3].append(list(ref))
    return feats


# ---------------------------------------------------------------- kernel tables

KERNEL_CHANNELS = (16, 64, 256, 1024)
# Output sides of the timed single-op models: the cost per pixel is not constant in the
# side (a 7x7 kernel on a 2x2 map in int8 costs ~100x per pixel what it does on 16x16).
KERNEL_SIDES = (2, 4, 8, 16, 32)


def _kernel_model(key, side, channels):
    from mobilekit.keras import keras, layers

    k, s = (int(part[1:]) for part in key.split("_")[1:3])
    inputs = layers.Input((side * s, side * s, channels))
    x = layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    return keras.Model(inputs, layers.ReLU()(x))


def measure_kernels(keys, dtypes, threads, log=print, workdir=None, channels=KERNEL_CHANNELS,
                    sides=KERNEL_SIDES):
    """{dtype: {key: {"sides", "channels", "us_per_px": [[per channel] per side]}}} from
    single-op models (depthwise conv + folded BN + ReLU) on the grid sides x channels."""
    from mobilekit.keras import keras

    sides, channels = sorted(set(sides)), sorted(set(channels))
    tables = {d: {} for d in dtypes}
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for key in sorted(keys):
            grid = {d: [] for d in dtypes}
            for side in sides:
                rows = {d: [] for d in dtypes}
                for c in channels:
                    model = _kernel_model(key, side, c)
                    for d in dtypes:
                        path = convert_for_latency(model, d, Path(tmp) / f"k_{d}.tflite",
                                                   random_init=True)
                        us = measure_file(path, threads, runs=_runs_for(path, threads))
                        rows[d].append(round(us / side ** 2, 4))
                    keras.backend.clear_session()
                for d in dtypes:
                    grid[d].append(rows[d])
            for d in dtypes:
                tables[d][key] = {"sides": sides, "channels": channels, "us_per_px": grid[d]}
            log(f"kernel table {key}: " + "; ".join(
                f"{d} side {sides[0]}: {grid[d][0]}, side {sides[-1]}: {grid[d][-1]}"
                for d in dtypes) + " (µs per output pixel at channels " + f"{channels})")
    return tables


def _runs_for(path, threads):
    # Slow kernels (7x7 int8 takes ms per call) get fewer runs: ~0.3 s per pass.
    first = measure_file(path, threads, runs=3, passes=1)
    return int(min(MEASURE_RUNS, max(5, 3e5 / max(first, 1.0))))


def _interp_log(xs, ys, x, extrapolate):
    """ys(x) linear in log-log between points; beyond them extrapolated (or clamped)."""
    lx, ly = np.log(xs), np.log(np.maximum(ys, 1e-9))
    t = math.log(x)
    if len(lx) == 1:
        return float(np.exp(ly[0]))
    if lx[0] < t < lx[-1] or not extrapolate:
        return float(np.exp(np.interp(t, lx, ly)))
    i = 0 if t <= lx[0] else len(lx) - 2
    slope = (ly[i + 1] - ly[i]) / (lx[i + 1] - lx[i])
    return float(np.exp(ly[i] + slope * (t - lx[i])))


def kernel_us(entry, refs):
    """Σ over ops (channels, side, pixels) of pixels x µs per pixel, interpolated in the
    kernel table log-log: extrapolated in channels, clamped in the side."""
    if not entry or not refs:
        return 0.0
    total = 0.0
    for channels, side, pixels in refs:
        per_side = [_interp_log(entry["channels"], row, channels, True)
                    for row in entry["us_per_px"]]
        total += pixels * _interp_log(entry["sides"], per_side, side, False)
    return total


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


def _design_row(features, key, kernels):
    f = features.get(key)
    if f is None:
        return [0.0] * len(FEATURES)
    return [f[0], f[1], f[2], kernel_us(kernels.get(key), f[3])]


def fit(rows, dtype, kernels=None):
    """{"base_us", "ops": {key: costs}, "kernels": {key: kernel table}} by NNLS
    on relative error with a small ridge; costs per op, MMAC, million elements, and a
    scale on the kernel table's time for depthwise convs."""
    from scipy.optimize import nnls

    kernels = kernels or {}
    keys = sorted({k for r in rows for k in r["features"]})
    columns = [(k, j) for k in keys for j in range(len(FEATURES))]

    def design(r):
        return [1.0] + [v for k in keys for v in _design_row(r["features"], k, kernels)]

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
        table[k][COSTS[j]] = round(float(c), 6)
    return {"base_us": round(float(coef[0]), 4), "ops": table, "kernels": kernels}


def predict_features(table, features):
    total = table["base_us"]
    kernels = table.get("kernels") or {}
    for key in features:
        cost = table["ops"].get(key)
        if cost is None:
            # An operator the table never saw: priced like the mean of its kind's keys.
            cost = _fallback(table, key)
        total += sum(cost.get(c, 0.0) * v
                     for c, v in zip(COSTS, _design_row(features, key, kernels)))
    return total


def _fallback(table, key):
    kind = key.split("_")[0]
    similar = [v for k, v in table["ops"].items() if k.split("_")[0] == kind] or \
        list(table["ops"].values())
    return {f: float(np.mean([v.get(f, 0.0) for v in similar])) for f in COSTS}


def errors(predicted, measured):
    """RMSPE (%) and the share within ±10 % of predictions against measurements."""
    p, m = np.asarray(predicted, float), np.asarray(measured, float)
    rel = (p - m) / m
    return {"rmspe_pct": round(float(np.sqrt(np.mean(rel ** 2)) * 100), 2),
            "within_10pct": round(float(np.mean(np.abs(rel) <= 0.10)), 3),
            "max_abs_pct": round(float(np.max(np.abs(rel)) * 100), 2), "n": int(len(m))}


# ---------------------------------------------------------------- the LUT file


def build_lut(space_text, samples, seed, resolution, dtypes, threads=1, target="host",
              log=print, kernel_channels=KERNEL_CHANNELS, kernel_sides=KERNEL_SIDES):
    """Sample `samples` points of the space, measure them and the depthwise convs one by
    one (at `kernel_channels`; empty: no kernel tables), and fit one table per dtype."""
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
    keys = {k for r in rows for k in r["features"] if is_kernel_key(k)}
    kernels = (measure_kernels(keys, dtypes, threads, log, channels=kernel_channels,
                               sides=kernel_sides or (8,))
               if kernel_channels else {})
    lut = {"format": FORMAT, "target": target, "delegate": "xnnpack", "threads": threads,
           "space": space["label"], "seed": seed, "resolution": resolution,
           "features": list(FEATURES), "tables": {}, "fit_error": {}, "samples": rows,
           "measure_seconds": round(time.time() - t0, 1), "host": _host()}
    for d in dtypes:
        table = fit(rows, d, kernels.get(d))
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
