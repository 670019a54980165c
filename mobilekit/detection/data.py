"""Face annotations (WIDER FACE, FDDB, dlib imglab XML, PASCAL VOC XML) and the FaceBoxes
input pipeline (tf.data: decode, square crop, resize, photometric distortion, flip,
small-face filter, anchor matching).

Data specs: `wider:ROOT` (ROOT holds wider_face_split/ and WIDER_{train,val}/images/),
`fddb:ROOT` (ROOT holds FDDB-folds/ and originalPics/), `xml:FILE_OR_DIR` (dlib imglab or
PASCAL VOC XML; a directory means every *.xml in it, or in its Annotations/ folder; an
image listed by several files keeps its first annotation). Boxes are pixel corner boxes
[x1, y1, x2, y2) of the original image.
"""
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mobilekit.errors import check_choice

SPEC_KINDS = ("wider", "fddb", "xml", "synthetic")
WIDER_SPLITS = ("train", "val")
WIDER_ATTRIBUTES = ("blur", "expression", "illumination", "invalid", "occlusion", "pose")
VOC_CLASSES = ("face", "head")
MIN_FACE = 20  # px at training scale (paper §3.4; the official port uses > 16)


@dataclass
class Sample:
    """One image and its faces. `ignore` marks faces that are neither trained on nor
    counted in evaluation (WIDER "invalid", VOC "difficult", dlib ignore, empty boxes)."""

    image: str
    boxes: np.ndarray  # float32 [K, 4] pixels x1 y1 x2 y2
    ignore: np.ndarray  # bool [K]
    extra: dict = field(default_factory=dict)  # per-format: WIDER attributes, FDDB ellipses


def _sample(image, boxes, ignore, **extra):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    ignore = np.asarray(ignore, bool).reshape(-1)
    # A box with no area cannot be matched or scored: ignore it whatever its flags say.
    ignore = ignore | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    return Sample(str(image), boxes, ignore, extra)


# ---------------------------------------------------------------- WIDER FACE
def parse_wider_gt(gt_file, image_dir):
    """Official `wider_face_{split}_bbx_gt.txt`: name / n / n lines of
    `x y w h blur expression illumination invalid occlusion pose` (one all-zero line
    when n = 0). Invalid faces are kept with ignore=True, as the protocol ignores them."""
    lines = [ln.strip() for ln in Path(gt_file).read_text().splitlines() if ln.strip()]
    samples, i = [], 0
    while i < len(lines):
        name = lines[i]
        try:
            count = int(lines[i + 1])
        except (IndexError, ValueError):
            raise ValueError(f"{gt_file}: expected a face count after {name!r} (line {i + 2})") from None
        rows = [[float(v) for v in ln.split()] for ln in lines[i + 2:i + 2 + max(count, 1)]]
        i += 2 + count
        if count == 0:
            # The official files write one all-zero line for an image without faces.
            if rows and len(rows[0]) == 10 and not any(rows[0]):
                i += 1
            rows = []
        if any(len(r) != 10 for r in rows):
            raise ValueError(f"{gt_file}: face lines of {name!r} must have 10 numbers")
        arr = np.asarray(rows, np.float32).reshape(-1, 10)
        boxes = np.concatenate([arr[:, :2], arr[:, :2] + arr[:, 2:4]], axis=1)
        samples.append(_sample(Path(image_dir) / name, boxes, arr[:, 7] > 0,
                               name=name, attributes=arr[:, 4:].astype(np.int32)))
    return samples


def load_wider(root, split="train"):
    check_choice("WIDER FACE split", split, WIDER_SPLITS)
    root = Path(root)
    gt = root / "wider_face_split" / f"wider_face_{split}_bbx_gt.txt"
    if not gt.exists():
        raise FileNotFoundError(f"WIDER FACE ground truth not found: {gt}")
    return parse_wider_gt(gt, root / f"WIDER_{split}" / "images")


# ---------------------------------------------------------------- FDDB
def ellipse_to_box(major, minor, angle, cx, cy):
    """Axis-aligned bounding box of an FDDB ellipse (radii, angle of the major axis in rad)."""
    c, s = math.cos(angle), math.sin(angle)
    half_w = math.sqrt((major * c) ** 2 + (minor * s) ** 2)
    half_h = math.sqrt((major * s) ** 2 + (minor * c) ** 2)
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def parse_fddb_ellipses(ellipse_file, image_dir):
    """`FDDB-fold-XX-ellipseList.txt`: path (no extension) / n / n lines of
    `major_radius minor_radius angle center_x center_y 1`."""
    lines = [ln.strip() for ln in Path(ellipse_file).read_text().splitlines() if ln.strip()]
    samples, i = [], 0
    while i < len(lines):
        name, count = lines[i], int(lines[i + 1])
        ellipses = np.asarray([[float(v) for v in ln.split()[:5]]
                               for ln in lines[i + 2:i + 2 + count]], np.float64).reshape(-1, 5)
        i += 2 + count
        boxes = [ellipse_to_box(*e) for e in ellipses]
        samples.append(_sample(Path(image_dir) / f"{name}.jpg", boxes, np.zeros(count, bool),
                               name=name, ellipses=ellipses))
    return samples


