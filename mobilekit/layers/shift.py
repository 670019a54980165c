"""The shift operation (Wu et al., "Shift: A Zero FLOP, Zero Parameter Alternative to
Spatial Convolutions", arXiv:1711.08141).

The channels are cut into k*k groups, one per offset (dy, dx) of a k x k window, in
row-major order of the window (dy, dx in -(k//2) .. k//2). Group (dy, dx) is moved so that
output[y, x] = input[y + dy, x + dx], zero outside the map. C // k**2 channels go to each
group and the C % k**2 remainder to the centre group (no shift), as the paper assigns
them. The reference CUDA kernel (alvinwan/shiftresnet-cifar) assigns channel c to offset
c mod k**2 instead; any fixed assignment is equivalent up to a permutation of the 1x1
conv weights around it.

Written with static slices, pads and one concat, so TFLite gets builtin
STRIDED_SLICE / PAD / CONCATENATION ops and no multiply at all. int8 exports and QAT use
`shift_kernel` instead (one depthwise conv; see mobilekit.export.delegable.DelegableShift).
"""
import numpy as np

from mobilekit.keras import layers, register, tf


def shift_groups(channels, kernel_size):
    """[(start, stop, dy, dx), ...]: the channel range and offset of every non-empty group."""
    k2 = kernel_size * kernel_size
    per, rest = divmod(channels, k2)
    half, centre = kernel_size // 2, k2 // 2
    out, start = [], 0
    for i in range(k2):
        size = per + (rest if i == centre else 0)
        if size:
            out.append((start, start + size, i // kernel_size - half, i % kernel_size - half))
        start += size
    return out


def shift_kernel(channels, kernel_size):
    """The k x k x C x 1 depthwise kernel that performs the shift: one 1 per channel, at
    (dy + k//2, dx + k//2) of its group (a depthwise conv with SAME zero padding reads
    input[y + i - k//2, x + j - k//2] at kernel tap (i, j))."""
    half = kernel_size // 2
    kernel = np.zeros((kernel_size, kernel_size, channels, 1), np.float32)
    for start, stop, dy, dx in shift_groups(channels, kernel_size):
        kernel[dy + half, dx + half, start:stop, 0] = 1.0
    return kernel


def _shift_axis(x, offset, axis):
    """out[i] = x[i + offset] along `axis` (1 = height, 2 = width), zero-filled."""
    if offset == 0:
        return x
    n = abs(offset)
    begin = [slice(None)] * 4
    pads = [[0, 0]] * 4
    if offset > 0:  # read from further along: drop the first n, pad the end
        begin[axis] = slice(n, None)
        pads[axis] = [0, n]
    else:
        begin[axis] = slice(None, -n)
        pads[axis] = [n, 0]
    return tf.pad(x[tuple(begin)], pads)


# XNNPACK's CONCATENATION takes 2 to 4 inputs; a wider one (9 groups for a 3x3 shift)
# stays on the CPU kernels and splits the delegated graph.
_MAX_CONCAT_INPUTS = 4


def _concat(parts):
    """Channel concat of `parts` as a tree of concats of at most 4 inputs (same result)."""
    while len(parts) > _MAX_CONCAT_INPUTS:
        chunks = [parts[i:i + _MAX_CONCAT_INPUTS] for i in range(0, len(parts), _MAX_CONCAT_INPUTS)]
        parts = [c[0] if len(c) == 1 else tf.concat(c, axis=-1) for c in chunks]
    return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)


@register("mobilekit")
class Shift(layers.Layer):
    """Zero-parameter, zero-MAC spatial shift of channel groups over a k x k window."""

    QUANT = "passthrough"

    def __init__(self, kernel_size=3, **kwargs):
        super().__init__(**kwargs)
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) \
                or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"Shift kernel_size must be a positive odd integer; "
                             f"got {kernel_size!r}")
        self.kernel_size = kernel_size

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{self.name}: Shift needs a 4-D NHWC input with known channels; "
                             f"got shape {tuple(input_shape)}")
        super().build(input_shape)

    def call(self, inputs):
        parts = []
        for start, stop, dy, dx in shift_groups(inputs.shape[-1], self.kernel_size):
            part = inputs[..., start:stop]
            parts.append(_shift_axis(_shift_axis(part, dy, 1), dx, 2))
        return _concat(parts)

    def compute_output_shape(self, input_shape):
        return input_shape

    def count_macs(self, input_shapes, output_shapes):
        return 0

    def receptive_window(self):
        return self.kernel_size, 1

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}

