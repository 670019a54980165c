"""The GPU worker: runs one .tflite on LiteRT's GPU accelerator in a process of its own.

    python -m mobilekit.bench.gpu_worker REQUEST.json RESULT.json

Why a process: LiteRT's GPU accelerator (ML Drift over WebGPU/Dawn -> Vulkan) dies with
SIGSEGV when TensorFlow was imported before the first GPU compiled model is created
(shared/reference/gpu_delegate.md), and a hung or crashing driver must not take the caller
down. So this module imports numpy, ai_edge_litert and mobilekit's TensorFlow-free helpers
only; the parent (mobilekit.bench.gpu) reads its log and turns signals into result rows.

Request (JSON): model, precision ("fp16": the delegate's default fp16 arithmetic, "fp32":
enforce_f32), threads, inputs (an .npz of arrays keyed "t<tensor index>", or null for
random inputs), outputs (.npz path to write, or null), bench (timing settings or null).

Result (JSON): gpu_only {compiled, error}: does the model compile with the GPU alone (the
strict test: every op on the GPU; that model then runs); otherwise compiled /
fully_accelerated / error of GPU | CPU (the partial fallback) and that model runs; timing
fields when bench was asked. The log (stderr and stdout) stays
with the parent, which parses the adapter and the fallback ops from it.
"""
import json
import sys
import time

import numpy as np

__all__ = ["main"]


def _options(precision, threads, accelerators):
    from ai_edge_litert.gpu_options import GpuOptions
    from ai_edge_litert.options import CpuOptions, Options

    return Options(hardware_accelerators=accelerators,
                   cpu_options=CpuOptions(num_threads=threads),
                   gpu_options=GpuOptions(enforce_f32=precision == "fp32"))


def _compile(path, precision, threads, accelerators):
    from ai_edge_litert.compiled_model import CompiledModel

    try:
        return CompiledModel.from_file(path, options=_options(precision, threads, accelerators)), None
    except Exception as exc:  # LiteRT raises RuntimeError with its own reason
        return None, " / ".join(s.strip(" └") for s in str(exc).splitlines() if s.strip(" └"))


def _write_inputs(model, buffers, inputs, signature):
    from mobilekit.bench.host import _random_array

    details = list(model.get_input_tensor_details(signature).values())
    rng = np.random.default_rng(0)
    for buffer, detail in zip(buffers, details):
        key = f"t{detail['index']}"
        array = inputs[key] if inputs is not None and key in inputs \
            else _random_array(detail["dtype"], detail["shape"], rng)
        buffer.write(np.ascontiguousarray(array, dtype=np.dtype(detail["dtype"])))


def _read_outputs(model, buffers, signature):
    out = {}
    for buffer, detail in zip(buffers, model.get_output_tensor_details(signature).values()):
        shape = [int(v) for v in detail["shape"]]
        dtype = np.dtype(detail["dtype"])
        out[f"t{detail['index']}"] = np.asarray(buffer.read(int(np.prod(shape)), dtype)).reshape(shape)
    return out


def _run(request, result):
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator as HA

    path, precision, threads = request["model"], request.get("precision", "fp16"), \
        int(request.get("threads", 1))
    t0 = time.perf_counter_ns()
    model, error = _compile(path, precision, threads, HA.GPU)
    result["gpu_only"] = {"compiled": model is not None, "error": error}
    if model is None:  # some ops stay on the CPU (their reasons are in the log), or none run
        t0 = time.perf_counter_ns()
        model, error = _compile(path, precision, threads, HA.GPU | HA.CPU)
    result.update(compiled=model is not None, error=error)
    if model is None:
        return
    result["fully_accelerated"] = bool(model.is_fully_accelerated())
    signature = 0
    key = list(model.get_signature_list())[signature]
    ins, outs = model.create_input_buffers(signature), model.create_output_buffers(signature)
    result["init_us"] = round((time.perf_counter_ns() - t0) / 1000.0, 3)
    batches = _batches(request.get("inputs"))
    collected = []
    for inputs in batches:
        _write_inputs(model, ins, inputs, key)
        model.run_by_index(signature, ins, outs)
        collected.append(_read_outputs(model, outs, key))
    if request.get("outputs") and collected:
        stacked = {k: np.stack([c[k] for c in collected]) for k in collected[0]}
        np.savez(request["outputs"], **stacked)
    if request.get("bench"):
        from mobilekit.bench.host import _measure

        b = request["bench"]
        first = outs[0]
        size = int(np.prod(list(model.get_output_tensor_details(key).values())[0]["shape"]))
        dtype = np.dtype(list(model.get_output_tensor_details(key).values())[0]["dtype"])

        def invoke():
            model.run_by_index(signature, ins, outs)
            first.read(size, dtype)  # the GPU runs asynchronously: wait for the result

        result["timing"] = _measure(invoke, b["warmup_runs"], b["warmup_min_secs"],
                                    b["num_runs"], b["min_secs"], b["max_secs"])


def _batches(inputs_path):
    """One dict of input arrays per sample (arrays stacked on a leading sample axis)."""
    if not inputs_path:
        return [None]
    with np.load(inputs_path) as data:
        arrays = {k: data[k] for k in data.files}
    count = len(next(iter(arrays.values())))
    return [{k: v[i] for k, v in arrays.items()} for i in range(count)]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m mobilekit.bench.gpu_worker REQUEST.json RESULT.json",
              file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        request = json.load(f)
    result = {"compiled": False}
    try:
        if "tensorflow" in sys.modules:  # the crash this process exists to avoid
            raise RuntimeError("TensorFlow is loaded in the GPU worker; refusing to create a "
                               "GPU model (it would crash)")
        _run(request, result)
    except Exception as exc:  # reported, not raised: the parent reads the result file
        result["error"] = f"{type(exc).__name__}: {exc}"[:500]
    with open(argv[1], "w") as f:
        json.dump(result, f)
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
