"""Space-to-depth input layout: the first strided convolution on 3 channels, rewritten.

Why: XNNPACK's int8 convolution kernels on x86 without VNNI step through input channels 8
at a time, so a stem conv on 3 channels wastes most of each step; measured on a 2-core AVX2
host, FaceBoxes' conv1 (7x7/4, 3->24 at 640x480) takes 7.3 ms in int8 against 3.6 ms in
fp32. The same convolution applied to the image rearranged into s x s blocks (H/s, W/s,
3*s*s) is a stride-1 conv with a ceil(k/s) kernel over 3*s*s channels: 2.8 ms in int8.
The rearrangement cannot live in the graph (XNNPACK's SPACE_TO_DEPTH alone takes 6.6 ms on
that input), so the exported file takes the rearranged image: `apply_input_layout` does it
on the host side (mobilekit eval/detect read the layout from the file's metadata).

Exact: the new kernel holds the old weights at their block offsets and zeros elsewhere; the
padding is moved into the host-side rearrangement (rows/columns the old conv never read are
cropped).

In the graph (`in_graph_space_to_depth_stem`, int8 exports of stems with stride >= 4): the
file keeps taking images; PAD + SPACE_TO_DEPTH run inside it. Measured on a 2-core AVX-512
VNNI host at 640x480, 1 thread, round-robin: FaceBoxes' conv1 in int8 3.25 ms as a plain
7x7/4 conv, 0.93 ms as SPACE_TO_DEPTH + 2x2 conv on 48 channels (0.53 ms with the host-side
layout). In fp32 the plain conv stays faster (2.3 ms against 3.2 ms), so float files keep it.
"""
import math

import numpy as np

from mobilekit.keras import keras, layers, own_node, register, tf

LAYOUT_KEY = "input_layout"
# Stems with at least this stride are rewritten in the graph for int8 (see the docstring):
# the 3-channel tax grows with the kernel's taps, and s2d's zero taps ((kb*s)^2 / k^2 more
# MACs: 1.31x for 7x7/4, 1.78x for 3x3/2) stay small only for large strided kernels.
IN_GRAPH_MIN_STRIDE = 4


@register("mobilekit")
class SpaceToDepth(layers.Layer):
    """tf.nn.space_to_depth as a layer: TFLite's SPACE_TO_DEPTH (XNNPACK runs it in int8)."""

    QUANT = "passthrough"

    def __init__(self, block_size, **kwargs):
        super().__init__(**kwargs)
        self.block_size = int(block_size)

    def call(self, inputs):
        return tf.nn.space_to_depth(inputs, self.block_size)

    def get_config(self):
        return {**super().get_config(), "block_size": self.block_size}


def _first_layers(model):
    """(optional ZeroPadding2D, the stem Conv2D) or None when the model does not start so."""
    from mobilekit.export.delegable import model_graph

    inputs = [layer for layer in model.layers if isinstance(layer, layers.InputLayer)]
    if len(model.inputs) != 1 or len(inputs) != 1:
        return None
    _, consumers = model_graph(model)

    def only_consumer(layer):
        after = consumers.get(layer.name, [])
        return model.get_layer(after[0]) if len(after) == 1 else None

    layer, pad = only_consumer(inputs[0]), None
    if type(layer) is layers.ZeroPadding2D:
        pad, layer = layer, only_consumer(layer)
    if type(layer) is not layers.Conv2D:
        return None
    return pad, layer


def stem_plan(model):
    """How the stem would be rewritten, or None: {block, kernel, pads, image_size, ...}."""
    found = _first_layers(model)
    if found is None:
        return None
    pad, conv = found
    h, w, channels = (int(v) for v in model.inputs[0].shape[1:4])
    s = conv.strides[0]
    k = conv.kernel_size[0]
    if (channels != 3 or conv.strides != (s, s) or s < 2 or conv.kernel_size != (k, k)
            or conv.dilation_rate != (1, 1) or getattr(conv, "groups", 1) != 1
            or conv.data_format != "channels_last"):
        return None
    (top, bottom), (left, right) = pad.padding if pad is not None else ((0, 0), (0, 0))
    if conv.padding == "same":
        top, bottom = _add_same(top, bottom, h + top + bottom, k, s)
        left, right = _add_same(left, right, w + left + right, k, s)
    out_h, out_w = (h + top + bottom - k) // s + 1, (w + left + right - k) // s + 1
    kb = math.ceil(k / s)
    # Rows (columns) the rewritten conv reads: s * (out - 1 + kb); beyond the image that is
    # zero padding, and anything the old conv never read is cropped (negative padding).
    bottom = s * (out_h - 1 + kb) - h - top
    right = s * (out_w - 1 + kb) - w - left
    return {"space_to_depth": s, "kernel": k, "pad": [[top, bottom], [left, right]],
            "output_size": [out_h, out_w],
            "image_size": [h, w], "layers": [l.name for l in (pad, conv) if l is not None]}


