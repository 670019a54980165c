"""Magnitude pruning with tensorflow-model-optimization (reference/quantization.md §1.7, §2.3).

    pruned = prune_model(model, target_sparsity=0.75, end_step=1000, frequency=50)
    pruned.compile(...); pruned.fit(..., callbacks=pruning_callbacks())
    final = strip(pruned)                       # plain layers, sparse kernels
    sparsity_report(final); gzip_size(convert(final, "fp32"))

What tfmot does not do for you (each verified, §2.3):
  * `prune_low_magnitude` wraps the *same* layer objects, so the dense model would be
    pruned too: `prune_model` clones it first.
  * The schedules prune only every `frequency` steps (tfmot default 100): a short
    fine-tune with the default shows 0 % sparsity. The CLI derives it from the run length.
  * `UpdatePruningStep` must be a callback of `fit`, and `strip_pruning` must run before
    export; the flatbuffer does not shrink, only its gzip does.
  * Depthwise kernels are never pruned (tfmot's registry lists no weight for them).
  * The only latency gain is XNNPACK's sparse inference (fp32 only): 1x1 convs with
    >= 2/3 zeros, inside a subgraph that starts with a 3x3 stride-2 conv on 3 channels
    with explicit padding 1 and ends with a global mean. `xnnpack_sparse_layout` rewrites
    stride-2 "same" convolutions to ZeroPadding2D + "valid" (the shape XNNPACK and
    tfmot's `PruneForLatencyOnXNNPack` accept), and `convert_sparse` emits the sparse
    weight encoding that switches XNNPACK to that path.
"""
import gzip

import numpy as np
import tensorflow_model_optimization as tfmot

from mobilekit.compress.graph import Graph, layer_entry, rebuild
from mobilekit.errors import check_choice, check_range
from mobilekit.keras import keras, layers, tf

from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude)

SCHEDULES = ("polynomial", "constant")
_sparsity = tfmot.sparsity.keras
KERNEL_NAMES = ("kernel", "pointwise_kernel", "depthwise_kernel")


def make_schedule(kind, target_sparsity, begin_step=0, end_step=None, frequency=100,
                  initial_sparsity=0.0):
    """A tfmot pruning schedule.

    polynomial: sparsity rises from `initial_sparsity` at `begin_step` to `target_sparsity`
    at `end_step` (required), pruning every `frequency` steps. constant: `target_sparsity`
    from `begin_step` on, re-applied every `frequency` steps (end_step None: until the end).
    """
    check_choice("schedule", kind, SCHEDULES)
    check_range("target_sparsity", target_sparsity, 0, 1, low_inclusive=False,
                high_inclusive=False)
    if not isinstance(frequency, int) or frequency < 1:
        raise ValueError(f"frequency must be a positive integer (steps); got {frequency!r}")
    if kind == "constant":
        return _sparsity.ConstantSparsity(target_sparsity, begin_step,
                                          -1 if end_step is None else end_step, frequency)
    if end_step is None or end_step <= begin_step:
        raise ValueError(f"the polynomial schedule needs end_step > begin_step ({begin_step}); "
                         f"got {end_step!r}")
    check_range("initial_sparsity", initial_sparsity, 0, target_sparsity, low_inclusive=True,
                high_inclusive=False)
    return _sparsity.PolynomialDecay(initial_sparsity, target_sparsity, begin_step, end_step,
                                     frequency=frequency)


