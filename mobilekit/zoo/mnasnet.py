"""MnasNet-A1 (arXiv:1807.11626; tensorflow/tpu models/official/mnasnet/mnasnet_models.py).

alpha is the depth multiplier of the TPU reference (0.35, 0.5, 0.75, 1.0, 1.4 published):
it scales the stem and every block; the 1280-wide head stays fixed.
"""
from mobilekit.layers import conv_bn_act, inverted_residual, make_divisible
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

# (repeats, kernel, stride, expansion, output, squeeze-excite, residual) of mnasnet-a1.
MNASNET_A1 = [(1, 3, 1, 1, 16, False, False), (2, 3, 2, 6, 24, False, True),
              (3, 5, 2, 3, 40, True, True), (4, 3, 2, 6, 80, False, True),
              (2, 3, 1, 6, 112, True, True), (3, 5, 2, 6, 160, True, True),
              (1, 3, 1, 6, 320, False, True)]


@register_model("mnasnet_a1", "MnasNet", 224)
def mnasnet_a1(input_shape, num_classes=1000, include_top=True, dropout=0.2, alpha=1.0,
               classifier_activation=None):
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, make_divisible(32 * alpha), 3, 2, "relu", "stem")
    for i, (n, k, s, t, c, se, skip) in enumerate(MNASNET_A1):
        out = make_divisible(c * alpha)
        for j in range(n):
            in_filters = x.shape[-1]
            se_filters = max(1, int(in_filters * 0.25)) if se else 0
            x = inverted_residual(x, in_filters * t, out, k, s if j == 0 else 1, "relu",
                                  se_filters, se_gate="sigmoid", se_act="relu", skip=skip,
                                  name=f"block{i + 1}{chr(ord('a') + j)}")
    x = conv_bn_act(x, 1280, 1, 1, "relu", "head_conv")
    return finish_classifier(inputs, x, f"mnasnet_a1_{alpha:g}", num_classes, include_top,
                             dropout, classifier_activation)
