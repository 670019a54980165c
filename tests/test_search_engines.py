"""Where search trials train (mobilekit.search.engines): local spawned processes or Ray Tune
trials, and what a SIGINT / SIGTERM to the parent does to them."""
import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilekit.search import engines
from procs import descendants, identity, wait_gone

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY,
                               reason='Ray Tune not installed (pip install "mobilekit[ray]")')


# ---------------------------------------------------------------- signals, in this process


def test_stop_on_signals_interrupts_the_block_then_delivers_the_signal_as_before():
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    reached = False
    try:
        with engines.stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is not previous
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
            reached = True
        assert not reached and seen == [signal.SIGTERM]  # the previous handler ran once
        assert signal.getsignal(signal.SIGTERM) not in (None, signal.SIG_DFL)
        with engines.stop_on_signals():  # no signal: the block runs to its end
            reached = True
        assert reached and seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)


def _sleeper(job):
    Path(job["pid_file"]).write_text(str(os.getpid()))
    time.sleep(120)
    return {"draw": job["draw"]}


def test_local_workers_are_terminated_on_sigint(tmp_path):
    jobs = [{"draw": i, "pid_file": str(tmp_path / f"{i}.pid")} for i in range(3)]
    rows, children = [], set()

    def interrupt_when_running():
        deadline = time.time() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        for p in tmp_path.glob("*.pid"):
            if found := identity(int(p.read_text())):
                children.add(found)
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Thread(target=interrupt_when_running, daemon=True)
    timer.start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):  # SIGINT still means KeyboardInterrupt here
        engines.run_jobs(_sleeper, jobs, 2, rows.append)
    timer.join(5)
    assert len(children) == 2 and not rows
    assert time.time() - t0 < 60  # not after the sleepers' 120 s
    assert not wait_gone(children), "worker processes outlived the interrupted search"


def _fail_on_odd(job):
    if job["row"]["draw"] % 2:
        raise ValueError(f"draw {job['row']['draw']} cannot train")
    return {"draw": job["row"]["draw"], "pid": os.getpid()}


@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=needs_ray)])
def test_a_failing_trial_keeps_the_others_and_is_raised(tmp_path, engine, monkeypatch):
    # Ray's workers find this module (and its _fail_on_odd) through the inherited PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(Path(__file__).parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    rows = []
    jobs = [{"row": {"draw": i}} for i in range(4)]
    with pytest.raises(ValueError, match=r"draw [13] cannot train"):
        engines.run_jobs(_fail_on_odd, jobs, 2, rows.append, engine=engine,
                         storage=str(tmp_path / "ray"))
    assert sorted(r["draw"] for r in rows) == [0, 2]
    assert all(r["pid"] != os.getpid() for r in rows)  # trained by workers, not here


def test_engine_ray_without_ray_is_one_clear_error(tmp_path, monkeypatch):
    from mobilekit.cli import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "s"
    base = ["search", "--space", "mbspace-tiny", "--latency-target", "1", "--out", str(out)]
    res = CliRunner().invoke(cli, base + ["--engine", "ray"])
    assert res.exit_code == 2, res.output
    assert res.output.count("Error:") == 1
    assert 'pip install "mobilekit[ray]"' in res.output and not out.exists()
    res = CliRunner().invoke(cli, base + ["--ray-address", "auto"])
    assert res.exit_code == 2 and "--ray-address is for --engine ray" in res.output


# ---------------------------------------------------------------- end to end


def _fixed_lut(path):
    from mobilekit.search import latency

    path.write_text(json.dumps({
        "format": latency.FORMAT, "target": "host", "threads": 1, "delegate": "xnnpack",
        "space": "mbspace-tiny", "seed": 0, "resolution": 32, "tables": {"fp32": {
            "base_us": 5.0, "ops": {"conv_k1_s1": {"us_per_op": 0.0, "us_per_mmac": 100.0,
                                                   "us_per_melement": 0.0}}}}}))


