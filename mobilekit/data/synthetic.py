"""The embedded default dataset: procedurally drawn shapes and textures (no files, no downloads).

Every image is a function of (dataset seed, split, index), drawn with vectorised NumPy in
chunks, so the same spec always yields the same pixels. Each image holds one class shape
(random colour, scale, position, rotation) over a two-colour gradient background with
clutter (small distractor blobs, thin lines) and pixel noise. See docs/synthetic_dataset.md.
"""
import numpy as np

CLASS_NAMES = ("disk", "square", "triangle", "ring", "cross", "star", "striped_disk",
               "checker_square", "crescent", "ellipse")
DEFAULTS = {"train": 300, "val": 50, "seed": 0, "classes": len(CLASS_NAMES)}
SPLIT_STREAMS = {"train": 0, "val": 1}
_CHUNK = 256
_CACHE = {}


def generate(split, resolution, per_class=None, seed=0, num_classes=len(CLASS_NAMES)):
    """(uint8 images [N, R, R, 3], int32 labels [N]) of one split; cached in memory."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of train, val; got {split!r}")
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ValueError(f"synthetic classes must be in [2, {len(CLASS_NAMES)}]; got {num_classes}")
    per_class = DEFAULTS[split] if per_class is None else per_class
    key = (split, resolution, per_class, seed, num_classes)
    if key not in _CACHE:
        _CACHE[key] = _draw(split, resolution, per_class, seed, num_classes)
    return _CACHE[key]


def _draw(split, resolution, per_class, seed, num_classes):
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split]])
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int32), per_class))
    images = np.empty((len(labels), resolution, resolution, 3), np.uint8)
    for start in range(0, len(labels), _CHUNK):
        chunk = labels[start:start + _CHUNK]
        images[start:start + len(chunk)] = _draw_chunk(rng, chunk, resolution)
    return images, labels


def _grid(resolution):
    # Pixel centres in [-1, 1].
    c = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution * 2 - 1
    return np.meshgrid(c, c, indexing="xy")


def _draw_chunk(rng, labels, res):
    n = len(labels)
    gx, gy = _grid(res)
    gx, gy = gx[None], gy[None]
    img = _background(rng, n, gx, gy)
    img = _clutter(rng, img, gx, gy, res)
    # The class shape: random centre, scale, rotation and colour.
    cx, cy = (rng.uniform(-0.3, 0.3, (2, n, 1, 1))).astype(np.float32)
    scale = rng.uniform(0.3, 0.6, (n, 1, 1)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    cos, sin = np.cos(theta), np.sin(theta)
    u = ((gx - cx) * cos + (gy - cy) * sin) / scale
    v = (-(gx - cx) * sin + (gy - cy) * cos) / scale
    sd = np.empty((n, res, res), np.float32)
    for k in np.unique(labels):
        idx = labels == k
        sd[idx] = SHAPES[k](u[idx], v[idx], rng, int(idx.sum()))
    # Signed distance (in shape units) -> anti-aliased coverage, one pixel wide.
    pixel = 2.0 / (res * scale)
    mask = np.clip(sd / pixel + 0.5, 0.0, 1.0)
    img = _paint(img, mask, _contrasting_colour(rng, img, n)[:, :, None, None])
    # Luminance noise (one channel, broadcast): half the cost of per-channel noise.
    img += rng.standard_normal((n, 1, res, res), dtype=np.float32) * np.float32(0.06)
    img = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    return img.transpose(0, 2, 3, 1)


def _background(rng, n, gx, gy):
    # Channels-first while drawing: NumPy broadcasting over a trailing axis of 3 is slow.
    # A gentle gradient between two nearby colours.
    c0 = rng.uniform(0, 1, (n, 3, 1, 1)).astype(np.float32)
    c1 = np.clip(c0 + rng.uniform(-0.25, 0.25, (n, 3, 1, 1)), 0, 1).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi, (n, 1, 1)).astype(np.float32)
    t = (gx * np.cos(angle) + gy * np.sin(angle)) * 0.5 + 0.5
    return c0 + (c1 - c0) * t[:, None]


def _clutter(rng, img, gx, gy, res):
    """Small blobs and thin lines in random colours: distractors, never a class shape's size."""
    n = img.shape[0]
    # Paint all five items at once: an id map (last item wins), then one colour lookup.
    ids = np.zeros((n, res, res), np.int32)
    for k in range(1, 4):
        cx, cy = rng.uniform(-1, 1, (2, n, 1, 1)).astype(np.float32)
        r = rng.uniform(0.04, 0.12, (n, 1, 1)).astype(np.float32)
        on = rng.uniform(size=(n, 1, 1)) < 0.7
        ids[(((gx - cx) ** 2 + (gy - cy) ** 2) < r ** 2) & on] = k
    for k in range(4, 6):
        angle = rng.uniform(0, np.pi, (n, 1, 1)).astype(np.float32)
        offset = rng.uniform(-0.9, 0.9, (n, 1, 1)).astype(np.float32)
        ids[np.abs(gx * np.cos(angle) + gy * np.sin(angle) - offset) < max(1.0 / res, 0.012)] = k
    palette = rng.uniform(0, 1, (n, 3, 6)).astype(np.float32)
    flat = ids.reshape(n, -1)
    covered = ids > 0
    for c in range(3):
        colour = np.take_along_axis(palette[:, c], flat, axis=1).reshape(n, res, res)
        np.copyto(img[:, c], colour, where=covered)
    return img


