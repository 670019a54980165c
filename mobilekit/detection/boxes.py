"""Box coding (SSD centre-size with variances), IoU and anchor matching.

Boxes are corner form (x1, y1, x2, y2); anchors are centre form (cx, cy, w, h); both
normalised to the image unless a function says otherwise. The TF functions run inside
tf.data maps and eagerly; `iou_np` is the NumPy twin used by evaluation.
"""
import numpy as np

from mobilekit.keras import tf

VARIANCES = (0.1, 0.2)
MATCH_IOU = 0.35
# Official port (FaceBoxes.PyTorch box_utils.match, "ignore hard gt"): a face whose best
# anchor overlaps it by less than this is not force-matched; 0 disables the filter.
MIN_BEST_IOU = 0.2


def center_to_corners(boxes):
    cxcy, wh = boxes[..., :2], boxes[..., 2:4]
    return tf.concat([cxcy - wh / 2, cxcy + wh / 2], axis=-1)


def corners_to_center(boxes):
    x1y1, x2y2 = boxes[..., :2], boxes[..., 2:4]
    return tf.concat([(x1y1 + x2y2) / 2, x2y2 - x1y1], axis=-1)


def encode(boxes, anchors, variances=VARIANCES):
    """Corner boxes matched to anchors [A, 4] -> regression targets [A, 4]:
    ((c_box - c_anchor) / (v0 * wh_anchor), log(wh_box / wh_anchor) / v1)."""
    boxes = corners_to_center(tf.cast(boxes, tf.float32))
    anchors = tf.cast(anchors, tf.float32)
    dxy = (boxes[..., :2] - anchors[..., :2]) / (variances[0] * anchors[..., 2:])
    dwh = tf.math.log(tf.maximum(boxes[..., 2:], 1e-8) / anchors[..., 2:]) / variances[1]
    return tf.concat([dxy, dwh], axis=-1)


def decode(deltas, anchors, variances=VARIANCES):
    """Inverse of `encode`: deltas [..., A, 4] -> corner boxes [..., A, 4]."""
    anchors = tf.cast(anchors, tf.float32)
    cxcy = anchors[..., :2] + deltas[..., :2] * variances[0] * anchors[..., 2:]
    wh = anchors[..., 2:] * tf.exp(deltas[..., 2:] * variances[1])
    return tf.concat([cxcy - wh / 2, cxcy + wh / 2], axis=-1)


def iou(a, b):
    """Pairwise IoU of corner boxes a [N, 4] and b [M, 4] -> [N, M] (TF)."""
    a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    lt = tf.maximum(a[:, None, :2], b[None, :, :2])
    rb = tf.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = tf.reduce_prod(tf.maximum(rb - lt, 0.0), axis=-1)
    area_a = tf.reduce_prod(tf.maximum(a[:, 2:] - a[:, :2], 0.0), axis=-1)
    area_b = tf.reduce_prod(tf.maximum(b[:, 2:] - b[:, :2], 0.0), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return tf.math.divide_no_nan(inter, union)


def iou_np(a, b):
    """Pairwise IoU of corner boxes (NumPy, float64) -> [N, M]."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def match(gt_boxes, anchors, threshold=MATCH_IOU, min_best_iou=MIN_BEST_IOU,
          variances=VARIANCES):
    """Assign faces to anchors; returns (loc_targets [A, 4], labels [A] int32 in {0, 1}).

    An anchor is positive when its best IoU with a face is >= `threshold`; in addition each
    face claims its own best anchor (unless that IoU is < `min_best_iou`, the official
    port's filter for faces no anchor can fit). Works with zero faces (all background).
    """
    gt_boxes = tf.reshape(tf.cast(gt_boxes, tf.float32), [-1, 4])
    anchors = tf.cast(anchors, tf.float32)
    num_anchors = tf.shape(anchors)[0]

    def no_faces():
        return tf.zeros([num_anchors, 4], tf.float32), tf.zeros([num_anchors], tf.int32)

    def with_faces():
        overlaps = iou(gt_boxes, center_to_corners(anchors))  # [G, A]
        best_anchor = tf.argmax(overlaps, axis=1, output_type=tf.int32)  # [G]
        best_anchor_iou = tf.reduce_max(overlaps, axis=1)
        best_gt = tf.argmax(overlaps, axis=0, output_type=tf.int32)  # [A]
        best_gt_iou = tf.reduce_max(overlaps, axis=0)
        valid = best_anchor_iou >= min_best_iou
        forced_anchor = tf.boolean_mask(best_anchor, valid)
        forced_gt = tf.boolean_mask(tf.range(tf.shape(gt_boxes)[0]), valid)
        # Forced anchors: the highest face index wins a shared best anchor, as the official
        # loop does (segment max keeps it deterministic; unclaimed anchors get int32 min).
        claim = tf.math.unsorted_segment_max(forced_gt, forced_anchor, num_anchors)
        forced = claim >= 0
        best_gt = tf.where(forced, claim, best_gt)
        best_gt_iou = tf.where(forced, 2.0, best_gt_iou)
        labels = tf.cast(best_gt_iou >= threshold, tf.int32)
        loc = encode(tf.gather(gt_boxes, best_gt), anchors, variances)
        loc = loc * tf.cast(labels, tf.float32)[:, None]  # zeros on background, no NaN
        return loc, labels

    return tf.cond(tf.shape(gt_boxes)[0] > 0, with_faces, no_faces)
