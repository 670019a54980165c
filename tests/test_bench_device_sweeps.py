"""Long device sweeps: device loss named and survived, resume, several phones, Ctrl-C.

Uses the stand-in `adb` of test_benchmark_model_adb (each serial has its own folder of files
and state) with its faults: a device that drops off after N runs and comes back after M
seconds (or never), one that drops mid-run, one that comes back wiped, a push that truncates
once, and a slow remote benchmark that lives in its own session on the "phone".
"""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilekit.bench import benchmark_model as bm
from procs import pid_alive
from mobilekit.bench.resume import config_key
from mobilekit.bench.sweep import run_sweep
from mobilekit.report.writers import read_csv, read_jsonl
from test_benchmark_model_adb import PIXEL, PIXEL_PROPS, REMOTE, FakeDevice, make_elf

REPO = Path(__file__).resolve().parents[1]
SER = PIXEL[0]


@pytest.fixture
def device(tmp_path, monkeypatch):
    return FakeDevice(tmp_path, monkeypatch)


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    paths = [folder / "a.tflite", folder / "b.tflite"]
    for i, path in enumerate(paths):
        path.write_bytes(b"TFL3" + bytes([i]) * 700)
    return paths


@pytest.fixture
def binary(tmp_path):
    return make_elf(tmp_path / "android_aarch64_benchmark_model")


def adb_sweep(models, binary, out, threads=(1, 2), **kwargs):
    kwargs.setdefault("wait_device", 0)
    return run_sweep(models, "adb", ["xnnpack"], list(threads), benchmark_binary=binary,
                     out_dir=out, num_runs=5, **kwargs)


def run_once(model, binary, tmp_path, **kwargs):
    return bm.run_adb(model, binary, "xnnpack", 1, log_dir=tmp_path / "logs", progress=False,
                      **kwargs)


def names(rows):
    return [(Path(r["model_path"]).name, r["threads"]) for r in rows]


# ---------------------------------------------------------------- device loss named


def test_lost_device_is_named_with_adbs_words(device, models, binary, tmp_path):
    device.set(faults={SER: {"lost_after_runs": 1}})
    session = bm.Adb()
    assert run_once(models[0], binary, tmp_path, adb=session)["ok"] is True
    row = run_once(models[0], binary, tmp_path, adb=session)
    assert row["ok"] is False
    assert row["error"].startswith("device_lost: ")
    assert f"adb: device '{SER}' not found" in row["error"]       # the run's own adb words
    assert f"get-state: error: device '{SER}' not found" in row["error"]
    assert "benchmark_model" not in row["error"]
    # a fresh session: selection finds no such device
    row = run_once(models[0], binary, tmp_path, serial=SER)
    assert row["error"].startswith("device_lost: device '28021FDH2000AB' not found")


def test_device_dropping_mid_run_is_named(device, models, binary, tmp_path):
    device.set(faults={SER: {"lost_after_runs": 0, "mid_run": True}})
    row = run_once(models[0], binary, tmp_path)
    assert row["ok"] is False
    assert row["error"] == f"device_lost: get-state: error: device '{SER}' not found"
    assert "INFO: STARTING!" in Path(row["raw_log_path"]).read_text()


def test_benchmark_failure_on_a_healthy_device_is_not_device_lost(device, models, binary,
                                                                  tmp_path):
    device.set(bench_log="ERROR: Failed to apply XNNPACK delegate.\nBenchmarking failed.\n",
               bench_rc=1)
    row = run_once(models[0], binary, tmp_path)
    assert row["error"] == "benchmark_model exited with code 1: Failed to apply XNNPACK delegate."


def test_truncated_push_is_detected_and_pushed_again(device, models, binary, tmp_path):
    device.set(faults={SER: {"truncate_push_once": True}})
    row = run_once(models[0], binary, tmp_path)
    assert row["ok"] is True, row["error"]
    model_remote = f"{REMOTE}/{models[0].name}"
    assert [p[2] for p in device.pushes()] == [model_remote, model_remote,
                                                f"{REMOTE}/{binary.name}"]
    assert device.files()[model_remote]["size"] == models[0].stat().st_size


