"""The quantization doctor: find the layers int8 hurts, measure each remedy, keep the best file.

`diagnose(source, data, ...)` scores a float classifier and its default int8 export
(mobilekit.export.convert: average calibration, per-tensor Dense) image by image on the
same validation images (drop with its McNemar standard error, mobilekit.train.evaluate
.paired_drop), names the layers where the error appears (mobilekit.export.layer_errors),
then tries remedies in the order the diagnosis suggests, stopping at the first whose drop
is within `target_drop` points:

  the other calibration methods (average / mse / minmax), bias correction, per-channel
  Dense, the k worst layers in float (a mixed file: the layer and the ops reading its
  output run in float, so its output is never rounded), the whole network in int16x8,
  QAT for a few epochs on the train split, and the calibration-size curve.

The file diagnosed can also be the naive export (baseline="naive": the plain converter,
its min/max ranges and fused HARD_SWISH) or a given integer .tflite (tflite=PATH, compared
with the float model tensor by tensor by name); mobilekit's own export is then the first
remedy.

Every measured file gets its drop +/- SE, its size and its host latency (XNNPACK, one
thread, mobilekit.bench.host.interleaved_medians: all files timed round-robin, so a load
change on a shared host hits them alike). The result dict is what `write_report` puts in
OUT/quant_doctor.json; the CLI is `mobilekit quant-doctor`.

FaceBoxes (a detection run or .keras) is scored by AP50 of the boxes the file decodes itself
(the box-decoding tail is part of the int8 graph and of the per-layer table), with a paired
bootstrap SE over the images; QAT is left out of its remedies (`mobilekit train --qat`).

Bad input raises ValueError before anything is written: no data, random data, a model with
several outputs that is not the detector, a model without a quantizable layer, images of
another shape than the model's input, a float model near chance level (a drop on such a
model says nothing).
"""
import math
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_TARGET_DROP = 1.0
DEFAULT_EVAL_SAMPLES = 500
CURVE_SIZES = (8, 32, 128, 512)
# Images the per-layer comparison runs on (every quantized tensor of each is kept).
LAYER_IMAGES = 32
FLOAT_LAYERS = (1, 2, 3)
# QAT remedy: a short fine-tune at a small learning rate from the float weights.
QAT_EPOCHS = 2
QAT_LR = 1e-4
QAT_RANGE_SAMPLES = 256
BENCH_ROUNDS = 30
BASELINES = ("mobilekit", "naive")
NAIVE_LABEL = "naive int8 (plain converter: min/max ranges, fused HARD_SWISH, no delegable forms)"
MOBILEKIT_LABEL = "mobilekit's int8 export (delegable forms, average calibration)"
# Why no "k worst layers in int16x8" remedy: the converter has no such switch.
INT16X8_NOTE = ("int16x8 is measured for the whole network only: the TFLite converter cannot "
                "keep chosen layers in int16x8 (its quantizer takes one activation type for "
                "the model; selective quantization, `denylisted_nodes`, keeps layers in "
                "float), so the k worst layers are offered in float instead.")
REMEDIES = ("average", "mse", "minmax", "bias_correction", "per_channel_dense", "float_1",
            "float_2", "float_3", "int16x8", "qat")
QUANTIZABLE = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense")
REPORT_JSON, REPORT_MD = "quant_doctor.json", "quant_doctor.md"
PLOTS = {"layers": "layer_sqnr.png", "curve": "calibration_curve.png",
         "remedies": "remedies.png"}


