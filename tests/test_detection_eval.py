"""Detector evaluation against the official protocols, restated here independently:
the WIDER FACE Python evaluation (wondervictor/WiderFace-Evaluation evaluation.py +
box_overlaps.pyx), the PASCAL devkit's VOCevaldet.m/VOCap.m and FDDB's `evaluate`
(Matching.cpp, Results.cpp, evaluate.cpp). Each restatement follows the reference's loops
literally; mobilekit's code is vectorised and must agree to 1e-9."""
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mobilekit.detection import evaluate as ev
from mobilekit.detection.data import Sample, load_samples

REPO = Path(__file__).resolve().parents[1]
WIDER_SAMPLE = REPO.parent / "shared" / "data" / "faces" / "wider_face_sample"


# ------------------------------------------------------------------ WIDER reference
def ref_bbox_overlaps(boxes, query):
    """box_overlaps.pyx (float64 here; the .pyx types float32)."""
    out = np.zeros((len(boxes), len(query)))
    for k in range(len(query)):
        box_area = (query[k, 2] - query[k, 0] + 1) * (query[k, 3] - query[k, 1] + 1)
        for n in range(len(boxes)):
            iw = min(boxes[n, 2], query[k, 2]) - max(boxes[n, 0], query[k, 0]) + 1
            if iw > 0:
                ih = min(boxes[n, 3], query[k, 3]) - max(boxes[n, 1], query[k, 1]) + 1
                if ih > 0:
                    ua = ((boxes[n, 2] - boxes[n, 0] + 1) * (boxes[n, 3] - boxes[n, 1] + 1)
                          + box_area - iw * ih)
                    out[n, k] = iw * ih / ua
    return out


def ref_norm_score(pred):
    max_score, min_score = 0, 1
    for v in pred.values():
        if len(v) == 0:
            continue
        max_score = max(np.max(v[:, -1]), max_score)
        min_score = min(np.min(v[:, -1]), min_score)
    diff = max_score - min_score
    for v in pred.values():
        if len(v):
            v[:, -1] = (v[:, -1] - min_score) / diff


def ref_image_eval(pred, gt, ignore, iou_thresh):
    _pred, _gt = pred.copy(), gt.copy()
    pred_recall = np.zeros(_pred.shape[0])
    recall_list = np.zeros(_gt.shape[0])
    proposal_list = np.ones(_pred.shape[0])
    _pred[:, 2] = _pred[:, 2] + _pred[:, 0]
    _pred[:, 3] = _pred[:, 3] + _pred[:, 1]
    _gt[:, 2] = _gt[:, 2] + _gt[:, 0]
    _gt[:, 3] = _gt[:, 3] + _gt[:, 1]
    overlaps = ref_bbox_overlaps(_pred[:, :4], _gt)
    for h in range(_pred.shape[0]):
        gt_overlap = overlaps[h]
        max_overlap, max_idx = gt_overlap.max(), gt_overlap.argmax()
        if max_overlap >= iou_thresh:
            if ignore[max_idx] == 0:
                recall_list[max_idx] = -1
                proposal_list[h] = -1
            elif recall_list[max_idx] == 0:
                recall_list[max_idx] = 1
        pred_recall[h] = len(np.where(recall_list == 1)[0])
    return pred_recall, proposal_list


def ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall):
    pr_info = np.zeros((thresh_num, 2))
    for t in range(thresh_num):
        thresh = 1 - (t + 1) / thresh_num
        r_index = np.where(pred_info[:, 4] >= thresh)[0]
        if len(r_index):
            r_index = r_index[-1]
            pr_info[t, 0] = len(np.where(proposal_list[:r_index + 1] == 1)[0])
            pr_info[t, 1] = pred_recall[r_index]
    return pr_info


