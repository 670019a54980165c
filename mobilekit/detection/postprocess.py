"""From raw head outputs to face boxes: decoding inside the graph, NMS outside it.

Choice: the *inference model* (`inference_model`) appends one registered layer,
`DecodeDetections`, which holds the anchors as a constant (recomputed from its config, so
the .keras file stays small) and outputs decoded corner boxes [N, A, 4] (normalised
x1 y1 x2 y2) and face probabilities [N, A]. A .tflite converted from it (fp32 or int8)
therefore gives boxes directly with builtin ops only, in forms every delegate takes (see
DecodeDetections). Score thresholding, top-k and NMS run in NumPy (`nms`, `select`) - the
same code for Keras and TFLite outputs, so both are post-processed identically; NMS on a few
hundred candidates costs far less than the network.

For apps, `nms_input_model` gives the pre-NMS form that mobilekit.export.nms completes with
TFLite's TFLite_Detection_PostProcess op (`mobilekit export --nms`); `Detector` runs such
files too (their NMS is the file's).
"""
import re

import numpy as np

from mobilekit.detection.anchors import MIN_SIZES, STEPS, anchors_per_cell, generate_anchors
from mobilekit.detection.boxes import VARIANCES, iou_np
from mobilekit.keras import keras, layers, own_node, register, tf

# Official inference settings (Caffe deploy.prototxt, PyTorch test.py).
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.3
TOP_K = 5000
KEEP_TOP_K = 750
# Integer files' boxes (`inference_model(fused=True)`): each map adds its anchor centres to
# BOX_SCALE times its corners, the ADD's fused RELU6 clips to the image ([0, 6]), one MUL
# scales back. The boxes' int8 step is then 1/255 of the image and the corners' a map's own
# (FaceBoxes at 640x480: 13 px before, the 512-px anchors' stray boxes setting one range).
BOX_SCALE = 6.0


@register("mobilekit")
class DecodeDetections(layers.Layer):
    """[loc [N, A, 4], conf [N, A, 2]] -> [boxes [N, A, 4], scores [N, A]].

    Written in ops every delegate takes (XNNPACK fp32 and int8, the GPU delegate in fp32 and
    fp16): SPLIT / CONCATENATION on the last axis, elementwise MUL / ADD / SUB with
    per-anchor constants, one EXP and a LOGISTIC; no strided slice (a shrink-axis
    STRIDED_SLICE is refused by the GPU delegate, SOFTMAX and EXP have no int8 XNNPACK
    kernel) and no FULLY_CONNECTED (a 4x4 one for the corners cost ~0.1 ms of the int8
    file's 0.28 ms tail at 640x480: XNNPACK runs a K=4 GEMM per anchor row). With
    [dxy, dwh] = split(loc) and [c0, c1] = split(conf):

        centre = dxy * .1 [wa, ha] + [cxa, cya]
        half   = exp(dwh * .2) * [wa, ha] / 2
        boxes  = concat(centre - half, centre + half) = [x1, y1, x2, y2]
        scores = sigmoid(c1 - c0) = softmax(conf)[..., 1]

    `exp_form="elu"` (the int8 export's stand-in, see `int8_form`) writes exp(z) as
    e^c * (ELU(z - c) + 1), exact for z <= c (ELU(x) = e^x - 1 for x <= 0) and XNNPACK has
    an int8 ELU; z = log(w / w_anchor) above c = ELU_SHIFT (boxes e^c times their anchor)
    grows linearly instead.
    """

    QUANT = "passthrough"
    EXP_FORMS = ("exp", "elu")

    def __init__(self, image_size, min_sizes=MIN_SIZES, steps=STEPS, map_sizes=None,
                 variances=VARIANCES, exp_form="exp", **kwargs):
        super().__init__(**kwargs)
        if exp_form not in self.EXP_FORMS:
            raise ValueError(f"exp_form must be one of {', '.join(self.EXP_FORMS)}; "
                             f"got {exp_form!r}")
        self.image_size = [int(v) for v in image_size]
        self.min_sizes = [[int(m) for m in sizes] for sizes in min_sizes]
        self.steps = [int(s) for s in steps]
        self.map_sizes = None if map_sizes is None else [[int(v) for v in s] for s in map_sizes]
        self.variances = [float(v) for v in variances]
        self.exp_form = exp_form
        anchors = generate_anchors(self.image_size, self.min_sizes, self.steps,
                                   None if map_sizes is None else [tuple(s) for s in map_sizes])
        self._consts = {k: tf.constant(v, tf.float32) for k, v in
                        decode_constants(anchors, self.variances, exp_form).items()}

    def call(self, inputs):
        loc, conf = inputs
        c = self._consts
        d_xy, d_wh = tf.split(loc, 2, axis=-1)
        centre = d_xy * c["xy_gain"] + c["anchor_xy"]
        z = d_wh * c["variance_wh"]
        if self.exp_form == "exp":
            half = tf.exp(z) * c["half_wh"]
        else:  # e^c (ELU(z - c) + 1) * wa / 2
            half = tf.nn.elu(z - ELU_SHIFT) * c["half_wh"] + c["half_wh"]
        boxes = tf.concat([centre - half, centre + half], axis=-1)
        background, face = tf.split(conf, 2, axis=-1)
        return [boxes, tf.reshape(tf.sigmoid(face - background), [-1, int(loc.shape[1])])]

    def int8_form(self):
        """The same decoding with the int8-delegable exp (exp_form="elu"), same name."""
        return DecodeDetections(**{**self.get_config(), "exp_form": "elu"})

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size, min_sizes=self.min_sizes, steps=self.steps,
                      map_sizes=self.map_sizes, variances=self.variances,
                      exp_form=self.exp_form)
        return config