def test_remote_process_group_ended_on_timeout(device, models, binary, tmp_path):
    device.set(slow_run_s=30)
    row = run_once(models[0], binary, tmp_path, timeout=1.0)
    assert row["ok"] is False and row["error"] == "benchmark_model timed out after 1 s"
    (pid,) = device.remote_pids()
    assert not pid_alive(pid)
    kills = [c for c in device.shells("sh") if "kill" in c["tokens"][2]]
    assert len(kills) == 1 and kills[0]["tokens"][3:] == ["sh", bm.REMOTE_PIDFILE]


# ---------------------------------------------------------------- retries and waits


def test_device_back_after_a_wait_gets_files_again_and_every_row(device, models, binary,
                                                                 tmp_path):
    device.set(faults={SER: {"lost_after_runs": 2, "back_after_s": 1.0, "wipe_on_loss": True}})
    notes = []
    rows = adb_sweep(models, binary, tmp_path / "out", wait_device=20, retries=1,
                     on_note=notes.append)
    assert [r["ok"] for r in rows] == [True] * 4, [r["error"] for r in rows]
    assert [r["attempts"] for r in rows] == [1, 1, 1, 1]
    assert rows[2]["attempt_log"] and rows[2]["attempt_log"][0].startswith(f"waited ")
    waited = float(rows[2]["attempt_log"][0].split()[1])
    assert 0.5 <= waited < 20
    assert any("waiting up to 20 s" in n for n in notes) and any("back after" in n for n in notes)
    # the device came back wiped: the binary and model b were checked and pushed again
    pushed = [Path(p[2]).name for p in device.pushes()]
    assert pushed == ["a.tflite", binary.name, "b.tflite", binary.name]
    assert sum(c["argv"][:1] == ["-s"] and "wait-for-device" in c["argv"]
               for c in device.calls()) == 1


@pytest.mark.parametrize("retries", [1, 0])
def test_mid_run_loss_is_retried_after_the_device_is_back(device, models, binary, tmp_path,
                                                          retries):
    # Back after 3 s: long enough that the failure is seen as the device's on a loaded machine
    # (0.5 s failed 1 run in 3 at load 11: get-state ran after the phone was back).
    device.set(faults={SER: {"lost_after_runs": 2, "mid_run": True, "back_after_s": 3.0}})
    rows = adb_sweep(models, binary, tmp_path / "out", wait_device=20, retries=retries)
    third = rows[2]
    if retries:
        assert third["ok"] is True and third["attempts"] == 2
        assert third["attempt_log"][0] == (f"attempt 1: device_lost: get-state: error: device "
                                           f"'{SER}' not found")
        assert third["attempt_log"][1].startswith("waited ")
    else:
        assert third["ok"] is False and third["attempts"] == 1
        assert third["error"].startswith("device_lost: ")
    assert [r["ok"] for r in rows[:2] + rows[3:]] == [True, True, True]
    jsonl = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["attempts"] for r in jsonl] == [r["attempts"] for r in rows]