def ref_voc_ap(rec, prec):
    mrec = np.concatenate(([0.], rec, [1.]))
    mpre = np.concatenate(([0.], prec, [0.]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_wider_ap(pred, gt_boxes, keep_index, thresh_num=1000, iou_thresh=0.5):
    """evaluation() for one setting. pred {name: [K, 5] x y w h score, sorted by score desc
    as the submission files are}; gt_boxes {name: [G, 4] x y w h}; keep_index {name: 1-based}."""
    pred = {k: v.copy() for k, v in pred.items()}
    ref_norm_score(pred)
    count_face = 0
    pr_curve = np.zeros((thresh_num, 2))
    for name, gt in gt_boxes.items():
        pred_info, keep = pred[name], keep_index[name]
        count_face += len(keep)
        if len(gt) == 0 or len(pred_info) == 0:
            continue
        ignore = np.zeros(gt.shape[0])
        if len(keep) != 0:
            ignore[keep - 1] = 1
        pred_recall, proposal_list = ref_image_eval(pred_info, gt, ignore, iou_thresh)
        pr_curve += ref_img_pr_info(thresh_num, pred_info, proposal_list, pred_recall)
    with np.errstate(invalid="ignore", divide="ignore"):
        propose = pr_curve[:, 1] / pr_curve[:, 0]
    # Documented rule (the reference leaves NaN = 0/0 here, at thresholds with no counted
    # proposal, where recall is 0 too): precision 0, which adds no area.
    propose = np.nan_to_num(propose, nan=0.0)
    return ref_voc_ap(pr_curve[:, 1] / count_face, propose)


def random_wider_set(rng, n_images=25, score_range=(0.0, 1.0), p_none_kept=0.3):
    """Random x y w h faces and detections (many near faces) and keep lists; some images
    have no face, no detection, or faces all outside the keep list."""
    gt, pred, keep = {}, {}, {}
    for i in range(n_images):
        name = f"img{i}"
        g = int(rng.integers(0, 7))
        xy = rng.uniform(0, 200, (g, 2))
        wh = rng.uniform(4, 40, (g, 2))
        gt[name] = np.concatenate([xy, wh], 1).reshape(-1, 4)
        if rng.random() < p_none_kept:
            keep[name] = np.zeros(0, int)
        else:
            keep[name] = np.nonzero(rng.random(g) < 0.6)[0] + 1
        k = int(rng.integers(0, 9))
        boxes = np.concatenate([rng.uniform(0, 200, (k, 2)), rng.uniform(4, 40, (k, 2))], 1)
        if g:  # most detections near a face
            near = gt[name][rng.integers(0, g, k)] + rng.normal(0, 2.5, (k, 4))
            boxes = np.where(rng.random((k, 1)) < 0.7, near, boxes)
        boxes[:, 2:] = np.abs(boxes[:, 2:]) + 1
        scores = rng.uniform(*score_range, k)
        order = np.argsort(-scores, kind="stable")
        pred[name] = np.concatenate([boxes, scores[:, None]], 1)[order]
    return gt, pred, keep


def to_mobilekit(gt, pred, keep):
    """x y w h -> corner boxes (x2 = x + w, as the reference computes it), keep masks."""
    names = list(gt)
    corner = lambda b: np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], 1)  # noqa: E731
    dets = [(corner(pred[n][:, :4]), pred[n][:, 4]) for n in names]
    masks = []
    for n in names:
        m = np.zeros(len(gt[n]), bool)
        m[keep[n] - 1] = True
        masks.append(m)
    return dets, [corner(gt[n]) for n in names], masks


@pytest.mark.parametrize("score_range", [(0.0, 1.0), (0.3, 0.8), (-2.0, 3.0)])
def test_wider_ap_agrees_with_reference_on_random_sets(score_range):
    """Includes images whose faces are all outside the keep list, and scores whose range
    lies inside (0, 1) or beyond it (norm_score's min(1, .)/max(0, .))."""
    rng = np.random.default_rng(23)
    seen_none_kept, differs_if_skipped = 0, 0
    for trial in range(30):
        gt, pred, keep = random_wider_set(rng, score_range=score_range)
        ref = ref_wider_ap(pred, gt, keep)
        dets, boxes, masks = to_mobilekit(gt, pred, keep)
        ours = ev.wider_ap(dets, boxes, masks)
        assert np.isfinite(ours) and ours == pytest.approx(ref, abs=1e-9), trial
        # The old port skipped images with no kept face: show those images matter here.
        none_kept = [i for i, (m, d) in enumerate(zip(masks, dets))
                     if len(m) and not m.any() and len(d[1])]
        seen_none_kept += bool(none_kept)
        skipped = [(np.zeros((0, 4)), np.zeros(0)) if i in none_kept else d
                   for i, d in enumerate(dets)]
        # (keeping the normalisation of the full set, as the old port did)
        lo_hi = np.concatenate([d[1] for d in dets])
        pad = [(np.zeros((1, 4)) - 1e6, np.array([lo_hi.min()])),
               (np.zeros((1, 4)) - 1e6, np.array([lo_hi.max()]))]
        old = ev.wider_ap(skipped + pad, boxes + [np.zeros((0, 4))] * 2,
                          masks + [np.zeros(0, bool)] * 2)
        differs_if_skipped += abs(old - ours) > 1e-6
    assert seen_none_kept >= 20 and differs_if_skipped >= 5