def load_fddb(root):
    root = Path(root)
    files = sorted((root / "FDDB-folds").glob("FDDB-fold-*-ellipseList.txt"))
    if not files:
        raise FileNotFoundError(f"no FDDB-folds/FDDB-fold-*-ellipseList.txt under {root}")
    return [s for f in files for s in parse_fddb_ellipses(f, root / "originalPics")]


# ---------------------------------------------------------------- XML (dlib, VOC)
def parse_dlib_xml(path):
    """dlib imglab: <image file=...><box top left width height [ignore]/>."""
    path = Path(path)
    samples = []
    for image in ET.parse(path).getroot().iter("image"):
        boxes, ignore = [], []
        for box in image.findall("box"):
            left, top = float(box.get("left")), float(box.get("top"))
            boxes.append([left, top, left + float(box.get("width")), top + float(box.get("height"))])
            ignore.append(box.get("ignore", "0") == "1")
        samples.append(_sample(path.parent / image.get("file"), boxes, ignore))
    return samples


def _voc_box(node):
    bb = node.find("bndbox")
    # VOC pixels are 1-based inclusive: [xmin - 1, xmax) in 0-based half-open form.
    return [float(bb.find("xmin").text) - 1, float(bb.find("ymin").text) - 1,
            float(bb.find("xmax").text), float(bb.find("ymax").text)]


def parse_voc_xml(path, classes=VOC_CLASSES):
    """PASCAL VOC: objects named in `classes`, and parts named in `classes` (person-layout
    heads); `difficult` objects are ignored."""
    path = Path(path)
    root = ET.parse(path).getroot()
    boxes, ignore = [], []
    for obj in root.findall("object"):
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        if (obj.findtext("name") or "").strip() in classes and obj.find("bndbox") is not None:
            boxes.append(_voc_box(obj))
            ignore.append(difficult)
        for part in obj.findall("part"):
            if (part.findtext("name") or "").strip() in classes:
                boxes.append(_voc_box(part))
                ignore.append(difficult)
    image_dir = path.parent.parent / "JPEGImages" if path.parent.name == "Annotations" else path.parent
    return [_sample(image_dir / root.findtext("filename").strip(), boxes, ignore)]


def parse_xml(path):
    tag = ET.parse(path).getroot().tag
    if tag == "dataset":
        return parse_dlib_xml(path)
    if tag == "annotation":
        return parse_voc_xml(path)
    raise ValueError(f"{path}: unknown XML annotation (root <{tag}>); accepted: dlib imglab "
                     f"<dataset>, PASCAL VOC <annotation>")


def load_xml(path):
    path = Path(path)
    if path.is_dir():
        folder = path / "Annotations" if (path / "Annotations").is_dir() else path
        files = sorted(folder.glob("*.xml"))
        if not files:
            raise FileNotFoundError(f"no *.xml files in {folder}")
    elif path.exists():
        files = [path]
    else:
        raise FileNotFoundError(f"XML annotation not found: {path}")
    seen, samples = set(), []
    for f in files:
        for s in parse_xml(f):
            if s.image not in seen:
                seen.add(s.image)
                samples.append(s)
    return samples


# ---------------------------------------------------------------- specs
def parse_spec(spec):
    """'kind:path' -> (kind, path); 'synthetic' has no path."""
    kind, _, rest = str(spec).partition(":")
    check_choice("data kind (in KIND:PATH)", kind, SPEC_KINDS)
    if kind != "synthetic" and not rest:
        raise ValueError(f"data spec {spec!r} needs a path: {kind}:PATH")
    return kind, rest


def load_samples(spec, split="train"):
    """Samples of a real annotation spec (see the module docstring)."""
    kind, path = parse_spec(spec)
    if kind == "wider":
        return load_wider(path, split)
    if kind == "fddb":
        return load_fddb(path)
    if kind == "xml":
        return load_xml(path)
    raise ValueError(f"load_samples reads annotation files; {spec!r} is generated "
                     f"(see mobilekit.detection.synthetic)")


def trainable_boxes(sample):
    """The faces a detector is trained on: not ignored."""
    return sample.boxes[~sample.ignore]


