"""Face-detector evaluation: VOC AP at IoU 0.5, the WIDER FACE protocol, the FDDB ROC.

* `ap50`: PASCAL-VOC style (all-point interpolated area under the PR curve). Detections
  are matched greedily by score to unmatched faces with IoU >= 0.5; a detection that
  matches an *ignored* face (WIDER invalid, VOC difficult, or smaller than `min_face`) is
  neither a TP nor an FP, as in the WIDER protocol.
* WIDER FACE (`wider_protocol`): a NumPy port of the widely used Python evaluation
  (wondervictor/WiderFace-Evaluation): scores min-max normalised over the set, 1000
  thresholds, per-image recall/proposal counting, faces outside the subset's keep list
  ignored. The Easy/Medium/Hard keep lists come only from the official
  `wider_{easy,medium,hard}_val.mat` (EdgeBox-based, not derivable from the attributes);
  when they are present under ROOT/eval_tools/ground_truth/ (and SciPy is installed) the
  three APs are computed; otherwise only the "all valid faces" setting is reported and
  easy/medium/hard are null.
* FDDB (`fddb_discrete`): rectangles against the official ellipses, IoU computed on the
  pixel grid, discrete score (IoU > 0.5 counts 1), TPR at 1000 false positives. The
  official `evaluate` matches with the Hungarian algorithm; this uses greedy matching by
  score (equal unless detections compete for faces). With fewer than 1000 FPs in total
  (any small set) the TPR at the last threshold is reported with the FP count reached.
"""
from pathlib import Path

import numpy as np

from mobilekit.detection.boxes import iou_np

IOU = 0.5
WIDER_THRESHOLDS = 1000
FDDB_FP = 1000


def voc_ap(recall, precision):
    """All-point interpolated AP (VOC 2010+; also the WIDER port's voc_ap)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def match_image(det_boxes, det_scores, gt_boxes, gt_ignore, iou_threshold=IOU):
    """Per detection (in score order): 1 = TP, 0 = FP, -1 = matched an ignored face."""
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    result = np.zeros(len(order), np.int64)
    if len(gt_boxes) == 0 or len(order) == 0:
        return order, result
    overlaps = iou_np(np.asarray(det_boxes)[order], gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for k in range(len(order)):
        # Prefer the best unmatched counted face; else an ignored face absorbs it.
        cand = np.where(~taken & ~gt_ignore & (overlaps[k] >= iou_threshold), overlaps[k], -1)
        if cand.max() >= 0:
            j = int(cand.argmax())
            taken[j] = True
            result[k] = 1
        elif np.any(gt_ignore & (overlaps[k] >= iou_threshold)):
            result[k] = -1
    return order, result


def average_precision(detections, ground_truth, iou_threshold=IOU):
    """detections: per image (boxes [K, 4], scores [K]); ground_truth: per image
    (boxes [G, 4], ignore [G]). Returns dict(ap, precision, recall, num_faces)."""
    scores, flags = [], []
    num_faces = 0
    for (boxes, sc), (gt, ignore) in zip(detections, ground_truth):
        gt = np.asarray(gt, np.float64).reshape(-1, 4)
        ignore = np.asarray(ignore, bool).reshape(-1)
        num_faces += int((~ignore).sum())
        order, result = match_image(boxes, sc, gt, ignore, iou_threshold)
        scores.append(np.asarray(sc, np.float64)[order])
        flags.append(result)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    flags = np.concatenate(flags) if flags else np.zeros(0, np.int64)
    keep = flags >= 0
    scores, flags = scores[keep], flags[keep]
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(flags[order] == 1)
    fp = np.cumsum(flags[order] == 0)
    recall = tp / max(num_faces, 1)
    precision = tp / np.maximum(tp + fp, 1)
    ap = voc_ap(recall, precision) if num_faces else 0.0
    return {"ap": ap, "precision": precision, "recall": recall, "num_faces": num_faces,
            "scores": scores[order]}


# ---------------------------------------------------------------- WIDER FACE protocol
def _wider_image_eval(pred, gt, keep, iou_threshold):
    """The port's image_eval: pred [K, 5] (x1 y1 x2 y2 score, sorted by score desc)."""
    pred_recall = np.zeros(len(pred))
    recall_list = np.zeros(len(gt))
    proposal_list = np.ones(len(pred))
    if len(gt) == 0:
        return pred_recall, proposal_list
    # The port widens boxes by one pixel (MATLAB-style inclusive areas).
    p, g = pred[:, :4].copy(), gt.copy()
    p[:, 2:] += 1
    g[:, 2:] += 1
    overlaps = iou_np(p, g)
    for h in range(len(pred)):
        j = int(overlaps[h].argmax())
        if overlaps[h, j] >= iou_threshold:
            if not keep[j]:
                recall_list[j] = -1
                proposal_list[h] = -1
            elif recall_list[j] == 0:
                recall_list[j] = 1
        pred_recall[h] = np.sum(recall_list == 1)
    return pred_recall, proposal_list


