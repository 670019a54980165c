"""Native grouped Conv2D vs split -> convs -> concat, measured after TFLite conversion.

For each case (a ShuffleNet v1 network and standalone grouped units) and each impl, in
fp32 and full-int8 (TFLITE_BUILTINS_INT8, int8 I/O, a few random calibration samples):
does it convert, does it run on the reference kernels, how many XNNPACK partitions
(DELEGATE nodes) and which ops stay outside them, and the median latency with XNNPACK at
1 thread. Timings are interleaved round by round so that machine load hits every
configuration alike. Results go to stdout (markdown table) and, with --out, to JSON.

Example:
  python tools/bench_group_conv.py --out /tmp/group_conv.json
  python tools/bench_group_conv.py --cases block_g3 --invokes 50
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone

import numpy as np

from mobilekit.keras import keras, layers, tf
from mobilekit.layers.group_conv import IMPLS
from mobilekit.zoo.registry import create_model
from mobilekit.zoo.shufflenet import shuffle_v1_unit


def shufflenet_case(groups, alpha, resolution):
    def build(impl):
        return create_model("shufflenet_v1", groups=groups, alpha=alpha, resolution=resolution,
                            group_conv_impl=impl)
    return build


def block_case(groups, size, channels):
    """One stride-1 ShuffleNet v1 unit (two grouped 1x1 convs, shuffle, dw 3x3)."""
    def build(impl):
        inp = layers.Input((size, size, channels), name="input")
        out = shuffle_v1_unit(inp, channels, groups, 1, False, "unit", impl=impl)
        return keras.Model(inp, out, name=f"block_g{groups}_{impl}")
    return build


CASES = {
    "shufflenet_v1_g3_1.0_224": shufflenet_case(3, 1.0, 224),
    "block_g3": block_case(3, 28, 240),
    "block_g8": block_case(8, 28, 384),
}


def convert(model, mode, calibration=8, seed=0):
    """TFLite flatbuffer of `model` with a fixed batch of 1 (no SHAPE/PACK ops)."""
    shape = [1, *model.inputs[0].shape[1:]]
    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
    conv = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model)
    if mode == "int8":
        rng = np.random.default_rng(seed)

        def representative():
            for _ in range(calibration):
                yield [rng.uniform(-1, 1, shape).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def _interpreter(content, delegate):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegate else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    it = Interpreter(model_content=content, num_threads=1, experimental_op_resolver_type=kind)
    it.allocate_tensors()
    return it


def _fill_input(it, seed=1):
    detail = it.get_input_details()[0]
    rng = np.random.default_rng(seed)
    if detail["dtype"] == np.int8:
        data = rng.integers(-128, 128, detail["shape"], dtype=np.int8)
    else:
        data = rng.uniform(-1, 1, detail["shape"]).astype(detail["dtype"])
    it.set_tensor(detail["index"], data)


def executed_ops(it):
    """(number of DELEGATE nodes, op names that run outside XNNPACK).

    _get_ops_details() lists every original node plus the DELEGATE nodes; walking back from
    the outputs, preferring a DELEGATE as a tensor's producer, visits what really runs.
    """
    ops = it._get_ops_details()
    producer = {}
    for op in ops:  # original nodes first, DELEGATE nodes (appended last) override them
        for t in op["outputs"]:
            producer[t] = op
    delegates = sum(op["op_name"] == "DELEGATE" for op in ops)
    outside, seen = [], set()
    stack = [d["index"] for d in it.get_output_details()]
    while stack:
        op = producer.get(stack.pop())
        if op is None or op["index"] in seen:
            continue
        seen.add(op["index"])
        if op["op_name"] != "DELEGATE":
            outside.append(op["op_name"])
        stack.extend(op["inputs"])
    return delegates, sorted(outside)


def inspect_model(content):
    row = {"size_bytes": len(content)}
    plain = _interpreter(content, delegate=False)
    row["ops_total"] = len(plain._get_ops_details())
    row["op_types"] = sorted({op["op_name"] for op in plain._get_ops_details()})
    row["max_rank"] = max(len(t["shape"]) for t in plain.get_tensor_details())
    try:
        _fill_input(plain)
        plain.invoke()
        row["runs_without_xnnpack"] = True
    except Exception as exc:  # a kernel that cannot run is a result, not a crash
        row["runs_without_xnnpack"] = False
        row["reference_error"] = str(exc).splitlines()[0][:200]
    xnn = _interpreter(content, delegate=True)
    row["xnnpack_partitions"], row["ops_outside_xnnpack"] = executed_ops(xnn)
    return row, xnn


def bench(interpreters, warmup, invokes, chunk=10):
    """Median latency (µs) per interpreter; invokes interleaved in chunks across all."""
    samples = {k: [] for k in interpreters}
    for key, it in interpreters.items():
        _fill_input(it)
        for _ in range(warmup):
            it.invoke()
    for _ in range(0, invokes, chunk):
        for key, it in interpreters.items():
            for _ in range(chunk):
                t0 = time.perf_counter_ns()
                it.invoke()
                samples[key].append((time.perf_counter_ns() - t0) / 1e3)
    return {k: {"median_us": statistics.median(v), "p10_us": float(np.percentile(v, 10)),
                "p90_us": float(np.percentile(v, 90)), "n": len(v)} for k, v in samples.items()}


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def run(case_names, modes, warmup, invokes):
    rows, interpreters = [], {}
    for case in case_names:
        for impl in IMPLS:
            model = CASES[case](impl)
            for mode in modes:
                row = {"case": case, "impl": impl, "mode": mode}
                try:
                    content = convert(model, mode)
                    row["converts"] = True
                except Exception as exc:
                    rows.append({**row, "converts": False, "error": str(exc).splitlines()[0][:300]})
                    continue
                info, xnn = inspect_model(content)
                row.update(info)
                rows.append(row)
                interpreters[(case, impl, mode)] = xnn
                print(f"converted {case} {impl} {mode}: {info['ops_total']} ops, "
                      f"{info['xnnpack_partitions']} partition(s)", file=sys.stderr, flush=True)
    timings = bench(interpreters, warmup, invokes)
    for row in rows:
        row.update(timings.get((row["case"], row["impl"], row["mode"]), {}))
    return rows


def table(rows):
    """Markdown table for people: milliseconds (the JSON keeps microseconds)."""
    head = ["case", "impl", "mode", "converts", "ops", "runs w/o XNNPACK", "partitions",
            "outside XNNPACK", "max rank", "median ms", "p10-p90 ms"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], r["impl"], r["mode"]]
        if not r.get("converts"):
            cells += [f"no: {r.get('error', '')}"] + ["-"] * (len(head) - 4)
        else:
            cells += ["yes", r["ops_total"], "yes" if r["runs_without_xnnpack"] else "no",
                      r["xnnpack_partitions"], ", ".join(r["ops_outside_xnnpack"]) or "none",
                      r["max_rank"], f"{r['median_us'] / 1e3:.3f}",
                      f"{r['p10_us'] / 1e3:.3f}-{r['p90_us'] / 1e3:.3f}"]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                    help="cases to run (default: all)")
    ap.add_argument("--modes", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"],
                    help="precisions to convert (default: fp32 int8)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed invokes first (default 10)")
    ap.add_argument("--invokes", type=int, default=100,
                    help="timed invokes per config (default 100)")
    ap.add_argument("--out", default=None, help="write results JSON here (atomically)")
    args = ap.parse_args(argv)
    rows = run(args.cases, args.modes, args.warmup, args.invokes)
    result = {"machine": machine(), "xnnpack_threads": 1, "warmup": args.warmup,
              "invokes": args.invokes, "rows": rows}
    print(json.dumps(result["machine"]))
    print(table(rows))
    if args.out:
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)) or ".")
        with os.fdopen(fd, "w") as f:
            json.dump(result, f, indent=2)
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
