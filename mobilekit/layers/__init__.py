"""Reusable Keras layers and blocks."""
from mobilekit.layers.activations import (ACTIVATIONS, GateScale, HardSigmoid, HardSwish, Swish,
                                          activation_layer, apply_activation)
from mobilekit.layers.blocks import (batch_norm, classifier_head, conv_bn_act, depthwise_bn_act,
                                     depthwise_separable, inverted_residual, make_divisible,
                                     squeeze_excite)

__all__ = [
    "ACTIVATIONS", "GateScale", "HardSigmoid", "HardSwish", "Swish", "activation_layer",
    "apply_activation", "batch_norm", "classifier_head", "conv_bn_act", "depthwise_bn_act",
    "depthwise_separable", "inverted_residual", "make_divisible", "squeeze_excite",
]