def _rows(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _search_args(tmp_path, out, trials, finalists=1):
    lut = tmp_path / "lut.json"
    _fixed_lut(lut)
    return ["search", "--space", "mbspace-tiny", "--resolution", "32", "--trials", str(trials),
            "--epochs-per-trial", "1", "--batch-size", "16", "--data",
            "synthetic:train=12,val=4", "--latency-target", "1", "--lut", str(lut),
            "--finalists", str(finalists), "--zoo", "none", "--out", str(out)]


@pytest.mark.slow
@needs_ray
def test_ray_engine_writes_the_rows_and_files_of_the_local_engine(tmp_path):
    from mobilekit.cli import cli

    runs = {}
    for engine, workers in (("local", "1"), ("ray", "2")):
        out = tmp_path / engine
        res = CliRunner().invoke(cli, _search_args(tmp_path, out, 2)
                                 + ["--engine", engine, "--workers", workers])
        assert res.exit_code == 0, res.output
        runs[engine] = out
    local, ray = (_rows(runs[e] / "trials.jsonl") for e in ("local", "ray"))
    assert len(local) == 2 and all(r["val_accuracy"] is not None for r in local)
    same = ("draw", "point", "params", "predicted_us", "val_accuracy", "error")
    assert [{k: r[k] for k in same} for r in ray] == [{k: r[k] for k in same} for r in local]
    assert [r["status"] for r in ray] == [r["status"] for r in local]
    assert [Path(r["run_dir"]).name for r in ray] == [Path(r["run_dir"]).name for r in local]

    def files(root):  # TensorBoard event names hold a time and pid
        return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                      if p.is_file() and "events.out" not in p.name)

    assert files(runs["ray"]) == files(runs["local"])
    assert not (runs["ray"] / ".ray").exists()  # Tune's own state is not left behind
    for r in ray:
        metrics = json.loads((Path(r["run_dir"]) / "metrics.json").read_text())
        assert metrics["val_accuracy"] == r["val_accuracy"]
    summaries = [json.loads((runs[e] / "summary.json").read_text()) for e in ("local", "ray")]
    assert summaries[0]["chosen"]["draw"] == summaries[1]["chosen"]["draw"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("ray", marks=needs_ray)])
def test_sigterm_to_the_search_leaves_no_worker_and_it_resumes(tmp_path, engine):
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "mobilekit"] + _search_args(tmp_path, out, 2, 0) + [
        "--workers", "2", "--engine", engine]
    log = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    try:
        deadline = time.time() + 300
        # mid-training: the workers run and at least one trial has its run directory
        while not list((out / "trials").glob("draw-*/config.json")):
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()[-3000:]
            assert time.time() < deadline, "no trial started in time"
            time.sleep(0.2)
        children = descendants(proc.pid)
        assert len(children) >= 2
        proc.send_signal(signal.SIGTERM)  # the parent only, not its process group
        assert proc.wait(60) == -signal.SIGTERM  # the signal keeps its usual effect
        left = wait_gone(children, 5)  # the parent waits for them; Ray needs a moment
        assert not left, f"processes of the killed search remain: {sorted(left)}"
    finally:
        try:  # whatever is left of its process group, also when the test failed
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
    before = {r["draw"]: r for r in _rows(out / "trials.jsonl") if r.get("val_accuracy")
              is not None}
    assert len(before) < 2 and not (out / "summary.json").exists()

    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _rows(out / "trials.jsonl")
    assert sorted(r["draw"] for r in rows) == [0, 1]
    assert all(r["val_accuracy"] is not None for r in rows)
    for r in rows:
        if r["draw"] in before:  # finished before the kill: kept, not retrained
            assert r["train_seconds"] == before[r["draw"]]["train_seconds"]
        metrics = json.loads((out / "trials" / f"draw-{r['draw']:04d}" / "metrics.json")
                             .read_text())
        assert metrics["val_accuracy"] == r["val_accuracy"] and metrics["epochs_completed"] == 1
    assert json.loads((out / "summary.json").read_text())["trained"] == 2
