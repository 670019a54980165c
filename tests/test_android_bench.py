"""android_bench/run_sweep.sh under a POSIX sh with a stand-in benchmark_model, and read_sweep."""
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from mobilekit.bench.benchmark_model import read_sweep
from procs import pid_alive

SCRIPT = Path(__file__).resolve().parents[1] / "android_bench" / "run_sweep.sh"

# Prints a TF 2.x log echoing its flags; the GPU "fails" the way the real tool does.
FAKE_BENCHMARK = r"""#!/bin/sh
graph= threads=
for arg in "$@"; do
    case $arg in
        --graph=*) graph=${arg#--graph=} ;;
        --num_threads=*) threads=${arg#--num_threads=} ;;
    esac
    echo "ARG: $arg"
done
echo "$graph $threads" >> "$(dirname "$0")/calls.txt"
if [ "$threads" = 4 ] && [ -f "$(dirname "$0")/slow" ]; then
    echo $$ > "$(dirname "$0")/slow.pid"
    exec sleep 120
fi
echo "INFO: STARTING!"
echo "INFO: Num threads: [$threads]"
echo "INFO: Loaded model $graph"
case "$*" in *--use_gpu=true*)
    echo "ERROR: Failed to apply GPU delegate."
    echo "Benchmarking failed."
    exit 3 ;;
esac
echo "INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds."
echo "INFO: count=12 first=900 curr=800 min=790 max=900 avg=810.5 std=30"
echo "INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds."
echo "INFO: count=60 first=801 curr=799 min=780 max=840 avg=$((700 + threads)) std=12"
echo "INFO: Inference timings in us: Init: 1500, First inference: 900, Warmup (avg): 810.5, Inference (avg): $((700 + threads))"
"""

FAKE_TASKSET = """#!/bin/sh
echo "$1" >> "$TASKSET_LOG"
shift
exec "$@"
"""


@pytest.fixture
def sweep_env(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    bench = bindir / "benchmark_model"
    bench.write_text(FAKE_BENCHMARK)
    bench.chmod(0o755)
    taskset = bindir / "taskset"
    taskset.write_text(FAKE_TASKSET)
    taskset.chmod(0o755)
    models = [tmp_path / "mnv2 035.tflite", tmp_path / "mnv3s.tflite"]
    for model in models:
        model.write_bytes(b"TFL3")
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "TASKSET_LOG": str(tmp_path / "taskset.log")}
    return bench, models, env


