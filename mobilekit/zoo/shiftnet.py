"""ShiftResNet for CIFAR (Wu et al., arXiv:1711.08141; alvinwan/shiftresnet-cifar).

ResNet-20/32/44/56/110 (He et al.'s CIFAR layout: 3x3 stem 16, three stages of n blocks
at 16/32/64 channels, strides 1/2/2) with every 3x3 conv pair replaced by the paper's
conv-shift-conv (CSC) module: 1x1 conv to `expansion * out` channels -> BN -> ReLU ->
Shift(3x3) -> 1x1 conv (carrying the stage stride) -> BN, + shortcut (1x1 conv + BN when
the shape changes), ReLU. depth = 6n + 2.
"""
from mobilekit.keras import layers
from mobilekit.layers import batch_norm, conv_bn_act, make_divisible
from mobilekit.layers.shift import Shift
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

STAGE_WIDTHS = (16, 32, 64)
STAGE_STRIDES = (1, 2, 2)
DEPTHS = (20, 32, 44, 56, 110)


def shift_block(x, out_filters, strides=1, expansion=1.0, kernel_size=3, name="csc"):
    """Conv-shift-conv residual block (shiftresnet-cifar models/shiftresnet.py ShiftConv)."""
    in_filters = x.shape[-1]
    mid = max(1, int(out_filters * expansion))
    shortcut = x
    if strides != 1 or in_filters != out_filters:
        shortcut = conv_bn_act(x, out_filters, 1, strides, None, f"{name}_short")
    y = conv_bn_act(x, mid, 1, 1, "relu", f"{name}_expand")
    y = Shift(kernel_size, name=f"{name}_shift")(y)
    y = layers.Conv2D(out_filters, 1, strides=strides, use_bias=False, name=f"{name}_project")(y)
    y = batch_norm(y, f"{name}_project_bn")
    x = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(x)


@register_model("shiftnet", "ShiftNet", 32)
def shiftnet(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
             classifier_activation=None, depth=20, expansion=1.0, kernel_size=3):
    """ShiftResNet-`depth` (20/32/44/56/110) with CSC expansion `expansion` (the repo's
    'a = expansion * c'); alpha scales the 16/32/64 widths (make_divisible to 8)."""
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {', '.join(map(str, DEPTHS))}; got {depth!r}")
    if not isinstance(expansion, (int, float)) or isinstance(expansion, bool) or expansion <= 0:
        raise ValueError(f"expansion must be a positive number; got {expansion!r}")
    blocks = (depth - 2) // 6
    widths = [make_divisible(c * alpha) for c in STAGE_WIDTHS]
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, widths[0], 3, 1, "relu", "stem")
    for s, (width, stride) in enumerate(zip(widths, STAGE_STRIDES), start=1):
        for i in range(blocks):
            x = shift_block(x, width, stride if i == 0 else 1, expansion, kernel_size,
                            name=f"s{s}_b{i + 1}")
    return finish_classifier(inputs, x, f"shiftresnet{depth}_{alpha:g}", num_classes,
                             include_top, dropout, classifier_activation)