def test_wider_all_equal_scores_rule():
    """The reference divides by zero when every score is equal; the rule: one operating
    point (all normalised scores 1). 2 kept faces, 3 detections: 2 TP + 1 FP -> P 2/3, R 1."""
    gt = [np.array([[0, 0, 20, 20], [50, 50, 70, 70]], float)]
    dets = [(np.array([[0, 0, 20, 20], [50, 50, 70, 70], [100, 100, 120, 120]], float),
             np.full(3, 0.7))]
    keep = [np.array([True, True])]
    assert ev.wider_ap(dets, gt, keep) == pytest.approx(2 / 3, abs=1e-12)
    ap, precision, recall, faces = ev.wider_pr(dets, gt, keep)
    assert faces == 2 and np.all(precision == 2 / 3) and np.all(recall == 1)
    # With a real ranking (FP last) the reference and mobilekit both give 1.
    scored = [(dets[0][0], np.array([0.9, 0.8, 0.1]))]
    assert ev.wider_ap(scored, gt, keep) == pytest.approx(1.0, abs=1e-12)


def _write_keep_mats(root, samples, keeps):
    """Official-layout wider_{easy,medium,hard}_val.mat (event_list, file_list, gt_list)."""
    from scipy.io import savemat

    events = sorted({s.extra["name"].split("/")[0] for s in samples})
    gt_dir = root / "eval_tools" / "ground_truth"
    gt_dir.mkdir(parents=True)
    for setting, masks in keeps.items():
        event_list = np.empty((len(events), 1), object)
        file_list = np.empty((len(events), 1), object)
        gt_list = np.empty((len(events), 1), object)
        for e, event in enumerate(events):
            idx = [i for i, s in enumerate(samples) if s.extra["name"].startswith(event + "/")]
            names = np.empty((len(idx), 1), object)
            lists = np.empty((len(idx), 1), object)
            for r, i in enumerate(idx):
                names[r, 0] = Path(samples[i].extra["name"]).stem
                lists[r, 0] = (np.nonzero(masks[i])[0] + 1).reshape(-1, 1).astype(np.float64)
            event_list[e, 0], file_list[e, 0], gt_list[e, 0] = event, names, lists
        savemat(str(gt_dir / f"wider_{setting}_val.mat"),
                {"event_list": event_list, "file_list": file_list, "gt_list": gt_list})


def test_wider_protocol_with_official_mat_keep_lists(tmp_path):
    """The real val sample (4 images, 1,024 px) with keep lists in the official .mat layout;
    'easy' keeps no face of two images. Each setting agrees with the reference."""
    root = tmp_path / "WIDER"
    shutil.copytree(WIDER_SAMPLE / "wider_face_split", root / "wider_face_split")
    samples = load_samples(f"wider:{root}", "val")
    rng = np.random.default_rng(5)
    valid = [~s.ignore for s in samples]
    big = [v & ((s.boxes[:, 2] - s.boxes[:, 0]) >= 30) for s, v in zip(samples, valid)]
    keeps = {"hard": valid, "medium": [v & (rng.random(len(v)) < 0.7) for v in valid],
             "easy": [b if i < 2 else np.zeros_like(b) for i, b in enumerate(big)]}
    _write_keep_mats(root, samples, keeps)
    dets = []
    for s in samples:
        k = len(s.boxes)
        boxes = s.boxes[rng.permutation(k)[:max(k // 2, 1)]].astype(np.float64)
        boxes = np.concatenate([boxes + rng.normal(0, 1.5, boxes.shape),
                                rng.uniform(0, 900, (5, 2)) @ np.array([[1, 0, 1, 0], [0, 1, 0, 1]])
                                + [0, 0, 25, 25]])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        dets.append((boxes, rng.uniform(0.05, 0.95, len(boxes))))
    result = ev.wider_protocol(dets, samples, root)
    assert result["keep_list_images_not_in_set"] == 0 and "wondervictor" in result["protocol"]
    names = [s.extra["name"] for s in samples]
    gt = {n: np.concatenate([s.boxes[:, :2], s.boxes[:, 2:] - s.boxes[:, :2]], 1).astype(np.float64)
          for n, s in zip(names, samples)}
    pred = {}
    for n, (b, sc) in zip(names, dets):
        order = np.argsort(-sc, kind="stable")
        pred[n] = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2], sc[:, None]], 1)[order]
    assert sum(not m.any() for m in keeps["easy"]) >= 2
    for setting in ("easy", "medium", "hard"):
        keep_index = {n: np.nonzero(m)[0] + 1 for n, m in zip(names, keeps[setting])}
        assert result[setting] == pytest.approx(ref_wider_ap(pred, gt, keep_index), abs=1e-9)
    assert result["all"] == pytest.approx(result["hard"], abs=1e-12)


