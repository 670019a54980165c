"""Latency models for targets other than the host: local / adb from benchmark_model's
per-operator profile, gpu from LiteRT's GPU accelerator end to end.

local / adb (nn-Meter style): each sampled model is converted (fp32 / int8) and run by
benchmark_model with `--enable_op_profiling=true` (mobilekit.bench.benchmark_model: the
binary on this machine, or pushed to a phone through adb). The regular runs' Run Order
table gives every operator's average time. Each profiled row is mapped back to the Keras
layer it came from: a TFLite builtin row by its node index (the name is that node's output
tensor, whose name carries the Keras layer names fused into it), an XNNPACK operator row
(a build that profiles inside XNNPACK) by order and kind among the nodes XNNPACK took.
The layer gives the same key, MACs and elements that mobilekit.search.latency.model_ops
reads off the Keras graph, so the table prices exactly what the predictor sees. Per key,
costs per op / MMAC / million elements are fitted by NNLS (relative error) to the
layer-level timings; what no layer explains (interpreter overhead, operators of no layer)
becomes `base_us`, the median residual against a separate end-to-end run (profiling off).

gpu: LiteRT's GPU accelerator has no per-operator profiler, so, as on the host, the
per-key table is fitted to end-to-end medians of the sampled models (run_gpu's timing);
the adapter is recorded, and a software one (Mesa lavapipe) marks the timings as
software emulation.

The LUT has the format of mobilekit.search.latency (tables per dtype; Predictor and its
refusals of another target / thread count work unchanged) plus what was measured on:
serial, device, delegate, binary hash or adapter.
"""
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice
from mobilekit.search.latency import (COSTS, DTYPES, FORMAT, FEATURES, RIDGE, convert_for_latency,
                                      errors, fit, model_ops, op_features, predict_features)

PROFILED_TARGETS = ("local", "adb")
TARGETS = PROFILED_TARGETS + ("gpu",)
CPU_DELEGATES = ("xnnpack", "cpu")
GPU_PRECISION = "fp16"  # the accelerator's default (precision loss allowed)
BENCH_RUNS = 30

# TFLite builtin op -> the key prefixes of the layers it can implement.
_OP_KEYS = {"CONV_2D": ("conv_", "gconv_"), "DEPTHWISE_CONV_2D": ("dwconv_",),
            "FULLY_CONNECTED": ("dense",), "MEAN": ("mean",), "ADD": ("add",), "MUL": ("mul",),
            "CONCATENATION": ("concat",), "HARD_SWISH": ("hard_swish",)}
# XNNPACK operator names (its profiler's node types) -> the TFLite op they implement.
_XNN_OPS = [(re.compile(p, re.I), op) for p, op in (
    (r"depthwise", "DEPTHWISE_CONV_2D"), (r"convolution", "CONV_2D"),
    (r"fully connected", "FULLY_CONNECTED"), (r"^add", "ADD"), (r"^multiply", "MUL"),
    (r"mean|global average pooling", "MEAN"), (r"hardswish|hard swish", "HARD_SWISH"),
    (r"concatenat", "CONCATENATION"))]
_OPAQUE = re.compile(r"^TfLite\w*Delegate|^DELEGATE$")


# ---------------------------------------------------------------- TFLite operators


