"""Reusable Keras layers and blocks."""
from mobilekit.layers.activations import (ACTIVATIONS, GateScale, HardSigmoid, HardSwish, Swish,
                                          activation_layer, apply_activation)
from mobilekit.layers.blocks import (batch_norm, classifier_head, conv_bn_act, depthwise_bn_act,
                                     depthwise_separable, inverted_residual, make_divisible,
                                     squeeze_excite)
# Imported so that .keras files using these layers load after `import mobilekit.layers`.
from mobilekit.layers.shuffle import ChannelShuffle, ChannelSplit  # noqa: F401

__all__ = [
    "ACTIVATIONS", "GateScale", "HardSigmoid", "HardSwish", "Swish", "activation_layer",
    "apply_activation", "batch_norm", "classifier_head", "conv_bn_act", "depthwise_bn_act",
    "depthwise_separable", "inverted_residual", "make_divisible", "squeeze_excite",
]
