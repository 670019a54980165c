"""Benchmark a .tflite file in this Python process with the LiteRT interpreter.

`run_host` follows `benchmark_model`'s measurement rules so its numbers can be read the
same way: warm-up runs (at least `warmup_runs` and at least `warmup_min_secs`), then
regular runs (at least `num_runs` and at least `min_secs`; no run starts after `max_secs`),
random inputs written once, each `invoke()` timed alone. It returns one result row
(mobilekit.bench.schema); a model that cannot be loaded or run gives `ok: False` and the
reason, never an exception. Bad arguments (unknown delegate, threads < 1, ...) raise
ValueError.

Delegates:
  xnnpack  the interpreter's default resolver (XNNPACK applied by default)
  cpu      BUILTIN_WITHOUT_DEFAULT_DELEGATES: the reference TFLite kernels, no delegate
  gpu      LiteRT's CompiledModel API with the GPU accelerator (CPU fallback for unsupported
           ops), in a worker process that never imports TensorFlow (mobilekit.bench.gpu:
           a crash there is an `ok: False` row naming the signal). Where no GPU accelerator
           can be created the row is `ok: False` with error "no GPU accelerator available:
           ...", naming the missing piece. Delegation comes from the delegate's own log;
           `gpu_adapter` names the adapter, and `software: true` (Mesa's lavapipe) marks
           CPU-emulated timings that are never GPU figures. `gpu_precision` fp16 (the
           delegate's default) or fp32 (enforce_f32).

Field notes:
  init_us            Interpreter construction + allocate_tensors (delegates are applied there)
  first_inference_us the first warm-up run; warmup_avg_us the warm-up mean
  inference_std_us   population standard deviation, like benchmark_model's
  memory_init_mb / memory_overall_mb
                     growth of this process's resident set (/proc/self/statm) from just before
                     loading to after init / after the runs; None off Linux
  peak_memory_mb     getrusage(RUSAGE_SELF).ru_maxrss: the PROCESS-WIDE high-water mark since
                     the process started (includes Python, TensorFlow if imported, other models)
  delegated_nodes / total_nodes
                     original graph nodes taken by XNNPACK (mobilekit.export.report's
                     partition walk) / all original nodes of subgraph 0
  op_profile         always None: the Python interpreter exposes no per-operator profiler. Use
                     `--target local` with benchmark_model and op profiling for a breakdown.
"""
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mobilekit.bench.gpu import NO_GPU
from mobilekit.bench.schema import delegation_state, empty_result, model_fields
from mobilekit.errors import check_choice

__all__ = ["run_host", "interleaved_medians", "interleaved_times", "node_count",
           "HOST_DELEGATES", "NO_GPU", "litert_version"]

HOST_DELEGATES = ("xnnpack", "cpu", "gpu")
RUNTIME = "litert"
_MAX_ERROR_CHARS = 500


def run_host(model_path, delegate="xnnpack", threads=1, warmup_runs=1, warmup_min_secs=0.5,
             num_runs=50, min_secs=1.0, max_secs=150.0, op_profiling=False, gpu_precision="fp16"):
    """Benchmark `model_path` in process (gpu: in a worker); one result row (times in µs)."""
    _check_args(delegate, threads, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs)
    check_choice("gpu_precision", gpu_precision, ("fp16", "fp32"))
    row = empty_result(model_path=os.fspath(model_path), target="host", device=_device(),
                       runtime=RUNTIME, runtime_version=litert_version(), delegate=delegate,
                       threads=threads, warmup_runs=warmup_runs, num_runs=num_runs)
    try:
        row.update(model_fields(model_path))
        if delegate == "gpu":
            row.update(_run_gpu(Path(model_path), delegate, threads, warmup_runs,
                                warmup_min_secs, num_runs, min_secs, max_secs, gpu_precision))
        else:
            row.update(_run_interpreter(Path(model_path), delegate, threads, warmup_runs,
                                        warmup_min_secs, num_runs, min_secs, max_secs))
        row["peak_memory_mb"] = _peak_rss_mb()
        row["ok"], row["error"] = True, None
    except Exception as exc:  # a bad model or runtime failure is a result, not a crash
        row["ok"], row["error"] = False, _error_text(exc)
    return row


def litert_version():
    try:
        import ai_edge_litert
        version = getattr(ai_edge_litert, "__version__", None)
        if version:
            return str(version)
        from importlib.metadata import version as dist_version
        return dist_version("ai-edge-litert")
    except Exception:
        return None