def tflite_ops(path):
    """[{"index", "op", "names"}] of the file's operators in execution order; names: the
    output tensors' names (the converter joins the fused Keras ops' names with ';')."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default delegate: the op list is the file's own, not XNNPACK's DELEGATE node.
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(path), experimental_op_resolver_type=resolver)
    tensors = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    return [{"index": op["index"], "op": op["op_name"],
             "names": ";".join(tensors.get(i, "") for i in op["outputs"])}
            for op in interp._get_ops_details() if op["op_name"] != "DELEGATE"]


def _layer_tokens(names, known):
    """Keras layer names that occur as a path part of the tensor names, in order."""
    found = []
    for part in re.split(r"[;,]", names):
        for token in part.split("/"):
            if token in known and token not in found:
                found.append(token)
    return found


def inbound_layers(model):
    """{layer name: [names of the layers feeding it]} of a Keras functional model."""
    out = {}
    for layer in model.layers:
        feeds = []
        for node in getattr(layer, "_inbound_nodes", []):
            inbound = node.inbound_layers
            for src in inbound if isinstance(inbound, (list, tuple)) else [inbound]:
                if src.name not in feeds:
                    feeds.append(src.name)
        out[layer.name] = feeds
    return out


def _of_kind(start, kinds, layers, inbound, depth=3):
    """The first layer of `kinds` at or upstream of `start` (a conv's own name can be lost
    when the converter fuses it: 'm/b_act/Relu;m/b_bn/FusedBatchNormV3;Conv2D1')."""
    frontier, seen = [start], set()
    for _ in range(depth + 1):
        for name in frontier:
            if layers.get(name, "\0").startswith(kinds):
                return name
        seen.update(frontier)
        frontier = [src for name in frontier for src in inbound.get(name, []) if src not in seen]
    return None


def op_layers(ops, layers, inbound=None):
    """{op index: layer name or None}. layers: {name: key} (the priced layers); inbound: the
    Keras graph's edges over all layers (inbound_layers). An op whose names carry several
    layers (a conv with its BN and activation fused) goes to the one of its kind, found
    upstream of the named ones if need be; an op that names none (the output
    FULLY_CONNECTED is 'Identity') to the only unnamed layer of its kind."""
    inbound = inbound or {}
    known = set(layers) | set(inbound)
    out, used = {}, set()
    for op in ops:
        tokens = _layer_tokens(op["names"], known)
        kinds = _OP_KEYS.get(op["op"])
        same = [t for t in (_of_kind(t, kinds, layers, inbound) for t in tokens) if t] \
            if kinds else []
        priced = [t for t in tokens if t in layers]
        out[op["index"]] = (same or priced or [None])[0]
        used.update(tokens + same)
    for op in ops:
        if out[op["index"]] is None and op["op"] in _OP_KEYS:
            free = [n for n, k in layers.items() if n not in used
                    and k.startswith(_OP_KEYS[op["op"]])]
            if len(free) == 1:
                out[op["index"]] = free[0]
                used.add(free[0])
    return out


def attribute(run_order, ops, layers, inbound=None):
    """({layer: µs}, unmapped µs, rows mapped) from a profile's Run Order rows.

    Builtin rows carry the TFLite node index; XNNPACK rows are matched in order to the
    operators of their kind. A single opaque delegate row (a build that cannot profile
    inside XNNPACK) cannot be split: ValueError."""
    if not run_order:
        raise ValueError("the benchmark_model log has no per-operator profile (Run Order table "
                         "of 'Operator-wise Profiling Info for Regular Benchmark Runs')")
    opaque = [r for r in run_order if _OPAQUE.match(r["node_type"])]
    if opaque:
        raise ValueError(f"the profile has {len(opaque)} opaque {opaque[0]['node_type']} row(s): "
                         "this benchmark_model cannot time operators inside the delegate; use "
                         "--delegate cpu, or a build that profiles XNNPACK operators (TF >= 2.9.1)")
    by_index = {op["index"]: op for op in ops}
    owner = op_layers(ops, layers, inbound)
    times, unmapped, mapped, cursor = {n: 0.0 for n in layers}, 0.0, 0, 0
    for position, row in enumerate(run_order):
        us = (row["avg_ms"] or 0.0) * 1e3
        if _BUILTIN.fullmatch(row["node_type"]):  # TF 1.x names have no index: by position
            op = by_index.get(position if row["node_index"] is None else row["node_index"])
            op = op if op is not None and op["op"] == row["node_type"] else None
        else:  # an XNNPACK operator: the next operator of its kind XNNPACK took
            op, kind = None, next((o for p, o in _XNN_OPS if p.search(row["node_type"])), None)
            while kind and cursor < len(ops) and ops[cursor]["op"] != kind:
                cursor += 1
            if kind and cursor < len(ops):
                op, cursor = ops[cursor], cursor + 1
        layer = owner.get(op["index"]) if op is not None else None
        if layer is None:
            unmapped += us
        else:
            times[layer] += us
            mapped += 1
    return times, unmapped, mapped


_BUILTIN = re.compile(r"[A-Z][A-Z0-9_]*")


# ---------------------------------------------------------------- runners


class Runner:
    """Times .tflite files on one target: `profile(path)` -> (end-to-end µs, Run Order rows)
    for local / adb, `time(path)` -> end-to-end µs everywhere."""

    def __init__(self, target, threads=1, binary=None, serial=None, adb_path=None,
                 delegate=None, log_dir=None, runs=BENCH_RUNS):
        check_choice("target", target, TARGETS)
        delegate = delegate or ("gpu" if target == "gpu" else "xnnpack")
        check_choice("delegate", delegate, CPU_DELEGATES if target != "gpu" else ("gpu",))
        if threads < 1:
            raise ValueError(f"--threads must be >= 1; got {threads}")
        self.target, self.threads, self.delegate, self.runs = target, threads, delegate, runs
        self.log_dir = log_dir
        self.info = {"serial": None, "device": None, "binary_sha256": None, "adapter": None}
        if target == "adb":
            from mobilekit.bench.benchmark_model import Adb, AdbError

            self.binary = binary
            self.adb = Adb(adb_path, serial)
            try:
                self.info["serial"] = self.adb.select()
                self.info["device"] = self.adb.fingerprint()
            except AdbError as exc:
                raise ValueError(f"--target adb: {exc}") from None
        elif target == "local":
            from mobilekit.bench.benchmark_model import resolve_binary

            self.binary = resolve_binary(binary)
        if target in PROFILED_TARGETS:
            from mobilekit.bench.benchmark_model import resolve_binary
            from mobilekit.bench.schema import file_sha256

            self.info["binary_sha256"] = file_sha256(resolve_binary(self.binary))

    def _bench(self, path, profiling):
        from mobilekit.bench import benchmark_model as bm
        from mobilekit.bench.parse import parse_log_with_details

        kw = dict(binary=self.binary, delegate=self.delegate, threads=self.threads,
                  num_runs=self.runs, warmup_runs=2, min_secs=0.2, op_profiling=profiling,
                  log_dir=self.log_dir, progress=False)
        row = (bm.run_adb(path, adb=self.adb, **kw) if self.target == "adb"
               else bm.run_local(path, **kw))
        if not row["ok"]:
            raise ValueError(f"benchmark_model on {self.where()} failed for {Path(path).name}: "
                             f"{row['error']}")
        if self.target == "local" and self.info["device"] is None:
            self.info["device"] = row["device"]
        us = row["inference_median_us"] or row["inference_avg_us"]
        text = Path(row["raw_log_path"]).read_text(encoding="utf-8", errors="replace")
        return float(us), parse_log_with_details(text)[1].get("run_order")

    def profile(self, path):
        return self._bench(path, True)

    def time(self, path):
        if self.target != "gpu":
            return self._bench(path, False)[0]
        from mobilekit.bench.gpu import run_gpu

        res = run_gpu(path, GPU_PRECISION, self.threads, bench={
            "warmup_runs": 3, "warmup_min_secs": 0.2, "num_runs": self.runs, "min_secs": 0.3,
            "max_secs": 60.0})
        if not res["ok"]:
            raise ValueError(f"--target gpu: {res['error']}")
        self.info["adapter"] = res["adapter"]
        return float(res["timing"]["inference_median_us"])

    def where(self):
        return {"adb": f"device {self.info['serial']}", "local": "this machine"}.get(
            self.target, "the GPU accelerator")

    def describe(self):
        adapter = self.info["adapter"]
        out = {"target": self.target, "delegate": self.delegate, "threads": self.threads,
               **self.info}
        if self.target == "gpu":
            out["gpu_precision"] = GPU_PRECISION
            out["emulation"] = ("software: the GPU accelerator ran on a CPU-backed Vulkan "
                                f"driver ({adapter['name']}); not a GPU's timings"
                                if adapter and adapter.get("software") else None)
        return out


def runner_for(target, threads=1, binary=None, serial=None, adb_path=None, delegate=None,
               log_dir=None, preflight=False):
    """The Runner of a target (None for host, timed in-process), after checking that the
    options fit it. preflight: also refuse a gpu target whose machine visibly lacks the
    accelerator's pieces now, not after a search's training (the worker's own run is the
    final word)."""
    if target == "host":
        if serial or binary or adb_path or delegate:
            raise ValueError("--serial / --benchmark-binary / --adb / --delegate are for "
                             "--target local / adb")
        return None
    if serial and target != "adb":
        raise ValueError(f"--serial is for --target adb; got --target {target}")
    if delegate is None:
        delegate = "gpu" if target == "gpu" else "xnnpack"
    elif target == "gpu":
        raise ValueError(f"--delegate is for --target local / adb; got --target {target}")
    if target == "gpu" and preflight:
        from mobilekit.bench.gpu import NO_GPU, missing_gpu_pieces

        missing = missing_gpu_pieces()
        if missing:
            raise ValueError(f"--target gpu: {NO_GPU}: missing {'; '.join(missing)}")
    return Runner(target, threads, binary, serial, adb_path, delegate, log_dir)


# ---------------------------------------------------------------- measuring


def measure(points, resolution, dtypes, runner, log=print, profile=True):
    """[{point, features, measured_us: {dtype: µs}, layers, op_us, unmapped_us}] (the last
    three only when profiling: local / adb)."""
    from mobilekit.keras import keras
    from mobilekit.search.spaces import build

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, point in enumerate(points):
            model = build(point, resolution)
            layers = model_ops(model, names=True)
            inbound = inbound_layers(model)
            row = {"point": point, "features": op_features(model), "measured_us": {}}
            if profile:
                row.update(layers=[[n, k, m, e] for n, k, m, e, _ in layers], op_us={},
                           unmapped_us={}, op_rows={})
            for dtype in dtypes:
                path = convert_for_latency(model, dtype, Path(tmp) / f"m{i}_{dtype}.tflite",
                                           random_init=True)
                if profile:
                    _, run_order = runner.profile(path)
                    times, unmapped, mapped = attribute(run_order, tflite_ops(path),
                                                        {n: k for n, k, *_ in layers}, inbound)
                    if not mapped:
                        raise ValueError(f"none of the {len(run_order)} profiled operators of "
                                         f"{path.name} could be mapped to a layer of the model")
                    row["op_us"][dtype] = {n: round(v, 3) for n, v in times.items()}
                    row["unmapped_us"][dtype] = round(unmapped, 3)
                    row["op_rows"][dtype] = [len(run_order), mapped]
                row["measured_us"][dtype] = round(runner.time(path), 2)
            keras.backend.clear_session()
            log(f"[{i + 1}/{len(points)}] {point['model']} on {runner.where()}: " + ", ".join(
                f"{d} {v / 1e3:.3f} ms" + (f" ({row['op_rows'][d][1]}/{row['op_rows'][d][0]} "
                                          "profiled ops mapped)" if profile else "")
                for d, v in row["measured_us"].items()))
            rows.append(row)
    return rows


# ---------------------------------------------------------------- fitting per operator


def fit_ops(rows, dtype):
    """{"base_us", "ops": {key: costs}, "kernels": {}} from the layer-level timings: per key
    NNLS on relative error (a small ridge) of cost/op, /MMAC, /M elements; base_us the
    median of end-to-end minus the summed layer predictions."""
    from scipy.optimize import nnls

    obs = {}
    for r in rows:
        for name, key, macs, elements in r["layers"]:
            obs.setdefault(key, []).append(([1.0, macs / 1e6, elements / 1e6],
                                            r["op_us"][dtype][name]))
    table = {}
    for key, items in sorted(obs.items()):
        X = np.array([x for x, _ in items], float)
        y = np.array([t for _, t in items], float)
        coef = np.zeros(3)
        if y.max() > 0:
            w = 1.0 / np.maximum(y, 0.05 * y.max())  # relative error; fused layers (0 µs) capped
            Xw, yw = X * w[:, None], y * w
            scale = np.maximum(np.abs(Xw).max(axis=0), 1e-12)
            A = np.vstack([Xw / scale, np.sqrt(RIDGE * len(y)) * np.eye(3)])
            coef = nnls(A, np.concatenate([yw, np.zeros(3)]), maxiter=200)[0] / scale
        table[key] = {c: round(float(v), 6) for c, v in zip(COSTS, list(coef) + [0.0])}
    fitted = {"base_us": 0.0, "ops": table, "kernels": {}}
    residual = [r["measured_us"][dtype] - predict_features(fitted, r["features"]) for r in rows]
    fitted["base_us"] = round(float(np.median(residual)), 4)
    return fitted


# ---------------------------------------------------------------- LUT build and eval


def build_target_lut(space_text, samples, seed, resolution, dtypes, runner, log=print):
    """The LUT of `runner`'s target (local / adb: per-operator; gpu: fitted end to end)."""
    from mobilekit.search.spaces import parse_space, sample

    for d in dtypes:
        check_choice("dtype", d, DTYPES)
    if samples < 3:
        raise ValueError(f"--samples must be >= 3 to fit a latency model; got {samples}")
    space = parse_space(space_text)
    points = [sample(space, i, seed, resolution) for i in range(samples)]
    t0 = time.time()
    profile = runner.target in PROFILED_TARGETS
    rows = measure(points, resolution, dtypes, runner, log, profile=profile)
    lut = {"format": FORMAT, **runner.describe(), "space": space["label"], "seed": seed,
           "resolution": resolution, "features": list(FEATURES),
           "method": "per-operator profile (benchmark_model --enable_op_profiling)" if profile
           else "end-to-end timings, per-key NNLS (no per-operator profiler)",
           "tables": {}, "fit_error": {}, "samples": rows,
           "measure_seconds": round(time.time() - t0, 1)}
    for d in dtypes:
        table = fit_ops(rows, d) if profile else fit(rows, d)
        lut["tables"][d] = table
        lut["fit_error"][d] = errors([predict_features(table, r["features"]) for r in rows],
                                     [r["measured_us"][d] for r in rows])
    return lut


