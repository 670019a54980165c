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
import numpy as np

from mobilekit.detection.anchors import MIN_SIZES, STEPS, generate_anchors
from mobilekit.detection.boxes import VARIANCES, iou_np
from mobilekit.keras import keras, layers, register, tf

# Official inference settings (Caffe deploy.prototxt, PyTorch test.py).
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.3
TOP_K = 5000
KEEP_TOP_K = 750


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


def nms_input_model(model):
    """Wrap a training-form FaceBoxes model into its pre-NMS form ([encodings, scores])."""
    if len(model.outputs) != 2:
        raise ValueError(f"expected a detector with outputs [loc, conf]; "
                         f"got {len(model.outputs)} outputs")
    enc, scores = NmsInputs(name="nms_inputs")(list(model.outputs))
    return keras.Model(model.inputs, [enc, scores], name=f"{model.name}_nms")


def inference_model(model):
    """Wrap a training-form FaceBoxes model ([loc, conf]) into [boxes, scores]."""
    from mobilekit.detection.model import map_sizes

    if len(model.outputs) != 2:
        raise ValueError(f"expected a detector with outputs [loc, conf]; got {len(model.outputs)} outputs")
    h, w = model.inputs[0].shape[1:3]
    decode = DecodeDetections((h, w), map_sizes=map_sizes(model), name="decode")
    boxes, scores = decode(list(model.outputs))
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
