"""FaceBoxes anchors, box coding, matching and the multibox loss on hand-made cases."""
import math
from itertools import product

import numpy as np
import pytest

from mobilekit.detection.anchors import generate_anchors, num_anchors
from mobilekit.detection.boxes import decode, encode, iou_np, match
from mobilekit.detection.loss import multibox_loss


def official_prior_box(image_size):
    """Literal port of zisianw/FaceBoxes.PyTorch layers/functions/prior_box.py."""
    min_sizes, steps = [[32, 64, 128], [256], [512]], [32, 64, 128]
    maps = [[math.ceil(image_size[0] / s), math.ceil(image_size[1] / s)] for s in steps]
    anchors = []
    for k, f in enumerate(maps):
        for i, j in product(range(f[0]), range(f[1])):
            for min_size in min_sizes[k]:
                s_kx, s_ky = min_size / image_size[1], min_size / image_size[0]
                if min_size == 32:
                    xs, ys = [j + 0, j + 0.25, j + 0.5, j + 0.75], [i + 0, i + 0.25, i + 0.5, i + 0.75]
                elif min_size == 64:
                    xs, ys = [j + 0, j + 0.5], [i + 0, i + 0.5]
                else:
                    xs, ys = [j + 0.5], [i + 0.5]
                for cy, cx in product([y * steps[k] / image_size[0] for y in ys],
                                      [x * steps[k] / image_size[1] for x in xs]):
                    anchors.append([cx, cy, s_kx, s_ky])
    return np.array(anchors)


def test_anchor_counts():
    assert num_anchors((1024, 1024)) == 21824
    assert num_anchors((480, 640)) == 6400
    assert generate_anchors((1024, 1024)).shape == (21824, 4)


@pytest.mark.parametrize("size", [(480, 640), (256, 256), (200, 300)])
def test_anchors_equal_official_prior_box(size):
    np.testing.assert_allclose(generate_anchors(size), official_prior_box(size), atol=1e-6)


def test_first_cell_anchor_offsets():
    a = generate_anchors((1024, 1024)) * 1024
    # 32-px anchors at the cell origin + {0, 8, 16, 24}; 64-px at + {0, 16}; 128 at the centre.
    assert a[:4, 0].tolist() == [0, 8, 16, 24] and a[:16:4, 1].tolist() == [0, 8, 16, 24]
    assert a[16:20, :2].tolist() == [[0, 0], [16, 0], [0, 16], [16, 16]]
    assert a[20].tolist() == [16, 16, 128, 128]
    assert a[32 * 32 * 21].tolist() == [32, 32, 256, 256]  # first stride-64 anchor
    assert a[-1].tolist() == [960, 960, 512, 512]  # last stride-128 anchor


ANCHORS = np.array([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.5, 0.5, 0.2, 0.2]],
                   np.float32)


def test_box_on_anchor_encodes_to_zero_and_roundtrips():
    boxes = np.array([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1], [0.4, 0.4, 0.6, 0.6]], np.float32)
    np.testing.assert_allclose(encode(boxes, ANCHORS).numpy(), 0, atol=1e-6)
    other = np.array([[0.1, 0.05, 0.3, 0.45], [0.6, 0.7, 0.95, 0.8], [0.3, 0.2, 0.9, 0.4]], np.float32)
    np.testing.assert_allclose(decode(encode(other, ANCHORS), ANCHORS).numpy(), other, atol=1e-6)


def test_encode_by_hand():
    # Box centre (0.3, 0.25), size 0.2 x 0.5 against anchor (0.25, 0.25, 0.5, 0.5):
    # dx = 0.05 / (0.1 * 0.5) = 1, dy = 0, dw = ln(0.4) / 0.2, dh = 0.
    d = encode(np.array([[0.2, 0.0, 0.4, 0.5]], np.float32), ANCHORS[:1]).numpy()[0]
    np.testing.assert_allclose(d, [1.0, 0.0, math.log(0.4) / 0.2, 0.0], atol=1e-5)


