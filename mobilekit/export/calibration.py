"""Activation ranges for full-integer post-training quantization.

Why we do not keep the converter's own min/max: TFLite's calibrator logs each op's inputs
again after the op has run, and when the memory planner let the op write its output into
an input's buffer (in-place ADD, MUL, ...), that input is given the output's range
(tensorflow/tensorflow#127842, open in 2026). Measured on our graphs: a MobileNetV3
hard-sigmoid output, truly in [0, 1], was recorded as [-0.375, 51.7] (the hard-swish after
it), so its int8 file kept ~5 steps for the gate; every conv output feeding a residual ADD
was recorded with the sum's range (a third of ShiftResNet-20's 1.5-point int8 loss). So the
converter's calibration only tells us which tensors need a range; we run the calibrated float
model ourselves with every tensor kept (no buffer sharing, no delegate) and set each range
from the values really seen, by one of:

- "minmax": the extremes over all calibration images.
- "average": like the "average min/max" calibration of TensorFlow's own quantizer, the mean
  over chunks of 8 images of each chunk's minimum and maximum. On heavy-tailed networks a few
  hundred images find a few extreme values that stretch every range and leave ordinary
  values a handful of int8 steps (a MobileNetV3-Large at 60 % falls to 10 % with the global
  min/max of 300 images, keeps 60 % with the average); the average range is what a typical
  batch needs, and the rarest values saturate instead. The model's outputs keep their global
  extremes: a classifier's answer is its top score, and clipping it would make ties.
- "mse": the [c * min, c * max] whose int8 rounding plus clipping error over all values is
  least (the MSE range setting of Nagel et al., "A White Paper on Neural Network
  Quantization", arXiv:2106.08295, sec. 3.4), from histograms in a second pass.

Whatever the method, a range never extends into a tensor's dead zone: values that every
consumer maps to the same output (below -c for `relu6(x + c)`, also above 6 - c when that is
the only use, as in a hard-sigmoid; below -3 for a hard-swish `x * relu6(x + 3) / 6`; beyond
+-ln(2 / s - 1) for a sigmoid whose output has the fixed step s, 1/256 in int8, where it
rounds to 0 or 1), also through the RESHAPE / CONCATENATION ops between. Keeping them costs
resolution and buys nothing: the head of a MobileNetV3-Large trained here saw values down to
-500 before its hard-swish, which reads them all as 0 below -3; FaceBoxes' score logits
reach -100, which left int8 0.4-0.8 logit per step (0.1-0.2 of score near 0.5).

A sigmoid that gives a model output (a detector's scores) takes its whole live range
[-b, b] whatever the calibration images saw: like the outputs' extremes, the top of a score
is its answer, and calibration images with less confident faces than the camera's would
otherwise cap every score (a FaceBoxes int8 file at 640x480 capped at 0.83).

`calibration_hook(method)` patches the converter's calibration step (`Calibrator.calibrate`,
used by the MLIR quantizer for int8 and int16x8) while active; everything else in the
conversion is the converter's own.
"""
import contextlib

import numpy as np

CALIBRATION_METHODS = ("average", "mse", "minmax")
# Images per chunk for "average": min/max of 8 images each, averaged over the chunks.
CHUNK = 8
# "mse": histogram bins over each tensor's [min, max], and the candidate range scales c.
MSE_BINS = 2048
MSE_SCALES = np.geomspace(0.02, 1.0, 120)


