"""Import weights from a keras.applications model file the user already has.

Nothing is downloaded: the user passes a local `.keras` / `.h5` file, either a whole saved
model or a weights-only file of the matching keras.applications architecture. Weights are
matched layer by layer, in graph order, between the weight-bearing layers of both models
(Conv2D, DepthwiseConv2D, BatchNormalization, Dense); a 1x1 Conv2D classifier maps onto our
Dense head. Preprocessing layers inside the source (Rescaling, Normalization) are not
imported: in mobilekit, normalisation belongs to the input pipeline.
"""
from pathlib import Path

from mobilekit.keras import keras, layers

WEIGHTED = (layers.Conv2D, layers.DepthwiseConv2D, layers.BatchNormalization, layers.Dense)
SKIPPED = (layers.Normalization, layers.Rescaling)

# zoo name -> keras.applications constructor (for weights-only files).
KERAS_APPLICATIONS = {
    "mobilenet_v1": "MobileNet",
    "mobilenet_v2": "MobileNetV2",
    "mobilenet_v3_large": "MobileNetV3Large",
    "mobilenet_v3_small": "MobileNetV3Small",
    "efficientnet_b0": "EfficientNetB0",
    "efficientnet_b1": "EfficientNetB1",
    "efficientnet_b2": "EfficientNetB2",
    "efficientnet_b3": "EfficientNetB3",
}


def keras_application(name, input_shape, num_classes=1000, include_top=True, alpha=1.0,
                      minimalistic=False):
    """The keras.applications twin of a zoo model, randomly initialised (weights=None)."""
    if name not in KERAS_APPLICATIONS:
        raise ValueError(f"no keras.applications twin for {name!r}; available for: "
                         f"{', '.join(sorted(KERAS_APPLICATIONS))}")
    ctor = getattr(keras.applications, KERAS_APPLICATIONS[name])
    kwargs = dict(input_shape=tuple(input_shape), include_top=include_top, weights=None,
                  classes=num_classes)
    if name.startswith("mobilenet"):
        kwargs["alpha"] = alpha
    if name.startswith("mobilenet_v3"):
        kwargs.update(minimalistic=minimalistic, include_preprocessing=False)
    return ctor(**kwargs)


def _weighted_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(_weighted_layers(layer))
        elif isinstance(layer, WEIGHTED) and layer.weights:
            found.append(layer)
    return found


def _load_source(path, target, name, build_kwargs):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix not in (".h5", ".keras", ".hdf5"):
        raise ValueError(f"weights must be a .h5 or .keras file; got {path.name}")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception:
        pass  # not a whole model: a weights-only file of the keras.applications twin
    if name is None:
        raise ValueError(f"{path.name} holds weights only; say which model it belongs to")
    source = keras_application(name, target.inputs[0].shape[1:], **build_kwargs)
    try:
        source.load_weights(path)
    except Exception as exc:
        raise ValueError(f"cannot read weights from {path.name} into keras.applications."
                         f"{KERAS_APPLICATIONS[name]}: {exc}") from exc
    return source


def _convert(src_layer, dst_layer):
    values = src_layer.get_weights()
    wanted = [tuple(w.shape) for w in dst_layer.weights]
    if [v.shape for v in values] == wanted:
        return values
    # 1x1 conv classifier -> Dense: (1, 1, in, out) kernels reshape onto (in, out).
    if isinstance(dst_layer, layers.Dense) and isinstance(src_layer, layers.Conv2D):
        if len(values) == len(wanted) and all(v.size == _size(s) for v, s in zip(values, wanted)):
            return [v.reshape(s) for v, s in zip(values, wanted)]
    raise ValueError(f"layer {src_layer.name!r} {[v.shape for v in values]} does not fit "
                     f"{dst_layer.name!r} {wanted}")


def _size(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def transfer_weights(source, target):
    """Copy weights from `source` to `target`, matching weight-bearing layers in order."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    if len(src) != len(dst):
        raise ValueError(f"{source.name} has {len(src)} weight-bearing layers, {target.name} "
                         f"has {len(dst)}: not the same architecture")
    for s, d in zip(src, dst):
        d.set_weights(_convert(s, d))
    return len(dst)


def import_weights(model, path, name=None, **build_kwargs):
    """Load a local keras.applications file into `model` (a zoo model built to match)."""
    source = _load_source(path, model, name, build_kwargs)
    return transfer_weights(source, model)
