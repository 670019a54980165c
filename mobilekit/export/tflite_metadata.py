"""Standard TFLite metadata: the `TFLITE_METADATA` ModelMetadata flatbuffer that the TFLite
Task Library (ObjectDetector, ImageClassifier) and MediaPipe read, with labels as an
associated file.

Written with the flatbuffers package from the official schema
(tensorflow/tflite-support, tensorflow_lite_support/metadata/metadata_schema.fbs, file
identifier "M001"): the tables below name their slots as the schema numbers them. The
official writer (`tflite-support`, last release 0.4.4) pins protobuf < 4 and would
downgrade the protobuf TensorFlow 2.21 needs, so it is not a dependency; a test checks
these files with its parser and Task Library loader where they are importable (in a
separate environment).

Layout, as the official MetadataPopulator writes it: a buffer holding the ModelMetadata
flatbuffer, referenced by the model's metadata entry "TFLITE_METADATA"; associated files
(labels.txt) in a zip archive appended after the model flatbuffer (a .tflite with
associated files is also a valid zip). mobilekit's own JSON entry (metadata.py) is kept.
"""
import io
import zipfile

import flatbuffers
import numpy as np

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # only features of schema 1.0.0 are used
LABELS_FILE = "labels.txt"

# Enums of metadata_schema.fbs.
TENSOR_AXIS_LABELS, TENSOR_VALUE_LABELS = 2, 3          # AssociatedFileType
RGB = 1                                                  # ColorSpaceType
FEATURE, IMAGE, BOUNDING_BOX = 1, 2, 3                   # ContentProperties union
BOUNDARIES, RATIO = 1, 0                                 # BoundingBoxType, CoordinateType
NORMALIZATION = 1                                        # ProcessUnitOptions union


# ------------------------------------------------------------------ description (plain dicts)
def image_input(mean, std, low=-1.0, high=1.0, name="image"):
    return {"name": name, "description": "Input image to be processed (RGB).",
            "content": ("image", RGB), "normalization": (list(mean), list(std)),
            "stats": (high, low)}


def detector_description(name, input_hw, mean, std, options, labels=("face",)):
    """ModelMetadata for a file with TFLite_Detection_PostProcess outputs (Task Library
    ObjectDetector: location, category, score, number of detections; boxes as
    (ymin, xmin, ymax, xmax) ratios = BoundingBoxProperties index [1, 0, 3, 2])."""
    h, w = input_hw
    return {
        "name": name,
        "description": (f"Face detector ({name}) at {w}x{h} (WxH) with NMS in the graph "
                        f"(TFLite_Detection_PostProcess: score threshold "
                        f"{options['nms_score_threshold']:g}, "
                        f"IoU {options['nms_iou_threshold']:g}, "
                        f"at most {options['max_detections']} detections)."),
        "version": "1", "author": "mobilekit", "license": "as the model's weights",
        "inputs": [image_input(mean, std)],
        "outputs": [
            {"name": "location", "description": "The locations of the detected boxes.",
             "content": ("bbox", [1, 0, 3, 2]), "range": (2, 2)},
            {"name": "category", "description": "The categories of the detected boxes.",
             "content": ("feature",), "range": (2, 2),
             "files": [(LABELS_FILE, "Labels for categories that the model can recognize.",
                        TENSOR_VALUE_LABELS)]},
            {"name": "score", "description": "The scores of the detected boxes.",
             "content": ("feature",), "range": (2, 2)},
            {"name": "number of detections",
             "description": "The number of the detected boxes.", "content": ("feature",)}],
        "output_groups": [("detection_result", ["location", "category", "score"])],
        "labels": list(labels),
    }


def classifier_description(name, input_hw, mean, std, labels):
    """ModelMetadata for an ImageClassifier-ready classifier (one probability output)."""
    h, w = input_hw
    return {
        "name": name, "description": f"Image classifier ({name}) at {w}x{h} (WxH).",
        "version": "1", "author": "mobilekit", "license": "as the model's weights",
        "inputs": [image_input(mean, std)],
        "outputs": [{"name": "probability", "description": "Probabilities of the labels.",
                     "content": ("feature",), "stats": (1.0, 0.0),
                     "files": [(LABELS_FILE, "Labels for objects that the model can "
                                "recognize.", TENSOR_AXIS_LABELS)]}],
        "output_groups": [],
        "labels": list(labels),
    }