def test_device_never_back_then_resume_measures_the_rest_once(device, models, binary,
                                                              tmp_path):
    out = tmp_path / "out"
    device.set(faults={SER: {"lost_after_runs": 2}})
    start = time.monotonic()
    rows = adb_sweep(models, binary, out, wait_device=0.5, retries=2)
    assert time.monotonic() - start < 15
    assert [r["ok"] for r in rows] == [True, True, False, False]
    for row in rows[2:]:
        assert row["error"].startswith("device_lost: error: device '28021FDH2000AB' not found")
        assert "not back after waiting 0.5 s" in row["error"]
        assert row["attempts"] == 0 and row["serial"] == SER
        assert row["device"]["fingerprint"] == PIXEL_PROPS["ro.build.fingerprint"]
    # only the first lost configuration waited; the next one saw the device still gone
    waits = [c for c in device.calls() if "wait-for-device" in c["argv"]]
    assert len(waits) == 1
    md = (out / "results.md").read_text()
    assert md.count("error: device_lost") == 2

    device.set(faults={SER: {"lost_after_runs": 2, "back_after_s": 0}})   # plugged in again
    device.log.unlink()
    resumed = adb_sweep(models, binary, out, resume=True)
    assert [r["ok"] for r in resumed] == [True] * 4
    assert names(resumed) == [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1), ("b.tflite", 2)]
    runs = device.runs()
    assert [(Path(r["tokens"][1].split("=", 1)[1]).name, r["tokens"][3]) for r in runs] == \
        [("b.tflite", "--num_threads=1"), ("b.tflite", "--num_threads=2")]
    jsonl = read_jsonl(out / "results.jsonl")
    assert len(jsonl) == 6
    _, csv_rows = read_csv(out / "results.csv")
    assert len(csv_rows) == 4
    assert len({config_key(r) for r in resumed}) == 4
    assert (out / "results.md").read_text().count("| ok") == 4


# ---------------------------------------------------------------- several phones


PHONES = [("SERIAL_A", "device", "usb:1-1 model:Pixel_7 transport_id:1"),
          ("SERIAL_B", "device", "usb:1-2 model:Galaxy_S23 transport_id:2"),
          ("SERIAL_C", "device", "usb:1-3 model:Pixel_6a transport_id:3")]


def _props(model, fingerprint):
    return dict(PIXEL_PROPS, **{"ro.product.model": model, "ro.build.fingerprint": fingerprint})


@pytest.fixture
def shelf(device):
    device.set(devices=PHONES, props_by_serial={
        "SERIAL_A": _props("Pixel 7", "fp/A"), "SERIAL_B": _props("Galaxy S23", "fp/B"),
        "SERIAL_C": _props("Pixel 6a", "fp/C")})
    return device


def test_serial_all_runs_every_phone_in_parallel_and_survives_a_lost_one(shelf, models, binary,
                                                                         tmp_path):
    shelf.set(slow_run_s=0.4, faults={"SERIAL_C": {"lost_after_runs": 1}})
    out = tmp_path / "out"
    rows = adb_sweep(models, binary, out, serial="all", wait_device=0.2)
    by_serial = {}
    for row in rows:
        by_serial.setdefault(row["serial"], []).append(row)
    assert sorted(by_serial) == ["SERIAL_A", "SERIAL_B", "SERIAL_C"]
    for serial in ("SERIAL_A", "SERIAL_B"):
        got = by_serial[serial]
        assert names(got) == [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1), ("b.tflite", 2)]
        assert all(r["ok"] for r in got)
        assert {r["device"]["fingerprint"] for r in got} == {f"fp/{serial[-1]}"}
    lost = by_serial["SERIAL_C"]
    assert [r["ok"] for r in lost] == [True, False, False, False]
    assert all(r["error"].startswith("device_lost: ") for r in lost[1:])
    # each phone has its own folder of pushed files
    for serial in ("SERIAL_A", "SERIAL_B"):
        assert set(shelf.files(serial)) >= {f"{REMOTE}/a.tflite", f"{REMOTE}/b.tflite"}
    # one benchmark at a time per phone; phones at the same time
    spans = [json.loads(line) for line in (shelf.state / "runs.jsonl").read_text().splitlines()]
    for serial in ("SERIAL_A", "SERIAL_B"):
        mine = sorted((s["start"], s["end"]) for s in spans if s["serial"] == serial)
        assert all(a[1] <= b[0] for a, b in zip(mine, mine[1:]))
    a_spans = [(s["start"], s["end"]) for s in spans if s["serial"] == "SERIAL_A"]
    b_spans = [(s["start"], s["end"]) for s in spans if s["serial"] == "SERIAL_B"]
    assert any(a0 < b1 and b0 < a1 for a0, a1 in a_spans for b0, b1 in b_spans)
    md = (out / "results.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sorted(sections) == ["## SERIAL_A: Google Pixel 7 (GS201), Android 14",
                                "## SERIAL_B: Google Galaxy S23 (GS201), Android 14",
                                "## SERIAL_C: Google Pixel 6a (GS201), Android 14"]
    _, csv_rows = read_csv(out / "results.csv")
    assert len(csv_rows) == 12