@contextlib.contextmanager
def calibration_hook(method, chunk=CHUNK, bins=MSE_BINS, quant="int8"):
    """While active, TFLite calibration sets ranges from observed values (module docstring);
    `quant` (int8 / int16x8) fixes the sigmoid's output step."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_METHODS)}; "
                         f"got {method!r}")
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        samples = list(dataset_gen())
        # The converter's own pass only tells us which tensors need a range (we replace every
        # one of them), so one image is enough for it.
        calibrated = bytes(original(self, lambda: iter(samples[:1])))
        wanted = [i for i, (low, _) in tensor_ranges(calibrated).items() if low.size == 1]
        # The outputs keep their extremes: a classifier's answer is its largest score, and a
        # clipped top would turn the most confident scores into ties.
        ranges = observed_ranges(calibrated, samples, wanted, method, chunk, bins,
                                 extremes=model_outputs(calibrated))
        bound = sigmoid_bound(quant)
        ranges = without_dead_zones(ranges, dead_zones(calibrated, bound))
        ranges.update({i: (-bound, bound) for i in score_logits(calibrated) if i in ranges})
        return with_ranges(calibrated, {i: (np.float32([low]), np.float32([high]))
                                        for i, (low, high) in ranges.items()})

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def _float_runner(model_bytes):
    """invoke(sample) -> interpreter, with every intermediate tensor kept readable."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # No default XNNPACK delegate: tensors inside a delegated partition are never written back.
    interpreter = Interpreter(model_content=model_bytes, experimental_preserve_all_tensors=True,
                              experimental_op_resolver_type=(
                                  OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    interpreter.allocate_tensors()
    inputs = [d["index"] for d in interpreter.get_input_details()]

    def invoke(sample):
        for index, value in zip(inputs, sample):
            interpreter.set_tensor(index, np.asarray(value, np.float32))
        interpreter.invoke()
        return interpreter

    return invoke


def observed_ranges(model_bytes, samples, indices, method="minmax", chunk=CHUNK, bins=MSE_BINS,
                    extremes=()):
    """{tensor index: (low, high)} for `indices` of a float TFLite model run on `samples`
    (lists of input arrays, as the converter's representative dataset yields them); the
    indices in `extremes` get their global min/max whatever the method."""
    invoke = _float_runner(model_bytes)
    chunk_lows = {i: [] for i in indices}
    chunk_highs = {i: [] for i in indices}
    for start in range(0, len(samples), chunk):
        part = samples[start:start + chunk]
        lows, highs = {i: np.inf for i in indices}, {i: -np.inf for i in indices}
        for sample in part:
            interpreter = invoke(sample)
            for i in indices:
                values = interpreter.get_tensor(i)
                lows[i] = min(lows[i], float(values.min()))
                highs[i] = max(highs[i], float(values.max()))
        # "average" weighs full chunks only: a short tail would weigh as much as a full one.
        full = len(part) == chunk or start == 0
        for i in indices:
            chunk_lows[i].append((lows[i], full))
            chunk_highs[i].append((highs[i], full))
    ranges = {}
    for i in indices:
        low, high = min(v for v, _ in chunk_lows[i]), max(v for v, _ in chunk_highs[i])
        if method == "average" and i not in extremes:
            low = float(np.mean([v for v, full in chunk_lows[i] if full]))
            high = float(np.mean([v for v, full in chunk_highs[i] if full]))
        ranges[i] = (low, high)
    if method == "mse":
        searched = {i: r for i, r in ranges.items() if i not in extremes}
        histograms = activation_histograms(invoke, samples, searched, bins)
        ranges.update({i: mse_range(histograms[i], *searched[i]) for i in searched})
    return ranges


def activation_histograms(invoke, samples, ranges, bins=MSE_BINS):
    """{tensor index: counts of its non-zero values in `bins` bins over its (low, high)}."""
    counts = {index: np.zeros(bins, np.int64) for index in ranges}
    for sample in samples:
        interpreter = invoke(sample)
        for index, (low, high) in ranges.items():
            values = interpreter.get_tensor(index).ravel()
            # Exact zeros (ReLU outputs) quantize without error: leave them out.
            values = values[values != 0]
            if high > low and values.size:
                counts[index] += np.histogram(values, bins, (low, high))[0]
    return counts


def mse_range(counts, low, high, scales=MSE_SCALES):
    """The (c * low, c * high) with the least expected int8 error for values histogrammed in
    `counts` over (low, high): step**2 / 12 rounding noise inside the range, the distance
    to the nearer end outside it. The range always keeps 0, as TFLite's does."""
    low, high = min(low, 0.0), max(high, 0.0)
    if high <= low or not counts.sum():
        return low, high
    edges = np.linspace(low, high, len(counts) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    lows, highs = scales[:, None] * low, scales[:, None] * high
    step = (highs - lows) / 255
    clipped = np.maximum(centres - highs, 0) + np.maximum(lows - centres, 0)
    error = np.where(clipped > 0, clipped ** 2, step ** 2 / 12) @ counts
    best = int(np.argmin(error))
    return float(scales[best] * low), float(scales[best] * high)


# TFLite builtin operator codes and fused activations used by `dead_zones`.
ADD, CONCATENATION, LOGISTIC, MUL, RELU, RELU6, RESHAPE = 0, 2, 14, 18, 19, 21, 22
FUSED_RELU, FUSED_RELU6 = 1, 3
FLOAT32 = 0  # TensorType
# A sigmoid's integer output has a fixed step (1/256 in int8, 1/32768 in int16): its input
# beyond +-ln(2 / step - 1) rounds to the end codes.
SIGMOID_STEP = {"int8": 1 / 256, "int16x8": 1 / 32768}


def sigmoid_bound(quant):
    """b: a sigmoid's `quant` output is the same for every input <= -b (and >= b)."""
    return float(np.log(2 / SIGMOID_STEP[quant] - 1))


def _graph(model_bytes):
    """(model object, first subgraph, builtin codes, {tensor: producer op},
    {tensor: [consumer ops]})."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    producer, consumers = {}, {}
    for op in graph.operators:
        for index in op.outputs:
            producer[index] = op
        for index in op.inputs:
            consumers.setdefault(index, []).append(op)
    return model, graph, codes, producer, consumers


def score_logits(model_bytes):
    """Tensors whose values reach only a LOGISTIC that gives a model output, directly or
    through RESHAPE / CONCATENATION (a detector's score logits)."""
    _, graph, codes, _, consumers = _graph(model_bytes)
    outputs = set(graph.outputs)

    def feeds_scores(index, seen=()):
        users = consumers.get(index, [])
        if not users or index in outputs or index in seen:
            return False
        for op in users:
            code = codes[op.opcodeIndex]
            if code == LOGISTIC and not set(op.outputs) <= outputs:
                return False
            if code in (RESHAPE, CONCATENATION):
                if not feeds_scores(op.outputs[0], (*seen, index)):
                    return False
            elif code != LOGISTIC:
                return False
        return True

    return {index for index in consumers if feeds_scores(index)}


def dead_zones(model_bytes, sigmoid=None):
    """{tensor index: (floor, ceiling)}: every consumer of the tensor gives the same output
    for all values <= floor (and >= ceiling); None where there is no such bound.

    Consumers understood: RELU/RELU6 ops; ADD(x, constant c) with a fused RELU (floor -c) or
    RELU6 (floor -c, ceiling 6 - c); MUL(x, g) where g is that ADD's output times constants
    (the hard-swish x * relu6(x + c) / 6: g = 0 below -c, so the product is 0; no ceiling);
    LOGISTIC when `sigmoid` (its `sigmoid_bound`) is given (-b, b); RESHAPE and
    CONCATENATION, which pass values on: their output's zone. Any other consumer, or being a
    model output, leaves the tensor without bounds.
    """
    model, graph, codes, producer, consumers = _graph(model_bytes)

    def constant(index):
        """The value of a float32 scalar constant, else None."""
        tensor = graph.tensors[index]
        data = model.buffers[tensor.buffer].data
        if data is None or tensor.type != FLOAT32 or len(data) != 4:
            return None
        return float(np.frombuffer(bytes(data), np.float32)[0])

    def relu_add_offset(op, index):
        """c when op is ADD(index, constant c) with a fused RELU/RELU6, else None."""
        if codes[op.opcodeIndex] != ADD or index not in op.inputs or len(op.inputs) != 2:
            return None
        other = op.inputs[1] if op.inputs[0] == index else op.inputs[0]
        activation = getattr(op.builtinOptions, "fusedActivationFunction", None)
        return constant(other) if activation in (FUSED_RELU, FUSED_RELU6) else None

    def gate_offset(index, gate):
        """c when `gate` is relu(6)(index + c) times constants only, else None."""
        op = producer.get(gate)
        while op is not None and codes[op.opcodeIndex] == MUL and any(
                constant(i) is not None for i in op.inputs):
            gate = next(i for i in op.inputs if constant(i) is None)
            op = producer.get(gate)
        return None if op is None else relu_add_offset(op, index)

    outputs = set(graph.outputs)
    zones = {}

    def zone(index):
        """(floor, ceiling) of one tensor, or None; through pass-on ops, memoised."""
        if index not in zones:
            zones[index] = None  # a cycle through pass-on ops has no zone
            zones[index] = None if index in outputs else consumer_zone(index)
        return zones[index]

    def consumer_zone(index):
        floors, ceilings = [], []
        for op in consumers.get(index, []):
            code = codes[op.opcodeIndex]
            offset = relu_add_offset(op, index)
            if code in (RELU, RELU6):
                floors.append(0.0)
                ceilings.append(6.0 if code == RELU6 else None)
            elif code == LOGISTIC and sigmoid is not None:
                floors.append(-sigmoid)
                ceilings.append(sigmoid)
            elif (code == RESHAPE and index == op.inputs[0]) or code == CONCATENATION:
                passed = zone(op.outputs[0])
                if passed is None:
                    return None
                floors.append(passed[0])
                ceilings.append(passed[1])
            elif offset is not None:
                floors.append(-offset)
                six = op.builtinOptions.fusedActivationFunction == FUSED_RELU6
                ceilings.append(6.0 - offset if six else None)
            elif code == MUL and len(op.inputs) == 2 and index in op.inputs:
                gate = op.inputs[1] if op.inputs[0] == index else op.inputs[0]
                offset = gate_offset(index, gate)
                if offset is None:
                    return None
                floors.append(-offset)
                ceilings.append(None)
            else:
                return None
        if not floors:
            return None
        return min(floors), None if None in ceilings else max(ceilings)

    for index in consumers:
        zone(index)
    return {index: bounds for index, bounds in zones.items() if bounds is not None}


def without_dead_zones(ranges, zones):
    """`ranges` ({index: (low, high)}) cut to each tensor's live values, 0 always kept."""
    cut = {}
    for index, (low, high) in ranges.items():
        floor, ceiling = zones.get(index, (None, None))
        if floor is not None:
            low = max(low, min(floor, 0.0))
        if ceiling is not None:
            high = min(high, max(ceiling, 0.0))
        cut[index] = (low, max(high, low))
    return cut


def model_outputs(model_bytes):
    """Indices of the first subgraph's output tensors."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0)
    return {int(graph.Outputs(i)) for i in range(graph.OutputsLength())}


def tensor_ranges(model_bytes):
    """{tensor index: (min array, max array)} of the first subgraph's calibrated tensors."""
    from tensorflow.lite.python import schema_py_generated as schema

    graph = schema.Model.GetRootAsModel(model_bytes, 0).Subgraphs(0)
    ranges = {}
    for index in range(graph.TensorsLength()):
        quant = graph.Tensors(index).Quantization()
        if quant is not None and quant.MinLength() and quant.MaxLength():
            ranges[index] = (quant.MinAsNumpy().copy(), quant.MaxAsNumpy().copy())
    return ranges


def with_ranges(model_bytes, ranges):
    """`model_bytes` with the min/max of each tensor index in `ranges` replaced."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(model_bytes))
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        tensors[index].quantization.min = np.asarray(low, np.float32)
        tensors[index].quantization.max = np.asarray(high, np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
