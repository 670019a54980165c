"""Face-detector evaluation, each number by a named protocol: VOC AP at IoU 0.5, the WIDER
FACE protocol, the FDDB ROC.

* `ap50` (`average_precision`): all-point interpolated area under the PR curve (VOC 2010+,
  `voc_ap`) at IoU >= 0.5 with one of two matching rules (`MATCHING`):
  - "voc" (default): the PASCAL devkit's VOCevaldet.m. Detections in score order (stable)
    each take the one face they overlap most; IoU >= 0.5 (the MATLAB `>=`; py-faster-rcnn's
    voc_eval.py uses `>`) makes it a TP if that face is free, an FP if it is already taken,
    and ignored if the face is "difficult"/ignored. The devkit's +1-pixel areas on 1-based
    inclusive boxes are exactly plain areas on mobilekit's half-open pixel boxes
    ([xmin - 1, xmax)), so IoU here is `iou_np`.
  - "coco": COCO's rule: the best *still unmatched* counted face with IoU >= 0.5, else an
    ignored face absorbs the detection. Scores higher than "voc" in crowds.
  Equal scores keep the detections' order (a stable sort, as MATLAB's sort in the devkit).
  Ignored faces: WIDER invalid, VOC difficult, dlib ignore, or smaller than `min_face`.
  Detections ignored by the rule are left out of the curve (the devkit keeps them as
  points with tp = fp = 0, which repeats the previous point or, before the first counted
  detection, gives 0/0 = NaN).
* WIDER FACE (`wider_protocol`): the logic of the widely used Python evaluation
  (wondervictor/WiderFace-Evaluation, evaluation.py): scores normalised over the whole set
  as its `norm_score` (lowest = min(1, lowest score), highest = max(0, highest score)); per
  image each detection (in score order) looks at the face it overlaps most (areas with +1
  pixel: (x + w) - x + 1); faces outside the setting's keep list are ignored; every image
  with at least one face and one detection counts -- also one whose faces are all outside
  the keep list (its detections off ignored faces are false positives); detections are
  sorted by score first (the reference takes the file order and assumes it); 1000
  thresholds, per-image proposals and recall summed; AP by `voc_ap`. Documented rules where
  the reference gives NaN or infinity: all scores equal (its normalisation divides by zero)
  -> every normalised score is 1 (one operating point); a threshold with no counted proposal
  (0/0) -> precision 0 (it adds no area); a setting with no counted face -> AP 0. The
  Easy/Medium/Hard keep lists come only from the official `wider_{easy,medium,hard}_val.mat`
  (EdgeBox-based, not derivable from the attributes); when they are under
  ROOT/eval_tools/ground_truth/ the three APs are computed, otherwise only "all valid faces"
  is reported and easy/medium/hard are null. A keep list that lacks an image of the set, or
  names a face the image does not have, is an error; images the .mat names beyond the set
  are left out (counted in the result).
* FDDB (`fddb_discrete`): the official `evaluate` program's logic: rectangles against the
  official ellipses, IoU on the pixel grid (pixel centres inside the ellipse; the official
  program rasterises with OpenCV's drawing, which may differ by boundary pixels); for every
  distinct score threshold of an image the detections scoring >= it are matched to the
  ellipses by maximum-weight bipartite matching of IoU (Hungarian:
  scipy.optimize.linear_sum_assignment); a matched pair scores its IoU in the continuous ROC
  and 1 when IoU > 0.5 in the discrete one; FP = detections kept - discrete TPs; the images'
  results are summed at every threshold of the union (an image contributes its result at its
  lowest threshold >= t). `write_fddb_roc` writes DiscROC.txt (`tpr fp threshold`) and
  ContROC.txt (`tpr fp`) as the official program does (ascending threshold, C++ stream
  formatting = %g). The TPR at 1000 false positives is read at the lowest threshold whose FP
  count is <= 1000; with fewer FPs in total (any small set) it is the TPR at the lowest
  threshold, with the FP count reached.
* Bad input (`check_detections`, `read_predictions`): boxes with a negative width or
  height, NaN/infinite boxes or scores, prediction files naming an image not in the set
  (or one image twice) are an error naming the image; an image of the set without
  predictions has no detections (reported as `images_without_predictions`).
"""
from pathlib import Path