def stem_layout(model):
    """The input layout `space_to_depth_stem(model)` gives (None when no stem fits)."""
    plan = stem_plan(model)
    return None if plan is None else {key: plan[key]
                                      for key in ("space_to_depth", "pad", "image_size")}


def _add_same(before, after, size, k, s):
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return before + total // 2, after + total - total // 2


def space_to_depth_stem(model):
    """(model taking the space-to-depth input, layout dict) or (model, None) if no stem fits.

    The returned model shares every layer after the stem with `model` (a nested tail)."""
    plan = stem_plan(model)
    if plan is None:
        return model, None
    s = plan["space_to_depth"]
    (top, bottom), (left, right) = plan["pad"]
    h, w = plan["image_size"]
    shape = ((h + top + bottom) // s, (w + left + right) // s, 3 * s * s)
    inputs = keras.Input(shape, batch_size=1, name="input_s2d")
    return keras.Model(inputs, _s2d_conv_and_tail(model, plan, inputs),
                       name=model.name), stem_layout(model)


def in_graph_space_to_depth_stem(model, min_stride=IN_GRAPH_MIN_STRIDE):
    """`model` with its stem conv computed as SPACE_TO_DEPTH + a stride-1 conv inside the
    graph, same images in and same outputs; `model` itself when it has no such stem, the
    stride is below `min_stride`, or the image sides are not multiples of the stride.

    The zero padding moves after the rearrangement, in whole blocks, with the kernel shifted
    inside its blocks: XNNPACK fuses a PAD into the conv that follows it, while a PAD of the
    3-channel image before SPACE_TO_DEPTH runs alone (2.4 ms at 640x480 in int8 here, more
    than the conv)."""
    plan = stem_plan(model)
    if plan is None or plan["space_to_depth"] < min_stride:
        return model
    sides = _block_padding(plan)
    if sides is None:
        return model
    inputs = keras.Input(model.inputs[0].shape[1:], batch_size=model.inputs[0].shape[0],
                         name=model.input_names[0])
    name = plan["layers"][-1]
    x = SpaceToDepth(plan["space_to_depth"], name=f"{name}_space_to_depth")(inputs)
    pads = [(max(before, 0), max(after, 0)) for _, before, after, _ in sides]
    crops = [(0, max(-after, 0)) for _, _, after, _ in sides]
    if any(map(any, pads)):
        x = layers.ZeroPadding2D(pads, name=f"{name}_block_pad")(x)
    if any(map(any, crops)):
        x = layers.Cropping2D(crops, name=f"{name}_block_crop")(x)
    outputs = _s2d_conv_and_tail(model, plan, x, offsets=[side[0] for side in sides],
                                 blocks=[side[3] for side in sides])
    return keras.Model(inputs, outputs, name=model.name)


def crelu_stem_swaps(model, in_graph=True, min_stride=IN_GRAPH_MIN_STRIDE):
    """{layer name: stand-in} making a stem conv -> BN -> C.ReLU -> ReLU that the
    space-to-depth rewrite takes one plain conv with filters [W', -W'], biases [b', -b']
    and the ReLU (CReLUConv.as_conv), for int8 files; {} when the model has no such stem.
    in_graph: the rewrite is `in_graph_space_to_depth_stem` (stride >= `min_stride`, sides
    in whole blocks); False: `space_to_depth_stem` (the file takes the rearranged input).

    Why: once the stem is a stride-1 conv on 3*s*s channels, doubling its filters costs
    less than int8's C.ReLU (CONCATENATION + MUL over the doubled output): at 640x480 on a
    2-core AVX-512 VNNI host, 1 thread, FaceBoxes' space-to-depth conv1 + pool1 took 0.76 ms
    with 24 filters and 0.87 ms with 48 (tools/faceboxes_op_costs.py), and the whole int8
    network 2.07 ms with the C.ReLU ops, 1.64 ms with this swap (one round-robin run). On
    the plain 7x7/4 conv over 3 channels the doubled conv loses (see CReLUConv)."""
    from mobilekit.export.delegable import (CReLUConv, DelegableIdentity, FirstInput,
                                            crelu_conv_chains, model_graph)

    plan = stem_plan(model)
    if plan is None or in_graph and (plan["space_to_depth"] < min_stride
                                     or _block_padding(plan) is None):
        return {}
    _, consumers = model_graph(model)
    for conv, bn, negate, concat in crelu_conv_chains(model, max_taps=math.inf):
        after = consumers.get(concat.name, [])
        relu = model.get_layer(after[0]) if len(after) == 1 else None
        if (conv.name != plan["layers"][-1] or type(relu) is not layers.ReLU
                or relu.max_value is not None or relu.negative_slope or relu.threshold):
            continue
        return {conv.name: CReLUConv(conv, bn, name=conv.name).as_conv(activation="relu"),
                bn.name: DelegableIdentity(name=bn.name),
                negate.name: DelegableIdentity(name=negate.name),
                concat.name: FirstInput(name=concat.name),
                relu.name: DelegableIdentity(name=relu.name)}
    return {}


def _block_padding(plan):
    """Per side (rows, columns): (kernel offset in its blocks, blocks of zeros before,
    blocks after (negative: crop), kernel size in blocks); None when the image side is not a
    multiple of the block size."""
    s, k = plan["space_to_depth"], plan["kernel"]
    sides = []
    for axis in (0, 1):
        size, out = plan["image_size"][axis], plan["output_size"][axis]
        before = plan["pad"][axis][0]  # the old conv's zeros before the image
        if size % s:
            return None
        offset = -before % s
        blocks_before = (before + offset) // s
        kb = math.ceil((k + offset) / s)
        sides.append((offset, blocks_before, out + kb - 1 - blocks_before - size // s, kb))
    return sides


def _s2d_conv_and_tail(model, plan, x, offsets=(0, 0), blocks=None):
    """The stem as a stride-1 conv on the space-to-depth tensor `x` (kernel placed at
    `offsets` in `blocks`, see `space_to_depth_kernel`), then the rest of `model` (a nested
    model sharing its layers); returns the outputs."""
    conv = model.get_layer(plan["layers"][-1])
    s, k = plan["space_to_depth"], plan["kernel"]
    blocks = blocks or (math.ceil(k / s),) * 2
    kernel, *rest = conv.get_weights()
    stem = layers.Conv2D(conv.filters, blocks, padding="valid", activation=conv.activation,
                         use_bias=conv.use_bias, name=f"{conv.name}_s2d")
    x = stem(x)
    stem.set_weights([space_to_depth_kernel(kernel, s, offsets, blocks)] + rest)
    tail = keras.Model(own_node(model, conv).output_tensors, model.outputs,
                       name=f"{model.name}_tail")
    return tail(x)


def space_to_depth_kernel(kernel, s, offsets=(0, 0), blocks=None):
    """[k, k, C, F] -> [kb_h, kb_w, s*s*C, F]: tap (by*s+dy, bx*s+dx) at channel
    (dy*s+dx)*C+c, tf.nn.space_to_depth's channel order; the old kernel starts at `offsets`
    (rows, columns) inside the blocks, zeros elsewhere. blocks: (kb_h, kb_w), default
    ceil(k / s) each."""
    k, _, channels, filters = kernel.shape
    kbh, kbw = blocks or (math.ceil(k / s),) * 2
    padded = np.zeros((kbh * s, kbw * s, channels, filters), kernel.dtype)
    padded[offsets[0]:offsets[0] + k, offsets[1]:offsets[1] + k] = kernel
    blocks = padded.reshape(kbh, s, kbw, s, channels, filters).transpose(0, 2, 1, 3, 4, 5)
    return blocks.reshape(kbh, kbw, s * s * channels, filters)


def input_layout(metadata):
    """The input layout recorded in a .tflite's mobilekit metadata (None: plain images)."""
    return (metadata or {}).get(LAYOUT_KEY)


def apply_input_layout(batch, layout):
    """Images [N, H, W, C] -> the layout's input (pad or crop, then space-to-depth);
    `layout` None returns the images unchanged."""
    if not layout:
        return batch
    batch = np.asarray(batch)
    s = int(layout["space_to_depth"])
    (top, bottom), (left, right) = layout["pad"]
    batch = np.pad(batch, [(0, 0), (max(top, 0), max(bottom, 0)),
                           (max(left, 0), max(right, 0)), (0, 0)])
    n, hp, wp, c = batch.shape
    hp, wp = hp + min(bottom, 0), wp + min(right, 0)
    batch = batch[:, :hp, :wp]
    blocks = batch.reshape(n, hp // s, s, wp // s, s, c).transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(blocks.reshape(n, hp // s, wp // s, s * s * c))