# ------------------------------------------------------------------ flatbuffer writer
def build_model_metadata(desc):
    """The ModelMetadata flatbuffer bytes (identifier M001) of a description dict."""
    b = flatbuffers.Builder(1024)
    inputs = [_tensor(b, t) for t in desc["inputs"]]
    outputs = [_tensor(b, t) for t in desc["outputs"]]
    groups = [_group(b, name, names) for name, names in desc.get("output_groups", [])]
    fields = {0: _string(b, "main"), 2: _vector(b, inputs), 3: _vector(b, outputs)}
    if groups:
        fields[8] = _vector(b, groups)
    subgraph = _object(b, 10, fields)
    top = {0: _string(b, desc["name"]), 1: _string(b, desc["description"]),
           2: _string(b, desc["version"]), 3: _vector(b, [subgraph]),
           4: _string(b, desc["author"]), 5: _string(b, desc["license"]),
           7: _string(b, MIN_PARSER_VERSION)}
    b.Finish(_object(b, 8, top), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _tensor(b, t):
    fields = {0: _string(b, t["name"]), 1: _string(b, t["description"])}
    fields[3] = _content(b, t["content"], t.get("range"))
    if "normalization" in t:
        mean, std = t["normalization"]
        norm = _object(b, 2, {0: _floats(b, mean), 1: _floats(b, std)})
        fields[4] = _vector(b, [_object(b, 2, {0: ("u8", NORMALIZATION), 1: norm})])
    if "stats" in t:
        high, low = t["stats"]
        fields[5] = _object(b, 2, {0: _floats(b, [high]), 1: _floats(b, [low])})
    if t.get("files"):
        fields[6] = _vector(b, [_object(b, 5, {0: _string(b, name), 1: _string(b, text),
                                               2: ("i8", kind)})
                                for name, text, kind in t["files"]])
    return _object(b, 7, fields)


def _content(b, content, value_range):
    kind = content[0]
    if kind == "image":
        props, union = _object(b, 2, {0: ("i8", content[1])}), IMAGE
    elif kind == "bbox":
        props = _object(b, 3, {0: _uints(b, content[1]), 1: ("i8", BOUNDARIES),
                               2: ("i8", RATIO)})
        union = BOUNDING_BOX
    else:
        props, union = _object(b, 0, {}), FEATURE
    fields = {0: ("u8", union), 1: props}
    if value_range is not None:
        fields[2] = _object(b, 2, {0: ("i32", value_range[0]), 1: ("i32", value_range[1])})
    return _object(b, 3, fields)


def _group(b, name, names):
    return _object(b, 2, {0: _string(b, name), 1: _vector(b, [_string(b, n) for n in names])})


def _string(b, text):
    return b.CreateString(str(text))


def _vector(b, offsets):
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b, values):
    return b.CreateNumpyVector(np.asarray(values, np.float32))


def _uints(b, values):
    return b.CreateNumpyVector(np.asarray(values, np.uint32))


def _object(b, num_slots, fields):
    """A table: {slot: offset} for tables / strings / vectors, {slot: (kind, value)} for
    scalars."""
    b.StartObject(num_slots)
    for slot in sorted(fields, reverse=True):
        value = fields[slot]
        if isinstance(value, tuple):
            kind, scalar = value
            {"i8": b.PrependInt8Slot, "u8": b.PrependUint8Slot,
             "i32": b.PrependInt32Slot}[kind](slot, int(scalar), -1 if kind != "u8" else 255)
        else:
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
    return b.EndObject()


# ------------------------------------------------------------------ embedding and reading
def embed_standard_metadata(tflite, desc):
    """Model bytes with the TFLITE_METADATA entry (replacing one already there) and the
    labels zipped after the flatbuffer. Call last: rewriting the model drops the zip."""
    from mobilekit.export.flatbuffer import with_metadata_entry

    # An appended zip (earlier labels) is ignored by the reader and dropped by the rewrite.
    data = with_metadata_entry(tflite, METADATA_NAME, build_model_metadata(desc))
    labels = desc.get("labels")
    if not labels:
        return data
    out = io.BytesIO(data)
    out.seek(0, io.SEEK_END)
    with zipfile.ZipFile(out, "a") as archive:  # what the official populator does
        archive.writestr(LABELS_FILE, "\n".join(labels) + "\n")
    return out.getvalue()


def read_standard_metadata(tflite):
    """(ModelMetadata bytes or None, {associated file name: bytes}) of a .tflite's bytes."""
    from ai_edge_litert import schema_py_generated as schema

    from mobilekit.export.flatbuffer import entry_name

    data = bytes(tflite)
    model = schema.Model.GetRootAs(data, 0)
    raw = None
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry_name(entry.Name()) == METADATA_NAME:
            raw = model.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    files = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            files = {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        pass
    return raw, files
