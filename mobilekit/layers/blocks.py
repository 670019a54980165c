"""Reusable building blocks shared by every family in the zoo (one home each)."""
from mobilekit.keras import layers
from mobilekit.layers.activations import GateScale, apply_activation

BN_EPSILON = 1e-3
BN_MOMENTUM = 0.99


def make_divisible(value, divisor=8, min_value=None):
    """Round a channel count to a multiple of `divisor`, never dropping more than 10 %.

    The rule of the MobileNetV2/V3, MnasNet and EfficientNet reference code.
    """
    min_value = min_value or divisor
    new_value = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new_value < 0.9 * value:
        new_value += divisor
    return int(new_value)


def batch_norm(x, name, epsilon=BN_EPSILON, momentum=BN_MOMENTUM):
    return layers.BatchNormalization(epsilon=epsilon, momentum=momentum, name=name)(x)


def conv_bn_act(x, filters, kernel_size=1, strides=1, act="relu", name="conv", groups=1,
                use_bias=False, bn=True, bn_momentum=BN_MOMENTUM, padding="same",
                kernel_initializer="glorot_uniform"):
    """Conv2D -> BatchNorm -> activation; layers named `<name>`, `<name>_bn`, `<name>_act`."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, groups=groups,
                      use_bias=use_bias or not bn, kernel_initializer=kernel_initializer,
                      name=name)(x)
    if bn:
        x = batch_norm(x, f"{name}_bn", momentum=bn_momentum)
    return apply_activation(x, act, name=f"{name}_act")


def depthwise_bn_act(x, kernel_size=3, strides=1, act="relu", name="dw", depth_multiplier=1,
                     bn_momentum=BN_MOMENTUM):
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same",
                               depth_multiplier=depth_multiplier, use_bias=False, name=name)(x)
    x = batch_norm(x, f"{name}_bn", momentum=bn_momentum)
    return apply_activation(x, act, name=f"{name}_act")


def depthwise_separable(x, filters, strides=1, kernel_size=3, act="relu6", name="sep",
                        bn_momentum=BN_MOMENTUM):
    """MobileNetV1 block: depthwise k x k -> BN -> act -> pointwise 1x1 -> BN -> act."""
    x = depthwise_bn_act(x, kernel_size, strides, act, f"{name}_dw", bn_momentum=bn_momentum)
    return conv_bn_act(x, filters, 1, 1, act, f"{name}_pw", bn_momentum=bn_momentum)


def squeeze_excite(x, squeeze_filters, name, inner_act="relu", gate="hsigmoid"):
    """SE: global pool -> 1x1 (bias) -> act -> 1x1 (bias) -> gate -> scale the input."""
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_pool")(x)
    s = layers.Conv2D(squeeze_filters, 1, name=f"{name}_reduce")(s)
    s = apply_activation(s, inner_act, name=f"{name}_reduce_act")
    s = layers.Conv2D(channels, 1, name=f"{name}_expand")(s)
    s = apply_activation(s, gate, name=f"{name}_gate")
    return GateScale(name=f"{name}_scale")([x, s])


def inverted_residual(x, expanded, out_filters, kernel_size=3, strides=1, act="relu6",
                      se_filters=0, se_gate="hsigmoid", se_act="relu", drop_rate=0.0,
                      name="block", skip=True, bn_momentum=BN_MOMENTUM):
    """MobileNetV2/V3, MnasNet and EfficientNet block.

    Optional 1x1 expansion (skipped when `expanded` equals the input width), depthwise
    k x k, optional squeeze-excite, linear 1x1 projection, residual add when shapes allow.
    """
    in_filters = x.shape[-1]
    shortcut = x
    if expanded != in_filters:
        x = conv_bn_act(x, expanded, 1, 1, act, f"{name}_expand", bn_momentum=bn_momentum)
    x = depthwise_bn_act(x, kernel_size, strides, act, f"{name}_dw", bn_momentum=bn_momentum)
    if se_filters:
        x = squeeze_excite(x, se_filters, f"{name}_se", inner_act=se_act, gate=se_gate)
    x = conv_bn_act(x, out_filters, 1, 1, None, f"{name}_project", bn_momentum=bn_momentum)
    if skip and strides == 1 and in_filters == out_filters:
        if drop_rate > 0:
            # Stochastic depth: drop the whole residual branch per sample.
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}_drop")(x)
        x = layers.Add(name=f"{name}_add")([shortcut, x])
    return x


def classifier_head(x, num_classes, dropout=0.0, name="head", classifier_activation=None,
                    pool=True):
    """Global average pool -> dropout -> Dense logits (softmax only on request)."""
    if pool:
        x = layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    if dropout and dropout > 0:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return layers.Dense(num_classes, activation=classifier_activation, name=f"{name}_logits")(x)
