"""Training into a run directory: the contract, resume after SIGKILL, distillation, bad input."""
import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from mobilekit.train import rundir, trainer
from mobilekit.train.schedules import WarmupSchedule

TINY = dict(alpha=0.25, resolution=32, data="synthetic:train=4,val=2", epochs=2, batch_size=16)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    run_dir.mkdir()
    config = trainer.resolve_config("mobilenet_v1", **TINY)
    metrics = trainer.train(config, run_dir, verbose=0)
    return run_dir, metrics


def test_run_directory_contract(tiny_run):
    run_dir, metrics = tiny_run
    config = rundir.load_run(run_dir)
    for key in ("model", "model_kwargs", "data", "resolution", "mean", "std", "class_names",
                "num_classes", "epochs", "batch_size", "lr", "optimizer", "schedule",
                "warmup_epochs", "label_smoothing", "weight_decay", "seed", "teacher"):
        assert key in config, key
    assert config["model_kwargs"] == {"resolution": 32, "num_classes": 10, "alpha": 0.25}
    assert len(config["class_names"]) == 10 and len(config["mean"]) == 3
    assert config["optimizer"] == "sgd"  # the synthetic set's default
    assert config["lr"] == pytest.approx(0.2 * 16 / 64)  # linear in batch
    with open(run_dir / "history.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"loss", "accuracy", "val_accuracy", "val_top5", "lr"} <= set(rows[0])
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert 0 <= saved["val_accuracy"] <= 1 and 0 <= saved["val_top5"] <= 1
    assert saved["epochs_completed"] == 2 and saved["num_classes"] == 10
    assert saved["train_images_per_sec"] > 0
    best = max(float(r["val_accuracy"]) for r in rows)
    assert saved["val_accuracy"] == pytest.approx(best)
    assert [e for e, _ in rundir.checkpoint_dirs(run_dir)] == [1, 2]
    assert (run_dir / "model.keras").is_file() and list((run_dir / "logs").rglob("*tfevents*"))
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_best_model_is_clean_and_loads(tiny_run):
    from mobilekit.keras import keras

    model = keras.models.load_model(tiny_run[0] / "model.keras")
    assert model.output_shape == (None, 10) and model.input_shape == (None, 32, 32, 3)
    assert model.optimizer is None  # inference model: no compile state, no custom objects


def test_schedule_warmup_and_cosine():
    s = WarmupSchedule(0.1, total_steps=110, warmup_steps=10, kind="cosine")
    assert float(s(0)) == pytest.approx(0.01)
    assert float(s(9)) == pytest.approx(0.1)
    assert float(s(10)) == pytest.approx(0.1)
    assert float(s(60)) == pytest.approx(0.05)
    assert float(s(110)) == pytest.approx(0.0, abs=1e-7)
    step = WarmupSchedule(0.1, total_steps=90, kind="step", step_every=30, gamma=0.1)
    assert [round(float(step(i)), 6) for i in (0, 29, 30, 60)] == [0.1, 0.1, 0.01, 0.001]


def test_resolve_config_precedence_and_errors():
    config = trainer.resolve_config("mobilenet_v1", batch_size=128)
    assert config["optimizer"] == "sgd" and config["lr"] == pytest.approx(0.2 * 2)
    assert config["resolution"] == trainer.SYNTHETIC_RESOLUTION and config["weight_decay"] == 4e-5
    # Xception takes no less than 71 px: the synthetic default grows to it, not an error.
    assert trainer.resolve_config("xception")["resolution"] == 71
    folder = trainer.resolve_config("mobilenet_v1", data="/x", batch_size=128)
    assert folder["resolution"] == 224 and folder["optimizer"] == "adam"
    assert folder["lr"] == pytest.approx(2e-3 * 2) and folder["weight_decay"] == 0.0
    explicit = trainer.resolve_config("mobilenet_v1", optimizer="adam", lr=0.5)
    assert explicit["optimizer"] == "adam" and explicit["lr"] == 0.5
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw; got 'rmsprop'"):
        trainer.resolve_config("mobilenet_v1", optimizer="rmsprop")
    with pytest.raises(ValueError, match="unknown model 'mobilenet_v9'"):
        trainer.resolve_config("mobilenet_v9")


def test_card_recipe_between_explicit_options_and_built_in_defaults():
    # models/squeezenet_1_1.toml [recipe]: Adam at 1e-4 (larger steps kill its ReLU scores)
    card = trainer.resolve_config("squeezenet_1_1")
    assert card["optimizer"] == "adam" and card["lr"] == pytest.approx(1e-4)
    assert trainer.resolve_config("mobilenet_v2")["optimizer"] == "adam"
    assert trainer.resolve_config("squeezenet_1_1", lr=3e-4)["lr"] == pytest.approx(3e-4)
    # Another optimizer brings its own built-in learning rate, not the card's Adam one.
    # A recipe may carry model options (VGG16 trains without dropout); --option replaces them.
    vgg = trainer.resolve_config("vgg16")
    assert vgg["model_options"] == {"dropout": 0.0} and vgg["lr"] == pytest.approx(1e-4)
    assert trainer.resolve_config("vgg16", model_options={"dropout": 0.5})["model_options"] == {
        "dropout": 0.5}
    sgd = trainer.resolve_config("squeezenet_1_1", optimizer="sgd")
    assert sgd["optimizer"] == "sgd" and sgd["lr"] == pytest.approx(0.1)


def test_distillation_from_teacher_run(tiny_run, tmp_path):
    run_dir = tmp_path / "student"
    run_dir.mkdir()
    config = trainer.resolve_config("mobilenet_v1", **dict(TINY, epochs=1),
                                    teacher=str(tiny_run[0]))
    metrics = trainer.train(config, run_dir, verbose=0)
    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert "distill_loss" in header and metrics["epochs_completed"] == 1


def test_teacher_class_mismatch_is_refused(tiny_run, tmp_path):
    config = trainer.resolve_config("mobilenet_v1", **dict(TINY, data="synthetic:train=4,val=2,classes=5"),
                                    teacher=str(tiny_run[0]))
    with pytest.raises(ValueError, match="teacher .* has 10 classes; the data has 5"):
        trainer.train(config, tmp_path, verbose=0)


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    from mobilekit.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["train", "--model", "mobilenet_v1", "--resume", str(tmp_path)])
    assert result.exit_code == 2
    assert "is not a run directory (no config.json)" in result.output
    out = tmp_path / "run"
    result = runner.invoke(cli, ["train", "--model", "mobilenet_v1", "--data", str(tmp_path / "missing"),
                                 "--out", str(out)])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (out / "config.json").exists()