def test_wider_keep_list_mismatches_are_errors(tmp_path):
    root = tmp_path / "WIDER"
    shutil.copytree(WIDER_SAMPLE / "wider_face_split", root / "wider_face_split")
    samples = load_samples(f"wider:{root}", "val")
    masks = [~s.ignore for s in samples]
    # A .mat for a set that lacks one image: that image has no keep list.
    _write_keep_mats(root, samples[1:], {k: masks[1:] for k in ("easy", "medium", "hard")})
    with pytest.raises(ValueError, match="no keep list for image '0_Parade"):
        ev.wider_keep_lists(root, samples)
    # Images the .mat names beyond the set are left out and counted.
    keeps, extra = ev.wider_keep_lists(root, samples[1:3])
    assert extra == len(samples) - 3 and len(keeps["easy"]) == 2
    # A keep index beyond the image's faces: the .mat belongs to other ground truth.
    shutil.rmtree(root / "eval_tools")
    too_many = [np.concatenate([m, [True]]) for m in masks]
    fake = [Sample(s.image, np.zeros((len(m), 4)), np.zeros(len(m), bool), s.extra)
            for s, m in zip(samples, too_many)]
    _write_keep_mats(root, fake, {k: too_many for k in ("easy", "medium", "hard")})
    with pytest.raises(ValueError, match="names face .* but the image has"):
        ev.wider_keep_lists(root, samples)


# ------------------------------------------------------------------ VOC devkit reference
def ref_voc_evaldet(gt, dets, minoverlap=0.5):
    """VOCevaldet.m + VOCap.m. gt: per image (BB [G, 4] 1-based inclusive, diff [G]);
    dets: list of (image id, confidence, BB [4]) in file order."""
    npos = sum(int((~d).sum()) for _, d in gt)
    taken = [np.zeros(len(b), bool) for b, _ in gt]
    si = sorted(range(len(dets)), key=lambda i: -dets[i][1])  # MATLAB sort: stable
    tp, fp = np.zeros(len(dets)), np.zeros(len(dets))
    for d, idx in enumerate(si):
        i, _, bb = dets[idx]
        ovmax, jmax = -np.inf, -1
        for j, bbgt in enumerate(gt[i][0]):
            bi = [max(bb[0], bbgt[0]), max(bb[1], bbgt[1]),
                  min(bb[2], bbgt[2]), min(bb[3], bbgt[3])]
            iw, ih = bi[2] - bi[0] + 1, bi[3] - bi[1] + 1
            if iw > 0 and ih > 0:
                ua = ((bb[2] - bb[0] + 1) * (bb[3] - bb[1] + 1)
                      + (bbgt[2] - bbgt[0] + 1) * (bbgt[3] - bbgt[1] + 1) - iw * ih)
                ov = iw * ih / ua
                if ov > ovmax:
                    ovmax, jmax = ov, j
        if ovmax >= minoverlap:
            if not gt[i][1][jmax]:
                if not taken[i][jmax]:
                    tp[d] = 1
                    taken[i][jmax] = True
                else:
                    fp[d] = 1
        else:
            fp[d] = 1
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / npos
    with np.errstate(invalid="ignore"):
        prec = tp / (fp + tp)
    mrec = np.concatenate(([0], rec, [1]))
    mpre = np.concatenate(([0], prec, [0]))
    for i in range(len(mpre) - 2, -1, -1):
        mpre[i] = np.fmax(mpre[i], mpre[i + 1])  # MATLAB's max ignores NaN
    i = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[i] - mrec[i - 1]) * mpre[i]))


def test_voc_ap_agrees_with_devkit_on_random_sets():
    rng = np.random.default_rng(7)
    for trial in range(40):
        gt, ours_gt, dets, ours_dets = [], [], [], []
        for i in range(int(rng.integers(3, 9))):
            g = int(rng.integers(0, 6))
            xy = rng.integers(1, 80, (g, 2))
            bb = np.concatenate([xy, xy + rng.integers(3, 25, (g, 2))], 1).astype(float)
            diff = rng.random(g) < 0.2
            gt.append((bb, diff))
            # 1-based inclusive [xmin, xmax] = half-open [xmin - 1, xmax)
            ours_gt.append((bb - [1, 1, 0, 0], diff))
            k = int(rng.integers(0, 8))
            src = bb[rng.integers(0, g, k)] if g else np.zeros((k, 4)) + 40
            db = src + rng.integers(-3, 4, (k, 4))
            db[:, 2:] = np.maximum(db[:, 2:], db[:, :2])
            conf = rng.random(k)
            dets += [(i, c, b) for c, b in zip(conf, db)]
            ours_dets.append((db - [1, 1, 0, 0], conf))
        if not sum(int((~d).sum()) for _, d in gt):
            continue
        ours = ev.average_precision(ours_dets, ours_gt, matching="voc")
        assert ours["ap"] == pytest.approx(ref_voc_evaldet(gt, dets), abs=1e-9), trial
        assert ours["matching"] == "voc" and ours["interpolation"].startswith("all-point")


