"""Sweeps on phones: one worker per device, device loss survived (wait, re-push, retry).

Each device gets one worker thread and its own adb session, so two benchmarks never run on one
phone at once while a shelf of phones works in parallel. Before each configuration, and
after one that failed because of the device, the worker asks adb for the device state; when the
device is gone it waits (`adb wait-for-device`, at most `wait_device` seconds), forgets what
it had pushed (the next run checks size + sha256 and re-pushes what is missing) and retries,
at most `retries` more times. A device that does not come back gets `device_lost` rows for
its remaining configurations (measured again by `--resume`) and the other workers go on.

Public API:
    resolve_serials(spec, adb_path=None) -> list[str | None]
    run_devices(plans, run_one, *, adb_path, retries, wait_device, emit, cancel,
                on_start=None, on_note=None, lost_row)
"""
import os
import threading
import time

from mobilekit.bench import benchmark_model as bm
from mobilekit.bench.device_health import (Cancelled, device_lost_error, get_state,
                                           is_device_lost, is_lost_state, wait_for_device)


def resolve_serials(spec, adb_path=None):
    """--serial value -> device serials. None: the only device (else [None]: run_adb names the
    problem); "all": every device in the `device` state; "A,B": those, each must be listed."""
    adb = bm.Adb(adb_path)
    if spec is None or str(spec).strip() == "":
        spec = adb.requested   # $ANDROID_SERIAL
        if spec is None:
            devices = adb.devices()
            return [devices[0][0]] if len(devices) == 1 else [None]
    devices = adb.devices()
    listing = ", ".join(f"{s} ({st})" for s, st, _ in devices) or "none"
    if str(spec).strip().lower() == "all":
        ready = [s for s, st, _ in devices if st == "device"]
        if not ready:
            raise ValueError(f"--serial all: no device is ready (adb devices lists: {listing})")
        return ready
    wanted = list(dict.fromkeys(s.strip() for s in str(spec).split(",") if s.strip()))
    if not wanted:
        raise ValueError(f"--serial needs a serial, a comma-separated list or 'all'; got {spec!r}")
    known = {s for s, _, _ in devices}
    for serial in wanted:
        if serial not in known:
            raise ValueError(f"unknown serial {serial!r} in --serial; connected: {listing}")
    return wanted


class _Worker:
    """Runs one device's configurations in order (see the module docstring)."""

    def __init__(self, serial, adb, run_one, retries, wait_device, emit, cancel, on_start,
                 on_note, lost_row):
        self.serial, self.adb, self.run_one = serial, adb, run_one
        self.retries, self.wait_device = retries, wait_device
        self.emit, self.cancel, self.on_start, self.on_note = emit, cancel, on_start, on_note
        self.lost_row = lost_row
        self.gave_up = False     # a wait timed out: later configurations do not wait again
        self.suspect = False     # the device was lost: re-check pushed files before use

    def note(self, text):
        if self.on_note:
            self.on_note(f"{self.serial}: {text}")

    def ready(self, log):
        """(True, None) when the device can run now (after waiting if allowed); else
        (False, adb's words)."""
        if self.serial is None:
            return True, None
        state, words = get_state(self.adb.exe, self.serial)
        if not is_lost_state(state):
            state = "device"   # an answer adb gave that we do not know: let the run tell
        else:
            self.suspect = True
        if state != "device" and self.wait_device > 0 and not self.gave_up:
            self.note(f"{words}; waiting up to {self.wait_device:g} s for it to come back")
            back, waited = wait_for_device(self.adb.exe, self.serial, self.wait_device,
                                           self.cancel)
            log.append(f"waited {waited:.1f} s for {self.serial}: "
                       f"{'back' if back else 'not back'}")
            if back:
                self.note(f"back after {waited:.1f} s")
                state = "device"
            else:
                self.gave_up = True
                self.note(f"not back after {self.wait_device:g} s; its remaining "
                          "configurations are recorded as device_lost (measure them later "
                          "with --resume)")
                words = f"{words}; not back after waiting {self.wait_device:g} s"
        elif state != "device" and self.gave_up:
            words = (f"{words}; not back after waiting {self.wait_device:g} s before an "
                     "earlier configuration")
        if state != "device":
            return False, words
        if self.suspect:   # came back: files may be missing or truncated
            self.adb.forget_pushes()
            self.suspect = self.gave_up = False
        return True, None

    def run(self, configs):
        for config in configs:
            if self.cancel.is_set():
                raise Cancelled()
            if self.on_start:
                self.on_start(config, self.serial)
            log, attempts = [], 0
            while True:
                ok, words = self.ready(log)
                if not ok:
                    row = self.lost_row(config, self.serial, self.adb, device_lost_error(words))
                    break
                attempts += 1
                row = self.run_one(config, self.adb, self.cancel)
                lost = is_device_lost(row)
                self.suspect = self.suspect or lost
                if row.get("ok") or not lost or attempts > self.retries:
                    break
                log.append(f"attempt {attempts}: {row['error']}")
                model, delegate, threads = config[:3]   # (a 4th item: CPU placement)
                self.note(f"{os.path.basename(model)} {delegate} t{threads}: attempt {attempts} "
                          f"failed ({row['error']}); retrying")
            if self.cancel.is_set():   # a row finished as Ctrl-C came: it is still complete
                self.emit(dict(row, attempts=attempts, attempt_log=log))
                raise Cancelled()
            self.emit(dict(row, attempts=attempts, attempt_log=log))


def run_devices(plans, run_one, *, adb_path=None, retries=1, wait_device=60.0,
                emit, cancel, on_start=None, on_note=None, lost_row):
    """Run each device's configurations (plans: serial -> [(model, delegate, threads, ...)]) in
    parallel, one thread per device; returns when all are done. KeyboardInterrupt in the
    calling thread sets `cancel`, waits for the workers to abandon their current
    configuration (ending it on the device) and is raised again.

    run_one(config, adb, cancel) -> row; emit(row) is called (from worker threads) once per
    finished configuration; lost_row(config, serial, adb, error) -> row of a configuration
    not run because its device is gone.
    """
    failures = []
    finished = {serial: threading.Event() for serial in plans}

    def work(serial, configs):
        try:
            adb = bm.Adb(adb_path, serial)
            _Worker(serial, adb, run_one, retries, wait_device, emit, cancel, on_start,
                    on_note, lost_row).run(configs)
        except Cancelled:
            pass
        except BaseException as exc:   # a bug must not vanish with its thread
            failures.append(exc)
            cancel.set()
        finally:
            finished[serial].set()

    def all_finished():
        return all(event.is_set() for event in finished.values())

    for serial, configs in plans.items():
        threading.Thread(target=work, args=(serial, configs), name=f"bench-{serial}",
                         daemon=True).start()
    # Polled with sleep, not Thread.join: a join interrupted by Ctrl-C can return early
    # afterwards (CPython < 3.13), and the workers must finish ending their runs.
    try:
        while not all_finished():
            time.sleep(0.1)
    except KeyboardInterrupt:
        cancel.set()
        while not all_finished():
            try:
                time.sleep(0.1)
            except KeyboardInterrupt:   # a second Ctrl-C: still let the workers clean up
                pass
        raise
    if failures:
        raise failures[0]
    if cancel.is_set():
        raise Cancelled()
