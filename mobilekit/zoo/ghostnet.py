"""GhostNet (arXiv:1911.11907), as huawei-noah/Efficient-AI-Backbones ghostnet_pytorch/ghostnet.py.

Every width (stem, expansion, output, last conv) is make_divisible(c * alpha, 4): divisor
4, not the 8 of MobileNetV2/V3. The 1280-wide head conv is not scaled.
"""
from mobilekit.keras import layers
from mobilekit.layers import apply_activation, conv_bn_act, make_divisible
from mobilekit.layers.ghost import ghost_bottleneck
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

WIDTH_DIVISOR = 4
HEAD_WIDTH = 1280

# (kernel, expansion width, output width, SE ratio, stride): ghostnet.py `cfgs`.
GHOSTNET_BLOCKS = [
    (3, 16, 16, 0, 1),
    (3, 48, 24, 0, 2), (3, 72, 24, 0, 1),
    (5, 72, 40, 0.25, 2), (5, 120, 40, 0.25, 1),
    (3, 240, 80, 0, 2), (3, 200, 80, 0, 1), (3, 184, 80, 0, 1), (3, 184, 80, 0, 1),
    (3, 480, 112, 0.25, 1), (3, 672, 112, 0.25, 1),
    (5, 672, 160, 0.25, 2), (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
    (5, 960, 160, 0, 1), (5, 960, 160, 0.25, 1),
]


@register_model("ghostnet", "GhostNet", 224, alphas=(0.5, 1.0, 1.3))
def ghostnet(input_shape, num_classes=1000, include_top=True, dropout=0.2, alpha=1.0,
             classifier_activation=None):
    """Stem conv 3x3/2 -> 16 ghost bottlenecks -> 1x1 conv (BN, ReLU) to the last expansion
    width -> pool -> 1x1 conv 1280 with bias, ReLU, no BN -> dropout -> classifier."""

    def width(c):
        return make_divisible(c * alpha, WIDTH_DIVISOR)

    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, width(16), 3, 2, "relu", "stem")
    for i, (k, exp, out, se, s) in enumerate(GHOSTNET_BLOCKS):
        x = ghost_bottleneck(x, width(exp), width(out), k, s, se, name=f"block{i}")
    x = conv_bn_act(x, width(GHOSTNET_BLOCKS[-1][1]), 1, 1, "relu", "last_conv")

    def pre_head(h):
        # conv_head in the reference is a 1x1 conv on the pooled map: a Dense here.
        h = layers.Dense(HEAD_WIDTH, name="head_fc")(h)
        return apply_activation(h, "relu", name="head_fc_act")

    return finish_classifier(inputs, x, f"ghostnet_{alpha:g}", num_classes, include_top, dropout,
                             classifier_activation, pre_head=pre_head)