def test_voc_and_coco_matching_differ_in_a_crowd():
    """Hand-computed. Faces G1 [0,0,10,10], G2 [3,0,13,10] (overlapping: a crowd) and a
    difficult G3. Detections by score: D4 .95 on nothing (FP); D1 .9 = G2 (IoU 1, TP);
    D2 .8 [2,0,12,10]: IoU G1 80/120 = .667, G2 90/110 = .818 -> VOC: its best face G2
    is taken -> FP; COCO: best unmatched G1 -> TP; D3 .7 on the difficult G3: ignored.
    VOC:  FP TP FP: R 0 .5 .5, P 0 .5 1/3 -> AP = .5 * .5 = 0.25.
    COCO: FP TP TP: R 0 .5 1, P 0 .5 2/3 -> AP = .5 * 2/3 + .5 * 2/3 = 2/3."""
    gt = [(np.array([[0, 0, 10, 10], [3, 0, 13, 10], [30, 0, 40, 10]], float),
           np.array([False, False, True]))]
    dets = [(np.array([[50, 0, 60, 10], [3, 0, 13, 10], [2, 0, 12, 10], [31, 0, 41, 10]], float),
             np.array([0.95, 0.9, 0.8, 0.7]))]
    assert ev.average_precision(dets, gt)["ap"] == pytest.approx(0.25, abs=1e-12)  # voc default
    assert ev.average_precision(dets, gt, matching="coco")["ap"] == pytest.approx(2 / 3, abs=1e-12)
    devkit_gt = [(gt[0][0] + [1, 1, 0, 0], gt[0][1])]
    devkit_dets = [(0, c, b + [1, 1, 0, 0]) for b, c in zip(*dets[0])]
    assert ref_voc_evaldet(devkit_gt, devkit_dets) == pytest.approx(0.25, abs=1e-12)
    with pytest.raises(ValueError, match="matching must be one of voc, coco"):
        ev.average_precision(dets, gt, matching="greedy")


# ------------------------------------------------------------------ FDDB reference
def ref_fddb_match(iou, valid):
    """Matching::runHungarian: drop all-zero rows/columns, maximum-weight assignment (here by
    brute force over permutations), keep pairs with score > 0 -> matched scores."""
    rows = [i for i in range(iou.shape[0])
            if sum(iou[i, j] for j in range(iou.shape[1]) if valid[j])]
    cols = [j for j in range(iou.shape[1]) if valid[j] and sum(iou[:, j])]
    best, best_pairs = -1.0, []
    small, large = (rows, cols) if len(rows) <= len(cols) else (cols, rows)
    for perm in itertools.permutations(large, len(small)):
        pairs = list(zip(small, perm)) if small is rows else list(zip(perm, small))
        total = sum(iou[a, d] for a, d in pairs)
        if total > best + 1e-12:
            best, best_pairs = total, pairs
    return [iou[a, d] for a, d in best_pairs if iou[a, d] > 0]


def ref_fddb_results(iou, scores):
    """evaluate.cpp's per-image loop + Results(...): [(threshold, N, TPCont, TPDisc, FP)]."""
    n = iou.shape[0]
    if len(scores) == 0:
        return [(np.finfo(np.float64).max, n, 0.0, 0, 0)]
    out = []
    for t in sorted(set(scores)):
        valid = [s >= t for s in scores]
        fp = sum(valid)
        cont, disc = 0.0, 0
        for score in ref_fddb_match(iou, valid):
            cont += score
            if score > 0.5:
                disc += 1
                fp -= 1
        out.append((t, n, cont, disc, fp))
    return out


def ref_fddb_merge(rv1, rv2):
    """Results::merge, literally."""
    def add(r1, r2):
        return (min(r1[0], r2[0]), r1[1] + r2[1], r1[2] + r2[2], r1[3] + r2[3], r1[4] + r2[4])

    merged, n1, n2 = [], len(rv1), len(rv2)
    if n1:
        nannot1, nannot2 = rv1[0][1], (rv2[0][1] if n2 else 0)
        i1 = i2 = 0
        while i1 < n1:
            r1 = rv1[i1]
            if i2 < n2:
                r2 = rv2[i2]
                merged.append(add(r1, r2))
                if r1[0] < r2[0]:
                    i1 += 1
                elif r1[0] == r2[0]:
                    i1 += 1
                    i2 += 1
                else:
                    i2 += 1
            else:
                while i1 < n1:
                    r1 = rv1[i1]
                    merged.append((r1[0], r1[1] + nannot2, r1[2], r1[3], r1[4]))
                    i1 += 1
        while i2 < n2:
            r2 = rv2[i2]
            merged.append((r2[0], r2[1] + nannot1, r2[2], r2[3], r2[4]))
            i2 += 1
    else:
        merged = list(rv2)
    return merged


def ref_fddb_roc(ious, scores):
    cum = []
    for iou, sc in zip(ious, scores):
        cum = ref_fddb_merge(cum, ref_fddb_results(iou, list(sc)))
    return cum


