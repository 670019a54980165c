"""EfficientNet B0-B3 (arXiv:1905.11946) and EfficientNet-Lite0-4 (tensorflow/tpu lite/).

B1-B3 are not copied from a table: they come from B0 by the compound-scaling rule,
depth = ALPHA**phi, width = BETA**phi, resolution = 224 * GAMMA**phi, with the published
coefficients being these values rounded (depth and width to 0.1, resolution to 10 px):
phi = 0.5 -> (1.0, 1.1, 240), phi = 1 -> (1.1, 1.2, 260), phi = 2 -> (1.2, 1.4, 300)
exactly the (width, depth, resolution) that the paper's B1/B2/B3 use.
"""
import math

from mobilekit.layers import conv_bn_act, inverted_residual, make_divisible
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases (paper eq. 3)
BASE_RESOLUTION = 224
PHI = {"b0": 0.0, "b1": 0.5, "b2": 1.0, "b3": 2.0}
DROPOUT = {"b0": 0.2, "b1": 0.2, "b2": 0.3, "b3": 0.3}

# B0 stages (kernel, repeats, output channels, expansion, stride); SE 0.25 everywhere.
B0_STAGES = [(3, 1, 16, 1, 1), (3, 2, 24, 6, 2), (5, 2, 40, 6, 2), (3, 3, 80, 6, 2),
             (5, 3, 112, 6, 1), (5, 4, 192, 6, 2), (3, 1, 320, 6, 1)]
STEM, HEAD = 32, 1280

# EfficientNet-Lite (width, depth, resolution, dropout): efficientnet_lite_builder.py.
LITE_PARAMS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2),
               "lite2": (1.1, 1.2, 260, 0.3), "lite3": (1.2, 1.4, 280, 0.3),
               "lite4": (1.4, 1.8, 300, 0.3)}


def compound_coefficients(phi):
    """(width, depth, resolution) of EfficientNet-phi, rounded as the paper publishes them."""
    width = round(BETA ** phi, 1)
    depth = round(ALPHA ** phi, 1)
    resolution = BASE_RESOLUTION if phi == 0 else int(round(BASE_RESOLUTION * GAMMA ** phi, -1))
    return width, depth, resolution


def _efficientnet(name, input_shape, num_classes, include_top, dropout, classifier_activation,
                  width, depth, lite, drop_connect_rate=0.2):
    def filters(c):
        return make_divisible(c * width)

    def repeats(stage_index, n):
        # Lite keeps the first and last stage unscaled (fix_head_stem in the lite builder).
        if lite and stage_index in (0, len(B0_STAGES) - 1):
            return n
        return int(math.ceil(depth * n))

    act = "relu6" if lite else "swish"
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, STEM if lite else filters(STEM), 3, 2, act, "stem")
    total = sum(repeats(i, s[1]) for i, s in enumerate(B0_STAGES))
    block = 0
    for i, (k, n, c, t, s) in enumerate(B0_STAGES):
        out = filters(c)
        for j in range(repeats(i, n)):
            in_filters = x.shape[-1]
            # SE squeeze width is 1/4 of the block *input* width (unlike MobileNetV3).
            se = 0 if lite else max(1, int(in_filters * 0.25))
            x = inverted_residual(x, in_filters * t, out, k, s if j == 0 else 1, act, se,
                                  se_gate="sigmoid", se_act=act,
                                  drop_rate=drop_connect_rate * block / total,
                                  name=f"block{i + 1}{chr(ord('a') + j)}")
            block += 1
    x = conv_bn_act(x, HEAD if lite else filters(HEAD), 1, 1, act, "top_conv")
    return finish_classifier(inputs, x, name, num_classes, include_top, dropout,
                             classifier_activation)


def _register_b(variant):
    width, depth, resolution = compound_coefficients(PHI[variant])

    @register_model(f"efficientnet_{variant}", "EfficientNet", resolution)
    def build(input_shape, num_classes=1000, include_top=True, dropout=DROPOUT[variant],
              alpha=1.0, classifier_activation=None, drop_connect_rate=0.2):
        return _efficientnet(f"efficientnet_{variant}", input_shape, num_classes, include_top,
                             dropout, classifier_activation, width * alpha, depth, lite=False,
                             drop_connect_rate=drop_connect_rate)

    return build


def _register_lite(variant):
    width, depth, resolution, default_dropout = LITE_PARAMS[variant]

    @register_model(f"efficientnet_{variant}", "EfficientNet-Lite", resolution)
    def build(input_shape, num_classes=1000, include_top=True, dropout=default_dropout,
              alpha=1.0, classifier_activation=None, drop_connect_rate=0.2):
        return _efficientnet(f"efficientnet_{variant}", input_shape, num_classes, include_top,
                             dropout, classifier_activation, width * alpha, depth, lite=True,
                             drop_connect_rate=drop_connect_rate)

    return build


for _v in PHI:
    _register_b(_v)
for _v in LITE_PARAMS:
    _register_lite(_v)
