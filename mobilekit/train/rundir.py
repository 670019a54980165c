"""The run directory contract.

  RUN_DIR/config.json     every argument and resolved default, dataset mean/std, class names
  RUN_DIR/history.csv     one row per completed epoch: `epoch` (1-based) then metrics
  RUN_DIR/checkpoints/epoch-NNNN/   full state after epoch N: weights + optimizer
                          (tf.train.Checkpoint) and state.json (history rows, best so far)
  RUN_DIR/model.keras     the best model (highest val_accuracy)
  RUN_DIR/metrics.json    summary of the finished (or so far completed) run

A checkpoint directory is written under a temporary name and renamed when complete, so
it is the single source of truth for "epoch N completed": history.csv is rewritten from it
afterwards, and a resume rewrites history.csv from the newest checkpoint again. A kill at
any point therefore neither loses nor repeats an epoch.
"""
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

from mobilekit.io import write_atomic, write_json_atomic

DEFAULT_ROOT = Path("runs") / "train"
CONFIG, HISTORY, METRICS, BEST = "config.json", "history.csv", "metrics.json", "model.keras"
CKPT_DIR = "checkpoints"
_EPOCH_DIR = re.compile(r"^epoch-(\d{4,})$")


def new_run_dir(name, root=DEFAULT_ROOT):
    """Create and return root/name, or root/name-2, root/name-3, ... (first free one)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1, 10000):
        path = root / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()  # atomic claim: two concurrent runs never share a folder
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory for {name!r} under {root}")


def is_run_dir(path):
    return (Path(path) / CONFIG).is_file()


def load_run(path):
    """The config dict of a run directory (with `run_dir` added)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    if not is_run_dir(path):
        raise ValueError(f"{str(path)!r} is not a run directory (no {CONFIG}); "
                         "expected a folder written by `mobilekit train`")
    try:
        config = json.loads((path / CONFIG).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path / CONFIG} is not valid JSON: {exc}") from None
    config["run_dir"] = str(path)
    return config


def model_kwargs(config):
    """create_model arguments of a run's config: classification runs record them as
    `model_kwargs`; detection runs as input_hw, alpha and backbone."""
    if config.get("task") != "detection":
        return config.get("model_kwargs", {})
    h, w = config["input_hw"]
    kwargs = dict(input_shape=(h, w, 3), alpha=config["alpha"])
    if config.get("backbone"):
        kwargs["backbone"] = config["backbone"]
    return kwargs


def write_config(path, config):
    write_json_atomic(Path(path) / CONFIG, config)


def write_history(path, rows):
    """Rewrite history.csv (atomically) from the list of per-epoch dicts."""
    columns = ["epoch"] + sorted({k for row in rows for k in row} - {"epoch"})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(row.get(k, "")) for k in columns})
    write_atomic(Path(path) / HISTORY, buf.getvalue())


def _fmt(value):
    return f"{value:.6g}" if isinstance(value, float) else value


def read_history(path):
    file = Path(path) / HISTORY
    if not file.exists():
        return []
    with open(file, newline="") as f:
        return [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()}
                for row in csv.DictReader(f)]


def checkpoint_dirs(path):
    """[(epoch, dir)] of the complete checkpoints, oldest first."""
    root = Path(path) / CKPT_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if (m := _EPOCH_DIR.match(p.name)) and (p / "state.json").is_file()]
    return sorted(found)


def latest_checkpoint(path):
    found = checkpoint_dirs(path)
    return found[-1] if found else (0, None)


def save_checkpoint(path, epoch, trackables, state, keep=3):
    """Write checkpoints/epoch-NNNN atomically (temp folder + rename); keep the newest `keep`."""
    import tensorflow as tf

    root = Path(path) / CKPT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".tmp-epoch-{epoch:04d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tf.train.Checkpoint(**trackables).write(str(tmp / "ckpt"))
    write_json_atomic(tmp / "state.json", state)
    if final.exists():  # a resumed run redoing nothing: never two epochs with one name
        shutil.rmtree(final)
    os.replace(tmp, final)
    for _, old in checkpoint_dirs(path)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    _remove_stale_tmp(root)
    return final


def _remove_stale_tmp(root):
    # Temp folders of a process that was killed mid-write.
    for p in root.glob(".tmp-epoch-*"):
        if not p.name.endswith(f"-{os.getpid()}"):
            shutil.rmtree(p, ignore_errors=True)


def restore_checkpoint(ckpt_dir, trackables):
    """Restore weights and optimizer state; returns the checkpoint's state.json."""
    import tensorflow as tf

    status = tf.train.Checkpoint(**trackables).read(str(Path(ckpt_dir) / "ckpt"))
    status.assert_existing_objects_matched()
    status.expect_partial()  # saved values not asked for (a phase change's old optimizer)
    return json.loads((Path(ckpt_dir) / "state.json").read_text())
