"""Quantization-aware training: annotate every layer, then tfmot `quantize_apply`.

Built-in tf_keras layers get tfmot's default 8-bit treatment. mobilekit's custom layers
declare `QUANT` (mobilekit/layers/activations.py):
  "output"      -> OutputQuantizerConfig: one fake-quant on the output (hard-swish, swish,
                   SE gate scale: the converter then fuses or knows each op's int8 kernel)
  "passthrough" -> PassthroughQuantizeConfig: no quantizer (pure data movement such as a
                   channel shuffle keeps its input's scale)
A custom layer without QUANT is an error: silently skipping it would leave a float
island in the int8 model.

Usage (e.g. `mobilekit train --qat` fine-tunes the returned model):
    qat_model = quantize_model(float_model)   # compile + fit as usual, then
    init_ranges(qat_model, float_model, images)   # activation ranges from real data
    tflite = mobilekit.export.convert.convert(qat_model, "int8")

Why `init_ranges`: tfmot starts every activation range at [-6, 6] and moves it by an
exponential moving average (decay 0.999, about a thousand steps to forget). A trained
network's activations rarely fit [-6, 6], so a QAT model starts far from its float model
(MobileNetV3-Small trained on the default data: 28 % top-1 -> 5 % before any fine-tuning;
ShuffleNet v1 never recovered in 3 epochs). Starting from calibrated ranges makes QAT
fine-tuning start where post-training quantization ends.

Config classes must not be named `OutputOnlyConfig`/`NoOpQuantizeConfig`: tfmot has
classes of those names and deserialization would pick them (quantization.md §2.2).
"""
import numpy as np
import tensorflow_model_optimization as tfmot
# Not exported by tfmot's API; it quantizes the model input.
from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (
    QuantizeLayer)

from mobilekit.export.delegable import qat_swaps  # also registers its layers for loading
from mobilekit.keras import keras, layers, register, tf
from mobilekit.layers.activations import HardSigmoid, HardSwish

QUANT_KINDS = ("output", "passthrough")
_quant = tfmot.quantization.keras


def _fake_quant(x, low, high):
    return tf.quantization.fake_quant_with_min_max_args(x, min=low, max=high, num_bits=8)


@register("mobilekit")
class QATHardSigmoid(layers.Layer):
    """hard-sigmoid for QAT: relu6(x + 3) carries a fixed [0, 6] range.

    With only an output quantizer, the relu6(x + 3) tensor has no range and the converter
    leaves ADD + MUL in float (one island per SE block of MobileNetV3).
    """

    QUANT = "output"

    def call(self, inputs):
        return _fake_quant(tf.nn.relu6(inputs + 3.0), 0.0, 6.0) * (1.0 / 6.0)


@register("mobilekit")
class QATHardSwish(layers.Layer):
    """hard-swish for QAT: x * hsig(x) with fixed ranges on relu6(x + 3) and hsig(x).

    The fake-quant ops keep the converter from fusing HARD_SWISH, which XNNPACK has no int8
    kernel for; the result is ADD(RELU6) + MUL + MUL, fully delegated (1 partition).
    """

    QUANT = "output"

    def call(self, inputs):
        gate = _fake_quant(tf.nn.relu6(inputs + 3.0), 0.0, 6.0) * (1.0 / 6.0)
        return inputs * _fake_quant(gate, 0.0, 1.0)


# Weightless layers replaced by a QAT-friendly equivalent before annotation.
QAT_SUBSTITUTES = {HardSigmoid: QATHardSigmoid, HardSwish: QATHardSwish}


class OutputQuantizerConfig(_quant.QuantizeConfig):
    """Quantize only the layer output (asymmetric 8-bit, moving-average ranges)."""

    def get_weights_and_quantizers(self, layer):
        return []

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        pass

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return [_quant.quantizers.MovingAverageQuantizer(
            num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self):
        return {}


class PassthroughQuantizeConfig(OutputQuantizerConfig):
    """No quantizer at all: the layer only moves data."""

    def get_output_quantizers(self, layer):
        return []


QUANT_CONFIGS = {"output": OutputQuantizerConfig, "passthrough": PassthroughQuantizeConfig}


def _is_builtin(layer):
    return type(layer).__module__.startswith(("tf_keras.", "keras."))


def _custom_layer_classes(model):
    return {type(layer).__name__: type(layer) for layer in model.layers if not _is_builtin(layer)}


def custom_objects(model=None):
    """Names -> classes needed to clone or load a QAT model (configs + custom layers)."""
    objects = {cls.__name__: cls for cls in QUANT_CONFIGS.values()}
    objects.update({cls.__name__: cls for cls in QAT_SUBSTITUTES.values()})
    if model is not None:
        objects.update(_custom_layer_classes(model))
    return objects


def qat_scope(model=None):
    """`with qat_scope(): keras.models.load_model("qat.keras")` for QAT models."""
    return _quant.quantize_scope(custom_objects(model))


def quant_config_for(layer):
    """The QuantizeConfig a custom layer's QUANT attribute asks for (None: tfmot default)."""
    if _is_builtin(layer) and not hasattr(layer, "QUANT"):
        return None
    kind = getattr(type(layer), "QUANT", None)
    if kind is None:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) is a custom layer "
                         f"without a QUANT attribute; QAT needs QUANT = one of "
                         f"{', '.join(QUANT_KINDS)}")
    if kind not in QUANT_CONFIGS:
        raise ValueError(f"layer {layer.name!r} ({type(layer).__name__}) has QUANT = {kind!r}; "
                         f"accepted: {', '.join(QUANT_KINDS)}")
    return QUANT_CONFIGS[kind]()