def wider_ap(detections, gt_boxes, keep_lists, iou_threshold=IOU, thresh_num=WIDER_THRESHOLDS):
    """AP of one WIDER setting. detections: per image (pixel boxes, scores); gt_boxes per
    image; keep_lists: per image bool mask of the faces counted in this setting."""
    all_scores = np.concatenate([np.asarray(s, np.float64) for _, s in detections] or [np.zeros(0)])
    lo, hi = (all_scores.min(), all_scores.max()) if all_scores.size else (0.0, 1.0)
    span = hi - lo if hi > lo else 1.0
    pr = np.zeros((thresh_num, 2))
    count = 0
    for (boxes, scores), gt, keep in zip(detections, gt_boxes, keep_lists):
        keep = np.asarray(keep, bool)
        count += int(keep.sum())
        if len(scores) == 0 or keep.sum() == 0:
            continue
        order = np.argsort(-np.asarray(scores), kind="stable")
        pred = np.concatenate([np.asarray(boxes, np.float64)[order],
                               ((np.asarray(scores, np.float64)[order] - lo) / span)[:, None]], 1)
        pred_recall, proposals = _wider_image_eval(pred, np.asarray(gt, np.float64), keep,
                                                   iou_threshold)
        for t in range(thresh_num):
            idx = np.nonzero(pred[:, 4] >= 1 - (t + 1) / thresh_num)[0]
            if len(idx):
                last = idx[-1]
                pr[t, 0] += np.sum(proposals[:last + 1] == 1)
                pr[t, 1] += pred_recall[last]
    precision = np.divide(pr[:, 1], pr[:, 0], out=np.zeros(thresh_num), where=pr[:, 0] > 0)
    recall = pr[:, 1] / max(count, 1)
    return voc_ap(recall, precision)


def wider_keep_lists(root, samples):
    """{setting: per-sample keep masks} from the official .mat files, or {} when absent."""
    gt_dir = Path(root) / "eval_tools" / "ground_truth"
    files = {s: gt_dir / f"wider_{s}_val.mat" for s in ("easy", "medium", "hard")}
    if not all(f.exists() for f in files.values()):
        return {}
    try:
        from scipy.io import loadmat
    except ImportError:
        return {}
    out = {}
    for setting, f in files.items():
        mat = loadmat(str(f))
        lookup = {}
        for event, names, keeps in zip(mat["event_list"], mat["file_list"], mat["gt_list"]):
            for name, keep in zip(names[0], keeps[0]):
                lookup[str(name[0][0])] = np.asarray(keep[0]).reshape(-1).astype(int) - 1
        masks = []
        for s in samples:
            stem = Path(s.extra.get("name", s.image)).stem
            mask = np.zeros(len(s.boxes), bool)
            idx = lookup.get(stem, np.zeros(0, int))
            mask[idx[idx < len(mask)]] = True
            masks.append(mask)
        out[setting] = masks
    return out


def wider_protocol(detections, samples, root):
    """{"all": AP over valid faces, "easy"/"medium"/"hard": AP or None, "note": ...}."""
    gt = [s.boxes for s in samples]
    result = {"all": wider_ap(detections, gt, [~s.ignore for s in samples])}
    keeps = wider_keep_lists(root, samples)
    for setting in ("easy", "medium", "hard"):
        result[setting] = wider_ap(detections, gt, keeps[setting]) if keeps else None
    result["note"] = ("easy/medium/hard from the official .mat keep lists" if keeps else
                      "easy/medium/hard need eval_tools/ground_truth/wider_{easy,medium,hard}_val.mat "
                      "(and SciPy); 'all' counts every valid face with the same protocol")
    return result


