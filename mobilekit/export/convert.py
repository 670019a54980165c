"""Keras -> TFLite in every quantization mode, always with a static batch of 1.

Why a static batch: a Reshape in a model whose batch is None converts to SHAPE,
STRIDED_SLICE, PACK, RESHAPE, which XNNPACK and the GPU delegate do not take
(reference/quantization.md §2.4). We convert a `tf.function` traced with a fixed
`TensorSpec([1, H, W, C])` and without a trackable object: the converter then freezes the
graph directly instead of exporting a SavedModel of every tf_keras layer (~10x slower).

Modes: fp32, fp16 (float16 weights), dynamic (int8 weights, float activations),
int8 (full integer, TFLITE_BUILTINS_INT8, calibrated), int16x8 (int16 activations,
int8 weights, calibrated). QAT models (tfmot wrappers) export to int8 from their own
fake-quant ranges: Optimize.DEFAULT + integer I/O and no supported_ops (§2.4).
"""
import numpy as np

from mobilekit.errors import check_choice
from mobilekit.keras import keras, layers, register, tf
from mobilekit.layers.activations import HardSwish
from mobilekit.layers.crelu import Negate

QUANT_MODES = ("fp32", "fp16", "dynamic", "int8", "int16x8")
IO_TYPES = ("float", "int8", "uint8", "int16")
# I/O types each mode accepts; the first is the default.
MODE_IO = {"fp32": ("float",), "fp16": ("float",), "dynamic": ("float",),
           "int8": ("int8", "uint8", "float"), "int16x8": ("float", "int16")}
QAT_LAYER_TYPES = ("QuantizeWrapperV2", "QuantizeWrapper", "QuantizeLayer")


class FloatOpsError(ValueError):
    """An integer export would leave ops computing in float."""


def is_qat_model(model):
    """True for a model produced by tfmot quantize_apply (fake-quant wrappers)."""
    return any(type(layer).__name__ in QAT_LAYER_TYPES for layer in model.layers)


def resolve_io(quant, io=None, qat=False):
    """The inference input/output type: the mode's default when `io` is None."""
    check_choice("quant", quant, QUANT_MODES)
    accepted = MODE_IO[quant]
    if io is None:
        return accepted[0]
    check_choice(f"io for quant {quant}", io, accepted)
    return io


def input_spec(model):
    """TensorSpec([1, H, W, C]) of a single-input model with static H, W, C."""
    if len(model.inputs) != 1:
        raise ValueError(f"only single-input models can be exported; {model.name} has "
                         f"{len(model.inputs)} inputs")
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"export needs a static input size; {model.name} has input shape "
                         f"{(None,) + shape}. Rebuild the model with a fixed resolution")
    return tf.TensorSpec((1,) + shape, tf.float32, name="input")


def calibration_samples(data, limit=None):
    """Single float32 samples (H, W, C) from an array, a list, a tf.data.Dataset or a callable.

    Batched arrays (N, H, W, C) are split; (images, labels) pairs keep the images.
    """
    if callable(data) and not isinstance(data, (np.ndarray, tf.data.Dataset)):
        data = data()
    if isinstance(data, np.ndarray) or tf.is_tensor(data):
        data = [data]
    samples = []
    for item in data:
        if isinstance(item, (tuple, list)):
            item = item[0]
        arr = np.asarray(item, dtype=np.float32)
        for sample in (arr[None] if arr.ndim == 3 else arr):
            samples.append(sample)
            if limit is not None and len(samples) >= limit:
                return samples
    return samples


@register("mobilekit")
class DelegableHardSwish(layers.Layer):
    """Export-only hard-swish written as (x / 6) * relu6(x + 3).

    The converter fuses `x * relu6(x + 3) / 6` into HARD_SWISH, which XNNPACK has no int8
    kernel for (every int8 HARD_SWISH splits the XNNPACK partition) and TFLite has no
    int16 kernel for (a float island in int16x8). This order of the same math lowers to
    MUL + ADD(fused RELU6) + MUL, which have int8 and int16 kernels and XNNPACK int8 takes.
    """

    QUANT = "output"

    def call(self, inputs):
        return (inputs * (1.0 / 6.0)) * tf.nn.relu6(inputs + 3.0)


