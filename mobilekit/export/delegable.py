"""Int8-friendly forms of layers whose usual TFLite lowering has no XNNPACK int8 kernel.

Same math, other ops: the int8 PTQ export converts a weight-sharing clone with these
stand-ins (`delegable_clone`), and QAT trains them in place (`qat_swaps`), so that a full
int8 model is one XNNPACK partition with no float island:

  hard-swish   HARD_SWISH (no int8 XNNPACK kernel)      -> ADD(RELU6) + MUL + MUL
  C.ReLU       NEG (no int8 kernel) + CONCAT + RELU      -> CONCAT(x, x) + MUL(signs, RELU)
  avg pool     AVERAGE_POOL_2D, valid (no int8 XNNPACK)  -> DEPTHWISE_CONV_2D, 1/k² weights
  lone ReLU    RELU that cannot fuse into its producer   -> MUL(1 + 2^-20) with fused RELU
               (no int8 XNNPACK RELU; e.g. Xception's ReLU after a residual ADD)
  shift        STRIDED_SLICE + PAD per channel group      -> DEPTHWISE_CONV_2D, one-hot kernel
               + CONCAT tree (memory ops int8 does not
               speed up; ~17 ops and their constants
               per layer)
  box decoding EXP (no int8 XNNPACK kernel)               -> ELU (a layer's own `int8_form()`,
               e.g. mobilekit.detection.postprocess.DecodeDetections)

Float exports (fp32 / fp16: the GPU's files) get two stand-ins, `float_clone`: an average
pool fed by an explicit ZeroPadding2D becomes the depthwise form, because LiteRT's GPU
delegate folds the PAD into the pool and then leaves the padded zeros out of the average
(ShuffleNet v1's stride-2 shortcut came out 34-40 % off next to the border and FaceBoxes'
boxes moved, both fully "accelerated"); and a grouped conv with channels per group not a
multiple of 4, which kills the delegate (SIGILL), becomes SPLIT + CONV_2D per group +
CONCATENATION (tests/test_gpu.py pins both).
"""
from mobilekit.keras import keras, layers, own_node, register, tf
from mobilekit.layers.activations import HardSwish
from mobilekit.layers.crelu import Negate
from mobilekit.layers.group_conv import gpu_safe_groups
from mobilekit.layers.shift import Shift, shift_kernel


@register("mobilekit")
class DelegableHardSwish(layers.Layer):
    """hard-swish as x * (relu6(x + 3) * (1 + 2^-20) / 6): MUL(x, gate) with the gate from
    ADD(fused RELU6) + MUL by a constant.

    The converter fuses `x * relu6(x + 3) / 6` (with an exact 1/6, in any grouping) into
    HARD_SWISH, which XNNPACK has no int8 kernel for (every one splits the partition) and
    TFLite no int16 kernel for. The 2^-20 (one part in a million, far below int8
    resolution) keeps it from matching. Scaling the [0, 6] gate rather than x keeps x's
    own quantization: measured on a MobileNetV3-Small trained on the default data (38.6 %
    float top-1), int8 27.8 % this way against 18.8 % with (x / 6) * relu6(x + 3) and
    30.4 % with the fused HARD_SWISH (20 XNNPACK partitions).
    """

    QUANT = "output"

    def call(self, inputs):
        return inputs * (tf.nn.relu6(inputs + 3.0) * ((1.0 / 6.0) * (1.0 + 2.0 ** -20)))


@register("mobilekit")
class DelegableAveragePool(layers.Layer):
    """AveragePooling2D(padding="valid") as a depthwise conv with constant 1/k² weights.

    XNNPACK has no int8 AVERAGE_POOL_2D: each one splits the int8 partition (ShuffleNet v1's
    stride-2 shortcut, FaceBoxes' Inception pool branch). With valid padding every window
    holds k² real values, so a DEPTHWISE_CONV_2D with constant 1/k² weights is the same
    average, and XNNPACK takes it in int8.
    """

    QUANT = "output"

    def __init__(self, pool_size, strides, **kwargs):
        super().__init__(**kwargs)
        self.pool_size, self.strides = tuple(pool_size), tuple(strides)

    def call(self, inputs):
        kh, kw = self.pool_size
        channels = int(inputs.shape[-1])
        kernel = tf.constant(1.0 / (kh * kw), tf.float32, shape=(kh, kw, channels, 1))
        return tf.nn.depthwise_conv2d(inputs, kernel, (1, *self.strides, 1), "VALID")

    def get_config(self):
        return {**super().get_config(), "pool_size": self.pool_size, "strides": self.strides}


