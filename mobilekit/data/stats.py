"""Per-channel mean and std of a dataset's training images (0..255 pixel units)."""
import numpy as np

from mobilekit.data import pipeline

STATS_SAMPLE = 2000  # images read for the statistics of a large dataset


def channel_stats(source, resolution, limit=STATS_SAMPLE):
    """(mean[3], std[3]) over the EVAL-cropped base images of the first `limit` examples."""
    if source.images is not None:
        images = source.images[:limit]
        # Float64 sums in chunks: exact enough, and no float copy of the whole set.
        return _moments((images[i:i + 256] for i in range(0, len(images), 256)))
    tf = pipeline.tf

    def crop(image, label):
        return tf.image.resize_with_crop_or_pad(image, resolution, resolution)

    ds = pipeline.base_dataset(source, resolution).take(limit).map(crop).batch(64)
    return _moments(ds.as_numpy_iterator())


def _moments(batches):
    total = np.zeros(3)
    total_sq = np.zeros(3)
    count = 0
    for batch in batches:
        pixels = batch.reshape(-1, 3).astype(np.float64)
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
        count += len(pixels)
    if count == 0:
        raise ValueError("no images to compute statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 1e-6))
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]