def random_fddb_set(rng, n_images=8):
    ious, scores = [], []
    for _ in range(n_images):
        e, k = int(rng.integers(0, 4)), int(rng.integers(0, 6))
        iou = rng.uniform(0.2, 0.95, (e, k)) * (rng.random((e, k)) < 0.6)
        ious.append(iou)
        # Some repeated scores within and across images (thresholds shared by images).
        scores.append(np.round(rng.uniform(0, 1, k), 1))
    return ious, scores


def test_fddb_roc_agrees_with_official_program_on_random_sets():
    rng = np.random.default_rng(11)
    for trial in range(25):
        ious, scores = random_fddb_set(rng)
        ref = ref_fddb_roc(ious, scores)
        ours = ev.fddb_roc_from_iou(ious, scores)
        assert len(ours["threshold"]) == len(ref), trial
        np.testing.assert_array_equal(ours["threshold"], [r[0] for r in ref])
        assert all(r[1] == ours["faces"] for r in ref)
        np.testing.assert_allclose(ours["tp_cont"], [r[2] for r in ref], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(ours["tp_disc"], [r[3] for r in ref])
        np.testing.assert_array_equal(ours["fp"], [r[4] for r in ref])
        # Results::saveROC's lines (C++ stream default = %g).
        disc, cont = ev.fddb_roc_lines(ours)
        n = ours["faces"]
        ref_disc = "".join(f"{r[3] / n:g} {r[4]:g} {r[0]:g}\n" if n else f"0 0 {r[0]:g}\n"
                           for r in ref)
        ref_cont = "".join(f"{r[2] / n:g} {r[4]:g}\n" if n else "0 0\n" for r in ref)
        assert disc == ref_disc and cont == ref_cont


def test_fddb_iou_matrix_is_the_pixel_grid_iou():
    rng = np.random.default_rng(2)
    shape = (50, 70)
    ellipses = np.column_stack([rng.uniform(5, 20, 3), rng.uniform(4, 15, 3), rng.uniform(-1, 1, 3),
                                rng.uniform(0, 70, 3), rng.uniform(0, 50, 3)])
    xy = rng.uniform(-20, 70, (12, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 40, (12, 2))], 1)
    want = [[ev.rect_ellipse_iou(b, e, shape) for b in boxes] for e in ellipses]
    np.testing.assert_allclose(ev.fddb_iou_matrix(boxes, ellipses, shape), want, rtol=0, atol=1e-15)
    assert np.count_nonzero(want) >= 5


def greedy_by_score(iou, scores):
    """What mobilekit did before: each detection by score takes its best free ellipse."""
    taken, matched = np.zeros(iou.shape[0], bool), []
    for k in np.argsort(-scores, kind="stable"):
        col = np.where(taken, -1, iou[:, k])
        if len(col) and col.max() > 0.5:
            taken[col.argmax()] = True
            matched.append(col.max())
    return matched


def test_fddb_bipartite_differs_from_greedy():
    """Detection A (.9) overlaps face 1 at .6 and face 2 at .7; B (.8) only face 2 at .6.
    Greedy: A takes face 2, B finds it taken -> 1 TP. Hungarian: A-1 + B-2 = 1.2 > .7 -> 2 TPs."""
    iou = np.array([[0.6, 0.0], [0.7, 0.6]])
    scores = np.array([0.9, 0.8])
    assert len(greedy_by_score(iou, scores)) == 1
    roc = ev.fddb_roc_from_iou([iou], [scores])
    np.testing.assert_array_equal(roc["threshold"], [0.8, 0.9])
    np.testing.assert_array_equal(roc["tp_disc"], [2, 1])
    np.testing.assert_allclose(roc["tp_cont"], [1.2, 0.7])
    np.testing.assert_array_equal(roc["fp"], [0, 0])
    assert ev.fddb_roc_lines(roc) == ("1 0 0.8\n0.5 0 0.9\n", "0.6 0\n0.35 0\n")


