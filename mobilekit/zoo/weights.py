"""Import weights from a keras.applications model file: one the user has (a PATH), or
keras.applications' own published ImageNet file (`weights="imagenet"`).

A PATH is a local `.keras` / `.h5` file, either a whole saved model or a weights-only file
of the matching keras.applications architecture. "imagenet" fetches the file
keras.applications itself would load (same URL, same file hash where Keras publishes one:
MobileNet v3 and EfficientNet; it publishes none for MobileNet v1/v2) with Keras' own
downloader into Keras' cache (~/.keras/models), and uses the cached copy afterwards.
MOBILEKIT_WEIGHTS_URL replaces the origin https://storage.googleapis.com/ (a mirror, or a
loopback server in tests).

Weights are matched layer by layer, in graph order, between the weight-bearing layers of
both models (Conv2D, DepthwiseConv2D, BatchNormalization, Dense); a 1x1 Conv2D classifier
maps onto our Dense head. Preprocessing layers inside the source (Rescaling, Normalization) are not
imported: in mobilekit, normalisation belongs to the input pipeline (`PREPROCESSING`).

A target with another class count keeps every layer but the classifier, which stays newly
initialised (a new head); a target without top takes the backbone only.
"""
import hashlib
import os
from dataclasses import dataclass
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


# The input scaling each family's ImageNet weights were trained with, as (mean, std) in
# 0..255 pixel units: MobileNets take [-1, 1]; EfficientNet has Rescaling + ImageNet
# mean/std normalisation inside the keras.applications model.
PREPROCESSING = {
    "mobilenet": ([127.5] * 3, [127.5] * 3),
    "efficientnet": ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]),
}
KERAS_ORIGIN = "https://storage.googleapis.com/"
URL_ENV = "MOBILEKIT_WEIGHTS_URL"
# The published grids (keras.applications' docs and file names).
V1_GRID = {"alpha": (0.25, 0.5, 0.75, 1.0), "resolution": (128, 160, 192, 224)}
V2_GRID = {"alpha": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), "resolution": (96, 128, 160, 192, 224)}
V3_ALPHAS = {False: (0.75, 1.0), True: (1.0,)}  # minimalistic -> published alphas


@dataclass(frozen=True)
class WeightsFile:
    """One published ImageNet weights file: what to fetch and how to check it."""
    file_name: str
    url: str
    file_hash: str | None  # Keras' published md5; None where keras.applications has none
    note: str = ""         # why this file (e.g. the nearest published resolution)


def imagenet_file(name, alpha=1.0, resolution=224, minimalistic=False, base_url=None):
    """The keras.applications ImageNet file for a zoo model, or a ValueError saying what is
    published. URL bases and hashes are read from keras.applications' own source."""
    from tf_keras.src.applications import efficientnet, mobilenet, mobilenet_v2, mobilenet_v3

    alpha = float(alpha)
    note = ""
    if name in ("mobilenet_v1", "mobilenet_v2"):
        grid = V1_GRID if name == "mobilenet_v1" else V2_GRID
        _check_published(name, "alpha", alpha, grid["alpha"])
        rows = resolution if resolution in grid["resolution"] else 224
        if rows != resolution:
            note = f"no {resolution} px file; the 224 px one (its weights fit any size)"
        if name == "mobilenet_v1":
            text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
            file_name, base = f"mobilenet_{text}_{rows}_tf.h5", mobilenet.BASE_WEIGHT_PATH
        else:
            file_name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}.h5"
            base = mobilenet_v2.BASE_WEIGHT_PATH
        file_hash = None
    elif name in ("mobilenet_v3_large", "mobilenet_v3_small"):
        _check_published(f"{name}{' (minimalistic)' if minimalistic else ''}", "alpha", alpha,
                         V3_ALPHAS[bool(minimalistic)])
        key = f"{name[-5:]}{'_minimalistic' if minimalistic else ''}_224_{alpha}_float"
        file_name, base = f"weights_mobilenet_v3_{key}.h5", mobilenet_v3.BASE_WEIGHT_PATH
        file_hash = mobilenet_v3.WEIGHTS_HASHES[key][0]
    elif name in KERAS_APPLICATIONS:  # efficientnet_b0 .. b3
        variant = name[-2:]
        file_name, base = f"efficientnet{variant}.h5", efficientnet.BASE_WEIGHTS_PATH
        file_hash = efficientnet.WEIGHTS_HASHES[variant][0]
    else:
        raise ValueError(f"no published Keras weights for {name}; --weights imagenet exists for "
                         f"{', '.join(sorted(KERAS_APPLICATIONS))} (or give a local file)")
    url = base + file_name
    base_url = base_url or os.environ.get(URL_ENV)
    if base_url and url.startswith(KERAS_ORIGIN):
        url = base_url.rstrip("/") + "/" + url[len(KERAS_ORIGIN):]
    return WeightsFile(file_name, url, file_hash, note)


def _check_published(name, what, value, published):
    if value not in published:
        raise ValueError(f"no published Keras weights for {name} at {what} {value:g}; "
                         f"published: {', '.join(f'{v:g}' for v in published)}")


