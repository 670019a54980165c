"""LiteRT's real GPU accelerator, driven from any process (TensorFlow loaded or not).

`run_gpu(model, ...)` runs mobilekit.bench.gpu_worker in a child process with a clean
environment and returns what the delegate said and did:

    ok, error                 False + reason when no GPU row can be produced (no accelerator,
                              the worker died on a signal, timed out, or the model failed)
    accelerated               "full" (compiles with the GPU alone), "partial" (compiles only
                              with CPU fallback), "none" (the delegate took nothing)
    gpu_only_error            LiteRT's reason when the GPU alone refused the model
    fallback_ops              [{op, reason}] the delegate's own "not supported" lines
    gpu_ops / cpu_ops         its "N operations will run on the GPU, ... M on the CPU" counts
    adapter                   {name, vendor, backend, type, arch, software}: always reported so
                              that a software (lavapipe) figure never passes for a GPU one
    outputs                   {tensor index: array stacked over samples} when inputs were given
    timing                    benchmark_model-style timing fields when `bench` was given

Bad arguments raise ValueError; everything the GPU side does wrong is a result.
"""
import ctypes.util
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile

import numpy as np

from mobilekit.bench.gpu_log import SETUP_HINT, parse_adapter, parse_gpu_log
from mobilekit.errors import check_choice

__all__ = ["run_gpu", "missing_gpu_pieces", "PRECISIONS", "NO_GPU"]

NO_GPU = "no GPU accelerator available"
PRECISIONS = ("fp16", "fp32")
_DEFAULT_TIMEOUT = 600.0
_LOG_TAIL = 4000


def run_gpu(model, precision="fp16", threads=1, inputs=None, bench=None, timeout=_DEFAULT_TIMEOUT,
            worker=None):
    """Run `model` on the GPU accelerator in a worker process; see the module docstring.

    inputs: {"t<tensor index>": array with a leading sample axis} or None (one random input).
    bench: dict of warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs, or None.
    worker: the command to run instead of `python -m mobilekit.bench.gpu_worker` (tests).
    """
    check_choice("precision", precision, PRECISIONS)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1; got {threads!r}")
    with tempfile.TemporaryDirectory(prefix="mobilekit-gpu-") as tmp:
        request = {"model": os.path.abspath(os.fspath(model)), "precision": precision,
                   "threads": threads, "bench": bench,
                   "inputs": _save_inputs(inputs, tmp), "outputs": None}
        if inputs is not None:
            request["outputs"] = os.path.join(tmp, "outputs.npz")
        req_path, res_path = os.path.join(tmp, "request.json"), os.path.join(tmp, "result.json")
        with open(req_path, "w") as f:
            json.dump(request, f)
        command = list(worker or [sys.executable, "-m", "mobilekit.bench.gpu_worker"])
        code, log = _spawn(command + [req_path, res_path], timeout)
        return _result(code, log, res_path, request["outputs"], timeout)


def missing_gpu_pieces():
    """Names of what this machine lacks for a GPU accelerator ([] when nothing obvious)."""
    missing = []
    if not ctypes.util.find_library("vulkan"):
        missing.append("the Vulkan loader (libvulkan.so.1; Debian: libvulkan1)")
    chosen = os.environ.get("VK_DRIVER_FILES") or os.environ.get("VK_ICD_FILENAMES")
    if chosen:  # the Vulkan loader reads only these
        icds = [p for p in chosen.split(os.pathsep) if os.path.exists(p)]
        if not icds:
            missing.append(f"the Vulkan driver files named by VK_DRIVER_FILES/VK_ICD_FILENAMES "
                           f"({chosen})")
        return missing
    icds = glob.glob("/usr/share/vulkan/icd.d/*.json") + glob.glob("/etc/vulkan/icd.d/*.json")
    if not icds:
        missing.append("a Vulkan driver (no ICD in /usr/share/vulkan/icd.d; Debian 12: "
                       "mesa-vulkan-drivers >= 24 from bookworm-backports)")
    return missing


