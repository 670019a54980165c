"""ShuffleNet v1 (arXiv:1707.01083) and v2 (arXiv:1807.11164).

v1 follows the paper's Table 1 and megvii-model/ShuffleNet-Series ShuffleNetV1; v2 follows
torchvision's shufflenetv2.py layer for layer (so trainable params equal torchvision's).
See shared/reference/backbones_notes.md §4-5 and models/shufflenet_v*.toml.
"""
from mobilekit.errors import check_choice
from mobilekit.keras import layers
from mobilekit.layers import (apply_activation, batch_norm, conv_bn_act, depthwise_bn_act,
                              make_divisible)
from mobilekit.layers.group_conv import group_conv
from mobilekit.layers.shuffle import ChannelShuffle, ChannelSplit
from mobilekit.zoo.common import finish_classifier, image_input
from mobilekit.zoo.registry import register_model

V1_GROUPS = (1, 2, 3, 4, 8)
V1_ALPHAS = (0.25, 0.5, 1.0, 1.5, 2.0)
V1_REPEATS = (4, 8, 4)
# Stage 2/3/4 output channels of ShuffleNet 1x per group count (paper Table 1).
V1_STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960),
                   4: (272, 544, 1088), 8: (384, 768, 1536)}
# Stem width per scale: megvii's tables (1.5x keeps 24, it is not 36); 0.25x is int(24 * s)
# as in osmr/imgclsmob, the only source with a 0.25x network.
V1_STEM = {0.25: 6, 0.5: 12, 1.0: 24, 1.5: 24, 2.0: 48}


def shufflenet_v1_widths(groups, alpha):
    """(stem, (stage2, stage3, stage4)) channels for ShuffleNet v1 `alpha`x with g groups.

    Stage widths are s x Table 1 rounded to a multiple of 4g, so that the bottleneck
    (out / 4) splits into g groups; every megvii / paper width is already such a multiple.
    The stem is rounded up to a multiple of g so that stage 2's first main branch
    (out - stem channels) is groupable: this is why megvii's 0.5x g=8 stem is 16, not 12.
    """
    stages = tuple(make_divisible(c * alpha, 4 * groups) for c in V1_STAGE_WIDTHS[groups])
    stem = -(-V1_STEM[alpha] // groups) * groups
    return stem, stages


def shuffle_v1_unit(x, out_channels, groups, strides, first_unit, name, impl=None):
    """ShuffleNet v1 unit: gconv 1x1 -> BN -> ReLU -> shuffle -> dw 3x3 (BN, no ReLU)
    -> gconv 1x1 -> BN, then add + ReLU (stride 1) or concat with a 3x3/2 avg-pool
    shortcut (stride 2; the main branch makes out - in channels and gets the ReLU)."""
    in_channels = x.shape[-1]
    mid = out_channels // 4
    main_out = out_channels - in_channels if strides == 2 else out_channels
    # The paper's Table 1 note: stage 2's first 1x1 sees only 24 channels, so not grouped.
    g1 = 1 if first_unit else groups
    y = group_conv(x, mid, 1, g1, name=f"{name}_gconv1", impl=impl)
    y = batch_norm(y, f"{name}_gconv1_bn")
    y = apply_activation(y, "relu", name=f"{name}_gconv1_act")
    if groups > 1:
        y = ChannelShuffle(groups, name=f"{name}_shuffle")(y)
    y = depthwise_bn_act(y, 3, strides, None, f"{name}_dw")
    y = group_conv(y, main_out, 1, groups, name=f"{name}_gconv2", impl=impl)
    y = batch_norm(y, f"{name}_gconv2_bn")
    if strides == 1:
        y = layers.Add(name=f"{name}_add")([x, y])
        return apply_activation(y, "relu", name=f"{name}_act")
    y = apply_activation(y, "relu", name=f"{name}_act")
    shortcut = _avg_pool_3x3s2(x, f"{name}_pool")
    return layers.Concatenate(name=f"{name}_concat")([shortcut, y])


def _avg_pool_3x3s2(x, name):
    """3x3/2 average with the windows of a "same" conv (aligned with the dw branch), zeros
    counted at the border like the official AvgPool2d(3, 2, 1) (count_include_pad=True).

    Explicit padding + a "valid" pool also lets the int8 export write it as a depthwise
    conv XNNPACK runs (mobilekit.export.convert.DelegableAveragePool).
    """
    pads = []
    for size in x.shape[1:3]:
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads.append((total // 2, total - total // 2))
    x = layers.ZeroPadding2D(tuple(pads), name=f"{name}_pad")(x)
    return layers.AveragePooling2D(3, 2, padding="valid", name=name)(x)


@register_model("shufflenet_v1", "ShuffleNet", 224, alphas=V1_ALPHAS)
def shufflenet_v1(input_shape, num_classes=1000, include_top=True, dropout=0.0, alpha=1.0,
                  classifier_activation=None, groups=3, group_conv_impl=None):
    """ShuffleNet v1 `alpha`x with `groups` groups in its pointwise convs (paper Table 1).

    group_conv_impl: "native" (one grouped Conv2D) or "split" (split -> convs -> concat);
    None uses mobilekit.layers.group_conv.DEFAULT_IMPL.
    """
    check_choice("groups for shufflenet_v1", groups, V1_GROUPS)
    stem, widths = shufflenet_v1_widths(groups, alpha)
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, stem, 3, 2, "relu", "stem")
    x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (width, repeats) in enumerate(zip(widths, V1_REPEATS), start=2):
        for unit in range(repeats):
            x = shuffle_v1_unit(x, width, groups, 2 if unit == 0 else 1,
                                first_unit=(stage == 2 and unit == 0),
                                name=f"stage{stage}_unit{unit + 1}", impl=group_conv_impl)
    return finish_classifier(inputs, x, f"shufflenet_v1_g{groups}_{alpha:g}", num_classes,
                             include_top, dropout, classifier_activation)


V2_ALPHAS = (0.5, 1.0, 1.5, 2.0)
V2_REPEATS = (4, 8, 4)
# Stage 2/3/4 and conv5 channels (paper Table 5; torchvision _stage_out_channels).
V2_WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024),
             1.5: (176, 352, 704, 1024), 2.0: (244, 488, 976, 2048)}