def diagnose(source, data=None, calib_samples=300, eval_samples=DEFAULT_EVAL_SAMPLES,
             target_drop=DEFAULT_TARGET_DROP, bench_rounds=BENCH_ROUNDS,
             layer_images=LAYER_IMAGES, curve_sizes=CURVE_SIZES, calib_method="average",
             remedies=None, qat_epochs=QAT_EPOCHS, baseline="mobilekit", tflite=None,
             log=None):
    """Diagnose `source` (run directory or .keras); returns the result dict (module
    docstring) with the files' bytes under result["_files"] (name -> bytes).

    calib_method: the calibration of the int8 file diagnosed (the export's --calib-method;
    the others become remedies). remedies: names of `remedy_plan` rows to try (None: all,
    in the plan's order). qat_epochs: epochs of the QAT remedy on the train split.
    baseline: the int8 file diagnosed: "mobilekit" (mobilekit's export with `calib_method`)
    or "naive" (the plain converter's: Optimize.DEFAULT + representative dataset, its
    min/max ranges, fused HARD_SWISH, per-channel Dense; mobilekit.export.convert.NAIVE);
    for "naive" every calibration method is a remedy on mobilekit's form, "average" being
    mobilekit's default export, and `calib_method` only sets the calibration-size curve's.
    tflite: a given integer .tflite of this model (path) to diagnose instead: scored as the
    baseline, its layers compared by tensor name with a float conversion of the model
    (layer_errors.file_layer_errors); remedies as for "naive", without the mixed files.
    """
    from mobilekit.errors import check_choice
    from mobilekit.export.calibration import CALIBRATION_METHODS
    from mobilekit.export.convert import NAIVE, convert_naive
    from mobilekit.export.layer_errors import layer_errors
    from mobilekit.export.pipeline import RANDOM_DATA, resolve_source

    log = log or (lambda msg: None)
    start = time.perf_counter()
    check_choice("calib_method", calib_method, CALIBRATION_METHODS)
    check_choice("baseline", baseline, BASELINES)
    if tflite is not None and baseline != "mobilekit":
        raise ValueError("give either --tflite FILE or --baseline naive, not both")
    naive = baseline == NAIVE or tflite is not None
    for name in remedies or ():
        if name not in REMEDIES and not re.fullmatch(r"calib_[1-9][0-9]*", name):
            from mobilekit.errors import unknown_name

            raise unknown_name("remedy", name, REMEDIES + ("calib_N",))
    if calib_samples < 1 or eval_samples < 1:
        raise ValueError(f"calib_samples and eval_samples must be positive; got "
                         f"{calib_samples} and {eval_samples}")
    model, config, name, _ = resolve_source(source)
    detector = _is_detector(name, config)
    _check_model(model, name, detector)
    data = data or (config or {}).get("val_data" if detector else "data")
    if not data:
        raise ValueError(f"no images to diagnose {name} on: give --data SPEC (the "
                         "calibration images come from its train split, the scored ones "
                         "from its val split)")
    if data == RANDOM_DATA:
        raise ValueError("--data random has no labels: the doctor needs real images to "
                         "measure an accuracy drop")
    task = (_DetectorTask if detector else _ClassifierTask)(
        model, name, config, data, calib_samples, eval_samples, layer_images)
    images, calib, score = task.layer_images, task.calib, task.score
    model = task.net
    log(f"{task.count} images of {data} to score ({task.metric}); {len(calib)} to calibrate")

    if tflite is not None:
        files = {"baseline": _given_file(tflite, model)}
        base = _row("baseline", f"given file `{Path(tflite).name}`",
                    {"calibration": "file", "tflite": str(tflite)})
    elif naive:
        log("naive int8 export (plain converter: min/max ranges, no delegable forms) ...")
        files = {"baseline": convert_naive(model, calib)}
        base = _row("baseline", NAIVE_LABEL, {"calibration": NAIVE})
    else:
        log(f"int8 export ({calib_method} calibration, per-tensor Dense) ...")
        files = {"baseline": _convert(model, "int8", calib, calibration=calib_method)}
        base = _row("baseline", f"int8 ({calib_method} calibration)",
                    {"calibration": calib_method})
    try:
        baseline = dict(base, **score(files["baseline"]))
    except RuntimeError as exc:  # LiteRT refuses a kernel (e.g. HARD_SWISH's range limit)
        if not naive:
            raise
        raise ValueError(f"the naive int8 file of {name} does not run in LiteRT: "
                         f"{str(exc).splitlines()[0]} - its min/max ranges are wider than "
                         "the kernel takes; mobilekit's export (`mobilekit export --quant "
                         "int8`: delegable forms, ranges without dead zones) avoids "
                         "it") from exc
    log(f"int8 drop {baseline['drop_points']:.2f} +/- {baseline['drop_se_points']:.2f} points")
    log(f"per-layer error on {len(images)} images ...")
    if tflite is not None:
        from mobilekit.export.layer_errors import file_layer_errors

        table, calibrated = file_layer_errors(files["baseline"], _float_references(model),
                                              images, _layer_names(model)), None
    else:
        table, calibrated = layer_errors(model, calib, images,
                                         method=NAIVE if naive else calib_method)
    ranked = [row for row in table.ranked() if row["op"] not in ("QUANTIZE", "DEQUANTIZE")]
    rows = []
    if baseline["drop_points"] > target_drop:
        plan = remedy_plan(ranked, has_dense=_has_dense(model), calib_count=len(calib),
                           curve_sizes=curve_sizes,
                           calib_method=NAIVE if naive else calib_method,
                           qat=not detector)
        job = {"model": model, "calib": calib, "calibrated": calibrated, "data": data,
               "size": task.size, "mean": task.mean, "std": task.std,
               "qat_epochs": qat_epochs, "method": calib_method,
               "dense_quant": "per-channel" if naive else "per-tensor"}
        if calibrated is None:  # a given file: no calibrated model to float layers of
            plan = [row for row in plan if row["kind"] != "mixed"]
        rows = _try_remedies(_selected(plan, remedies), job, score, files, target_drop, log)
    _measure_files(files, [baseline] + rows, bench_rounds)
    recommended = _recommend(baseline, rows, target_drop)
    result = {"model": name, "source": str(source), "task": task.kind, "metric": task.metric,
              "data": data, "images": task.count, "num_classes": task.num_classes,
              "float_score": task.float_score, "calib_samples": len(calib),
              "calib_method": NAIVE if naive else calib_method,
              "baseline_kind": "file" if tflite is not None else baseline,
              "target_drop": target_drop,
              "baseline": baseline, "layers": table.to_dicts(),
              "ranked": [row["layer"] for row in ranked[:10]], "remedies": rows,
              "recommended": recommended["name"],
              "no_remedy_needed": baseline["drop_points"] <= target_drop,
              "summary": summary_line(baseline, recommended, target_drop, ranked,
                                      task.metric),
              "mean": task.mean, "std": task.std, "class_names": task.class_names,
              "input_size": [task.size, task.size, int(model.inputs[0].shape[-1])],
              "seconds": round(time.perf_counter() - start, 1)}
    if not detector:
        result["float_top1"] = task.float_score
    else:  # the box decoding is int8 too: say what it costs
        from mobilekit.detection.postprocess import DECODE_TENSOR

        tail = [row for row in table if DECODE_TENSOR.search(row["tensor"])]
        result["decode_tail"] = {"ops": len(tail),
                                 "min_sqnr_db": min((r["sqnr_db"] for r in tail), default=None),
                                 "max_added_db": max((r["added_db"] for r in tail),
                                                     default=None)}
    result["_files"] = files
    result["_table"] = table
    return result


