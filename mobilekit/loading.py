"""Loading .keras models (QAT models and QAT run directories included) with one clear error
for bad files. Above the zoo, layers and compress.qat (it registers their custom layers);
below every task (detection, train, export), which all load through it. It reads run
directories through mobilekit.train.rundir (the run contract, which imports only io)."""
import json
import zipfile
from pathlib import Path


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
    """Import every module below this one that registers custom layers, so that a mobilekit
    .keras file loads whatever the caller imported before (else Keras fails with "'str' object
    is not callable" on the first unknown layer). Layers of a task's own inference form
    (detection's DecodeDetections) register when their module is imported: it sits above this
    one, and its users (Detector.load, the export pipeline) import it before loading."""
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
    from mobilekit.train.rundir import model_kwargs
    from mobilekit.zoo.registry import create_model

    model = quantize_model(create_model(config["model"], **model_kwargs(config)))
    model.load_weights(weights)
    return model