def check_runner_matches(lut, runner):
    """A LUT is evaluated on what it was built on: target, threads, delegate, device."""
    for key in ("target", "threads", "delegate"):
        if lut.get(key) != runner.describe()[key]:
            raise ValueError(f"the latency model was built with {key} {lut.get(key)!r}, "
                             f"not {runner.describe()[key]!r}")
    if lut["target"] == "adb":
        was = (lut.get("device") or {}).get("model")
        now = (runner.info["device"] or {}).get("model")
        if lut.get("serial") != runner.info["serial"] and was != now:
            raise ValueError(f"the latency model was built on {lut.get('serial')} ({was}); "
                             f"device {runner.info['serial']} is a {now}")


def evaluate_target_lut(lut, runner, space_text=None, samples=10, seed=None, dtypes=None,
                        log=print):
    """Held-out models (another seed) timed end to end on the LUT's target vs predictions."""
    from mobilekit.search.spaces import parse_space, sample

    check_runner_matches(lut, runner)
    space = parse_space(space_text or lut["space"])
    seed = lut["seed"] + 1000 if seed is None else seed
    if space["label"] == lut["space"] and seed == lut["seed"]:
        raise ValueError(f"--seed {seed} is the seed the LUT was fitted on; held-out models "
                         "need another")
    resolution, dtypes = lut["resolution"], dtypes or list(lut["tables"])
    for d in dtypes:
        if d not in lut["tables"]:
            raise ValueError(f"the latency model has no {d} table (has {', '.join(lut['tables'])})")
    points = [sample(space, i, seed, resolution) for i in range(samples)]
    rows = measure(points, resolution, dtypes, runner, log, profile=False)
    result = {"space": space["label"], "seed": seed, "resolution": resolution,
              "threads": lut["threads"], "target": lut["target"], "serial": lut.get("serial"),
              "delegate": lut.get("delegate"), "emulation": lut.get("emulation"), "dtypes": {}}
    for d in dtypes:
        pred = [predict_features(lut["tables"][d], r["features"]) for r in rows]
        meas = [r["measured_us"][d] for r in rows]
        result["dtypes"][d] = {**errors(pred, meas),
                               "rows": [{"point": r["point"], "predicted_us": round(p, 2),
                                         "measured_us": m} for r, p, m in zip(rows, pred, meas)]}
    return result
