"""--distribute: MirroredStrategy in process, MultiWorkerMirroredStrategy with two local workers."""
import csv
import json
import os
import socket
import subprocess
import sys

import pytest

from mobilekit.train import rundir, trainer

ARGS = ["--model", "mobilenet_v1", "--alpha", "0.25", "--resolution", "32",
        "--data", "synthetic:train=4,val=2", "--epochs", "1", "--batch-size", "8"]


def test_chief_from_tf_config(monkeypatch):
    assert trainer.chief_from_env("none")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 1}}))
    assert not trainer.chief_from_env("multi-worker")
    assert trainer.chief_from_env("mirrored")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert trainer.chief_from_env("multi-worker")
    monkeypatch.setenv("TF_CONFIG", "not json")
    with pytest.raises(ValueError, match="TF_CONFIG must be JSON"):
        trainer.chief_from_env("multi-worker")


def test_multi_worker_without_tf_config_is_refused(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="needs TF_CONFIG"):
        trainer.make_strategy("multi-worker")


def test_mirrored_run(tmp_path):
    config = trainer.resolve_config("mobilenet_v1", alpha=0.25, resolution=32, epochs=1,
                                    batch_size=8, data="synthetic:train=4,val=2",
                                    distribute="mirrored")
    metrics = trainer.train(config, tmp_path, verbose=0)
    saved = rundir.load_run(tmp_path)
    replicas = saved["num_replicas"]
    assert replicas >= 1 and saved["global_batch_size"] == 8 * replicas
    assert saved["scaled_lr"] == pytest.approx(saved["lr"] * replicas)
    assert metrics["epochs_completed"] == 1 and (tmp_path / "model.keras").is_file()


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.mark.slow  # ~80 s: two training processes; test_mirrored_run keeps tf.distribute in the fast tier
def test_two_local_workers(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in _free_ports(2)]
    out = tmp_path / "mw"
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                                     "task": {"type": "worker", "index": index}}))
        # Each worker in its own folder: only the chief (worker 0) may write `out`.
        cwd = tmp_path / f"w{index}"
        cwd.mkdir()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "mobilekit", "train", *ARGS, "--distribute", "multi-worker",
             "--out", str(out)], cwd=cwd, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    try:
        logs = [p.communicate(timeout=280)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    config = rundir.load_run(out)
    assert config["num_replicas"] == 2 and config["global_batch_size"] == 16
    with open(out / "history.csv", newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 1 and 0 <= metrics["val_accuracy"] <= 1
    assert (out / "model.keras").is_file() and (out / "checkpoints" / "epoch-0001").is_dir()
    assert "Worker finished" in logs[1]
    assert not list((tmp_path / "w1").iterdir())  # the worker wrote nothing anywhere