def _paint(img, coverage, colour):
    # Arithmetic blend: much faster than np.where with broadcasting.
    img += coverage[:, None] * (colour - img)
    return img


def _contrasting_colour(rng, img, n):
    """A random hue whose brightness is far from the background's: dark shapes on light
    backgrounds and light shapes on dark ones, so every shape stays visible."""
    light_bg = img.mean(axis=(1, 2, 3)) > 0.5
    fg = rng.uniform(0, 1, (n, 3)).astype(np.float32)
    return np.where(light_bg[:, None], fg * 0.35, 0.65 + fg * 0.35)


# Signed distance-like functions in shape coordinates: > 0 inside, about 1 unit = the radius.
def _disk(u, v, rng, n):
    return 0.9 - np.sqrt(u * u + v * v)


def _square(u, v, rng, n):
    return 0.75 - np.maximum(np.abs(u), np.abs(v))


def _triangle(u, v, rng, n):
    d = -v - 0.45
    for a in (np.pi / 6, 5 * np.pi / 6):
        d = np.maximum(d, u * np.cos(a) + v * np.sin(a) - 0.45)
    return -d


def _ring(u, v, rng, n):
    return 0.18 - np.abs(np.sqrt(u * u + v * v) - 0.72)


def _cross(u, v, rng, n):
    bar1 = np.minimum(0.25 - np.abs(u), 0.9 - np.abs(v))
    bar2 = np.minimum(0.25 - np.abs(v), 0.9 - np.abs(u))
    return np.maximum(bar1, bar2)


def _star(u, v, rng, n):
    r = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    return (0.6 + 0.35 * np.cos(5 * phi)) - r


def _striped_disk(u, v, rng, n):
    freq = rng.uniform(9, 13, (n, 1, 1)).astype(np.float32)
    stripes = np.sin(u * freq) * 0.12
    return np.minimum(_disk(u, v, rng, n), stripes)


def _checker_square(u, v, rng, n):
    freq = rng.uniform(7, 10, (n, 1, 1)).astype(np.float32)
    checks = np.sin(u * freq) * np.sin(v * freq) * 0.12
    return np.minimum(_square(u, v, rng, n), checks)


def _crescent(u, v, rng, n):
    inner = 0.7 - np.sqrt((u - 0.4) ** 2 + v * v)
    return np.minimum(_disk(u, v, rng, n), -inner)


def _ellipse(u, v, rng, n):
    # Scaled by the short axis so the edge stays about one pixel wide.
    return (0.9 - np.sqrt(u * u + (v / 0.4) ** 2)) * 0.4


SHAPES = (_disk, _square, _triangle, _ring, _cross, _star, _striped_disk, _checker_square,
          _crescent, _ellipse)