def test_serial_list_and_unknown_serial(shelf, models, binary, tmp_path):
    rows = adb_sweep(models[:1], binary, tmp_path / "o", threads=(1,),
                     serial="SERIAL_C,SERIAL_A")
    assert sorted(r["serial"] for r in rows) == ["SERIAL_A", "SERIAL_C"]
    assert all(r["ok"] for r in rows)
    with pytest.raises(ValueError, match="unknown serial 'SERIAL_Z' in --serial; connected: "
                                         "SERIAL_A \\(device\\)"):
        adb_sweep(models, binary, tmp_path / "o2", serial="SERIAL_A,SERIAL_Z")


# ---------------------------------------------------------------- CLI: bad input, resume


def _cli(*args):
    from mobilekit.cli import cli

    return CliRunner().invoke(cli, ["bench", *map(str, args)])


def test_cli_bad_input_exits_2(device, models, binary, tmp_path):
    base = [models[0], "--target", "adb", "--benchmark-binary", binary]
    result = _cli(*base, "--out", tmp_path / "nowhere", "--resume")
    assert result.exit_code == 2
    assert result.output.strip() == (f"Error: --resume needs the output directory of an earlier "
                                     f"sweep; --out '{tmp_path / 'nowhere'}' does not exist")
    (tmp_path / "empty").mkdir()
    result = _cli(*base, "--out", tmp_path / "empty", "--resume")
    assert result.exit_code == 2 and "results.jsonl' does not exist" in result.output
    result = _cli(*base, "--retries", "-1")
    assert result.exit_code == 2
    assert result.output.strip() == "Error: --retries must be an integer >= 0; got -1"
    result = _cli(*base, "--serial", f"{SER},NOPE")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: unknown serial 'NOPE' in --serial; connected: {SER} (device)"]


def test_cli_resume_remeasures_a_changed_model_and_says_so(device, models, binary, tmp_path):
    out = tmp_path / "out"
    base = [*models, "--target", "adb", "--benchmark-binary", binary, "--out", out,
            "--threads", "1", "--wait-device", "0"]
    assert _cli(*base).exit_code == 0
    device.log.unlink()
    again = _cli(*base, "--resume")
    assert again.exit_code == 0, again.output
    assert "resume: 2 of 2 configurations already measured" in again.output
    assert device.runs() == []
    models[0].write_bytes(b"TFL3 retrained")
    changed = _cli(*base, "--resume")
    assert changed.exit_code == 0, changed.output
    assert "Note: a.tflite changed since it was measured" in changed.output
    assert "measuring it again" in changed.output
    assert len(device.runs()) == 1
    jsonl = read_jsonl(out / "results.jsonl")
    assert len(jsonl) == 3
    _, csv_rows = read_csv(out / "results.csv")
    assert [(Path(r["model_path"]).name, r["model_sha256"]) for r in csv_rows] == [
        ("a.tflite", bm.file_sha256(models[0])), ("b.tflite", bm.file_sha256(models[1]))]


# ---------------------------------------------------------------- Ctrl-C


def _processes_mentioning(text):
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline and pid_alive(int(entry.name)):
            found.append((entry.name, cmdline))
    return found


