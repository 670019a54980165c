"""int8 vs float top-1 for zoo classifiers on the default (synthetic) dataset.

For each model: `mobilekit train` on the default data (short schedule), full-int8 PTQ export
calibrated on the run's training images (eval transform), then top-1 of the Keras model and
of the int8 .tflite on the same validation images (mobilekit.train.evaluate, one code path
for both). With --qat-fallback, a model whose PTQ loses more than --max-drop points is
fine-tuned with QAT from its float run (`train --qat --from RUN`) and its QAT int8 file is
scored against the same float reference; with --qat-control also against the float run
fine-tuned the same way without fake-quant (QAT's extra epochs also train).

With --val-data SPEC the float model and its int8 files are scored image by image on that
validation data instead of the run's own split (`synthetic:val=500`: 5,000 images, where
the 500-image split's standard error of a drop is about a point), and each drop gets its
standard error (tools/paired_int8_eval.py).

Resumable: a model whose OUT/<model>/result.json exists is skipped (and a finished float
run in OUT/<model>/float is not trained again).
Usage:
  python tools/bench_int8_accuracy.py --out int8_acc --models mobilenet_v2,ghostnet --epochs 10
  python tools/bench_int8_accuracy.py --out int8_acc --val-data synthetic:val=500
Writes OUT/int8_accuracy.md and .json.
"""
import argparse
import json
import time
from pathlib import Path

from paired_int8_eval import paired_top1

import mobilekit
from mobilekit.report.writers import write_markdown_table

# Reference networks: minutes per epoch each on a 2-core host even at 64 px.
HEAVY = {"vgg16", "resnet50", "xception", "regnet"}


def classifier_names(only=None):
    names = [n for n in mobilekit.list_models(task="classification") if n not in HEAVY]
    if only:
        unknown = sorted(set(only) - set(mobilekit.list_models(task="classification")))
        if unknown:
            raise SystemExit(f"unknown classifier(s): {', '.join(unknown)}")
        names = list(only)
    return names


# QAT fine-tunes a trained network: a float-training learning rate would undo it
# (SGD 0.1 -> 0.005, Adam 1e-3 -> 5e-5).
QAT_LR_FACTOR = 0.05


def train_run(model, run_dir, epochs, qat_from=None, qat_range_samples=None, qat=True):
    """Train a float run, or (qat_from given) fine-tune one: with QAT, or with qat=False the
    control, the same fine-tune without fake-quant."""
    from mobilekit.train import trainer

    settings = {"epochs": epochs}
    if qat_from is not None:
        float_config = json.loads((qat_from / "config.json").read_text())
        settings.update(qat=qat, init_from=str(qat_from),
                        lr=QAT_LR_FACTOR * float_config["lr"])
        if qat and qat_range_samples is not None:
            settings["qat_range_samples"] = qat_range_samples
    config = trainer.resolve_config(model, **settings)
    if not (run_dir / "metrics.json").is_file():  # written when a run finishes
        resume = (run_dir / "config.json").is_file()
        trainer.train(config, run_dir, resume=resume)
    return config


def int8_top1(run_dir, float_run, val_data=None):
    """(paired_top1 row of the int8 export of run_dir vs float_run's Keras model, report)."""
    from mobilekit.export.pipeline import export

    tflite, report = export(str(run_dir), "int8")
    spec = val_data or json.loads((Path(float_run) / "config.json").read_text())["data"]
    return paired_top1(str(float_run), str(tflite), spec), report


def measure(model, out, epochs, max_drop, qat_fallback, qat_epochs, qat_range_samples,
            qat_control=False, val_data=None):
    model_dir = out / model
    result_file = model_dir / "result.json"
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        if qat_control and result["qat_int8_top1"] is not None \
                and result.get("control_float_top1") is None:
            result.update(control(model, model_dir, result["qat_epochs"], result["float_top1"],
                                  result.get("val_data")))
            result_file.write_text(json.dumps(result, indent=2))
        return result
    start = time.perf_counter()
    float_run = model_dir / "float"
    config = train_run(model, float_run, epochs)
    ptq, report = int8_top1(float_run, float_run, val_data)
    result = {"model": model, "resolution": config["resolution"], "epochs": epochs,
              "optimizer": config["optimizer"], "lr": config["lr"], "val_data": ptq["data"],
              "val_images": ptq["images"], "float_top1": ptq["float_top1"],
              "ptq_int8_top1": ptq["int8_top1"], "ptq_drop_points": ptq["drop_points"],
              "ptq_drop_se_points": ptq["drop_se_points"],
              "int8_float_ops": report["float_ops"],
              "dense_quant": report.get("dense_quant"), "calibration": report["calibration"],
              "qat_int8_top1": None,
              "qat_drop_points": None}
    if qat_fallback and result["ptq_drop_points"] > max_drop:
        qat_run = model_dir / "qat"
        qat_config = train_run(model, qat_run, qat_epochs, qat_from=float_run,
                               qat_range_samples=qat_range_samples)
        qat, _ = int8_top1(qat_run, float_run, val_data)
        result.update(qat_epochs=qat_epochs, qat_range_samples=qat_config["qat_range_samples"],
                      qat_int8_top1=qat["int8_top1"], qat_drop_points=qat["drop_points"],
                      qat_drop_se_points=qat["drop_se_points"])
        if qat_control:
            result.update(control(model, model_dir, qat_epochs, ptq["float_top1"],
                                  ptq["data"]))
    result["seconds"] = round(time.perf_counter() - start, 1)
    model_dir.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def control(model, model_dir, epochs, float_top1, val_data=None):
    """QAT also trains: fine-tune the float run the same way without fake-quant, so that the
    QAT int8 file is also compared with an equally trained float model."""
    from mobilekit.train.evaluate import evaluate

    run = model_dir / "control"
    train_run(model, run, epochs, qat_from=model_dir / "float", qat=False)
    top1 = evaluate(str(run / "model.keras"), **({"spec": val_data} if val_data else {}))["top1"]
    return {"control_float_top1": top1, "control_gain_points": 100 * (top1 - float_top1)}


