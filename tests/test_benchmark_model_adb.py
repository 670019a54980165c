"""benchmark_model runner: ELF/ABI checks, flags, local mode, and adb mode against a stand-in adb.

No phone exists here: the stand-in `adb` (written into tmp_path, first on PATH) answers like
one device or several, keeps the pushed files in a JSON state file, tokenises every remote
command the way a POSIX shell would (so an unquoted `;` or `$(` shows up as an operator) and
records each call as one JSON line.
"""
import hashlib
import json
import os
import shlex
import stat
import struct
import sys
import textwrap
from pathlib import Path

import pytest

from mobilekit.bench import benchmark_model as bm
from mobilekit.bench.schema import DEVICE_KEYS, RESULT_KEYS

FAKE_ADB = r'''
import fcntl, glob, hashlib, json, os, shlex, signal, subprocess, sys, time

CFG = json.load(open(os.environ["FAKE_ADB_CONFIG"]))
STATE_DIR = os.environ["FAKE_ADB_STATE"]
OPS = {";", "&&", "||", "|", "&", "(", ")", "$", "`", "<", ">", ">>"}
SERIAL = None   # the device this call talks to (its own folder of files and state)


def state_path(serial):
    return os.path.join(STATE_DIR, f"{serial}.json")


def load(serial):
    try:
        with open(state_path(serial)) as f:
            return json.load(f)
    except FileNotFoundError:
        return {"files": dict(CFG.get("remote_files", {})), "logcat": [], "polls": 0, "runs": 0}


def update(serial, change):
    # read-modify-write under a lock: several adb calls (one per phone, a kill during a run)
    # may touch the same device at once
    os.makedirs(STATE_DIR, exist_ok=True)
    with open(os.path.join(STATE_DIR, f"{serial}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = load(serial)
        result = change(state)
        tmp = state_path(serial) + ".tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, state_path(serial))
        return result


def record(**entry):
    with open(os.environ["FAKE_ADB_LOG"], "a") as f:
        f.write(json.dumps(dict(argv=sys.argv[1:], **entry)) + "\n")


def finish(out="", rc=0):
    sys.stdout.write(out)
    sys.stdout.flush()
    sys.exit(rc)


def tokens(command):
    lex = shlex.shlex(command, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    return list(lex)


def fault(serial):
    return CFG.get("faults", {}).get(serial, {})


def status(serial):
    # the listed state, or how a faulty device looks now ("missing": unplugged)
    listed = {s: st for s, st, _ in CFG["devices"]}
    if serial not in listed:
        return "missing"
    lost_at = load(serial).get("lost_at")
    back = fault(serial).get("back_after_s")
    if lost_at is not None and (back is None or time.time() - lost_at < back):
        return fault(serial).get("lost_as", "missing")
    return listed[serial]


def lose(state):
    state["lost_at"] = time.time()
    state["dropped"] = True
    if fault(SERIAL).get("wipe_on_loss"):   # e.g. an emulator that came back wiped
        state["files"] = {}


def bench_log(argv):
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    graph = flags.get("graph", "")
    files = load(SERIAL)["files"]
    if graph not in files:
        return f"ERROR: Could not open '{graph}'.\nFailed to mmap model {graph}\n", 1
    if files[graph].get("truncated"):
        return f"ERROR: Could not open '{graph}'.\nThe model is not a valid Flatbuffer buffer\n", 1
    text = CFG["bench_log"].replace("{graph}", graph).replace(
        "{threads}", flags.get("num_threads", "-1")).replace("{num_runs}", flags.get("num_runs", "50"))
    n = device_moves()
    if CFG.get("medians"):   # run-to-run spread: the n-th run reports the n-th median
        text = text.replace("median=15611", f"median={CFG['medians'][(n - 1) % len(CFG['medians'])]}")
    return text, CFG.get("bench_rc", 0)


# ---- a device state that moves (issue 17): fake sysfs files under CFG["sysfs"] (or
# CFG["sysfs_by_serial"][serial]), dumpsys texts; kept per serial like the files
def sysfs_root():
    return CFG.get("sysfs_by_serial", {}).get(SERIAL, CFG.get("sysfs", "/nonexistent"))


def zone_temps():
    return glob.glob(os.path.join(sysfs_root(), "class/thermal/*/temp"))


def add_mC(delta):
    for path in zone_temps():
        value = int(open(path).read()) + delta
        open(path, "w").write(str(max(value, CFG.get("ambient_mC", 25000))) + "\n")


def device_moves():
    """One benchmark run (native or APK): zones heat, and the events due at this run happen.
    Returns the run's number; its own count (`moves`), apart from the fault counter `runs`."""
    effects = CFG.get("bench_effects", [])

    def moved(st):
        st["moves"] = st.get("moves", 0) + 1
        for at_run, where, value in effects:
            if at_run == st["moves"] and where.startswith("dumpsys:"):
                st.setdefault("dumpsys", {})[where[8:]] = value
        return st["moves"]
    n = update(SERIAL, moved)
    add_mC(CFG.get("heat_mC_per_run", 0))
    for at_run, where, value in effects:
        if at_run == n and not where.startswith("dumpsys:"):
            open(os.path.join(sysfs_root(), where), "w").write(value + "\n")
    return n


def state_dump(command):
    """The state script, run by a real POSIX sh over the fake sysfs, dumpsys from a shim."""
    shim = os.path.join(STATE_DIR, f"shim-{SERIAL}")
    os.makedirs(shim, exist_ok=True)
    texts = dict(CFG.get("dumpsys", {}), **load(SERIAL).get("dumpsys", {}))
    for name, text in texts.items():
        open(os.path.join(shim, name + ".txt"), "w").write(text)
    with open(os.path.join(shim, "dumpsys"), "w") as f:
        f.write('#!/bin/sh\ncat "$(dirname "$0")/$1.txt" 2>/dev/null || echo "Can\'t find service: $1"\n')
    os.chmod(os.path.join(shim, "dumpsys"), 0o755)
    env = dict(os.environ, MOBILEKIT_SYSFS=sysfs_root(),
               PATH=shim + os.pathsep + os.environ["PATH"])
    out = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env)
    update(SERIAL, lambda st: st.__setitem__("state_reads", st.get("state_reads", 0) + 1))
    add_mC(-CFG.get("cool_mC_per_read", 0))
    record(state=True)
    finish(out.stdout + out.stderr)


def run_benchmark(args, pidfile):
    f = fault(SERIAL)
    state = load(SERIAL)
    lost_after = f.get("lost_after_runs")
    if lost_after is not None and not state.get("dropped") and state["runs"] == lost_after \
            and f.get("mid_run"):
        sys.stdout.write("INFO: STARTING!\nINFO: Loaded model\n")
        sys.stdout.flush()
        update(SERIAL, lose)
        sys.exit(255)   # the transport vanished mid-run: adb says nothing, exits 255
    started = time.time()
    if CFG.get("slow_run_s") and state["runs"] >= CFG.get("slow_from_run", 0):
        # the remote benchmark is a process of its own on the phone (adbd starts it in its
        # own session): killing this adb client does not end it
        proc = subprocess.Popen(["sleep", str(CFG["slow_run_s"])], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if pidfile:
            update(SERIAL, lambda st: st["files"].__setitem__(pidfile, {"pid": proc.pid}))
        with open(os.path.join(STATE_DIR, "remote_pids.txt"), "a") as out:
            out.write(f"{proc.pid}\n")
        proc.wait()
    text, rc = bench_log(args)
    with open(os.path.join(STATE_DIR, "runs.jsonl"), "a") as out:
        out.write(json.dumps({"serial": SERIAL, "start": started, "end": time.time()}) + "\n")

    def counted(st):
        st["runs"] += 1
        if lost_after is not None and not st.get("dropped") and st["runs"] >= lost_after \
                and not f.get("mid_run"):
            lose(st)
    update(SERIAL, counted)
    finish(text, rc)


def shell(command):
    if "MOBILEKIT_SYSFS" in command:
        state_dump(command)
    toks = tokens(command)
    record(remote=command, tokens=toks, operators=[t for t in toks if t in OPS])
    if not toks:
        finish("", 0)
    name, args = toks[0], toks[1:]
    files = load(SERIAL)["files"]
    pidfile = None
    if name == "sh" and args[:1] == ["-c"] and "kill" in args[1]:   # end the remote group
        pid = files.get(args[3], {}).get("pid")
        update(SERIAL, lambda st: st["files"].pop(args[3], None))
        if pid:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finish()
    if name == "sh" and args[:1] == ["-c"] and "exec" in args[1]:    # pid file, then exec
        pidfile, name, args = args[3], args[4], args[5:]
        update(SERIAL, lambda st: st["files"].__setitem__(pidfile, {"pid": os.getpid()}))
    if name == "getprop":
        props = CFG.get("props_by_serial", {}).get(SERIAL, CFG["props"])
        if args:
            finish(props.get(args[0], "") + "\n")
        finish("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
    if name in ("stat", "sha256sum"):
        if name in CFG.get("missing_tools", []):
            finish(f"/system/bin/sh: {name}: inaccessible or not found\n", 127)
        path = args[-1]
        if path not in files:
            finish(f"{name}: '{path}': No such file or directory\n", 1)
        finish(f"{files[path]['size']}\n" if name == "stat" else f"{files[path]['sha256']}  {path}\n")
    if name == "mkdir":
        finish()
    if name == "chmod":
        mode, path = args
        if path in files:
            update(SERIAL, lambda st: st["files"][path].__setitem__("mode", mode))
        elif path != "/data/local/tmp/mobilekit":
            finish(f"chmod: {path}: No such file or directory\n", 1)
        finish()
    if name == "taskset":
        update(SERIAL, lambda st: st.__setitem__("taskset", args[0]))
        name, args = args[1], args[2:]
    if name in files and "elf" in files[name]:
        if files[name].get("mode") != "755":
            finish(f"/system/bin/sh: {name}: can't execute: Permission denied\n", 126)
        run_benchmark(args, pidfile)
    if name == "pm":
        finish("package:/data/app/org.tensorflow.lite.benchmark/base.apk\n"
               if CFG.get("apk_installed", True) else "")
    if name == "am" and args[0] == "start":
        apk_args = args[args.index("--es") + 2]
        text, _ = bench_log(apk_args.split())

        def started(st):
            st["logcat"] = ["01-02 03:04:05.678  4321  4321 I tflite_BenchmarkModelActivity: "
                            f"Running TensorFlow Lite benchmark with args: {apk_args}"] + [
                f"01-02 03:04:05.{i:03d}  4321  4350 I tflite  : {line}"
                for i, line in enumerate(text.splitlines())]
            st["polls"] = 0
        update(SERIAL, started)
        finish("Starting: Intent { cmp=org.tensorflow.lite.benchmark/.BenchmarkModelActivity "
               "(has extras) }\n")
    if name in ("am", "pkill"):
        finish()
    finish(f"/system/bin/sh: {name}: inaccessible or not found\n", 127)


def push(local, remote):
    if CFG.get("push_fails"):
        finish(f"adb: error: failed to copy '{local}' to '{remote}': remote couldn't create "
               "file: Read-only file system\n", 1)
    data = open(local, "rb").read()
    entry = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if data[:4] == b"\x7fELF":
        entry["elf"] = True

    def store(st):
        if fault(SERIAL).get("truncate_push_once") and not st.get("truncated_once"):
            st["truncated_once"] = True   # the cable dropped mid-copy; adb still said "pushed"
            half = data[: len(data) // 2]
            entry.update(size=len(half), sha256=hashlib.sha256(half).hexdigest(), truncated=True)
        st["files"][remote] = entry
    update(SERIAL, store)
    finish(f"{local}: 1 file pushed, 0 skipped. 40.1 MB/s ({len(data)} bytes in 0.001s)\n")


def main():
    global SERIAL
    argv = sys.argv[1:]
    if argv[:2] == ["devices", "-l"]:
        record()
        lines = []
        for s, _, info in CFG["devices"]:
            state = status(s)
            if state != "missing":
                lines.append(f"{s:<22} {state} {info}".rstrip())
        finish("List of devices attached\n" + "".join(l + "\n" for l in lines) + "\n")
    serial = None
    if argv[0] == "-s":
        serial, argv = argv[1], argv[2:]
    listed = [s for s, _, _ in CFG["devices"] if status(s) != "missing"]
    if serial is None and len(listed) != 1:
        record()
        finish("error: more than one device/emulator\n" if listed else
               "error: no devices/emulators found\n", 1)
    SERIAL = serial = serial or listed[0]
    if argv[0] == "wait-for-device":
        record()
        while status(serial) != "device":
            time.sleep(0.05)
        finish()
    state = status(serial)
    if argv[0] == "get-state":
        record()
        if state == "missing":
            finish(f"error: device '{serial}' not found\n", 1)
        finish(f"{state}\n" if state in ("device", "offline") else f"error: device {state}\n",
               0 if state in ("device", "offline") else 1)
    if state == "missing":
        record()
        finish(f"adb: device '{serial}' not found\n", 1)
    if state != "device":
        record()
        finish(f"error: device {state}\n", 1)
    if argv[0] == "shell":
        shell(" ".join(argv[1:]))   # adb joins its arguments with spaces
    record()
    if argv[0] == "push":
        push(argv[1], argv[2])
    if argv[0] == "logcat":
        if "-c" in argv:
            update(SERIAL, lambda st: st.__setitem__("logcat", []))
            finish()

        def polled(st):
            st["polls"] += 1
            return st["polls"], list(st["logcat"])
        polls, lines = update(SERIAL, polled)
        if polls < CFG.get("apk_ready_after", 1):
            lines = lines[: len(lines) // 2]   # the benchmark is still running
        finish("--------- beginning of main\n" + "".join(
            l + "\n" for l in lines if " tflite  :" in l))
    finish(f"adb: unknown command {argv[0]}\n", 1)


main()
'''