def annotate(model):
    """A clone of `model` with every layer wrapped in a QuantizeAnnotate (weights shared)."""
    if not isinstance(model, keras.Model) or not getattr(model, "_is_graph_network", False):
        raise ValueError(f"QAT needs a functional tf_keras model; got {type(model).__name__}")

    # C.ReLU and average pools train in the form the int8 export writes (TFLite has no int8
    # NEG; XNNPACK no int8 AVERAGE_POOL_2D).
    swaps = qat_swaps(model)

    def wrap(layer):
        layer = swaps.get(layer.name, layer)
        if isinstance(layer, keras.Model):
            raise ValueError(f"layer {layer.name!r} is a nested model; QAT needs a flat "
                             "functional model")
        if type(layer) in QAT_SUBSTITUTES:
            layer = QAT_SUBSTITUTES[type(layer)].from_config(layer.get_config())
        return _quant.quantize_annotate_layer(layer, quantize_config=quant_config_for(layer))

    return keras.models.clone_model(model, clone_function=wrap)


def quantize_model(model):
    """Return the QAT version of a functional tf_keras model (weights copied).

    Raises ValueError naming the first layer tfmot cannot quantize.
    """
    annotated = annotate(model)
    with qat_scope(model):
        try:
            return _quant.quantize_apply(annotated)
        except RuntimeError as exc:  # tfmot: "Layer x:<class> is not supported ..."
            raise ValueError(f"QAT cannot quantize {model.name}: {str(exc).splitlines()[0]}") \
                from None


# Images per range measurement; ranges are averaged over chunks, as in PTQ calibration
# (mobilekit.export.calibration).
RANGE_CHUNK = 8


def _activation_range_vars(layer):
    """[(min_var, max_var)] of the data-dependent activation quantizers of a QAT layer:
    the model-input quantizer, output quantizers and post-activation quantizers. (A
    pre-activation range, tfmot's for softmax/sigmoid/tanh activation arguments, is not a
    layer output and keeps tfmot's start; the zoo's classifiers end in logits.)"""
    if isinstance(layer, QuantizeLayer):
        found = [getattr(layer, "quantizer_vars", None)]
    elif isinstance(layer, _quant.QuantizeWrapperV2):
        found = [getattr(layer, "_output_quantizer_vars", None)]
        found += [getattr(a, "_post_activation_vars", None) for a in layer._quantize_activations]
    else:
        return []
    return [(v["min_var"], v["max_var"]) for v in found if v and "min_var" in v]


def _observed_layer_name(layer):
    """The float model's layer whose output this QAT layer's quantizers observe."""
    if isinstance(layer, QuantizeLayer):
        return layer.input._keras_history.layer.name
    return layer.layer.name


def _float_ranges(model, names, images, chunk):
    """{layer name: (min, max)} of each named layer's output, averaged over chunks of
    `chunk` images; every range contains 0, as tfmot's own range updates do.

    Measured in training mode (BatchNorm on batch statistics), as tfmot's moving averages
    measure them during QAT, so QAT starts at the ranges it would converge to; the model's
    weights (BatchNorm moving statistics included) are restored afterwards.
    """
    probe = keras.Model(model.inputs, [model.get_layer(name).output for name in names])
    saved = model.get_weights()
    count = max(1, len(images) // chunk)  # full chunks only, like the PTQ calibration
    sums = np.zeros((len(names), 2))
    try:
        for start in range(0, count * chunk, chunk):
            outputs = probe(images[start:start + chunk], training=True)
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            sums += [(min(0.0, float(tf.reduce_min(t))), max(0.0, float(tf.reduce_max(t))))
                     for t in outputs]
    finally:
        model.set_weights(saved)
    return {name: tuple(total / count) for name, total in zip(names, sums)}


def init_ranges(qat_model, float_model, images, chunk=RANGE_CHUNK):
    """Set `qat_model`'s quantizer ranges from data instead of tfmot's [-6, 6] start.

    Activation ranges: the mean over chunks of `images` of each observed float-model
    tensor's min/max in training mode (`float_model` is the network `qat_model` was made
    from, same layer names; a quantizer whose layer it lacks keeps tfmot's start). Weight
    ranges: the weights' own, as the first training step sets them.
    Returns the number of activation ranges set.
    """
    float_names = {layer.name for layer in float_model.layers}
    targets, observed = {}, {}
    for layer in qat_model.layers:
        pairs = _activation_range_vars(layer)
        source = _observed_layer_name(layer) if pairs else None
        if source in float_names:
            targets[layer.name], observed[layer.name] = pairs, source
    ranges = _float_ranges(float_model, sorted(set(observed.values())),
                           np.asarray(images, np.float32), chunk)
    for name, pairs in targets.items():
        low, high = ranges[observed[name]]
        for min_var, max_var in pairs:
            min_var.assign(low)
            max_var.assign(high)
    for layer in qat_model.layers:
        for weight, quantizer, quantizer_vars in getattr(layer, "_weight_vars", []):
            quantizer(weight, training=True, weights=quantizer_vars)  # assigns its range
    return sum(len(pairs) for pairs in targets.values())
