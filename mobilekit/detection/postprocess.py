"""From raw head outputs to face boxes: decoding inside the graph, NMS outside it.

Choice: the *inference model* (`inference_model`) appends one registered layer,
`DecodeDetections`, which holds the anchors as a constant (recomputed from its config, so
the .keras file stays small) and outputs decoded corner boxes [N, A, 4] (normalised
x1 y1 x2 y2) and face probabilities [N, A]. A .tflite converted from it (fp32 or int8)
therefore gives boxes directly with builtin ops only (no TFLite_Detection_PostProcess
custom op). Score thresholding, top-k and NMS run in NumPy (`nms`, `select`) - the same
code for Keras and TFLite outputs, so both are post-processed identically; NMS on a few
hundred candidates costs far less than the network.
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
    """[loc [N, A, 4], conf [N, A, 2]] -> [boxes [N, A, 4], scores [N, A]]."""

    QUANT = "passthrough"

    def __init__(self, image_size, min_sizes=MIN_SIZES, steps=STEPS, map_sizes=None,
                 variances=VARIANCES, **kwargs):
        super().__init__(**kwargs)
        self.image_size = [int(v) for v in image_size]
        self.min_sizes = [[int(m) for m in sizes] for sizes in min_sizes]
        self.steps = [int(s) for s in steps]
        self.map_sizes = None if map_sizes is None else [[int(v) for v in s] for s in map_sizes]
        self.variances = [float(v) for v in variances]
        anchors = generate_anchors(self.image_size, self.min_sizes, self.steps,
                                   None if map_sizes is None else [tuple(s) for s in map_sizes])
        # Precomputed so decoding is two MULs and one EXP per coordinate pair.
        self._centers = tf.constant(anchors[None, :, :2])
        self._sizes = tf.constant(anchors[None, :, 2:])

    def call(self, inputs):
        loc, conf = inputs
        cxcy = self._centers + loc[..., :2] * (self.variances[0] * self._sizes)
        wh = self._sizes * tf.exp(loc[..., 2:] * self.variances[1])
        boxes = tf.concat([cxcy - 0.5 * wh, cxcy + 0.5 * wh], axis=-1)
        scores = tf.nn.softmax(conf, axis=-1)[..., 1]
        return [boxes, scores]

    def get_config(self):
        config = super().get_config()
        config.update(image_size=self.image_size, min_sizes=self.min_sizes, steps=self.steps,
                      map_sizes=self.map_sizes, variances=self.variances)
        return config


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
        self.interpreter, self.layout = None, None
        if tflite_path is not None:
            from ai_edge_litert.interpreter import Interpreter

            from mobilekit.export.metadata import read_metadata
            from mobilekit.export.stem import input_layout

            self.interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
            self.interpreter.allocate_tensors()
            # A space-to-depth file (mobilekit.export.stem) takes rearranged images.
            self.layout = input_layout(read_metadata(tflite_path))
            shape = (self.layout["image_size"] if self.layout else
                     self.interpreter.get_input_details()[0]["shape"][1:3])
            self.input_hw = tuple(int(side) for side in shape)
        else:
            if len(model.outputs) == 2 and model.outputs[1].shape.rank == 3:
                model = inference_model(model)
            self.model = model  # shares its layers (weights) with a training-form model
            self.input_hw = tuple(model.inputs[0].shape[1:3])
            self._predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

    @classmethod
    def load(cls, path, num_threads=1):
        """A .tflite, a .keras file, or a run directory holding model.keras."""
        from pathlib import Path

        path = Path(path)
        if path.is_dir():
            path = path / "model.keras"
        if not path.exists():
            raise FileNotFoundError(f"detector model not found: {path}")
        if path.suffix == ".tflite":
            return cls(tflite_path=path, num_threads=num_threads)
        from mobilekit.loading import load_keras

        return cls(load_keras(path))  # QAT runs included

    def raw(self, batch):
        """float32 [1, h, w, 3] in [-1, 1] -> (boxes [A, 4], scores [A]) normalised."""
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
        boxes, scores = select(boxes, scores, score_threshold, nms_iou, keep_top_k=keep_top_k)
        h, w = np.asarray(image).shape[:2]
        return to_pixels(boxes, w, h), scores