def _start_cli(args, cwd):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "mobilekit", "bench", *map(str, args)],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for(predicate, proc, seconds=60):
    deadline = time.monotonic() + seconds
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"exited early: {proc.communicate()}")
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)


def _interrupt(proc):
    os.killpg(proc.pid, signal.SIGINT)   # what a terminal's Ctrl-C does: the foreground group
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def _resume_line(err):
    lines = err.splitlines()
    return lines[lines.index("Resume with:") + 1].strip()


def test_ctrl_c_on_adb_sweep_leaves_tables_no_orphan_and_resumes(device, models, binary,
                                                                 tmp_path):
    device.set(slow_run_s=120, slow_from_run=1)   # the second benchmark runs "forever"
    out = tmp_path / "out"
    proc = _start_cli([models[0], "--target", "adb", "--benchmark-binary", binary, "--threads",
                       "1,2,3", "--out", out, "--wait-device", "0"], tmp_path)
    _wait_for(lambda: len(device.remote_pids()) == 1, proc)
    assert len(read_jsonl(out / "results.jsonl")) == 1
    rc, _, err = _interrupt(proc)
    assert rc == 130, err
    assert "Interrupted: 1 of 3 configurations measured" in err
    (pid,) = device.remote_pids()
    assert not pid_alive(pid), err
    assert _processes_mentioning(str(device.dir)) == []
    _, csv_rows = read_csv(out / "results.csv")
    assert [r["threads"] for r in csv_rows] == ["1"]
    assert (out / "results.md").read_text().count("| ok") == 1
    command = _resume_line(err)
    assert command == shlex.join(["mobilekit", "bench", str(models[0]), "--target", "adb",
                                  "--threads", "1,2,3", "--benchmark-binary", str(binary),
                                  "--wait-device", "0.0", "--out", str(out),
                                  "--resume"])

    device.set(slow_run_s=0)
    done = subprocess.run([sys.executable, "-m", "mobilekit", *shlex.split(command)[1:]],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _, csv_rows = read_csv(out / "results.csv")
    assert sorted(r["threads"] for r in csv_rows) == ["1", "2", "3"]
    assert all(r["ok"] == "True" for r in csv_rows)
    assert len(read_jsonl(out / "results.jsonl")) == 3


LOCAL_BENCHMARK = """#!/bin/sh
here=$(dirname "$0")
case "$*" in *--num_threads=2*)
    if [ ! -f "$here/fast" ]; then echo $$ > "$here/slow.pid"; exec sleep 120; fi ;;
esac
cat "$here/ok.log"
"""


def test_ctrl_c_on_local_sweep_leaves_tables_and_no_orphan(models, tmp_path):
    from test_benchmark_model_adb import OK_LOG

    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ok.log").write_text(OK_LOG.replace("{threads}", "1").replace("{num_runs}", "5")
                                   .replace("{graph}", "/m.tflite"))
    local = folder / "benchmark_model"
    local.write_text(LOCAL_BENCHMARK)
    local.chmod(0o755)
    out = tmp_path / "out"
    proc = _start_cli([models[0], "--target", "local", "--benchmark-binary", local,
                       "--threads", "1,2,4", "--out", out], tmp_path)
    _wait_for(lambda: (folder / "slow.pid").exists(), proc)
    pid = int((folder / "slow.pid").read_text())
    rc, _, err = _interrupt(proc)
    assert rc == 130, err
    assert not pid_alive(pid)
    _, csv_rows = read_csv(out / "results.csv")
    assert [r["threads"] for r in csv_rows] == ["1"]
    assert "results.md" in err and (out / "results.md").exists()
    (folder / "fast").touch()
    done = subprocess.run([sys.executable, "-m", "mobilekit", *shlex.split(_resume_line(err))[1:]],
                          cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _, csv_rows = read_csv(out / "results.csv")
    assert [r["threads"] for r in csv_rows] == ["1", "2", "4"]
    assert len(read_jsonl(out / "results.jsonl")) == 3
