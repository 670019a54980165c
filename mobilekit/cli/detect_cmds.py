"""`mobilekit detect` and `mobilekit eval-detector`: thin wrappers over mobilekit.detection."""
from pathlib import Path

import click

from mobilekit.cli.common import echo_json, input_size_option

MODEL_HELP = "A .tflite file, a .keras file or a run directory (its model.keras)."


def draw_boxes(image, boxes, color=(255, 0, 0), width=2):
    """Copy of a uint8 image with rectangle outlines (pixel boxes x1 y1 x2 y2)."""
    import numpy as np

    out = np.array(image, copy=True)
    h, w = out.shape[:2]
    for x1, y1, x2, y2 in np.asarray(boxes).reshape(-1, 4):
        x1, x2 = int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(x2), 0, w - 1))
        y1, y2 = int(np.clip(round(y1), 0, h - 1)), int(np.clip(round(y2), 0, h - 1))
        out[y1:y1 + width, x1:x2 + 1] = color
        out[max(y2 - width + 1, 0):y2 + 1, x1:x2 + 1] = color
        out[y1:y2 + 1, x1:x1 + width] = color
        out[y1:y2 + 1, max(x2 - width + 1, 0):x2 + 1] = color
    return out


def _encode(image, suffix):
    from mobilekit.keras import tf

    if suffix.lower() in (".jpg", ".jpeg"):
        return tf.io.encode_jpeg(image, quality=95).numpy()
    return tf.io.encode_png(image).numpy()


@click.command()
@click.argument("model_path", metavar="MODEL")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Write IMAGE.json and an annotated copy per image here (default: nothing written).")
@click.option("--json", "as_json", is_flag=True, help="Print detections as JSON.")
@click.option("--score-threshold", type=float, default=0.5, help="Keep faces scoring above this.")
@click.option("--nms-iou", type=float, default=0.3, help="NMS IoU threshold (official 0.3).")
@click.option("--threads", type=int, default=1, help="Interpreter threads for a .tflite model.")
@input_size_option(show_default="the model's input size",
                   help_text="Run a Keras detector (run directory, .keras) at WIDTHxHEIGHT, "
                             "e.g. 640x480 (width first); a .tflite file's size is fixed.")
def detect(model_path, images, out_dir, as_json, score_threshold, nms_iou, threads, input_size):
    """Detect faces in images; boxes are pixel coordinates of the original image.

    Each image is warped to the model's input size; decoding happens in the model (or the
    .tflite) and NMS in NumPy, or in the file for one exported with --nms (its IoU and
    score threshold apply; a higher --score-threshold filters further). With --out, writes NAME.json ([{"box": [x1, y1, x2, y2],
    "score": s}]) and NAME_faces.png/.jpg with the boxes drawn.

    \b
    Examples:
      mobilekit detect runs/train/faceboxes/ photo.jpg --out detections/
      mobilekit detect faceboxes.tflite a.jpg b.png --json --score-threshold 0.3
      mobilekit detect runs/train/faceboxes/ photo.jpg --input-size 640x480
    """
    import numpy as np

    from mobilekit.cli.common import write_atomic, write_json_atomic
    from mobilekit.detection.data import read_image
    from mobilekit.detection.postprocess import Detector
    from mobilekit.errors import check_range

    check_range("--score-threshold", score_threshold, 0, 1, low_inclusive=True, high_inclusive=False)
    check_range("--nms-iou", nms_iou, 0, 1)
    detector = Detector.load(model_path, num_threads=threads, input_hw=input_size)
    results = {}
    for path in images:
        image = np.asarray(read_image(str(path)))
        boxes, scores = detector.detect(image, score_threshold, nms_iou)
        found = [{"box": [round(float(v), 2) for v in b], "score": round(float(s), 5)}
                 for b, s in zip(boxes, scores)]
        results[str(path)] = found
        if out_dir:
            stem, suffix = Path(path).stem, Path(path).suffix
            write_json_atomic(Path(out_dir) / f"{stem}.json", found)
            suffix = suffix if suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
            write_atomic(Path(out_dir) / f"{stem}_faces{suffix}",
                         _encode(draw_boxes(image, boxes), suffix), mode="wb")
        if not as_json:
            click.echo(f"{path}: {len(found)} face(s)")
            for d in found:
                click.echo(f"  {d['score']:.3f}  " + " ".join(f"{v:.1f}" for v in d["box"]))
    if as_json:
        echo_json(results)


@click.command("eval-detector")
@click.argument("model_path", metavar="[MODEL]", required=False)
@click.option("--data", "spec", required=True,
              help="wider:ROOT, fddb:ROOT or xml:FILE_OR_DIR (see mobilekit.detection.data).")
@click.option("--split", default="val", help="WIDER FACE split (train or val).")
@click.option("--min-face", type=float, default=0.0,
              help="Ignore faces smaller than this at the model input (px).")
@click.option("--score-threshold", type=float, default=0.01, help="Detections kept for the PR curve.")
@click.option("--nms-iou", type=float, default=0.3, help="NMS IoU threshold.")
@click.option("--matching", type=click.Choice(["voc", "coco"]), default="voc",
              help="ap50 matching: voc = PASCAL devkit (each detection takes the face it overlaps "
                   "most; taken twice -> FP); coco = best still-unmatched face (higher in crowds).")
@click.option("--fddb-roc", "fddb_roc", type=click.Path(file_okay=False), default=None,
              help="FDDB: write DiscROC.txt and ContROC.txt (the official format) in this "
                   "folder (default: not written).")
@click.option("--predictions", type=click.Path(exists=True), default=None,
              help="Evaluate prediction files instead of a MODEL: a WIDER submission folder "
                   "(name / count / `left top width height score` per image) or an FDDB "
                   "detection file (the same blocks for every image); default: run MODEL.")