# ---------------------------------------------------------------- tf.data pipeline
def preprocess(image):
    """RGB 0..255 (any dtype) -> float32 in [-1, 1], the detector's input range."""
    from mobilekit.keras import tf

    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
    from mobilekit.keras import tf

    return tf.random.stateless_uniform(shape, seed, minval, maxval)


def photometric(image, seed):
    """Colour distortion of the official recipe on float RGB 0..255, each step with p = 0.5:
    brightness +-32, contrast x[0.5, 1.5], saturation x[0.5, 1.5], hue +-18 (OpenCV units,
    i.e. +-0.1 of the hue circle)."""
    from mobilekit.keras import tf

    seeds = tf.random.experimental.stateless_split(seed, 8)
    coin = lambda i: _uniform(seeds[i]) < 0.5  # noqa: E731

    image = tf.where(coin(0), image + _uniform(seeds[1], (), -32.0, 32.0), image)
    image = tf.where(coin(2), image * _uniform(seeds[3], (), 0.5, 1.5), image)
    unit = tf.clip_by_value(image, 0.0, 255.0) / 255.0
    saturated = tf.image.adjust_saturation(unit, _uniform(seeds[5], (), 0.5, 1.5))
    unit = tf.where(coin(4), saturated, unit)
    hued = tf.image.adjust_hue(unit, _uniform(seeds[7], (), -0.1, 0.1))
    unit = tf.where(coin(6), hued, unit)
    return tf.clip_by_value(unit * 255.0, 0.0, 255.0)


def random_square_crop(shape_hw, boxes, seed, min_scale=0.3, full_prob=0.2, trials=50):
    """Pick a square crop [top, left, side] (pixels) as the official code does: side =
    short side with p = `full_prob`, else U(min_scale, 1) x short side; a trial is valid when
    at least one face centre falls inside it (any trial when there are no faces). Falls
    back to the whole image (not square) when no trial is valid."""
    from mobilekit.keras import tf

    h, w = tf.cast(shape_hw[0], tf.float32), tf.cast(shape_hw[1], tf.float32)
    short = tf.minimum(h, w)
    s = tf.random.experimental.stateless_split(seed, 4)
    scale = tf.where(_uniform(s[0], (trials,)) < full_prob, 1.0,
                     _uniform(s[1], (trials,), min_scale, 1.0))
    side = tf.floor(scale * short)
    left = tf.floor(_uniform(s[2], (trials,)) * (w - side + 1.0))
    top = tf.floor(_uniform(s[3], (trials,)) * (h - side + 1.0))
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0  # [K, 2]
    inside = ((centres[None, :, 0] >= left[:, None]) & (centres[None, :, 0] < (left + side)[:, None])
              & (centres[None, :, 1] >= top[:, None]) & (centres[None, :, 1] < (top + side)[:, None]))
    valid = tf.reduce_any(inside, axis=1) | (tf.shape(boxes)[0] == 0)
    first = tf.argmax(tf.cast(valid, tf.int32), output_type=tf.int32)
    ok = tf.reduce_any(valid)
    crop = tf.stack([top[first], left[first], side[first], side[first]])
    return tf.where(ok, crop, tf.stack([0.0, 0.0, h, w]))


def crop_boxes(boxes, crop):
    """Faces whose centre lies in crop [top, left, height, width], clipped to it and
    normalised to the crop (0..1)."""
    from mobilekit.keras import tf

    top, left, ch, cw = crop[0], crop[1], crop[2], crop[3]
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2.0
    keep = ((centres[:, 0] >= left) & (centres[:, 0] < left + cw)
            & (centres[:, 1] >= top) & (centres[:, 1] < top + ch))
    kept = tf.boolean_mask(boxes, keep) - tf.stack([left, top, left, top])
    size = tf.stack([cw, ch, cw, ch])
    return tf.clip_by_value(kept, 0.0, size) / size


def filter_small(boxes, out_hw, min_face):
    """Drop normalised boxes narrower or shorter than `min_face` px at the output size."""
    from mobilekit.keras import tf

    w = (boxes[:, 2] - boxes[:, 0]) * tf.cast(out_hw[1], tf.float32)
    h = (boxes[:, 3] - boxes[:, 1]) * tf.cast(out_hw[0], tf.float32)
    return tf.boolean_mask(boxes, (w >= min_face) & (h >= min_face))


