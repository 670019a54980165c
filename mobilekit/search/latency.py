"""Latency model per target: per-operator lookup tables fitted to end-to-end timings.

The Python LiteRT interpreter has no per-operator profiler, so on the host the table is
partly fitted: every sampled model is cut into operators read off its Keras graph
(BatchNorm folds into the conv, as the converter does), each keyed on op type, kernel and
stride (`conv_k3_s2`, `dwconv_k5_s1`, `add`, `hard_swish`, ...) with its MACs and the
elements it reads and writes (from the shapes). The ops whose cost per MAC is far from
constant, depthwise convs (7x7 runs 10-20x slower than 5x5 in fp32 and up to ~500x in int8
on XNNPACK here) and pointwise convs, are also timed one by one as single fused ops
(conv + folded BN + ReLU) at every shape the space can produce (spaces.kernel_shapes;
nn-Meter's kernel tables, exact rather than sampled): a model's op is looked up by its
shape, interpolated between measured shapes that bracket it, and refused (OutsideTable)
when nothing does; the elementwise ops (add, mul, hard-swish, hard-sigmoid, mean) likewise
on a grid of sizes, priced by their elements. Then a scale per kind of table (depthwise,
pointwise, elementwise: an op alone runs with a warmer cache than in a network) and the
costs of the untabulated keys (per op, per MMAC, per million elements) are fitted with
non-negative least squares on relative error to the measured end-to-end times of the
converted fp32 / int8 models. Timings: all files of a build (samples, kernel models) timed
round-robin in the same sessions, each timed invoke after an untimed one of the same file
(warm caches), passes with fresh interpreters, a low quantile per pass (measure_files). The
LUT file holds the costs and kernel tables per dtype with the target, delegate and thread
count it was measured with; a prediction for another target or thread count is refused
(ValueError).

Targets: host (LiteRT in this process, XNNPACK) here. local / adb (benchmark_model's
per-operator profile) and gpu (LiteRT's GPU accelerator, end to end) are built by
mobilekit.search.profiled into the same LUT format (and measured there by its Runner, also
in the search); build_lut / evaluate_lut here are the host's (check_target).
"""
import gzip
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice
from mobilekit.io import write_json_atomic

FORMAT = "mobilekit-latency-lut/2"  # /1: per-pixel grids only, no longer read
TARGETS = ("host", "local", "adb", "gpu")
IMPLEMENTED_TARGETS = ("host",)
DTYPES = ("fp32", "int8")
FEATURES = ("count", "mmacs", "melements", "kernel_us")
COSTS = ("us_per_op", "us_per_mmac", "us_per_melement", "kernel_scale")
RIDGE = 1e-3  # keeps keys seen in few samples from soaking up the noise
MEASURE_RUNS = 40
QUANTILE = 20  # per-pass statistic of the invoke times (measure_files)
# Untimed invokes before each timed one in a round-robin (measure_files): without, a small
# model timed among hundreds of kernel files ran 2-3x slower than among a few (its weights
# and buffers evicted by the others), and LUT and held-out models timed in sessions of
# different sizes disagreed by that much.
WARM_INVOKES = 1


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
    """[(key, macs, elements, shape)] of the operators that run after conversion; the shape
    only for kernel-table keys (depthwise: (output side, channels); pointwise: (side, C_in,
    C_out)), else None. names: each tuple starts with the Keras layer's name
    (mobilekit.search.profiled maps profiled TFLite operators back to layers by it)."""
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
            ref = (int(out[1]), int(out[-1]))
        elif isinstance(layer, L.Conv2D):
            k, s = layer.kernel_size[0], layer.strides[0]
            cin = ins[0][-1]
            groups = getattr(layer, "groups", 1)
            macs = k * k * cin // groups * _elements(out)
            if ins[0][1] == 1 and ins[0][2] == 1:
                key = "conv_on_1x1"  # squeeze-excite convs: overhead, not arithmetic
            else:
                key = f"{'gconv' if groups > 1 else 'conv'}_k{k}_s{s}"
                if key == "conv_k1_s1":
                    ref = (int(out[1]), int(cin), int(out[-1]))
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
        if key in ELEMENTWISE_KEYS:  # priced by the elements it writes (mean: it reads)
            ref = (max(_elements(out), _elements(ins[0])),)
        ops.append(((layer.name,) if names else ()) + (key, int(macs), int(elements), ref))
    return ops