def _try_remedies(plan, job, score, files, target_drop, log):
    """Build and score each remedy in turn (bytes into `files`) until one is within the
    target; the calibration-size points never stop the loop (they draw a curve)."""
    rows = []
    for remedy in plan:
        log(f"remedy: {remedy['label']} ...")
        try:
            files[remedy["name"]] = _build(remedy, job)
        except ValueError as exc:  # e.g. an op int16x8 lacks: a row, not a crash
            rows.append(dict(remedy, ok=False, error=str(exc).splitlines()[0]))
            continue
        row = dict(remedy, ok=True, **score(files[remedy["name"]]))
        rows.append(row)
        log(f"  drop {row['drop_points']:.2f} +/- {row['drop_se_points']:.2f}")
        if row["drop_points"] <= target_drop and remedy["kind"] != "curve":
            break
    return rows


def remedy_plan(ranked, has_dense=True, calib_count=300, curve_sizes=CURVE_SIZES,
                calib_method="average", qat=True):
    """Remedies in the order the worst layer suggests, then the rest (each once). For a
    naive file (calib_method "naive") mobilekit's default export comes first."""
    worst = ranked[0] if ranked else {}
    catalogue = {
        "average": ("calibration", "average calibration", {"calibration": "average"}),
        "mse": ("calibration", "mse calibration", {"calibration": "mse"}),
        "minmax": ("calibration", "minmax calibration", {"calibration": "minmax"}),
        "bias_correction": ("weights", "bias correction", {"bias_correction": True}),
        "per_channel_dense": ("weights", "per-channel Dense", {"dense_quant": "per-channel"}),
        "int16x8": ("int16x8", "int16x8 activations", {}),
        "qat": ("qat", "QAT fine-tuning", {}),
    }
    if calib_method == "naive":  # every method is a change of form and ranges
        catalogue["average"] = ("calibration", MOBILEKIT_LABEL, {"calibration": "average"})
    else:
        del catalogue[calib_method]  # the diagnosed file's own method
    for k in FLOAT_LAYERS:
        layers = [row["layer"] for row in ranked[:k]]
        if len(layers) == k:
            # The ops reading each layer's output run float too (see _build).
            catalogue[f"float_{k}"] = ("mixed", "float " + ", ".join(f"`{n}`" for n in layers)
                                       + " (+ readers)",
                                       {"float_tensors": [row["tensor"] for row in ranked[:k]]})
    if not has_dense:
        del catalogue["per_channel_dense"]
    if not qat:  # detectors: QAT belongs to `mobilekit train --qat` (its loss, its data)
        del catalogue["qat"]
    first = ["average"] if calib_method == "naive" else []
    if worst.get("dominant") == "weights":
        first += (["per_channel_dense", "bias_correction"] if worst["op"] == "FULLY_CONNECTED"
                  else ["bias_correction", "per_channel_dense"])
    elif worst.get("clip_rate", 0) > 0.01:
        first += ["minmax", "mse"]
    elif worst:
        first += ["mse", "average", "float_1"]
    # Cheap conversions first, then mixed files, int16x8, training (QAT) last.
    order = first + ["average", "mse", "bias_correction", "per_channel_dense", "float_1",
                     "float_2", "float_3", "int16x8", "minmax", "qat"]
    plan, seen = [], set()
    for key in order:
        if key in catalogue and key not in seen:
            seen.add(key)
            kind, label, settings = catalogue[key]
            plan.append(_row(key, label, settings, kind))
    for n in curve_sizes:
        if n < calib_count:
            plan.append(_row(f"calib_{n}", f"{n} calibration images", {"calib_samples": n},
                             "curve"))
    return plan


