"""The `mobilekit export` job: resolve the model, calibrate, convert, verify, write.

MODEL_OR_RUN is a run directory (RUN_DIR/model.keras + config.json from `mobilekit train`),
a `.keras` file, or a zoo model name (random init: for benchmarking only; its BatchNorm
statistics are re-estimated on the calibration images first, see `reestimate_batchnorm`).

Outputs, both written atomically (temp file + rename, nothing half-written on error):
  <out>.tflite   with the "mobilekit" metadata entry (labels, mean/std, input size, quant)
  <out>.json     mobilekit.export.report.analyze() + how it was made + parity / eval
"""
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice, unknown_name
from mobilekit.loading import load_keras
from mobilekit.export.convert import QUANT_MODES, convert, input_spec, is_qat_model, resolve_io

DEFAULT_CALIB_SAMPLES = 300
DEFAULT_MAX_DETECTIONS = 100
PARITY_SAMPLES = 4
BATCHNORM_SAMPLES = 16
RANDOM_DATA = "random"


def resolve_source(source, model_kwargs=None):
    """(keras model, run config or None, model name, .keras path or None) for MODEL_OR_RUN."""
    from mobilekit.train.rundir import BEST, is_run_dir, load_run

    path = Path(source)
    if path.is_dir():
        config = load_run(path)
        if not (path / BEST).is_file():
            raise FileNotFoundError(f"run directory {str(path)!r} has no {BEST} "
                                    "(no epoch completed)")
        return load_keras(path / BEST), config, config.get("model") or path.name, path / BEST
    if path.suffix == ".keras" or path.exists():
        if not path.exists():
            raise FileNotFoundError(f"model file {str(path)!r} does not exist")
        if path.suffix != ".keras":
            raise ValueError(f"MODEL_OR_RUN must be a run directory, a .keras file or a zoo "
                             f"model name; got the file {str(path)!r}")
        config = load_run(path.parent) if is_run_dir(path.parent) else None
        import mobilekit.detection.postprocess  # noqa: F401  (a saved inference-form detector)

        model = load_keras(path)
        return model, config, (config or {}).get("model") or path.stem, path
    if os.sep in str(source):
        raise FileNotFoundError(f"{str(source)!r} does not exist")
    from mobilekit.zoo.registry import create_model, list_models

    if str(source) not in list_models():
        raise unknown_name("model (or path)", source, list_models())
    return create_model(str(source), **(model_kwargs or {})), None, str(source), None


def dataset_samples(spec, resolution, count, mean=None, std=None, seed=0, channels=3):
    """`count` preprocessed images (float32 NHWC) from the EVAL transform of the train split.

    `resolution` is the side of a square input, or (height, width). `spec` "random" gives
    seeded standard-normal images (benchmark-only exports; any input shape).
    """
    height, width = (resolution, resolution) if np.isscalar(resolution) else resolution
    if spec == RANDOM_DATA:
        rng = np.random.default_rng(seed)
        return rng.standard_normal((count, height, width, channels)).astype(np.float32)
    if height != width:
        raise ValueError(f"dataset calibration needs a square input; got {height}x{width} "
                         f"(use --calib-data {RANDOM_DATA} for a benchmark-only export)")
    from mobilekit.data import load_dataset

    ds, _ = load_dataset(spec, "train", height, 32, training=False, seed=seed,
                         mean=mean, std=std)
    images = _shuffled(ds.unbatch(), count, window=min(4 * count, 512), seed=seed)
    if not images:
        raise ValueError(f"calibration data {spec!r} has no training images")
    return np.stack(images).astype(np.float32)


def _shuffled(ds, count, window, seed):
    """`count` images drawn through a shuffle buffer of `window` (the eval order may be
    grouped by class), reading count + window elements at most. A NumPy generator, not
    tf.data's shuffle: that one also depends on TensorFlow's global seed, so the same export
    would calibrate on other images after a training run in the same process."""
    rng = np.random.default_rng(seed)
    buffer, chosen = [], []
    for image, _ in ds:
        buffer.append(image.numpy())
        if len(buffer) == window:
            chosen.append(buffer.pop(int(rng.integers(window))))
            if len(chosen) == count:
                return chosen
    rng.shuffle(buffer)
    return chosen + buffer[:count - len(chosen)]


