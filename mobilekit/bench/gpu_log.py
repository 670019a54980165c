"""What the GPU delegate says about itself in a log: adapter, ops it left on the CPU, evidence.

One vocabulary for both GPU paths mobilekit drives: LiteRT's GPU accelerator in this
process' worker (mobilekit.bench.gpu_worker) and the GPU delegate of `benchmark_model` on a
phone or a Linux box (mobilekit.bench.parse). The lines are the delegate's own (their
wording is the same in both builds):

    Selected adapter: llvmpipe (LLVM 15.0.6, 256 bits), arch=software, vendor=mesa,
        backend=Vulkan, adapterType=CPU / Software            (WebGPU/Dawn, LiteRT)
    Created TensorFlow Lite delegate for GPU.                  (benchmark_model)
    Initialized OpenCL-based API.  /  Created 12 GPU delegate kernels.
    The model is completely executed by the delegate / partially executed by the delegate
        w/ 3 delegate kernels
    Following operations are not supported by GPU delegate:
    STRIDED_SLICE: Slice does not support shrink_axis_mask parameter.
    71 operations will run on the GPU, and the remaining 1 operations will run on the CPU.
    No GPU detected.  /  Failed to apply GPU delegate.

Pure Python (no TensorFlow, no LiteRT): the GPU worker must never import TensorFlow.
"""
import re

__all__ = ["parse_adapter", "parse_gpu_log", "SETUP_HINT"]

SETUP_HINT = ("set up a Vulkan driver: on Debian 12 run `sudo tools/setup_gpu.sh` (Mesa >= 24 "
              "from bookworm-backports: mesa-vulkan-drivers, libvulkan1)")

_ADAPTER = re.compile(r"Selected adapter:\s*(?P<name>.+?),\s*arch=(?P<arch>[^,]*),\s*"
                      r"vendor=(?P<vendor>[^,]*),\s*backend=(?P<backend>[^,]*),\s*"
                      r"adapterType=(?P<type>.+?)\s*$")
_UNSUPPORTED_HEAD = re.compile(r"Following operations are not supported by GPU delegate:?")
_UNSUPPORTED_OP = re.compile(r"^([A-Z][A-Z0-9_]+|CUSTOM \S+|[A-Za-z][\w]*):\s*(.*)$")
_SPLIT = re.compile(r"(\d+) operations? will run on the GPU, and the remaining (\d+) "
                    r"operations? will run on the CPU")
_KERNELS = re.compile(r"Created (\d+) GPU delegate kernels")
_COMPLETE = re.compile(r"model is completely executed by the delegate")
_PARTIAL = re.compile(r"partially executed by the delegate w/ (\d+) delegate kernels")
_CREATED = re.compile(r"Created TensorFlow Lite delegate for GPU|GPU delegate created|"
                      r"Initialized (?:OpenCL|OpenGL|WebGPU)[\w-]*(?: based)? API|"
                      r"Initializing WebGPU-based API")
_FAILED = re.compile(r"No GPU detected|Failed to apply GPU delegate|TfLiteGpuDelegate Init: .*|"
                     r"OpenGL-based API disabled|No adapters found|"
                     r"shaderUniform\S*ArrayDynamicIndexing required")
_PREFIX = re.compile(r"^(?:(?:INFO|WARNING|ERROR|VERBOSE)\s*:\s*)?(?:\[[\w./-]+:\d+\]\s*)?"
                     r"(?:[IWEF]\d{4} [\d:.]+\s+\d+\s+[\w./-]+:\d+\]\s*)?")


def _strip(line):
    return _PREFIX.sub("", line.strip(), count=1).strip()


def parse_adapter(text):
    """The GPU adapter LiteRT selected, from its log; None when no adapter line."""
    adapter = None
    for line in text.splitlines():
        m = _ADAPTER.search(line)
        if m:
            kind = m.group("type").strip()
            arch = m.group("arch").strip()
            adapter = {"name": m.group("name").strip(), "vendor": m.group("vendor").strip(),
                       "backend": m.group("backend").strip(), "type": kind, "arch": arch,
                       # Mesa's lavapipe / SwiftShader: the CPU runs the shaders.
                       "software": "software" in (kind + " " + arch).lower()
                                   or kind.upper().startswith("CPU")}
    return adapter


def parse_gpu_log(text):
    """dict: fallback_ops [{op, reason}], gpu_ops, cpu_ops, kernels, executed
    ('complete' | 'partial' | None), created (bool), failure (str | None)."""
    out = {"fallback_ops": [], "gpu_ops": None, "cpu_ops": None, "kernels": None,
           "executed": None, "created": False, "failure": None}
    reading_ops = False
    for raw in text.splitlines():
        line = _strip(raw)
        if not line:
            continue
        if _UNSUPPORTED_HEAD.search(line):
            reading_ops = True
            continue
        m = _SPLIT.search(line)
        if m:
            reading_ops = False
            out["gpu_ops"], out["cpu_ops"] = int(m.group(1)), int(m.group(2))
            continue
        if reading_ops:
            op = _UNSUPPORTED_OP.match(line)
            if op and not line.startswith(("INFO", "WARNING", "ERROR")):
                entry = {"op": op.group(1), "reason": op.group(2).strip()}
                if entry not in out["fallback_ops"]:  # each compile attempt repeats the list
                    out["fallback_ops"].append(entry)
                continue
            reading_ops = False
        m = _KERNELS.search(line)
        if m:
            out["kernels"] = int(m.group(1))
        m = _PARTIAL.search(line)
        if m:
            out["executed"] = "partial"
        elif _COMPLETE.search(line):
            out["executed"] = "complete"
        if _CREATED.search(line):
            out["created"] = True
        m = _FAILED.search(line)
        if m and out["failure"] is None:
            out["failure"] = line
    return out