def _history_epochs(run_dir):
    path = run_dir / "history.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


@pytest.mark.slow  # ~20 s contended: two training processes; resume stays in the fast tier
# through test_pretrained's resume across a phase change
def test_resume_after_sigkill_mid_epoch(tmp_path):
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "mobilekit", "train", "--model", "mobilenet_v1", "--alpha", "0.25",
           "--resolution", "32", "--data", "synthetic:train=120,val=5", "--epochs", "2",
           "--batch-size", "8", "--precise-bn", "0", "--out", str(run_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    try:
        # metrics.json is the last file written at an epoch's end.
        while not (run_dir / "metrics.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "epoch 1 did not finish in time"
            time.sleep(0.2)
        time.sleep(1.0)  # epoch 2 (150 steps) is now under way
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _history_epochs(run_dir) == [1], "epoch 2 finished before the kill; make it longer"
    assert [e for e, _ in rundir.checkpoint_dirs(run_dir)] == [1]
    resumed = subprocess.run([sys.executable, "-m", "mobilekit", "train", "--model", "mobilenet_v1",
                              "--resume", str(run_dir)], capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming" in resumed.stderr and "after epoch 1" in resumed.stderr
    assert _history_epochs(run_dir) == [1, 2]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs_completed"] == 2
    state = json.loads((run_dir / "checkpoints" / "epoch-0002" / "state.json").read_text())
    # The optimizer state was restored: its step counter continued from epoch 1's end.
    assert state["epoch"] == 2 and [r["epoch"] for r in state["history"]] == [1, 2]
    assert state["optimizer_iterations"] == 2 * 150  # 1200 images / batch 8, per epoch
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]