@register("mobilekit")
class DelegableAveragePool(layers.Layer):
    """AveragePooling2D(padding="valid") as a depthwise conv with constant 1/k² weights.

    XNNPACK has no int8 AVERAGE_POOL_2D: each one splits the int8 partition (ShuffleNet v1's
    stride-2 shortcut, FaceBoxes' Inception pool branch). With valid padding every window
    holds k² real values, so a DEPTHWISE_CONV_2D with constant 1/k² weights is the same
    average, and XNNPACK takes it in int8.
    """

    QUANT = "output"

    def __init__(self, pool_size, strides, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides = tuple(pool_size), tuple(strides)

    def call(self, inputs):
        kh, kw = self.pool_size
        channels = int(inputs.shape[-1])
        kernel = tf.constant(1.0 / (kh * kw), tf.float32, shape=(kh, kw, channels, 1))
        return tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1), "VALID")

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}


@register("mobilekit")
class DelegableSignedReLU(layers.Layer):
    """The int8-friendly end of C.ReLU: relu(concat[x, x] * [+1.., -1..]) = relu(concat[x, -x]).

    TFLite has no int8 NEG kernel and XNNPACK no int8 RELU, so the usual NEG -> CONCAT ->
    RELU leaves a float island or split partitions in int8. CONCAT(x, x) -> MUL by a
    constant sign vector with the ReLU fused into the MUL is the same math in two ops that
    both have int8 kernels XNNPACK runs. QAT trains this form too (mobilekit.compress.qat).
    """

    QUANT = "output"

    def call(self, inputs):
        half = int(inputs.shape[-1]) // 2
        signs = tf.constant([1.0] * half + [-1.0] * half, tf.float32)
        return tf.nn.relu(inputs * signs)


@register("mobilekit")
class DelegableIdentity(layers.Layer):
    """Stand-in for a C.ReLU Negate (its sign moves into DelegableSignedReLU)."""

    QUANT = "passthrough"

    def call(self, inputs):
        return tf.identity(inputs)


def crelu_swaps(model):
    """{layer name: stand-in} for every C.ReLU (Negate -> Concatenate([x, -x]) -> ReLU)."""
    inputs, consumers = _graph(model)
    swaps = {}
    for negate in (layer for layer in model.layers if type(layer) is Negate):
        after = consumers.get(negate.name, [])
        concat = model.get_layer(after[0]) if len(after) == 1 else None
        after = consumers.get(concat.name, []) if concat is not None else []
        relu = model.get_layer(after[0]) if len(after) == 1 else None
        if (type(concat) is layers.Concatenate and type(relu) is layers.ReLU
                and relu.max_value is None and not relu.negative_slope
                and inputs[concat.name] == [inputs[negate.name][0], negate.name]):
            swaps[negate.name] = DelegableIdentity(name=negate.name)
            swaps[relu.name] = DelegableSignedReLU(name=relu.name)
    return swaps


def _graph(model):
    """({layer: [input layer names]}, {layer: [consumer layer names]}) of this model's own
    graph (layer node lists also hold the nodes of clones that reuse the layer)."""
    inputs, consumers = {}, {}
    for entry in model.get_config()["layers"]:
        names = [inbound[0] for node in entry.get("inbound_nodes", []) for inbound in node]
        inputs[entry["name"]] = names
        for name in names:
            consumers.setdefault(name, []).append(entry["name"])
    return inputs, consumers


def qat_swaps(model):
    """{layer name: stand-in} that QAT trains in place of the originals: C.ReLU and valid
    average pools in their XNNPACK-int8 form (hard-swish has its own QAT layer)."""
    swaps = crelu_swaps(model)
    swaps.update({layer.name: _delegable_layer(layer) for layer in model.layers
                  if type(layer) is layers.AveragePooling2D
                  and _delegable_layer(layer) is not None})
    return swaps


def _delegable_layer(layer):
    """The XNNPACK-int8-friendly stand-in for `layer`, or None when it needs none."""
    if type(layer) is HardSwish:
        return DelegableHardSwish(name=layer.name)
    if (type(layer) is layers.AveragePooling2D and layer.padding == "valid"
            and layer.data_format == "channels_last"):
        return DelegableAveragePool(layer.pool_size, layer.strides, name=layer.name)
    return None