# ---------------------------------------------------------------- measurement


def interleaved_medians(model_paths, rounds=50, delegate="xnnpack", threads=1, warmup_runs=5):
    """Median invoke time (µs) of each model, timed round-robin: one invoke of each in turn.

    For A/B ratios (int8 vs fp32 of one network) on a shared, noisy host: a load change
    hits every model of the comparison alike, which back-to-back sweeps cannot promise.
    """
    times = interleaved_times(model_paths, rounds, delegate, threads, warmup_runs)
    return [statistics.median(bucket) for bucket in times]


def interleaved_times(model_paths, rounds=50, delegate="xnnpack", threads=1, warmup_runs=5,
                      warm_invokes=0):
    """Per-model lists of invoke times (µs), round-robin; element i of each list is round i
    (paired samples for mobilekit.bench.stats.ratio_ci). warm_invokes: untimed invokes of
    the model just before each timed one, so that it runs with its weights and buffers in
    cache as when it runs alone (benchmark_model's setting), not after the other models
    evicted them: among hundreds of files a small model's time otherwise grows 2-3x."""
    check_choice("delegate", delegate, ("xnnpack", "cpu"))
    if rounds < 1 or threads < 1 or warmup_runs < 0 or warm_invokes < 0:
        raise ValueError("rounds and threads must be >= 1, warmup_runs and warm_invokes >= 0")
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"num_threads": threads}
    if delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    rng = np.random.default_rng(0)
    interpreters = []
    for path in model_paths:
        interpreter = Interpreter(model_path=os.fspath(path), **kwargs)
        interpreter.allocate_tensors()
        for detail in interpreter.get_input_details():
            interpreter.set_tensor(detail["index"],
                                   _random_array(detail["dtype"], detail["shape"], rng))
        for _ in range(warmup_runs):
            interpreter.invoke()
        interpreters.append(interpreter)
    times = [[] for _ in interpreters]
    for _ in range(rounds):
        for interpreter, bucket in zip(interpreters, times):
            for _ in range(warm_invokes):
                interpreter.invoke()
            t0 = time.perf_counter_ns()
            interpreter.invoke()
            bucket.append((time.perf_counter_ns() - t0) / 1000.0)
    return times


def _timed_runs(invoke, min_runs, min_secs, max_secs):
    """benchmark_model's loop: run while (count < min_runs or t < min_secs) and t <= max_secs."""
    times = []
    start = time.perf_counter()
    min_end, max_end = start + min_secs, start + max_secs
    now = start
    while (len(times) < min_runs or now < min_end) and now <= max_end:
        t0 = time.perf_counter_ns()
        invoke()
        times.append((time.perf_counter_ns() - t0) / 1000.0)
        now = time.perf_counter()
    return times


def _stats(times):
    if not times:
        raise RuntimeError("no timed runs completed before max_secs")
    return {"inference_avg_us": round(statistics.fmean(times), 3),
            "inference_std_us": round(statistics.pstdev(times), 3),
            "inference_min_us": round(min(times), 3),
            "inference_max_us": round(max(times), 3),
            "inference_median_us": round(statistics.median(times), 3),
            "inference_count": len(times)}


def _measure(invoke, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs):
    warm = _timed_runs(invoke, warmup_runs, warmup_min_secs, max_secs)
    runs = _timed_runs(invoke, num_runs, min_secs, max_secs)
    fields = _stats(runs)
    fields["first_inference_us"] = round(warm[0], 3) if warm else None
    fields["warmup_avg_us"] = round(statistics.fmean(warm), 3) if warm else None
    fields["warmup_count"] = len(warm)   # can exceed warmup_runs (warmup_min_secs)
    return fields


def _random_array(dtype, shape, rng):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.floating):
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        # Small non-negative values for wide ints: they are often indices or lengths.
        low, high = (info.min, info.max) if info.bits <= 16 else (0, 99)
        return rng.integers(low, high, size=shape, endpoint=True, dtype=dtype)
    return np.zeros(shape, dtype=dtype)


# ---------------------------------------------------------------- interpreter (xnnpack, cpu)


