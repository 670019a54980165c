"""tf.data transforms: decode, resize/crop, augment, normalise, batch.

Every image is first brought to a square uint8 "base" image (shorter side resized to
resolution / EVAL_CROP, centre-cropped), which is what gets cached. The EVAL transform
centre-crops `resolution` from it (the usual 87.5 % crop); the TRAIN transform takes a
random resized crop, a horizontal flip and a colour jitter. Both end with
(pixel - mean) / std, mean and std per channel in 0..255 pixel units.

Training randomness is stateless, seeded per element from `tf.data.Dataset.random(seed)`,
so a seed fixes every crop, flip and jitter while each epoch still differs.
"""
import math

from mobilekit.data.specs import filter_records, parse_record
from mobilekit.keras import tf

AUTOTUNE = tf.data.AUTOTUNE
EVAL_CROP = 0.875
CACHE_LIMIT_BYTES = 2 << 30     # cache base images in memory below this size
AREA_RANGE = {"synthetic": (0.75, 1.0), "default": (0.25, 1.0)}
ASPECT_RANGE = (3 / 4, 4 / 3)
BRIGHTNESS, CONTRAST, SATURATION = 0.15, (0.75, 1.25), (0.75, 1.25)


def base_size(source, resolution):
    return resolution if source.native_resolution else math.ceil(resolution / EVAL_CROP)


def raw_dataset(source):
    """(uint8 image HWC of any size, int32 label) elements of a source, in a fixed order."""
    if source.images is not None:
        return tf.data.Dataset.from_tensor_slices((source.images, source.labels))
    if source.files:
        ds = tf.data.Dataset.from_tensor_slices((source.files, source.labels))
        return ds.map(lambda path, label: (decode(tf.io.read_file(path)), label),
                      num_parallel_calls=AUTOTUNE)
    if source.records:
        ds = filter_records(tf.data.TFRecordDataset(source.records), source.record_filter)
        ds = ds.map(parse_record, num_parallel_calls=AUTOTUNE)
        return ds.map(lambda data, label: (decode(data), label), num_parallel_calls=AUTOTUNE)
    return source.tfds_dataset.map(lambda image, label: (_to_rgb(image), tf.cast(label, tf.int32)))


def decode(data):
    """JPEG / PNG / BMP / GIF (first frame) bytes -> uint8 RGB."""
    return tf.io.decode_image(data, channels=3, expand_animations=False)


def _to_rgb(image):
    image = tf.convert_to_tensor(image)
    return tf.image.grayscale_to_rgb(image) if image.shape[-1] == 1 else image


def to_base(image, size):
    """Resize the shorter side to `size` and centre-crop a size x size square (uint8)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.reduce_min(shape)
    new = tf.cast(tf.math.ceil(shape * scale), tf.int32)
    image = tf.image.resize(image, new, antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, size, size)
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def eval_transform(image, resolution, mean, std):
    """The EVAL transform of a base image: centre crop to `resolution`, normalise."""
    image = tf.image.resize_with_crop_or_pad(image, resolution, resolution)
    return normalize(tf.cast(image, tf.float32), mean, std)


def train_transform(image, seed, resolution, mean, std, area_range):
    """Random resized crop, horizontal flip and colour jitter of a base image, normalised."""
    seeds = tf.random.experimental.stateless_split(seed, 5)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seeds[0],
        min_object_covered=0.0, aspect_ratio_range=ASPECT_RANGE, area_range=area_range,
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(tf.cast(image, tf.float32) / 255.0, (resolution, resolution))
    image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    image = tf.image.stateless_random_brightness(image, BRIGHTNESS, seeds[2])
    image = tf.image.stateless_random_contrast(image, *CONTRAST, seeds[3])
    image = tf.image.stateless_random_saturation(image, *SATURATION, seeds[4])
    image = tf.clip_by_value(image, 0.0, 1.0) * 255.0
    image.set_shape((resolution, resolution, 3))
    return normalize(image, mean, std)


def normalize(image, mean, std):
    return (image - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


def base_dataset(source, resolution):
    """Square uint8 base images, cached in memory when they fit."""
    size = base_size(source, resolution)
    ds = raw_dataset(source)
    if not source.native_resolution:
        ds = ds.map(lambda image, label: (to_base(image, size), label), num_parallel_calls=AUTOTUNE)
        # Last line of defence: a file that passed the up-front checks but fails to decode is
        # dropped, not allowed to end the epoch.
        ds = ds.ignore_errors(log_warning=True)
    if source.num_examples * size * size * 3 <= CACHE_LIMIT_BYTES:
        ds = ds.cache()
    return ds


def build(source, resolution, batch_size, training, seed, mean, std, drop_remainder=False):
    ds = base_dataset(source, resolution)
    if training:
        area = AREA_RANGE.get(source.kind, AREA_RANGE["default"])
        ds = ds.shuffle(min(source.num_examples, 20000), seed=seed, reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda pair, s: (train_transform(pair[0], s, resolution, mean, std, area), pair[1]),
            num_parallel_calls=AUTOTUNE)
    else:
        ds = ds.map(lambda image, label: (eval_transform(image, resolution, mean, std), label),
                    num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options).prefetch(AUTOTUNE)