# Elementwise ops, timed one by one on a grid of sizes (ELEMENT_GRID): fitted from the
# end-to-end times alone their per-op costs soaked up what the tables missed (a residual
# ADD priced at 9.4 µs that costs < 1 µs in the chain: small models came out 18 % high).
ELEMENTWISE_KEYS = frozenset({"add", "mul", "hard_swish", "hard_sigmoid", "mean"})
ELEMENT_GRID = tuple(2 ** i for i in range(6, 21))  # elements: 64 .. 1,048,576


def is_kernel_key(key):
    """Keys timed one by one, shape by shape, into a kernel table: depthwise convs, whose
    cost per MAC changes by 10-500x with kernel size, channels and dtype on XNNPACK (7x7),
    and pointwise convs, whose cost per MAC depends on C_in / C_out (nn-Meter's kernels)."""
    return key.startswith("dwconv_") or key == "conv_k1_s1"


def element_shapes(keys, grid=ELEMENT_GRID):
    """{key: {(elements,)}}: the grid each elementwise op is timed on (kernel tables)."""
    return {key: {(n,) for n in grid} for key in keys}


def op_features(model):
    """{key: [count, MMACs, M elements, [shape, ...]]} over the model's operators (the
    shapes only for kernel-table keys)."""
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

# None: time exactly the shapes the space can produce (spaces.kernel_shapes); a tuple of
# channels (with KERNEL_SIDES) adds a grid of depthwise shapes for models outside the space.
KERNEL_CHANNELS = None
KERNEL_SIDES = (2, 4, 8, 16, 32)
KERNEL_PASSES = 3


class OutsideTable(ValueError):
    """An operator shape the kernel table neither holds nor brackets: not predictable."""


