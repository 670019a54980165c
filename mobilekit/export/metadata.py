"""Self-describing .tflite files: a JSON entry named "mobilekit" in the flatbuffer's metadata.

A TFLite model has a `metadata` list of (name, buffer index) pairs that runtimes ignore
unless they ask for a name. We store one UTF-8 JSON document there:

    {"format": 1, "model": "mobilenet_v2", "quant": "int8", "input_size": [224, 224, 3],
     "mean": [...], "std": [...], "labels": [...], ...}

so an app (or `mobilekit bench`/eval) can preprocess inputs and name outputs without a
side file. Only ai_edge_litert's flatbuffer schema is used (no TensorFlow import).
"""
import json
import os

import numpy as np

METADATA_NAME = "mobilekit"
METADATA_FORMAT = 1


def _load_bytes(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    with open(path_or_bytes, "rb") as f:
        return f.read()


def _check_tflite(data, what="model"):
    # Bytes 4..8 of a TFLite flatbuffer hold the file identifier "TFL3".
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise ValueError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier)")


def build_metadata(model, quant, input_size, labels=None, mean=None, std=None, **extra):
    """The metadata dict written by the exporter; `extra` keys are kept as given."""
    meta = {"format": METADATA_FORMAT, "model": model, "quant": quant,
            "input_size": [int(v) for v in input_size],
            "mean": None if mean is None else [float(v) for v in np.ravel(mean)],
            "std": None if std is None else [float(v) for v in np.ravel(std)],
            "labels": None if labels is None else [str(v) for v in labels]}
    meta.update(extra)
    return meta


def embed_metadata(tflite, metadata):
    """Return the model bytes with `metadata` (a JSON-able dict) stored as entry "mobilekit".

    An existing "mobilekit" entry is replaced; the converter's own entries are kept.
    """
    from mobilekit.export.flatbuffer import with_metadata_entry

    data = _load_bytes(tflite)
    _check_tflite(data)
    payload = json.dumps(metadata, sort_keys=True).encode("utf-8")
    return with_metadata_entry(data, METADATA_NAME, payload)


def read_metadata(path_or_bytes):
    """The "mobilekit" metadata dict of a .tflite file or its bytes; None when absent."""
    from ai_edge_litert import schema_py_generated as schema

    from mobilekit.export.flatbuffer import entry_name

    what = "model" if isinstance(path_or_bytes, (bytes, bytearray, memoryview)) \
        else os.fspath(path_or_bytes)
    data = _load_bytes(path_or_bytes)
    _check_tflite(data, what)
    model = schema.Model.GetRootAs(data, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry_name(entry.Name()) != METADATA_NAME:
            continue
        buffer = model.Buffers(entry.Buffer())
        if buffer.Offset():  # large models keep buffers after the flatbuffer
            raw = data[buffer.Offset():buffer.Offset() + buffer.Size()]
        else:
            raw = buffer.DataAsNumpy().tobytes()
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{what}: corrupt mobilekit metadata ({exc})") from None
    return None