def _row(name, label, settings, kind="baseline"):
    return {"name": name, "kind": kind, "label": label, "settings": settings}


def _selected(plan, names):
    """The plan's rows named in `names` (all for None); a calib_N row is made for any N."""
    if names is None:
        return plan
    extra = [_row(n, f"{n[6:]} calibration images", {"calib_samples": int(n[6:])}, "curve")
             for n in names if n.startswith("calib_") and n not in {r["name"] for r in plan}]
    return [row for row in plan if row["name"] in names] + extra


def _build(remedy, job):
    """The .tflite bytes of one remedy."""
    from mobilekit.export.layer_errors import graph_links, quantize_calibrated

    model, calib, calibrated = job["model"], job["calib"], job["calibrated"]
    settings = remedy["settings"]
    if remedy["kind"] == "mixed":
        # The op and every op reading its output stay float: its output is never rounded.
        _, consumers, _ = graph_links(calibrated)
        nodes = set()
        for tensor in settings["float_tensors"]:
            nodes.add(tensor)
            nodes.update(consumers.get(tensor, []))
        remedy["settings"] = dict(settings, float_nodes=sorted(nodes))
        return quantize_calibrated(calibrated, job.get("dense_quant", "per-tensor"),
                                   denylisted_nodes=sorted(nodes))
    if remedy["kind"] == "int16x8":
        return _convert(model, "int16x8", calib)
    if remedy["kind"] == "qat":
        return _convert(_qat_model(job), "int8")
    if remedy["kind"] == "curve":
        return _convert(model, "int8", calib[:settings["calib_samples"]],
                       calibration=job["method"])
    return _convert(model, "int8", calib, **dict({"calibration": job["method"]}, **settings))


def _convert(model, quant, representative_data=None, **kwargs):
    """mobilekit.export.convert.convert, letting a detector's box decoding keep the float
    ELUs its int8 form has (as `mobilekit export` does: check_float_decode_only)."""
    from mobilekit.detection.postprocess import decodes_boxes
    from mobilekit.export.convert import convert as export_convert
    from mobilekit.export.pipeline import check_float_decode_only

    decode = quant in ("int8", "int16x8") and decodes_boxes(model)
    tflite = export_convert(model, quant, representative_data,
                            allow_float_ops=decode or kwargs.pop("allow_float_ops", False),
                            **kwargs)
    if decode:
        check_float_decode_only(tflite, model.name)
    return tflite


def _qat_model(job):
    """`qat_epochs` of quantization-aware training on the train split (mobilekit.compress
    .qat: ranges start from the float model's activations on the calibration images)."""
    from mobilekit.compress.qat import init_ranges, quantize_model
    from mobilekit.data import load_dataset
    from mobilekit.keras import keras

    model = job["model"]
    qat = quantize_model(model)
    init_ranges(qat, model, job["calib"][:QAT_RANGE_SAMPLES])
    ds, _ = load_dataset(job["data"], "train", job["size"], 32, training=True,
                         mean=job["mean"], std=job["std"])
    qat.compile(keras.optimizers.Adam(QAT_LR), keras.losses.SparseCategoricalCrossentropy(
        from_logits=not _ends_in_softmax(model)))
    qat.fit(ds, epochs=job["qat_epochs"], verbose=0)
    return qat


def _ends_in_softmax(model):
    last = model.layers[-1]
    activation = getattr(last, "activation", None)
    return type(last).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def _measure_files(files, rows, rounds):
    """size_bytes and latency (median µs, XNNPACK, 1 thread, round-robin) of each row's file."""
    from mobilekit.bench.host import interleaved_medians

    measured = [row for row in rows if row.get("ok", True)]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for row in measured:
            path = Path(folder) / f"{row['name']}.tflite"
            path.write_bytes(files[row["name"]])
            paths.append(path)
            row["size_bytes"] = len(files[row["name"]])
        medians = interleaved_medians(paths, rounds=max(1, rounds)) if paths else []
    base = medians[0] if medians else None
    for row, median in zip(measured, medians):
        row["latency_us"] = round(median, 1)
        row["latency_change"] = round(median / base - 1, 4) if base else None