def test_fddb_discrete_end_to_end_on_ellipses(tmp_path):
    """Real masks: two overlapping circles (faces 1, 2) and two squares where greedy and
    bipartite matching differ; an image without detections; official ROC files written.
    A (.9) overlaps face 1 most (.835) and face 2 at .543; B (.8) face 1 at .658, face 2 at
    .347. Greedy: A takes face 1, B is left with .347 -> 1 TP. Hungarian: A-2 + B-1 =
    1.201 > A-1 + B-2 = 1.182 -> 2 TPs."""
    shape = (60, 90)
    ellipses = np.array([[12, 12, 0, 35, 30], [12, 12, 0, 41, 30]], float)
    boxes = np.array([[24, 19, 46, 41], [20, 19, 42, 41]], float)
    scores = np.array([0.9, 0.8])
    iou = ev.fddb_iou_matrix(boxes, ellipses, shape)
    np.testing.assert_allclose(iou, [[0.835, 0.658], [0.543, 0.347]], atol=5e-4)
    samples = [Sample("a.jpg", np.zeros((2, 4)), np.zeros(2, bool), {"ellipses": ellipses}),
               Sample("b.jpg", np.zeros((1, 4)), np.zeros(1, bool),
                      {"ellipses": np.array([[10, 8, 0.3, 40, 30]])})]
    dets = [(boxes, scores), (np.zeros((0, 4)), np.zeros(0))]
    result = ev.fddb_discrete(dets, samples, [shape, shape], roc_dir=tmp_path)
    matched = ev.fddb_match(iou)
    greedy = greedy_by_score(iou, scores)
    assert result["num_faces"] == 3 and "Hungarian" in result["matching"]
    assert result["tpr_at_1000_fp"] == pytest.approx(np.sum(matched > 0.5) / 3)
    assert result["tpr_cont_at_1000_fp"] == pytest.approx(matched.sum() / 3)
    assert np.sum(matched > 0.5) == 2 and len(greedy) == 1
    disc = (tmp_path / "DiscROC.txt").read_text().splitlines()
    cont = (tmp_path / "ContROC.txt").read_text().splitlines()
    assert result["roc_files"] == [str(tmp_path / "DiscROC.txt"), str(tmp_path / "ContROC.txt")]
    # Thresholds .8, .9 and the image without detections' DBL_MAX entry.
    assert [ln.split()[2] for ln in disc] == ["0.8", "0.9", "1.79769e+308"]
    assert disc[0].split()[:2] == [f"{2 / 3:g}", "0"] and disc[2] == "0 0 1.79769e+308"
    assert cont[0] == f"{matched.sum() / 3:g} 0" and len(cont) == 3


# ------------------------------------------------------------------ bad input, CLI
def test_bad_detections_are_one_clear_error():
    gt = [(np.array([[0, 0, 10, 10]], float), np.array([False]))]
    with pytest.raises(ValueError, match="negative width or height .*x1 y1 x2 y2 = 5 0 2 10"):
        ev.average_precision([(np.array([[5, 0, 2, 10]], float), np.array([0.5]))], gt)
    with pytest.raises(ValueError, match="NaN or infinite"):
        ev.average_precision([(np.array([[0, 0, 10, 10]], float), np.array([np.nan]))], gt)
    with pytest.raises(ValueError, match="detections for 2 images; the set has 1"):
        ev.average_precision([(np.zeros((0, 4)), np.zeros(0))] * 2, gt)
    with pytest.raises(ValueError, match="1 boxes but 2 scores"):
        ev.average_precision([(np.zeros((1, 4)), np.zeros(2))], gt)
    # All-equal scores are no error and no NaN in any protocol.
    # ap50: ties keep the detection order (a stable sort, as MATLAB's sort in the devkit).
    same = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float), np.full(2, 0.4))]
    assert ev.average_precision(same, gt)["ap"] == pytest.approx(1.0)
    assert ev.average_precision([(same[0][0][::-1], same[0][1])], gt)["ap"] == pytest.approx(0.5)
    # WIDER: one operating point (P 1/2, R 1), whatever the order.
    assert ev.wider_ap(same, [gt[0][0]], [np.array([True])]) == pytest.approx(0.5)


def test_eval_detector_help_names_protocols():
    from mobilekit.cli import cli

    res = CliRunner().invoke(cli, ["eval-detector", "--help"])
    assert res.exit_code == 0
    text = " ".join(res.output.split())
    assert "--matching [voc|coco]" in text and "default: voc" in text
    assert "all-point interpolation (VOC 2010+)" in text and "DiscROC.txt" in text


# ------------------------------------------------------------------ prediction files
def _write_wider_submission(folder, samples, dets):
    """One txt per image under its event folder: name / count / x y w h score."""
    for s, (boxes, scores) in zip(samples, dets):
        event, name = s.extra["name"].split("/")
        lines = [Path(name).stem, str(len(scores))]
        lines += [" ".join(repr(float(v)) for v in (b[0], b[1], b[2] - b[0], b[3] - b[1], sc))
                  for b, sc in zip(boxes, scores)]
        (folder / event).mkdir(parents=True, exist_ok=True)
        (folder / event / f"{Path(name).stem}.txt").write_text("\n".join(lines) + "\n")


def _invoke(args):
    from mobilekit.cli import cli

    res = CliRunner().invoke(cli, ["eval-detector", *args])
    return res, (json.loads(res.output[res.output.index("{"):]) if res.exit_code == 0 and
                 "--json" in args else None)


