"""NMS in the file: TFLite's `TFLite_Detection_PostProcess` custom op after a detector.

The op (tensorflow/lite/kernels/detection_postprocess.cc; in every TFLite / LiteRT
runtime's builtin resolver, and what the Task Library's ObjectDetector and MediaPipe expect)
takes box encodings [1, A, 4] in (ty, tx, th, tw) order, class scores [1, A, 1 + classes]
(column 0 = background, skipped) and CENTER_SIZE anchors [A, 4] (ycenter, xcenter, h, w),
decodes with y/x/h/w scales (SSD variances 0.1 / 0.2 = scales 10 / 10 / 5 / 5), runs
greedy NMS and outputs, in this order and as float32:

    detection_boxes [1, K, 4] (ymin, xmin, ymax, xmax, normalised), detection_classes
    [1, K], detection_scores [1, K], num_detections [1]

The converter is not asked to produce the op (it would need a tf.function stub with
`experimental_implements`); the detector's pre-NMS file is converted as usual (any quant:
the op dequantizes int8 inputs itself) and the op is appended to its flatbuffer here, with
the anchors as a constant tensor. Only ai_edge_litert's schema and the flatbuffers package.
"""
import numpy as np

OP_NAME = "TFLite_Detection_PostProcess"
OUTPUT_NAMES = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


def postprocess_options(score_threshold, iou_threshold, max_detections, num_classes=1,
                        scales=(10.0, 10.0, 5.0, 5.0)):
    """The op's attributes (also written into the metadata)."""
    for what, value in (("score_threshold", score_threshold), ("iou_threshold", iou_threshold)):
        if not 0 <= value <= 1:
            raise ValueError(f"{what} must be in [0, 1]; got {value}")
    if int(max_detections) < 1:
        raise ValueError(f"max_detections must be a positive integer; got {max_detections}")
    y, x, h, w = (float(v) for v in scales)
    return {"max_detections": int(max_detections), "max_classes_per_detection": 1,
            "detections_per_class": int(max_detections), "use_regular_nms": False,
            "nms_score_threshold": float(score_threshold),
            "nms_iou_threshold": float(iou_threshold), "num_classes": int(num_classes),
            "y_scale": y, "x_scale": x, "h_scale": h, "w_scale": w}


def append_postprocess(tflite, anchors_cxcywh, options):
    """Bytes of `tflite` (outputs: box encodings [1, A, 4] in (ty, tx, th, tw), class scores
    [1, A, C + 1]) with the NMS op appended; its 4 outputs become the model's outputs.
    `anchors_cxcywh`: [A, 4] normalised (cx, cy, w, h), mobilekit.detection.anchors' form."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils
    from flatbuffers import flexbuffers

    from mobilekit.export.flatbuffer import model_to_bytes

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite))
    graph = model.subgraphs[0]
    # The op's kernel reads float or uint8 scores, not int8: an int8 file's two outputs go
    # through DEQUANTIZE (XNNPACK runs it in the network's partition).
    encodings, scores = (_as_float(model, graph, schema, t) for t in _pre_nms_outputs(graph))
    a = np.asarray(anchors_cxcywh, np.float32)
    if a.shape != (int(graph.tensors[encodings].shape[1]), 4):
        raise ValueError(f"{len(a)} anchors for {graph.tensors[encodings].shape[1]} boxes")
    anchors = _add_tensor(model, graph, schema, "anchors", a[:, [1, 0, 3, 2]], a.shape)
    k = options["max_detections"]
    outputs = [_add_tensor(model, graph, schema, name if i == 0 else f"{OP_NAME}:{i}", None,
                           shape)
               for i, (name, shape) in enumerate(zip((OP_NAME,) * 4,
                                                     ([1, k, 4], [1, k], [1, k], [1])))]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = OP_NAME
    code.version = 1
    model.operatorCodes.append(code)
    op = schema.OperatorT()
    op.opcodeIndex = len(model.operatorCodes) - 1
    op.inputs = [encodings, scores, anchors]
    op.outputs = outputs
    op.customOptions = list(flexbuffers.Dumps(options))
    op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
    graph.operators.append(op)
    graph.outputs = outputs
    _rename_signature(model, graph, outputs)
    return model_to_bytes(model)


def _as_float(model, graph, schema, index):
    tensor = graph.tensors[index]
    if tensor.type == schema.TensorType.FLOAT32:
        return index
    out = _add_tensor(model, graph, schema, f"{_text(tensor.name)}_float", None, tensor.shape)
    op = schema.OperatorT()
    op.opcodeIndex = _opcode(model, schema, schema.BuiltinOperator.DEQUANTIZE)
    op.inputs, op.outputs = [index], [out]
    graph.operators.append(op)
    return out


def _opcode(model, schema, builtin):
    for i, code in enumerate(model.operatorCodes):
        if code.builtinCode == builtin and not code.customCode:
            return i
    code = schema.OperatorCodeT()
    code.builtinCode = builtin
    code.deprecatedBuiltinCode = min(builtin, 127)
    code.version = 2  # DEQUANTIZE of int8
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def _text(value):
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pre_nms_outputs(graph):
    """(box-encodings tensor, class-scores tensor): the outputs of last dim 4 and the other."""
    outs = [int(i) for i in graph.outputs]
    if len(outs) != 2:
        raise ValueError(f"a pre-NMS detector file has 2 outputs; got {len(outs)}")
    last = [int(graph.tensors[i].shape[-1]) for i in outs]
    if last.count(4) != 1:
        raise ValueError(f"cannot tell box encodings from scores (last dims {last})")
    return (outs[0], outs[1]) if last[0] == 4 else (outs[1], outs[0])


def _add_tensor(model, graph, schema, name, data, shape):
    buffer = schema.BufferT()
    if data is not None:
        buffer.data = np.frombuffer(np.ascontiguousarray(data, np.float32).tobytes(), np.uint8)
    model.buffers.append(buffer)
    tensor = schema.TensorT()
    tensor.name = name
    tensor.shape = list(shape)
    tensor.type = schema.TensorType.FLOAT32
    tensor.buffer = len(model.buffers) - 1
    graph.tensors.append(tensor)
    return len(graph.tensors) - 1


def _rename_signature(model, graph, outputs):
    """Keep the serving signature in step with the new outputs (runtimes list them)."""
    from ai_edge_litert import schema_py_generated as schema

    for sig in model.signatureDefs or []:
        sig.outputs = []
        for name, index in zip(OUTPUT_NAMES, outputs):
            t = schema.TensorMapT()
            t.name, t.tensorIndex = name, index
            sig.outputs.append(t)
