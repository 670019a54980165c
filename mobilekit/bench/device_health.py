"""Is the phone still there? adb device states, waiting for a device, and naming device loss.

A long sweep meets unplugged cables, reboots and phones that go offline. These helpers ask adb
itself (`adb -s SERIAL get-state`, `adb -s SERIAL wait-for-device`) and keep adb's own words,
so a failed row can say `device_lost: <what adb said>` instead of blaming benchmark_model.

Public API:
    get_state(exe, serial, timeout=15.0) -> (state, words)
        state: "device", "offline", "unauthorized", ... "missing" (adb does not know the
        serial), "unresponsive" (no answer) or "unknown" (an answer not understood: not
        taken as device loss); words: adb's own output when the state is not "device".
    wait_for_device(exe, serial, timeout, cancel=None, poll=0.2) -> (back, waited_s)
    adb_trouble(text) -> str | None     adb's own complaint in a run's output, if any
    device_lost_error(words) -> "device_lost: <words>"
    is_device_lost(row) -> bool
    Cancelled                           raised when a sweep's cancel event is set

Nothing here imports the rest of mobilekit.bench, so the runner and the sweep can both use it.
"""
import re
import subprocess
import time

DEVICE_LOST = "device_lost"

# Lines adb (the client, not the program it runs) prints when the device is gone or broken.
_ADB_TROUBLE = re.compile(
    r"^(?:adb: )?(?:error: )?(?:device '[^']*' not found|device (?:offline|unauthorized|still "
    r"authorizing|not found)|no devices/emulators found|closed|protocol fault.*|"
    r"cannot connect to daemon.*|failed to get feature set.*)\s*$|^adb: error: .*$", re.M)


class Cancelled(KeyboardInterrupt):
    """A sweep was interrupted (Ctrl-C): the current configuration is abandoned."""


def get_state(exe, serial, timeout=15.0):
    """(state, words) of one device from `adb -s SERIAL get-state`."""
    try:
        proc = subprocess.run([exe, "-s", serial, "get-state"], capture_output=True, text=True,
                              errors="replace", stdin=subprocess.DEVNULL, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "unresponsive", f"`adb -s {serial} get-state` did not answer within {timeout:g} s"
    except OSError as exc:
        return "unknown", f"cannot run adb {exe!r}: {exc}"
    out = " ".join((proc.stdout + proc.stderr).split())
    if proc.returncode == 0 and out in ("device", "offline", "unauthorized", "bootloader",
                                        "recovery", "sideload", "authorizing", "connecting"):
        return out, (None if out == "device" else f"adb get-state: {out}")
    if re.search(r"not found|no devices", out):
        return "missing", out or f"adb get-state exited with code {proc.returncode}"
    match = re.search(r"device (offline|unauthorized|still authorizing)", out)
    state = match.group(1).replace("still ", "") if match else "unknown"
    return state, out or f"adb get-state exited with code {proc.returncode}"


def wait_for_device(exe, serial, timeout, cancel=None, poll=0.2):
    """Block in `adb -s SERIAL wait-for-device` for at most `timeout` s; (back, waited_s).

    adb's own wait never gives up, so it runs as a child ended at the deadline (or when the
    `cancel` event is set: then Cancelled is raised).
    """
    start = time.monotonic()
    if timeout <= 0:
        return get_state(exe, serial)[0] == "device", 0.0
    proc = subprocess.Popen([exe, "-s", serial, "wait-for-device"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while proc.poll() is None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            left = timeout - (time.monotonic() - start)
            if left <= 0:
                break
            try:
                proc.wait(timeout=min(poll, left))
            except subprocess.TimeoutExpired:
                pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    waited = time.monotonic() - start
    # wait-for-device returns when the transport is up; confirm the state adb reports now
    return proc.returncode == 0 and get_state(exe, serial)[0] == "device", waited


def adb_trouble(text):
    """adb's own complaint about the device in `text` (a run's output), else None."""
    match = _ADB_TROUBLE.search(text or "")
    return match.group(0).strip() if match else None


def is_lost_state(state):
    return state not in ("device", "unknown", None)


def device_lost_error(words):
    return f"{DEVICE_LOST}: {' '.join(str(words).split())}"


def is_device_lost(row):
    return not row.get("ok") and str(row.get("error") or "").startswith(DEVICE_LOST)