def shuffle_v2_unit(x, out_channels, strides, name):
    """ShuffleNet v2 unit. Stride 1: split channels in half, the right half runs
    1x1 -> dw 3x3 (BN, no ReLU) -> 1x1, concat with the left half. Stride 2: no split; the
    left branch is dw 3x3/2 -> 1x1, the right the same three convs with the dw strided.
    Both end with a 2-group channel shuffle."""
    branch = out_channels // 2
    if strides == 1:
        left, right = ChannelSplit(2, name=f"{name}_split")(x)
    else:
        left = depthwise_bn_act(x, 3, strides, None, f"{name}_b1_dw")
        left = conv_bn_act(left, branch, 1, 1, "relu", f"{name}_b1_pw")
        right = x
    right = conv_bn_act(right, branch, 1, 1, "relu", f"{name}_b2_pw1")
    right = depthwise_bn_act(right, 3, strides, None, f"{name}_b2_dw")
    right = conv_bn_act(right, branch, 1, 1, "relu", f"{name}_b2_pw2")
    y = layers.Concatenate(name=f"{name}_concat")([left, right])
    return ChannelShuffle(2, name=f"{name}_shuffle")(y)


@register_model("shufflenet_v2", "ShuffleNet", 224, alphas=V2_ALPHAS)
def shufflenet_v2(input_shape, num_classes=1000, include_top=True, dropout=None, alpha=1.0,
                  classifier_activation=None):
    """ShuffleNet v2 `alpha`x. dropout=None means megvii's choice: 0.2 for 2.0x, else none."""
    if dropout is None:
        dropout = 0.2 if alpha == 2.0 else 0.0
    *stage_widths, last = V2_WIDTHS[alpha]
    inputs = image_input(input_shape)
    x = conv_bn_act(inputs, 24, 3, 2, "relu", "stem")
    x = layers.MaxPooling2D(3, 2, padding="same", name="stem_pool")(x)
    for stage, (width, repeats) in enumerate(zip(stage_widths, V2_REPEATS), start=2):
        for unit in range(repeats):
            x = shuffle_v2_unit(x, width, 2 if unit == 0 else 1, f"stage{stage}_unit{unit + 1}")
    x = conv_bn_act(x, last, 1, 1, "relu", "last_conv")
    return finish_classifier(inputs, x, f"shufflenet_v2_{alpha:g}", num_classes, include_top,
                             dropout, classifier_activation)
