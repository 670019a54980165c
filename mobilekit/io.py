"""File I/O shared by every part: atomic writes (a killed process never leaves a half-written
file) and loading .keras models (QAT models included) with one clear error for bad files."""
import json
import os
import tempfile
import zipfile
from pathlib import Path


def write_atomic(path, text, mode="w"):
    """Write a file so that readers never see it half-written (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path, obj):
    return write_atomic(path, json.dumps(obj, indent=2) + "\n")


def load_keras(path):
    """Load a .keras file (QAT models too); a corrupt file is a ValueError, not a traceback."""
    from mobilekit.keras import keras

    _register_custom_layers()
    try:
        with zipfile.ZipFile(path) as zf:
            config_text = zf.read("config.json").decode("utf-8")
    except (zipfile.BadZipFile, KeyError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a valid .keras file ({exc})") from None
    try:
        if "Quantize" in config_text:
            from mobilekit.compress.qat import qat_scope

            with qat_scope():
                return keras.models.load_model(path, compile=False)
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # noqa: BLE001  (any load failure means a bad file here)
        rebuilt = _rebuild_qat_run_model(Path(path)) if "Quantize" in config_text else None
        if rebuilt is not None:
            return rebuilt
        raise ValueError(f"cannot load {path}: {str(exc).splitlines()[0][:300]}") from None


def _register_custom_layers():
    """Import every module that registers custom layers, so that any mobilekit .keras file
    loads whatever the caller imported before (else Keras fails with "'str' object is not
    callable" on the first unknown layer)."""
    import mobilekit.detection.postprocess  # noqa: F401  (DecodeDetections)
    import mobilekit.export.delegable  # noqa: F401  (int8 forms that QAT trains in place)
    import mobilekit.layers.crelu  # noqa: F401
    import mobilekit.layers.ghost  # noqa: F401
    import mobilekit.layers.shift  # noqa: F401
    import mobilekit.zoo  # noqa: F401  (the builders' own layers)


def _rebuild_qat_run_model(path):
    """A QAT model of a run directory: rebuilt from config.json, weights from model.weights.h5."""
    config_path = path.parent / "config.json"
    weights = path.with_name(f"{path.stem}.weights.h5")
    if not (config_path.is_file() and weights.is_file()):
        return None
    config = json.loads(config_path.read_text())
    if not config.get("qat"):
        return None
    from mobilekit.compress.qat import quantize_model
    from mobilekit.zoo.registry import create_model

    if config.get("task") == "detection":
        from mobilekit.detection.train import model_kwargs

        kwargs = model_kwargs(config)
    else:
        kwargs = config.get("model_kwargs", {})
    model = quantize_model(create_model(config["model"], **kwargs))
    model.load_weights(weights)
    return model