def _recommend(baseline, rows, target_drop):
    """The fastest file within the target (then the smaller drop); else the smallest drop
    if it beats the default by more than its standard error; else the default."""
    ok = [row for row in rows if row.get("ok")]
    within = [row for row in ok if row["drop_points"] <= target_drop]
    if within:
        return min(within, key=lambda r: (r["latency_us"], r["drop_points"]))
    best = min(ok, key=lambda r: (r["drop_points"], r["latency_us"])) if ok else None
    # Short of the target, a remedy must beat the default by more than its own standard
    # error: a difference inside the noise of these images is no reason to change files.
    if best and baseline["drop_points"] - best["drop_points"] > best["drop_se_points"]:
        return best
    return baseline


def summary_line(baseline, best, target_drop, ranked=(), metric="top-1"):
    """One line: the drop before and after, what did it, and its latency cost."""
    what = "int8 drop" if metric == "top-1" else f"int8 {metric} drop"
    before = f"{baseline['drop_points']:.1f} ± {baseline['drop_se_points']:.1f}"
    if best is baseline:
        if baseline["drop_points"] <= target_drop:
            return (f"{what} {before} points is within the {target_drop:g}-point target: "
                    "no remedy needed")
        worst = f" (worst layer `{ranked[0]['layer']}`)" if ranked else ""
        return (f"{what} {before} points; no measured remedy reduced it by more than its "
                f"standard error{worst}: the default int8 file is kept")
    after = f"{best['drop_points']:.1f} ± {best['drop_se_points']:.1f}"
    change = best.get("latency_change")
    cost = "" if change is None else f"; {100 * change:+.0f} % latency"
    missed = "" if best["drop_points"] <= target_drop else \
        f" (target {target_drop:g} not reached)"
    return f"{what} {before} → {after} points with {best['label']}{cost}{missed}"


# ---------------------------------------------------------------- input checks


def _is_detector(name, config):
    from mobilekit.export.pipeline import _is_detector as is_detector

    return is_detector(name, config)


def _check_model(model, name, detector):
    from mobilekit.export.pipeline import _all_layers

    if not detector and len(model.outputs) != 1:
        raise ValueError(f"quant-doctor diagnoses classifiers (one output) and the FaceBoxes "
                         f"detector; {name} has {len(model.outputs)} outputs")
    if not any(type(layer).__name__ in QUANTIZABLE for layer in _all_layers(model)):
        raise ValueError(f"{name} has no quantizable layer ({', '.join(QUANTIZABLE)}): "
                         "int8 has no weights to round and nothing to diagnose")


