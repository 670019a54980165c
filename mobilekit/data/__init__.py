"""Datasets: SPEC strings, the embedded synthetic set, tf.data pipelines and statistics.

`load_dataset` is the one entry point: training, evaluation and export calibration all
read images through it, so they all see the same transforms.
"""
from mobilekit.data.specs import SPLITS, open_source, parse_spec

__all__ = ["load_dataset", "dataset_stats", "parse_spec", "SPLITS"]


def load_dataset(spec, split, resolution, batch_size, training, seed=0, mean=None, std=None):
    """(tf.data.Dataset of (float32 normalised NHWC images, int32 labels), info dict).

    training=True applies the TRAIN transform (shuffle + augmentation), otherwise the EVAL
    transform (centre crop) in a fixed order. mean/std (per channel, 0..255 pixel units)
    default to the statistics of the dataset's training split. info has num_classes,
    class_names, mean, std, num_examples, skipped (corrupt files left out), spec, split,
    resolution.
    """
    from mobilekit.data import pipeline

    _check_positive("resolution", resolution)
    _check_positive("batch_size", batch_size)
    source = open_source(spec, split, resolution)
    if mean is None or std is None:
        stats_mean, stats_std = dataset_stats(spec, resolution)
        mean = stats_mean if mean is None else mean
        std = stats_std if std is None else std
    mean, std = _channels("mean", mean), _channels("std", std)
    if min(std) <= 0:
        raise ValueError(f"std must be positive per channel; got {std}")
    ds = pipeline.build(source, resolution, batch_size, training, seed, mean, std)
    info = {"num_classes": source.num_classes, "class_names": list(source.class_names),
            "mean": mean, "std": std, "num_examples": source.num_examples,
            "skipped": source.skipped, "spec": str(spec), "split": split,
            "resolution": resolution}
    return ds, info


_STATS_CACHE = {}


def dataset_stats(spec, resolution):
    """(mean[3], std[3]) of the training split (0..255 pixel units); cached per process."""
    from mobilekit.data.stats import channel_stats

    key = (str(spec), resolution)
    if key not in _STATS_CACHE:
        _STATS_CACHE[key] = channel_stats(open_source(spec, "train", resolution), resolution)
    return _STATS_CACHE[key]


def _check_positive(what, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{what} must be a positive integer; got {value!r}")


def _channels(what, values):
    values = [float(v) for v in (values if hasattr(values, "__len__") else [values])]
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"{what} needs 1 or 3 values (per RGB channel); got {values}")
    return values
