"""What each delegate really does with a .tflite file: coverage, numerics, timing, verdict.

`delegate_report(path, ...)` measures, for each delegate asked (gpu, xnnpack):

* coverage, from the runtime itself: `accelerated` full / partial / none, the ops left on the
  CPU with the delegate's own reason (GPU: LiteRT's GPU accelerator in a worker process,
  mobilekit.bench.gpu; XNNPACK: the interpreter's partitions), next to the static view
  (`tf.lite.experimental.Analyzer` for the GPU) and a `disagreement` flag when they differ;
* numerics against the reference kernels (BUILTIN_WITHOUT_DEFAULT_DELEGATES) on the same
  inputs (validation images of `data`, else seeded random ones): per output the max absolute
  error, the max relative error (max |delegate - reference| / max |reference| of that output),
  and for integer outputs the error in quantization steps; classifiers: top-1 agreement
  (same arg-max) and top-5 agreement (same set of five classes); detectors (decoded boxes
  [1, A, 4] + scores [1, A]): for anchors the reference scores >= 0.5, the IoU of the
  delegate's box with the reference box (min and mean), and the max score difference;
* timing through the host runner (mobilekit.bench.host), labelled with the GPU adapter:
  `software: true` timings are the CPU emulating a GPU, never GPU figures.

Bad arguments raise ValueError; a delegate that fails gives a row with `ok: False`.
"""
import os
from pathlib import Path

import numpy as np

from mobilekit.bench.gpu import NO_GPU, PRECISIONS, delegated_nodes, run_gpu
from mobilekit.bench.host import node_count
from mobilekit.errors import check_choice

__all__ = ["delegate_report", "verdict", "REPORT_DELEGATES"]

REPORT_DELEGATES = ("gpu", "xnnpack")
DETECTOR_SCORE = 0.5  # anchors compared for box IoU: the reference calls them faces


def delegate_report(path, delegates=("gpu", "xnnpack"), precisions=("fp16",), data=None,
                    samples=100, timing=True, threads=1, timing_runs=20):
    """One dict per model: inputs' source, and one row per delegate (× GPU precision)."""
    path = Path(path)
    for d in delegates:
        check_choice("delegate", d, REPORT_DELEGATES)
    for p in precisions:
        check_choice("precision", p, PRECISIONS)
    if not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1; got {samples!r}")
    if not path.is_file():
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    from mobilekit.export.metadata import read_metadata

    meta = read_metadata(path) or {}
    inputs, source = model_inputs(path, meta, data, samples)
    reference = run_interpreter(path, inputs, delegated=False)
    kind = _task(meta, reference)
    rows = []
    for delegate in delegates:
        for precision in (precisions if delegate == "gpu" else (None,)):
            row = _delegate_row(path, delegate, precision, inputs, reference, kind, threads)
            row["file_quant"] = meta.get("quant")
            if timing and row["ok"]:
                row["timing"] = _timing(path, delegate, precision, threads, timing_runs)
            row["verdict"] = verdict(row)
            rows.append(row)
    return {"model": str(path), "model_name": meta.get("model"), "quant": meta.get("quant"),
            "task": kind, "inputs": source, "samples": len(next(iter(inputs.values()))),
            "rows": rows}


# ---------------------------------------------------------------- inputs and runs