def delegable_clone(model):
    """A weight-sharing clone of `model` whose hard-swish, C.ReLU and valid average pools
    are written with ops that have int8 kernels XNNPACK runs (integer PTQ only; same math,
    see the layers above)."""
    swaps = crelu_swaps(model)
    swaps.update({layer.name: _delegable_layer(layer) for layer in model.layers
                  if _delegable_layer(layer) is not None})
    if not swaps:
        return model

    def swap(layer):
        # Returning the layer itself reuses it: the clone shares every weight.
        return swaps.get(layer.name, layer)

    return keras.models.clone_model(model, clone_function=swap)


def _representative(samples):
    def gen():
        for sample in samples:
            yield [sample[None]]
    return gen


_TF_TYPES = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}


def _converter(concrete, quant, samples, io, qat, float_fallback):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    if quant == "fp32":
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "int8" and qat:
        pass  # ranges come from the fake-quant ops; supported_ops would demand a dataset
    elif quant == "int8":
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.target_spec.supported_ops = ops + ([tf.lite.OpsSet.TFLITE_BUILTINS]
                                                      if float_fallback else [])
    elif quant == "int16x8":
        ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        converter.target_spec.supported_ops = ops + ([tf.lite.OpsSet.TFLITE_BUILTINS]
                                                      if float_fallback else [])
    if samples is not None:
        converter.representative_dataset = _representative(samples)
    if io != "float":
        converter.inference_input_type = _TF_TYPES[io]
        converter.inference_output_type = _TF_TYPES[io]
    return converter


def _run_converter(converter):
    try:
        return converter.convert()
    except Exception as exc:  # ConverterError and friends: keep the first useful line
        lines = [ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()]
        raise ValueError(f"TFLite conversion failed: {(lines or [str(exc)])[0][:500]}") from exc


def describe_float_ops(report):
    ops = report["float_op_list"]
    shown = ", ".join(f"{o['op']} -> {o['output']}" for o in ops[:10])
    more = f" (+{len(ops) - 10} more)" if len(ops) > 10 else ""
    return f"{len(ops)} op(s) compute in float: {shown}{more}"


def convert(model, quant, representative_data=None, io=None, allow_float_ops=False,
            calibration_limit=None):
    """Convert a functional tf_keras model to TFLite bytes (static batch 1).

    quant: one of QUANT_MODES. representative_data: calibration images for int8/int16x8
    (see `calibration_samples`; already preprocessed like the model's inputs).
    io: inference input/output type; None = the mode's default (int8 for int8, float
    otherwise). An int8/int16x8 export that leaves ops in float raises FloatOpsError
    listing them, unless allow_float_ops=True (then unsupported ops fall back to float).
    """
    check_choice("quant", quant, QUANT_MODES)
    qat = is_qat_model(model)
    if qat and quant != "int8":
        raise ValueError(f"a quantization-aware-trained model exports only with quant int8; "
                         f"got {quant!r}")
    io = resolve_io(quant, io, qat)
    spec = input_spec(model)
    samples = None
    if representative_data is not None and quant in ("int8", "int16x8"):
        samples = calibration_samples(representative_data, calibration_limit)
        if not samples:
            raise ValueError("representative_data yielded no samples")
        if samples[0].shape != tuple(spec.shape[1:]):
            raise ValueError(f"calibration samples have shape {samples[0].shape}; the model "
                             f"input is {tuple(spec.shape[1:])}")
    if quant in ("int8", "int16x8") and not qat and samples is None:
        raise ValueError(f"quant {quant} needs calibration data (representative_data: images "
                         "preprocessed like the model inputs); modes without it: "
                         "fp32, fp16, dynamic")
    integer = quant in ("int8", "int16x8")
    source = delegable_clone(model) if integer and not qat else model
    concrete = tf.function(lambda x: source(x, training=False)).get_concrete_function(spec)
    try:
        tflite = _run_converter(_converter(concrete, quant, samples, io, qat, allow_float_ops))
    except ValueError:
        if not integer or allow_float_ops or qat:
            raise
        # Strict int8 ops failed: convert again with float fallback to name the culprits.
        tflite = _run_converter(_converter(concrete, quant, samples, io, qat, True))
    if integer and not allow_float_ops:
        from mobilekit.export.report import float_op_report

        report = float_op_report(tflite)
        if report["float_ops"]:
            raise FloatOpsError(f"{quant} export of {model.name}: {describe_float_ops(report)}. "
                                "Pass allow_float_ops=True (--allow-float-ops) to keep them")
    return tflite
