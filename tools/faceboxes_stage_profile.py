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
import statistics
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


def _prefix(model, end, fast, quant):
    from mobilekit.detection.postprocess import (fused_decoding_pays, inference_model,
                                                 nms_input_model)
    from mobilekit.keras import keras

    if end is None:
        return model
    if end == "decode":  # the export's fast forms decode inside the heads where that pays
        return inference_model(model, fused=fast and fused_decoding_pays(quant))
    if end == "nms":
        return nms_input_model(model, fused=fast)
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
    parser.add_argument("--forms", default="both", choices=("model", "fast", "both"),
                        help="graph forms: the model's own (convert fast_forms=False), the "
                             "export's default fast forms, or both in one round-robin run")
    parser.add_argument("--stat", default="median", choices=("median", "min"),
                        help="per-file statistic of the round-robin invokes (min: the least "
                             "disturbed run, for a host shared with other work)")
    parser.add_argument("--warm-invokes", type=int, default=0,
                        help="untimed invokes of a file before each timed one (1: each file "
                             "runs with its own data in cache, as a model running alone on a "
                             "device; 0: after the other files' invokes, as before)")
    parser.add_argument("--compare-tails", action="store_true",
                        help="instead of the stages: the network alone and with each decoding "
                             "form (DecodeDetections, fused heads), round-robin, the tails as "
                             "paired per-round ratios")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args(argv)

    from mobilekit.bench.host import interleaved_times
    from mobilekit.bench.hostinfo import describe
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
    what = "decoding tails" if args.compare_tails else "stages"
    lines = [f"FaceBoxes {what} at {args.input_size} (WxH), {args.model}; host, 1 thread, "
             f"XNNPACK, {args.rounds} round-robin rounds, {args.warm_invokes} untimed "
             f"invoke(s) before each. Host: {describe()}.", ""]
    if args.compare_tails:
        return _emit(lines + _compare_tails(model, images, args), args.out)
    lines[0] += (f" Per file the {args.stat} of the rounds; MobileNet v1 1.0 at 224 "
                 "alongside.")
    mobilenet = create_model("mobilenet_v1", resolution=224)
    mn_images = dataset_samples("random", (224, 224), 16)
    reestimate_batchnorm(mobilenet, mn_images)
    anchors = generate_anchors(hw, map_sizes=map_sizes(model))
    forms = (False, True) if args.forms == "both" else (args.forms == "fast",)
    with tempfile.TemporaryDirectory() as folder:
        for quant in args.quant.split(","):
            paths, macs = [], []
            for fast in forms:
                for name, end in STAGES:
                    prefix = _prefix(model, end, fast, quant)
                    data = convert(prefix, quant, images if quant == "int8" else None,
                                   allow_float_ops=end == "decode", fast_forms=fast)
                    if end == "nms":
                        data = append_postprocess(data, anchors,
                                                  postprocess_options(0.05, 0.3, 100))
                    path = os.path.join(folder, f"{quant}_{len(paths)}.tflite")
                    Path(path).write_bytes(data)
                    paths.append(path)
                    if not fast or len(forms) == 1:
                        macs.append(_macs(model if end in ("decode", "nms") else prefix))
            mn = os.path.join(folder, f"{quant}_mobilenet.tflite")
            Path(mn).write_bytes(convert(mobilenet, quant, mn_images if quant == "int8" else None))
            stat = statistics.median if args.stat == "median" else min
            samples = interleaved_times(paths + [mn], rounds=args.rounds,
                                        warm_invokes=args.warm_invokes)
            times = [stat(t) for t in samples]
            n = len(STAGES)
            per_form = [times[i * n:(i + 1) * n] for i in range(len(forms))]
            lines += _table(quant, per_form, [FORM_NAMES[f] for f in forms], macs, times[-1],
                            _macs(mobilenet))
            lines += _paired_tails([samples[i * n:(i + 1) * n] for i in range(len(forms))],
                                   [FORM_NAMES[f] for f in forms])
    _emit(lines, args.out)


def _emit(lines, out):
    text = "\n".join(lines)
    print(text)
    if out:
        from mobilekit.io import write_atomic

        write_atomic(out, text + "\n")


FORM_NAMES = {False: "model's forms", True: "fast forms (export default)"}


