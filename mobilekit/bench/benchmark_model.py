"""Drive the TFLite / LiteRT `benchmark_model` tool on this Linux host or on Android via adb.

The binary is always one the user supplies (an explicit path or $MOBILEKIT_BENCHMARK_MODEL);
nothing is ever downloaded. Every run saves its raw log, parses it with
`mobilekit.bench.parse.parse_log` and returns one result row (mobilekit.bench.schema).

Public API (all keyword arguments after `threads` have the defaults shown):

    run_local(model_path, binary=None, delegate="xnnpack", threads=1, *,
              num_runs=50, warmup_runs=1, min_secs=None, op_profiling=False,
              peak_memory=False, gpu_precision_loss=True, extra_flags=(),
              log_dir="bench_logs", timeout=600.0, progress=True) -> dict

    run_adb(model_path, binary=None, delegate="xnnpack", threads=1, *,
            num_runs=50, warmup_runs=1, min_secs=None, op_profiling=False,
            peak_memory=False, gpu_precision_loss=True, extra_flags=(),
            serial=None, cpu_mask=None, apk=False, adb_path=None, adb=None,
            log_dir="bench_logs", timeout=600.0, apk_poll_interval=1.0,
            progress=True, cancel=None) -> dict

    read_sweep(out_dir, serial=None, device=None) -> list[dict]   # android_bench/run_sweep.sh output
    resolve_binary(path=None) -> Path          # explicit path, else $MOBILEKIT_BENCHMARK_MODEL
    read_elf(path) -> ElfInfo; elf_abi(path) -> "arm64-v8a" | "armeabi-v7a" | "x86_64" | "x86"
    build_flags(graph, delegate, threads, ...) -> list[str]
    Adb(adb_path=None, serial=None)            # device selection, getprop, push-if-changed, shell

Error policy: bad arguments (unknown delegate, missing model or binary, a binary built for
another ABI or OS than the target, cpu_mask with apk=True, no adb executable) raise
ValueError / FileNotFoundError. Everything that goes wrong on the device or during the run
(no device, offline, unauthorized, several devices without a serial, push failure, crash,
failed delegate, timeout) becomes a row with ok=False and `error` set, so one bad
configuration never aborts a sweep. When the cause is the device itself (unplugged, offline,
unauthorized, adb's own error mid-run, or `adb get-state` no longer saying `device` after a
failure), the error reads `device_lost: <adb's words>` (mobilekit.bench.device_health) and never
blames benchmark_model. A timeout, Ctrl-C or `cancel` ends the benchmark's process group on the
device too (its pid is recorded in REMOTE_PIDFILE): no orphan benchmark is left on the phone.
Pushes are checked afterwards (size + sha256): a truncated copy is pushed again.

`adb` may be an `Adb` instance shared across the runs of a sweep: it remembers the selected
device, its fingerprint and what was already pushed, so each configuration costs one run.
In APK mode (`apk=True`) runtime is "benchmark_model_apk" (an Activity has an app's
scheduling, so its numbers are not interchangeable with `adb shell` ones).
"""
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import namedtuple
from pathlib import Path

from mobilekit.bench.device_health import (Cancelled, adb_trouble, device_lost_error,
                                            get_state, is_lost_state)
from mobilekit.bench.schema import DELEGATES, DEVICE_KEYS, empty_result, file_sha256, model_fields
from mobilekit.errors import check_range, unknown_name

ENV_BINARY = "MOBILEKIT_BENCHMARK_MODEL"
REMOTE_DIR = "/data/local/tmp/mobilekit"
APK_PACKAGE = "org.tensorflow.lite.benchmark"
APK_ACTIVITY = f"{APK_PACKAGE}/.BenchmarkModelActivity"
RUNTIME = "benchmark_model"
RUNTIME_APK = "benchmark_model_apk"
# The remote benchmark records its pid (it execs, so the pid is benchmark_model's) so that a
# timeout or Ctrl-C can end its process group on the device: killing the local adb client
# leaves the remote process running.
REMOTE_PIDFILE = f"{REMOTE_DIR}/.benchmark.pid"
_REMOTE_RUN = 'echo "$$" > "$1"; shift; exec "$@"'
# pgid read before the kill; the group is ended only when it is not the killer's own (a device
# whose adbd does not start shells in their own session must never see adbd's group killed).
_REMOTE_KILL = ('p=$(cat "$1" 2>/dev/null); rm -f "$1"; [ -n "$p" ] || exit 0; '
                'g=$(ps -o pgid= -p "$p" 2>/dev/null | tr -dc 0-9); '
                'me=$(ps -o pgid= -p "$$" 2>/dev/null | tr -dc 0-9); kill -9 "$p" 2>/dev/null; '
                'if [ -n "$g" ] && [ "$g" != "$me" ]; then kill -9 -"$g" 2>/dev/null; fi; exit 0')