# exp(z) = e^c (ELU(z - c) + 1) is exact up to z = c: boxes up to e = 2.7x their anchor.
ELU_SHIFT = 1.0


def decode_constants(anchors, variances=VARIANCES, exp_form="exp"):
    """The constant tensors of DecodeDetections' graph form (see its docstring), [1, A, 2]
    per anchor (the variance [1, 1, 2])."""
    a = np.asarray(anchors, np.float64)
    half = a[:, 2:] / 2
    if exp_form == "elu":  # e^c * (ELU + 1)
        half = half * np.exp(ELU_SHIFT)
    return {"xy_gain": (variances[0] * a[:, 2:])[None], "anchor_xy": a[:, :2][None],
            "variance_wh": np.full((1, 1, 2), variances[1]), "half_wh": half[None]}


def _anchorwise_conv(conv, matrix, fmap):
    """`conv` (k anchors x m outputs per cell, channel a * m + j) followed by the linear map
    `matrix` [m, n] on each anchor's m outputs, as one conv with the map folded into its
    kernel and bias: [N, H, W, k * n], channel a * n + j."""
    matrix = tf.constant(matrix, tf.float32)
    m, n = matrix.shape
    kh, kw, cin, out = conv.kernel.shape
    k = out // m
    kernel = tf.reshape(tf.reshape(conv.kernel, [kh * kw * cin * k, m]) @ matrix,
                        [kh, kw, cin, k * n])
    bias = tf.reshape(tf.reshape(conv.bias, [k, m]) @ matrix, [k * n])
    y = tf.nn.conv2d(fmap, kernel, conv.strides, conv.padding.upper(),
                     dilations=conv.dilation_rate)
    return tf.nn.bias_add(y, bias)