def _table(quant, per_form, form_names, macs, mn_us, mn_macs):
    """Markdown rows: per stage, MACs and for each form its ms, share and GMAC/s ratio."""
    mn_rate = mn_macs / mn_us / 1e3
    network = len(STAGES) - 3  # the prefix that ends with the heads
    head = "| stage | MACs (M) |" + "".join(f" ms, {f} | share | vs MobileNet v1 |"
                                            for f in form_names)
    rows = [f"### {quant}", "", head, "|---|---:|" + "---:|---:|---:|" * len(form_names)]
    stage_us = [_stage_times(times) for times in per_form]
    prev_macs = 0
    for i, (name, end) in enumerate(STAGES):
        m = 0 if end in ("decode", "nms") else macs[i] - prev_macs
        prev_macs = macs[i] if m else prev_macs
        cells = []
        for times, us in zip(per_form, stage_us):
            rate = m / us[i] / 1e3 if us[i] > 0 and m else None
            cells.append(f" {us[i] / 1e3:.3f} | {100 * us[i] / times[network]:.1f} % | "
                         f"{'-' if rate is None else f'{rate / mn_rate:.2f}x'} |")
        rows.append(f"| {name} | {m / 1e6:.1f} |" + "".join(cells))
    cells = [f" {t[network] / 1e3:.3f} | 100 % | "
             f"**{macs[network] / t[network] / 1e3 / mn_rate:.2f}x** |" for t in per_form]
    rates = ", ".join(f"{macs[network] / t[network] / 1e3:.1f}" for t in per_form)
    rows.append(f"| **network** ({rates} GMAC/s) | {macs[network] / 1e6:.1f} |" + "".join(cells))
    for label, index in (("whole file (network + decoding tail: the default export)",
                          STAGES.index(("decoding tail", "decode"))),
                         ("whole file with --nms", len(STAGES) - 1)):
        cells = [f" {t[index] / 1e3:.3f} | | **{macs[network] / t[index] / 1e3 / mn_rate:.2f}x** |"
                 for t in per_form]
        rates = ", ".join(f"{macs[network] / t[index] / 1e3:.1f}" for t in per_form)
        rows.append(f"| **{label}** ({rates} GMAC/s) | {macs[network] / 1e6:.1f} |"
                    + "".join(cells))
    rows += ["", f"MobileNet v1 1.0 @224: {mn_macs / 1e6:.1f} MMACs, {mn_us / 1e3:.3f} ms, "
                 f"{mn_rate:.1f} GMAC/s (the 1.00x).", ""]
    return rows


def _compare_tails(model, images, args):
    """Markdown rows: per quant, the decoding tail of each form as a paired per-round ratio
    to the network (the export's fast network forms in all three files)."""
    from mobilekit.bench.host import interleaved_times
    from mobilekit.bench.stats import ratio_ci
    from mobilekit.detection.postprocess import inference_model
    from mobilekit.export.convert import convert

    rows = ["| quant | network ms | DecodeDetections tail | fused heads tail |",
            "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as folder:
        for quant in args.quant.split(","):
            paths = []
            for i, form in enumerate((model, inference_model(model, fused=False),
                                      inference_model(model, fused=True))):
                path = Path(folder, f"{quant}_{i}.tflite")
                path.write_bytes(convert(form, quant, images if quant == "int8" else None,
                                         allow_float_ops=i > 0))
                paths.append(path)
            net, *tails = interleaved_times(paths, rounds=args.rounds,
                                            warm_invokes=args.warm_invokes)
            cells = []
            for samples in tails:
                ratio, low, high = ratio_ci(samples, net, paired=True)
                cells.append(f"{100 * (ratio - 1):+.1f} % [{100 * (low - 1):+.1f}, "
                             f"{100 * (high - 1):+.1f}]")
            rows.append(f"| {quant} | {statistics.median(net) / 1e3:.3f} | "
                        + " | ".join(cells) + " |")
    return rows + ["", f"{args.rounds} rounds; tail = median of per-round (file / network) "
                       "- 1, 95 % bootstrap interval.", ""]


def _paired_tails(per_form, form_names):
    """Lines: each form's decoding tail and pre-NMS + NMS part as a share of the network,
    from the per-round ratios (whole file / network, timed in the same round), with their
    95 % bootstrap interval: steadier than a difference of two files' statistics."""
    from mobilekit.bench.stats import ratio_ci

    network = len(STAGES) - 3
    lines = []
    for name, samples in zip(form_names, per_form):
        parts = []
        for label, end in (("decoding tail", "decode"), ("pre-NMS part + NMS op", "nms")):
            index = next(i for i, (_, e) in enumerate(STAGES) if e == end)
            ratio, low, high = ratio_ci(samples[index], samples[network], paired=True)
            parts.append(f"{label} {100 * (ratio - 1):+.1f} % [{100 * (low - 1):+.1f}, "
                         f"{100 * (high - 1):+.1f}]")
        lines.append(f"Paired per round, {name}: " + "; ".join(parts) + " of the network.")
    return lines + [""]


def _stage_times(times):
    """Each stage's own time: the difference between consecutive prefixes; the tail and NMS
    rows are their file's time beyond the network's."""
    network = len(STAGES) - 3
    out, prev = [], 0.0
    for i, (_, end) in enumerate(STAGES):
        if end in ("decode", "nms"):
            out.append(times[i] - times[network])
        else:
            out.append(times[i] - prev)
            prev = times[i]
    return out


if __name__ == "__main__":
    main()