def test_eval_detector_on_wider_submission_files(tmp_path):
    """`--predictions` reads the official WIDER submission layout; the set's 4 val images."""
    samples = load_samples(f"wider:{WIDER_SAMPLE}", "val")
    rng = np.random.default_rng(3)
    dets = []
    for s in samples:
        boxes = s.boxes.astype(np.float64) + rng.normal(0, 1.0, s.boxes.shape)
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        dets.append((boxes, rng.uniform(0.1, 0.9, len(boxes))))
    _write_wider_submission(tmp_path / "preds", samples[:3], dets[:3])  # image 4: none
    res, out = _invoke(["--predictions", str(tmp_path / "preds"), "--data",
                        f"wider:{WIDER_SAMPLE}", "--json"])
    assert res.exit_code == 0, res.output
    read = [(np.asarray(b), np.asarray(sc)) for b, sc in dets[:3]]
    read.append((np.zeros((0, 4)), np.zeros(0)))
    assert out["images_without_predictions"] == 1 and out["model"] is None
    assert out["ap50"] == pytest.approx(ev.average_precision(
        read, [(s.boxes, s.ignore) for s in samples])["ap"], abs=1e-12)
    assert out["ap50_protocol"]["matching"] == "voc"
    assert out["ap50_protocol"]["interpolation"] == "all-point (VOC 2010+)"
    names = [s.extra["name"] for s in samples]
    gt = {n: np.concatenate([s.boxes[:, :2], s.boxes[:, 2:] - s.boxes[:, :2]], 1).astype(np.float64)
          for n, s in zip(names, samples)}
    pred = {n: np.concatenate([b[:, :2], b[:, 2:] - b[:, :2], sc[:, None]], 1)[
        np.argsort(-sc, kind="stable")] for n, (b, sc) in zip(names, read)}
    keep = {n: np.nonzero(~s.ignore)[0] + 1 for n, s in zip(names, samples)}
    assert out["wider"]["all"] == pytest.approx(ref_wider_ap(pred, gt, keep), abs=1e-9)
    assert "wondervictor" in out["wider"]["protocol"]


def test_prediction_files_bad_input(tmp_path):
    samples = load_samples(f"wider:{WIDER_SAMPLE}", "val")
    data = ["--data", f"wider:{WIDER_SAMPLE}"]
    _write_wider_submission(tmp_path / "a", samples[:1], [(np.array([[1.0, 2, 30, 40]]), [0.5])])
    (tmp_path / "a" / "x").mkdir()
    (tmp_path / "a" / "x" / "nope.txt").write_text("nope\n1\n1 2 3 4 0.5\n")
    res, _ = _invoke(["--predictions", str(tmp_path / "a"), *data])
    assert res.exit_code == 2
    assert "Error: predictions name 1 image(s) not in the set: 'nope'" in res.output
    stem = Path(samples[0].extra["name"]).stem
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "p.txt").write_text(f"{stem}\n2\n1 2 30 40 0.9\n5 5 -3 10 0.4\n")
    res, _ = _invoke(["--predictions", str(tmp_path / "b"), *data])
    assert res.exit_code == 2 and "negative width or height (5 5 -3 10 0.4)" in res.output
    (tmp_path / "b" / "p.txt").write_text(f"{stem}\n3\n1 2 30 40 0.9\n")
    res, _ = _invoke(["--predictions", str(tmp_path / "b"), *data])
    assert res.exit_code == 2 and "announces 3 detections" in res.output
    res, _ = _invoke(data)
    assert res.exit_code == 2 and "give a MODEL or --predictions" in res.output


def test_eval_detector_on_fddb_detection_file(tmp_path):
    """The official FDDB detection file (every image's block in one file) with each
    ellipse's bounding rectangle as the detection: all matched (IoU ~ pi/4 > 0.5) at 0 FP."""
    root = REPO.parent / "shared" / "data" / "faces" / "fddb_sample"
    samples = load_samples(f"fddb:{root}")
    lines = []
    for i, s in enumerate(samples):
        lines += [s.extra["name"], str(len(s.boxes))]
        lines += [f"{b[0]} {b[1]} {b[2] - b[0]} {b[3] - b[1]} {0.5 + 0.01 * i}" for b in s.boxes]
    (tmp_path / "dets.txt").write_text("\n".join(lines) + "\n")
    res, out = _invoke(["--predictions", str(tmp_path / "dets.txt"), "--data", f"fddb:{root}",
                        "--fddb-roc", str(tmp_path / "roc"), "--json"])
    assert res.exit_code == 0, res.output
    f = out["fddb"]
    assert f["num_faces"] == 11 and f["tpr_at_1000_fp"] == 1.0 and f["fp_reached"] == 0
    assert 0.7 < f["tpr_cont_at_1000_fp"] < 0.85 and out["ap50"] == pytest.approx(1.0)
    disc = (tmp_path / "roc" / "DiscROC.txt").read_text().splitlines()
    assert len(disc) == len(samples) and disc[0] == "1 0 0.5"  # lowest threshold first
    assert disc[-1] == f"{len(samples[-1].boxes) / 11:g} 0 {0.5 + 0.01 * (len(samples) - 1):g}"
