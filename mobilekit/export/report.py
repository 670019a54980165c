"""What is inside a .tflite file: ops, dtypes, float islands, rank, delegate coverage.

Rules (kept deliberately simple and documented, since tests and exports rely on them):

* float op: loaded with the reference kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES), an op
  whose output tensor is float32 and which is not QUANTIZE/DEQUANTIZE. QUANTIZE and
  DEQUANTIZE only convert at a boundary (float I/O, fp16 weights), so they do not count.
  In an int8 model every other float32 output is a float island.
* XNNPACK: the model is loaded with the default resolver (XNNPACK applied, 1 thread).
  `_get_ops_details()` then lists every original node plus one DELEGATE node per
  partition; a node belongs to a partition when it is reached walking back from the
  partition's outputs to its inputs. Nodes in no partition run on the reference kernels.
* GPU, static: `tf.lite.experimental.Analyzer` (gpu_compatibility=True) is reported as is,
  but it misses rank > 4 RESHAPE/TRANSPOSE and dynamic shapes, which the GPU delegate
  rejects (reference/quantization.md §2.6), and it said "compatible" for FaceBoxes' decoding
  tail that the real delegate refuses; its `compatible` also requires neither.
* GPU, measured (`gpu_runtime`): LiteRT's real GPU accelerator compiles the file in a worker
  process (mobilekit.bench.gpu): `gpu.runtime` holds accelerated (full / partial / none), the
  fallback ops with the delegate's reasons and the adapter. When it has spoken,
  `gpu_compatible` is the runtime's answer (full acceleration); otherwise the static one.
"""
import contextlib
import io
import os
from collections import Counter

import numpy as np

BOUNDARY_OPS = ("QUANTIZE", "DEQUANTIZE")
GPU_MAX_RANK = 4


def _load_bytes(model):
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = os.fspath(model)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a TFLite flatbuffer (no 'TFL3' identifier)")
    return data


def _interpreter(data, delegates):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interp = Interpreter(model_content=data, num_threads=1,
                             experimental_op_resolver_type=kind)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot load the TFLite model: {str(exc).splitlines()[0]}") from None
    return interp


def _is_float(dtype):
    return np.dtype(dtype) == np.float32


def _float_ops(interp):
    names = {t["index"]: t["name"] for t in interp.get_tensor_details()}
    found = []
    for op in interp._get_ops_details():
        if op["op_name"] in BOUNDARY_OPS or op["op_name"] == "DELEGATE":
            continue
        if any(_is_float(t) for t in op["result_types"]):
            out = op["outputs"][0] if len(op["outputs"]) else -1
            found.append({"index": int(op["index"]), "op": op["op_name"],
                          "output": names.get(int(out), str(out))})
    return found


def float_op_report(model):
    """The float-op and rank part of `analyze` (cheap: no delegate, no GPU analyzer)."""
    interp = _interpreter(_load_bytes(model), delegates=False)
    found = _float_ops(interp)
    return {"float_ops": len(found), "float_op_list": found,
            "max_tensor_rank": _tensor_checks(interp)[0]}


def _io_details(details):
    out = []
    for d in details:
        scale, zero_point = d["quantization"]
        out.append({"name": d["name"], "shape": [int(v) for v in d["shape"]],
                    "dtype": np.dtype(d["dtype"]).name,
                    "scale": float(scale), "zero_point": int(zero_point)})
    return out


def _tensor_checks(interp):
    rank_violations, dynamic = [], []
    max_rank = 0
    for t in interp.get_tensor_details():
        rank = len(t["shape"])
        max_rank = max(max_rank, rank)
        if rank > GPU_MAX_RANK:
            rank_violations.append({"tensor": t["name"], "shape": [int(v) for v in t["shape"]]})
        sig = t.get("shape_signature")
        if sig is not None and any(int(v) < 0 for v in sig):
            dynamic.append({"tensor": t["name"], "shape_signature": [int(v) for v in sig]})
    return max_rank, rank_violations, dynamic