import numpy as np

from mobilekit.detection.boxes import iou_np
from mobilekit.errors import check_choice

IOU = 0.5
WIDER_THRESHOLDS = 1000
FDDB_FP = 1000
MATCHING = ("voc", "coco")
INTERPOLATION = "all-point (VOC 2010+)"
PROTOCOLS = {
    "voc": "PASCAL VOC devkit (VOCevaldet.m): each detection takes the face it overlaps most; "
           "IoU >= 0.5; a face taken twice -> FP; difficult/ignored -> not counted",
    "coco": "COCO matching: each detection takes the best still-unmatched counted face with "
            "IoU >= 0.5; else an ignored face absorbs it",
    "wider": "WIDER FACE (wondervictor/WiderFace-Evaluation logic): norm_score over the set, "
             "1000 thresholds, best-overlap face with +1-px areas, IoU >= 0.5, faces outside "
             "the setting's keep list ignored, all-point interpolated AP",
    "fddb": "FDDB official evaluate: maximum-weight bipartite (Hungarian) matching of IoU "
            "per score threshold; discrete TP when IoU > 0.5, continuous TP = summed IoU",
}


def voc_ap(recall, precision):
    """All-point interpolated AP (VOC 2010+; also the WIDER port's voc_ap)."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = max(mpre[i - 1], mpre[i])
    i = np.nonzero(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def check_detections(detections, num_images, names=None):
    """Bad input as one clear error: a list of the wrong length, NaN/inf values, boxes with
    a negative width or height, box/score counts that differ."""
    if len(detections) != num_images:
        raise ValueError(f"got detections for {len(detections)} images; the set has {num_images}")
    for i, (boxes, scores) in enumerate(detections):
        name = names[i] if names else f"image {i}"
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        if len(boxes) != len(scores):
            raise ValueError(f"{name}: {len(boxes)} boxes but {len(scores)} scores")
        if not (np.all(np.isfinite(boxes)) and np.all(np.isfinite(scores))):
            raise ValueError(f"{name}: detections hold NaN or infinite values")
        bad = np.nonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))[0]
        if len(bad):
            x1, y1, x2, y2 = boxes[bad[0]]
            raise ValueError(f"{name}: detection box with a negative width or height "
                             f"(x1 y1 x2 y2 = {x1:g} {y1:g} {x2:g} {y2:g}); boxes must "
                             f"have x2 >= x1 and y2 >= y1")


# ---------------------------------------------------------------- AP50 (VOC / COCO matching)
def _score_order(det_boxes, det_scores, gt_boxes):
    """(detections in score order, zeroed per-detection result, their IoU with every face or
    None when there is nothing to match): what both matching rules start from."""
    order = np.argsort(-np.asarray(det_scores), kind="stable")
    result = np.zeros(len(order), np.int64)
    if len(gt_boxes) == 0 or len(order) == 0:
        return order, result, None
    return order, result, iou_np(np.asarray(det_boxes)[order], gt_boxes)


def match_image(det_boxes, det_scores, gt_boxes, gt_ignore, iou_threshold=IOU):
    """COCO rule. Per detection (in score order): 1 = TP, 0 = FP, -1 = matched an ignored face."""
    order, result, overlaps = _score_order(det_boxes, det_scores, gt_boxes)
    if overlaps is None:
        return order, result
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


def match_image_voc(det_boxes, det_scores, gt_boxes, gt_ignore, iou_threshold=IOU):
    """PASCAL devkit rule (VOCevaldet.m), same return as `match_image`."""
    order, result, overlaps = _score_order(det_boxes, det_scores, gt_boxes)
    if overlaps is None:
        return order, result
    taken = np.zeros(len(gt_boxes), bool)
    for k in range(len(order)):
        j = int(overlaps[k].argmax())  # the first face of highest overlap (devkit: ov > ovmax)
        if overlaps[k, j] > 0 and overlaps[k, j] >= iou_threshold:
            if gt_ignore[j]:
                result[k] = -1
            elif not taken[j]:
                taken[j] = True
                result[k] = 1
    return order, result


MATCHERS = {"voc": match_image_voc, "coco": match_image}


def average_precision(detections, ground_truth, iou_threshold=IOU, matching="voc"):
    """detections: per image (boxes [K, 4], scores [K]); ground_truth: per image
    (boxes [G, 4], ignore [G]). Returns dict(ap, precision, recall, num_faces, scores,
    matching, interpolation)."""
    check_choice("matching", matching, MATCHING)
    check_detections(detections, len(ground_truth))
    matcher = MATCHERS[matching]
    scores, flags = [], []
    num_faces = 0
    for (boxes, sc), (gt, ignore) in zip(detections, ground_truth):
        gt = np.asarray(gt, np.float64).reshape(-1, 4)
        ignore = np.asarray(ignore, bool).reshape(-1)
        num_faces += int((~ignore).sum())
        order, result = matcher(boxes, sc, gt, ignore, iou_threshold)
        scores.append(np.asarray(sc, np.float64).reshape(-1)[order])
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
            "scores": scores[order], "matching": matching, "interpolation": INTERPOLATION}


# ---------------------------------------------------------------- WIDER FACE protocol
def wider_normalization(score_arrays):
    """(low, span) of the reference's norm_score: low = min(1, lowest score), high =
    max(0, highest score). span <= 0 (all scores equal; the reference divides by zero) is
    returned as is: `_wider_norm` maps every score to 1 then."""
    lo, hi = 1.0, 0.0
    for s in score_arrays:
        s = np.asarray(s, np.float64).reshape(-1)
        if s.size:
            lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    return lo, hi - lo


def _wider_norm(scores, lo, span):
    scores = np.asarray(scores, np.float64)
    return (scores - lo) / span if span > 0 else np.ones_like(scores)


def _plus_one_overlaps(p, g):
    """IoU with +1-pixel areas in the reference's operation order (bbox_overlaps), float64."""
    iw = np.minimum(p[:, None, 2], g[None, :, 2]) - np.maximum(p[:, None, 0], g[None, :, 0]) + 1
    ih = np.minimum(p[:, None, 3], g[None, :, 3]) - np.maximum(p[:, None, 1], g[None, :, 1]) + 1
    area_g = (g[:, 2] - g[:, 0] + 1) * (g[:, 3] - g[:, 1] + 1)
    area_p = (p[:, 2] - p[:, 0] + 1) * (p[:, 3] - p[:, 1] + 1)
    inter = iw * ih
    ua = area_p[:, None] + area_g[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((iw > 0) & (ih > 0), inter / ua, 0.0)


def _wider_image_eval(pred, gt, keep, iou_threshold):
    """The reference's image_eval, vectorised: pred [K, 5] (x1 y1 x2 y2 score, by score
    desc), gt [G, 4] corner boxes (x2 = x + w). Returns (pred_recall, proposal_list)."""
    proposal_list = np.ones(len(pred))
    overlaps = _plus_one_overlaps(pred[:, :4], gt)
    best = overlaps.argmax(1)
    hit = overlaps[np.arange(len(pred)), best] >= iou_threshold
    keep = np.asarray(keep, bool)
    proposal_list[hit & ~keep[best]] = -1
    # A kept face counts once from the first detection whose best face it is.
    first = np.zeros(len(pred))
    kept_hits = np.nonzero(hit & keep[best])[0]
    _, idx = np.unique(best[kept_hits], return_index=True)
    first[kept_hits[idx]] = 1
    return np.cumsum(first), proposal_list


def wider_pr(detections, gt_boxes, keep_lists, iou_threshold=IOU, thresh_num=WIDER_THRESHOLDS):
    """PR curve of one WIDER setting -> (ap, precision [T], recall [T], faces counted)."""
    lo, span = wider_normalization([s for _, s in detections])
    thresholds = 1 - (np.arange(thresh_num) + 1) / thresh_num
    pr = np.zeros((thresh_num, 2))
    count = 0
    for (boxes, scores), gt, keep in zip(detections, gt_boxes, keep_lists):
        keep = np.asarray(keep, bool).reshape(-1)
        gt = np.asarray(gt, np.float64).reshape(-1, 4)
        count += int(keep.sum())
        # The reference skips an image only with no face or no detection.
        if len(gt) == 0 or len(scores) == 0:
            continue
        order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
        pred = np.concatenate([np.asarray(boxes, np.float64).reshape(-1, 4)[order],
                               _wider_norm(np.asarray(scores)[order], lo, span)[:, None]], 1)
        pred_recall, proposals = _wider_image_eval(pred, gt, keep, iou_threshold)
        # Detections at or above each threshold: a prefix, as scores are sorted.
        n = np.searchsorted(-pred[:, 4], -thresholds, side="right")
        last = np.maximum(n - 1, 0)
        pr[:, 0] += np.where(n > 0, np.cumsum(proposals == 1)[last], 0)
        pr[:, 1] += np.where(n > 0, pred_recall[last], 0)
    precision = np.divide(pr[:, 1], pr[:, 0], out=np.zeros(thresh_num), where=pr[:, 0] > 0)
    recall = pr[:, 1] / max(count, 1)
    return (voc_ap(recall, precision) if count else 0.0), precision, recall, count


def wider_ap(detections, gt_boxes, keep_lists, iou_threshold=IOU, thresh_num=WIDER_THRESHOLDS):
    """AP of one WIDER setting. detections: per image (pixel boxes, scores); gt_boxes per
    image; keep_lists: per image bool mask of the faces counted in this setting."""
    return wider_pr(detections, gt_boxes, keep_lists, iou_threshold, thresh_num)[0]


def wider_keep_lists(root, samples):
    """({setting: per-sample keep masks}, images of the .mat not in the set) from the
    official .mat files, or ({}, 0) when absent. Errors: a set image missing from a keep
    list, or a keep index beyond the image's faces (the .mat belongs to other ground truth)."""
    gt_dir = Path(root) / "eval_tools" / "ground_truth"
    files = {s: gt_dir / f"wider_{s}_val.mat" for s in ("easy", "medium", "hard")}
    if not all(f.exists() for f in files.values()):
        return {}, 0
    from scipy.io import loadmat

    out, extra = {}, 0
    stems = [Path(s.extra.get("name", s.image)).stem for s in samples]
    for setting, f in files.items():
        mat = loadmat(str(f))
        lookup = {}
        for event, names, keeps in zip(mat["event_list"], mat["file_list"], mat["gt_list"]):
            for name, keep in zip(names[0], keeps[0]):
                lookup[str(name[0][0])] = np.asarray(keep[0]).reshape(-1).astype(int) - 1
        masks = []
        for s, stem in zip(samples, stems):
            if stem not in lookup:
                raise ValueError(f"{f.name} has no keep list for image {stem!r} of the set")
            idx = lookup[stem]
            if np.any(idx < 0) or np.any(idx >= len(s.boxes)):
                raise ValueError(f"{f.name}: keep list of {stem!r} names face "
                                 f"{int(idx.max()) + 1} but the image has {len(s.boxes)} faces")
            mask = np.zeros(len(s.boxes), bool)
            mask[idx] = True
            masks.append(mask)
        out[setting] = masks
        extra = len(set(lookup) - set(stems))
    return out, extra


def wider_protocol(detections, samples, root, with_curves=False):
    """{"all": AP over valid faces, "easy"/"medium"/"hard": AP or None, "protocol", "note"}
    (with_curves: also "curves": {setting: (recall, precision)})."""
    gt = [s.boxes for s in samples]
    keeps, extra = wider_keep_lists(root, samples)
    settings = {"all": [~s.ignore for s in samples], **keeps}
    result, curves = {}, {}
    for setting in ("all", "easy", "medium", "hard"):
        if setting in settings:
            ap, precision, recall, _ = wider_pr(detections, gt, settings[setting])
            result[setting], curves[setting] = ap, (recall, precision)
        else:
            result[setting] = None
    result["protocol"] = PROTOCOLS["wider"]
    result["interpolation"] = INTERPOLATION
    lo, span = wider_normalization([s for _, s in detections])
    if not sum(len(s) for _, s in detections):
        result["score_normalization"] = {"low": None, "high": None, "rule": "no detections"}
    elif span > 0:
        result["score_normalization"] = {"low": lo, "high": lo + span}
    else:
        result["score_normalization"] = {"low": lo, "high": lo, "rule": "all scores equal: "
                                         "every normalised score is 1"}
    if keeps:
        result["note"] = "easy/medium/hard from the official .mat keep lists"
        result["keep_list_images_not_in_set"] = extra
    else:
        result["note"] = ("easy/medium/hard need eval_tools/ground_truth/wider_{easy,medium,"
                          "hard}_val.mat; 'all' counts every valid face with the same protocol")
    if with_curves:
        result["curves"] = curves
    return result


# ---------------------------------------------------------------- FDDB
def ellipse_mask(ellipse, shape):
    major, minor, angle, cx, cy = ellipse
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64) + 0.5
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / major) ** 2 + (v / minor) ** 2 <= 1.0