def clone_dense(model):
    """An independent copy (new layer objects, same weights) of a functional model."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def is_prunable(layer):
    """Conv2D / Dense / SeparableConv2D (pointwise part) or a layer that declares
    `get_prunable_weights`; depthwise kernels are never pruned (tfmot's registry)."""
    if isinstance(layer, layers.DepthwiseConv2D):
        return False
    if hasattr(layer, "get_prunable_weights"):
        return True
    return isinstance(layer, (layers.Conv2D, layers.Dense, layers.SeparableConv2D))


def prune_model(model, target_sparsity=0.5, schedule="polynomial", begin_step=0, end_step=None,
                frequency=100, initial_sparsity=0.0, xnnpack_policy=False):
    """A copy of `model` whose prunable layers are wrapped in tfmot `PruneLowMagnitude`.

    The original model is left untouched. xnnpack_policy=True applies tfmot's
    `PruneForLatencyOnXNNPack`: only 1x1 convolutions are pruned, and the model must have
    the sparse-inference shape (see `xnnpack_sparse_layout`; the ValueError says what is
    missing). Otherwise every Conv2D / Dense kernel is pruned (custom layers are left
    alone instead of failing tfmot's whole-model wrapper).
    """
    params = {"pruning_schedule": make_schedule(schedule, target_sparsity, begin_step, end_step,
                                                frequency, initial_sparsity)}
    clone = clone_dense(model)
    if xnnpack_policy:
        return _sparsity.prune_low_magnitude(
            clone, pruning_policy=_sparsity.PruneForLatencyOnXNNPack(), **params)

    def wrap(layer):
        return _sparsity.prune_low_magnitude(layer, **params) if is_prunable(layer) else layer

    return keras.models.clone_model(clone, clone_function=wrap)


def pruning_callbacks(log_dir=None):
    """The callbacks `fit` needs for a pruned model (UpdatePruningStep is mandatory)."""
    callbacks = [_sparsity.UpdatePruningStep()]
    if log_dir:
        callbacks.append(_sparsity.PruningSummaries(log_dir=str(log_dir)))
    return callbacks


def is_pruning_wrapped(model):
    return any(isinstance(layer, PruneLowMagnitude) for layer in model.layers)


def strip(model):
    """Remove the pruning wrappers (the kernels keep their zeros); needed before export."""
    return _sparsity.strip_pruning(model) if is_pruning_wrapped(model) else model


def _unwrap(layer):
    return layer.layer if isinstance(layer, PruneLowMagnitude) else layer


def sparsity_report(model):
    """Per-layer kernel sparsity of a (stripped or wrapped) model.

    {"layers": [{name, type, weight, size, zeros, sparsity}], "zeros", "size", "sparsity"}
    over every conv / dense kernel (depthwise included, so its 0 % shows).
    """
    rows = []
    for layer in model.layers:
        inner = _unwrap(layer)
        for weight in inner.weights:
            short = weight.name.split("/")[-1].split(":")[0]
            if short not in KERNEL_NAMES:
                continue
            values = weight.numpy()
            zeros = int(np.count_nonzero(values == 0))
            rows.append({"name": inner.name, "type": type(inner).__name__, "weight": short,
                         "size": int(values.size), "zeros": zeros,
                         "sparsity": round(zeros / values.size, 4)})
    zeros, size = sum(r["zeros"] for r in rows), sum(r["size"] for r in rows)
    return {"layers": rows, "zeros": zeros, "size": size,
            "sparsity": round(zeros / size, 4) if size else 0.0}


def gzip_size(data, level=9):
    """Bytes of `data` (e.g. a .tflite) after gzip: where pruning's size gain shows."""
    return len(gzip.compress(bytes(data), compresslevel=level, mtime=0))


def convert_sparse(model):
    """fp32 .tflite bytes with sparse-encoded weights (converter EXPERIMENTAL_SPARSITY).

    XNNPACK switches to sparse inference only for weights stored this way (a DENSIFY op
    per sparse tensor, which the delegate resolves at load time).
    """
    from mobilekit.export.convert import convert

    return convert(strip(model), "fp32", sparse=True)


def xnnpack_sparse_layout(model, strided_only=True):
    """A copy of `model` where every stride-2 "same" Conv2D / DepthwiseConv2D with an odd
    square kernel k becomes ZeroPadding2D(k // 2) + "valid" convolution (every stride
    when strided_only=False).

    Same output shapes and weights; the padding moves from TensorFlow's asymmetric
    "same" (0 before, 1 after on even inputs) to 1 pixel on each side, which is what
    XNNPACK's sparse (NCHW) path and `PruneForLatencyOnXNNPack` accept. The outputs
    therefore differ slightly: fine-tune after the change (pruning does anyway).
    """
    graph = Graph(model)
    for name in graph.names():
        cfg = graph.layer_config(name)
        if graph.class_name(name) not in ("Conv2D", "DepthwiseConv2D"):
            continue
        kernel, strides = tuple(cfg["kernel_size"]), tuple(cfg["strides"])
        if cfg["padding"] != "same" or (strided_only and strides == (1, 1)) \
                or kernel[0] != kernel[1] \
                or kernel[0] % 2 == 0 or kernel[0] == 1:
            continue
        pad = kernel[0] // 2
        graph.insert_before(name, layer_entry("ZeroPadding2D", f"{name}_pad",
                                              {"padding": ((pad, pad), (pad, pad)),
                                               "trainable": True, "dtype": cfg["dtype"]}))
        cfg["padding"] = "valid"
    return rebuild(graph)
