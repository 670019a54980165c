"""Dataset SPEC strings and the sources behind them.

  synthetic[:key=value,...]   the embedded procedural dataset (keys: train, val, seed, classes)
  DIR                         class sub-folders of images (or DIR/train + DIR/val with them)
  tfrecord:GLOB               TF-slim style records: image/encoded (bytes), image/class/label (int64)
  tfds:NAME                   a tensorflow-datasets dataset already prepared on disk

A source yields (uint8 image HWC, int32 label) elements, undecoded files decoded lazily.
"""
import glob
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilekit.data import synthetic

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TFRECORD_KEYS = {"image": "image/encoded", "label": "image/class/label"}
VAL_EVERY = 10  # folder/tfrecord without a split of their own: 1 in 10 goes to val


@dataclass
class Source:
    """One split of a dataset, before any transform."""
    kind: str
    class_names: list
    num_examples: int
    images: np.ndarray | None = None      # synthetic: uint8 NHWC in memory
    labels: np.ndarray | None = None
    files: list = field(default_factory=list)   # folder: image paths
    records: list = field(default_factory=list)  # tfrecord: record files
    record_filter: tuple | None = None    # tfrecord: (modulus, keep remainder in or out)
    tfds_dataset: object = None
    skipped: int = 0
    native_resolution: bool = False       # images already at the requested size

    @property
    def num_classes(self):
        return len(self.class_names)