@register("mobilekit")
class AnchorwiseHead(layers.Wrapper):
    """A head conv and a fixed linear map of each anchor's outputs, as one conv (see
    `_anchorwise_conv`), flattened to [N, H*W*k, n] ([N, H*W*k] when n = 1).

    Used with [[-1], [1]] on a conf head (face minus background logit: softmax over two
    classes is the sigmoid of the difference, at half the conv's MACs), with
    [[1, -1], [-1, 1]] (both differences, the NMS op's two score columns) and with a
    permutation of a loc head's (dx, dy, dw, dh) into the NMS op's (dy, dx, dh, dw): the
    last-axis SPLIT / SUB / CONCATENATION these replace copy 1-2 values at a time (~28 µs
    each for 6,400 anchors in int8 on a 2-core AVX-512 host, against ~2 µs for an
    elementwise op on the same tensor: tools/faceboxes_op_costs.py)."""

    def __init__(self, conv, matrix, **kwargs):
        super().__init__(conv, **kwargs)
        self.matrix = [[float(v) for v in row] for row in matrix]

    def call(self, fmap):
        y = _anchorwise_conv(self.layer, self.matrix, fmap)
        n = len(self.matrix[0])
        cells = int(y.shape[1]) * int(y.shape[2]) * int(y.shape[3]) // n
        return tf.reshape(y, [-1, cells] if n == 1 else [-1, cells, n])

    def get_config(self):
        return {**super().get_config(), "matrix": self.matrix}


# Per anchor, loc channels (dx, dy, dw, dh): the centre offsets and the size logs.
_SELECT_XY = [[1, 0], [0, 1], [0, 0], [0, 0]]
_SELECT_WH = [[0, 0], [0, 0], [1, 0], [0, 1]]


@register("mobilekit")
class HeadBoxes(layers.Wrapper):
    """One map's loc conv and the box decoding as one block: fmap [N, H, W, C] -> box
    corners minus their anchor's centre, [N, H*W*k, 4] (x1 - cx, y1 - cy, x2 - cx, y2 - cy;
    `AnchorCentres` adds the centres). Same boxes as DecodeDetections.

    Every per-anchor constant but the centre depends only on the anchor's size, i.e. on
    the conv channel: with the loc conv split by channel into

        d  = conv(fmap, W_xy) + b_xy                 (dx, dy; 2k channels)
        z  = conv(fmap, v1 W_wh) + v1 b_wh           (v1 dw, v1 dh)
        corners = conv1x1(d, M_d) + conv1x1(exp(z), M_e)

    M_d puts v0 (wa, ha) d on both corners and M_e -+(wa, ha) / 2 exp(z) on the first and
    second: the anchor-size gains and the x1 y1 x2 y2 interleaving live in two 1x1 convs on
    the small map instead of elementwise ops, SPLITs and a CONCATENATION over all anchors.
    `exp_form="elu"` (the int8 stand-in, `int8_form`) uses exp(z) = e^c (ELU(z - c) + 1) as
    DecodeDetections does. `scale` multiplies the output (folded into the two 1x1 convs).
    """

    def __init__(self, conv, anchor_wh, variances=VARIANCES, exp_form="exp", scale=1.0,
                 **kwargs):
        super().__init__(conv, **kwargs)
        if exp_form not in DecodeDetections.EXP_FORMS:
            raise ValueError(f"exp_form must be one of {', '.join(DecodeDetections.EXP_FORMS)}"
                             f"; got {exp_form!r}")
        self.anchor_wh = [[float(v) for v in wh] for wh in anchor_wh]
        self.variances = [float(v) for v in variances]
        self.exp_form = exp_form
        self.scale = float(scale)

    def call(self, fmap):
        wh = np.asarray(self.anchor_wh, np.float64)  # [k, 2]
        k = len(wh)
        mix_d, mix_e = np.zeros((2 * k, 4 * k)), np.zeros((2 * k, 4 * k))
        for a in range(k):
            for j in range(2):
                mix_d[2 * a + j, [4 * a + j, 4 * a + 2 + j]] = (
                    self.scale * self.variances[0] * wh[a, j])
                mix_e[2 * a + j, [4 * a + j, 4 * a + 2 + j]] = (
                    np.float64([-0.5, 0.5]) * self.scale * wh[a, j])
        d = _anchorwise_conv(self.layer, _SELECT_XY, fmap)
        z = _anchorwise_conv(self.layer, np.asarray(_SELECT_WH) * self.variances[1], fmap)
        if self.exp_form == "exp":
            e, bias = tf.exp(z), np.zeros(4 * k)
        else:  # e^c (ELU(z - c) + 1): the "+ 1" becomes the second conv's bias
            mix_e = mix_e * np.exp(ELU_SHIFT)
            e, bias = tf.nn.elu(z - ELU_SHIFT), mix_e.sum(axis=0)
        corners = _pointwise(e, mix_e, bias) + _pointwise(d, mix_d)
        cells = int(fmap.shape[1]) * int(fmap.shape[2]) * k
        return tf.reshape(corners, [-1, cells, 4])

    def int8_form(self):
        """The same block with the int8-delegable exp (exp_form="elu"), same name."""
        config = {k: v for k, v in self.get_config().items() if k != "layer"}
        return HeadBoxes(self.layer, **{**config, "exp_form": "elu"})

    def get_config(self):
        return {**super().get_config(), "anchor_wh": self.anchor_wh,
                "variances": self.variances, "exp_form": self.exp_form, "scale": self.scale}


