"""The one place that imports Keras: tf_keras (Keras 2), as tfmot requires."""
import mobilekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402

layers = keras.layers
register = keras.saving.register_keras_serializable

__all__ = ["tf", "keras", "layers", "register"]
