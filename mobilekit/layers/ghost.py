"""GhostNet blocks (arXiv:1911.11907; huawei-noah/Efficient-AI-Backbones ghostnet_pytorch).

A ghost module makes half of its output with an ordinary 1x1 conv and the other half
with a cheap depthwise 3x3 on that half, then concatenates them.
"""
import math

from mobilekit.keras import layers, register
from mobilekit.layers.activations import apply_activation
from mobilekit.layers.blocks import batch_norm, make_divisible, squeeze_excite

GHOST_RATIO = 2  # the official code's ratio: half primary, half cheap features


@register("mobilekit")
class ChannelSlice(layers.Layer):
    """Keep channels [start, stop) of an NHWC tensor (a static SLICE in TFLite)."""

    QUANT = "passthrough"

    def __init__(self, start, stop, **kwargs):
        super().__init__(**kwargs)
        if not 0 <= start < stop:
            raise ValueError(f"ChannelSlice needs 0 <= start < stop; "
                             f"got start={start}, stop={stop}")
        self.start, self.stop = int(start), int(stop)

    def call(self, inputs):
        return inputs[..., self.start:self.stop]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.stop - self.start,)

    def count_macs(self, input_shapes, output_shapes):
        return 0

    def get_config(self):
        return {**super().get_config(), "start": self.start, "stop": self.stop}


def ghost_module(x, out_filters, name, relu=True, dw_size=3):
    """1x1 conv -> BN [-> ReLU] makes ceil(out/2) maps; a depthwise dw_size conv -> BN
    [-> ReLU] makes as many 'ghost' maps from them; concat, then keep `out_filters`."""
    act = "relu" if relu else None
    init = math.ceil(out_filters / GHOST_RATIO)
    primary = layers.Conv2D(init, 1, use_bias=False, name=f"{name}_primary")(x)
    primary = batch_norm(primary, f"{name}_primary_bn")
    primary = apply_activation(primary, act, name=f"{name}_primary_act")
    cheap = layers.DepthwiseConv2D(dw_size, padding="same", depth_multiplier=GHOST_RATIO - 1,
                                   use_bias=False, name=f"{name}_cheap")(primary)
    cheap = batch_norm(cheap, f"{name}_cheap_bn")
    cheap = apply_activation(cheap, act, name=f"{name}_cheap_act")
    x = layers.Concatenate(name=f"{name}_concat")([primary, cheap])
    if x.shape[-1] != out_filters:  # odd out_filters: one ghost map too many
        x = ChannelSlice(0, out_filters, name=f"{name}_slice")(x)
    return x


def ghost_bottleneck(x, mid_filters, out_filters, kernel_size=3, strides=1, se_ratio=0.0,
                     name="ghost"):
    """ghost1 (ReLU) -> [depthwise k x k / 2 + BN when strided] -> [SE] -> ghost2 (linear)
    -> + shortcut (identity, or depthwise k x k / s + BN -> 1x1 + BN)."""
    in_filters = x.shape[-1]
    shortcut = x
    x = ghost_module(x, mid_filters, f"{name}_ghost1", relu=True)
    if strides > 1:
        x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same", use_bias=False,
                                   name=f"{name}_dw")(x)
        x = batch_norm(x, f"{name}_dw_bn")
    if se_ratio:
        # SE on the expanded width: reduce rounded to a multiple of 4, hard-sigmoid gate.
        x = squeeze_excite(x, make_divisible(mid_filters * se_ratio, 4), f"{name}_se",
                           inner_act="relu", gate="hsigmoid")
    x = ghost_module(x, out_filters, f"{name}_ghost2", relu=False)
    if in_filters == out_filters and strides == 1:
        return layers.Add(name=f"{name}_add")([shortcut, x])
    shortcut = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="same",
                                      use_bias=False, name=f"{name}_short_dw")(shortcut)
    shortcut = batch_norm(shortcut, f"{name}_short_dw_bn")
    shortcut = layers.Conv2D(out_filters, 1, use_bias=False, name=f"{name}_short_pw")(shortcut)
    shortcut = batch_norm(shortcut, f"{name}_short_pw_bn")
    return layers.Add(name=f"{name}_add")([shortcut, x])
