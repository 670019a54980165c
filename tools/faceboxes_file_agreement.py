"""How closely one FaceBoxes .tflite file follows another on real images.

See docs/faceboxes_shipping.md ("int8 fidelity").

Both files run on the images of an annotation spec, warped to the reference file's input as
`mobilekit detect` does. For files that output boxes and scores per anchor: over the anchors
the reference scores >= --min-score, the score difference, the box IoU and the largest
corner error in pixels of the input. For files with NMS in the graph: each reference
detection >= --min-score against the other file's detection that overlaps it most.

    python tools/faceboxes_file_agreement.py fb_fp32.tflite fb_int8.tflite \\
        --data wider:../shared/data/faces/wider_face_sample
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def agreement(reference, other, images, min_score):
    """{"compared", "score_diff_max", "score_diff_mean", "iou_min", "iou_mean",
    "corner_px_max" (per-anchor files only)}."""
    from mobilekit.detection.boxes import iou_np

    per_anchor = not (reference.in_graph_nms or other.in_graph_nms)
    diffs, ious, corners = [], [], []
    for image in images:
        batch = reference.prepare(image)
        (rb, rs), (ob, os_) = reference.raw(batch), other.raw(batch)
        keep = rs >= min_score
        if not keep.any():
            continue
        if per_anchor:
            ious += [iou_np(r[None], o[None])[0, 0] for r, o in zip(rb[keep], ob[keep])]
            diffs += list(np.abs(rs[keep] - os_[keep]))
            scale = np.tile(np.asarray(reference.input_hw[::-1], np.float64), 2)
            corners.append((np.abs(rb[keep] - ob[keep]) * scale).max())
        elif len(ob):
            overlap = iou_np(rb[keep], ob)
            best = overlap.argmax(axis=1)
            ious += list(overlap.max(axis=1))
            diffs += list(np.abs(rs[keep] - os_[best]))
        else:
            ious += [0.0] * int(keep.sum())
    if not ious:
        return {"compared": 0}
    out = {"compared": len(ious), "score_diff_max": float(max(diffs, default=0.0)),
           "score_diff_mean": float(np.mean(diffs)) if diffs else None,
           "iou_min": float(min(ious)), "iou_mean": float(np.mean(ious))}
    if corners:
        out["corner_px_max"] = float(max(corners))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reference", help="the file to follow, e.g. the fp32 export")
    parser.add_argument("others", nargs="+", help="files compared with it (same input size)")
    parser.add_argument("--data", required=True, help="wider:/fddb:/xml: annotation spec")
    parser.add_argument("--min-score", type=float, default=0.3)
    parser.add_argument("--images", type=int, default=100)
    args = parser.parse_args(argv)

    from mobilekit.detection.data import load_samples, read_image
    from mobilekit.detection.postprocess import Detector

    images = [np.asarray(read_image(s.image)) for s in load_samples(args.data)[:args.images]]
    reference = Detector.load(args.reference)
    print(f"reference {args.reference} ({reference.input_hw[1]}x{reference.input_hw[0]}), "
          f"{len(images)} images of {args.data}, reference scores >= {args.min_score}")
    for path in args.others:
        other = Detector.load(path)
        if other.input_hw != reference.input_hw:
            raise SystemExit(f"{path} takes {other.input_hw}, the reference {reference.input_hw}")
        result = agreement(reference, other, images, args.min_score)
        print(f"{path}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                      for k, v in result.items()))


if __name__ == "__main__":
    main()
