"""Group convolution, two ways behind one option.

* "native": one `Conv2D(groups=g)` -> a single grouped CONV_2D in TFLite.
* "split":  ChannelSplit -> g Conv2D -> Concatenate, for runtimes without grouped CONV_2D.

Both count the same MACs (the profiler divides a grouped Conv2D's cost by g; the split
form is g ordinary convs on C/g channels). DEFAULT_IMPL is the form that won
tools/bench_group_conv.py (see models/shufflenet_v1.toml, [group_conv_measurement]): the
TF 2.21 converter emits grouped CONV_2D, XNNPACK takes it, and it was faster in fp32 and int8.
"split" also cannot go through tfmot QAT when a BatchNorm follows it (tfmot folds BN only
after a conv, not after the Concatenate).

GPU: LiteRT's GPU delegate (ML Drift, checked on its WebGPU backend) dies with SIGILL while
compiling a grouped CONV_2D whose channels per group (in or out) are not a multiple of 4
(`gpu_safe_groups`; e.g. 30 -> 108 channels in 3 groups), which ShuffleNet v1 has below 1.0x
width. The split form delegates fully, but it is not the default there: int8 then keeps the
BatchNorm after the concat as an unfused ADD that XNNPACK refuses (13 partitions instead of
1). Float exports (the GPU's files) split just those layers at conversion
(mobilekit.export.delegable.SplitGroupConv).
"""
from mobilekit.errors import check_choice
from mobilekit.keras import layers
from mobilekit.layers.shuffle import ChannelSplit

IMPLS = ("native", "split")
DEFAULT_IMPL = "native"


def group_conv(x, filters, kernel_size, groups, strides=1, name="gconv", impl=None,
               use_bias=False, padding="same"):
    """A k x k convolution whose input and output channels are cut into `groups` groups.

    Output group i sees only input group i. With impl="split" the per-group layers are
    `<name>_split`, `<name>_g0..g{g-1}` and `<name>_concat`; with "native" (or groups=1)
    there is one layer `<name>`.
    """
    cin = x.shape[-1]
    impl = check_choice("group conv impl", DEFAULT_IMPL if impl is None else impl, IMPLS)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer; got {groups!r}")
    if cin % groups or filters % groups:
        raise ValueError(f"{name}: input channels ({cin}) and filters ({filters}) must both be "
                         f"multiples of groups ({groups})")
    if impl == "native" or groups == 1:
        return layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                             groups=groups, use_bias=use_bias, name=name)(x)
    parts = ChannelSplit(groups, name=f"{name}_split")(x)
    outs = [layers.Conv2D(filters // groups, kernel_size, strides=strides, padding=padding,
                          use_bias=use_bias, name=f"{name}_g{i}")(part)
            for i, part in enumerate(parts)]
    return layers.Concatenate(name=f"{name}_concat")(outs)


def gpu_safe_groups(cin, filters, groups):
    """False where the GPU delegate crashes on a grouped CONV_2D (see the module docstring)."""
    return groups == 1 or ((cin // groups) % 4 == 0 and (filters // groups) % 4 == 0)


def split_weights_from_native(kernel, groups, bias=None):
    """Per-group weights of the split form from a native grouped kernel [kh, kw, C/g, F].

    Output channels [i*F/g, (i+1)*F/g) of the native kernel belong to group i.
    Returns a list of `[kernel_i]` or `[kernel_i, bias_i]` for `Conv2D.set_weights`.
    """
    per = kernel.shape[-1] // groups
    out = []
    for i in range(groups):
        w = [kernel[..., i * per:(i + 1) * per]]
        if bias is not None:
            w.append(bias[i * per:(i + 1) * per])
        out.append(w)
    return out


def train_grouped_convs_without_xla(model):
    """Let `model`'s grouped Conv2D layers (wrapped ones included) run TensorFlow's own kernels.

    tf_keras sends every grouped Conv2D through an XLA-compiled op, a workaround from when
    TensorFlow's CPU kernels lacked groups. With TF 2.21 the plain op runs on CPU and XLA's
    gradient is the slow part: 3x3, 152 channels, 19 groups, batch 32 at 8x8: 1.8 s per
    forward+backward vs 6 ms plain (tools/bench_grouped_training.py times whole models).
    The override lives on the layer instances of this training process only: saved models
    and exports are unchanged.
    Returns how many layers were switched.
    """
    from mobilekit.keras import layers as keras_layers

    switched = 0
    for layer in model.submodules:
        if isinstance(layer, keras_layers.Conv2D) and layer.groups > 1:
            layer._jit_compiled_convolution_op = layer.convolution_op
            switched += 1
    return switched
