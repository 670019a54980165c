"""Fine-tuning from a weights file vs training from scratch, same target data, epochs and
settings (issue 20's benchmark). Offline, so the pretrained source is a mobilekit run:

  source  `mobilekit train --model M --alpha A --data SOURCE_DATA --resolution R
          --epochs SOURCE_EPOCHS` (default: MobileNet v1 0.25, 12 epochs on the embedded
          synthetic set's first 5 classes -- disk, square, triangle, ring, cross -- seed 0,
          1,500 training images, drawn at the target's 128 px: another task, so the target
          gets a new 10-class head; `--source-data synthetic` gives a source that knows all
          10 classes in its own order, and the head is reordered by name)
  target  a folder dataset (train/ and val/ class sub-folders of PNGs) drawn from the same
          generator with another seed (default 7): 100 training and 50 validation images
          per class, so 1,000 / 500 of 10 classes -- other images, a harsher crop
          augmentation (folders crop 25-100 % of the area, the synthetic set 75-100 %)
  scratch `mobilekit train --model M --alpha A --data TARGET --resolution R --epochs E`
  tuned   the same with `--weights SOURCE/model.keras --freeze-epochs F` (the fine-tune
          phase at --fine-tune-lr, default the trainer's: lr / 10)

Writes OUT/finetune_vs_scratch.json (per-epoch val top-1 / top-5 / lr of both runs, epoch 0
being the model before any step), OUT/finetune_vs_scratch.png (the curves side by side)
and prints a markdown table.

    python tools/finetune_vs_scratch.py --out runs/finetune_vs_scratch
"""
import argparse
import csv
import time
from pathlib import Path

from mobilekit.bench.hostinfo import describe


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/finetune_vs_scratch")
    parser.add_argument("--model", default="mobilenet_v1")
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=5, help="target epochs, both runs")
    parser.add_argument("--freeze-epochs", type=int, default=1)
    parser.add_argument("--fine-tune-lr", type=float, default=None,
                        help="default: the trainer's (lr / 10)")
    parser.add_argument("--source", default=None,
                        help="an existing source run folder (skips training the source)")
    parser.add_argument("--source-data", default="synthetic:classes=5")
    parser.add_argument("--source-resolution", type=int, default=None,
                        help="default: --resolution")
    parser.add_argument("--source-epochs", type=int, default=12)
    parser.add_argument("--target-seed", type=int, default=7)
    parser.add_argument("--target-train", type=int, default=100, help="images per class")
    parser.add_argument("--target-val", type=int, default=50, help="images per class")
    parser.add_argument("--seed", type=int, default=0, help="training seed, both runs")
    args = parser.parse_args()

    from mobilekit.io import write_json_atomic
    from mobilekit.train import trainer

    out = Path(args.out)
    source = Path(args.source) if args.source else out / "source"
    timings = {}
    if not (source / "model.keras").is_file():
        start = time.perf_counter()
        config = trainer.resolve_config(
            args.model, alpha=args.alpha, data=args.source_data, epochs=args.source_epochs,
            resolution=args.source_resolution or args.resolution, seed=args.seed)
        trainer.train(config, source, verbose=2)
        timings["source_s"] = round(time.perf_counter() - start, 1)
    target = out / f"photos-{args.resolution}px-seed{args.target_seed}"
    if not (target / "val").is_dir():
        write_folder(target, args.resolution, args.target_seed, args.target_train,
                     args.target_val)
    common = dict(alpha=args.alpha, data=str(target), resolution=args.resolution,
                  epochs=args.epochs, seed=args.seed)
    runs = {"scratch": {}, "fine-tune": {"weights": str(source / "model.keras"),
                                         "freeze_epochs": args.freeze_epochs,
                                         "fine_tune_lr": args.fine_tune_lr}}
    curves = {}
    for name, extra in runs.items():
        run_dir = out / name
        config = trainer.resolve_config(args.model, **common, **extra)
        start = time.perf_counter()
        trainer.train(config, run_dir, verbose=2)
        timings[f"{name}_s"] = round(time.perf_counter() - start, 1)
        curves[name] = [{"epoch": 0, **start_scores(run_dir, args.seed)}] + history(run_dir)
    source_config = _json(source / "config.json")
    result = {
        "source": {"run": str(source), "data": source_config["data"],
                   "resolution": source_config["resolution"],
                   "epochs": source_config["epochs"],
                   "train_examples": source_config["train_examples"],
                   "class_names": source_config["class_names"],
                   "val_top1": _json(source / "metrics.json")["val_accuracy"]},
        "target": {"data": str(target), "seed": args.target_seed,
                   "train_examples": args.target_train * 10, "val_examples": args.target_val * 10,
                   "resolution": args.resolution},
        "settings": {"model": args.model, "alpha": args.alpha, "epochs": args.epochs,
                     "freeze_epochs": args.freeze_epochs, "seed": args.seed,
                     "scratch": _settings(out / "scratch"),
                     "fine-tune": _settings(out / "fine-tune")},
        "curves": curves, "seconds": timings, "machine": describe(),
    }
    write_json_atomic(out / "finetune_vs_scratch.json", result)
    plot(curves, args.freeze_epochs, out / "finetune_vs_scratch.png", result)
    print(table(curves, args.freeze_epochs))
    print(f"\nsource: {args.model} alpha {args.alpha:g}, {source_config['data']} at "
          f"{source_config['resolution']} px, {source_config['epochs']} epochs, val top-1 "
          f"{100 * result['source']['val_top1']:.1f} %; {describe()}; {timings}")


