"""The one place that imports Keras: tf_keras (Keras 2), as tfmot requires."""
import mobilekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

layers = keras.layers
register = keras.saving.register_keras_serializable


def own_node(model, layer):
    """`layer`'s node in `model`'s own graph (its input_tensors, output_tensors): a layer
    shared with clones has one node per model."""
    for index, node in enumerate(layer._inbound_nodes):
        if f"{layer.name}_ib-{index}" in model._network_nodes:
            return node
    raise ValueError(f"layer {layer.name!r} is not part of model {model.name!r}")


__all__ = ["tf", "keras", "layers", "register", "own_node"]