def _given_file(path, model):
    """The bytes of a given integer .tflite of `model`, checked: it loads, takes the model's
    input shape and holds quantized tensors."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.convert import input_spec

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--tflite {path}: no such file")
    data = path.read_bytes()
    try:
        interp = Interpreter(model_content=data)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"--tflite {path} does not load in LiteRT: "
                         f"{str(exc).splitlines()[0]}") from exc
    shape = tuple(int(d) for d in interp.get_input_details()[0]["shape"])
    if shape != tuple(input_spec(model).shape):
        raise ValueError(f"--tflite {path} takes input {shape}; the model takes "
                         f"{tuple(input_spec(model).shape)}: wrong image size or another model")
    if not any(np.issubdtype(d["dtype"], np.integer) and
               len(d["quantization_parameters"]["scales"]) for d in interp.get_tensor_details()):
        raise ValueError(f"--tflite {path} has no quantized tensor: nothing for int8 to hurt")
    return data


def _float_references(model):
    """fp32 TFLite bytes of `model` as it is and in mobilekit's int8 form (a given file may
    come from either; file_layer_errors keeps the one whose names match)."""
    from mobilekit.export.convert import naive_converter
    from mobilekit.export.delegable import delegable_clone

    files = []
    for source in (model, delegable_clone(model)):
        converter = naive_converter(source, [])
        converter.optimizations, converter.representative_dataset = [], None
        files.append(bytes(converter.convert()))
    return files


def _layer_names(model):
    from mobilekit.export.pipeline import _all_layers

    return [layer.name for layer in _all_layers(model)]


def _file_io(tflite):
    from ai_edge_litert.interpreter import Interpreter

    dtype = Interpreter(model_content=tflite).get_input_details()[0]["dtype"]
    return {np.int8: "int8", np.uint8: "uint8", np.int16: "int16"}.get(dtype, "float")


def _has_dense(model):
    from mobilekit.export.pipeline import _all_layers

    return any(type(layer).__name__ == "Dense" for layer in _all_layers(model))


def _input_size(model, name):
    from mobilekit.export.convert import input_spec

    _, height, width, channels = input_spec(model).shape
    if height != width or channels != 3:
        raise ValueError(f"{name} takes {height}x{width}x{channels} images; the data "
                         "pipeline gives square RGB images (HxHx3): wrong image size")
    return int(height)


def _eval_set(spec, size, limit, mean, std):
    from mobilekit.data import load_dataset

    ds, info = load_dataset(spec, "val", size, 64, training=False, mean=mean, std=std)
    images, labels, count = [], [], 0
    for batch, batch_labels in ds:
        images.append(batch.numpy())
        labels.append(batch_labels.numpy())
        count += len(images[-1])
        if count >= limit:
            break
    if not count:
        raise ValueError(f"{spec} has no validation images to score on")
    if images[0].shape[1:3] != (size, size):
        raise ValueError(f"images of {spec} are {images[0].shape[1]}x{images[0].shape[2]}; "
                         f"the model takes {size}x{size}")
    return (np.concatenate(images)[:limit].astype(np.float32),
            np.concatenate(labels)[:limit], info)


def _check_outputs(model, name, info, spec):
    outputs = int(model.outputs[0].shape[-1])
    if outputs != info["num_classes"]:
        raise ValueError(f"{name} outputs {outputs} classes but {spec} has "
                         f"{info['num_classes']}: diagnose it on its own data")


def _check_chance(top1, classes, n, name):
    """A float model within 3 standard errors of 1/classes is at chance level."""
    chance = 1.0 / classes
    margin = 3 * math.sqrt(chance * (1 - chance) / n)
    if top1 <= chance + margin:
        raise ValueError(f"float {name} scores {100 * top1:.1f} % top-1 on {n} images, near "
                         f"chance ({100 * chance:.1f} % for {classes} classes): an int8 drop "
                         "on a chance-level model says nothing. Train it first")


class _ClassifierTask:
    """Top-1 on the val split, float and int8 scored image by image (paired drop)."""

    kind, metric = "classifier", "top-1"

    def __init__(self, model, name, config, data, calib_samples, eval_samples, layer_images):
        from mobilekit.export.pipeline import dataset_samples

        self.net = model
        self.size = _input_size(model, name)
        mean, std = (config or {}).get("mean"), (config or {}).get("std")
        self.images, self.labels, info = _eval_set(data, self.size, eval_samples, mean, std)
        self.mean, self.std = info["mean"], info["std"]
        self.num_classes, self.class_names = info["num_classes"], info.get("class_names")
        _check_outputs(model, name, info, data)
        self.count = len(self.images)
        self.float_hits = _keras_predict(model, self.images).argmax(-1) == self.labels
        self.float_score = float(self.float_hits.mean())
        _check_chance(self.float_score, self.num_classes, self.count, name)
        self.calib = dataset_samples(data, self.size, calib_samples, self.mean, self.std)
        self.layer_images = self.images[:layer_images]

    def score(self, tflite):
        from mobilekit.export.pipeline import tflite_predict
        from mobilekit.train.evaluate import paired_drop

        hits = tflite_predict(tflite, self.images).argmax(-1) == self.labels
        return paired_drop(self.float_hits, hits)


class _DetectorTask:
    """FaceBoxes: AP50 at IoU 0.5 of the decoded boxes (the file's box-decoding tail
    included) on the val split, faces the run trained without (under its min_face) ignored;
    the SE of the AP50 drop from a paired bootstrap over the images."""

    kind, metric = "detector", "AP50"
    BOOTSTRAP = 200

    def __init__(self, model, name, config, data, calib_samples, eval_samples, layer_images):
        from mobilekit.detection.data import load_samples, network_inputs, read_image
        from mobilekit.detection.evaluate import average_precision, ignore_small, run_detector
        from mobilekit.detection.postprocess import Detector, inference_model
        from mobilekit.export.pipeline import detection_samples

        self.net = inference_model(model, fused=True) if len(model.outputs) == 2 and \
            model.outputs[1].shape.rank == 3 else model
        hw = tuple(int(side) for side in self.net.inputs[0].shape[1:3])
        if hw[0] != hw[1]:
            raise ValueError(f"{name} takes {hw[0]}x{hw[1]} images; the doctor needs a square "
                             "input: wrong image size")
        self.size, self.mean, self.std = hw[0], None, None
        self.num_classes, self.class_names = None, None
        split = (config or {}).get("val_split", "val")
        self.samples = load_samples(data, split)[:eval_samples]
        if not self.samples:
            raise ValueError(f"{data} has no {split} images to score on")
        self.count = len(self.samples)
        detections, shapes = run_detector(Detector(model), self.samples)
        ignore = ignore_small(self.samples, shapes, hw, (config or {}).get("min_face", 0))
        self.truth = [(s.boxes, flags) for s, flags in zip(self.samples, ignore)]
        self.float_detections = detections
        self.float_score = float(average_precision(detections, self.truth)["ap"])
        if self.float_score < 0.05:
            raise ValueError(f"float {name} reaches AP50 {self.float_score:.3f} on {data}: it "
                             "finds (almost) no face, so an int8 drop says nothing (near "
                             "chance). Train it first")
        self.calib = detection_samples(data, hw, calib_samples)
        self.layer_images = network_inputs((read_image(s.image)
                                            for s in self.samples[:layer_images]), hw)

    def score(self, tflite):
        from mobilekit.detection.evaluate import run_detector
        from mobilekit.detection.postprocess import Detector

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.tflite"
            path.write_bytes(tflite)
            detections, _ = run_detector(Detector(tflite_path=path), self.samples)
        return self._paired(detections)

    def _paired(self, detections):
        from mobilekit.detection.evaluate import average_precision

        def ap(dets, index):
            return average_precision([dets[i] for i in index],
                                     [self.truth[i] for i in index])["ap"]

        everything = range(self.count)
        quant = float(ap(detections, everything))
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(self.BOOTSTRAP):
            index = rng.integers(self.count, size=self.count)
            diffs.append(ap(self.float_detections, index) - ap(detections, index))
        return {"images": self.count, "float_ap50": self.float_score, "int8_ap50": quant,
                "drop_points": 100 * (self.float_score - quant),
                "drop_se_points": float(100 * np.std(diffs)),
                "float_only": None, "int8_only": None}


def _keras_predict(model, images, batch=64):
    return np.concatenate([np.asarray(model(images[i:i + batch], training=False))
                           for i in range(0, len(images), batch)])


# ---------------------------------------------------------------- report


def write_report(result, out):
    """OUT/quant_doctor.{json,md}, the plots and the recommended .tflite with its export
    report, all staged in a temporary folder beside OUT and moved in at the end: an error
    leaves OUT as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        _write_all(result, stage)
        if not out.exists():
            os.replace(stage, out)
        else:
            for path in stage.iterdir():
                os.replace(path, out / path.name)
            stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _write_all(result, folder):
    from mobilekit.io import write_atomic, write_json_atomic

    best = result["recommended"]
    tflite_name = f"{result['model']}_int8_doctor.tflite"
    tflite, report = _recommended_file(result)
    (folder / tflite_name).write_bytes(tflite)
    report["tflite_path"] = tflite_name
    write_json_atomic(folder / Path(tflite_name).with_suffix(".json"), report)
    plots = _plots(result, folder)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    public.update({"recommended_file": tflite_name, "plots": plots})
    write_json_atomic(folder / REPORT_JSON, public)
    write_atomic(folder / REPORT_MD, _markdown(result, tflite_name, plots, best))