OK_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [{num_runs}]
INFO: Num threads: [{threads}]
INFO: Graph: [{graph}]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [{threads}]
INFO: Use xnnpack: [1]
INFO: Loaded model {graph}
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 3.43119
INFO: Initialized session in 27.461ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=31 first=19872 curr=15611 min=15512 max=19872 avg=16090.4 std=901 p5=15530 median=15702 p95=18006

INFO: Running benchmark for at least {num_runs} iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=64 first=15647 curr=15580 min=15477 max=17123 avg=15702.3 std=287 p5=15490 median=15611 p95=16410

INFO: Inference timings in us: Init: 27461, First inference: 19872, Warmup (avg): 16090.4, Inference (avg): 15702.3
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.79688 overall=13.4453
"""

NNAPI_FAILED_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [{threads}]
INFO: Graph: [{graph}]
INFO: Use NNAPI: [1]
INFO: NNAPI accelerators available: [nnapi-reference]
INFO: Loaded model {graph}
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_BAD_DATA at line 1154 while adding operation.
ERROR: Node number 3 (TfLiteNnapiDelegate) failed to prepare.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""

PIXEL_PROPS = {
    "ro.product.manufacturer": "Google", "ro.product.model": "Pixel 7",
    "ro.product.board": "panther", "ro.board.platform": "gs201", "ro.soc.model": "GS201",
    "ro.product.cpu.abi": "arm64-v8a", "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
    "ro.build.version.release": "14",
    "ro.build.fingerprint": "google/panther/panther:14/UQ1A.240205.004/11269751:user/release-keys",
}
PIXEL = ("28021FDH2000AB", "device",
         "usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3")
REMOTE = bm.REMOTE_DIR


def make_elf(path, machine=183, bits=64, interp="/system/bin/linker64"):
    """A minimal ELF file: header plus one PT_INTERP program header (enough for read_elf)."""
    interp_bytes = interp.encode() + b"\0" if interp else b""
    if bits == 64:
        ehsize, phentsize = 64, 56
        header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
        header += struct.pack("<HHIQQQIHHHHHH", 3, machine, 1, 0, ehsize, 0, 0, ehsize,
                              phentsize, 1 if interp else 0, 64, 0, 0)
        phdr = struct.pack("<IIQQQQQQ", 3, 4, ehsize + phentsize, 0, 0,
                           len(interp_bytes), len(interp_bytes), 1) if interp else b""
    else:
        ehsize, phentsize = 52, 32
        header = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
        header += struct.pack("<HHIIIIIHHHHHH", 3, machine, 1, 0, ehsize, 0, 0, ehsize,
                              phentsize, 1 if interp else 0, 40, 0, 0)
        phdr = struct.pack("<IIIIIIII", 3, ehsize + phentsize, 0, 0,
                           len(interp_bytes), len(interp_bytes), 4, 1) if interp else b""
    Path(path).write_bytes(header + phdr + interp_bytes + b"\0" * 64)
    return Path(path)


class FakeDevice:
    def __init__(self, tmp_path, monkeypatch):
        self.dir = tmp_path / "adb"
        self.dir.mkdir()
        self.config = {"devices": [PIXEL], "props": dict(PIXEL_PROPS), "bench_log": OK_LOG}
        self.log = self.dir / "calls.jsonl"
        self.state = self.dir / "state"   # one JSON file per serial: each phone its own folder
        adb = self.dir / "adb"
        adb.write_text(f"#!{sys.executable} -S\n{FAKE_ADB}")
        adb.chmod(0o755)
        monkeypatch.setenv("PATH", f"{self.dir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_ADB_CONFIG", str(self.dir / "config.json"))
        monkeypatch.setenv("FAKE_ADB_STATE", str(self.state))
        monkeypatch.setenv("FAKE_ADB_LOG", str(self.log))
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)
        self.save()

    def save(self):
        (self.dir / "config.json").write_text(json.dumps(self.config))

    def set(self, **changes):
        self.config.update(changes)
        self.save()

    def calls(self):
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def pushes(self):
        return [c["argv"][c["argv"].index("push"):] for c in self.calls() if "push" in c["argv"]]

    def shells(self, first=None):
        found = [c for c in self.calls() if "tokens" in c]
        return [c for c in found if first is None or c["tokens"][:1] == [first]]

    def runs(self, serial=None):
        """The benchmark command lines that reached a device (the pid-file wrapper removed)."""
        found = [c for c in self.shells("sh") if "exec" in c["tokens"][2]]
        return [dict(c, tokens=c["tokens"][5:]) for c in found
                if serial is None or c["argv"][:2] == ["-s", serial]]

    def files(self, serial=PIXEL[0]):
        path = self.state / f"{serial}.json"
        return json.loads(path.read_text())["files"] if path.exists() else {}

    def remote_pids(self):
        path = self.state / "remote_pids.txt"
        return [int(p) for p in path.read_text().split()] if path.exists() else []


@pytest.fixture
def device(tmp_path, monkeypatch):
    return FakeDevice(tmp_path, monkeypatch)


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "models" / "mnv2_035_96.tflite"
    path.parent.mkdir()
    path.write_bytes(b"TFL3" + bytes(range(256)) * 8)
    return path


@pytest.fixture
def arm64_binary(tmp_path):
    return make_elf(tmp_path / "android_aarch64_benchmark_model")


def run(model, binary, tmp_path, **kwargs):
    kwargs.setdefault("progress", False)
    return bm.run_adb(model, binary, kwargs.pop("delegate", "xnnpack"), kwargs.pop("threads", 4),
                      log_dir=tmp_path / "logs", **kwargs)


# ---------------------------------------------------------------- ELF, flags, binary


@pytest.mark.parametrize("machine,bits,abi", [(183, 64, "arm64-v8a"), (40, 32, "armeabi-v7a"),
                                              (62, 64, "x86_64"), (3, 32, "x86")])
def test_elf_abi_from_machine_and_class(tmp_path, machine, bits, abi):
    path = make_elf(tmp_path / "bm", machine, bits, interp="/system/bin/linker")
    assert bm.elf_abi(path) == abi
    info = bm.read_elf(path)
    assert (info.bits, info.machine, info.interpreter) == (bits, machine, "/system/bin/linker")


def test_elf_rejects_non_elf_and_unknown_machine(tmp_path):
    script = tmp_path / "bm.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    with pytest.raises(ValueError, match="not an ELF"):
        bm.elf_abi(script)
    with pytest.raises(ValueError, match="machine 243"):   # RISC-V
        bm.elf_abi(make_elf(tmp_path / "rv", 243, 64))
    with pytest.raises(ValueError, match="machine 183"):   # aarch64 machine in a 32-bit class
        bm.elf_abi(make_elf(tmp_path / "odd", 183, 32))


def test_build_flags_per_delegate():
    base = ["--num_threads=2", "--num_runs=50", "--warmup_runs=1"]
    assert bm.build_flags("/m.tflite", "cpu", 2) == ["--graph=/m.tflite", "--use_xnnpack=false"] + base
    assert bm.build_flags("/m.tflite", "xnnpack", 2)[1] == "--use_xnnpack=true"
    assert bm.build_flags("/m.tflite", "nnapi", 2)[1] == "--use_nnapi=true"
    gpu = bm.build_flags("/m.tflite", "gpu", 2, gpu_precision_loss=False)
    assert gpu[1:3] == ["--use_gpu=true", "--gpu_precision_loss_allowed=false"]
    full = bm.build_flags("/m.tflite", "xnnpack", 1, num_runs=7, warmup_runs=0, min_secs=2.5,
                          op_profiling=True, peak_memory=True, extra_flags=["--max_secs=9"])
    assert full[2:] == ["--num_threads=1", "--num_runs=7", "--warmup_runs=0", "--min_secs=2.5",
                        "--enable_op_profiling=true", "--report_peak_memory_footprint=true",
                        "--max_secs=9"]


@pytest.mark.parametrize("kwargs,message", [
    ({"delegate": "gpuu"}, "Did you mean 'gpu'"), ({"threads": 0}, "threads must be"),
    ({"num_runs": -1}, "num_runs must be"), ({"min_secs": -1}, "min_secs must be"),
    ({"extra_flags": ["num_threads=4"]}, "--name=value"), ({"warmup_runs": 1.5}, "warmup_runs")])
def test_build_flags_rejects_bad_values(kwargs, message):
    kwargs = {"delegate": "cpu", "threads": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        bm.build_flags("/m.tflite", kwargs.pop("delegate"), kwargs.pop("threads"), **kwargs)


def test_resolve_binary_explicit_env_and_errors(tmp_path, monkeypatch, arm64_binary):
    monkeypatch.delenv(bm.ENV_BINARY, raising=False)
    with pytest.raises(FileNotFoundError, match="MOBILEKIT_BENCHMARK_MODEL"):
        bm.resolve_binary()
    monkeypatch.setenv(bm.ENV_BINARY, str(arm64_binary))
    assert bm.resolve_binary() == arm64_binary
    with pytest.raises(FileNotFoundError, match="does not exist"):
        bm.resolve_binary(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a file"):
        bm.resolve_binary(tmp_path)


# ---------------------------------------------------------------- adb mode


def test_adb_run_pushes_fingerprints_and_parses(device, model, arm64_binary, tmp_path):
    row = run(model, arm64_binary, tmp_path, threads=4)
    assert set(row) == set(RESULT_KEYS)
    assert row["ok"] is True, row["error"]
    assert (row["target"], row["serial"], row["runtime"]) == ("adb", PIXEL[0], "benchmark_model")
    assert row["device"] == {"manufacturer": "Google", "model": "Pixel 7", "board": "panther",
                             "soc": "GS201", "abi": "arm64-v8a", "android_version": "14",
                             "fingerprint": PIXEL_PROPS["ro.build.fingerprint"]}
    assert set(row["device"]) == set(DEVICE_KEYS)
    assert (row["inference_avg_us"], row["inference_count"], row["init_us"]) == (15702.3, 64, 27461)
    assert (row["delegate"], row["threads"], row["num_runs"]) == ("xnnpack", 4, 50)
    assert row["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    # both files went to the mobilekit directory, the binary is executable
    pushes = device.pushes()
    assert pushes == [["push", str(model), f"{REMOTE}/{model.name}"],
                      ["push", str(arm64_binary), f"{REMOTE}/{arm64_binary.name}"]]
    assert device.files()[f"{REMOTE}/{arm64_binary.name}"]["mode"] == "755"
    assert [c["tokens"] for c in device.shells("mkdir")] == [["mkdir", "-p", "-m", "755", REMOTE]]
    bench = device.runs()
    assert len(bench) == 1 and bench[0]["argv"][:3] == ["-s", PIXEL[0], "shell"]
    assert bench[0]["tokens"][1:] == bm.build_flags(f"{REMOTE}/{model.name}", "xnnpack", 4)
    log = Path(row["raw_log_path"])
    assert log.parent == tmp_path / "logs" and "Inference (avg): 15702.3" in log.read_text()
    assert not list(log.parent.glob("*.partial"))


def test_push_skipped_when_remote_file_is_identical(device, model, arm64_binary, tmp_path):
    run(model, arm64_binary, tmp_path)
    assert len(device.pushes()) == 2
    device.log.unlink()
    row = run(model, arm64_binary, tmp_path)   # a fresh Adb: the check happens on the device
    assert row["ok"] is True
    assert device.pushes() == []
    assert [c["tokens"][0] for c in device.shells()].count("sha256sum") == 2
    # same size but different bytes: pushed again
    model.write_bytes(model.read_bytes()[::-1])
    device.log.unlink()
    run(model, arm64_binary, tmp_path)
    assert device.pushes() == [["push", str(model), f"{REMOTE}/{model.name}"]]
    # a device without sha256sum cannot prove the files equal: both pushed
    device.set(missing_tools=["sha256sum"])
    device.log.unlink()
    assert run(model, arm64_binary, tmp_path)["ok"] is True
    assert len(device.pushes()) == 2


def test_shared_adb_session_pushes_once(device, model, arm64_binary, tmp_path):
    session = bm.Adb()
    rows = [run(model, arm64_binary, tmp_path, adb=session, threads=t) for t in (1, 2)]
    assert [r["threads"] for r in rows] == [1, 2] and all(r["ok"] for r in rows)
    assert len(device.pushes()) == 2
    assert sum(1 for c in device.calls() if c["argv"][:2] == ["devices", "-l"]) == 1


@pytest.mark.parametrize("name", ["my model;rm -rf x.tflite", "$(touch pwned) `id` it's.tflite"])
def test_hostile_model_names_arrive_as_one_argument(device, tmp_path, arm64_binary, name):
    model = tmp_path / name
    model.write_bytes(b"TFL3model")
    row = run(model, arm64_binary, tmp_path, delegate="cpu", threads=2)
    assert row["ok"] is True, row["error"]
    remote = f"{REMOTE}/{name}"
    assert ["push", str(model), remote] in device.pushes()
    assert all(c["operators"] == [] for c in device.shells()), device.shells()
    bench = device.runs()[0]
    assert f"--graph={remote}" in bench["tokens"]
    assert shlex.quote(f"--graph={remote}") in bench["remote"]


def test_abi_mismatch_raises_before_any_push(device, model, tmp_path):
    device.config["props"].update({"ro.product.cpu.abi": "armeabi-v7a",
                                   "ro.product.cpu.abilist": "armeabi-v7a,armeabi"})
    device.save()
    binary = make_elf(tmp_path / "android_aarch64_benchmark_model")
    with pytest.raises(ValueError, match=r"is arm64-v8a but device '28021FDH2000AB' supports "
                                         r"armeabi-v7a, armeabi"):
        run(model, binary, tmp_path)
    assert device.pushes() == []
    # a 32-bit build is fine on that device, and on a 64-bit one (abilist includes it)
    arm32 = make_elf(tmp_path / "android_arm_benchmark_model", 40, 32, "/system/bin/linker")
    assert run(model, arm32, tmp_path)["ok"] is True


def test_linux_build_is_refused_for_android(device, model, tmp_path):
    binary = make_elf(tmp_path / "linux_aarch64_benchmark_model", interp="/lib/ld-linux-aarch64.so.1")
    with pytest.raises(ValueError, match="Linux build"):
        run(model, binary, tmp_path)
    assert device.calls() == []


OFFLINE = ("emulator-5554", "offline", "transport_id:4")
UNAUTHORIZED = ("R58M123ABC", "unauthorized", "usb:1-2 transport_id:5")


@pytest.mark.parametrize("devices,serial,message", [
    ([], None, "no Android device found"),
    ([PIXEL, OFFLINE], None, "2 devices connected (28021FDH2000AB (device), emulator-5554 "
                             "(offline)); choose one with --serial"),
    ([OFFLINE], None, "device 'emulator-5554' cannot be used: it is offline"),
    ([UNAUTHORIZED], None, "it is unauthorized: unlock the phone and accept"),
    ([PIXEL], "ZZZ", "device 'ZZZ' not found; connected: 28021FDH2000AB (device)"),
    ([PIXEL, UNAUTHORIZED], "R58M123ABC", "it is unauthorized"),
])
def test_device_selection_errors_become_rows(device, model, arm64_binary, tmp_path,
                                             devices, serial, message):
    device.set(devices=devices)
    row = run(model, arm64_binary, tmp_path, serial=serial)
    assert row["ok"] is False and message in row["error"]
    assert row["target"] == "adb" and row["model_sha256"] is not None
    assert device.pushes() == [] and device.shells() == []


def test_serial_picks_one_of_several(device, model, arm64_binary, tmp_path):
    device.set(devices=[UNAUTHORIZED, PIXEL, OFFLINE])
    row = run(model, arm64_binary, tmp_path, serial=PIXEL[0])
    assert row["ok"] is True and row["serial"] == PIXEL[0]
    assert all(c["argv"][:2] == ["-s", PIXEL[0]] for c in device.calls()
               if c["argv"][:1] != ["devices"])


@pytest.mark.parametrize("bench_rc", [1, 0])   # 0: an old adb without exit-code forwarding
def test_failed_delegate_gives_not_ok_row(device, model, arm64_binary, tmp_path, bench_rc):
    device.set(bench_log=NNAPI_FAILED_LOG, bench_rc=bench_rc)
    row = run(model, arm64_binary, tmp_path, delegate="nnapi")
    assert row["ok"] is False
    assert "Failed to apply NNAPI delegate" in row["error"]
    assert row["inference_avg_us"] is None and row["delegate"] == "nnapi"
    assert "Benchmarking failed." in Path(row["raw_log_path"]).read_text()


def test_taskset_mask_prefixes_the_remote_command(device, model, arm64_binary, tmp_path):
    row = run(model, arm64_binary, tmp_path, cpu_mask="f0")
    assert row["ok"] is True
    bench = device.runs()
    assert len(bench) == 1 and bench[0]["tokens"][:3] == ["taskset", "f0", f"{REMOTE}/{arm64_binary.name}"]
    with pytest.raises(ValueError, match="hex CPU mask"):
        run(model, arm64_binary, tmp_path, cpu_mask="big")
    with pytest.raises(ValueError, match="apk"):
        run(model, None, tmp_path, cpu_mask="f0", apk=True)


def test_apk_mode_starts_activity_and_polls_logcat(device, tmp_path):
    device.set(apk_ready_after=2)
    model = tmp_path / "face det v2.tflite"
    model.write_bytes(b"TFL3face")
    row = run(model, None, tmp_path, delegate="gpu", threads=1, apk=True, apk_poll_interval=0.01)
    assert row["ok"] is True, row["error"]
    assert row["runtime"] == "benchmark_model_apk" and row["inference_avg_us"] == 15702.3
    remote = f"{REMOTE}/face_det_v2.tflite"   # the APK splits its args on whitespace
    assert device.pushes() == [["push", str(model), remote]]
    order = [c["argv"][2:] for c in device.calls() if c["argv"][2:3] in (["logcat"], ["shell"])]
    clear = order.index(["logcat", "-c"])
    start = next(i for i, c in enumerate(device.shells()) if c["tokens"][:2] == ["am", "start"])
    am = device.shells()[start]
    assert clear < order.index(["shell", am["remote"]])
    flags = bm.build_flags(remote, "gpu", 1)
    assert am["tokens"] == ["am", "start", "-S", "-n", bm.APK_ACTIVITY, "--es", "args", " ".join(flags)]
    assert am["operators"] == []
    assert sum(1 for c in device.calls() if c["argv"][2:4] == ["logcat", "-d"]) == 2
    assert "I tflite  : INFO: Inference timings in us" in Path(row["raw_log_path"]).read_text()


def test_apk_not_installed_and_failed_run(device, model, tmp_path):
    device.set(apk_installed=False)
    row = run(model, None, tmp_path, apk=True)
    assert row["ok"] is False and "adb install" in row["error"]
    device.set(apk_installed=True, bench_log=NNAPI_FAILED_LOG)
    row = run(model, None, tmp_path, apk=True, delegate="nnapi", apk_poll_interval=0.01)
    assert row["ok"] is False and "NNAPI" in row["error"]


def test_apk_timeout_when_no_result_appears(device, model, tmp_path):
    device.set(bench_log="INFO: STARTING!\nINFO: Loaded model {graph}\n")
    row = run(model, None, tmp_path, apk=True, timeout=0.2, apk_poll_interval=0.05)
    assert row["ok"] is False and "timed out after 0.2 s" in row["error"]


def test_push_failure_becomes_row(device, model, arm64_binary, tmp_path):
    device.set(push_fails=True)
    row = run(model, arm64_binary, tmp_path)
    assert row["ok"] is False and "Read-only file system" in row["error"]
    assert row["serial"] == PIXEL[0] and row["device"]["model"] == "Pixel 7"


def test_remote_exec_failure_becomes_row(device, model, tmp_path):
    # a binary the fake device cannot execute (never chmod-ed): exit 126 from the shell
    binary = make_elf(tmp_path / "bm")
    device.set(remote_files={f"{REMOTE}/bm": {"size": binary.stat().st_size, "elf": True,
                                              "sha256": hashlib.sha256(binary.read_bytes()).hexdigest()}})
    session = bm.Adb()
    session._pushed[f"{REMOTE}/bm"] = bm.file_sha256(binary)   # pretend it was verified earlier
    row = run(model, binary, tmp_path, adb=session)
    assert row["ok"] is False and "exited with code 126" in row["error"]
    assert "Permission denied" in row["error"]


# ---------------------------------------------------------------- local mode

FAKE_BENCHMARK = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
case "$*" in *--use_nnapi=true*) cat "$(dirname "$0")/fail.log"; exit 1;; esac
case "$*" in *--num_runs=99*) exec sleep 30;; esac
cat "$(dirname "$0")/ok.log"
"""


