"""Procedural face-detection data: no files, no downloads, deterministic from a seed.

Each image is a noisy two-colour gradient with clutter (random rectangles) and 1-4
"faces": a skin-toned ellipse with two dark eyes and a mouth, whose box is the ellipse's
bounding box. Good enough to check that a detector, its matching and its loss learn.
"""
import numpy as np

DEFAULTS = {"train": 64, "val": 16, "seed": 0}
SPLIT_STREAMS = {"train": 0, "val": 1}


def _face(canvas, yy, xx, rng, box):
    x1, y1, x2, y2 = box
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    skin = rng.uniform([150, 100, 70], [255, 200, 170])
    inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0
    canvas[inside] = skin
    dark = rng.uniform(0, 60, 3)
    for ex in (cx - 0.4 * rx, cx + 0.4 * rx):  # eyes
        eye = ((xx - ex) / (0.15 * rx)) ** 2 + ((yy - (cy - 0.25 * ry)) / (0.1 * ry)) ** 2 <= 1.0
        canvas[eye] = dark
    mouth = (np.abs(yy - (cy + 0.45 * ry)) <= max(0.06 * ry, 0.6)) & (np.abs(xx - cx) <= 0.4 * rx)
    canvas[mouth] = dark


def _boxes(rng, resolution, count, min_size, max_size):
    boxes = []
    for _ in range(50 * count):
        if len(boxes) == count:
            break
        w = rng.uniform(min_size, max_size)
        h = w * rng.uniform(1.1, 1.35)
        if h >= resolution:
            continue
        x1, y1 = rng.uniform(0, resolution - w), rng.uniform(0, resolution - h)
        box = np.array([x1, y1, x1 + w, y1 + h])
        # Keep faces apart: overlapping faces would make the box labels ambiguous.
        if all(box[0] >= b[2] + 2 or b[0] >= box[2] + 2 or box[1] >= b[3] + 2 or b[1] >= box[3] + 2
               for b in boxes):
            boxes.append(box)
    return np.asarray(boxes, np.float32).reshape(-1, 4)


def draw_image(rng, resolution, max_faces=4, min_size=None, max_size=None):
    """(uint8 image [R, R, 3], float32 pixel boxes [K, 4])."""
    min_size = min_size or max(20.0, resolution / 8)
    max_size = max_size or resolution / 2.5
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) + 0.5
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1)) / (2 * resolution) + 0.5
    canvas = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(2, 6)):  # clutter
        x1, y1 = rng.integers(0, resolution, 2)
        w, h = rng.integers(4, resolution // 3 + 5, 2)
        canvas[y1:y1 + h, x1:x1 + w] = rng.uniform(0, 255, 3)
    boxes = _boxes(rng, resolution, int(rng.integers(1, max_faces + 1)), min_size, max_size)
    for box in boxes:
        _face(canvas, yy, xx, rng, box)
    canvas += rng.normal(0, 6, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8), boxes


def generate(split, resolution, count=None, seed=0, max_faces=4):
    """List of (uint8 image, pixel boxes) pairs of one split, deterministic in (seed, split)."""
    if split not in SPLIT_STREAMS:
        raise ValueError(f"split must be one of train, val; got {split!r}")
    count = DEFAULTS[split] if count is None else count
    rng = np.random.default_rng([seed, SPLIT_STREAMS[split], resolution])
    return [draw_image(rng, resolution, max_faces) for _ in range(count)]
