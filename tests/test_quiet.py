"""Quiet by default: native TensorFlow/absl lines, TF-side Python warnings and log records
are dropped from the `mobilekit` command's stderr; mobilekit's own messages and warnings,
tracebacks and unknown native errors are not; MOBILEKIT_VERBOSE=1 / --verbose show all."""
import os
import subprocess
import sys

from mobilekit.quiet import is_chatter

# Real lines from `mobilekit quickstart` on a machine without a GPU (TF 2.21).
NOISE = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1796290032.612639    8680 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1796290032.612951    8680 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.",
    b"E0000 00:00:1796290034.736804    8680 cuda_platform.cc:52] failed call to cuInit: "
    b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
    b"W0000 00:00:1796290143.309305   10275 tf_tfl_flatbuffer_helpers.cc:364] Ignored output_format.",
    b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8, output_inference_type: INT8",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT = [
    b"E0000 00:00:1796290034.736804    8680 op_kernel.cc:1830] OP_REQUIRES failed: OOM",
    b"Error: --epochs must be >= 1; got 0",
    b"calibration: 300 samples of random",
    b"Traceback (most recent call last):",
]

SCRIPT = r"""
import logging, os, sys, warnings
from mobilekit import quiet
quiet.install()
for line in sys.argv[1:]:
    os.write(2, line.encode() + b"\n")
logging.getLogger("tensorflow").warning("retracing chatter")
warnings.warn_explicit("converter chatter", UserWarning,
                       "/venv/lib/python3.11/site-packages/tensorflow/lite/python/convert.py", 846)
for _ in range(3):  # shown once, in one line
    warnings.warn_explicit("skipped 2 corrupt file(s)", UserWarning,
                           os.path.join(os.path.dirname(quiet.__file__), "data", "specs.py"), 119,
                           registry=__import__("__main__").__dict__.setdefault("_reg", {}))
print("to stdout", flush=True)
"""


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "MOBILEKIT_VERBOSE"}
    env.update(env_extra)
    lines = [line.decode() for line in NOISE + KEPT]
    return subprocess.run([sys.executable, "-c", SCRIPT, *lines], capture_output=True,
                          env=env, timeout=120)


def test_chatter_classification():
    assert all(is_chatter(line) for line in NOISE)
    assert not any(is_chatter(line) for line in KEPT)


def test_quiet_process_drops_chatter_keeps_the_rest():
    result = _run({})
    err = result.stderr.decode().splitlines()
    assert result.returncode == 0, err
    assert err == [line.decode() for line in KEPT] + ["Warning: skipped 2 corrupt file(s)"]
    assert result.stdout.decode() == "to stdout\n"


def test_verbose_shows_everything():
    result = _run({"MOBILEKIT_VERBOSE": "1"})
    err = result.stderr.decode()
    for line in NOISE + KEPT:
        assert line.decode() in err
    assert "retracing chatter" in err and "converter chatter" in err


def test_cli_export_is_quiet_and_says_what_next(mobilekit_cli, tmp_path):
    """The real thing: TensorFlow imported, a model built and converted; every stderr line is
    one of mobilekit's own."""
    out = tmp_path / "m.tflite"
    env = {k: v for k, v in os.environ.items() if k != "MOBILEKIT_VERBOSE"}
    r = subprocess.run([sys.executable, "-m", "mobilekit", "export", "mobilenet_v1", "--alpha",
                        "0.25", "--resolution", "32", "--num-classes", "3", "--out", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    err = r.stderr.splitlines()
    assert err[-1] == f"next: mobilekit bench {out}"
    assert not [line for line in err if is_chatter(line.encode()) or "warn" in line.lower()
                or "cuda" in line.lower()], err
    verbose = mobilekit_cli("--verbose", "export", "mobilenet_v1", "--alpha", "0.25",
                            "--resolution", "32", "--num-classes", "3", "--out", str(out))
    assert verbose.returncode == 0, verbose.stderr
    assert any(is_chatter(line.encode()) for line in verbose.stderr.splitlines())