def _recommended_file(result):
    """The recommended bytes with mobilekit metadata, and their export report."""
    from mobilekit.export.metadata import build_metadata, embed_metadata
    from mobilekit.export.report import analyze

    name = result["recommended"]
    row = result["baseline"] if name == "baseline" else next(
        r for r in result["remedies"] if r["name"] == name)
    quant = "int16x8" if row["kind"] == "int16x8" else "int8"
    io = ("float" if row["kind"] in ("mixed", "int16x8")
          or row["settings"].get("calibration") == "naive" else "int8")
    if row["settings"].get("calibration") == "file":
        io = _file_io(result["_files"][name])
    meta = build_metadata(result["model"], quant, result["input_size"],
                          labels=result.get("class_names"), mean=result["mean"],
                          std=result["std"], io=io, qat=False,
                          doctor={"remedy": name, "label": row["label"]})
    tflite = embed_metadata(result["_files"][name], meta)
    report = analyze(tflite)
    report.update({"model": result["model"], "source": result["source"], "quant": quant,
                   "io": io, "remedy": {k: row[k] for k in ("name", "label", "settings")},
                   "calibration": {"data": result["data"],
                                   "samples": row["settings"].get("calib_samples",
                                                                  result["calib_samples"]),
                                   "method": ("qat" if row["kind"] == "qat" else
                                              row["settings"].get("calibration",
                                                                  result["calib_method"]))},
                   "eval": {"data": result["data"], "images": result["images"],
                            "metric": result["metric"], "float_score": result["float_score"],
                            "drop_points": row["drop_points"],
                            "drop_se_points": row["drop_se_points"]}})
    return tflite, report