# ---------------------------------------------------------------- FDDB
def ellipse_mask(ellipse, shape):
    major, minor, angle, cx, cy = ellipse
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64) + 0.5
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / major) ** 2 + (v / minor) ** 2 <= 1.0


def rect_ellipse_iou(box, ellipse, shape):
    """IoU of a pixel rectangle with an ellipse region, counted on the pixel grid."""
    mask = ellipse_mask(ellipse, shape)
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    rect = np.zeros(shape, bool)
    rect[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    union = np.sum(mask | rect)
    return float(np.sum(mask & rect) / union) if union else 0.0


def fddb_discrete(detections, samples, image_shapes, fp_limit=FDDB_FP):
    """{"tpr_at_1000_fp" (or at the FPs reached), "fp_reached", "num_faces"}."""
    scores, flags, faces = [], [], 0
    for (boxes, sc), s, shape in zip(detections, samples, image_shapes):
        ellipses = s.extra.get("ellipses", np.zeros((0, 5)))
        faces += len(ellipses)
        order = np.argsort(-np.asarray(sc), kind="stable")
        taken = np.zeros(len(ellipses), bool)
        for k in order:
            ious = np.array([rect_ellipse_iou(boxes[k], e, shape) for e in ellipses])
            ious[taken] = -1
            hit = len(ious) and ious.max() > 0.5
            if hit:
                taken[int(ious.argmax())] = True
            scores.append(sc[k])
            flags.append(bool(hit))
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    flags = np.asarray(flags, bool)[order]
    tp, fp = np.cumsum(flags), np.cumsum(~flags)
    within = np.nonzero(fp <= fp_limit)[0]
    tpr = float(tp[within[-1]] / max(faces, 1)) if len(within) else 0.0
    return {"tpr_at_1000_fp": tpr, "fp_reached": int(fp[within[-1]]) if len(within) else 0,
            "num_faces": faces}


# ---------------------------------------------------------------- driver
def run_detector(detector, samples, score_threshold=0.01, nms_iou=0.3):
    """Detections (pixel boxes, scores) per sample and the image shapes."""
    from mobilekit.detection.data import read_image

    detections, shapes = [], []
    for s in samples:
        image = np.asarray(read_image(s.image))
        detections.append(detector.detect(image, score_threshold, nms_iou))
        shapes.append(image.shape[:2])
    return detections, shapes


def ignore_small(samples, shapes, input_hw, min_face, scale=None):
    """Ignore masks that also drop faces under `min_face` px once the image is warped to the
    network input (the faces training filtered out); with `scale` (multi-scale inference,
    no fixed input) at the image's size times the smallest scale."""
    out = []
    for s, (h, w) in zip(samples, shapes):
        sx, sy = (scale, scale) if scale is not None else (input_hw[1] / w, input_hw[0] / h)
        fw = (s.boxes[:, 2] - s.boxes[:, 0]) * sx
        fh = (s.boxes[:, 3] - s.boxes[:, 1]) * sy
        out.append(s.ignore | (fw < min_face) | (fh < min_face))
    return out


def evaluate_detector(detector, spec, split="val", min_face=0, score_threshold=0.01,
                      nms_iou=0.3, pr_curve=None):
    """All metrics that apply to `spec` (see the module docstring) as a JSON-ready dict."""
    from mobilekit.detection.data import load_samples, parse_spec

    kind, root = parse_spec(spec)
    samples = load_samples(spec, split)
    detections, shapes = run_detector(detector, samples, score_threshold, nms_iou)
    ignore = ignore_small(samples, shapes, detector.input_hw, min_face,
                          getattr(detector, "min_scale", None))
    ap = average_precision(detections, [(s.boxes, ig) for s, ig in zip(samples, ignore)])
    result = {"data": spec, "images": len(samples), "faces": ap["num_faces"],
              "ap50": ap["ap"], "min_face": min_face,
              "input": None if detector.input_hw is None else list(detector.input_hw)}
    if kind == "wider":
        result["wider"] = wider_protocol(detections, samples, root)
    if kind == "fddb":
        result["fddb"] = fddb_discrete(detections, samples, shapes)
    if pr_curve:
        result["pr_curve"] = save_pr_curve(ap["recall"], ap["precision"], pr_curve)
    return result


def save_pr_curve(recall, precision, path):
    """PR-curve PNG via matplotlib (optional extra `plot`); returns the path or a note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib not installed (pip install 'mobilekit[plot]')"
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(recall, precision)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="IoU 0.5")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