def detection_samples(spec, input_hw, count):
    """`count` detector inputs from the images of an annotation spec (wider:/fddb:/xml:),
    warped to the input and scaled like training (mobilekit.detection.data)."""
    from mobilekit.detection.data import load_samples, network_inputs, read_image

    samples = load_samples(spec, "train")[:count]
    if not samples:
        raise ValueError(f"calibration data {spec!r} has no images")
    return network_inputs((read_image(s.image) for s in samples), input_hw)


def _layout_entry(model, s2d_input):
    if not s2d_input:
        return {}
    from mobilekit.export.stem import LAYOUT_KEY, stem_layout

    return {LAYOUT_KEY: stem_layout(model)}


def check_float_decode_only(tflite, name):
    """A detector's integer file may compute part of its box decoding in float: a QAT file
    all of it (QAT gives the network's tensors ranges, not the decode arithmetic after it),
    a PTQ file the ELU of its exp, one per map in the fused heads (the converter has no int8
    ELU; XNNPACK runs the float ELU and the QUANTIZE/DEQUANTIZE around it in the same
    partition as the int8 network). Anything else in float is the usual float-island error."""
    from mobilekit.detection.postprocess import DECODE_TENSOR
    from mobilekit.export.convert import FloatOpsError, describe_float_ops
    from mobilekit.export.report import analyze

    report = analyze(tflite)
    in_decode = [op for op in report["float_op_list"] if DECODE_TENSOR.search(op["output"])]
    islands = [op for op in report["float_op_list"] if op not in in_decode and
               (not in_decode or op["index"] < min(o["index"] for o in in_decode))]
    if islands:
        report = dict(report, float_ops=len(islands), float_op_list=islands)
        raise FloatOpsError(f"int8 export of {name}: {describe_float_ops(report)} (outside the "
                            "box decoding). Pass --allow-float-ops to keep them")


def _is_detector(name, config):
    if config is not None:
        return config.get("task") == "detection"
    from mobilekit.zoo.registry import list_models

    return name in list_models(task="detection")


