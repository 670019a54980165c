"""Per-layer cost counter: parameters, MACs, activations and a memory-access estimate.

MACs follow the MobileNet/ShuffleNet papers: multiply-accumulates of Conv2D (grouped
included), DepthwiseConv2D, SeparableConv2D and Dense; everything else counts zero.
Memory access is the ShuffleNet v2 "MAC" notion: input + output + weight elements.
Everything is counted from the model itself; nothing is read from a card.
"""
import math

from mobilekit.keras import keras, layers


def _elements(shape):
    """Elements of one sample of a tensor shape (batch dim dropped, None -> 0)."""
    dims = list(shape)[1:]
    if any(d is None for d in dims):
        return 0
    return int(math.prod(dims))


def _shapes(tensor_or_list):
    items = tensor_or_list if isinstance(tensor_or_list, (list, tuple)) else [tensor_or_list]
    return [tuple(t.shape) for t in items]


def _unwrap(layer):
    """tfmot wrappers (QAT, pruning) hold the real layer in `.layer`."""
    while hasattr(layer, "layer") and isinstance(getattr(layer, "layer"), layers.Layer):
        layer = layer.layer
    return layer


def layer_macs(layer, input_shapes, output_shapes):
    """Multiply-accumulates of one call of `layer` for one sample."""
    layer = _unwrap(layer)
    custom = getattr(layer, "count_macs", None)
    if callable(custom):
        return int(custom(input_shapes, output_shapes))
    out = output_shapes[0]
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        cin = input_shapes[0][-1]
        mid = cin * layer.depth_multiplier
        spatial = _elements(out) // out[-1]
        return spatial * mid * kh * kw + spatial * mid * out[-1]
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return _elements(out) * kh * kw
    if isinstance(layer, layers.Conv2DTranspose):
        kh, kw = layer.kernel_size
        cin = input_shapes[0][-1]
        return _elements(input_shapes[0]) * kh * kw * out[-1] // max(cin, 1) * cin
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        cin = input_shapes[0][-1]
        return _elements(out) * kh * kw * cin // layer.groups
    if isinstance(layer, layers.Dense):
        return _elements(out) * input_shapes[0][-1]
    return 0


def _window(layer):
    """(kernel, stride) of a layer that moves a spatial window, else None."""
    layer = _unwrap(layer)
    custom = getattr(layer, "receptive_window", None)
    if callable(custom):
        return custom()
    if isinstance(layer, (layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D)):
        k = (layer.kernel_size[0] - 1) * layer.dilation_rate[0] + 1
        return k, layer.strides[0]
    if isinstance(layer, (layers.MaxPooling2D, layers.AveragePooling2D)):
        return layer.pool_size[0], layer.strides[0]
    return None


def _layer_params(layer):
    return int(sum(math.prod(w.shape) for w in layer.weights))


def profile_model(model, name=None):
    """Profile a functional tf_keras model; returns a JSON-ready dict."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"profile_model needs a tf_keras Model; got {type(model).__name__}")
    rows, field = [], {}  # field: tensor ref -> (receptive field, jump)
    last_map = (1, 1)
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            for t in model.inputs:
                field[t.ref()] = (1, 1)
            continue
        inputs = layer.input if isinstance(layer.input, (list, tuple)) else [layer.input]
        outputs = layer.output if isinstance(layer.output, (list, tuple)) else [layer.output]
        in_shapes, out_shapes = _shapes(inputs), _shapes(outputs)
        if isinstance(layer, keras.Model):
            sub = profile_model(layer)
            macs = sub["macs"]
        else:
            macs = layer_macs(layer, in_shapes, out_shapes)
        rf, jump = max((field.get(t.ref(), (1, 1)) for t in inputs), default=(1, 1))
        window = _window(layer)
        if window is not None:
            k, s = window
            rf, jump = rf + (k - 1) * jump, jump * s
        for t in outputs:
            field[t.ref()] = (rf, jump)
        if len(out_shapes[0]) == 4:
            last_map = (rf, jump)
        params = _layer_params(layer)
        in_el = sum(_elements(s) for s in in_shapes)
        out_el = sum(_elements(s) for s in out_shapes)
        rows.append({
            "name": layer.name,
            "type": type(_unwrap(layer)).__name__,
            "output_shape": [list(s[1:]) for s in out_shapes] if len(out_shapes) > 1
            else list(out_shapes[0][1:]),
            "params": params,
            "macs": int(macs),
            "activations": out_el,
            "memory_access": in_el + out_el + params,
        })
    trainable = int(sum(math.prod(w.shape) for w in model.trainable_weights))
    return {
        "model": name or model.name,
        "input_shape": list(model.inputs[0].shape[1:]),
        "params": int(model.count_params()),
        "trainable_params": trainable,
        "non_trainable_params": int(model.count_params()) - trainable,
        "macs": int(sum(r["macs"] for r in rows)),
        "activations": int(sum(r["activations"] for r in rows)),
        "memory_access": int(sum(r["memory_access"] for r in rows)),
        "receptive_field": int(last_map[0]),
        "output_stride": int(last_map[1]),
        "layers": rows,
    }
