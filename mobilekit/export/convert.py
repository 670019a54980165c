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
import contextlib

import numpy as np

from mobilekit.errors import check_choice
from mobilekit.export.calibration import CALIBRATION_METHODS, calibration_hook
from mobilekit.export.delegable import delegable_clone, float_clone
from mobilekit.keras import keras, tf

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


def _representative(samples):
    def gen():
        for sample in samples:
            yield [sample[None]]
    return gen


_TF_TYPES = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8, "int16": tf.int16}


def _converter(concrete, quant, samples, io, qat, float_fallback, sparse=False,
               dense_quant="per-tensor"):
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    # EXPERIMENTAL_SPARSITY stores mostly-zero weights sparse-encoded (a DENSIFY op each),
    # the form that switches XNNPACK to its sparse-inference kernels where it has them.
    sparsity = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else []
    if quant == "fp32":
        converter.optimizations = sparsity
        return converter
    converter.optimizations = [tf.lite.Optimize.DEFAULT] + sparsity
    if quant == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quant == "int8" and qat:
        pass  # ranges come from the fake-quant ops; supported_ops would demand a dataset
    elif quant == "int8":
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.target_spec.supported_ops = ops + ([tf.lite.OpsSet.TFLITE_BUILTINS]
                                                      if float_fallback else [])
        converter._experimental_disable_per_channel_quantization_for_dense_layers = (
            dense_quant == "per-tensor")
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


# The doctor's "naive" int8: what most tutorials do (tf.lite.TFLiteConverter, Optimize.DEFAULT
# and a representative dataset, nothing else). The converter's own min/max calibration, its
# fused HARD_SWISH (no delegable forms), per-channel Dense, float I/O, float fallback.
NAIVE = "naive"


def naive_converter(model, samples):
    """The plain converter of `model` (static batch 1) calibrating on `samples`."""
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(
        input_spec(model))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = _representative(samples)
    return converter


def convert_naive(model, representative_data):
    """Int8 bytes of `model` exported the naive way (NAIVE above): the file to diagnose
    when a user's own export went wrong."""
    samples = calibration_samples(representative_data)
    if not samples:
        raise ValueError("representative_data yielded no samples")
    return _run_converter(naive_converter(model, samples))


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


# int8 PTQ weights of FULLY_CONNECTED: one scale per tensor (TFLite's int8 spec for it, and
# what tfmot's QAT trains) or one per output unit. Convolutions are always per channel.
# Per-channel costs a float scale + an int64 zero point per unit, for the weights and again
# for the bias: 24 KB on a 1000-class head, which puts small networks' int8 files over 30 %
# of their fp32 size (ShiftResNet-20, 1000 classes: 30.6 % per channel, 28.0 % per tensor).
# Per channel ran 1-4 % faster end to end on FC-heavy heads (MobileNetV3) with XNNPACK on x86.
DENSE_QUANT = ("per-tensor", "per-channel")


