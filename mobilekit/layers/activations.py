"""Activation and gating layers written as real Layer subclasses.

Each custom layer declares `QUANT`, how QAT must treat it (see mobilekit.compress.qat):
"output" = quantize its output only; "passthrough" = no quantizer (a pure data movement).

Why layers and not lambdas or raw tf ops: tfmot cannot quantize TFOpLambda/Lambda
layers, Lambda breaks safe `.keras` loading, and the TFLite converter fuses
``x * relu6(x + 3) / 6`` into a single HARD_SWISH op only when it sees that pattern.
"""
from mobilekit.keras import layers, register, tf


@register("mobilekit")
class HardSigmoid(layers.Layer):
    """relu6(x + 3) / 6 (MobileNetV3); not tf_keras' piecewise 0.2x + 0.5."""

    QUANT = "output"

    def call(self, inputs):
        return tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)


@register("mobilekit")
class HardSwish(layers.Layer):
    """x * relu6(x + 3) / 6 (MobileNetV3)."""

    QUANT = "output"

    def call(self, inputs):
        return inputs * tf.nn.relu6(inputs + 3.0) * (1.0 / 6.0)


@register("mobilekit")
class Swish(layers.Layer):
    """x * sigmoid(x) (EfficientNet), as a layer so QAT can give it an output quantizer."""

    QUANT = "output"

    def call(self, inputs):
        return inputs * tf.math.sigmoid(inputs)


@register("mobilekit")
class GateScale(layers.Layer):
    """Scale a feature map by a per-channel gate: inputs = [features, gate].

    Used by squeeze-and-excite; replaces `Multiply`, which tfmot cannot quantize.
    """

    QUANT = "output"

    def call(self, inputs):
        features, gate = inputs
        return features * gate


ACTIVATIONS = ("relu", "relu6", "hswish", "hsigmoid", "swish", "sigmoid", "linear")


def activation_layer(kind, name=None):
    """One factory for every activation used in the zoo."""
    if kind == "relu":
        return layers.ReLU(name=name)
    if kind == "relu6":
        return layers.ReLU(6.0, name=name)
    if kind == "hswish":
        return HardSwish(name=name)
    if kind == "hsigmoid":
        return HardSigmoid(name=name)
    if kind == "swish":
        return Swish(name=name)
    if kind == "sigmoid":
        return layers.Activation("sigmoid", name=name)
    if kind in (None, "linear"):
        return None
    raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}; got {kind!r}")


def apply_activation(x, kind, name=None):
    layer = activation_layer(kind, name=name)
    return x if layer is None else layer(x)