def _rect_mask(box, shape):
    x1, y1, x2, y2 = [int(round(v)) for v in box]
    rect = np.zeros(shape, bool)
    rect[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return rect


def rect_ellipse_iou(box, ellipse, shape):
    """IoU of a pixel rectangle with an ellipse region, counted on the pixel grid."""
    mask, rect = ellipse_mask(ellipse, shape), _rect_mask(box, shape)
    union = np.sum(mask | rect)
    return float(np.sum(mask & rect) / union) if union else 0.0


def fddb_iou_matrix(boxes, ellipses, shape):
    """[E, K] IoU of each ellipse with each rectangle on the pixel grid (as
    `rect_ellipse_iou`; the intersection is counted inside the rectangle only)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out = np.zeros((len(ellipses), len(boxes)))
    h, w = shape
    for i, e in enumerate(ellipses):
        mask = ellipse_mask(e, shape)
        area_e = int(mask.sum())
        for k, box in enumerate(boxes):
            x1, x2 = [min(max(int(round(v)), 0), w) for v in box[0::2]]
            y1, y2 = [min(max(int(round(v)), 0), h) for v in box[1::2]]
            area_r = max(x2 - x1, 0) * max(y2 - y1, 0)
            inter = int(mask[y1:y2, x1:x2].sum())
            union = area_e + area_r - inter
            out[i, k] = inter / union if union else 0.0
    return out


def fddb_match(iou):
    """Maximum-weight bipartite matching of an [E, K] IoU matrix (the official program's
    Hungarian step) -> matched IoUs (pairs with IoU > 0 only)."""
    from scipy.optimize import linear_sum_assignment

    iou = np.asarray(iou, np.float64)
    if iou.size == 0:
        return np.zeros(0)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    matched = iou[rows, cols]
    return matched[matched > 0]


def fddb_image_results(iou, scores):
    """One image at each of its distinct scores t (ascending): the detections scoring >= t
    matched anew -> array [U, 4] of (t, discrete TP, continuous TP, FP)."""
    scores = np.asarray(scores, np.float64).reshape(-1)
    rows = []
    for t in np.unique(scores):
        valid = scores >= t
        matched = fddb_match(np.asarray(iou).reshape(-1, len(scores))[:, valid])
        disc = int(np.sum(matched > 0.5))
        rows.append((t, disc, float(matched.sum()), int(valid.sum()) - disc))
    return np.asarray(rows, np.float64).reshape(-1, 4)


def fddb_roc_from_iou(ious, scores):
    """Cumulative ROC over images (the official merge): ious per image [E, K] (2-D even
    when K or E is 0), scores per
    image [K] -> dict(threshold, tp_disc, tp_cont, fp: arrays in ascending threshold, faces)."""
    per_image = [fddb_image_results(iou, sc) if len(sc) else None for iou, sc in zip(ious, scores)]
    faces = sum(np.asarray(iou).shape[0] for iou in ious)
    thresholds = [r[:, 0] for r in per_image if r is not None]
    if any(r is None for r in per_image):
        thresholds.append([np.finfo(np.float64).max])  # an image without detections
    t = np.unique(np.concatenate(thresholds)) if thresholds else np.zeros(0)
    totals = np.zeros((len(t), 3))
    for r in per_image:
        if r is None:
            continue
        idx = np.searchsorted(r[:, 0], t, side="left")  # its lowest threshold >= t
        ok = idx < len(r)
        totals[ok] += r[idx[ok], 1:]
    return {"threshold": t, "tp_disc": totals[:, 0], "tp_cont": totals[:, 1],
            "fp": totals[:, 2], "faces": faces}


def fddb_roc(detections, samples, image_shapes):
    """The FDDB ROC of detections (pixel boxes, scores) on samples with "ellipses"."""
    ious, scores = [], []
    for (boxes, sc), s, shape in zip(detections, samples, image_shapes):
        ellipses = s.extra.get("ellipses", np.zeros((0, 5)))
        ious.append(fddb_iou_matrix(boxes, ellipses, shape))
        scores.append(np.asarray(sc, np.float64).reshape(-1))
    return fddb_roc_from_iou(ious, scores)


def fddb_at_fp(roc, fp_limit=FDDB_FP):
    """(discrete TPR, continuous TPR, FP) at the lowest threshold with FP <= fp_limit."""
    faces = max(roc["faces"], 1)
    within = np.nonzero(roc["fp"] <= fp_limit)[0]
    if not len(within):
        return 0.0, 0.0, 0
    i = within[0]  # ascending thresholds: the first is the lowest
    return float(roc["tp_disc"][i] / faces), float(roc["tp_cont"][i] / faces), int(roc["fp"][i])


def fddb_discrete(detections, samples, image_shapes, fp_limit=FDDB_FP, roc_dir=None):
    """{"tpr_at_1000_fp" (or at the FPs reached), "fp_reached", "num_faces",
    "tpr_cont_at_1000_fp", "matching", "protocol"(, "roc_files")}."""
    check_detections(detections, len(samples), [s.image for s in samples])
    roc = fddb_roc(detections, samples, image_shapes)
    disc, cont, fp = fddb_at_fp(roc, fp_limit)
    result = {"tpr_at_1000_fp": disc, "tpr_cont_at_1000_fp": cont, "fp_reached": fp,
              "fp_limit": fp_limit, "num_faces": roc["faces"],
              "matching": "bipartite (Hungarian, maximum summed IoU)",
              "protocol": PROTOCOLS["fddb"]}
    if roc_dir is not None:
        result["roc_files"] = write_fddb_roc(roc, roc_dir)
    return result


def fddb_roc_lines(roc):
    """(DiscROC.txt text, ContROC.txt text) in the official program's format."""
    disc, cont = [], []
    n = roc["faces"]
    for t, td, tc, fp in zip(roc["threshold"], roc["tp_disc"], roc["tp_cont"], roc["fp"]):
        if n:
            cont.append(f"{tc / n:g} {fp:g}")
            disc.append(f"{td / n:g} {fp:g} {t:g}")
        else:
            cont.append("0 0")
            disc.append(f"0 0 {t:g}")
    return "".join(f"{ln}\n" for ln in disc), "".join(f"{ln}\n" for ln in cont)


def write_fddb_roc(roc, out_dir, prefix=""):
    """Write PREFIXDiscROC.txt and PREFIXContROC.txt (atomically) -> their paths."""
    from mobilekit.io import write_atomic

    disc, cont = fddb_roc_lines(roc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{prefix}DiscROC.txt", out_dir / f"{prefix}ContROC.txt"]
    write_atomic(paths[0], disc)
    write_atomic(paths[1], cont)
    return [str(p) for p in paths]


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


def _parse_prediction_blocks(path):
    """Blocks of `name` / `count` / count lines `left top width height score` -> [(name,
    [K, 5])]: one WIDER submission file, or an FDDB detection file holding every image."""
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    blocks, i = [], 0
    while i < len(lines):
        name = lines[i]
        try:
            count = int(float(lines[i + 1]))
            rows = [[float(v) for v in ln.split()[:5]] for ln in lines[i + 2:i + 2 + count]]
        except (IndexError, ValueError):
            raise ValueError(f"{path}: expected `name` / `count` / count lines of `left top "
                             f"width height score` (block {name!r}, line {i + 1})") from None
        if len(rows) != count or any(len(r) != 5 for r in rows):
            raise ValueError(f"{path}: {name!r} announces {count} detections of 5 numbers "
                             f"(left top width height score)")
        blocks.append((name, np.asarray(rows, np.float64).reshape(-1, 5)))
        i += 2 + count
    return blocks


def sample_key(sample):
    """A sample's name without extension: WIDER `event/name`, FDDB `2002/08/11/big/img_591`,
    else the image file's stem."""
    name = str(sample.extra.get("name", Path(sample.image).name))
    return str(Path(name).with_suffix("")) if Path(name).suffix.lower() in (
        ".jpg", ".jpeg", ".png", ".bmp") else name


def read_predictions(path, samples):
    """Detections per sample from prediction files -> (detections, images without any).

    PATH: a file, or a directory whose *.txt files (recursively) are read. Each holds blocks
    `name` / `count` / `left top width height score` (WIDER submission files: one block per
    file; the FDDB detection file: every image). A block's name (extension optional) matches
    the sample of that name, or of that file stem (WIDER files name only the image). Rules:
    a name that matches no image of the set, or one image given twice, is an error; an
    image of the set without a block has no detections (its faces count as missed)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no *.txt prediction files under {path}")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"predictions not found: {path}")
    keys = [sample_key(s) for s in samples]
    by_key = {k: i for i, k in enumerate(keys)}
    by_stem = {}
    for i, k in enumerate(keys):
        by_stem.setdefault(Path(k).name, []).append(i)
    found, unknown = {}, []
    for f in files:
        for name, rows in _parse_prediction_blocks(f):
            key = name.strip("/")
            key = str(Path(key).with_suffix("")) if Path(key).suffix.lower() in (
                ".jpg", ".jpeg", ".png", ".bmp") else key
            stems = by_stem.get(Path(key).name, [])
            if key not in by_key and len(stems) > 1:
                raise ValueError(f"{f}: {name!r} matches {len(stems)} images of the set; "
                                 f"name it with its folder")
            idx = by_key.get(key, stems[0] if stems else None)
            if idx is None:
                unknown.append(name)
                continue
            if idx in found:
                raise ValueError(f"{f}: image {name!r} has predictions twice")
            found[idx] = rows
    if unknown:
        shown = ", ".join(repr(n) for n in unknown[:3])
        raise ValueError(f"predictions name {len(unknown)} image(s) not in the set: {shown}"
                         + (", ..." if len(unknown) > 3 else ""))
    detections = []
    for i, s in enumerate(samples):
        rows = found.get(i, np.zeros((0, 5)))
        if np.any(rows[:, 2:4] < 0):
            bad = rows[np.nonzero(np.any(rows[:, 2:4] < 0, axis=1))[0][0]]
            raise ValueError(f"predictions for {keys[i]!r}: negative width or height "
                             f"({' '.join(f'{v:g}' for v in bad)}); widths and heights must "
                             f"be >= 0")
        boxes = np.concatenate([rows[:, :2], rows[:, :2] + rows[:, 2:4]], 1)
        detections.append((boxes, rows[:, 4]))
    return detections, len(samples) - len(found)


def image_shapes(samples):
    """(height, width) of each sample's image."""
    from mobilekit.detection.data import read_image

    return [tuple(np.asarray(read_image(s.image)).shape[:2]) for s in samples]


def evaluate_detector(detector, spec, split="val", min_face=0, score_threshold=0.01,
                      nms_iou=0.3, pr_curve=None, matching="voc", fddb_roc_dir=None,
                      predictions=None):
    """All metrics that apply to `spec` (see the module docstring) as a JSON-ready dict;
    each number names its protocol. With `predictions` (see `read_predictions`) instead of
    a detector, the detections come from files."""
    from mobilekit.detection.data import load_samples, parse_spec

    check_choice("matching", matching, MATCHING)
    kind, root = parse_spec(spec)
    if fddb_roc_dir is not None and kind != "fddb":
        raise ValueError(f"FDDB ROC files need an fddb: data spec; got {spec!r}")
    if (detector is None) == (predictions is None):
        raise ValueError("give a model or prediction files (one of the two)")
    if predictions is not None and min_face:
        raise ValueError("min_face is measured at a model's input; it needs a model, "
                         "not prediction files")
    samples = load_samples(spec, split)
    if detector is not None:
        detections, shapes = run_detector(detector, samples, score_threshold, nms_iou)
        ignore = ignore_small(samples, shapes, detector.input_hw, min_face,
                              getattr(detector, "min_scale", None))
    else:
        detections, missing = read_predictions(predictions, samples)
        shapes = image_shapes(samples) if kind == "fddb" else None
        ignore = [s.ignore for s in samples]
    check_detections(detections, len(samples), [s.image for s in samples])
    ap = average_precision(detections, [(s.boxes, ig) for s, ig in zip(samples, ignore)],
                           matching=matching)
    result = {"data": spec, "images": len(samples), "faces": ap["num_faces"],
              "ap50": ap["ap"],
              "ap50_protocol": {"matching": matching, "iou": IOU,
                                "interpolation": INTERPOLATION,
                                "description": PROTOCOLS[matching]},
              "min_face": min_face,
              "input": (list(detector.input_hw) if detector is not None
                        and detector.input_hw is not None else None)}
    if predictions is not None:
        result["predictions"] = str(predictions)
        result["images_without_predictions"] = missing
    curves = [(f"AP50 {matching} matching: {ap['ap']:.4f}", ap["recall"], ap["precision"])]
    if kind == "wider":
        result["wider"] = wider_protocol(detections, samples, root, with_curves=bool(pr_curve))
        for setting, (rec, prec) in result["wider"].pop("curves", {}).items():
            curves.append((f"WIDER {setting}: {result['wider'][setting]:.4f}", rec, prec))
    if kind == "fddb":
        result["fddb"] = fddb_discrete(detections, samples, shapes, roc_dir=fddb_roc_dir)
    if pr_curve:
        result["pr_curve"] = save_pr_curve(None, None, pr_curve, curves=curves)
    return result


def save_pr_curve(recall, precision, path, curves=None):
    """PR-curve PNG via matplotlib (optional extra `plot`); returns the path or a note.
    curves: [(label naming the protocol, recall, precision)] (default: one unlabelled curve)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "skipped: matplotlib not installed (pip install 'mobilekit[plot]')"
    curves = curves or [(None, recall, precision)]
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, rec, prec in curves:
        ax.plot(rec, prec, label=label)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"IoU {IOU}, {INTERPOLATION} interpolation")
    if any(label for label, _, _ in curves):
        ax.legend(loc="lower left", fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