def fetch(weights_file, cache_dir=None):
    """The local path of `weights_file`: Keras' cache, else downloaded there by Keras'
    get_file (hash-checked where Keras publishes a hash). Offline: one clear error."""
    base = Path(cache_dir or "~/.keras").expanduser()
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        pass
    if not os.access(base, os.W_OK):
        base = Path("/tmp/.keras")  # where Keras' get_file then goes
    cache = base / "models"
    try:
        return Path(keras.utils.get_file(weights_file.file_name, weights_file.url,
                                         file_hash=weights_file.file_hash,
                                         cache_subdir="models", cache_dir=str(base)))
    except ValueError as exc:  # Keras: the file hash does not match
        raise ValueError(f"{weights_file.file_name} from {weights_file.url} failed its hash "
                         f"check ({str(exc).splitlines()[0]}); delete it from {cache} and "
                         "retry") from None
    except Exception as exc:  # noqa: BLE001  (Keras raises a bare Exception when offline)
        raise WeightsUnavailable(
            f"cannot download {weights_file.file_name} from {weights_file.url} ({exc}); "
            f"offline? fetch that URL elsewhere and put the file at "
            f"{cache / weights_file.file_name} (or pass --weights PATH)") from None


class WeightsUnavailable(FileNotFoundError):
    """The published file is neither cached nor downloadable (the CLI: one Error line)."""


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(name, weights, alpha=1.0, resolution=224, minimalistic=False,
                    cache_dir=None):
    """(local path, record) for weights="imagenet" or a PATH; the record (source, file, url,
    Keras hash, sha256) goes into a run's config.json."""
    if str(weights) == "imagenet":
        spec = imagenet_file(name, alpha, resolution, minimalistic)
        path = fetch(spec, cache_dir)
        record = {"source": "imagenet", "file": spec.file_name, "url": spec.url,
                  "keras_md5": spec.file_hash}
        if spec.note:
            record["note"] = spec.note
    else:
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"--weights {str(weights)!r}: no such file (expected "
                                    "'imagenet' or a .h5/.keras file)")
        record = {"source": "path", "file": str(path)}
    record["sha256"] = sha256(path)
    return path, record


def preprocessing(name):
    """(mean, std) in 0..255 units that `name`'s ImageNet weights expect."""
    return PREPROCESSING["efficientnet" if name.startswith("efficientnet") else "mobilenet"]


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
    # The file's own head is unknown: the target's, else ImageNet's 1000 classes, else none.
    tries = [build_kwargs, {**build_kwargs, "num_classes": 1000, "include_top": True},
             {**build_kwargs, "include_top": False}]
    for kwargs in tries:
        source = keras_application(name, target.inputs[0].shape[1:], **kwargs)
        try:
            source.load_weights(path)
            return source
        except Exception as exc:  # noqa: BLE001  (a mismatch: try the next head)
            error = exc
    raise ValueError(f"cannot read weights from {path.name} into keras.applications."
                     f"{KERAS_APPLICATIONS[name]}: {str(error).splitlines()[0][:300]}")


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
    """Copy weights from `source` to `target`, matching weight-bearing layers in order; a
    classifier of another size (class count) keeps its new initialisation, and a target
    without top takes the leading (backbone) layers. Returns the number of layers copied."""
    src, dst = _weighted_layers(source), _weighted_layers(target)
    if len(dst) > len(src) or (len(dst) < len(src) and isinstance(dst[-1], layers.Dense)):
        raise ValueError(f"{source.name} has {len(src)} weight-bearing layers, {target.name} "
                         f"has {len(dst)}: not the same architecture")
    pairs = list(zip(src, dst))
    if len(src) == len(dst) and not _fits(*pairs[-1]) and isinstance(dst[-1], layers.Dense):
        pairs = pairs[:-1]  # another class count: a new head on the imported backbone
    for s, d in pairs:
        d.set_weights(_convert(s, d))
    return len(pairs)


def _fits(src_layer, dst_layer):
    try:
        _convert(src_layer, dst_layer)
        return True
    except ValueError:
        return False


def classifier(model):
    """The model's classifier: its last weight-bearing layer when that is a Dense, else None."""
    found = _weighted_layers(model)
    return found[-1] if found and isinstance(found[-1], layers.Dense) else None


def head_plan(source_classes, target_classes):
    """What match_head does with a classifier trained on `source_classes`."""
    source_classes, target_classes = list(source_classes), list(target_classes)
    if source_classes == target_classes:
        return "kept"
    return "reordered" if sorted(source_classes) == sorted(target_classes) else "new"


def match_head(model, source_classes, target_classes):
    """Make an imported classifier answer in the target's class order. A class count that
    matches says nothing about the classes themselves: a source trained on the same names
    in another order (a folder dataset lists its classes alphabetically, the synthetic set
    in its own order) would predict a permutation, below chance. Same names in the same
    order: kept; the same names in another order: the head's columns reordered by name;
    other names: a new, freshly initialised head. Returns "kept", "reordered" or "new"."""
    plan = head_plan(source_classes, target_classes)
    head = classifier(model)
    if plan == "kept" or head is None:
        return "kept"
    if plan == "reordered":
        order = [list(source_classes).index(name) for name in target_classes]
        head.set_weights([w[..., order] for w in head.get_weights()])
        return "reordered"
    fresh = [head.kernel_initializer(head.kernel.shape)]
    if head.use_bias:
        fresh.append(head.bias_initializer(head.bias.shape))
    head.set_weights([w.numpy() for w in fresh])
    return "new"


def import_weights(model, path, name=None, **build_kwargs):
    """Load a local keras.applications file into `model` (a zoo model built to match);
    returns the number of weight-bearing layers copied."""
    source = _load_source(path, model, name, build_kwargs)
    return transfer_weights(source, model)