def _pointwise(x, matrix, bias=None):
    y = tf.nn.conv2d(x, tf.constant(np.asarray(matrix)[None, None], tf.float32), 1, "VALID")
    return y if bias is None else tf.nn.bias_add(y, tf.constant(bias, tf.float32))


@register("mobilekit")
class AnchorCentres(layers.Layer):
    """[N, A, 4] corners relative to the anchor centres -> normalised corners (one ADD of
    the constant [cx, cy, cx, cy] per anchor, recomputed from the config); `map_index`: the
    anchors of that map only, `scale`: the centres times it (corners given times it)."""

    def __init__(self, image_size, map_sizes, min_sizes=MIN_SIZES, steps=STEPS,
                 map_index=None, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.image_size = [int(v) for v in image_size]
        self.map_sizes = [[int(v) for v in s] for s in map_sizes]
        self.min_sizes = [[int(m) for m in sizes] for sizes in min_sizes]
        self.steps = [int(s) for s in steps]
        self.map_index = None if map_index is None else int(map_index)
        self.scale = float(scale)
        centres = generate_anchors(self.image_size, self.min_sizes, self.steps,
                                   [tuple(s) for s in self.map_sizes])[:, :2]
        if self.map_index is not None:
            counts = [h * w * k for (h, w), k in zip(self.map_sizes,
                                                      anchors_per_cell(self.min_sizes))]
            start = sum(counts[:self.map_index])
            centres = centres[start:start + counts[self.map_index]]
        self._centres = tf.constant(self.scale * np.tile(centres, 2)[None], tf.float32)

    def call(self, corners):
        return corners + self._centres

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "map_sizes": self.map_sizes, "min_sizes": self.min_sizes, "steps": self.steps,
                "map_index": self.map_index, "scale": self.scale}


@register("mobilekit")
class NmsInputs(layers.Layer):
    """[loc [N, A, 4], conf [N, A, 2]] -> what TFLite_Detection_PostProcess takes (see
    mobilekit.export.nms): encodings [N, A, 4] in (dy, dx, dh, dw) order and scores
    [N, A, 2] = softmax(conf) = sigmoid([c0 - c1, c1 - c0]); SPLIT, CONCATENATION, SUB and a
    LOGISTIC, ops XNNPACK (fp32, int8) and the GPU delegate take, with no FULLY_CONNECTED
    for the same reason as DecodeDetections (in the whole `--nms` file the change was within
    the timing noise: the post-processing op dominates that part)."""

    QUANT = "passthrough"

    def call(self, inputs):
        loc, conf = inputs
        dx, dy, dw, dh = tf.split(loc, 4, axis=-1)
        background, face = tf.split(conf, 2, axis=-1)
        return [tf.concat([dy, dx, dh, dw], axis=-1),
                tf.sigmoid(tf.concat([background - face, face - background], axis=-1))]