def reestimate_batchnorm(model, images):
    """Set every BatchNorm's moving mean/variance to the statistics of `images` (in place).

    For random-init zoo models only: with fresh statistics (mean 0, var 1) activations shrink
    layer after layer, so int8 calibration sees near-zero ranges and residual ADDs get input
    scales so unequal that XNNPACK refuses them (split partitions): benchmark numbers of such
    a file would not be those of a trained model. One training-mode pass with momentum 0
    gives every layer O(1) activations, as a trained network has.
    """
    from mobilekit.keras import keras

    norms = [layer for layer in _all_layers(model)
             if isinstance(layer, keras.layers.BatchNormalization)]
    saved = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(images, training=True)
    for layer, momentum in zip(norms, saved):
        layer.momentum = momentum
    return len(norms)


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def tflite_predict(tflite, images, all_outputs=False):
    """Float outputs of a .tflite (bytes) for float images, one sample at a time: the first
    output's array, or with `all_outputs` a list with one array per output (file order)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.metadata import read_metadata
    from mobilekit.export.stem import apply_input_layout, input_layout
    from mobilekit.train.evaluate import dequantize, quantize

    images = apply_input_layout(images, input_layout(read_metadata(tflite)))
    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    inp, outs = interp.get_input_details()[0], interp.get_output_details()
    results = [[] for _ in outs]
    for image in images:
        interp.set_tensor(inp["index"], quantize(image[None], inp))
        interp.invoke()
        for out, bucket in zip(outs, results):
            bucket.append(dequantize(interp.get_tensor(out["index"]), out)[0])
    stacked = [np.stack(bucket) for bucket in results]
    return stacked if all_outputs else stacked[0]


def parity(model, tflite, images, quant, atol):
    """max |tflite - keras| over `images` and every output; `ok` is judged for fp32 only."""
    from mobilekit.keras import tf

    expected = model(tf.constant(images), training=False)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, (list, tuple))
                                        else [expected])]
    got = tflite_predict(tflite, images, all_outputs=True)
    diff = max(float(np.max(np.abs(_same_shape(got, e) - e))) for e in expected)
    return {"samples": int(len(images)), "max_abs_diff": diff, "atol": atol,
            "ok": (diff <= atol) if quant == "fp32" else None}


def nms_parity(model, tflite, images, options, quant):
    """The file's in-graph NMS against the Python path (Detector: Keras decoding + NumPy
    NMS with the same thresholds) on `images`: each box's best match, scores in order; `ok`
    (fp32 only) = same count, box IoU >= 0.99, scores within 1e-3."""
    import tempfile

    from mobilekit.detection.boxes import iou_np
    from mobilekit.detection.postprocess import Detector, select

    reference = Detector(model)
    with tempfile.NamedTemporaryFile(suffix=".tflite") as f:
        f.write(tflite)
        f.flush()
        lite = Detector.load(f.name)
        counts_equal, min_iou, score_diff = True, 1.0, 0.0
        for image in images:
            boxes, scores = reference.raw(image[None])
            kb, ks = select(boxes, scores, options["nms_score_threshold"],
                            options["nms_iou_threshold"], keep_top_k=options["max_detections"])
            lb, ls = lite.raw(image[None])
            counts_equal &= len(kb) == len(lb)
            n = min(len(kb), len(lb))
            if n:  # near-equal scores may come out in either order: best match per box
                min_iou = min(min_iou, float(iou_np(kb, lb).max(axis=1).min()))
                score_diff = max(score_diff, float(np.abs(np.sort(ks)[::-1][:n]
                                                          - np.sort(ls)[::-1][:n]).max()))
    ok = counts_equal and min_iou >= 0.99 and score_diff <= 1e-3
    return {"samples": int(len(images)), "max_abs_diff": score_diff, "min_box_iou": min_iou,
            "counts_equal": bool(counts_equal), "atol": 1e-3,
            "ok": ok if quant == "fp32" else None}


def _standard_metadata(name, input_hw, detector, postprocess, s2d_input, labels, mean, std):
    """The TFLITE_METADATA description for this export, or None: detectors with NMS in the
    graph (ObjectDetector), classifiers whose preprocessing is known (ImageClassifier);
    not for space-to-depth inputs, which no Task Library loader prepares."""
    from mobilekit.export import tflite_metadata as tm

    if s2d_input:
        return None
    if detector:  # images scaled to [-1, 1] (mobilekit.detection.data.preprocess)
        return None if postprocess is None else tm.detector_description(
            name, input_hw, [127.5] * 3, [127.5] * 3, postprocess)
    if mean is None or std is None or not labels:
        return None
    return tm.classifier_description(name, input_hw, np.ravel(mean).tolist(),
                                     np.ravel(std).tolist(), [str(v) for v in labels])


def _same_shape(arrays, like):
    """The TFLite output matching a Keras output (files may order outputs differently)."""
    matches = [a for a in arrays if a.shape == like.shape]
    if len(matches) != 1:
        raise ValueError(f"cannot match the Keras output of shape {like.shape} to one TFLite "
                         f"output (shapes {[a.shape for a in arrays]})")
    return matches[0]


def default_out(name, quant, config):
    folder = Path(config["run_dir"]) if config else Path.cwd()
    return folder / f"{name}_{quant}.tflite"


def card_export_defaults(name):
    """A model card's [export] table (settings measured to suit that model), {} if none."""
    from mobilekit.zoo.registry import get_card, list_models

    if name not in list_models():  # a .keras file of the user's own network
        return {}
    try:
        return get_card(name).get("export", {})
    except FileNotFoundError:
        return {}


