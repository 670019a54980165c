"""Where FaceBoxes spends its time on the host: per-stage latency, MACs and GMAC/s.

The in-process LiteRT runner has no per-operator profiler, so each stage is timed as the
difference between two prefixes of the network (the model cut after the stage), every
prefix converted like the export (same quantization) and all timed round-robin in one run
(mobilekit.bench.host.interleaved_medians, 1 thread, XNNPACK), beside MobileNet v1 1.0
at 224 for the GMAC/s reference.

    python tools/faceboxes_stage_profile.py runs/train/faceboxes --input-size 640x480 \\
        --quant fp32,int8 --out docs/faceboxes_stages.md
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Stage name -> the layer the prefix ends at (None: the whole network [loc, conf]).
STAGES = [
    ("conv1 7x7/4 + C.ReLU", "conv1_relu"),
    ("pool1 3x3/2", "pool1"),
    ("conv2 5x5/2 + C.ReLU", "conv2_relu"),
    ("pool2 3x3/2", "pool2"),
    ("inception1", "inception1_concat"),
    ("inception2", "inception2_concat"),
    ("inception3", "inception3_concat"),
    ("conv3_1/3_2 + conv4_1/4_2", "conv4_2_relu"),
    ("heads (3x3 loc/conf x3) + reshapes", None),
    ("decoding tail", "decode"),
    ("NMS (TFLite_Detection_PostProcess)", "nms"),
]


def _prefix(model, end):
    from mobilekit.detection.postprocess import inference_model, nms_input_model
    from mobilekit.keras import keras

    if end is None:
        return model
    if end == "decode":
        return inference_model(model)
    if end == "nms":
        return nms_input_model(model)
    return keras.Model(model.inputs, model.get_layer(end).output)


def _macs(model):
    from mobilekit.profile import profile_model

    return profile_model(model)["macs"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="run directory, .keras file or 'faceboxes' (random init)")
    parser.add_argument("--input-size", default="640x480", help="WIDTHxHEIGHT")
    parser.add_argument("--quant", default="fp32,int8")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--calib-data", default=None,
                        help="int8 calibration images (default: the run's data, else random)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)

    import numpy as np

    from mobilekit.bench.host import interleaved_medians
    from mobilekit.cli.common import parse_input_size
    from mobilekit.detection.anchors import generate_anchors
    from mobilekit.detection.model import map_sizes, with_input_size
    from mobilekit.export.convert import convert
    from mobilekit.export.nms import append_postprocess, postprocess_options
    from mobilekit.export.pipeline import (dataset_samples, detection_samples,
                                           reestimate_batchnorm, resolve_source)
    from mobilekit.zoo.registry import create_model

    hw = parse_input_size(args.input_size)
    model, config, _, keras_path = resolve_source(args.model, {"input_shape": (*hw, 3)})
    model = with_input_size(model, hw)
    spec = args.calib_data or (config or {}).get("data")
    images = (detection_samples(spec, hw, 32) if spec else
              dataset_samples("random", hw, 32))
    if keras_path is None:
        reestimate_batchnorm(model, images[:16])
    mobilenet = create_model("mobilenet_v1", resolution=224)
    mn_images = dataset_samples("random", (224, 224), 16)
    reestimate_batchnorm(mobilenet, mn_images)
    anchors = generate_anchors(hw, map_sizes=map_sizes(model))
    lines = [f"FaceBoxes stages at {args.input_size} (WxH), {args.model}; host, 1 thread, "
             f"XNNPACK, {args.rounds} round-robin rounds; MobileNet v1 1.0 at 224 alongside.",
             ""]
    with tempfile.TemporaryDirectory() as folder:
        for quant in args.quant.split(","):
            paths, macs = [], []
            for name, end in STAGES:
                prefix = _prefix(model, end)
                data = convert(prefix, quant, images if quant == "int8" else None,
                               allow_float_ops=end == "decode")
                if end == "nms":
                    data = append_postprocess(data, anchors, postprocess_options(0.05, 0.3, 100))
                path = os.path.join(folder, f"{quant}_{len(paths)}.tflite")
                Path(path).write_bytes(data)
                paths.append(path)
                macs.append(_macs(model if end in ("decode", "nms") else prefix))
            mn = os.path.join(folder, f"{quant}_mobilenet.tflite")
            Path(mn).write_bytes(convert(mobilenet, quant, mn_images if quant == "int8" else None))
            times = interleaved_medians(paths + [mn], rounds=args.rounds)
            lines += _table(quant, times, macs, _macs(mobilenet))
    text = "\n".join(lines)
    print(text)
    if args.out:
        from mobilekit.io import write_atomic

        write_atomic(args.out, text + "\n")


def _table(quant, times, macs, mn_macs):
    mn_us = times[-1]
    mn_rate = mn_macs / mn_us / 1e3
    rows = [f"### {quant}", "",
            "| stage | MACs (M) | ms | share of network | GMAC/s | vs MobileNet v1 |",
            "|---|---:|---:|---:|---:|---:|"]
    network_us = times[len(STAGES) - 3]  # the prefix that ends with the heads
    prev_us, prev_macs = 0.0, 0
    for i, (name, end) in enumerate(STAGES):
        if end in ("decode", "nms"):
            us, m = times[i] - network_us, 0
        else:
            us, m = times[i] - prev_us, macs[i] - prev_macs
            prev_us, prev_macs = times[i], macs[i]
        rate = m / us / 1e3 if us > 0 and m else None
        rows.append(f"| {name} | {m / 1e6:.1f} | {us / 1e3:.3f} | {100 * us / network_us:.1f} % | "
                    f"{'-' if rate is None else f'{rate:.1f}'} | "
                    f"{'-' if rate is None else f'{rate / mn_rate:.2f}x'} |")
    net_rate = macs[len(STAGES) - 3] / network_us / 1e3
    rows += [f"| **network** | {macs[len(STAGES) - 3] / 1e6:.1f} | {network_us / 1e3:.3f} | "
             f"100 % | {net_rate:.1f} | {net_rate / mn_rate:.2f}x |",
             f"| MobileNet v1 1.0 @224 | {mn_macs / 1e6:.1f} | {mn_us / 1e3:.3f} | | "
             f"{mn_rate:.1f} | 1.00x |", ""]
    return rows


if __name__ == "__main__":
    main()