def _run_interpreter(path, delegate, threads, warmup_runs, warmup_min_secs, num_runs, min_secs,
                     max_secs):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {"num_threads": threads}
    if delegate == "cpu":
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    rss0 = _rss_mb()
    t0 = time.perf_counter_ns()
    interpreter = Interpreter(model_path=str(path), **kwargs)
    interpreter.allocate_tensors()
    init_us = (time.perf_counter_ns() - t0) / 1000.0
    rss_init = _rss_mb()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], _random_array(detail["dtype"], detail["shape"], rng))
    delegated, total = _delegation(path, delegate, interpreter._get_ops_details())
    fields = _measure(interpreter.invoke, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs)
    fields.update(init_us=round(init_us, 3), delegated_nodes=delegated, total_nodes=total,
                  delegation=delegation_state(delegated, total),
                  **_memory_growth(rss0, rss_init, _rss_mb()))
    return fields


def _delegation(path, delegate, ops):
    """(delegated, total) original nodes of subgraph 0 in the timed interpreter."""
    total = sum(op["op_name"] != "DELEGATE" for op in ops)
    if delegate == "cpu" or not any(op["op_name"] == "DELEGATE" for op in ops):
        return 0, total
    # Partitions do not depend on the thread count, so the export report's walk over a
    # 1-thread load of the same file gives the timed interpreter's coverage.
    from mobilekit.export.report import xnnpack_partitions

    _, delegated, _ = xnnpack_partitions(Path(path).read_bytes())
    return delegated, total


# ---------------------------------------------------------------- CompiledModel (gpu)


def _run_gpu(path, delegate, threads, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs,
             gpu_precision="fp16"):
    from mobilekit.bench.gpu import delegated_nodes, run_gpu

    bench = {"warmup_runs": warmup_runs, "warmup_min_secs": warmup_min_secs,
             "num_runs": num_runs, "min_secs": min_secs, "max_secs": max_secs}
    res = run_gpu(path, precision=gpu_precision, threads=threads, bench=bench,
                  timeout=max_secs * 2 + 120)
    if not res["ok"]:
        raise RuntimeError(res["error"])
    if res["timing"] is None:
        raise RuntimeError("GPU worker returned no timing")
    total = node_count(path)
    delegated = delegated_nodes(res, total)
    return {**res["timing"], "init_us": res["init_us"], "delegated_nodes": delegated,
            "total_nodes": total, "delegation": delegation_state(delegated, total),
            "fallback_ops": res["fallback_ops"], "gpu_adapter": res["adapter"],
            "memory_init_mb": None, "memory_overall_mb": None}


def node_count(path):
    """Original nodes of the model's first subgraph (no delegate applied)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=str(path), experimental_op_resolver_type=kind)
    return len(interpreter._get_ops_details())


# ---------------------------------------------------------------- helpers


def _check_args(delegate, threads, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs):
    check_choice("delegate", delegate, HOST_DELEGATES)
    for name, value, low in (("threads", threads, 1), ("num_runs", num_runs, 1),
                             ("warmup_runs", warmup_runs, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    for name, value in (("warmup_min_secs", warmup_min_secs), ("min_secs", min_secs)):
        if not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{name} must be a number >= 0; got {value!r}")
    if not isinstance(max_secs, (int, float)) or max_secs <= 0:
        raise ValueError(f"max_secs must be a number > 0; got {max_secs!r}")


def _rss_mb():
    try:
        with open("/proc/self/statm") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / (1024 * 1024)
    except (OSError, ValueError, IndexError):
        return None


def _memory_growth(before, after_init, after_runs):
    if before is None or after_init is None or after_runs is None:
        return {"memory_init_mb": None, "memory_overall_mb": None}
    return {"memory_init_mb": round(after_init - before, 3),
            "memory_overall_mb": round(after_runs - before, 3)}


def _peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 3)


def _device():
    try:
        from mobilekit.bench.benchmark_model import _host_device
        return _host_device()
    except Exception:
        return None


def _first_line(exc):
    lines = [line.strip(" └") for line in str(exc).splitlines() if line.strip(" └")]
    return " / ".join(lines)[:_MAX_ERROR_CHARS] or type(exc).__name__


def _error_text(exc):
    text = str(exc)
    if text.startswith((NO_GPU, "GPU ")):  # the GPU runner's messages are complete sentences
        return text[:_MAX_ERROR_CHARS]
    return f"{type(exc).__name__}: {_first_line(exc)}"[:_MAX_ERROR_CHARS]
