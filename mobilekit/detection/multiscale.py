"""Multi-scale inference as the official FaceBoxes test scripts run it (FDDB x3.0, PASCAL
x2.5, AFW x1.0): the image itself, resized by the scale factor, is the network input (a
fully convolutional detector; anchors follow the size), not a warp to a fixed input.
With several scales, the detections of all of them are merged and NMS'd again.

Needs a Keras detector (run directory or .keras): a .tflite file has a fixed input and its
anchors are constants. Sizes are rounded to a multiple of STEP px so a handful of models
serve a data set (one per distinct size, built with the same weights).
"""
import math
import time

import numpy as np

STEP = 32  # the first detection map's stride: whole cells, few distinct sizes


class ScaledDetector:
    """`detect(image, score_threshold, nms_iou)` like postprocess.Detector, at scale(s) of
    each image; `cost()` says what it took."""

    def __init__(self, model, scales, min_side=128):
        scales = [float(s) for s in scales]
        if not scales or any(s <= 0 for s in scales):
            raise ValueError(f"scales must be positive numbers; got {scales}")
        self.model, self.scales, self.min_side = model, scales, min_side
        self.min_scale = min(scales)
        self.input_hw = None  # varies per image
        self._detectors, self._seconds, self._pixels, self._images = {}, 0.0, 0, 0

    def input_size(self, image_hw, scale):
        """(height, width) of the network input for an image at `scale`."""
        return tuple(max(self.min_side, int(math.ceil(side * scale / STEP)) * STEP)
                     for side in image_hw)

    def _detector(self, size):
        from mobilekit.detection.model import with_input_size
        from mobilekit.detection.postprocess import Detector

        if size not in self._detectors:
            detector = Detector(with_input_size(self.model, size))
            detector.raw(np.zeros((1, *size, 3), np.float32))  # trace once, outside the timing
            self._detectors[size] = detector
        return self._detectors[size]

    def detect(self, image, score_threshold=0.05, nms_iou=0.3, keep_top_k=750):
        from mobilekit.detection.postprocess import nms

        image = np.asarray(image)
        boxes, scores = [], []
        for scale in self.scales:
            size = self.input_size(image.shape[:2], scale)
            detector = self._detector(size)
            start = time.perf_counter()
            b, s = detector.detect(image, score_threshold, nms_iou, keep_top_k)
            self._seconds += time.perf_counter() - start
            self._pixels += size[0] * size[1]
            boxes.append(b)
            scores.append(s)
        self._images += 1
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        if len(self.scales) > 1 and len(scores):
            keep = nms(boxes, scores, nms_iou)[:keep_top_k]
            boxes, scores = boxes[keep], scores[keep]
        return boxes, scores

    def cost(self, macs_per_pixel=None):
        """Seconds per image (network + NMS, 1 thread host) and mean input pixels; MACs
        per image where the MACs per input pixel are given (FaceBoxes is convolutional:
        its MACs grow with the input area)."""
        n = max(self._images, 1)
        out = {"scales": self.scales, "images": self._images,
               "seconds_per_image": round(self._seconds / n, 4),
               "input_pixels_per_image": int(self._pixels / n),
               "distinct_input_sizes": sorted([list(s) for s in self._detectors])}
        if macs_per_pixel is not None:
            out["macs_per_image"] = int(macs_per_pixel * self._pixels / n)
        return out