def export(source, quant, io=None, calib_data=None, calib_samples=DEFAULT_CALIB_SAMPLES,
           out=None, allow_float_ops=False, eval_data=None, eval_samples=None, atol=1e-4,
           model_kwargs=None, sparse=False, s2d_input=False, calib_method="average",
           dense_quant="per-tensor", bias_correction=None, nms=False,
           score_threshold=None, nms_iou=None, max_detections=DEFAULT_MAX_DETECTIONS,
           log=None, gpu_check=True):
    """Run the whole export; returns (tflite path, report dict). calib_method, dense_quant
    and bias_correction: see mobilekit.export.convert.convert (calib_method is its
    `calibration`); bias_correction None takes the model card's [export] value, else off.
    nms: a detector's file ends in TFLite_Detection_PostProcess (mobilekit.export.nms) with
    these options (score_threshold / nms_iou None: the official 0.05 / 0.3) and carries
    the standard TFLITE_METADATA (mobilekit.export.tflite_metadata). model_kwargs'
    input_shape also rebuilds a trained detector (run or .keras) at that input.
    gpu_check: compile the file with LiteRT's GPU accelerator where one can be set up
    (report["gpu"]["runtime"])."""
    log = log or (lambda msg: None)
    check_choice("quant", quant, QUANT_MODES)
    if calib_samples < 1:
        raise ValueError(f"calib_samples must be a positive integer; got {calib_samples}")
    model, config, name, keras_path = resolve_source(source, model_kwargs)
    detector = _is_detector(name, config)
    if nms and not detector:
        raise ValueError(f"--nms puts detection post-processing in the file; {name} is not a "
                         "detector")
    input_shape = (model_kwargs or {}).get("input_shape")
    if input_shape is not None and keras_path is not None:
        if not detector:
            raise ValueError(f"--input-size rebuilds only a trained detector at another size; "
                             f"export {name} at its training input")
        from mobilekit.detection.model import with_input_size

        model = with_input_size(model, input_shape[:2])
    qat = is_qat_model(model)
    io = resolve_io(quant, io, qat)
    resolution = tuple(int(side) for side in input_spec(model).shape[1:3])
    channels = int(input_spec(model).shape[3])
    mean, std = (config or {}).get("mean"), (config or {}).get("std")
    calib_data = calib_data or (config or {}).get("data")
    needs_calibration = quant in ("int8", "int16x8") and not qat
    if bias_correction is None:
        bias_correction = bool(card_export_defaults(name).get("bias_correction", False))
        if bias_correction and needs_calibration and quant == "int8":
            log(f"bias correction on: models/{name}.toml [export] (--no-bias-correction: off)")
    if needs_calibration and not calib_data:
        raise ValueError(f"quant {quant} needs calibration images: give --calib-data SPEC "
                         f"(a dataset spec, or '{RANDOM_DATA}' for a benchmark-only export)")
    out = Path(out) if out else default_out(name, quant, config)
    if out.suffix != ".tflite":
        raise ValueError(f"--out must end in .tflite; got {str(out)!r}")

    samples = None
    if calib_data:
        log(f"calibration: {calib_samples if needs_calibration else PARITY_SAMPLES} "
            f"samples of {calib_data}")
        count = calib_samples if needs_calibration else PARITY_SAMPLES
        samples = (detection_samples(calib_data, resolution, count) if detector
                   and calib_data != RANDOM_DATA else
                   dataset_samples(calib_data, resolution, count, mean, std))
    if keras_path is None and config is None:  # random-init zoo model
        images = samples if samples is not None else dataset_samples(
            RANDOM_DATA, resolution, BATCHNORM_SAMPLES, channels=channels)
        reestimate_batchnorm(model, images[:BATCHNORM_SAMPLES])
        log(f"BatchNorm statistics re-estimated on {min(len(images), BATCHNORM_SAMPLES)} "
            "calibration images (random-init zoo model)")
    postprocess, anchors = None, None
    if detector:  # boxes and scores (or NMS'd detections) come out of the file
        from mobilekit.detection.anchors import generate_anchors
        from mobilekit.detection.model import map_sizes
        from mobilekit.detection.postprocess import (fused_decoding_pays, inference_model,
                                                     nms_input_model)

        anchors = generate_anchors(resolution, map_sizes=map_sizes(model))
        training_form, model = model, (nms_input_model(model) if nms else inference_model(
            model, fused=fused_decoding_pays(quant)))
    if nms:
        from mobilekit.detection.postprocess import NMS_IOU, SCORE_THRESHOLD
        from mobilekit.export.nms import postprocess_options

        postprocess = postprocess_options(
            SCORE_THRESHOLD if score_threshold is None else score_threshold,
            NMS_IOU if nms_iou is None else nms_iou, max_detections)
    start = time.perf_counter()
    log(f"converting {name} to {quant} (io {io})" + (" + NMS in the graph" if nms else ""))
    # The PTQ box decoding keeps a float ELU per map (see check_float_decode_only); the NMS form
    # has no exp before the post-processing op.
    float_decode = detector and quant in ("int8", "int16x8") and not nms
    tflite = convert(model, quant, samples if needs_calibration else None, io=io,
                     allow_float_ops=allow_float_ops or float_decode, sparse=sparse,
                     s2d_input=s2d_input, calibration=calib_method, dense_quant=dense_quant,
                     bias_correction=bias_correction)
    if float_decode and not allow_float_ops:
        check_float_decode_only(tflite, name)
    if postprocess is not None:
        from mobilekit.export.nms import append_postprocess

        tflite = append_postprocess(tflite, anchors, postprocess)
    seconds = time.perf_counter() - start
    from mobilekit.export.metadata import build_metadata, embed_metadata
    from mobilekit.export.report import analyze

    meta = build_metadata(name, quant, input_spec(model).shape[1:],
                          labels=(config or {}).get("class_names"), mean=mean, std=std,
                          io=io, qat=qat, model_kwargs=(config or {}).get("model_kwargs",
                                                                           model_kwargs or {}),
                          **_layout_entry(model, s2d_input),
                          **({"postprocess": postprocess} if postprocess else {}))
    tflite = embed_metadata(tflite, meta)
    standard = _standard_metadata(name, resolution, detector, postprocess, s2d_input,
                                  (config or {}).get("class_names"), mean, std)
    if standard is not None:  # last: it appends the labels zip after the flatbuffer
        from mobilekit.export.tflite_metadata import embed_standard_metadata

        tflite = embed_standard_metadata(tflite, standard)
    report = analyze(tflite, gpu_runtime=gpu_check)
    if not report["float_ops"]:
        del report["float_op_list"]
    # A detector's MACs are its network's: the fused decoding layers compute the same
    # function (with fewer MACs in the score heads) and the profiler does not count them.
    report.update(_compute(training_form if detector else model))
    report.update({"model": name, "source": str(source), "quant": quant, "io": io, "qat": qat,
                   "float_decode": float_decode, "sparse": sparse,
                   "bias_correction": bool(bias_correction and needs_calibration
                                           and quant == "int8"),
                   "calibration": {"data": calib_data if needs_calibration else None,
                                   "samples": calib_samples if needs_calibration else 0,
                                   "method": ((calib_method if quant == "int8" else "minmax")
                                              if needs_calibration else None)},
                   # QAT files: tfmot trains Dense weights per tensor.
                   "dense_quant": ("per-tensor" if qat else dense_quant)
                   if quant == "int8" else None,
                   "conversion_seconds": round(seconds, 2)})
    report["standard_metadata"] = None if standard is None else {
        "name": "TFLITE_METADATA", "outputs": [t["name"] for t in standard["outputs"]],
        "associated_files": ["labels.txt"] if standard.get("labels") else []}
    parity_images = (samples[:PARITY_SAMPLES] if samples is not None else
                     dataset_samples(RANDOM_DATA, resolution, PARITY_SAMPLES, channels=channels))
    report["parity"] = (nms_parity(training_form, tflite, parity_images, postprocess, quant)
                        if postprocess else parity(model, tflite, parity_images, quant, atol))
    evaluation = (model, keras_path, eval_data, eval_samples, config)
    return _write(out, tflite, report, evaluation if eval_data else None, log)