def worker_env():
    """The worker's environment: no TensorFlow switches needed, a valid XDG_RUNTIME_DIR."""
    env = dict(os.environ)
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    if not runtime_dir or not os.path.isdir(runtime_dir):
        # Mesa's Vulkan driver prints "XDG_RUNTIME_DIR is invalid or not set" otherwise.
        runtime_dir = os.path.join(tempfile.gettempdir(), f"mobilekit-xdg-{os.getuid()}")
        os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
        env["XDG_RUNTIME_DIR"] = runtime_dir
    return env


def _save_inputs(inputs, tmp):
    if inputs is None:
        return None
    path = os.path.join(tmp, "inputs.npz")
    np.savez(path, **{k: np.asarray(v) for k, v in inputs.items()})
    return path


def _spawn(command, timeout):
    """(return code or 'timeout', combined stdout+stderr text)."""
    with tempfile.TemporaryFile(mode="w+b") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=worker_env(),
                                start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = "timeout"
        except BaseException:  # Ctrl-C: never leave a worker behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        log.seek(0)
        return code, log.read().decode("utf-8", "replace")


def _result(code, log, res_path, outputs_path, timeout):
    gpu = parse_gpu_log(log)
    out = {"ok": False, "error": None, "accelerated": None, "gpu_only_error": None,
           "fully_accelerated": None, "fallback_ops": gpu["fallback_ops"],
           "gpu_ops": gpu["gpu_ops"], "cpu_ops": gpu["cpu_ops"], "adapter": parse_adapter(log),
           "outputs": None, "timing": None, "init_us": None, "log_tail": log[-_LOG_TAIL:]}
    if code == "timeout":
        out["error"] = f"GPU worker timed out after {timeout:g} s (killed)"
        return out
    if isinstance(code, int) and code < 0:
        out["error"] = f"GPU worker killed by {_signal_name(-code)}"
        return out
    try:
        with open(res_path) as f:
            res = json.load(f)
    except (OSError, ValueError):
        out["error"] = f"GPU worker exited with code {code} and no result"
        return out
    out["gpu_only_error"] = (res.get("gpu_only") or {}).get("error")
    if not res.get("compiled"):
        out["error"] = _no_gpu_reason(log, gpu, res.get("error"))
        return out
    out.update(ok=True, fully_accelerated=res.get("fully_accelerated"), timing=res.get("timing"),
               init_us=res.get("init_us"))
    out["accelerated"] = _accelerated(res, gpu)
    if outputs_path and os.path.exists(outputs_path):
        with np.load(outputs_path) as data:
            out["outputs"] = {int(k[1:]): data[k] for k in data.files}
    return out


def _accelerated(res, gpu):
    if (res.get("gpu_only") or {}).get("compiled"):
        return "full"
    if gpu["gpu_ops"] == 0:
        return "none"
    if gpu["gpu_ops"] or gpu["fallback_ops"]:
        return "partial"
    return "none"


def _no_gpu_reason(log, gpu, error):
    """The error of a model that did not compile even with CPU fallback."""
    if "No adapters found" in log or "Failed to initialize WebGPU" in log:
        pieces = missing_gpu_pieces()
        if "ArrayDynamicIndexing required" in log:
            pieces.append("a newer Mesa (>= 24): Dawn refuses this Vulkan driver "
                          "(shaderUniform*ArrayDynamicIndexing required)")
        what = "; ".join(pieces) or "a Vulkan adapter Dawn accepts"
        return f"{NO_GPU}: missing {what}; {SETUP_HINT}"
    if "not be loaded" in log and "GPU accelerator" in log and "registered" not in log:
        return f"{NO_GPU}: LiteRT's GPU accelerator library could not be loaded"
    return f"GPU delegate rejected the model: {error or gpu['failure'] or 'no reason given'}"[:500]


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