def nms_input_model(model, fused=True):
    """Wrap a training-form FaceBoxes model into its pre-NMS form ([encodings, scores]);
    `fused` as in `inference_model` (the reordering and score differences inside the head
    convs, then one LOGISTIC)."""
    if len(model.outputs) != 2:
        raise ValueError(f"expected a detector with outputs [loc, conf]; "
                         f"got {len(model.outputs)} outputs")
    heads = _plain_heads(model) if fused else None
    if heads is not None:
        enc = [AnchorwiseHead(loc, np.eye(4)[:, [1, 0, 3, 2]], name=f"head{i}_encodings")(
            own_node(model, loc).input_tensors) for i, (loc, _) in enumerate(heads, start=1)]
        logits = [AnchorwiseHead(conf, [[1, -1], [-1, 1]], name=f"head{i}_score_logits")(
            own_node(model, conf).input_tensors) for i, (_, conf) in enumerate(heads, start=1)]
        enc = layers.Concatenate(axis=1, name="encodings")(enc)
        scores = layers.Activation("sigmoid", name="scores")(
            layers.Concatenate(axis=1, name="score_logits")(logits))
        return keras.Model(model.inputs, [enc, scores], name=f"{model.name}_nms")
    enc, scores = NmsInputs(name="nms_inputs")(list(model.outputs))
    return keras.Model(model.inputs, [enc, scores], name=f"{model.name}_nms")


def inference_model(model, fused=False):
    """Wrap a training-form FaceBoxes model ([loc, conf]) into [boxes, scores].

    fused: decode inside the heads (`HeadBoxes`, `AnchorwiseHead`; the integer exports'
    form, see `fused_decoding_pays`) where the heads are plain convs, with the boxes
    clipped to the image (see BOX_SCALE); False, or a QAT-wrapped model, appends
    DecodeDetections to [loc, conf] instead. Same scores, and the same boxes inside the
    image."""
    from mobilekit.detection.model import map_sizes

    if len(model.outputs) != 2:
        raise ValueError(f"expected a detector with outputs [loc, conf]; got {len(model.outputs)} outputs")
    heads = _plain_heads(model) if fused else None
    if heads is not None:
        return _fused_inference_model(model, heads)
    h, w = model.inputs[0].shape[1:3]
    decode = DecodeDetections((h, w), map_sizes=map_sizes(model), name="decode")
    boxes, scores = decode(list(model.outputs))
    return keras.Model(model.inputs, [boxes, scores], name=f"{model.name}_inference")


# TFLite tensor names of the box decoding's ops: DecodeDetections ("decode/") or the fused
# heads' layers (`inference_model`: "head1_boxes/", "head1_score_logit/", "boxes/", ...).
DECODE_TENSOR = re.compile(r"/(decode|head\d+_(boxes|centres|clip|score_logits?)|corners|boxes|"
                           r"score_logits|scores)/")


def fused_decoding_pays(quant):
    """Whether an export in `quant` decodes inside the heads (`inference_model(fused=True)`).
    Measured on FaceBoxes at 640x480, 1 thread, a 2-core AVX-512 VNNI host, both forms and
    the network alone round-robin, the tail as the median per-round ratio to the network
    (95 % interval; tools/faceboxes_stage_profile.py --compare-tails): int8 +10.6 %
    [10.2, 11.1] with DecodeDetections (its last-axis SPLIT / CONCATENATION over [1, A, 4]
    copy 1-2 values at a time, ~28 us each), +3.7 % [2.9, 4.3] fused. fp32: +2.0 % and
    +2.3 % in one run, +2.9 % and +2.6 % in another (the elementwise ops are cheap there),
    so float files keep DecodeDetections, the form checked on the GPU delegate."""
    return quant in ("int8", "int16x8")


def decodes_boxes(model):
    """Whether `model` decodes boxes in its graph (DecodeDetections or fused HeadBoxes)."""
    return any(isinstance(layer, (DecodeDetections, HeadBoxes)) for layer in model.layers)


def _plain_heads(model):
    """[(loc conv, conf conv)] per map of a FaceBoxes model whose heads are plain biased
    convs with two classes (what the fused forms rewrite), else None (e.g. QAT-wrapped)."""
    names = {layer.name for layer in model.layers}
    if not all(f"head{i}_{kind}" in names for i in (1, 2, 3) for kind in ("loc", "conf")):
        return None
    heads = [(model.get_layer(f"head{i}_loc"), model.get_layer(f"head{i}_conf"))
             for i in (1, 2, 3)]
    for loc, conf in heads:
        for conv in (loc, conf):
            if (type(conv) is not layers.Conv2D or not conv.use_bias or conv.groups != 1
                    or conv.activation is not keras.activations.linear
                    or conv.data_format != "channels_last"):
                return None
        if loc.filters % 4 or conf.filters != loc.filters // 2:
            return None
    return heads


