"""Paired float-vs-.tflite top-1 on the same images, with the standard error of the drop.

On 500 validation images one point is 5 images, and the drop between a float model and its
int8 file moves by a point or more with the calibration subset. This scores both on the
same (optionally larger) validation set image by image: the drop, the images only one of
them gets right, and the standard error of the drop from those discordant pairs
(sqrt(b + c) / n, McNemar).

Example:
  python tools/paired_int8_eval.py runs/train/shiftnet runs/train/shiftnet/shiftnet_int8.tflite \\
      --data synthetic:val=500          # 5,000 images from the default generator
"""
import argparse
import json
from pathlib import Path

import numpy as np


def paired_top1(run_dir, tflite, spec):
    from mobilekit.data import load_dataset
    from mobilekit.train.evaluate import keras_backend, paired_drop, resolve_model, tflite_backend

    keras_file, config = resolve_model(run_dir)
    if config is None:
        raise SystemExit(f"{run_dir}: need a run directory (its config gives the normalisation)")
    float_predict = keras_backend(keras_file)[0]
    int8_predict = tflite_backend(Path(tflite))[0]
    ds, _ = load_dataset(spec, "val", config["resolution"], 64, training=False,
                         mean=config["mean"], std=config["std"])
    hits_float, hits_int8 = [], []
    for images, labels in ds:
        batch, labels = images.numpy(), labels.numpy()
        hits_float.append(float_predict(batch).argmax(-1) == labels)
        hits_int8.append(int8_predict(batch).argmax(-1) == labels)
    return {"data": spec, **paired_drop(np.concatenate(hits_float), np.concatenate(hits_int8))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="training run directory (float model.keras + config)")
    parser.add_argument("tflite", help=".tflite exported from it")
    parser.add_argument("--data", default="synthetic", help="validation data spec")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    row = paired_top1(args.run_dir, args.tflite, args.data)
    if args.json:
        print(json.dumps(row, indent=2))
    else:
        print(f"{row['data']}: {row['images']} images, float {100 * row['float_top1']:.2f} %, "
              f"tflite {100 * row['int8_top1']:.2f} %, drop {row['drop_points']:+.2f} "
              f"+/- {row['drop_se_points']:.2f} points ({row['float_only']} images only float "
              f"gets right, {row['int8_only']} only the tflite)")


if __name__ == "__main__":
    main()