def convert(model, quant, representative_data=None, io=None, allow_float_ops=False,
            calibration_limit=None, sparse=False, s2d_input=False, calibration="average",
            dense_quant="per-tensor", bias_correction=False, fast_forms=True):
    """Convert a functional tf_keras model to TFLite bytes (static batch 1).

    quant: one of QUANT_MODES. representative_data: calibration images for int8/int16x8
    (see `calibration_samples`; already preprocessed like the model's inputs).
    io: inference input/output type; None = the mode's default (int8 for int8, float
    otherwise). An int8/int16x8 export that leaves ops in float raises FloatOpsError
    listing them, unless allow_float_ops=True (then unsupported ops fall back to float).
    sparse: store pruned (mostly-zero) weights sparse-encoded (see `_converter`).
    s2d_input: the file takes the space-to-depth image layout (mobilekit.export.stem; its
    `stem_layout(model)` says how to prepare inputs); representative_data stays in images.
    calibration: int8 activation ranges from the values the float model really produces on
    the calibration images (mobilekit.export.calibration): the mean of per-chunk min/max
    ("average"), the least int8 error ("mse") or the global min/max ("minmax"); int16x8
    always takes the global min/max.
    dense_quant: int8 PTQ Dense weights "per-tensor" or "per-channel" (see DENSE_QUANT).
    bias_correction: int8 PTQ biases cancel the mean output shift of weight rounding,
    measured on the calibration images (mobilekit.export.bias_correction); `model` itself
    is left unchanged.
    fast_forms: compute the same function in graph forms that run faster on XNNPACK
    (int8: a stride >= 4 stem through SPACE_TO_DEPTH with its C.ReLU folded into the conv,
    mobilekit.export.stem; float: conv -> BN -> C.ReLU as one conv,
    mobilekit.export.delegable.crelu_conv_swaps; both: max pools without a lone PAD,
    delegable.max_pool_padding_swaps); False keeps the model's own forms (for before/after
    comparisons).
    """
    check_choice("quant", quant, QUANT_MODES)
    check_choice("calibration", calibration, CALIBRATION_METHODS)
    check_choice("dense_quant", dense_quant, DENSE_QUANT)
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
    if qat:
        source = model
    elif integer:
        fast_int8 = quant == "int8" and fast_forms
        source = delegable_clone(_int8_fast_form(model, s2d_input) if fast_int8 else model)
    else:
        source = float_clone(model, fast_forms)
    if quant == "int8" and not qat and fast_forms and not s2d_input:
        from mobilekit.export.stem import in_graph_space_to_depth_stem

        source = in_graph_space_to_depth_stem(source)
    if s2d_input:
        from mobilekit.export.stem import apply_input_layout, space_to_depth_stem

        source, layout = space_to_depth_stem(source)
        if layout is None:
            raise ValueError(f"s2d_input: {model.name} does not start with a strided "
                             "convolution on 3 input channels")
        spec = input_spec(source)
        if samples is not None:
            samples = list(apply_input_layout(np.stack(samples), layout))
    correct = bias_correction and quant == "int8" and not qat
    with contextlib.ExitStack() as stack:
        if correct:  # before tracing: the traced graph freezes the corrected biases
            from mobilekit.export.bias_correction import corrected_biases

            stack.enter_context(corrected_biases(source, samples, dense_quant == "per-channel"))
        tflite = _convert_traced(source, spec, quant, samples, io, qat, integer, calibration,
                                 allow_float_ops, sparse, dense_quant)
    if integer and not allow_float_ops:
        from mobilekit.export.report import float_op_report

        report = float_op_report(tflite)
        if report["float_ops"]:
            raise FloatOpsError(f"{quant} export of {model.name}: {describe_float_ops(report)}. "
                                "Pass allow_float_ops=True (--allow-float-ops) to keep them")
    return tflite


def _int8_fast_form(model, s2d_input):
    """`model` with a space-to-depth-bound stem's C.ReLU folded into its conv
    (mobilekit.export.stem.crelu_stem_swaps) and max pools without a lone PAD
    (delegable.max_pool_padding_swaps; not with `s2d_input`, whose input layout
    `stem_layout(model)` describes the model's own stem padding): a clone sharing the other
    layers, or `model`."""
    from mobilekit.export.delegable import max_pool_padding_swaps
    from mobilekit.export.stem import crelu_stem_swaps

    swaps = crelu_stem_swaps(model, in_graph=not s2d_input)
    if not s2d_input:  # the host-side layout is the model's own stem's (stem_layout)
        swaps.update(max_pool_padding_swaps(model))
    if not swaps:
        return model
    return keras.models.clone_model(model, clone_function=lambda layer: swaps.get(layer.name,
                                                                                   layer))


def _convert_traced(source, spec, quant, samples, io, qat, integer, calibration,
                    allow_float_ops, sparse, dense_quant):
    concrete = tf.function(lambda x: source(x, training=False)).get_concrete_function(spec)
    method = calibration if quant == "int8" else "minmax"
    with calibration_hook(method, quant=quant) if integer and not qat else \
            contextlib.nullcontext():
        try:
            tflite = _run_converter(_converter(concrete, quant, samples, io, qat,
                                               allow_float_ops, sparse, dense_quant))
        except ValueError:
            if not integer or allow_float_ops or qat:
                raise
            # Strict int8 ops failed: convert again with float fallback to name the culprits.
            tflite = _run_converter(_converter(concrete, quant, samples, io, qat, True, sparse,
                                               dense_quant))
    return tflite