@register("mobilekit")
class DelegableShift(layers.Layer):
    """Shift as one DEPTHWISE_CONV_2D with a constant one-hot k x k kernel (SAME padding).

    The zero-FLOP form (slices, pads and a concat tree) moves the same bytes in int8 as in
    float, so int8 gains nothing on it while paying ~17 ops and their constant tensors per
    layer: ShiftResNet-20 ran slower in int8 than in fp32 and its int8 file was 46 % of
    the float one. One depthwise conv is a single fused kernel XNNPACK runs in int8 (the 1
    is exact in per-channel int8 weights) with k*k multiply-adds per element instead of 0.
    """

    QUANT = "output"

    def __init__(self, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.kernel_size = kernel_size

    def call(self, inputs):
        kernel = tf.constant(shift_kernel(int(inputs.shape[-1]), self.kernel_size))
        return tf.nn.depthwise_conv2d(inputs, kernel, (1, 1, 1, 1), "SAME")

    def get_config(self):
        return {**super().get_config(), "kernel_size": self.kernel_size}


@register("mobilekit")
class DelegableSignedReLU(layers.Layer):
    """The int8-friendly end of C.ReLU: relu(concat[x, x] * [+1.., -1..]) = relu(concat[x, -x]).

    TFLite has no int8 NEG kernel and XNNPACK no int8 RELU, so the usual NEG -> CONCAT ->
    RELU leaves a float island or split partitions in int8. CONCAT(x, x) -> MUL by a
    constant sign vector with the ReLU fused into the MUL is the same math in two ops that
    both have int8 kernels XNNPACK runs. QAT trains this form too (mobilekit.compress.qat).
    """

    QUANT = "output"

    def call(self, inputs):
        half = int(inputs.shape[-1]) // 2
        signs = tf.constant([1.0] * half + [-1.0] * half, tf.float32)
        return tf.nn.relu(inputs * signs)


@register("mobilekit")
class DelegableIdentity(layers.Layer):
    """Stand-in for a C.ReLU Negate (its sign moves into DelegableSignedReLU)."""

    QUANT = "passthrough"

    def call(self, inputs):
        return tf.identity(inputs)


@register("mobilekit")
class DelegableReLU(layers.Layer):
    """A ReLU the converter cannot fuse into its producer, as MUL(x, 1 + 2^-20) + fused RELU.

    XNNPACK has no int8 RELU, so a standalone one splits the partition. The converter
    removes a multiplication by exactly 1 (and then leaves RELU again); 1 + 2^-20 changes
    values by under one part in a million, far below int8 resolution.
    """

    QUANT = "output"

    def call(self, inputs):
        return tf.nn.relu(inputs * (1.0 + 2.0 ** -20))


# Producers a following ReLU fuses into when they feed nothing else (BatchNormalization
# folds into the conv before it).
_FUSES_RELU = (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D, layers.Dense,
               layers.BatchNormalization, layers.Add)


def lone_relu_swaps(model):
    """{layer name: DelegableReLU} for each plain ReLU that TFLite would leave standalone:
    its producer also feeds other layers, or is not an op a ReLU fuses into."""
    inputs, consumers = model_graph(model)
    swaps = {}
    for relu in model.layers:
        is_plain = (type(relu) is layers.ReLU and relu.max_value is None
                    and not relu.negative_slope and not relu.threshold)
        if not is_plain or len(inputs[relu.name]) != 1:
            continue
        producer = inputs[relu.name][0]
        if (len(consumers[producer]) > 1
                or not isinstance(model.get_layer(producer), _FUSES_RELU)):
            swaps[relu.name] = DelegableReLU(name=relu.name)
    return swaps


def crelu_swaps(model):
    """{layer name: stand-in} for every C.ReLU (Negate -> Concatenate([x, -x]) -> ReLU)."""
    inputs, consumers = model_graph(model)
    swaps = {}
    for negate in (layer for layer in model.layers if type(layer) is Negate):
        after = consumers.get(negate.name, [])
        concat = model.get_layer(after[0]) if len(after) == 1 else None
        after = consumers.get(concat.name, []) if concat is not None else []
        relu = model.get_layer(after[0]) if len(after) == 1 else None
        if (type(concat) is layers.Concatenate and type(relu) is layers.ReLU
                and relu.max_value is None and not relu.negative_slope
                and inputs[concat.name] == [inputs[negate.name][0], negate.name]):
            swaps[negate.name] = DelegableIdentity(name=negate.name)
            swaps[relu.name] = DelegableSignedReLU(name=relu.name)
    return swaps


def model_graph(model):
    """({layer: [input layer names]}, {layer: [consumer layer names]}) of this model's own
    graph: layers reused by clones also hold the clones' nodes, so keep this model's."""
    inputs, consumers = {}, {}
    for layer in model.layers:
        for index, node in enumerate(layer._inbound_nodes):
            if f"{layer.name}_ib-{index}" not in model._network_nodes:
                continue
            inbound = node.inbound_layers
            names = [l.name for l in (inbound if isinstance(inbound, list) else [inbound])]
            inputs[layer.name] = names
            for name in names:
                consumers.setdefault(name, []).append(layer.name)
    return inputs, consumers


def int8_swaps(model, hard_swish=True):
    """{layer name: stand-in} for every layer of `model` that needs an int8-friendly form
    (the module docstring's list; without hard-swish when `hard_swish` is False)."""
    swaps = lone_relu_swaps(model)
    swaps.update(crelu_swaps(model))
    for layer in model.layers:
        if hard_swish or type(layer) is not HardSwish:
            stand_in = _delegable_layer(layer)
            if stand_in is not None:
                swaps[layer.name] = stand_in
    return swaps


def qat_swaps(model):
    """The stand-ins QAT trains in place of the originals: all of `int8_swaps` but
    hard-swish, which has its own QAT layer (mobilekit.compress.qat.QATHardSwish)."""
    return int8_swaps(model, hard_swish=False)


def _delegable_layer(layer):
    """The XNNPACK-int8-friendly stand-in for `layer`, or None when it needs none."""
    if type(layer) is HardSwish:
        return DelegableHardSwish(name=layer.name)
    if (type(layer) is layers.AveragePooling2D and layer.padding == "valid"
            and layer.data_format == "channels_last"):
        return DelegableAveragePool(layer.pool_size, layer.strides, name=layer.name)
    if type(layer) is Shift:
        return DelegableShift(layer.kernel_size, name=layer.name)
    if hasattr(layer, "int8_form"):  # e.g. FaceBoxes' box decoding (no int8 EXP in XNNPACK)
        return layer.int8_form()
    return None


def padded_pool_swaps(model):
    """{layer name: DelegableAveragePool} for each valid AveragePooling2D fed by a
    ZeroPadding2D (PyTorch's count_include_pad average, FaceBoxes' Inception pool branch).

    For float files: LiteRT's GPU delegate merges PAD into the AVERAGE_POOL_2D after it and
    then averages over the real values only, so border outputs change (measured on a
    trained FaceBoxes through the real delegate, enforce_f32: up to 2.4 on values of 3.8,
    top-50 decoded boxes IoU 0.87). A depthwise conv with 1/k^2 weights keeps the padded
    zeros in the sum on every delegate, and the reference kernels give the same numbers.
    """
    inputs, _ = model_graph(model)
    swaps = {}
    for layer in model.layers:
        producers = inputs.get(layer.name, [])
        if (type(layer) is layers.AveragePooling2D and layer.padding == "valid"
                and layer.data_format == "channels_last" and len(producers) == 1
                and type(model.get_layer(producers[0])) is layers.ZeroPadding2D):
            swaps[layer.name] = DelegableAveragePool(layer.pool_size, layer.strides,
                                                     name=layer.name)
    return swaps


@register("mobilekit")
class SplitGroupConv(layers.Wrapper):
    """A grouped Conv2D computed as SPLIT + one CONV_2D per group + CONCATENATION, with the
    wrapped layer's own kernel and bias (float exports only; see `group_conv_swaps`)."""

    def call(self, inputs):
        conv, groups = self.layer, self.layer.groups
        kernels = tf.split(conv.kernel, groups, axis=-1)
        parts = tf.split(inputs, groups, axis=-1)
        out = tf.concat([tf.nn.conv2d(x, k, conv.strides, conv.padding.upper(),
                                      dilations=conv.dilation_rate)
                         for x, k in zip(parts, kernels)], axis=-1)
        if conv.use_bias:
            out = tf.nn.bias_add(out, conv.bias)
        return conv.activation(out)


def group_conv_swaps(model):
    """{layer name: SplitGroupConv} for each grouped Conv2D whose channels per group are not
    a multiple of 4: LiteRT's GPU delegate dies (SIGILL) compiling those as one grouped
    CONV_2D (mobilekit.layers.group_conv), and runs the split form."""
    swaps = {}
    for layer in model.layers:
        if (type(layer) is layers.Conv2D and layer.groups > 1 and layer.data_format
                == "channels_last" and not gpu_safe_groups(int(layer.input_shape[-1]),
                                                            layer.filters, layer.groups)):
            swaps[layer.name] = SplitGroupConv(layer, name=layer.name)
    return swaps


@register("mobilekit")
class CReLUConv(layers.Layer):
    """conv -> BatchNorm -> the [x, -x] of C.ReLU as one conv: filters [W', -W'] and biases
    [b', -b'] with the BatchNorm folded in (W' = W * scale, b' = shift), read from the wrapped
    layers' own weights. The ReLU after it fuses into the CONV_2D.

    Why: C.ReLU halves a conv's MACs but adds NEG + CONCATENATION + RELU over the doubled
    tensor; after a cheap conv (FaceBoxes' conv1: 147 MACs per output on 3 channels) those
    memory passes cost more than the MACs saved. Measured at 640x480 in fp32, 1 thread, on a
    2-core AVX-512 host: conv1 + C.ReLU 4.08 ms, as one 48-filter conv 2.96 ms (float files
    only: in int8 the C.ReLU ops are cheap, 0.98 ms against 1.36 ms for the doubled conv).
    """

    def __init__(self, conv, bn, **kwargs):
        super().__init__(**kwargs)
        self.conv, self.bn = conv, bn

    def call(self, inputs):
        conv = self.conv
        kernel, bias = self.folded()
        out = tf.nn.conv2d(inputs, kernel, conv.strides, conv.padding.upper(),
                           dilations=conv.dilation_rate)
        return tf.nn.bias_add(out, bias)

    def folded(self):
        """(kernel [.., 2F], bias [2F]): [W', -W'] and [b', -b'] from the layers' weights."""
        conv, bn = self.conv, self.bn
        scale = tf.math.rsqrt(bn.moving_variance + bn.epsilon)
        if bn.scale:
            scale = scale * bn.gamma
        shift = -bn.moving_mean * scale
        if bn.center:
            shift = shift + bn.beta
        if conv.use_bias:
            shift = shift + conv.bias * scale
        kernel = conv.kernel * scale
        return tf.concat([kernel, -kernel], axis=-1), tf.concat([shift, -shift], axis=0)

    def as_conv(self, activation=None):
        """A plain Conv2D holding a copy of the folded weights, same name (for rewrites that
        need a Conv2D, e.g. mobilekit.export.stem's space-to-depth stem)."""
        conv = self.conv
        plain = layers.Conv2D(2 * conv.filters, conv.kernel_size, conv.strides, conv.padding,
                              dilation_rate=conv.dilation_rate, activation=activation,
                              name=self.name)
        plain.build((None, None, None, int(conv.kernel.shape[2])))
        plain.set_weights([w.numpy() for w in self.folded()])
        return plain

    def get_config(self):
        return {**super().get_config(), "conv": keras.layers.serialize(self.conv),
                "bn": keras.layers.serialize(self.bn)}

    @classmethod
    def from_config(cls, config):
        config["conv"] = keras.layers.deserialize(config["conv"])
        config["bn"] = keras.layers.deserialize(config["bn"])
        return cls(**config)


@register("mobilekit")
class FirstInput(layers.Layer):
    """Stand-in for a C.ReLU's Concatenate once CReLUConv produced both halves."""

    def call(self, inputs):
        return tf.identity(inputs[0])


# CReLUConv pays off while the conv is cheap per output (see its docstring): FaceBoxes'
# conv1 (7*7*3 = 147) gains, its conv2 (5*5*48 = 1200) would double 92 MMACs for little.
CRELU_CONV_MAX_TAPS = 256


def crelu_conv_swaps(model, max_taps=CRELU_CONV_MAX_TAPS, skip=()):
    """{layer name: stand-in} turning each Conv2D -> BatchNormalization -> C.ReLU chain whose
    conv has at most `max_taps` MACs per output into one CReLUConv (+ the ReLU, fused);
    chains whose Negate is named in `skip` (rewritten otherwise) are left alone."""
    swaps = {}
    for conv, bn, negate, concat in crelu_conv_chains(model, max_taps):
        if negate.name in skip:
            continue
        swaps[conv.name] = CReLUConv(conv, bn, name=conv.name)
        swaps[bn.name] = DelegableIdentity(name=bn.name)
        swaps[negate.name] = DelegableIdentity(name=negate.name)
        swaps[concat.name] = FirstInput(name=concat.name)
    return swaps


def crelu_conv_chains(model, max_taps=CRELU_CONV_MAX_TAPS):
    """(conv, bn, negate, concat) of each chain `crelu_conv_swaps` rewrites."""
    inputs, consumers = model_graph(model)

    def single(name, kind):
        layer = model.get_layer(name)
        return layer if type(layer) is kind and len(consumers.get(name, [])) == 1 else None

    for negate in (layer for layer in model.layers if type(layer) is Negate):
        bn_name = inputs[negate.name][0]
        after = consumers.get(bn_name, [])
        bn = model.get_layer(bn_name)
        conv_name = inputs.get(bn_name, [None])[0]
        conv = single(conv_name, layers.Conv2D) if conv_name else None
        if (type(bn) is not layers.BatchNormalization or len(after) != 2 or conv is None
                or conv.groups != 1 or conv.activation is not keras.activations.linear
                or conv.data_format != "channels_last"):
            continue
        concat = next((model.get_layer(n) for n in after if n != negate.name), None)
        if (type(concat) is not layers.Concatenate or concat.axis not in (-1, 3)
                or inputs[concat.name] != [bn_name, negate.name]
                or consumers.get(negate.name) != [concat.name]):
            continue
        kh, kw = conv.kernel_size
        if kh * kw * int(conv.kernel.shape[2]) > max_taps:
            continue
        yield conv, bn, negate, concat


@register("mobilekit")
class CroppedMaxPool(layers.Layer):
    """3x3/2 max pool, SAME padding, on a map one row and one column longer than the one it
    stands for, with the last output row and column dropped (SLICE): for a non-negative
    even-sided map the same as ZeroPadding2D(1) + MaxPooling2D(3, 2, "valid"); see
    `max_pool_padding_swaps`."""

    def call(self, inputs):
        pooled = tf.nn.max_pool2d(inputs, 3, 2, "SAME")
        # Static sizes where known: XNNPACK leaves a float SLICE with a -1 size to TFLite.
        size = [-1 if side is None else int(side) for side in pooled.shape]
        size[1:3] = [size[1] - 1, size[2] - 1]
        return tf.slice(pooled, [0, 0, 0, 0], size)


# Layers that act per position (a map's rows and columns pass through them unchanged).
_POSITION_WISE = (layers.BatchNormalization, layers.ReLU, Negate)


def max_pool_padding_swaps(model):
    """{layer name: stand-in} for each ZeroPadding2D(1) -> MaxPooling2D(3, 2, "valid") on an
    even-sided ReLU output computed per position from a valid conv on a ZeroPadding2D
    (FaceBoxes' pool1 and pool2): the conv's padding grows so that it computes one more
    output row and column, and the pool becomes a CroppedMaxPool, whose SAME padding lands
    one -inf row / column before the map and the extra row / column after it.

    Why: XNNPACK fuses a PAD into a following conv, not into a max pool, so the PAD runs
    alone: in int8 on a 2-core AVX-512 VNNI host, 1 thread, on FaceBoxes' 160x120x48 pool1
    input, PAD + MAX_POOL_2D 276 us (the PAD alone 234), MAX_POOL_2D SAME + SLICE 82 us
    (tools/faceboxes_op_costs.py). Exact: every kept output reads only the real map (the
    extra row / column feed only dropped outputs), and on a non-negative map the pool's
    -inf padding and the zeros give the same maximum."""
    inputs, consumers = model_graph(model)
    swaps = {}
    for pool in model.layers:
        if not (type(pool) is layers.MaxPooling2D and pool.pool_size == (3, 3)
                and pool.strides == (2, 2) and pool.padding == "valid"
                and pool.data_format == "channels_last"):
            continue
        pad = model.get_layer(inputs[pool.name][0])
        if (type(pad) is not layers.ZeroPadding2D or pad.padding != ((1, 1), (1, 1))
                or consumers.get(pad.name) != [pool.name]
                or any(int(side) % 2 for side in own_node(model, pad).input_tensors.shape[1:3])):
            continue
        found = _padded_conv_chain(model, inputs, consumers, inputs[pad.name][0], pad.name)
        if found is None:
            continue
        conv_pad, conv = found
        size = own_node(model, conv_pad).input_tensors.shape[1:3]
        swaps[conv_pad.name] = layers.ZeroPadding2D(_one_more_output(conv_pad, conv, size),
                                                    name=conv_pad.name)
        swaps[pad.name] = DelegableIdentity(name=pad.name)
        swaps[pool.name] = CroppedMaxPool(name=pool.name)
    return swaps


def _padded_conv_chain(model, inputs, consumers, last, pool_pad):
    """(ZeroPadding2D, valid Conv2D) that `last` (a ReLU) is computed from through
    per-position layers only, none of them feeding anything else; else None."""
    relu = model.get_layer(last)
    if type(relu) is not layers.ReLU or relu.negative_slope or relu.threshold:
        return None
    seen, stack, conv = set(), [last], None
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        layer = model.get_layer(name)
        if type(layer) is layers.Conv2D:
            if conv is not None and conv is not layer:
                return None
            conv = layer
            continue
        is_channel_concat = type(layer) is layers.Concatenate and layer.axis in (-1, 3)
        if not (isinstance(layer, _POSITION_WISE) or is_channel_concat):
            return None
        stack.extend(inputs.get(name, []))
    if conv is None or any(set(consumers.get(name, [])) - seen - {pool_pad}
                           for name in seen):
        return None
    conv_pad = model.get_layer(inputs[conv.name][0])
    if (type(conv_pad) is not layers.ZeroPadding2D or consumers.get(conv_pad.name) != [conv.name]
            or conv.padding != "valid" or conv.dilation_rate != (1, 1)):
        return None
    return conv_pad, conv


def _one_more_output(conv_pad, conv, input_size):
    """The conv's padding, grown at the bottom and right so it computes one more output row
    and column than it does on a map of `input_size` (rows, columns)."""
    padding = []
    for axis, (before, after) in enumerate(conv_pad.padding):
        size = int(input_size[axis])
        k, s = conv.kernel_size[axis], conv.strides[axis]
        out = (size + before + after - k) // s + 1
        padding.append((before, k + out * s - size - before))
    return tuple(padding)


@register("mobilekit")
class PooledCReLU(layers.Wrapper):
    """relu(concat(pool(x), pool(-x))) for a max pool layer `pool`: the C.ReLU of a map
    moved after the max pool that follows it (float exports; see
    `crelu_after_pool_swaps`)."""

    def call(self, inputs):
        return tf.nn.relu(tf.concat([self.layer(inputs), self.layer(-inputs)], axis=-1))


def crelu_after_pool_swaps(model, pool_swaps):
    """{layer name: stand-in} for each C.ReLU (Negate -> Concatenate -> ReLU) whose only
    consumer is a 3x3/2 max pool (with or without a ZeroPadding2D before it): the pool runs
    on x and on -x, then the C.ReLU on the 4x smaller result (`PooledCReLU`). `pool_swaps`
    are the model's `max_pool_padding_swaps`; a pool swapped there is wrapped as swapped.

    Exact: a max pool commutes with ReLU, and relu(0) = 0 keeps a zero padding (or the
    SAME pool's -inf padding, once relu'd) the same. Why: fp32 conv1 + C.ReLU + pool1 of
    FaceBoxes at 640x480, 1 thread, a 2-core AVX-512 host: 3.43 ms with the C.ReLU as one
    48-filter conv (CReLUConv), 3.30 ms as NEG + CONCATENATION + RELU before the pool,
    2.83 ms after it (tools/faceboxes_op_costs.py). Float only: XNNPACK has no int8 NEG."""
    inputs, consumers = model_graph(model)
    swaps = {}
    for negate in (layer for layer in model.layers if type(layer) is Negate):
        source = inputs[negate.name][0]
        concat = _only_consumer(model, consumers, negate.name)
        relu = _only_consumer(model, consumers, concat.name) if concat is not None else None
        after = _only_consumer(model, consumers, relu.name) if relu is not None else None
        pad = after if type(after) is layers.ZeroPadding2D else None
        pool = _only_consumer(model, consumers, pad.name) if pad is not None else after
        if (type(concat) is not layers.Concatenate or concat.axis not in (-1, 3)
                or inputs[concat.name] != [source, negate.name]
                or type(relu) is not layers.ReLU or relu.max_value is not None
                or relu.negative_slope or relu.threshold
                or type(pool) is not layers.MaxPooling2D
                or pool.data_format != "channels_last"):
            continue
        swaps[negate.name] = DelegableIdentity(name=negate.name)
        swaps[concat.name] = FirstInput(name=concat.name)
        swaps[relu.name] = DelegableIdentity(name=relu.name)
        swaps[pool.name] = PooledCReLU(pool_swaps.get(pool.name, pool), name=pool.name)
    return swaps


def _only_consumer(model, consumers, name):
    after = consumers.get(name, [])
    return model.get_layer(after[0]) if len(after) == 1 else None


def float_clone(model, fast_forms=True):
    """A weight-sharing clone of `model` with `padded_pool_swaps` and `group_conv_swaps`
    (float exports: the files a GPU runs), and with `fast_forms` `max_pool_padding_swaps`,
    `crelu_after_pool_swaps` and, for a C.ReLU not followed by a max pool,
    `crelu_conv_swaps`."""
    swaps = {**padded_pool_swaps(model), **group_conv_swaps(model)}
    if fast_forms:
        pool_swaps = max_pool_padding_swaps(model)
        after_pool = crelu_after_pool_swaps(model, pool_swaps)
        # A C.ReLU both could rewrite goes to the pooled form.
        swaps.update(crelu_conv_swaps(model, skip=after_pool))
        swaps.update(pool_swaps)
        swaps.update(after_pool)
    if not swaps:
        return model
    return keras.models.clone_model(model, clone_function=lambda layer: swaps.get(layer.name,
                                                                                   layer))


def delegable_clone(model):
    """A weight-sharing clone of `model` with the int8-friendly forms of the module
    docstring (integer PTQ only; same math, see the layers above)."""
    swaps = int8_swaps(model)
    if not swaps:
        return model

    def swap(layer):
        # Returning the layer itself reuses it: the clone shares every weight.
        return swaps.get(layer.name, layer)

    return keras.models.clone_model(model, clone_function=swap)