def model_inputs(path, meta, data, samples):
    """({"t<index>": array [S, *input shape]}, description) — real images when `data`."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(path)).get_input_details()
    if data is not None and len(details) == 1 and len(details[0]["shape"]) == 4:
        batch = _dataset_images(details[0], meta, data, samples)
        split = "annotated" if _is_detector(meta) else "validation"
        return {f"t{details[0]['index']}": batch}, f"{data} {split} images"
    rng = np.random.default_rng(0)
    arrays = {}
    for d in details:
        arrays[f"t{d['index']}"] = np.stack([_random_input(d, rng) for _ in range(samples)])
    return arrays, "random inputs (seed 0)"


def _random_input(detail, rng):
    shape, dtype = [int(v) for v in detail["shape"]], np.dtype(detail["dtype"])
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def _dataset_images(detail, meta, data, samples):
    """Images preprocessed as `mobilekit eval` / `mobilekit detect` do, quantized for int
    inputs: a classifier's validation images (square input), a detector's annotated images
    (wider:/fddb:/xml: specs) warped to its input whatever its aspect."""
    from mobilekit.export.stem import apply_input_layout, input_layout
    from mobilekit.train.evaluate import quantize

    layout = input_layout(meta)
    size = layout["image_size"] if layout else [int(v) for v in detail["shape"][1:3]]
    images = (_detector_images(data, size, samples) if _is_detector(meta)
              else _classifier_images(data, size, samples, meta))
    return np.stack([quantize(apply_input_layout(batch, layout), detail) for batch in images])


def _classifier_images(data, size, samples, meta):
    from mobilekit.data import load_dataset

    if size[0] != size[1]:
        raise ValueError(f"--data needs a square classifier input; this one is {size}")
    ds, _ = load_dataset(data, "val", int(size[0]), 1, training=False,
                         mean=meta.get("mean"), std=meta.get("std"))
    return [images.numpy() for images, _labels in ds.take(samples)]


def _detector_images(data, size, samples):
    from mobilekit.export.pipeline import detection_samples

    return [image[None] for image in detection_samples(data, tuple(size), samples)]


def run_interpreter(path, inputs, delegated, threads=1):
    """{tensor index: outputs [S, ...]} with XNNPACK (delegated) or the reference kernels."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = OpResolverType.AUTO if delegated else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interp = Interpreter(model_path=str(path), num_threads=threads,
                         experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    count = len(next(iter(inputs.values())))
    outs = {int(d["index"]): [] for d in interp.get_output_details()}
    for i in range(count):
        for key, values in inputs.items():
            interp.set_tensor(int(key[1:]), values[i])
        interp.invoke()
        for index in outs:
            outs[index].append(interp.get_tensor(index).copy())
    return {k: np.stack(v) for k, v in outs.items()}


def _delegate_row(path, delegate, precision, inputs, reference, kind, threads):
    row = {"delegate": delegate, "precision": precision, "ok": False, "error": None,
           "accelerated": None, "fallback_ops": [], "delegated_nodes": None, "total_nodes": None,
           "gpu_adapter": None, "static": None, "disagreement": None, "numerics": None,
           "timing": None}
    if delegate == "gpu":
        res = run_gpu(path, precision=precision, threads=threads, inputs=inputs)
        row.update(gpu_adapter=res["adapter"], fallback_ops=res["fallback_ops"],
                   accelerated=res["accelerated"], error=res["error"],
                   gpu_only_error=res["gpu_only_error"])
        row["static"] = _gpu_static(path)
        if not res["ok"]:
            return row
        total = node_count(path)
        row["delegated_nodes"], row["total_nodes"] = delegated_nodes(res, total), total
        outputs = res["outputs"]
        row["disagreement"] = bool(row["static"]["compatible"]) != (res["accelerated"] == "full")
    else:
        from mobilekit.export.report import xnnpack_partitions

        partitions, delegated, left = xnnpack_partitions(Path(path).read_bytes())
        total = node_count(path)
        row.update(delegated_nodes=delegated, total_nodes=total, partitions=partitions,
                   fallback_ops=[{"op": op, "reason": f"{n} node(s) not taken by XNNPACK"}
                                 for op, n in left.items()])
        row["accelerated"] = "full" if delegated >= total else ("none" if not delegated else "partial")
        outputs = run_interpreter(path, inputs, delegated=True, threads=threads)
    row["numerics"] = compare_outputs(path, reference, outputs, kind)
    row["ok"] = True
    return row


def _gpu_static(path):
    """TensorFlow's static GPU analyzer (with mobilekit's rank / dynamic-shape checks)."""
    try:
        from mobilekit.export.report import static_gpu_view

        return static_gpu_view(Path(path).read_bytes())
    except Exception as exc:  # the analyzer is advice; its failure must not hide the runtime
        return {"compatible": None, "messages": [f"analyzer failed: {exc}"]}


def _timing(path, delegate, precision, threads, runs):
    from mobilekit.bench.host import run_host

    row = run_host(path, delegate, threads, warmup_runs=2, warmup_min_secs=0.0, num_runs=runs,
                   min_secs=0.0, max_secs=60.0, gpu_precision=precision or "fp16")
    return {"ok": row["ok"], "error": row["error"], "median_us": row["inference_median_us"],
            "min_us": row["inference_min_us"], "count": row["inference_count"],
            "software": (row.get("gpu_adapter") or {}).get("software") if delegate == "gpu"
            else None}


# ---------------------------------------------------------------- numerics


def _is_detector(meta):
    return str(meta.get("model") or "").startswith("faceboxes")


def _task(meta, reference):
    shapes = sorted(len(v.shape) for v in reference.values())
    if _is_detector(meta) or shapes == [3, 4]:
        return "detector"
    if len(reference) == 1 and next(iter(reference.values())).ndim == 3:
        return "classifier"  # [S, 1, classes]
    return "other"


