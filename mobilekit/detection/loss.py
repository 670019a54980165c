"""MultiBox loss: softmax cross-entropy with hard-negative mining + smooth-L1 on positives.

As in the official code (FaceBoxes.PyTorch layers/modules/multibox_loss.py, Caffe
MultiBoxLoss): per image, negatives are ranked by their background CE and the top
`neg_pos_ratio * num_pos` are kept (capped at A - 1); both terms are summed and divided
by the number of positives in the batch (at least 1); total = loc_weight * loc + conf.
The paper says 3:1, the official code uses 7:1 (author: 7 is "slightly better").
"""
from mobilekit.keras import tf

NEG_POS_RATIO = 7.0
LOC_WEIGHT = 2.0


def smooth_l1(x):
    ax = tf.abs(x)
    return tf.where(ax < 1.0, 0.5 * x * x, ax - 0.5)


def hard_negative_mask(ce, positive, neg_pos_ratio):
    """bool [N, A]: per image, the `ratio * num_pos` negatives with the largest CE."""
    num_anchors = tf.shape(ce)[1]
    mining = tf.where(positive, tf.zeros_like(ce), ce)
    rank = tf.argsort(tf.argsort(mining, axis=1, direction="DESCENDING", stable=True),
                      axis=1, stable=True)
    num_pos = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1, keepdims=True)
    num_neg = tf.minimum(tf.cast(tf.cast(num_pos, tf.float32) * neg_pos_ratio, tf.int32),
                         num_anchors - 1)
    return tf.logical_and(rank < num_neg, tf.logical_not(positive))


def multibox_loss(loc_pred, conf_pred, loc_target, labels, neg_pos_ratio=NEG_POS_RATIO,
                  loc_weight=LOC_WEIGHT):
    """Returns (total, loc_loss, conf_loss), each a scalar.

    loc_pred/loc_target [N, A, 4], conf_pred [N, A, 2] logits, labels [N, A] in {0, 1}.
    """
    loc_pred = tf.cast(loc_pred, tf.float32)
    conf_pred = tf.cast(conf_pred, tf.float32)
    labels = tf.cast(labels, tf.int32)
    positive = labels > 0
    pos_f = tf.cast(positive, tf.float32)
    num_pos = tf.maximum(tf.reduce_sum(pos_f), 1.0)
    loc_l = tf.reduce_sum(smooth_l1(loc_pred - tf.cast(loc_target, tf.float32)) * pos_f[..., None])
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=conf_pred)
    keep = tf.logical_or(positive, hard_negative_mask(ce, positive, neg_pos_ratio))
    conf_l = tf.reduce_sum(ce * tf.cast(keep, tf.float32))
    loc_l, conf_l = loc_l / num_pos, conf_l / num_pos
    return loc_weight * loc_l + conf_l, loc_l, conf_l