def parse_spec(spec):
    """(kind, argument) of a SPEC string; raises ValueError naming the accepted forms."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("data spec is empty; accepted: synthetic, DIR, tfrecord:GLOB, tfds:NAME")
    head, _, rest = spec.partition(":")
    if head == "synthetic":
        return "synthetic", _synthetic_options(rest)
    if head in ("tfrecord", "tfds") and rest:
        return head, rest
    if head in ("tfrecord", "tfds"):
        raise ValueError(f"data spec {spec!r} needs an argument: {head}:GLOB or {head}:NAME")
    return "folder", spec


def _synthetic_options(text):
    options = dict(synthetic.DEFAULTS)
    for item in filter(None, text.split(",")):
        key, eq, value = item.partition("=")
        if key not in options or not eq:
            raise ValueError(f"synthetic option {item!r} not understood; accepted: "
                             f"{', '.join(f'{k}=INT' for k in options)}")
        try:
            options[key] = int(value)
        except ValueError:
            raise ValueError(f"synthetic option {key} must be an integer; got {value!r}") from None
    return options


def open_source(spec, split, resolution):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    kind, arg = parse_spec(spec)
    return {"synthetic": _synthetic_source, "folder": _folder_source,
            "tfrecord": _tfrecord_source, "tfds": _tfds_source}[kind](arg, split, resolution)


def _synthetic_source(options, split, resolution):
    images, labels = synthetic.generate(split, resolution, options[split], options["seed"],
                                        options["classes"])
    names = list(synthetic.CLASS_NAMES[:options["classes"]])
    return Source("synthetic", names, len(labels), images=images, labels=labels,
                  native_resolution=True)


# ---- folders of class sub-folders -------------------------------------------------------

def _folder_source(path, split, resolution):
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data folder {path!r} does not exist (accepted specs: "
                                "synthetic, DIR, tfrecord:GLOB, tfds:NAME)")
    if not root.is_dir():
        raise NotADirectoryError(f"data spec {path!r} is a file, not a folder of class sub-folders")
    split_dir = _split_dir(root, split)
    class_root = split_dir or root
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"data folder {str(class_root)!r} has no class sub-folders "
                         "(expected DIR/<class>/<image files>)")
    files, labels, skipped = [], [], 0
    for label, name in enumerate(classes):
        good, bad = scan_images(class_root / name)
        skipped += bad
        if not good:
            raise ValueError(f"class folder {str(class_root / name)!r} has no readable images "
                             f"(accepted: {', '.join(IMAGE_EXTENSIONS)})")
        if split_dir is None:
            good = _hold_out(good, split)
        files += good
        labels += [label] * len(good)
    if skipped:
        warnings.warn(f"skipped {skipped} corrupt or non-image file(s) under {str(class_root)!r}",
                      stacklevel=2)
    if not files:
        raise ValueError(f"data folder {path!r} has no images for split {split!r}")
    return Source("folder", classes, len(files), files=[str(f) for f in files],
                  labels=np.asarray(labels, np.int32), skipped=skipped)


def _split_dir(root, split):
    names = ("train",) if split == "train" else ("val", "validation")
    if not (root / "train").is_dir():
        return None
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise ValueError(f"data folder {str(root)!r} has train/ but no val/ or validation/ folder")


def _hold_out(files, split):
    """Deterministic split of one class's files (name order): the last 1 in 10 (at least
    one when there are two or more) is validation."""
    n_val = max(1, len(files) // VAL_EVERY) if len(files) >= 2 else 0
    cut = len(files) - n_val
    return files[:cut] if split == "train" else files[cut:]


_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"),
          (b"GIF89a", ".gif"), (b"BM", ".bmp"))


def scan_images(folder):
    """(sorted image paths that look whole, count of files skipped as corrupt/non-image).

    Checks the format's signature and, for JPEG/PNG/GIF, its end marker, so a truncated
    file is caught here instead of failing the pipeline mid-epoch.
    """
    good, bad = [], 0
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        if looks_like_image(path):
            good.append(path)
        else:
            bad += 1
    return good, bad


def looks_like_image(path):
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(16)
            f.seek(max(0, size - 1024))
            tail = f.read()
    except OSError:
        return False
    kind = next((ext for magic, ext in _MAGIC if head.startswith(magic)), None)
    if kind is None or size < 32:
        return False
    if kind == ".jpg":
        return b"\xff\xd9" in tail
    if kind == ".png":
        return b"IEND" in tail
    if kind == ".gif":
        return b";" in tail
    return True


# ---- TFRecord ---------------------------------------------------------------------------

def _tfrecord_source(pattern, split, resolution):
    files = sorted(glob.glob(pattern))
    if not files:
        raise FileNotFoundError(f"tfrecord:{pattern} matches no files")
    named = {s: [f for f in files if _record_split(f) == s] for s in SPLITS}
    record_filter = None
    if named["train"] and named[split]:
        chosen = named[split]
    elif named["train"] or named["val"]:
        raise ValueError(f"tfrecord:{pattern} has files named for one split only; name them "
                         "*train* and *val* (or use neither and 1 in 10 records becomes val)")
    else:
        chosen = files
        record_filter = (VAL_EVERY, split == "val")
    labels = _record_labels(chosen, record_filter)
    names = _label_names(Path(chosen[0]).parent, labels)
    return Source("tfrecord", names, len(labels), records=chosen, labels=labels,
                  record_filter=record_filter)


def _record_split(path):
    name = Path(path).name.lower()
    if "train" in name:
        return "train"
    if "val" in name:
        return "val"
    return None


def _record_labels(files, record_filter):
    from mobilekit.keras import tf

    ds = filter_records(tf.data.TFRecordDataset(files), record_filter).map(parse_label_only)
    labels = np.fromiter((int(v) for v in ds.as_numpy_iterator()), np.int32)
    if not len(labels):
        raise ValueError(f"no records in {', '.join(files)}")
    if labels.min() < 0:
        raise ValueError(f"negative {TFRECORD_KEYS['label']} in {', '.join(files)}")
    return labels


def filter_records(ds, record_filter):
    """Keep 1 in `every` records (validation) or the others (training)."""
    if record_filter is None:
        return ds
    from mobilekit.keras import tf

    every, keep_val = record_filter
    ds = ds.enumerate().filter(
        lambda i, _: tf.equal(tf.equal(i % every, every - 1), tf.constant(keep_val)))
    return ds.map(lambda _, record: record)


def parse_label_only(record):
    from mobilekit.keras import tf

    feats = tf.io.parse_single_example(record, {TFRECORD_KEYS["label"]: tf.io.FixedLenFeature([], tf.int64)})
    return tf.cast(feats[TFRECORD_KEYS["label"]], tf.int32)


def parse_record(record):
    from mobilekit.keras import tf

    feats = tf.io.parse_single_example(record, {
        TFRECORD_KEYS["image"]: tf.io.FixedLenFeature([], tf.string),
        TFRECORD_KEYS["label"]: tf.io.FixedLenFeature([], tf.int64)})
    return feats[TFRECORD_KEYS["image"]], tf.cast(feats[TFRECORD_KEYS["label"]], tf.int32)


def _label_names(folder, labels):
    """Class names from labels.txt beside the records (one per line), else "0".."N-1"."""
    path = folder / "labels.txt"
    n = int(labels.max()) + 1
    if path.exists():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if len(names) < n:
            raise ValueError(f"{path} lists {len(names)} classes but a record has label {n - 1}")
        return names
    return [str(i) for i in range(n)]


# ---- tensorflow-datasets ----------------------------------------------------------------

def _tfds_source(name, split, resolution):
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise ValueError(f"tfds:{name} needs the tensorflow-datasets package, which is not "
                         "installed (pip install tensorflow-datasets), and the dataset already "
                         "prepared under TFDS_DATA_DIR; mobilekit never downloads data")
    import tensorflow_datasets as tfds

    builder = tfds.builder(name, data_dir=os.environ.get("TFDS_DATA_DIR"))
    if not builder.is_prepared():
        raise FileNotFoundError(f"tfds:{name} is not prepared under {builder.data_dir}; prepare it "
                                "there first (mobilekit never downloads data)")
    splits = builder.info.splits
    wanted = "train" if split == "train" else next(
        (s for s in ("validation", "val", "test") if s in splits), None)
    if wanted is None or wanted not in splits:
        raise ValueError(f"tfds:{name} has no {split} split; it has {', '.join(splits)}")
    ds = builder.as_dataset(split=wanted, as_supervised=True, shuffle_files=False)
    names = list(builder.info.features["label"].names)
    return Source("tfds", names, splits[wanted].num_examples, tfds_dataset=ds)