def augment(image, boxes, out_hw, seed, min_face=MIN_FACE, crop=True, flip=True,
            color=True):
    """One training example: uint8/float image [H, W, 3] 0..255 and pixel boxes [K, 4] ->
    (float32 image [h, w, 3] 0..255, normalised boxes [K', 4])."""
    from mobilekit.keras import tf

    image = tf.cast(image, tf.float32)
    boxes = tf.reshape(tf.cast(boxes, tf.float32), [-1, 4])
    s = tf.random.experimental.stateless_split(seed, 3)
    shape = tf.shape(image)
    if crop:
        window = random_square_crop(shape[:2], boxes, s[0])
    else:
        window = tf.stack([0.0, 0.0, tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)])
    w_int = tf.cast(window, tf.int32)
    image = image[w_int[0]:w_int[0] + w_int[2], w_int[1]:w_int[1] + w_int[3]]
    boxes = crop_boxes(boxes, window)
    image = tf.image.resize(image, out_hw, method="bilinear")
    if color:
        image = photometric(image, s[1])
    if flip:
        do = _uniform(s[2]) < 0.5
        image = tf.where(do, tf.reverse(image, axis=[1]), image)
        flipped = tf.stack([1.0 - boxes[:, 2], boxes[:, 1], 1.0 - boxes[:, 0], boxes[:, 3]], axis=1)
        boxes = tf.where(do, flipped, boxes)
    return image, filter_small(boxes, out_hw, min_face)


def resize_eval(image, out_hw):
    """Whole image warped to the network input (as in training without augmentation)."""
    from mobilekit.keras import tf

    return tf.image.resize(tf.cast(image, tf.float32), out_hw, method="bilinear")


def network_inputs(images, input_hw):
    """RGB images (0..255 arrays) warped to the network input and scaled like training:
    float32 NHWC, what export calibration and QAT range initialisation feed the network."""
    return np.stack([np.asarray(preprocess(resize_eval(image, input_hw)))
                     for image in images]).astype(np.float32)


def read_image(path):
    from mobilekit.keras import tf

    return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)


def detection_dataset(samples, out_hw, anchors, batch_size, seed=0, augment_data=True,
                      min_face=MIN_FACE, shuffle=True, epochs=(1,), match_kwargs=None):
    """tf.data of (image [-1, 1], loc targets [A, 4], labels [A]) batches, epoch after epoch.

    `samples` is a list of Sample (faces with ignore=True are dropped) or of
    (uint8 image array, pixel boxes) pairs of one size (e.g. synthetic data). For every
    epoch number in `epochs` it yields ceil(N / batch_size) batches (batches never span two
    epochs); the shuffle order and augmentation seeds are functions of (seed, epoch, image)
    only, so a run resumed at epoch k sees exactly the batches of an uninterrupted run.
    """
    from mobilekit.detection.boxes import match
    from mobilekit.keras import tf

    match_kwargs = match_kwargs or {}
    anchors = tf.constant(anchors, tf.float32)
    in_memory = not isinstance(samples[0], Sample)
    boxes = [np.asarray(b, np.float32).reshape(-1, 4) for _, b in samples] if in_memory \
        else [trainable_boxes(s) for s in samples]
    ragged = tf.RaggedTensor.from_row_lengths(
        np.concatenate(boxes, 0).astype(np.float32), [len(b) for b in boxes])
    if in_memory:
        images = [np.asarray(img) for img, _ in samples]
        if len({im.shape for im in images}) != 1:
            raise ValueError("in-memory detection samples must share one image size")
        sources = tf.constant(np.stack(images))
    else:
        sources = tf.constant([s.image for s in samples])
    epochs = [int(e) for e in epochs]
    n = len(samples)
    orders = np.stack([np.random.default_rng([seed, e]).permutation(n) if shuffle else np.arange(n)
                       for e in epochs]).astype(np.int64)

    def load(idx, epoch):
        item = tf.gather(sources, idx)
        box = ragged[idx]
        image = item if in_memory else read_image(item)
        if augment_data:
            element_seed = tf.stack([tf.cast(seed, tf.int64) * 1_000_003 + epoch, idx])
            image, norm = augment(image, box, out_hw, element_seed, min_face=min_face)
        else:
            shape = tf.cast(tf.shape(image), tf.float32)
            norm = box / tf.stack([shape[1], shape[0], shape[1], shape[0]])
            image = resize_eval(image, out_hw)
            norm = filter_small(norm, out_hw, min_face)
        loc, labels = match(norm, anchors, **match_kwargs)
        return preprocess(image), loc, labels

    def one_epoch(row, epoch):
        return (tf.data.Dataset.from_tensor_slices(tf.gather(orders, row))
                .map(lambda i: load(i, epoch), num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True)
                .batch(batch_size))

    plan = tf.data.Dataset.from_tensor_slices((tf.range(len(epochs), dtype=tf.int64),
                                               tf.constant(epochs, tf.int64)))
    return plan.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE)