def sweep(args, env, cwd):
    return subprocess.run(["sh", str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=60)


def test_script_is_posix_sh():
    assert subprocess.run(["sh", "-n", str(SCRIPT)]).returncode == 0
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    check = subprocess.run(["shellcheck", "-s", "sh", str(SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout


def test_sweep_runs_matrix_and_writes_results(sweep_env, tmp_path):
    bench, models, env = sweep_env
    out = tmp_path / "out"
    proc = sweep(["-b", bench, "-d", "cpu gpu", "-t", "1 4", "-o", out, "-m", "f0", "-r", "20",
                  *models], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = (out / "results.tsv").read_text().splitlines()
    assert lines[0] == "# model\tdelegate\tthreads\texit_code\tlog"
    expected = [(str(m), d, str(t), "3" if d == "gpu" else "0",
                 f"logs/{stem}__{d}__t{t}__r1.log")
                for m, stem in zip(models, ["mnv2_035", "mnv3s"]) for d in ("cpu", "gpu") for t in (1, 4)]
    assert [tuple(line.split("\t")) for line in lines[1:]] == expected
    assert not (out / "results.tsv.partial").exists()
    # the flags reached the binary one argument each, through taskset f0
    first = (out / "logs" / "mnv2_035__cpu__t1__r1.log").read_text().splitlines()
    assert first[:7] == [f"ARG: --graph={models[0]}", "ARG: --use_xnnpack=false", "ARG: --num_threads=1",
                         "ARG: --num_runs=20", "ARG: --warmup_runs=1", "ARG: --min_secs=1",
                         "INFO: STARTING!"]
    assert (tmp_path / "taskset.log").read_text().split() == ["f0"] * 8
    assert "[8/8] mnv3s gpu t4 r1: exit 3" in proc.stderr

    rows = read_sweep(out, serial="SER1")
    assert [(r["delegate"], r["threads"], r["ok"]) for r in rows] == \
        [(d, t, d == "cpu") for _ in models for d in ("cpu", "gpu") for t in (1, 4)]
    assert [r["inference_avg_us"] for r in rows if r["ok"]] == [701, 704, 701, 704]
    failed = [r for r in rows if not r["ok"]]
    assert all(r["error"] == "benchmark_model exited with code 3: Failed to apply GPU delegate."
               for r in failed)
    assert rows[0]["serial"] == "SER1" and rows[0]["model_path"] == str(models[0])


def test_sweep_repeats_and_env_configuration(sweep_env, tmp_path):
    bench, models, env = sweep_env
    env = dict(env, BENCHMARK_MODEL=str(bench), DELEGATES="xnnpack", THREADS="2", REPEATS="3",
               OUT_DIR=str(tmp_path / "o2"), EXTRA_FLAGS="--max_secs=5 --verbose=true")
    proc = sweep([models[1]], env, tmp_path)
    assert proc.returncode == 0, proc.stderr
    logs = [line.split("\t")[4] for line in (tmp_path / "o2" / "results.tsv").read_text().splitlines()[1:]]
    assert logs == [f"logs/mnv3s__xnnpack__t2__r{i}.log" for i in (1, 2, 3)]
    text = (tmp_path / "o2" / logs[0]).read_text()
    assert "ARG: --max_secs=5\nARG: --verbose=true\n" in text
    assert not (tmp_path / "taskset.log").exists()   # no mask: no taskset


@pytest.mark.parametrize("args,message", [
    (["-d", "cpu tpu"], "unknown delegate 'tpu'; accepted: cpu, xnnpack, gpu, nnapi"),
    (["-t", "1 x"], "thread count must be an integer >= 1; got 'x'"),
    (["-b", "/nonexistent/bm"], "benchmark binary '/nonexistent/bm' does not exist"),
    (["-r", "0"], "NUM_RUNS must be an integer >= 1"),
])
def test_sweep_rejects_bad_arguments(sweep_env, tmp_path, args, message):
    bench, models, env = sweep_env
    proc = sweep(["-b", bench, "-o", tmp_path / "o3", *args, models[0]], env, tmp_path)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "o3" / "results.tsv").exists()


def test_sweep_needs_existing_models(sweep_env, tmp_path):
    bench, _, env = sweep_env
    proc = sweep(["-b", bench, tmp_path / "missing.tflite"], env, tmp_path)
    assert proc.returncode == 2 and "model '" in proc.stderr and "does not exist" in proc.stderr
    proc = sweep(["-b", bench], env, tmp_path)
    assert proc.returncode == 2 and "no model given" in proc.stderr


def test_sweep_records_device_state_and_read_sweep_judges_it(sweep_env, tmp_path):
    """The phone-side script dumps the same state as `adb shell` does (issue 17 item 7)."""
    from test_bench_trust import PHONE_CPUS, PHONE_ZONES, write_sysfs

    from mobilekit.bench.device_state import STATE_SCRIPT

    text = SCRIPT.read_text()
    start = text.index("# >>> state script") + len("# >>> state script: identical to "
                                                   "mobilekit/bench/device_state.py STATE_SCRIPT\n")
    assert text[start:text.index("# <<< state script")] == STATE_SCRIPT
    bench, models, env = sweep_env
    sysfs = write_sysfs(tmp_path / "sysfs", PHONE_CPUS, PHONE_ZONES, governor="schedutil")
    getprop = tmp_path / "bin" / "getprop"   # an emulator's getprop
    getprop.write_text('#!/bin/sh\ncase $1 in ro.kernel.qemu) echo 1;; ro.hardware) echo ranchu;; esac\n')
    getprop.chmod(0o755)
    out = tmp_path / "out"
    proc = sweep(["-b", bench, "-d", "cpu", "-t", "2", "-o", out, "-n", "2", models[1]],
                 dict(env, MOBILEKIT_SYSFS=str(sysfs)), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (out / "state").iterdir()) == [
        f"mnv3s__cpu__t2__r{r}.{w}.txt" for r in (1, 2) for w in ("after", "before")]
    rows = read_sweep(out)
    assert len(rows) == 2 and all(r["ok"] for r in rows)
    row = rows[0]
    assert [c["name"] for c in row["state_before"]["clusters"]] == ["little", "big", "prime"]
    assert row["state_after"]["hottest_cpu_c"] == 41.0 and row["emulator"] is True
    assert row["unstable"] is True and row["unstable_reasons"][0].startswith("governor schedutil")
    assert any("dumpsys battery unreadable" in n for n in row["notes"])   # no dumpsys here
    # a sweep without state files (an older script) reads as before
    for path in (out / "state").iterdir():
        path.unlink()
    assert read_sweep(out)[0]["state_before"] is None and read_sweep(out)[0]["unstable"] is None


def test_interrupted_sweep_resumes_where_it_stopped(sweep_env, tmp_path):
    bench, models, env = sweep_env
    (bench.parent / "slow").touch()   # the run with 4 threads hangs until it is killed
    out = tmp_path / "out"
    args = ["-b", bench, "-d", "cpu", "-t", "1 4", "-o", out, "-r", "20", *models]
    proc = subprocess.Popen(["sh", str(SCRIPT), *map(str, args)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    pid_file = bench.parent / "slow.pid"
    deadline = time.monotonic() + 30
    while not pid_file.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)   # Ctrl-C in the terminal running the sweep
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert not pid_alive(int(pid_file.read_text())), "the benchmark outlived the sweep"
    partial = out / "results.tsv.partial"
    assert [line.split("\t")[2] for line in partial.read_text().splitlines()[1:]] == ["1"]
    assert not (out / "results.tsv").exists()
    assert "interrupted (INT) after 1 of 4 runs" in err
    resume = err.strip().splitlines()[-1]
    assert resume.startswith("resume with: sh ")
    command = shlex.split(resume[len("resume with: "):])
    assert command == ["sh", str(SCRIPT), "-R", *map(str, args)]

    (bench.parent / "slow").unlink()
    done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "done before, skipped" in done.stderr
    lines = (out / "results.tsv").read_text().splitlines()[1:]
    assert [(line.split("\t")[0], line.split("\t")[2]) for line in lines] == \
        [(str(models[0]), "1"), (str(models[0]), "4"), (str(models[1]), "1"),
         (str(models[1]), "4")]
    # the first configuration ran once; the interrupted one twice (abandoned, then measured)
    calls = (bench.parent / "calls.txt").read_text().splitlines()
    assert calls.count(f"{models[0]} 1") == 1 and calls.count(f"{models[0]} 4") == 2
    assert [r["ok"] for r in read_sweep(out)] == [True] * 4
    # a resumed sweep that was complete does nothing more
    again = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and len((bench.parent / "calls.txt").read_text().splitlines()) \
        == len(calls)
    assert (out / "results.tsv").read_text().splitlines()[1:] == lines