def _markdown(result, tflite_name, plots, best):
    from mobilekit.export.layer_errors import LayerTable

    b = result["baseline"]
    lines = [f"# Quantization doctor: {result['model']}", "", f"**{result['summary']}**", "",
             f"Float {result['metric']} {100 * result['float_score']:.2f} % on {result['images']} "
             "images of "
             f"{result['data']}; calibration on {result['calib_samples']} images; target: a "
             f"drop of at most {result['target_drop']:g} point(s). Drops are float minus "
             f"int8 {result['metric']} on the same images, ± their standard error ("
             + ("from the images only one of them gets right" if result["task"] == "classifier"
                else "paired bootstrap over the images; box decoding included")
             + f"). File diagnosed: {b['label']}. Recommended file: `{tflite_name}`. "
             "Run time "
             f"{result['seconds']:.0f} s.", "", "## Remedies", "",
             "| remedy | drop (points) | float-only / int8-only images | size KB | "
             "latency ms | latency vs int8 |", "|---|---|---|---|---|---|"]
    for row in [b] + result["remedies"]:
        if not row.get("ok", True):
            lines.append(f"| {row['label']} | failed: {row['error']} | | | | |")
            continue
        mark = " **(recommended)**" if row["name"] == result["recommended"] else ""
        change = row.get("latency_change")
        lines.append(f"| {row['label']}{mark} | {row['drop_points']:+.2f} ± "
                     f"{row['drop_se_points']:.2f} | "
                     f"{'-' if row['float_only'] is None else row['float_only']} / "
                     f"{'-' if row['int8_only'] is None else row['int8_only']} "
                     f"| {row['size_bytes'] / 1e3:.1f} | {row['latency_us'] / 1e3:.3f} | "
                     f"{'-' if change is None else f'{100 * change:+.1f} %'} |")
    lines += ["", INT16X8_NOTE]
    tail = result.get("decode_tail")
    if tail and tail["ops"]:
        lines += ["", f"Box decoding in the file: {tail['ops']} int8 ops, "
                  f"lowest SQNR {tail['min_sqnr_db']:.1f} dB, at most {tail['max_added_db']:.1f} "
                  "dB added by one of them; AP50 is scored on the decoded boxes."]
    if result["no_remedy_needed"]:
        lines += ["", "No remedy needed: the default int8 export is within the target."]
    lines += ["", "## Layers, worst first", "",
              "SQNR: median over channels of float variance / int8 error power (accumulated "
              "up to the tensor); added: dB lost at this op over its worst input; "
              "weights-only / activations-only: the same with only one of them in int8; "
              "rmse/step: QuantizationDebugger's layer-wise RMSE in quantization steps "
              "(0.29 = rounding alone).", "", LayerTable(result["layers"]).ranked().to_markdown(
                  limit=15)]
    for title, key in (("Per-layer SQNR", "layers"), ("Calibration size", "curve"),
                       ("Drop vs latency", "remedies")):
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    return "\n".join(lines) + "\n"


def _plots(result, folder):
    """{kind: file name} of the plots drawn (none without matplotlib)."""
    try:
        from mobilekit.report.plots import require_matplotlib

        plt = require_matplotlib()
    except ValueError:
        return {}
    from mobilekit.report.plots import _save

    drawn = {}
    layers = result["layers"]
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(layers)), 4))
    worst = set(result["ranked"][:3])
    ax.bar(range(len(layers)), [r["sqnr_db"] for r in layers],
           color=["tab:red" if r["layer"] in worst else "tab:blue" for r in layers])
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels([r["layer"][:24] for r in layers], rotation=90, fontsize=6)
    ax.set_ylabel("SQNR (dB)")
    ax.set_title(f"{result['model']}: int8 SQNR per tensor (red: worst added)")
    drawn["layers"] = _save(fig, folder / PLOTS["layers"]).name
    plt.close(fig)
    curve = [r for r in result["remedies"] if r["kind"] == "curve" and r.get("ok")]
    if curve:
        points = sorted([(r["settings"]["calib_samples"], r) for r in curve] +
                        [(result["calib_samples"], result["baseline"])], key=lambda p: p[0])
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.errorbar([p[0] for p in points], [p[1]["drop_points"] for p in points],
                    yerr=[p[1]["drop_se_points"] for p in points], marker="o", capsize=3)
        ax.set_xscale("log")
        ax.set_xlabel("calibration images")
        ax.set_ylabel("int8 drop (points)")
        ax.set_title("calibration-size curve")
        drawn["curve"] = _save(fig, folder / PLOTS["curve"]).name
        plt.close(fig)
    rows = [r for r in [result["baseline"]] + result["remedies"] if r.get("ok", True)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for row in rows:
        ax.errorbar(row["latency_us"] / 1e3, row["drop_points"], yerr=row["drop_se_points"],
                    marker="o", capsize=3, label=row["label"][:40])
    latencies = [row["latency_us"] for row in rows]
    if max(latencies) > 10 * min(latencies):  # int16x8 off XNNPACK: ~60x slower on x86
        ax.set_xscale("log")
    ax.axhline(result["target_drop"], color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("host latency (ms, XNNPACK, 1 thread)")
    ax.set_ylabel("int8 drop (points)")
    ax.set_title("remedies: drop vs latency")
    ax.legend(fontsize=6)
    drawn["remedies"] = _save(fig, folder / PLOTS["remedies"]).name
    plt.close(fig)
    return drawn