@click.option("--pr-curve", type=click.Path(dir_okay=False), default=None,
              help="Write the PR curves as PNG here, each labelled with its protocol "
                   "(needs matplotlib: the `plot` extra).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=None,
              help="Also write the metrics JSON here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.option("--threads", type=int, default=1, help="Interpreter threads for a .tflite model.")
@input_size_option(show_default="the model's input size",
                   help_text="Run a Keras detector (run directory, .keras) at WIDTHxHEIGHT, "
                             "e.g. 640x480 (width first); a .tflite file's size is fixed.")
@click.option("--scale", "scales", type=float, multiple=True, default=(),
              show_default="none: warp to the model's input",
              help="Multi-scale inference as the official test scripts run it: the image "
                   "resized by this factor is the input (FDDB 3.0, PASCAL 2.5, AFW 1.0); "
                   "repeat for several scales (detections merged, NMS again). Keras "
                   "detectors only; the cost is reported.")
def eval_detector(model_path, spec, split, min_face, score_threshold, nms_iou, matching, fddb_roc,
                  predictions, pr_curve, out_file, as_json, threads, input_size, scales):
    """Evaluate a face detector, each number by a named protocol.

    \b
    ap50   AP at IoU 0.5, all-point interpolation (VOC 2010+), --matching voc (the
           PASCAL devkit, default) or coco.
    wider  the WIDER FACE protocol (wondervictor/WiderFace-Evaluation logic); easy/
           medium/hard only with the official .mat keep lists.
    fddb   the official FDDB evaluate: Hungarian matching, discrete (IoU > 0.5) and
           continuous (summed IoU) TPR at 1000 false positives.

    \b
    Examples:
      mobilekit eval-detector runs/train/faceboxes/ --data wider:data/WIDER --json
      mobilekit eval-detector faceboxes.tflite --data fddb:data/FDDB --fddb-roc roc/
      mobilekit eval-detector faceboxes.tflite --data xml:data/voc --matching coco
      mobilekit eval-detector --predictions preds/ --data wider:data/WIDER
      mobilekit eval-detector runs/train/faceboxes/ --data fddb:data/FDDB --scale 3.0

    \b
    Prediction files: an image they name that is not in the set is an error; an image of
    the set they do not name has no detections.
    """
    from mobilekit.cli.common import write_json_atomic
    from mobilekit.detection.evaluate import evaluate_detector
    from mobilekit.detection.postprocess import Detector

    if (model_path is None) == (predictions is None):
        raise click.UsageError("give a MODEL or --predictions (one of the two)")
    if scales and (input_size or predictions):
        raise click.UsageError("--scale sets the input from each image; not with --input-size "
                               "or --predictions")
    if any(s <= 0 for s in scales):
        raise click.UsageError(f"--scale must be positive; got {', '.join(map(str, scales))}")
    detector = (Detector.load(model_path, num_threads=threads, input_hw=input_size)
                if model_path else None)
    if scales:
        if detector.interpreter is not None or detector.training_model is None:
            raise click.UsageError("--scale needs a Keras detector (run directory or .keras): a "
                                   ".tflite file has a fixed input and constant anchors")
        from mobilekit.detection.multiscale import ScaledDetector

        fixed_hw = detector.input_hw
        detector = ScaledDetector(detector.training_model, scales)
    result = evaluate_detector(detector, spec, split, min_face, score_threshold, nms_iou, pr_curve,
                               matching=matching, fddb_roc_dir=fddb_roc, predictions=predictions)
    if scales:
        result["multiscale"] = detector.cost(_macs_per_pixel(detector.model, fixed_hw))
    result["model"] = str(model_path) if model_path else None
    if out_file:
        write_json_atomic(out_file, result)
    if as_json:
        echo_json(result)
        return
    p = result["ap50_protocol"]
    click.echo(f"{result['images']} images, {result['faces']} faces, AP50 {result['ap50']:.4f} "
               f"({p['matching']} matching, {p['interpolation']})")
    if result.get("images_without_predictions"):
        click.echo(f"{result['images_without_predictions']} images without predictions "
                   f"(no detections)")
    if "wider" in result:
        w = result["wider"]
        parts = [f"{k} {w[k]:.4f}" if w[k] is not None else f"{k} n/a"
                 for k in ("all", "easy", "medium", "hard")]
        click.echo("WIDER protocol: " + ", ".join(parts) + f"  ({w['note']})")
    if "fddb" in result:
        f = result["fddb"]
        click.echo(f"FDDB (Hungarian matching): TPR discrete {f['tpr_at_1000_fp']:.4f}, continuous "
                   f"{f['tpr_cont_at_1000_fp']:.4f} at {f['fp_reached']} FP (of 1000) over "
                   f"{f['num_faces']} faces")
        for path in f.get("roc_files", []):
            click.echo(f"FDDB ROC: {path}")
    if pr_curve:
        click.echo(f"PR curve: {result['pr_curve']}")
    if "multiscale" in result:
        m = result["multiscale"]
        click.echo(f"scales {', '.join(f'{s:g}' for s in m['scales'])}: "
                   f"{m['seconds_per_image'] * 1e3:.1f} ms/image (1 thread, host), "
                   f"{m['input_pixels_per_image'] / 1e6:.2f} Mpx and "
                   f"{m.get('macs_per_image', 0) / 1e9:.2f} GMAC per image")


def _macs_per_pixel(model, input_hw):
    """MACs per input pixel of a convolutional detector, from its profile at one size."""
    from mobilekit.profile import profile_model

    try:
        return profile_model(model)["macs"] / (input_hw[0] * input_hw[1])
    except (TypeError, ValueError, KeyError):
        return None

