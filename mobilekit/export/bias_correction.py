"""Bias correction of int8 weight rounding (Nagel et al., "Data-Free Quantization Through
Weight Equalization and Bias Correction", ICCV 2019, sec. 4.2; empirical form).

Rounding a layer's weights to int8 changes its output by conv(x, W_q - W). Its mean over the
data, per output channel, is a systematic shift, not noise, and it is large where the
inputs have a large mean: after ReLUs in networks without BatchNorm (SqueezeNet 1.0 trained
here loses 1.14 +/- 0.23 points from int8 weights alone, float activations). We measure that
shift on calibration images and subtract it from the channel's bias (or add it to the
following BatchNorm's moving mean when the layer has no bias), so the int8 file's outputs
are right on average. The weights are rounded the way the converter rounds them: per output
channel for convolutions, per tensor (or per unit) for Dense.
"""
import contextlib

import numpy as np

from mobilekit.keras import keras, tf

# Images whose layer inputs measure the shifts, and how many go through at once (every
# layer's input of a batch is held at the same time).
SAMPLES = 32
BATCH = 2


def _rounding_error(kernel, channels):
    """W_q - W for symmetric int8 rounding with one scale per output channel (`channels`
    of them, the kernel's trailing axes) or, with channels=1, one per tensor."""
    flat = kernel.reshape(-1, channels)
    scale = np.abs(flat).max(axis=0) / 127
    scale[scale == 0] = 1
    return (np.round(flat / scale) * scale - flat).reshape(kernel.shape)


def _linear_output(layer, inputs, kernel):
    """The layer's linear map (no bias, no activation) of `inputs` with `kernel`."""
    kind = type(layer).__name__
    if kind == "DepthwiseConv2D":
        return tf.nn.depthwise_conv2d(inputs, kernel, (1,) + tuple(layer.strides) + (1,),
                                      layer.padding.upper(), dilations=layer.dilation_rate)
    if kind == "Conv2D":
        return layer.convolution_op(inputs, kernel)
    return tf.tensordot(inputs, kernel, 1)


# Layers may sit in several graphs (export clones share them with the trained model): only
# the nodes of the model at hand count. tf_keras names those "<layer>_ib-<node index>".
def _in_model(model, layer, node):
    return f"{layer.name}_ib-{layer._inbound_nodes.index(node)}" in model._network_nodes


def _input_in(model, layer):
    """`layer`'s input tensor in `model`'s graph."""
    for index, node in enumerate(layer._inbound_nodes):
        if _in_model(model, layer, node):
            return layer.get_input_at(index)
    raise ValueError(f"layer {layer.name} is not connected in {model.name}")


def _next_batch_norm(model, layer):
    """The BatchNormalization layer that is the only consumer of `layer` in `model`."""
    nodes = [node for node in layer._outbound_nodes
             if _in_model(model, node.outbound_layer, node)]
    if len(nodes) == 1 and type(nodes[0].outbound_layer).__name__ == "BatchNormalization":
        return nodes[0].outbound_layer
    return None


def output_shifts(model, images, dense_per_channel=False):
    """{layer name: per-channel mean of conv(x, W_q - W)} for the model's Conv2D,
    DepthwiseConv2D and Dense layers, over `images` (already preprocessed)."""
    targets = [layer for layer in model.layers
               if type(layer).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")]
    if not targets:
        return {}
    probe = keras.Model(model.inputs, [_input_in(model, layer) for layer in targets])
    errors = {}
    for layer in targets:
        kernel = layer.get_weights()[0]
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":  # output channels = input channels x multiplier
            channels = kernel.shape[-2] * kernel.shape[-1]
        else:
            channels = kernel.shape[-1] if kind != "Dense" or dense_per_channel else 1
        errors[layer.name] = tf.constant(_rounding_error(kernel, channels), kernel.dtype)
    images = np.asarray(images, np.float32)
    sums, counts = {}, {}
    for start in range(0, len(images), BATCH):
        inputs = probe(images[start:start + BATCH], training=False)
        inputs = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        for layer, x in zip(targets, inputs):
            out = _linear_output(layer, x, errors[layer.name]).numpy()
            out = out.reshape(-1, out.shape[-1])  # (images x positions, channels)
            sums[layer.name] = sums.get(layer.name, 0.0) + out.sum(axis=0)
            counts[layer.name] = counts.get(layer.name, 0) + len(out)
    return {name: total / counts[name] for name, total in sums.items()}


@contextlib.contextmanager
def corrected_biases(model, images, dense_per_channel=False, samples=SAMPLES):
    """While active, `model`'s biases (or following BatchNorm means) cancel the mean output
    shift of int8 weight rounding; the original weights come back on exit."""
    shifts = output_shifts(model, list(images)[:samples], dense_per_channel)
    saved = []
    try:
        for name, shift in shifts.items():
            layer = model.get_layer(name)
            if getattr(layer, "use_bias", False):
                target, index, sign = layer, 1, -1.0
            else:
                target = _next_batch_norm(model, layer)
                if target is None or not target.center:
                    continue
                # BN output: gamma * (z - mean) / std + beta; z carries +shift.
                index, sign = 2 if target.scale else 1, 1.0
            weights = target.get_weights()
            saved.append((target, [w.copy() for w in weights]))
            weights[index] = weights[index] + sign * shift.astype(weights[index].dtype)
            target.set_weights(weights)
        yield shifts
    finally:
        for target, weights in reversed(saved):
            target.set_weights(weights)
