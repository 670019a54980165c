"""MobileNet v1 (arXiv:1704.04861), v2 (arXiv:1801.04381), v3 (arXiv:1905.02244).

Architectures follow keras.applications layer for layer, so trainable parameter counts
equal keras.applications' and its weight files import (see mobilekit.zoo.weights).
"""
from mobilekit.keras import layers
from mobilekit.layers import (apply_activation, conv_bn_act, depthwise_separable,
                              inverted_residual, make_divisible)
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

# (pointwise filters, stride) of the 13 depthwise-separable blocks (paper Table 1; the
# last dw is stride 1, the paper's "s2" there is a typo).
MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


@register_model("mobilenet_v1", "MobileNet", 224)
def mobilenet_v1(input_shape, num_classes=1000, include_top=True, dropout=1e-3, alpha=1.0,
                 classifier_activation=None):
    """Width alpha truncates channel counts (int(c * alpha)) with no rounding to 8, as
    keras.applications and TF-slim do."""
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, int(32 * alpha), 3, 2, "relu6", "stem")
    for i, (filters, stride) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        x = depthwise_separable(x, int(filters * alpha), stride, act="relu6", name=f"block{i}")
    return finish_classifier(inputs, x, f"mobilenet_v1_{alpha:g}", num_classes, include_top,
                             dropout, classifier_activation)


# (expansion t, output channels c, repeats n, first stride s): paper Table 2.
MOBILENET_V2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@register_model("mobilenet_v2", "MobileNet", 224)
def mobilenet_v2(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
                 classifier_activation=None):
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, make_divisible(32 * alpha), 3, 2, "relu6", "stem")
    block = 0
    for t, c, n, s in MOBILENET_V2_BLOCKS:
        out = make_divisible(int(c * alpha))
        for i in range(n):
            expanded = x.shape[-1] * t
            x = inverted_residual(x, expanded, out, 3, s if i == 0 else 1, "relu6",
                                  name=f"block{block}")
            block += 1
    last = make_divisible(1280 * alpha) if alpha > 1.0 else 1280
    x = conv_bn_act(x, last, 1, 1, "relu6", "last_conv")
    return finish_classifier(inputs, x, f"mobilenet_v2_{alpha:g}", num_classes, include_top,
                             dropout, classifier_activation)


# (kernel, expansion ratio, output channels, squeeze-excite, activation, stride):
# paper Tables 1 and 2, with keras.applications' expansion ratios (exp = ratio * input).
MOBILENET_V3_LARGE = [
    (3, 1, 16, False, "relu", 1), (3, 4, 24, False, "relu", 2), (3, 3, 24, False, "relu", 1),
    (5, 3, 40, True, "relu", 2), (5, 3, 40, True, "relu", 1), (5, 3, 40, True, "relu", 1),
    (3, 6, 80, False, "hswish", 2), (3, 2.5, 80, False, "hswish", 1),
    (3, 2.3, 80, False, "hswish", 1), (3, 2.3, 80, False, "hswish", 1),
    (3, 6, 112, True, "hswish", 1), (3, 6, 112, True, "hswish", 1),
    (5, 6, 160, True, "hswish", 2), (5, 6, 160, True, "hswish", 1),
    (5, 6, 160, True, "hswish", 1),
]
MOBILENET_V3_SMALL = [
    (3, 1, 16, True, "relu", 2), (3, 72 / 16, 24, False, "relu", 2),
    (3, 88 / 24, 24, False, "relu", 1), (5, 4, 40, True, "hswish", 2),
    (5, 6, 40, True, "hswish", 1), (5, 6, 40, True, "hswish", 1),
    (5, 3, 48, True, "hswish", 1), (5, 3, 48, True, "hswish", 1),
    (5, 6, 96, True, "hswish", 2), (5, 6, 96, True, "hswish", 1),
    (5, 6, 96, True, "hswish", 1),
]


def _mobilenet_v3(rows, last_point, name, input_shape, num_classes, include_top, dropout,
                  alpha, classifier_activation, minimalistic):
    """MobileNetV3: fixed 16-filter stem, SE on the expanded width (1/4, hard-sigmoid gate),
    1x1 conv to 6x the last width, then pool -> FC (1280 / 1024, h-swish) -> classifier.
    Minimalistic: 3x3 kernels, no SE, ReLU everywhere."""
    stem_act = "relu" if minimalistic else "hswish"
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, 16, 3, 2, stem_act, "stem")
    for i, (k, ratio, c, se, act, s) in enumerate(rows):
        if minimalistic:
            k, se, act = 3, False, "relu"
        expanded = make_divisible(x.shape[-1] * ratio)
        se_filters = make_divisible(expanded * 0.25) if se else 0
        x = inverted_residual(x, expanded, make_divisible(c * alpha), k, s, act, se_filters,
                              se_gate="hsigmoid", name=f"block{i}")
    x = conv_bn_act(x, make_divisible(x.shape[-1] * 6), 1, 1, stem_act, "last_conv")
    if alpha > 1.0:
        last_point = make_divisible(last_point * alpha)

    def pre_head(h):
        h = layers.Dense(last_point, name="head_fc")(h)
        return apply_activation(h, stem_act, name="head_fc_act")

    return finish_classifier(inputs, x, name, num_classes, include_top, dropout,
                             classifier_activation, pre_head=pre_head)


@register_model("mobilenet_v3_large", "MobileNet", 224)
def mobilenet_v3_large(input_shape, num_classes=1000, include_top=True, dropout=0.2, alpha=1.0,
                       classifier_activation=None, minimalistic=False):
    return _mobilenet_v3(MOBILENET_V3_LARGE, 1280, f"mobilenet_v3_large_{alpha:g}", input_shape,
                         num_classes, include_top, dropout, alpha, classifier_activation,
                         minimalistic)


@register_model("mobilenet_v3_small", "MobileNet", 224)
def mobilenet_v3_small(input_shape, num_classes=1000, include_top=True, dropout=0.2, alpha=1.0,
                       classifier_activation=None, minimalistic=False):
    return _mobilenet_v3(MOBILENET_V3_SMALL, 1024, f"mobilenet_v3_small_{alpha:g}", input_shape,
                         num_classes, include_top, dropout, alpha, classifier_activation,
                         minimalistic)