def write_folder(root, resolution, seed, per_train, per_val):
    """train/ and val/ class sub-folders of PNGs drawn by the synthetic generator."""
    from PIL import Image

    from mobilekit.data.synthetic import CLASS_NAMES, generate

    for split, per in (("train", per_train), ("val", per_val)):
        images, labels = generate(split, resolution, per_class=per, seed=seed)
        for i, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{i:05d}.png")


def start_scores(run_dir, seed):
    """Val top-1 / top-5 of the model the run started from (before any step): rebuilt as
    the trainer builds it (same seed, weights, head matching, normalisation)."""
    from mobilekit.data import load_dataset
    from mobilekit.keras import keras
    from mobilekit.train import trainer

    config = _json(run_dir / "config.json")
    keras.utils.set_random_seed(seed)
    val, _ = load_dataset(config["data"], "val", config["resolution"], 64, training=False,
                          mean=config["mean"], std=config["std"])
    model = trainer._build(config, None, config["phases"][0])[0]
    top1 = top5 = n = 0
    for images, labels in val:
        logits = model(images, training=False).numpy()
        ranked = (-logits).argsort(axis=1)
        labels = labels.numpy()
        top1 += int((ranked[:, 0] == labels).sum())
        top5 += int((ranked[:, :5] == labels[:, None]).any(axis=1).sum())
        n += len(labels)
    return {"val_top1": top1 / n, "val_top5": top5 / n, "lr": None}


def history(run_dir):
    with open(run_dir / "history.csv") as f:
        return [{"epoch": int(r["epoch"]), "val_top1": float(r["val_accuracy"]),
                 "val_top5": float(r["val_top5"]), "lr": float(r["lr"]),
                 "train_top1": float(r["accuracy"])} for r in csv.DictReader(f)]


def _settings(run_dir):
    config = _json(run_dir / "config.json")
    keys = ("optimizer", "lr", "fine_tune_lr", "schedule", "batch_size", "label_smoothing",
            "weight_decay", "precise_bn", "mean", "std", "phases")
    return {k: config.get(k) for k in keys}


def _json(path):
    import json

    return json.loads(Path(path).read_text())


def table(curves, freeze):
    lines = ["| epoch | scratch top-1 | scratch top-5 | fine-tune top-1 | fine-tune top-5 | "
             "fine-tune phase |", "|---|---|---|---|---|---|"]
    for a, b in zip(curves["scratch"], curves["fine-tune"]):
        phase = ("start" if b["epoch"] == 0 else "head (frozen backbone)"
                 if b["epoch"] <= freeze else "whole network")
        lines.append(f"| {a['epoch']} | {100 * a['val_top1']:.1f} | {100 * a['val_top5']:.1f} | "
                     f"{100 * b['val_top1']:.1f} | {100 * b['val_top5']:.1f} | {phase} |")
    return "\n".join(lines)


def plot(curves, freeze, path, result):
    from mobilekit.report.plots import _save, require_matplotlib

    plt = require_matplotlib()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in zip(axes, ("val_top1", "val_top5"), ("top-1", "top-5")):
        for name, style in (("scratch", "o-"), ("fine-tune", "s-")):
            ax.plot([r["epoch"] for r in curves[name]],
                    [100 * r[key] for r in curves[name]], style, label=name)
        ax.axhline(10 if key == "val_top1" else 50, color="grey", ls=":", label="chance")
        if freeze:
            ax.axvline(freeze, color="grey", ls="--", lw=0.8, label="end of the head phase")
        ax.set_xlabel("epoch (0: before any step)")
        ax.set_ylabel(f"validation {label} (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    source = result["source"]
    fig.suptitle(f"{result['settings']['model']} {result['settings']['alpha']:g}, "
                 f"{result['target']['train_examples']} images at "
                 f"{result['target']['resolution']} px; source: {source['data']} at "
                 f"{source['resolution']} px", fontsize=9)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)


if __name__ == "__main__":
    main()
