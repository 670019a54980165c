"""Channel shuffle and channel split: pure data movement, written to stay 4-D.

Both are real Layer subclasses (not Lambda / raw tf ops on Keras tensors) so that
`.keras` files load safely, tfmot can annotate them (QUANT = "passthrough": a
permutation or a slice needs no quantizer) and the TFLite converter sees plain
RESHAPE/TRANSPOSE/SPLIT ops. See shared/reference/quantization.md §2.6-2.7.
"""
from mobilekit.keras import layers, register, tf


def _check_groups(groups):
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    return groups


def _check_channels(what, channels, groups):
    if channels is None or channels % groups:
        raise ValueError(f"{what}: channels ({channels}) must be a known multiple of "
                         f"groups ({groups})")


@register("mobilekit")
class ChannelShuffle(layers.Layer):
    """ShuffleNet channel shuffle: channel (i, j) of g groups moves to position j * g + i.

    The classic definition reshapes to 5-D [N, H, W, g, C/g]; the GPU delegate rejects
    rank-5 tensors, so H and W are folded into one axis: [N, H*W, g, C/g] -> transpose
    [0, 1, 3, 2] -> [N, H, W, C]. Static H, W, C keep the TFLite graph free of SHAPE/PACK.
    """

    QUANT = "passthrough"

    def __init__(self, groups, **kwargs):
        super().__init__(**kwargs)
        self.groups = _check_groups(groups)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"{self.name}: ChannelShuffle needs a 4-D NHWC input; "
                             f"got shape {tuple(input_shape)}")
        _check_channels(self.name, input_shape[-1], self.groups)
        super().build(input_shape)

    def call(self, inputs):
        _, h, w, c = inputs.shape
        g = self.groups
        if h is None or w is None:  # dynamic spatial size: still 4-D, but not static
            dyn = tf.shape(inputs)
            h, w = dyn[1], dyn[2]
        x = tf.reshape(inputs, [-1, h * w, g, c // g])
        x = tf.transpose(x, [0, 1, 3, 2])
        return tf.reshape(x, [-1, h, w, c])

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@register("mobilekit")
class ChannelSplit(layers.Layer):
    """Split the channel axis into `groups` equal parts (a list of tensors; TFLite SPLIT).

    Used by the split form of group convolution and by ShuffleNet v2's channel split.
    """

    QUANT = "passthrough"

    def __init__(self, groups=2, **kwargs):
        super().__init__(**kwargs)
        self.groups = _check_groups(groups)

    def build(self, input_shape):
        _check_channels(self.name, input_shape[-1], self.groups)
        super().build(input_shape)

    def call(self, inputs):
        return tf.split(inputs, self.groups, axis=-1)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)
        part = shape[:-1].concatenate([shape[-1] // self.groups])
        return [part] * self.groups

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}