def _kernel_model(key, shape):
    """Single fused op as the converter emits it in context: conv + folded BN + ReLU."""
    from mobilekit.keras import keras, layers

    if key in ELEMENTWISE_KEYS:
        return _element_model(key, shape[0])
    k, s = (int(part[1:]) for part in key.split("_")[1:3])
    if key.startswith("dwconv_"):
        side, channels = shape
        inputs = layers.Input((side * s, side * s, channels))
        x = layers.DepthwiseConv2D(k, strides=s, padding="same", use_bias=False)(inputs)
    else:
        side, cin, cout = shape
        inputs = layers.Input((side, side, cin))
        x = layers.Conv2D(cout, 1, use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    return keras.Model(inputs, layers.ReLU()(x))


def _element_model(key, elements):
    """One elementwise op on `elements` values (an (n/32, 2, 16) map: XNNPACK runs these
    flat, so only the count matters)."""
    from mobilekit.keras import keras, layers
    from mobilekit.layers.activations import HardSigmoid, HardSwish

    inputs = layers.Input((max(elements // 32, 1), 2, 16))
    op = {"add": lambda x: layers.Add()([x, x]), "mul": lambda x: layers.Multiply()([x, x]),
          "hard_swish": HardSwish(), "hard_sigmoid": HardSigmoid(),
          "mean": layers.GlobalAveragePooling2D()}[key]
    return keras.Model(inputs, op(inputs))


def _overhead_model():
    from mobilekit.keras import keras, layers

    inputs = layers.Input((2, 2, 8))
    return keras.Model(inputs, layers.ReLU()(inputs))


def convert_kernels(shapes, dtypes, tmp, log=print):
    """(jobs [(key, shape)], {dtype: [overhead model's file, then one file per job]}): every
    shape of `shapes` ({key: {shape}}) as a single-op model (kernel_tables prices them)."""
    from mobilekit.keras import keras

    jobs = [(key, tuple(shape)) for key in sorted(shapes) for shape in sorted(shapes[key])]
    paths = {d: [] for d in dtypes}
    t0 = time.time()
    for n, (key, shape) in enumerate([(None, None)] + jobs):
        model = _overhead_model() if key is None else _kernel_model(key, shape)
        for d in dtypes:
            paths[d].append(convert_for_latency(
                model, d, Path(tmp) / f"k{n}_{d}.tflite", random_init=key is not None))
        keras.backend.clear_session()
        if n % 50 == 0:
            log(f"kernel tables: converted {n}/{len(jobs)} shapes ({time.time() - t0:.0f} s)")
    return jobs, paths


def kernel_tables(jobs, paths, us, log=print):
    """{dtype: {key: {"shapes": [[*shape, µs], ...], "overhead_us"}}} from the files' times
    `us` {path: µs}: each single-op model's time less the invoke overhead of a one-ReLU
    model (what the op costs inside a larger graph)."""
    tables = {d: {} for d in paths}
    for d in paths:
        overhead = float(us[paths[d][0]])
        for (key, shape), path in zip(jobs, paths[d][1:]):
            # an op faster than the overhead's noise still costs something: keep 5 %
            t = max(float(us[path]) - overhead, 0.05 * float(us[path]))
            entry = tables[d].setdefault(key, {"shapes": [], "overhead_us": round(overhead, 3)})
            entry["shapes"].append([*shape, round(t, 3)])
        log(f"kernel tables {d}: overhead {overhead:.1f} µs; " + "; ".join(
            f"{k} {len(v['shapes'])} shapes {min(r[-1] for r in v['shapes']):.1f}-"
            f"{max(r[-1] for r in v['shapes']):.1f} µs" for k, v in sorted(tables[d].items())))
    return tables


def _interp_log(xs, ys, x):
    """ys(x) linear in log-log between the bracketing points (xs sorted)."""
    lx, ly = np.log(xs), np.log(np.maximum(ys, 1e-9))
    return float(np.exp(np.interp(math.log(x), lx, ly)))


def _lookup(key, entry, shape):
    """µs of one op: the measured shape, else interpolated log-log along its last dimension
    (channels / C_out) between measured shapes that agree on the others, else along the
    side (per output pixel); OutsideTable when neither brackets it."""
    index = {tuple(r[:-1]): r[-1] for r in entry["shapes"]}
    shape = tuple(shape)
    if shape in index:
        return index[shape]
    if len(shape) == 1:
        return _lookup_elements(index, shape[0])
    for axis in (len(shape) - 1, 0):
        same = sorted((k[axis], v) for k, v in index.items()
                      if k[:axis] + k[axis + 1:] == shape[:axis] + shape[axis + 1:])
        xs = [x for x, _ in same]
        if len(xs) >= 2 and xs[0] <= shape[axis] <= xs[-1]:
            if axis == 0:  # across sides the time scales with the pixels
                return _interp_log(xs, [v / x ** 2 for x, v in same], shape[0]) * shape[0] ** 2
            return _interp_log(xs, [v for _, v in same], shape[axis])
    raise OutsideTable(f"{key} of shape {list(shape)} is outside the latency model's kernel "
                       f"table ({len(index)} measured shapes, none bracketing it); rebuild "
                       "the LUT with `mobilekit latency-model build` for this space / "
                       "resolution")


def _lookup_elements(index, n):
    """An elementwise op on n elements: log-log between the grid's sizes; beyond the grid
    linear in n from its largest size (a memory-bound pass costs per element), below it the
    smallest size's time (per-op overhead dominates there)."""
    xs = sorted(k[0] for k in index)
    if n >= xs[-1]:
        return index[(xs[-1],)] * n / xs[-1]
    if n <= xs[0]:
        return index[(xs[0],)]
    return _interp_log(xs, [index[(x,)] for x in xs], n)


def kernel_us(entry, refs, key="kernel"):
    """Σ over the ops' shapes of their table time (µs); 0 without a table."""
    if not entry or not refs:
        return 0.0
    return float(sum(_lookup(key, entry, shape) for shape in refs))


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
    """Invoke time (µs) on the host with the statistic the LUT is fitted to (so that a
    search's measured finalists and its predictions agree): the lower of `passes` QUANTILE-th
    percentiles of `runs` runs, each pass with a fresh interpreter."""
    from mobilekit.bench.host import interleaved_times

    return min(float(np.percentile(interleaved_times([path], rounds=runs, threads=threads,
                                                     warmup_runs=5)[0], QUANTILE))
               for _ in range(passes))


def measure_files(paths, threads=1, passes=3, budget_s=None):
    """[[µs per pass] per file]: the files timed round-robin (one invoke of each in turn, so
    a load change on the shared host hits all alike), each pass with fresh interpreters
    (fresh buffers and weight packing); per pass the QUANTILE of the invoke times, not the
    median: on this 2-core host shared with other jobs (load 5-10) the median moves by
    25-90 % between passes while the 20th percentile of the same fp32 runs moves by 2-3 %
    (a run that nobody preempted). Each timed invoke follows an untimed one of the same
    file (warm caches, as the model runs alone on a device: WARM_INVOKES). Rounds per pass:
    MEASURE_RUNS, fewer (>= 7) when one round is slow (7x7 int8 files take ms), to
    ~budget_s per pass."""
    from mobilekit.bench.host import interleaved_times

    if not paths:
        return []
    probe = interleaved_times(paths, rounds=1, threads=threads, warmup_runs=1)
    budget_s = budget_s or max(10.0, 0.02 * len(paths))
    rounds = int(min(MEASURE_RUNS, max(7, budget_s / max(sum(t[0] for t in probe) / 1e6,
                                                          1e-6))))
    stats = [[float(np.percentile(t, QUANTILE)) for t in
              interleaved_times(paths, rounds=rounds, threads=threads, warmup_runs=3,
                                warm_invokes=WARM_INVOKES)]
             for _ in range(passes)]
    return [[round(m[i], 2) for m in stats] for i in range(len(paths))]


def measure_points(points, resolution, dtypes, threads, log=print, workdir=None, passes=3,
                   repeats=1):
    """[{point, features, measured_us: {dtype: µs}, pass_us: {dtype: [µs per pass]}}] for
    sampled points: all converted first, then timed round-robin together (measure_files;
    measured = min over the passes). repeats > 1: the whole measurement again, each
    repeat's min over its passes in `repeat_us` {dtype: [µs per repeat]} (the noise floor)."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        rows, files = convert_points(points, resolution, dtypes, tmp)
        sessions = [measure_files([p for _, _, p in files], threads, passes=passes)
                    for _ in range(repeats)]
    return point_timings(rows, files, sessions, log)


def convert_points(points, resolution, dtypes, tmp):
    """(rows [{point, features}], files [(row index, dtype, path)]): each point's model
    converted in every dtype."""
    from mobilekit.keras import keras
    from mobilekit.search.spaces import build

    rows, files = [], []
    for i, point in enumerate(points):
        model = build(point, resolution)
        rows.append({"point": point, "features": op_features(model), "measured_us": {},
                     "pass_us": {}})
        for dtype in dtypes:
            files.append((i, dtype, convert_for_latency(
                model, dtype, Path(tmp) / f"m{i}_{dtype}.tflite", random_init=True)))
        keras.backend.clear_session()
    return rows, files


def point_timings(rows, files, sessions, log=print):
    """`rows` with their times from `sessions` ([[µs per pass] per file] per repeat, the
    files in the order of convert_points')."""
    for n, (i, dtype, _) in enumerate(files):
        us = [u for session in sessions for u in session[n]]
        rows[i]["pass_us"][dtype] = us
        rows[i]["measured_us"][dtype] = min(us)
        if len(sessions) > 1:
            rows[i].setdefault("repeat_us", {})[dtype] = [min(s[n]) for s in sessions]
    for i, row in enumerate(rows):
        log(f"[{i + 1}/{len(rows)}] {row['point']['model']}: " + ", ".join(
            f"{d} {v / 1e3:.3f} ms" for d, v in row["measured_us"].items()))
    return rows


# ---------------------------------------------------------------- fitting and predicting


def _design_row(features, key, kernels):
    f = features.get(key)
    if f is None:
        return [0.0] * len(FEATURES)
    if kernels.get(key):  # the table prices MACs and traffic of this op shape by shape
        return [f[0], 0.0, 0.0, kernel_us(kernels[key], f[3], key)]
    return [f[0], f[1], f[2], 0.0]


TABLE_SCALES = ("kind", "fixed", "fitted")


def table_kind(key):
    """The group a tabulated key shares its table scale with (fit's table_scale="kind")."""
    if key.startswith("dwconv_"):
        return "depthwise"
    return "pointwise" if key == "conv_k1_s1" else "elementwise"


def fit(rows, dtype, kernels=None, table_scale="kind"):
    """{"base_us", "ops": {key: costs}, "kernels": {key: kernel table}} by NNLS on relative
    error with a small ridge: costs per op, MMAC and million elements of the keys without
    a kernel table, plus the tabulated keys' table times times a scale:

    - "kind" (the default): one scale per kind of table (depthwise, pointwise,
      elementwise; ridged towards 1): a single op timed alone runs with its weights and
      input in cache, inside a network less so (here fp32 depthwise convs cost 1.2-1.3x
      their table time in the chain, pointwise 1.5-2.1x; int8 1.07x and 1.1-1.5x), and
      that differs by kind more than by shape;
    - "fixed": scale 1 (nn-Meter sums its kernels' predictions so);
    - "fitted": per tabulated key a cost per op and a scale (the earlier fit). Measured on
      mbspace at 64 px (docs/search.md) that did harm: with dozens of free costs on 40
      samples the fit moved time between keys (int8 pointwise tables scaled by 0.18,
      residual ADDs by 18) and small models came out 15-50 % off."""
    from scipy.optimize import nnls

    check_choice("table_scale", table_scale, TABLE_SCALES)
    kernels = kernels or {}
    keys = sorted({k for r in rows for k in r["features"]})
    tabulated = {k for k in keys if kernels.get(k)} if table_scale != "fitted" else set()
    kind = {k: table_kind(k) if table_scale == "kind" else None for k in tabulated}
    kinds = sorted({g for g in kind.values() if g})
    columns = [(k, j) for k in keys if k not in tabulated for j in range(len(FEATURES))]
    kernel_j = FEATURES.index("kernel_us")

    def design(r):
        us = {k: _design_row(r["features"], k, kernels) for k in keys}
        fixed = sum(us[k][kernel_j] for k in tabulated if kind[k] is None)
        per_kind = [sum(us[k][kernel_j] for k in tabulated if kind[k] == g) for g in kinds]
        return [1.0] + per_kind + [us[k][j] for k, j in columns], fixed

    designs = [design(r) for r in rows]
    X = np.array([d for d, _ in designs], float)
    y = np.array([r["measured_us"][dtype] for r in rows], float)
    t = np.array([f for _, f in designs], float)
    Xr, yr = X / y[:, None], (y - t) / y  # relative error: divide each row by its target
    scale = np.maximum(np.abs(Xr).max(axis=0), 1e-12)
    Xs = Xr / scale
    n = Xs.shape[1]
    prior = np.array([0.0] + [1.0] * len(kinds) + [1.0 if j == kernel_j else 0.0
                                                   for _, j in columns]) * scale
    A = np.vstack([Xs, math.sqrt(RIDGE * len(y)) * np.eye(n)])
    b = np.concatenate([yr, math.sqrt(RIDGE * len(y)) * prior])
    coef = nnls(A, b, maxiter=50 * n)[0] / scale
    scales = dict(zip(kinds, coef[1:1 + len(kinds)]))
    table = {k: dict.fromkeys(COSTS, 0.0) | {"kernel_scale": round(float(
        scales.get(kind[k], 1.0)), 6)} for k in tabulated}
    table.update({k: {} for k in keys if k not in tabulated})
    for (k, j), c in zip(columns, coef[1 + len(kinds):]):
        table[k][COSTS[j]] = round(float(c), 6)
    return {"base_us": round(float(coef[0]), 4), "ops": dict(sorted(table.items())),
            "kernels": kernels, "table_scale": table_scale}


def predict_features(table, features):
    total = table["base_us"]
    kernels = table.get("kernels") or {}
    for key in features:
        cost = table["ops"].get(key)
        if kernels and cost is None and is_kernel_key(key) and key not in kernels:
            # e.g. a 7x7 conv priced from a 3x3/5x5 LUT: 10-500x off, refuse to guess
            raise OutsideTable(f"{key} was neither measured nor fitted by this latency "
                               f"model (its kernel tables: {', '.join(sorted(kernels))}); "
                               "rebuild the LUT with `mobilekit latency-model build` for "
                               "this space")
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
              log=print, kernel_channels=KERNEL_CHANNELS, kernel_sides=KERNEL_SIDES,
              element_sizes=None):
    """Sample `samples` points of the space, time them and the kernel-table ops one by one
    (every depthwise / pointwise shape the space can produce, plus a grid of depthwise
    shapes kernel_sides x kernel_channels when channels are given; () or 'none': no kernel
    tables, fitted costs only; the elementwise ops of the samples on `element_sizes`, None:
    ELEMENT_GRID, (): none), all in the same round-robin sessions, and fit one table per
    dtype."""
    return build_lut_with_heldout(space_text, samples, seed, resolution, dtypes, threads,
                                  target, log, kernel_channels, kernel_sides,
                                  element_sizes)[0]


def build_lut_with_heldout(space_text, samples, seed, resolution, dtypes, threads=1,
                           target="host", log=print, kernel_channels=KERNEL_CHANNELS,
                           kernel_sides=KERNEL_SIDES, element_sizes=None, heldout=0,
                           heldout_seed=None, repeats=1):
    """(lut, held-out rows) of build_lut: `heldout` models of `heldout_seed` (default
    seed + 1000) timed in the same round-robin sessions as the LUT's samples and kernel
    models. Why: this shared host's speed wanders over minutes, all models together (2-3 %
    RMS between a build and a later session when quiet, up to 30 % under other jobs), and
    no table can know it; timed together the LUT and the held-out models share it, and the
    comparison shows the predictor's own error. repeats: that many sessions (the held-out
    rows' repeat_us: the noise floor)."""
    from mobilekit.search.spaces import parse_space, sample

    check_target(target)
    for d in dtypes:
        check_choice("dtype", d, DTYPES)
    if samples < 3:
        raise ValueError(f"--samples must be >= 3 to fit a latency model; got {samples}")
    if threads < 1:
        raise ValueError(f"--threads must be >= 1; got {threads}")
    space = parse_space(space_text)
    heldout_seed = seed + 1000 if heldout_seed is None else heldout_seed
    if heldout and heldout_seed == seed:
        raise ValueError(f"held-out models need another seed than the LUT's ({seed})")
    points = [sample(space, i, seed, resolution) for i in range(samples)]
    points += [sample(space, i, heldout_seed, resolution) for i in range(heldout)]
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        rows, files = convert_points(points, resolution, dtypes, tmp)
        shapes = _table_shapes(space, resolution, rows[:samples], kernel_channels,
                               kernel_sides, element_sizes)
        jobs, kpaths = convert_kernels(shapes, dtypes, tmp, log) if shapes else ([], {})
        kfiles = [p for d in kpaths for p in kpaths[d]]
        log(f"timing {len(files)} model files and {len(kfiles)} kernel files round-robin")
        paths = [p for _, _, p in files] + kfiles
        sessions = [measure_files(paths, threads, passes=KERNEL_PASSES)
                    for _ in range(repeats)]
    n = len(files)
    rows = point_timings(rows, files, [s[:n] for s in sessions], log)
    kernels = kernel_tables(jobs, kpaths, {p: min(u for s in sessions for u in s[n + j])
                                           for j, p in enumerate(kfiles)}, log)
    rows, held = rows[:samples], rows[samples:]
    lut = {"format": FORMAT, "target": target, "delegate": "xnnpack", "threads": threads,
           "space": space["label"], "seed": seed, "resolution": resolution,
           "features": list(FEATURES), "tables": {}, "fit_error": {}, "samples": rows,
           "measure_seconds": round(time.time() - t0, 1), "host": _host()}
    for d in dtypes:
        table = fit(rows, d, kernels.get(d))
        lut["tables"][d] = table
        lut["fit_error"][d] = errors([predict_features(table, r["features"]) for r in rows],
                                     [r["measured_us"][d] for r in rows])
    return lut, held


def _table_shapes(space, resolution, rows, kernel_channels, kernel_sides, element_sizes):
    """{key: {shape}} the kernel tables time (see build_lut); {} for none."""
    from mobilekit.search.spaces import kernel_shapes

    if kernel_channels is not None and not len(kernel_channels):
        return {}
    # only spaces that enumerate their shapes get conv tables: a table of the samples'
    # shapes alone would refuse most new candidates (regnet: fitted costs only)
    shapes = kernel_shapes(space, resolution)
    for k in [k for k in shapes if k.startswith("dwconv_")] if kernel_channels else []:
        shapes[k].update((side, c) for side in (kernel_sides or KERNEL_SIDES)
                         for c in kernel_channels)
    # the elementwise ops the samples hold, on a size grid (any space, regnet too)
    if element_sizes is None or len(element_sizes):
        shapes.update(element_shapes(ELEMENTWISE_KEYS & {k for r in rows
                                                         for k in r["features"]},
                                     element_sizes or ELEMENT_GRID))
    return shapes


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
    try:  # a LUT may be gzipped (the ones under docs/search/ are: 400 KB -> 24 KB)
        lut = json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz"
                         else path.read_text())
    except (json.JSONDecodeError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a latency model (invalid JSON: {exc})") from None
    if not isinstance(lut, dict) or lut.get("format") != FORMAT:
        found = lut.get("format") if isinstance(lut, dict) else None
        if str(found).startswith(FORMAT.rsplit("/", 1)[0] + "/"):
            raise ValueError(f"{path} is a latency model of format {found}, this mobilekit "
                             f"reads {FORMAT} (per-shape kernel tables); rebuild it with "
                             "`mobilekit latency-model build`")
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
                 log=print, repeats=2, retime_samples=False):
    """Held-out models (another seed) measured end to end against the LUT's predictions.

    The models are measured `repeats` times (each a round-robin session with fresh
    interpreters); `noise_floor` is the RMSPE of the first repeat against the second: the
    measurement's own error, which no predictor can beat. Predictions are compared with
    the min over all repeats.

    retime_samples: the LUT's own sample models are timed again in the same round-robin
    sessions; `drift` is the RMSPE of their build-time timings against these (how far the
    host moved since the build: on a shared VM 5-25 %, more than the noise floor), and
    `refit` the error of the table refitted on the re-timed samples (same kernel tables):
    the predictor's own error with the host's drift since the build taken out."""
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
    _check_predictable(lut, points, resolution, dtypes)
    own = [r["point"] for r in lut["samples"]] if retime_samples else []
    rows = measure_points(own + points, resolution, dtypes, lut["threads"], log,
                          repeats=repeats)
    retimed, rows = rows[:len(own)], rows[len(own):]
    result = {"space": space["label"], "seed": seed, "resolution": resolution,
              "threads": lut["threads"], "target": lut["target"], "repeats": repeats,
              "dtypes": {}}
    for d in dtypes:
        meas = [r["measured_us"][d] for r in rows]
        if retimed:
            table = fit(retimed, d, lut["tables"][d].get("kernels"))
            result.setdefault("drift", {})[d] = errors(
                [r["measured_us"][d] for r in lut["samples"]],
                [r["measured_us"][d] for r in retimed])
            result.setdefault("refit", {})[d] = {
                **errors([predict_features(table, r["features"]) for r in rows], meas),
                "table": table, "samples_us": [r["measured_us"][d] for r in retimed]}
        result["dtypes"][d] = heldout_errors(lut["tables"][d], rows, d)
    return result


def heldout_errors(table, rows, dtype):
    """errors() of the table's predictions for measured rows, the rows (point, features,
    predicted, measured, repeats) and, with repeats, the noise floor (repeat 1 vs 2)."""
    pred = [predict_features(table, r["features"]) for r in rows]
    meas = [r["measured_us"][dtype] for r in rows]
    out = {**errors(pred, meas),
           "rows": [{"point": r["point"], "features": r["features"],
                     "predicted_us": round(p, 2), "measured_us": m,
                     "repeat_us": r.get("repeat_us", {}).get(dtype)}
                    for r, p, m in zip(rows, pred, meas)]}
    if rows and len(rows[0].get("repeat_us", {}).get(dtype) or ()) > 1:
        reps = [r["repeat_us"][dtype] for r in rows]
        out["noise_floor"] = errors([x[0] for x in reps], [x[1] for x in reps])
    return out


def _check_predictable(lut, points, resolution, dtypes):
    """OutsideTable before anything is measured if a point has an op the LUT cannot price."""
    from mobilekit.keras import keras
    from mobilekit.search.spaces import build

    for point in points:
        features = op_features(build(point, resolution))
        keras.backend.clear_session()
        for d in dtypes:
            predict_features(lut["tables"][d], features)