def _fused_inference_model(model, heads):
    from mobilekit.detection.model import map_sizes

    hw = tuple(int(v) for v in model.inputs[0].shape[1:3])
    sizes = map_sizes(model)
    anchors = generate_anchors(hw, map_sizes=sizes)
    clipped, logits, start = [], [], 0
    for i, ((loc, conf), (rows, cols)) in enumerate(zip(heads, sizes), start=1):
        k = loc.filters // 4
        anchor_wh = anchors[start:start + k, 2:]  # cell (0, 0); every cell has the same sizes
        start += rows * cols * k
        fmap = own_node(model, loc).input_tensors
        corners = HeadBoxes(loc, anchor_wh, scale=BOX_SCALE, name=f"head{i}_boxes")(fmap)
        corners = AnchorCentres(hw, sizes, map_index=i - 1, scale=BOX_SCALE,
                                name=f"head{i}_centres")(corners)
        clipped.append(layers.ReLU(BOX_SCALE, name=f"head{i}_clip")(corners))
        logits.append(AnchorwiseHead(conf, [[-1], [1]], name=f"head{i}_score_logit")(
            own_node(model, conf).input_tensors))
    boxes = layers.Rescaling(1 / BOX_SCALE, name="boxes")(
        layers.Concatenate(axis=1, name="corners")(clipped))
    scores = layers.Activation("sigmoid", name="scores")(
        layers.Concatenate(axis=1, name="score_logits")(logits))
    return keras.Model(model.inputs, [boxes, scores], name=f"{model.name}_inference")


def nms(boxes, scores, iou_threshold=NMS_IOU):
    """Greedy NMS (NumPy); returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        if order.size == 1:
            break
        overlap = iou_np(boxes[i:i + 1], boxes[order[1:]])[0]
        order = order[1:][overlap <= iou_threshold]
    return np.asarray(keep, np.int64)


def select(boxes, scores, score_threshold=SCORE_THRESHOLD, nms_iou=NMS_IOU, top_k=TOP_K,
           keep_top_k=KEEP_TOP_K):
    """One image's decoded boxes [A, 4] and scores [A] -> (boxes [K, 4], scores [K])."""
    boxes, scores = np.asarray(boxes, np.float64), np.asarray(scores, np.float64)
    idx = np.nonzero(scores > score_threshold)[0]
    idx = idx[np.argsort(-scores[idx], kind="stable")][:top_k]
    keep = idx[nms(boxes[idx], scores[idx], nms_iou)][:keep_top_k]
    return boxes[keep], scores[keep]


def to_pixels(boxes, width, height):
    """Normalised corner boxes -> pixel boxes of an image of this size, clipped to it."""
    scale = np.array([width, height, width, height], np.float64)
    out = np.asarray(boxes, np.float64).reshape(-1, 4) * scale
    return np.clip(out, 0, scale)


