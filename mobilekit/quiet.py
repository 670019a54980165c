"""Quiet by default: TensorFlow, absl, XLA and converter chatter stays off the terminal unless
`mobilekit --verbose` or MOBILEKIT_VERBOSE=1.

Why three layers: TensorFlow's C++ libraries (two copies of absl, in TensorFlow and in the
converter) log straight to file descriptor 2 before `absl::InitializeLog`, so
TF_CPP_MIN_LOG_LEVEL does not reach the oneDNN notice, "Could not find cuda drivers" or the
cuInit error; only a filter on fd 2 does. Python-side chatter (tf/absl loggers, deprecation and
converter warnings) is dropped where it is emitted. Everything else on stderr (mobilekit's own
messages and warnings, tracebacks, unknown native errors) passes through unchanged.

Only the `mobilekit` command installs this (`install`); importing the library changes nothing.
"""
import atexit
import logging
import os
import re
import sys
import threading
import warnings

ENV = "MOBILEKIT_VERBOSE"

# Packages whose Python warnings and log records are chatter to a mobilekit user.
_CHATTY = ("tensorflow", "tf_keras", "keras", "absl", "tensorflow_model_optimization",
           "ai_edge_litert", "google", "h5py", "ml_dtypes")
_OWN_PATH = re.compile(r"[/\\]mobilekit[/\\][\w/\\]+\.py$")
_CHATTY_PATH = re.compile(r"[/\\]site-packages[/\\](%s)[/\\]" % "|".join(_CHATTY))
# absl/glog lines ("I0000 00:00:1796290032.612639    8680 port.cc:153] ...") and absl's
# pre-init banner. Error-level native lines are dropped only when they are the known
# no-GPU noise; any other native error still shows.
_NATIVE = re.compile(rb"^[IWEF]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] ")
_NATIVE_NOISE = re.compile(rb"^[IW]|cuInit|cuda|CUDA|TensorRT|cuDNN|cuFFT|cuBLAS")
_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# The converter's calibrator and LiteRT print these with printf, at info level.
_PRINTF = re.compile(rb"^(fully_quantize: \d|INFO: |To enable the following instructions: )")


def is_verbose():
    return os.environ.get(ENV, "").strip().lower() not in ("", "0", "false", "no")


def set_verbose():
    """`--verbose`: children inherit it; TensorFlow logs everything if not imported yet."""
    os.environ[ENV] = "1"
    if "tensorflow" not in sys.modules:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"


def is_chatter(line):
    """True for one line (bytes) of native TensorFlow/absl logging that a user need not see."""
    if line.startswith(_BANNER) or _PRINTF.match(line):
        return True
    return bool(_NATIVE.match(line)) and bool(_NATIVE_NOISE.search(line))


def install():
    """Quiet this process (the `mobilekit` command): idempotent; decisions are made per line
    or per warning, so a later `--verbose` (parsed after this) still shows everything."""
    if getattr(install, "done", False):
        return
    install.done = True
    _quiet_python()
    _filter_fd2()


def _quiet_python():
    shown = warnings.showwarning

    def showwarning(message, category, filename, lineno, file=None, line=None):
        if is_verbose():
            shown(message, category, filename, lineno, file, line)
        elif _OWN_PATH.search(filename or ""):  # ours: one line, no source excerpt
            print(f"Warning: {message}", file=file or sys.stderr)
        elif not _CHATTY_PATH.search(filename or ""):
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = showwarning

    class _Chatter(logging.Filter):
        def filter(self, record):
            return is_verbose() or record.levelno >= logging.ERROR

    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).addFilter(_Chatter())


def _filter_fd2():
    """Route fd 2 through a pipe; a thread passes on every line that is not chatter."""
    try:
        sys.stderr.flush()
        real = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:  # no usable stderr (closed, or a platform without pipes): stay as is
        return
    pump = threading.Thread(target=_pump, args=(read_end, real), name="mobilekit-stderr",
                            daemon=True)
    pump.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, 2)  # closes our write end: the pump sees EOF once children are gone
        pump.join(timeout=5)

    atexit.register(restore)


def _pump(read_end, real):
    """Copy the pipe to the real stderr minus chatter; whatever goes wrong, keep draining the
    pipe so that a writer to fd 2 never blocks."""
    pending = b""
    try:
        while data := os.read(read_end, 65536):
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if is_verbose() or not is_chatter(line))
            if b"\r" in pending:  # a progress line redrawn in place: show it now
                cut = pending.rindex(b"\r") + 1
                out, pending = out + pending[:cut], pending[cut:]
            _write(real, out)
        if is_verbose() or not is_chatter(pending):
            _write(real, pending)
    except Exception:  # noqa: BLE001
        while os.read(read_end, 65536):
            pass
    finally:
        os.close(read_end)


def _write(fd, data):
    try:
        while data:
            data = data[os.write(fd, data):]
    except OSError:  # the terminal or pipe behind stderr is gone: nothing to show it on
        pass