def _compute(model):
    """MACs and trainable params counted by mobilekit's profiler (for GMAC/s and plots);
    None where a model holds a layer the profiler cannot count."""
    from mobilekit.profile import profile_model

    try:
        profile = profile_model(model)
    except (TypeError, ValueError, KeyError) as exc:
        return {"macs": None, "params": None, "compute_error": str(exc)}
    return {"macs": profile["macs"], "params": profile["params"]}


def _write(out, tflite, report, evaluation, log):
    """Temp .tflite -> optional evaluation -> rename; then the JSON report beside it."""
    from mobilekit.io import write_json_atomic

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".tflite")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(tflite)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual file mode
        if evaluation:
            model, keras_path, spec, limit, config = evaluation
            log(f"evaluating .tflite and keras on {spec}")
            report["eval"] = evaluate_pair(model, keras_path, Path(tmp), spec, limit, config)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    report["tflite_path"] = str(out)
    write_json_atomic(out.with_suffix(".json"), report)
    return out, report


def evaluate_pair(model, keras_path, tflite_path, spec, limit, config):
    """top-1 of the .tflite and of the Keras model on the same samples (train.evaluate)."""
    import contextlib

    from mobilekit.train.evaluate import evaluate

    mean, std = (config or {}).get("mean"), (config or {}).get("std")
    lite = evaluate(tflite_path, spec, mean=mean, std=std, limit=limit)
    scope = contextlib.nullcontext()
    if is_qat_model(model):
        from mobilekit.compress.qat import qat_scope

        scope = qat_scope()
    with tempfile.TemporaryDirectory() as folder, scope:
        if keras_path is None:  # a zoo model built in memory
            keras_path = Path(folder) / "model.keras"
            model.save(keras_path)
        ref = evaluate(keras_path, spec, mean=lite["mean"], std=lite["std"], limit=limit)
    keep = ("top1", "top5", "num_samples")
    return {"data": str(spec), "tflite": {k: lite[k] for k in keep},
            "keras": {k: ref[k] for k in keep},
            "top1_delta": lite["top1"] - ref["top1"]}


