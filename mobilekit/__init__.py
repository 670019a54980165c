"""mobilekit: take a mobile vision network from design to a measured latency.

Importing mobilekit selects Keras 2 (tf_keras) for the whole process: tfmot only
accepts tf_keras models, and ``tf.keras`` must mean the same thing in every module.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

__all__ = ["create_model", "list_models", "profile_model", "get_card", "__version__"]


def __getattr__(name):
    # Lazy: `mobilekit --help` and the log parser must not pay TensorFlow's import time.
    if name in ("create_model", "list_models", "get_card"):
        from mobilekit.zoo import registry

        return getattr(registry, name)
    if name == "profile_model":
        from mobilekit.profile import profile_model

        return profile_model
    raise AttributeError(f"module 'mobilekit' has no attribute {name!r}")