def compare_outputs(path, reference, outputs, kind):
    from ai_edge_litert.interpreter import Interpreter

    order = Interpreter(model_path=str(path)).get_output_details()
    details = {int(d["index"]): d for d in order}
    valid = _detections_valid(order, reference, outputs)
    per_output = []
    deq_ref, deq_out = {}, {}
    for index, ref in reference.items():
        got = np.asarray(outputs[index]).reshape(ref.shape)
        d = details[index]
        entry = {"name": d["name"], "shape": [int(v) for v in d["shape"]]}
        keep = valid.get(index, np.ones(ref.shape, bool))
        if np.issubdtype(ref.dtype, np.integer):
            steps = np.abs(got.astype(np.int64) - ref.astype(np.int64))[keep]
            entry["max_steps"] = int(steps.max(initial=0))
        deq_ref[index], deq_out[index] = _dequantize(ref, d), _dequantize(got, d)
        diff = np.abs(deq_out[index] - deq_ref[index])[keep]
        scale = float(np.abs(deq_ref[index][keep]).max(initial=0.0))
        entry["max_abs"] = float(diff.max(initial=0.0))
        entry["max_rel"] = float(diff.max(initial=0.0) / scale) if scale > 0 else None
        entry["output_scale"] = scale
        per_output.append(entry)
    out = {"outputs": per_output}
    if kind == "classifier":
        out.update(_agreement(next(iter(deq_ref.values())), next(iter(deq_out.values()))))
    elif kind == "detector" and valid:
        out.update(_nms_agreement(order, deq_ref, deq_out, valid))
    elif kind == "detector":
        out.update(_detector_agreement(deq_ref, deq_out))
    return out


def _detections_valid(order, reference, outputs):
    """For a file ending in TFLite_Detection_PostProcess (outputs boxes [1, K, 4], classes,
    scores [1, K], count [1]): {output index: mask of the detection slots both runs filled};
    the op leaves the slots past its count as they were, so they are not compared. {} for
    other files."""
    shapes = [tuple(int(v) for v in d["shape"]) for d in order]
    if len(order) != 4 or shapes[3] != (1,) or shapes[0][-1] != 4:
        return {}
    count = int(order[3]["index"])
    filled = np.minimum(np.asarray(reference[count]).reshape(-1),
                        np.asarray(outputs[count]).reshape(-1)).astype(np.int64)
    slots = shapes[1][-1]
    per_slot = np.arange(slots)[None, :] < filled[:, None]  # [samples, K]
    masks = {}
    for d in order[:3]:
        shape = np.asarray(reference[int(d["index"])]).shape
        mask = per_slot.reshape(len(filled), 1, slots, *([1] * (len(shape) - 3)))
        masks[int(d["index"])] = np.broadcast_to(mask, shape)
    return masks


def _nms_agreement(order, ref, got, valid):
    """Counts, and each confident reference detection (score >= DETECTOR_SCORE) matched to
    the delegate's detection of highest IoU in the same image, with the score difference of
    that pair: the op sorts by score, so near-equal scores may swap slots and a detection
    near the threshold may be in one run only (see _detections_valid for the slots)."""
    from mobilekit.detection.boxes import iou_np

    boxes, _, scores, count = (int(d["index"]) for d in order)
    ious, diffs, delegate_faces = [], [], 0
    for i in range(len(ref[count])):
        rb, rs = _filled(ref, boxes, scores, count, i)
        gb, gs = _filled(got, boxes, scores, count, i)
        delegate_faces += int((gs >= DETECTOR_SCORE).sum())
        faces = rs >= DETECTOR_SCORE
        if not faces.any():
            continue
        if not len(gb):
            ious += [0.0] * int(faces.sum())
            continue
        overlap = iou_np(rb[faces], gb)
        best = overlap.argmax(axis=1)
        ious += overlap[np.arange(len(best)), best].tolist()
        diffs += np.abs(rs[faces] - gs[best]).tolist()
    out = {"counts_equal": bool(np.array_equal(ref[count], got[count])),
           "detections_compared": int(valid[scores].sum()),
           "faces_compared": len(ious), "delegate_faces": delegate_faces,
           "max_score_diff": max(diffs, default=0.0),
           "min_box_iou": min(ious) if ious else None,
           "mean_box_iou": float(np.mean(ious)) if ious else None}
    return out