# ---------------------------------------------------------------- binary + ELF


def resolve_binary(path=None):
    """The benchmark_model binary: `path`, else $MOBILEKIT_BENCHMARK_MODEL. Never downloads."""
    source = "benchmark binary"
    if path is None or str(path) == "":
        path = os.environ.get(ENV_BINARY) or None
        source = f"${ENV_BINARY}"
    if path is None:
        raise FileNotFoundError(
            f"no benchmark_model binary given: pass --benchmark-binary PATH or set ${ENV_BINARY} "
            "(see android_bench/README.md for where to get one; mobilekit never downloads it)")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{source} {str(path)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"{source} {str(path)!r} is not a file")
    return path


ElfInfo = namedtuple("ElfInfo", "bits endian machine abi interpreter")

# (e_machine, class bits) -> Android ABI name
_ELF_ABIS = {(183, 64): "arm64-v8a", (40, 32): "armeabi-v7a", (62, 64): "x86_64", (3, 32): "x86"}
_PT_INTERP = 3


def read_elf(path):
    """Class, byte order, machine, ABI and program interpreter of an ELF file (ValueError if not ELF)."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    if len(data) < 52 or data[:4] != b"\x7fELF":
        raise ValueError(f"{os.fspath(path)!r} is not an ELF executable (starts with {data[:4]!r}); "
                         "expected a benchmark_model binary built for Linux or Android")
    bits = {1: 32, 2: 64}.get(data[4])
    endian = {1: "little", 2: "big"}.get(data[5])
    if bits is None or endian is None:
        raise ValueError(f"{os.fspath(path)!r} has a corrupt ELF header (class {data[4]}, data {data[5]})")

    def num(offset, size):
        return int.from_bytes(data[offset:offset + size], endian)

    machine = num(18, 2)
    abi = _ELF_ABIS.get((machine, bits))
    if bits == 64:
        phoff, phentsize, phnum, off_at, size_at, word = num(32, 8), num(54, 2), num(56, 2), 8, 32, 8
    else:
        phoff, phentsize, phnum, off_at, size_at, word = num(28, 4), num(42, 2), num(44, 2), 4, 16, 4
    interpreter = None
    for i in range(phnum):
        base = phoff + i * phentsize
        if base + phentsize > len(data):
            break
        if num(base, 4) == _PT_INTERP:
            start, size = num(base + off_at, word), num(base + size_at, word)
            interpreter = data[start:start + size].split(b"\0")[0].decode("ascii", "replace") or None
            break
    return ElfInfo(bits, endian, machine, abi, interpreter)


def elf_abi(path):
    """Android ABI name of an ELF binary: arm64-v8a, armeabi-v7a, x86_64 or x86."""
    info = read_elf(path)
    if info.abi is None:
        raise ValueError(f"{os.fspath(path)!r} is a {info.bits}-bit ELF for machine {info.machine}; "
                         f"supported: {', '.join(sorted(set(_ELF_ABIS.values())))}")
    return info.abi


def _is_android_build(info):
    return bool(info.interpreter) and info.interpreter.startswith("/system/bin/linker")


def host_abi():
    machine = platform.machine().lower()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64-v8a", "arm64": "arm64-v8a",
            "armv7l": "armeabi-v7a", "armv8l": "armeabi-v7a", "i386": "x86",
            "i686": "x86"}.get(machine, machine)


# ---------------------------------------------------------------- flags

_DELEGATE_FLAGS = {
    "cpu": ["--use_xnnpack=false"],   # reference kernels: the runtime applies XNNPACK unless told not to
    "xnnpack": ["--use_xnnpack=true"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


def _bool(value):
    return "true" if value else "false"


def build_flags(graph, delegate="xnnpack", threads=1, *, num_runs=50, warmup_runs=1,
                min_secs=None, op_profiling=False, peak_memory=False, gpu_precision_loss=True,
                extra_flags=()):
    """benchmark_model arguments (a list, one `--name=value` per element; not shell-quoted)."""
    if delegate not in _DELEGATE_FLAGS:
        raise unknown_name("delegate", delegate, DELEGATES)
    threads = _positive_int("threads", threads)
    num_runs = _positive_int("num_runs", num_runs)
    if not isinstance(warmup_runs, int) or isinstance(warmup_runs, bool) or warmup_runs < 0:
        raise ValueError(f"warmup_runs must be an integer >= 0; got {warmup_runs!r}")
    flags = [f"--graph={graph}", *_DELEGATE_FLAGS[delegate]]
    if delegate == "gpu":
        flags.append(f"--gpu_precision_loss_allowed={_bool(gpu_precision_loss)}")
    flags += [f"--num_threads={threads}", f"--num_runs={num_runs}", f"--warmup_runs={warmup_runs}"]
    if min_secs is not None:
        check_range("min_secs", float(min_secs), 0.0, float("inf"), low_inclusive=True)
        flags.append(f"--min_secs={float(min_secs):g}")
    if op_profiling:
        flags.append("--enable_op_profiling=true")
    if peak_memory:
        flags.append("--report_peak_memory_footprint=true")
    for flag in extra_flags:
        if not isinstance(flag, str) or not re.fullmatch(r"--[A-Za-z0-9_]+(=.*)?", flag, re.S):
            raise ValueError(f"extra benchmark_model flags must look like --name=value; got {flag!r}")
        flags.append(flag)
    return flags


def _positive_int(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be an integer >= 1; got {value!r}")
    return value


# ---------------------------------------------------------------- streaming + logs

_KEY_LINE = re.compile(r"Running benchmark|count=|Inference timings|Average inference|"
                       r"ERROR|[Ff]ailed|not executable|not found|delegate", re.I)


class _Progress:
    """One status line on a terminal (rewritten in place); only key lines otherwise."""

    def __init__(self, enabled, label, stream=None):
        self.callback = enabled if callable(enabled) else None
        self.enabled = bool(enabled)
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.callback is None and getattr(self.stream, "isatty", lambda: False)()
        self.dirty = False

    def __call__(self, line):
        line = line.rstrip()
        if not self.enabled or not line:
            return
        if self.callback is not None:
            self.callback(line)
        elif self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - len(self.label) - 4
            self.stream.write(f"\r\x1b[K{self.label}: {line[:max(width, 20)]}")
            self.stream.flush()
            self.dirty = True
        elif _KEY_LINE.search(line):
            self.stream.write(f"{self.label}: {line}\n")

    def close(self):
        if self.dirty:
            self.stream.write("\n")
            self.stream.flush()
            self.dirty = False


def _stream(cmd, log_path, on_line, timeout, cancel=None):
    """Run cmd, teeing stdout+stderr into log_path and on_line. Returns (rc, text, timed_out).

    The child gets its own process group so a timeout (or Ctrl-C) also ends what a wrapper
    script started; the log is written to `<log>.partial` and renamed when the run ends.
    `cancel` (a threading.Event) set by another thread ends the child and raises Cancelled.
    """
    lines = []
    partial = Path(f"{log_path}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", bufsize=1,
                            start_new_session=True)
    timed_out = False
    with open(partial, "w", encoding="utf-8") as log:

        def pump():
            for line in proc.stdout:
                lines.append(line)
                log.write(line)
                log.flush()
                on_line(line)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            timed_out = _wait(proc, timeout, cancel)
        finally:
            if proc.poll() is None:
                _kill_group(proc)
            reader.join(timeout=5)
            proc.stdout.close()
    os.replace(partial, log_path)
    return proc.returncode, "".join(lines), timed_out


def _wait(proc, timeout, cancel):
    """Wait for proc; True when `timeout` passed first; Cancelled when `cancel` is set."""
    if cancel is None:
        try:
            proc.wait(timeout=timeout)
            return False
        except subprocess.TimeoutExpired:
            return True
    deadline = None if timeout is None else time.monotonic() + timeout
    while proc.poll() is None:
        if cancel.is_set():
            raise Cancelled()
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            return True
        try:
            proc.wait(timeout=0.1 if left is None else min(0.1, left))
        except subprocess.TimeoutExpired:
            pass
    return False


def _kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # the group we created for this child only
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.wait()


def _write_log(log_path, text):
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{log_path}.partial")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, log_path)


def _log_path(log_dir, model_path, target, delegate, threads, serial=None):
    stamp = time.strftime("%Y%m%dT%H%M%S") + f"{time.time() % 1:.6f}"[1:].replace(".", "_")
    where = target if not serial else f"{target}-{serial}"
    name = f"{Path(model_path).stem}__{where}__{delegate}__t{threads}__{stamp}.log"
    return Path(log_dir) / re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _parse(text):
    from mobilekit.bench.parse import parse_log

    return parse_log(text)


# Text that means the run (or adb itself) failed even when an exit code says 0
# (old adb without the shell v2 protocol always exits 0).
_FAILURE_TEXT = re.compile(
    r"not executable|CANNOT LINK EXECUTABLE|inaccessible or not found|: not found|"
    r"No such file or directory|Permission denied|Segmentation fault|Aborted|"
    r"Benchmarking failed|Failed to apply .* delegate|^error: |^adb: error", re.M)


def _failure_line(text):
    match = _FAILURE_TEXT.search(text or "")
    if not match:
        return None
    start = text.rfind("\n", 0, match.start()) + 1
    end = text.find("\n", match.end())
    return text[start:end if end >= 0 else len(text)].strip()


def _last_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _finish_row(base, text, rc, timed_out, timeout, what):
    """Merge the parsed log into the base row and decide ok / error."""
    row = dict(base)
    parsed = _parse(text) if text else {}
    for key, value in parsed.items():
        if key in row and row[key] is None and value is not None:
            row[key] = value
    adb_error = re.search(r"^(?:adb: )?error: .*$", text or "", re.M)   # adb itself, mid-run
    reason = (adb_error.group(0).strip() if adb_error else None) or \
        (parsed.get("error") if not parsed.get("ok") else None) or \
        _failure_line(text) or f"no result summary (last line: {_last_line(text)})"
    error = None
    if timed_out:
        error = f"{what} timed out after {timeout:g} s"
    elif rc not in (0, None):
        error = f"{what} exited with code {rc}: {reason}"
    elif not parsed.get("ok") or adb_error:
        error = reason
    if error is None:  # a gpu/nnapi row is ok only when the log shows that delegate applied
        from mobilekit.bench.parse import delegate_not_applied

        error = delegate_not_applied(row["delegate"], text)
    row["ok"] = error is None
    row["error"] = error
    return row


# ---------------------------------------------------------------- local mode


def run_local(model_path, binary=None, delegate="xnnpack", threads=1, *, num_runs=50,
              warmup_runs=1, min_secs=None, op_profiling=False, peak_memory=False,
              gpu_precision_loss=True, extra_flags=(), log_dir="bench_logs", timeout=600.0,
              progress=True):
    """Benchmark a .tflite file with benchmark_model on this Linux host; one result row."""
    model_path = _check_model(model_path)
    binary = resolve_binary(binary)
    if not os.access(binary, os.X_OK):
        raise ValueError(f"benchmark binary {str(binary)!r} is not executable (chmod +x it)")
    _check_local_binary(binary)
    flags = build_flags(model_path, delegate, threads, num_runs=num_runs, warmup_runs=warmup_runs,
                        min_secs=min_secs, op_profiling=op_profiling, peak_memory=peak_memory,
                        gpu_precision_loss=gpu_precision_loss, extra_flags=extra_flags)
    log_path = _log_path(log_dir, model_path, "local", delegate, threads)
    base = empty_result(**model_fields(model_path), target="local", serial=None,
                        device=_host_device(), runtime=RUNTIME, delegate=delegate, threads=threads,
                        warmup_runs=warmup_runs, num_runs=num_runs, raw_log_path=str(log_path),
                        run_flags=[str(f) for f in flags], binary_sha256=file_sha256(binary))
    show = _Progress(progress, f"benchmark_model {model_path.name} {delegate} t{threads}")
    try:
        rc, text, timed_out = _stream([str(binary), *flags], log_path, show, timeout)
    except OSError as exc:   # e.g. exec format error, missing ELF interpreter
        show.close()
        return dict(base, raw_log_path=None, error=f"cannot execute {str(binary)!r}: {exc}")
    show.close()
    return _finish_row(base, text, rc, timed_out, timeout, "benchmark_model")


def _check_model(model_path):
    model_path = Path(model_path).expanduser()
    if not model_path.is_file():
        raise FileNotFoundError(f"model file {str(model_path)!r} does not exist")
    return model_path.resolve()


def _check_local_binary(binary):
    try:
        info = read_elf(binary)
    except ValueError:
        return   # a wrapper script: let the OS decide
    if _is_android_build(info):
        raise ValueError(f"benchmark binary {str(binary)!r} is an Android build (interpreter "
                         f"{info.interpreter}); run it with --target adb, or use a Linux build")
    host = host_abi()
    if info.abi and info.abi != host:
        raise ValueError(f"benchmark binary {str(binary)!r} is built for {info.abi}; "
                         f"this host is {host}")


def _host_device():
    device = dict.fromkeys(DEVICE_KEYS)
    device.update(model=platform.node() or None, abi=host_abi(), fingerprint=platform.platform())
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    device["soc"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return device


# ---------------------------------------------------------------- adb


class AdbError(RuntimeError):
    """adb or the device failed; run_adb turns it into an ok=False row."""


class DeviceLost(AdbError):
    """The chosen device is not there (unplugged, offline, unauthorized): a `device_lost` row."""


_STATE_HINTS = {
    "offline": "it is offline: reconnect the cable, or run `adb kill-server` and retry",
    "unauthorized": "it is unauthorized: unlock the phone and accept the USB-debugging prompt",
    "authorizing": "it is still authorizing: accept the USB-debugging prompt on the phone",
    "no permissions": "adb has no permission to open it: check the udev rules for this USB device",
    "recovery": "it is in recovery mode, not booted into Android",
    "sideload": "it is in sideload mode, not booted into Android",
    "bootloader": "it is in the bootloader, not booted into Android",
    "connecting": "it is still connecting",
}


def find_adb(adb_path=None):
    """The adb executable: adb_path, else `adb` on PATH, else $ANDROID_HOME/platform-tools/adb."""
    if adb_path:
        path = Path(adb_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"adb executable {str(path)!r} does not exist")
        return str(path)
    found = shutil.which("adb")
    if found:
        return found
    for var in ("ANDROID_HOME", "ANDROID_SDK_ROOT"):
        root = os.environ.get(var)
        if root and Path(root, "platform-tools", "adb").is_file():
            return str(Path(root, "platform-tools", "adb"))
    raise FileNotFoundError("adb not found on PATH: install Android platform-tools or pass --adb PATH")


def parse_devices(text):
    """`adb devices -l` output -> [(serial, state, {"model": ..., ...})]."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server", "adb: ")):
            continue
        serial, _, rest = line.partition(" ") if "\t" not in line else line.partition("\t")
        rest = rest.strip()
        if rest.startswith("no permissions"):
            state, rest = "no permissions", rest[len("no permissions"):]
        else:
            state, _, rest = rest.partition(" ")
        info = dict(item.split(":", 1) for item in rest.split() if ":" in item)
        devices.append((serial, state, info))
    return devices


