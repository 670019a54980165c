"""SqueezeNet's Fire module (arXiv:1602.07360): squeeze 1x1 -> parallel expand 1x1 / 3x3."""
from mobilekit.keras import layers
from mobilekit.layers.blocks import conv_bn_act


def fire_module(x, squeeze, expand1x1, expand3x3, name, kernel_initializer="he_uniform"):
    """Fire(s, e1, e3): every conv has a bias and a ReLU, no BatchNorm (as in the paper,
    Caffe and torchvision). Layers: `<name>_squeeze`, `_expand1x1`, `_expand3x3`, `_concat`.

    He initialisation (torchvision's kaiming_uniform): without BatchNorm, Glorot's smaller
    weights shrink the signal about 2x per ReLU layer and the net starts (and stays) dead.
    """
    conv = dict(act="relu", bn=False, kernel_initializer=kernel_initializer)
    s = conv_bn_act(x, squeeze, 1, name=f"{name}_squeeze", **conv)
    e1 = conv_bn_act(s, expand1x1, 1, name=f"{name}_expand1x1", **conv)
    e3 = conv_bn_act(s, expand3x3, 3, name=f"{name}_expand3x3", **conv)
    return layers.Concatenate(name=f"{name}_concat")([e1, e3])