def _filled(outputs, boxes, scores, count, i):
    """(boxes [n, 4], scores [n]) of sample i's filled detection slots."""
    n = int(np.asarray(outputs[count][i]).reshape(-1)[0])
    return (np.asarray(outputs[boxes][i]).reshape(-1, 4)[:n],
            np.asarray(outputs[scores][i]).reshape(-1)[:n])


def _dequantize(values, detail):
    if not np.issubdtype(values.dtype, np.integer):
        with np.errstate(invalid="ignore"):  # NMS files' unfilled slots hold stale bits
            return values.astype(np.float64)
    scale, zero = detail["quantization"]
    return (values.astype(np.float64) - zero) * scale


def _agreement(ref, got):
    ref, got = ref.reshape(len(ref), -1), got.reshape(len(got), -1)
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    k = min(5, ref.shape[-1])
    got5 = np.argsort(-got, axis=-1, kind="stable")[:, :k]
    top5 = (got5 == ref.argmax(-1)[:, None]).any(-1)
    return {"top1_agreement": top1, "top5_agreement": float(np.mean(top5))}


def _detector_agreement(ref, got):
    boxes_key = next(k for k, v in ref.items() if v.ndim == 4)
    scores_key = next(k for k, v in ref.items() if v.ndim == 3)
    rb, gb = ref[boxes_key].reshape(-1, 4), got[boxes_key].reshape(-1, 4)
    rs, gs = ref[scores_key].reshape(-1), got[scores_key].reshape(-1)
    faces = rs >= DETECTOR_SCORE
    out = {"max_score_diff": float(np.abs(rs - gs).max()), "faces_compared": int(faces.sum())}
    if faces.any():
        iou = _pairwise_iou(rb[faces], gb[faces])
        out.update(min_box_iou=float(iou.min()), mean_box_iou=float(iou.mean()))
    else:
        out.update(min_box_iou=None, mean_box_iou=None)
    return out


def _pairwise_iou(a, b):
    """IoU of a[i] with b[i] (corner boxes)."""
    lt, rb = np.maximum(a[:, :2], b[:, :2]), np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area = lambda x: np.prod(np.clip(x[:, 2:] - x[:, :2], 0, None), axis=1)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)


# ---------------------------------------------------------------- verdict


def verdict(row):
    """One line a person can act on."""
    name = "GPU" if row["delegate"] == "gpu" else "XNNPACK"
    if row["delegate"] == "gpu" and row.get("precision"):
        name += f" ({row['precision']})"
    if not row["ok"]:
        return f"{name}: failed - {row['error']}"
    where = {"full": f"fully on {name}", "partial": f"partly on {name}",
             "none": f"not on {name}"}[row["accelerated"]]
    if row["fallback_ops"] and row["accelerated"] != "full":
        where += " (CPU: " + ", ".join(sorted({o["op"] for o in row["fallback_ops"]})) + ")"
    num = row["numerics"] or {}
    if "top1_agreement" in num:
        where += f", top-1 agreement {100 * num['top1_agreement']:.1f} %"
    elif "counts_equal" in num:  # a file with NMS in the graph
        where += (f", {num['detections_compared']} detections compared"
                  + ("" if num["counts_equal"] else " (the counts differ)")
                  + f"; faces (score >= {DETECTOR_SCORE}) {num['faces_compared']} / "
                  f"{num['delegate_faces']} with the delegate")
        if num["min_box_iou"] is not None:
            where += (f", best-match box IoU >= {num['min_box_iou']:.3f}, score diff <= "
                      f"{num['max_score_diff']:.3f}")
    elif num.get("min_box_iou") is not None:
        where += (f", box IoU >= {num['min_box_iou']:.3f}, score diff <= "
                  f"{num['max_score_diff']:.3f}")
    elif num.get("outputs"):
        rel = max((o["max_rel"] or 0.0) for o in num["outputs"])
        where += f", max relative error {rel:.2g}"
    if row.get("disagreement"):
        where += "; the static analyzer disagrees"
    if row["delegate"] == "gpu" and row.get("file_quant") == "int8":
        # The delegate dequantizes int8 weights and computes in float (fp16 by default).
        where += "; int8 file computed in float by the GPU: ship the fp16 file for GPU"
    adapter = row.get("gpu_adapter") or {}
    if adapter.get("software"):
        where += " [software adapter: timings are CPU emulation]"
    return where


def no_gpu(report):
    """The first row's error when no GPU accelerator could be created at all, else None."""
    for row in report["rows"]:
        if row["delegate"] == "gpu" and not row["ok"] and str(row["error"]).startswith(NO_GPU):
            return row["error"]
    return None


def default_out_name(path):
    return Path(os.fspath(path)).stem