def parse_getprop(text):
    """`getprop` listing (`[key]: [value]` lines) -> dict."""
    return dict(re.findall(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$", text, re.M))


class Adb:
    """One Android device reached through the adb executable.

    Remote commands are built from argument lists, each argument shell-quoted, so file
    names with spaces, `;` or `$(...)` reach the device as single arguments.
    """

    def __init__(self, adb_path=None, serial=None, timeout=120.0):
        self.exe = find_adb(adb_path)
        self.requested = serial or os.environ.get("ANDROID_SERIAL") or None
        self.timeout = timeout
        self.serial = None
        self._props = None
        self._pushed = {}   # remote path -> sha256 pushed (or verified) in this session
        self._dirs = set()  # remote directories created in this session

    # -- plumbing
    def run(self, args, timeout=None, check=True, serial=True):
        """Run `adb [-s SERIAL] args...`; returns (rc, output). AdbError when check fails."""
        cmd = [self.exe]
        if serial:
            cmd += ["-s", self.select()]
        cmd += list(args)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL, timeout=timeout or self.timeout)
        except subprocess.TimeoutExpired:
            raise AdbError(f"`{shlex.join(cmd)}` timed out after {timeout or self.timeout:g} s")
        except OSError as exc:
            raise AdbError(f"cannot run adb {self.exe!r}: {exc}")
        out = proc.stdout + proc.stderr
        if check and (proc.returncode != 0 or re.search(r"^(adb: )?error: ", out, re.M)):
            raise AdbError(f"`adb {shlex.join(args)}` failed (exit {proc.returncode}): "
                           f"{_failure_line(out) or _last_line(out)}")
        return proc.returncode, out

    def shell_command(self, argv):
        """The remote command line for argv, every argument quoted for the device shell."""
        return " ".join(shlex.quote(str(a)) for a in argv)

    def shell(self, argv, timeout=None, check=True):
        return self.run(["shell", self.shell_command(argv)], timeout=timeout, check=check)

    # -- device selection and fingerprint
    def devices(self):
        return parse_devices(self.run(["devices", "-l"], serial=False)[1])

    def select(self):
        """Serial of the device to use; AdbError naming the problem when there is none."""
        if self.serial:
            return self.serial
        devices = self.devices()
        listing = ", ".join(f"{s} ({st})" for s, st, _ in devices) or "none"
        if self.requested:
            match = [d for d in devices if d[0] == self.requested]
            if not match:
                raise DeviceLost(f"device {self.requested!r} not found; connected: {listing}")
            serial, state, _ = match[0]
        elif not devices:
            raise AdbError("no Android device found (`adb devices -l` lists none): connect a phone "
                           "with USB debugging on, or start an emulator")
        elif len(devices) > 1:
            raise AdbError(f"{len(devices)} devices connected ({listing}); choose one with --serial")
        else:
            serial, state, _ = devices[0]
        if state != "device":
            raise DeviceLost(f"device {serial!r} cannot be used: "
                           f"{_STATE_HINTS.get(state, f'its state is {state!r}')}")
        self.serial = serial
        return serial

    def props(self):
        if self._props is None:
            self._props = parse_getprop(self.shell(["getprop"])[1])
        return self._props

    def fingerprint(self):
        """The schema's device dict from getprop."""
        p = self.props()

        def first(*keys):
            return next((p[k] for k in keys if p.get(k)), None)

        return {"manufacturer": first("ro.product.manufacturer"),
                "model": first("ro.product.model"),
                "board": first("ro.product.board"),
                "soc": first("ro.soc.model", "ro.board.platform", "ro.hardware"),
                "abi": first("ro.product.cpu.abi"),
                "android_version": first("ro.build.version.release"),
                "fingerprint": first("ro.build.fingerprint")}

    def known_fingerprint(self):
        """The fingerprint if getprop was already read in this session, else None (no adb call:
        for rows of a device that is gone)."""
        return self.fingerprint() if self._props is not None else None

    def abilist(self):
        p = self.props()
        if p.get("ro.product.cpu.abilist"):
            return [a.strip() for a in p["ro.product.cpu.abilist"].split(",") if a.strip()]
        return [p[k] for k in ("ro.product.cpu.abi", "ro.product.cpu.abi2") if p.get(k)]

    # -- files
    def forget_pushes(self):
        """After the device came back: check (size + hash) and re-push files before use."""
        self._pushed.clear()
        self._dirs.clear()

    def remote_check(self, remote, size, digest):
        """None when the remote file has `size` bytes and (where sha256sum exists) `digest`;
        else what was found (text). A device without stat cannot be checked: None."""
        rc, out = self.shell(["stat", "-c", "%s", remote], check=False)
        if rc != 0 and re.search(r"inaccessible or not found|: not found", out):
            return None
        if rc != 0 or out.strip() != str(size):
            return f"{out.strip() or 'no file'} bytes" if rc == 0 else _last_line(out)
        rc, out = self.shell(["sha256sum", remote], check=False)
        match = re.match(r"\s*([0-9a-f]{64})\b", out)
        if not (rc == 0 and match):
            return None
        return None if match.group(1) == digest else f"sha256 {match.group(1)[:12]}"

    def end_remote_benchmark(self):
        """End the benchmark started by run_adb on the device (its process group), if any."""
        try:
            self.shell(["sh", "-c", _REMOTE_KILL, "sh", REMOTE_PIDFILE], check=False, timeout=30)
        except AdbError:
            pass   # the device is gone: nothing left running there to end

    def remote_sha256(self, remote, size):
        """sha256 of a remote file if it exists with `size` bytes, else None (also when
        the device lacks stat / sha256sum)."""
        rc, out = self.shell(["stat", "-c", "%s", remote], check=False)
        if rc != 0 or out.strip() != str(size):
            return None
        rc, out = self.shell(["sha256sum", remote], check=False)
        match = re.match(r"\s*([0-9a-f]{64})\b", out)
        return match.group(1) if rc == 0 and match else None

    def push(self, local, remote, mode=None):
        """Push unless the device already has the same bytes. Returns True when pushed.

        A push is checked afterwards (size, and sha256 where the device has sha256sum): a
        cable that drops mid-copy can leave a truncated file while adb reports success.
        """
        local = Path(local)
        digest = file_sha256(local)
        if self._pushed.get(remote) == digest:
            return False
        size = local.stat().st_size
        pushed = self.remote_sha256(remote, size) != digest
        if pushed:
            remote_dir = str(Path(remote).parent)
            if remote_dir not in self._dirs:
                # 755: the benchmark APK runs as another user and must reach the model
                self.shell(["mkdir", "-p", "-m", "755", remote_dir])
                self._dirs.add(remote_dir)
            for attempt in (1, 2):
                self.run(["push", str(local), remote], timeout=max(self.timeout, 600))
                found = self.remote_check(remote, size, digest)
                if found is None:
                    break
                if attempt == 2:
                    raise AdbError(f"push of {local.name} to {remote} left a different file "
                                   f"twice ({found}; expected {size} bytes, sha256 {digest[:12]})")
        if mode is not None:
            self.shell(["chmod", mode, remote])
        self._pushed[remote] = digest
        return pushed


# ---------------------------------------------------------------- adb mode


def run_adb(model_path, binary=None, delegate="xnnpack", threads=1, *, num_runs=50,
            warmup_runs=1, min_secs=None, op_profiling=False, peak_memory=False,
            gpu_precision_loss=True, extra_flags=(), serial=None, cpu_mask=None, apk=False,
            adb_path=None, adb=None, log_dir="bench_logs", timeout=600.0, apk_poll_interval=1.0,
            progress=True, cancel=None):
    """Benchmark a .tflite file on an Android device through adb; one result row.

    A failure that is the device's (gone, offline, adb's own error) gives an error starting
    `device_lost: ` with adb's words. `cancel` (threading.Event) set by another thread
    abandons the run: its process group on the device is ended and Cancelled is raised;
    Ctrl-C (KeyboardInterrupt) in the calling thread does the same.
    """
    model_path = _check_model(model_path)
    if cpu_mask is not None:
        cpu_mask = str(cpu_mask)
        if not re.fullmatch(r"(0x)?[0-9a-fA-F]+", cpu_mask) or int(cpu_mask, 16) == 0:
            raise ValueError(f"cpu_mask must be a non-zero hex CPU mask such as f0; got {cpu_mask!r}")
        if apk:
            raise ValueError("cpu_mask cannot be used with apk=True (the APK runs as an Activity)")
    binary_info = None
    if not apk:
        binary = resolve_binary(binary)
        binary_info = read_elf(binary)
        if binary_info.abi is None:
            elf_abi(binary)   # raises the unsupported-machine error
        if binary_info.interpreter and not _is_android_build(binary_info):
            raise ValueError(f"benchmark binary {str(binary)!r} is a Linux build (interpreter "
                             f"{binary_info.interpreter}); Android needs an Android build such as "
                             "android_aarch64_benchmark_model")
    # The APK splits its args string on whitespace, so its remote model name has none.
    remote_name = re.sub(r"\s+", "_", model_path.name) if apk else model_path.name
    remote_model = f"{REMOTE_DIR}/{remote_name}"
    flags = build_flags(remote_model, delegate, threads, num_runs=num_runs, warmup_runs=warmup_runs,
                        min_secs=min_secs, op_profiling=op_profiling, peak_memory=peak_memory,
                        gpu_precision_loss=gpu_precision_loss, extra_flags=extra_flags)
    if adb is None:
        adb = Adb(adb_path, serial)
    base = empty_result(**model_fields(model_path), target="adb", serial=adb.requested,
                        runtime=RUNTIME_APK if apk else RUNTIME, delegate=delegate,
                        threads=threads, warmup_runs=warmup_runs, num_runs=num_runs,
                        run_flags=flags, cpu_mask=cpu_mask,
                        binary_sha256=None if apk else file_sha256(binary))
    try:
        base["serial"] = adb.select()
        base["device"] = adb.fingerprint()
        if binary_info is not None:
            abilist = adb.abilist()
            if abilist and binary_info.abi not in abilist:
                raise ValueError(
                    f"benchmark binary {str(binary)!r} is {binary_info.abi} but device "
                    f"{base['serial']!r} supports {', '.join(abilist)}; use a matching build")
        log_path = _log_path(log_dir, model_path, "adb", delegate, threads, base["serial"])
        base["raw_log_path"] = str(log_path)
        adb.push(model_path, remote_model, mode="644" if apk else None)   # the APK is another user
        if apk:
            return _run_apk(adb, base, flags, log_path, timeout, apk_poll_interval, cancel)
        remote_binary = f"{REMOTE_DIR}/{binary.name}"
        adb.push(binary, remote_binary, mode="755")
        argv = (["taskset", cpu_mask] if cpu_mask else []) + [remote_binary, *flags]
        wrapped = ["sh", "-c", _REMOTE_RUN, "sh", REMOTE_PIDFILE, *argv]
        cmd = [adb.exe, "-s", base["serial"], "shell", adb.shell_command(wrapped)]
        show = _Progress(progress, f"{base['serial']} {model_path.name} {delegate} t{threads}")
        try:
            rc, text, timed_out = _stream(cmd, log_path, show, timeout, cancel)
        except KeyboardInterrupt:   # Ctrl-C or Cancelled: no orphan benchmark on the phone
            adb.end_remote_benchmark()
            raise
        finally:
            show.close()
        if timed_out:   # killing local adb leaves the remote process running
            adb.end_remote_benchmark()
        row = _finish_row(base, text, rc, timed_out, timeout, "benchmark_model")
        return row if row["ok"] else _name_device_trouble(adb, row, text)
    except DeviceLost as exc:
        return dict(base, ok=False, error=device_lost_error(exc))
    except AdbError as exc:
        return _name_device_trouble(adb, dict(base, ok=False, error=str(exc)), str(exc))
    except OSError as exc:
        return dict(base, ok=False, error=f"adb failed: {exc}")


def _name_device_trouble(adb, row, text):
    """A failed row whose cause is the device (adb's complaint in the output, or a device
    that is no longer in the `device` state) says `device_lost: <adb's words>`."""
    words = adb_trouble(text)
    state, state_words = get_state(adb.exe, row["serial"]) if row.get("serial") else (None, None)
    if not words and not is_lost_state(state):
        return row
    said = [w for w in (words, is_lost_state(state) and state_words and
                        f"get-state: {state_words}") if w]
    if not said:
        said = [f"adb could not reach {row.get('serial')!r} ({state})"]
    return dict(row, ok=False, error=device_lost_error("; ".join(said)))


_APK_DONE = re.compile(r"Inference timings in us|Average inference timings")
_APK_FAILED = re.compile(r"Benchmarking failed|Failed to initialize|Failed to apply|"
                         r"Failed to allocate|Error: |Didn't find op")
def _run_apk(adb, base, flags, log_path, timeout, poll_interval, cancel=None):
    try:
        return _run_apk_once(adb, base, flags, log_path, timeout, poll_interval, cancel)
    except KeyboardInterrupt:   # Ctrl-C or Cancelled: stop the Activity before leaving
        adb.shell(["am", "force-stop", APK_PACKAGE], check=False, timeout=30)
        raise


def _run_apk_once(adb, base, flags, log_path, timeout, poll_interval, cancel):
    _, out = adb.shell(["pm", "path", APK_PACKAGE], check=False)
    if "package:" not in out:
        return dict(base, ok=False, error=(
            f"benchmark APK {APK_PACKAGE} is not installed on {base['serial']}: "
            "adb install -r -d -g android_aarch64_benchmark_model.apk"))
    adb.run(["logcat", "-c"])
    _, out = adb.shell(["am", "start", "-S", "-n", APK_ACTIVITY, "--es", "args", " ".join(flags)])
    if re.search(r"^Error", out, re.M):
        return dict(base, ok=False, error=f"am start failed: {_last_line(out)}")
    deadline = time.monotonic() + timeout
    raw = ""
    while True:
        _, raw = adb.run(["logcat", "-d", "-s", "tflite"])
        if _APK_DONE.search(raw) or _APK_FAILED.search(raw):
            break
        if time.monotonic() >= deadline:
            break
        if cancel is not None and cancel.is_set():
            raise Cancelled()
        time.sleep(poll_interval)
    adb.shell(["am", "force-stop", APK_PACKAGE], check=False)
    _write_log(log_path, raw)
    timed_out = not (_APK_DONE.search(raw) or _APK_FAILED.search(raw))
    row = _finish_row(base, raw, 0, timed_out, timeout, "benchmark APK")
    return row if row["ok"] else _name_device_trouble(adb, row, raw)   # parser strips logcat prefixes


# ---------------------------------------------------------------- on-device sweeps


def read_sweep(out_dir, serial=None, device=None):
    """Rows of a sweep run on the phone by android_bench/run_sweep.sh and pulled to out_dir.

    Reads out_dir/results.tsv (model, delegate, threads, exit code, log relative to out_dir)
    and parses each log. model_path is the path on the device (its hash is unknown here).
    One row per run (repeats are separate rows); with the state files run_sweep.sh writes
    (state/<log name>.before.txt / .after.txt) each row gets state_before / state_after,
    emulator and the unstable flag (mobilekit.bench.trust).
    """
    out_dir = Path(out_dir)
    results = out_dir / "results.tsv"
    if not results.is_file():
        raise FileNotFoundError(f"sweep results {str(results)!r} not found (did run_sweep.sh finish?)")
    rows = []
    for number, line in enumerate(results.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ValueError(f"{results}:{number}: expected 5 tab-separated fields "
                             f"(model, delegate, threads, exit_code, log); got {line!r}")
        model, delegate, threads, rc, log = fields
        log_path = out_dir / log
        base = empty_result(model_path=model, target="adb", serial=serial, device=device,
                            runtime=RUNTIME, delegate=delegate, threads=int(threads),
                            raw_log_path=str(log_path))
        text = log_path.read_text(encoding="utf-8", errors="replace") if log_path.is_file() else ""
        row = _finish_row(base, text, int(rc), False, None, "benchmark_model")
        if not log_path.is_file():
            row.update(ok=False, error=f"log {log} missing from {out_dir}")
        rows.append(_sweep_state(row, out_dir, log))
    return rows


def _sweep_state(row, out_dir, log):
    """Attach state/<log name>.before.txt / .after.txt (run_sweep.sh) and judge the row;
    a sweep from an older script has no state files and keeps its row as it was."""
    from mobilekit.bench.device_state import parse_state_text
    from mobilekit.bench.trust import judge, merge_repeats

    stem = Path(log).name.removesuffix(".log")
    paths = [out_dir / "state" / f"{stem}.{when}.txt" for when in ("before", "after")]
    if not all(p.is_file() for p in paths):
        return row
    before, after = (parse_state_text(p.read_text(encoding="utf-8", errors="replace"))
                     for p in paths)
    return judge(merge_repeats([row]), [(before, after)])