# ---------------------------------------------------------------- running a detector
class Detector:
    """Decoded boxes and scores from a Keras model (.keras, training or inference form) or
    a .tflite file; `detect` adds thresholding + NMS and maps boxes to image pixels."""

    def __init__(self, model=None, tflite_path=None, num_threads=1):
        self.interpreter, self.layout, self.in_graph_nms = None, None, False
        if tflite_path is not None:
            from ai_edge_litert.interpreter import Interpreter

            from mobilekit.export.metadata import read_metadata
            from mobilekit.export.stem import input_layout

            self.interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
            # A file with NMS in the graph (TFLite_Detection_PostProcess): 4 outputs.
            self.in_graph_nms = len(self.interpreter.get_output_details()) == 4
            # A space-to-depth file (mobilekit.export.stem) takes rearranged images.
            self.layout = input_layout(read_metadata(tflite_path))
            shape = (self.layout["image_size"] if self.layout else
                     self.interpreter.get_input_details()[0]["shape"][1:3])
            self.input_hw = tuple(int(side) for side in shape)
        else:
            self.training_model = None  # the [loc, conf] form, where given (resizable)
            if len(model.outputs) == 2 and model.outputs[1].shape.rank == 3:
                self.training_model = model
                model = inference_model(model)
            self.model = model  # shares its layers (weights) with a training-form model
            self.input_hw = tuple(model.inputs[0].shape[1:3])
            self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @classmethod
    def load(cls, path, num_threads=1, input_hw=None):
        """A .tflite, a .keras file, or a run directory holding model.keras; `input_hw`
        (height, width) rebuilds a Keras detector at that input (a .tflite file's input is
        fixed: a different size is an error)."""
        from pathlib import Path

        path = Path(path)
        if path.is_dir():
            path = path / "model.keras"
        if not path.exists():
            raise FileNotFoundError(f"detector model not found: {path}")
        if path.suffix == ".tflite":
            detector = cls(tflite_path=path, num_threads=num_threads)
            if input_hw is not None and tuple(input_hw) != detector.input_hw:
                (h, w), (fh, fw) = input_hw, detector.input_hw
                raise ValueError(f"{path} takes {fw}x{fh} images (WxH); re-export it with "
                                 f"--input-size {w}x{h}")
            return detector
        from mobilekit.detection.model import with_input_size
        from mobilekit.loading import load_keras

        model = load_keras(path)  # QAT runs included
        return cls(model if input_hw is None else with_input_size(model, input_hw))

    def raw(self, batch):
        """float32 [1, h, w, 3] in [-1, 1] -> (boxes [A, 4], scores [A]) normalised; for a
        file with NMS in the graph, its detections (boxes [K, 4], scores [K]), best first."""
        if self.interpreter is None:
            boxes, scores = self._predict(tf.constant(batch, tf.float32))
            return np.asarray(boxes[0]), np.asarray(scores[0])
        return self._run_tflite(np.asarray(batch, np.float32))

    def _run_tflite(self, batch):
        from mobilekit.export.stem import apply_input_layout

        batch = apply_input_layout(batch, self.layout)
        it = self.interpreter
        inp = it.get_input_details()[0]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            batch = np.clip(np.round(batch / scale + zero), np.iinfo(inp["dtype"]).min,
                            np.iinfo(inp["dtype"]).max).astype(inp["dtype"])
        it.set_tensor(inp["index"], batch)
        it.invoke()
        if self.in_graph_nms:  # boxes, classes, scores, count; boxes (ymin, xmin, ymax, xmax)
            boxes, _, scores, count = (it.get_tensor(d["index"])
                                       for d in it.get_output_details())
            n = int(count[0])
            return boxes[0, :n][:, [1, 0, 3, 2]], scores[0, :n]
        outs = {}
        for d in it.get_output_details():
            value = it.get_tensor(d["index"])
            if d["dtype"] != np.float32:
                scale, zero = d["quantization"]
                value = (value.astype(np.float32) - zero) * scale
            outs[len(d["shape"])] = value[0]
        return outs[3], outs[2]

    def prepare(self, image):
        """uint8 image [H, W, 3] -> network batch (whole image warped to the input)."""
        from mobilekit.detection.data import preprocess, resize_eval

        return np.asarray(preprocess(resize_eval(image, self.input_hw)))[None]

    def detect(self, image, score_threshold=SCORE_THRESHOLD, nms_iou=NMS_IOU,
               keep_top_k=KEEP_TOP_K, batch=None):
        """(pixel boxes [K, 4] of the original image, scores [K]), best first. `batch` is
        `prepare(image)` when the caller already has it."""
        boxes, scores = self.raw(self.prepare(image) if batch is None else batch)
        if self.in_graph_nms:  # thresholds and IoU are the file's; a higher threshold applies
            keep = scores > score_threshold
            boxes = np.asarray(boxes[keep], np.float64)
            scores = np.asarray(scores[keep], np.float64)
        else:
            boxes, scores = select(boxes, scores, score_threshold, nms_iou, keep_top_k=keep_top_k)
        h, w = np.asarray(image).shape[:2]
        return to_pixels(boxes, w, h), scores
