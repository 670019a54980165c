"""What a host timing was measured on: the CPU's model, core count and the SIMD flags that
pick XNNPACK's kernels (AVX2-only AMD, AVX-512 VNNI and AMX hosts all appear under one
machine kind here, with different speeds), to be named beside every host figure."""
import os
import platform
from pathlib import Path

SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_tile")


def cpu_info():
    """{"model", "cpus", "flags": those of SIMD_FLAGS this CPU has}."""
    try:
        lines = Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    model = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("model name")), platform.processor() or "unknown")
    have = set(next((line.split(":", 1)[1].split() for line in lines
                     if line.startswith("flags")), []))
    return {"model": model, "cpus": os.cpu_count(),
            "flags": [flag for flag in SIMD_FLAGS if flag in have]}


def describe():
    """One line for a report: 'x86_64 <model>, 2 CPUs, flags avx2 fma ...'."""
    info = cpu_info()
    return (f"{platform.machine()} {info['model']}, {info['cpus']} CPUs, flags "
            f"{' '.join(info['flags']) or '(none of ' + ', '.join(SIMD_FLAGS) + ')'}")