@pytest.fixture
def local_binary(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ok.log").write_text(OK_LOG.replace("{threads}", "2").replace("{num_runs}", "50")
                                   .replace("{graph}", "/m.tflite"))
    (folder / "fail.log").write_text(NNAPI_FAILED_LOG)
    binary = folder / "benchmark_model"
    binary.write_text(FAKE_BENCHMARK)
    binary.chmod(0o755)
    return binary


def test_run_local_streams_parses_and_saves_log(model, local_binary, tmp_path):
    lines = []
    row = bm.run_local(model, local_binary, "cpu", 2, min_secs=1, log_dir=tmp_path / "logs",
                       progress=lines.append)
    assert row["ok"] is True, row["error"]
    assert (row["target"], row["runtime"], row["serial"]) == ("local", "benchmark_model", None)
    assert (row["inference_avg_us"], row["warmup_avg_us"], row["memory_overall_mb"]) == \
        (15702.3, 16090.4, 13.4453)
    assert (row["delegate"], row["threads"]) == ("cpu", 2)
    assert (local_binary.parent / "args.txt").read_text().splitlines() == \
        bm.build_flags(model.resolve(), "cpu", 2, min_secs=1)
    assert lines[0] == "INFO: STARTING!" and len(lines) == OK_LOG.count("INFO:")
    assert Path(row["raw_log_path"]).read_text().count("\n") == OK_LOG.count("\n")


