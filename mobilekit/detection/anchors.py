"""FaceBoxes anchors (priors), as in the official code (zisianw/FaceBoxes.PyTorch
layers/functions/prior_box.py and sfzhang15/FaceBoxes prior_box_layer.cpp).

Anchors are square (aspect 1:1), in normalised centre-size form (cx, cy, w, h) relative
to the image. Densification tiles n x n anchors of one scale per cell at offsets
{0, 1/n, ...} of the cell (the official offsets: the cell *origin* plus k/n, not symmetric
around the centre); undensified anchors sit at the cell centre. Order per cell matches the
head reshape: rows, then columns, then the anchors of the cell in `min_sizes` order.
"""
import math

import numpy as np

MIN_SIZES = ((32, 64, 128), (256,), (512,))
STEPS = (32, 64, 128)
# Anchor scale -> densification factor n (n*n anchors per cell), paper §3.3.
DENSIFY = {32: 4, 64: 2}


def feature_map_sizes(image_size, steps=STEPS):
    """(rows, cols) of each output map: ceil(size / step), which is what both the
    PyTorch padding arithmetic and TF 'same' padding give for FaceBoxes' layers."""
    h, w = image_size
    return [(math.ceil(h / s), math.ceil(w / s)) for s in steps]


def anchors_per_cell(min_sizes=MIN_SIZES):
    return [sum(DENSIFY.get(m, 1) ** 2 for m in sizes) for sizes in min_sizes]


def num_anchors(image_size, min_sizes=MIN_SIZES, steps=STEPS):
    """21,824 at 1024x1024; 6,400 at 640x480 (image_size is (height, width))."""
    return sum(r * c * k for (r, c), k in
               zip(feature_map_sizes(image_size, steps), anchors_per_cell(min_sizes)))


def _cell_anchors(size, step, i, j, image_h, image_w):
    n = DENSIFY.get(size, 1)
    offsets = [k / n for k in range(n)] if n > 1 else [0.5]
    out = []
    for dy in offsets:
        for dx in offsets:
            out.append(((j + dx) * step / image_w, (i + dy) * step / image_h,
                        size / image_w, size / image_h))
    return out


def generate_anchors(image_size, min_sizes=MIN_SIZES, steps=STEPS, map_sizes=None):
    """float32 [A, 4] anchors (cx, cy, w, h), normalised; image_size = (height, width).

    `map_sizes` overrides the feature-map sizes (e.g. read from a built model)."""
    h, w = image_size
    map_sizes = map_sizes or feature_map_sizes(image_size, steps)
    if not (len(min_sizes) == len(steps) == len(map_sizes)):
        raise ValueError(f"min_sizes, steps and map sizes must have one entry per output map; "
                         f"got {len(min_sizes)}, {len(steps)}, {len(map_sizes)}")
    rows = []
    for sizes, step, (fh, fw) in zip(min_sizes, steps, map_sizes):
        per_cell = []
        for size in sizes:
            per_cell.extend(_cell_anchors(size, step, 0, 0, h, w))
        per_cell = np.asarray(per_cell, np.float64)  # anchors of cell (0, 0)
        ii, jj = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        shift = np.stack([jj.ravel() * step / w, ii.ravel() * step / h], axis=1)  # [cells, 2]
        grid = np.repeat(per_cell[None], len(shift), axis=0)
        grid[:, :, 0] += shift[:, None, 0]
        grid[:, :, 1] += shift[:, None, 1]
        rows.append(grid.reshape(-1, 4))
    return np.concatenate(rows, axis=0).astype(np.float32)