def qat_drop(row):
    """QAT int8 vs the float run, or vs the control when it is better trained."""
    if row["qat_int8_top1"] is None:
        return None
    reference = max(row["float_top1"], row.get("control_float_top1") or 0.0)
    return 100 * (reference - row["qat_int8_top1"])


def best_drop(row):
    drops = [d for d in (row["ptq_drop_points"], qat_drop(row)) if d is not None]
    # Rounded: 5 of 500 images is 1.0 point, not the 1.0000000000000009 that fractions give.
    return round(min(drops), 6)


def _recipe(row):
    # Rows from before the column was recorded ran the synthetic default then: SGD.
    return f"{row.get('optimizer', 'sgd')} {row.get('lr', 0.1):g}"


def write_report(rows, out, max_drop):
    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    def pts(value, se=None):
        if value is None:
            return "-"
        return f"{value:+.1f}" if se is None else f"{value:+.2f} ± {se:.2f}"

    within = sum(best_drop(r) <= max_drop for r in rows)
    write_markdown_table(
        out / "int8_accuracy.md",
        ["model", "res", "epochs", "optimizer", "val images", "float top-1 %", "PTQ int8 %",
         "PTQ drop", "QAT epochs", "QAT int8 %", "control float %", "QAT drop"],
        [[r["model"], r["resolution"], r["epochs"], _recipe(r), r["val_images"],
          pct(r["float_top1"]),
          pct(r["ptq_int8_top1"]), pts(r["ptq_drop_points"], r.get("ptq_drop_se_points")),
          "-" if r["qat_int8_top1"] is None else r["qat_epochs"],
          pct(r["qat_int8_top1"]), pct(r.get("control_float_top1")),
          pts(qat_drop(r))] for r in rows],
        title="int8 vs float top-1 on the default (synthetic) dataset",
        notes=[f"{within} of {len(rows)} models within {max_drop} point(s) of float in int8 "
               "(PTQ, or QAT where PTQ was not)",
               "drop = float top-1 - int8 top-1, in points; same validation images for both",
               "control = the float run fine-tuned like QAT (same epochs and lr) without "
               "fake-quant; QAT drop is taken from the better of float and control"])
    (out / "int8_accuracy.json").write_text(json.dumps(rows, indent=2))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("int8_accuracy"))
    parser.add_argument("--models", default=None, help="comma-separated classifiers")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-drop", type=float, default=1.0, help="points")
    parser.add_argument("--qat-fallback", action="store_true")
    parser.add_argument("--qat-epochs", type=int, default=3)
    parser.add_argument("--qat-control", action="store_true",
                        help="also fine-tune each QAT model's float run without fake-quant "
                             "and compare QAT int8 with it (adds it to finished rows too)")
    parser.add_argument("--val-data", default=None,
                        help="validation data SPEC for float and int8, scored image by image "
                             "(default: the run's own split); e.g. synthetic:val=500")
    parser.add_argument("--qat-range-samples", type=int, default=None,
                        help="images that start QAT ranges (0: tfmot's [-6, 6]; "
                             "default: the trainer's)")
    args = parser.parse_args()
    rows = []
    for model in classifier_names(args.models.split(",") if args.models else None):
        row = measure(model, args.out, args.epochs, args.max_drop, args.qat_fallback,
                      args.qat_epochs, args.qat_range_samples, args.qat_control,
                      args.val_data)
        rows.append(row)
        qat = qat_drop(row)
        print(f"{model:22s} float {100 * row['float_top1']:5.1f}  PTQ int8 "
              f"{100 * row['ptq_int8_top1']:5.1f} ({row['ptq_drop_points']:+.1f})  QAT drop "
              f"{'-' if qat is None else f'{qat:+.1f}'}", flush=True)
        write_report(rows, args.out, args.max_drop)


if __name__ == "__main__":
    main()