def test_match_exact_box():
    loc, labels = match(np.array([[0, 0, 0.5, 0.5]]), ANCHORS)
    assert labels.numpy().tolist() == [1, 0, 0]
    np.testing.assert_allclose(loc.numpy(), 0, atol=1e-6)


def test_match_best_anchor_is_forced_below_threshold():
    face = np.array([[0.45, 0.45, 0.55, 0.55]])  # IoU 0.25 with anchor 2 (< 0.35)
    assert iou_np(face, [[0.4, 0.4, 0.6, 0.6]])[0, 0] == pytest.approx(0.25)
    assert match(face, ANCHORS)[1].numpy().tolist() == [0, 0, 1]
    # ... unless it is below the official "hard face" filter.
    assert match(face, ANCHORS, min_best_iou=0.3)[1].numpy().tolist() == [0, 0, 0]


def test_match_threshold_and_shared_anchor():
    # Two faces whose best anchor is anchor 0: the later face claims it.
    faces = np.array([[0, 0, 0.5, 0.5], [0.05, 0.05, 0.5, 0.5]])
    loc, labels = match(faces, ANCHORS)
    assert labels.numpy().tolist() == [1, 0, 0]
    np.testing.assert_allclose(loc.numpy()[0], encode(faces[1:], ANCHORS[:1]).numpy()[0], atol=1e-6)
    # A face overlapping anchors 0 (IoU 0.64) and 2 (IoU 0.16): only anchor 0.
    assert match(np.array([[0.0, 0.0, 0.4, 0.4]]), ANCHORS)[1].numpy().tolist() == [1, 0, 0]


def test_match_no_faces():
    loc, labels = match(np.zeros((0, 4)), ANCHORS)
    assert labels.numpy().tolist() == [0, 0, 0] and not loc.numpy().any()


def test_multibox_loss_by_hand():
    conf = np.array([[[0, 0], [0, 0], [2, 0], [0, 3]]], np.float32)
    labels = np.array([[1, 0, 0, 0]])
    loc_pred = np.array([[[0.5, -2, 0, 0], [9, 9, 9, 9], [0, 0, 0, 0], [0, 0, 0, 0]]], np.float32)
    loc_t = np.zeros((1, 4, 4), np.float32)
    ln2 = math.log(2)
    ce2, ce3 = math.log(1 + math.exp(-2)), math.log(1 + math.exp(3))
    smooth = 0.5 * 0.25 + (2 - 0.5)  # 0.125 + 1.5; the negative's loc (9s) is not counted
    total, loc_l, conf_l = multibox_loss(loc_pred, conf, loc_t, labels, neg_pos_ratio=1)
    assert loc_l.numpy() == pytest.approx(smooth)
    assert conf_l.numpy() == pytest.approx(ln2 + ce3, rel=1e-5)  # hardest negative only
    assert total.numpy() == pytest.approx(2 * smooth + ln2 + ce3, rel=1e-5)
    # Ratio 7 is capped at A - 1 = 3 negatives: every negative counts.
    conf_all = multibox_loss(loc_pred, conf, loc_t, labels, neg_pos_ratio=7)[2]
    assert conf_all.numpy() == pytest.approx(2 * ln2 + ce2 + ce3, rel=1e-5)


def test_multibox_loss_normalises_by_batch_positives():
    conf = np.zeros((2, 3, 2), np.float32)
    labels = np.array([[1, 0, 0], [1, 1, 0]])
    loc = np.zeros((2, 3, 4), np.float32)
    loc_t = np.zeros((2, 3, 4), np.float32)
    loc_t[1, 1] = [1, 0, 0, 0]  # smooth-L1 0.5 on one positive
    total, loc_l, conf_l = multibox_loss(loc, conf, loc_t, labels, neg_pos_ratio=1)
    # positives: 3 (ln2 each); negatives: image 0 keeps 1, image 1 keeps 1 (cap A-1... 2 > 1 left).
    assert loc_l.numpy() == pytest.approx(0.5 / 3)
    assert conf_l.numpy() == pytest.approx(5 * math.log(2) / 3, rel=1e-5)