def test_run_local_failures(model, local_binary, tmp_path, monkeypatch):
    row = bm.run_local(model, local_binary, "nnapi", 1, log_dir=tmp_path, progress=False)
    assert row["ok"] is False
    assert row["error"] == "benchmark_model exited with code 1: Failed to apply NNAPI delegate."
    row = bm.run_local(model, local_binary, "cpu", 1, num_runs=99, timeout=0.5,
                       log_dir=tmp_path, progress=False)
    assert row["ok"] is False and row["error"] == "benchmark_model timed out after 0.5 s"
    local_binary.chmod(stat.S_IRUSR | stat.S_IWUSR)
    with pytest.raises(ValueError, match="not executable"):
        bm.run_local(model, local_binary, "cpu", 1, log_dir=tmp_path)
    android = make_elf(tmp_path / "android_bm")
    android.chmod(0o755)
    with pytest.raises(ValueError, match="Android build"):
        bm.run_local(model, android, "cpu", 1, log_dir=tmp_path)
    monkeypatch.setenv(bm.ENV_BINARY, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        bm.run_local(model, None, "cpu", 1, log_dir=tmp_path)


def test_parse_devices_listing():
    text = textwrap.dedent("""\
        * daemon not running; starting now at tcp:5037
        * daemon started successfully
        List of devices attached
        28021FDH2000AB         device usb:1-1 product:panther model:Pixel_7 device:panther transport_id:3
        emulator-5554          offline transport_id:4
        0123456789ABCDEF       no permissions (missing udev rules? user is in the plugdev group); see [http://developer.android.com/tools/device.html] usb:1-3 transport_id:6
        """)
    devices = bm.parse_devices(text)
    assert [(s, st) for s, st, _ in devices] == [("28021FDH2000AB", "device"),
                                                 ("emulator-5554", "offline"),
                                                 ("0123456789ABCDEF", "no permissions")]
    assert devices[0][2]["model"] == "Pixel_7"


def test_run_local_on_a_published_log(shared_dir, model, tmp_path):
    """A stand-in that replays fixture 29 (a real 2026 LiteRT-tree build, XNNPACK off)."""
    fixture = shared_dir / "fixtures" / "benchmark_logs" / "29_linux_x86_litert2026_no_xnnpack"
    binary = tmp_path / "benchmark_model"
    binary.write_text(f"#!/bin/sh\ncat {shlex.quote(str(fixture.with_suffix('.txt')))}\n")
    binary.chmod(0o755)
    row = bm.run_local(model, binary, "cpu", 1, log_dir=tmp_path / "logs", progress=False)
    expected = json.loads(fixture.with_suffix(".json").read_text())["expected"]
    assert row["ok"] is True, row["error"]
    for key in ("init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us",
                "inference_std_us", "inference_min_us", "inference_max_us", "inference_count",
                "inference_median_us", "memory_init_mb", "memory_overall_mb"):
        assert row[key] == expected[key], key
    assert Path(row["raw_log_path"]).read_text() == fixture.with_suffix(".txt").read_text()