def _gpu_source(gpu):
    runtime = gpu.get("runtime")
    if not runtime:
        return " (static analyzer; no GPU accelerator here)"
    said = f" (LiteRT GPU accelerator: {runtime['accelerated']}"
    if runtime["fallback_ops"]:
        said += "; CPU fallback: " + ", ".join(
            f"{o['op']} ({o['reason']})" for o in runtime["fallback_ops"])
    if (runtime.get("adapter") or {}).get("software"):
        said += "; software adapter"
    if gpu.get("disagreement"):
        said += f"; the static analyzer said {gpu['static_compatible']}"
    return said + ")"


def summary_lines(path, report):
    """Human summary for the CLI."""
    x = report["xnnpack"]
    lines = [f"wrote {path} ({report['size_bytes'] / 1e6:.3f} MB) and "
             f"{Path(path).with_suffix('.json').name}",
             f"ops: {report['num_ops']}, float ops: {report['float_ops']}, max rank: "
             f"{report['max_tensor_rank']}, XNNPACK: {x['partitions']} partition(s) "
             f"{x['delegated_nodes']}/{x['total_nodes']} nodes, GPU-compatible: "
             f"{report['gpu_compatible']}{_gpu_source(report['gpu'])}"]
    p = report["parity"]
    lines.append(f"parity: max |tflite - keras| = {p['max_abs_diff']:.3g} over {p['samples']} "
                 f"samples" + ("" if p["ok"] is None else f" ({'ok' if p['ok'] else 'FAILED'}, "
                                                          f"atol {p['atol']:g})"))
    if "eval" in report:
        e = report["eval"]
        lines.append(f"top-1: tflite {e['tflite']['top1']:.4f} vs keras {e['keras']['top1']:.4f} "
                     f"on {e['tflite']['num_samples']} samples of {e['data']}")
    return lines