def xnnpack_partitions(data):
    """(partitions, delegated original nodes, histogram of ops left on the CPU kernels)."""
    interp = _interpreter(data, delegates=True)
    ops = interp._get_ops_details()
    nodes = [op for op in ops if op["op_name"] != "DELEGATE"]
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    producer = {}
    for op in nodes:
        for t in op["outputs"]:
            producer[int(t)] = op
    covered = set()
    for dele in delegates:
        boundary = {int(t) for t in dele["inputs"]}
        stack = [int(t) for t in dele["outputs"]]
        seen = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            op = producer[t]
            covered.add(int(op["index"]))
            stack.extend(int(i) for i in op["inputs"] if int(i) >= 0)
    left = Counter(op["op_name"] for op in nodes if int(op["index"]) not in covered)
    return len(delegates), len(covered), dict(sorted(left.items()))


def gpu_analyzer(data):
    """(analyzer says compatible, its compatibility lines) from TF's model analyzer."""
    from mobilekit.keras import tf

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        tf.lite.experimental.Analyzer.analyze(model_content=data, gpu_compatibility=True)
    text = buf.getvalue()
    ok = "looks compatible with GPU delegate" in text
    lines = [ln.strip() for ln in text.splitlines()
             if "GPU" in ln or "COMPATIB" in ln.upper() and "NOT" in ln.upper()]
    return ok, lines


def static_gpu_view(data, interp=None):
    """The analyzer's GPU verdict plus mobilekit's rank / dynamic-shape checks."""
    _, rank_violations, dynamic = _tensor_checks(interp or _interpreter(data, delegates=False))
    analyzer_ok, analyzer_lines = gpu_analyzer(data)
    return {"analyzer_compatible": analyzer_ok, "analyzer_messages": analyzer_lines,
            "rank_over_4": rank_violations, "dynamic_shapes": dynamic,
            "compatible": analyzer_ok and not rank_violations and not dynamic}


def gpu_runtime_view(data, precision="fp16"):
    """What LiteRT's GPU accelerator does with the model (None where no accelerator can be
    set up here: no Vulkan loader or driver)."""
    import tempfile

    from mobilekit.bench.gpu import NO_GPU, missing_gpu_pieces, run_gpu

    if missing_gpu_pieces():
        return None
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(data)
        f.flush()
        res = run_gpu(f.name, precision=precision, timeout=300)
    if not res["ok"] and str(res["error"]).startswith(NO_GPU):
        return None
    return {"accelerated": res["accelerated"] if res["ok"] else "none",
            "precision": precision, "fallback_ops": res["fallback_ops"],
            "gpu_only_error": res["gpu_only_error"], "error": res["error"],
            "adapter": res["adapter"]}


def analyze(model, gpu_runtime=False):
    """Report of a .tflite file (path) or its bytes, as a JSON-able dict.

    gpu_runtime: also compile it with LiteRT's GPU accelerator where one can be set up
    (seconds per model; `export` asks for it, internal checks do not).
    """
    from mobilekit.export.metadata import read_metadata

    data = _load_bytes(model)
    interp = _interpreter(data, delegates=False)
    ops = interp._get_ops_details()
    max_rank = _tensor_checks(interp)[0]
    float_list = _float_ops(interp)
    partitions, delegated, left = xnnpack_partitions(data)
    static = static_gpu_view(data, interp)
    static_ok = static["compatible"]
    runtime = gpu_runtime_view(data) if gpu_runtime else None
    gpu_ok = static_ok if runtime is None else runtime["accelerated"] == "full"
    return {
        "size_bytes": len(data),
        "num_ops": len(ops),
        "ops": dict(sorted(Counter(op["op_name"] for op in ops).items())),
        "inputs": _io_details(interp.get_input_details()),
        "outputs": _io_details(interp.get_output_details()),
        "float_ops": len(float_list),
        "float_op_types": dict(sorted(Counter(o["op"] for o in float_list).items())),
        "float_op_list": float_list,
        "max_tensor_rank": max_rank,
        "xnnpack": {"partitions": partitions, "delegated_nodes": delegated,
                    "total_nodes": len(ops), "undelegated_ops": left},
        "gpu": {**{k: v for k, v in static.items() if k != "compatible"},
                "static_compatible": static_ok, "runtime": runtime,
                "disagreement": None if runtime is None else static_ok != gpu_ok,
                "compatible": gpu_ok},
        "gpu_compatible": gpu_ok,
        "metadata": read_metadata(data),
    }
