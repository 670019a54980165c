"""Face annotation loaders on every file of ../shared/data/faces, and box-consistent
augmentation. Expected counts are the numbers documented in each folder's README."""
import math
from pathlib import Path

import numpy as np
import pytest

from mobilekit.detection.data import (augment, ellipse_to_box, load_samples, parse_spec)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "data" / "faces"
pytestmark = pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} not found")
WIDER = f"wider:{FACES / 'wider_face_sample'}"


def _names(samples):
    return [Path(s.image).name for s in samples]


def test_wider_train_exact():
    samples = load_samples(WIDER, "train")
    counts = dict(zip(_names(samples), [len(s.boxes) for s in samples]))
    assert counts == {"0_Parade_marchingband_1_849.jpg": 1, "12_Group_Group_12_Group_Group_12_217.jpg": 80,
                      "26_Soldier_Drilling_Soldiers_Drilling_26_143.jpg": 4,
                      "43_Row_Boat_Canoe_43_525.jpg": 1, "61_Street_Battle_streetfight_61_460.jpg": 27,
                      "9_Press_Conference_Press_Conference_9_266.jpg": 1}
    assert sum(s.ignore.sum() for s in samples) == 0
    assert all(Path(s.image).is_file() for s in samples)
    # The only face of 0_Parade_marchingband_1_849 (x y w h = 449 330 122 149 in the file).
    assert samples[0].boxes.tolist() == [[449, 330, 571, 479]]
    assert samples[0].extra["attributes"].shape == (1, 6)


def test_wider_val_exact_and_invalid_faces_ignored():
    samples = load_samples(WIDER, "val")
    assert [len(s.boxes) for s in samples] == [126, 5, 1, 3]
    assert [int(s.ignore.sum()) for s in samples] == [75, 0, 0, 0]  # the "invalid" flags
    assert samples[0].boxes[0].tolist() == [345, 211, 349, 215]  # first line: 345 211 4 4
    train = load_samples(WIDER, "train")
    every = np.concatenate([s.boxes for s in train + samples])
    small = (every[:, 2] - every[:, 0] < 20) | (every[:, 3] - every[:, 1] < 20)
    assert len(every) == 249 and int(small.sum()) == 149


def test_wider_zero_face_image(tmp_path):
    split = tmp_path / "wider_face_split"
    split.mkdir()
    (split / "wider_face_val_bbx_gt.txt").write_text(
        "a/x.jpg\n0\n0 0 0 0 0 0 0 0 0 0 \nb/y.jpg\n1\n1 2 3 4 0 0 0 0 0 0\n")
    samples = load_samples(f"wider:{tmp_path}", "val")
    assert [len(s.boxes) for s in samples] == [0, 1]
    assert samples[1].boxes.tolist() == [[1, 2, 4, 6]]


def test_fddb_exact_and_ellipse_boxes():
    samples = load_samples(f"fddb:{FACES / 'fddb_sample'}")
    assert len(samples) == 7 and sum(len(s.boxes) for s in samples) == 11
    assert dict(zip(_names(samples), [len(s.boxes) for s in samples]))["img_1468.jpg"] == 5
    assert all(Path(s.image).is_file() for s in samples)
    first = samples[0]  # 2002/08/11/big/img_591: 123.5833 85.5495 1.265839 269.6934 161.7812
    assert first.extra["ellipses"][0].tolist() == pytest.approx([123.5833, 85.5495, 1.265839, 269.6934, 161.7812])
    # The box is the tightest box around the rotated ellipse: check on boundary points.
    a, b, t, cx, cy = first.extra["ellipses"][0]
    u = np.linspace(0, 2 * math.pi, 20001)
    xs = cx + a * np.cos(u) * math.cos(t) - b * np.sin(u) * math.sin(t)
    ys = cy + a * np.cos(u) * math.sin(t) + b * np.sin(u) * math.cos(t)
    np.testing.assert_allclose(first.boxes[0], [xs.min(), ys.min(), xs.max(), ys.max()], atol=1e-3)
    assert ellipse_to_box(10, 5, 0, 0, 0) == pytest.approx([-10, -5, 10, 5])


def test_dlib_xml_exact():
    faces = FACES / "dlib_examples_faces" / "examples" / "faces"
    train = load_samples(f"xml:{faces / 'training.xml'}")
    test = load_samples(f"xml:{faces / 'testing.xml'}")
    assert [len(s.boxes) for s in train] == [7, 6, 2, 3]
    assert [len(s.boxes) for s in test] == [6, 3, 7, 7, 2]
    assert train[0].boxes[0].tolist() == [194, 90, 231, 127]  # top 90 left 194 37 x 37
    # The landmark files hold the same faces (a few boxes differ by pixels); a directory
    # lists each image once, from the first file (sorted) that names it.
    landmarks = load_samples(f"xml:{faces / 'training_with_face_landmarks.xml'}")
    assert [len(s.boxes) for s in landmarks] == [7, 6, 2, 3]
    folder = load_samples(f"xml:{faces}")
    assert len(folder) == 9 and sum(len(s.boxes) for s in folder) == 43
    assert all(Path(s.image).is_file() for s in folder)


def test_voc_xml_heads_exact():
    samples = load_samples(f"xml:{FACES / 'pascal_voc2012_layout_sample' / 'VOCdevkit' / 'VOC2012'}")
    assert len(samples) == 7 and sum(len(s.boxes) for s in samples) == 10
    by_name = dict(zip(_names(samples), samples))
    # README: 2007_000423 heads (69,82,94,112), (374,96,413,143), VOC 1-based inclusive.
    assert by_name["2007_000423.jpg"].boxes.tolist() == [[68, 81, 94, 112], [373, 95, 413, 143]]
    assert all(Path(s.image).is_file() for s in samples)


def test_spec_errors():
    with pytest.raises(ValueError, match="data kind"):
        parse_spec("coco:/x")
    with pytest.raises(ValueError, match="needs a path"):
        parse_spec("wider:")
    with pytest.raises(FileNotFoundError):
        load_samples("wider:/nonexistent", "train")


def _bright_box(image, threshold):
    gray = np.asarray(image).mean(-1)
    ys, xs = np.nonzero(gray > threshold)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


@pytest.mark.parametrize("color", [False, True])
def test_augment_keeps_boxes_on_the_face(color):
    from mobilekit.detection.boxes import iou_np

    image = np.zeros((300, 400, 3), np.uint8)
    image[100:160, 150:210] = 255  # a 60 px bright "face"
    out = 128
    crops, flips = set(), 0
    for seed in range(24):
        img, boxes = augment(image, [[150, 100, 210, 160]], (out, out), [seed, 1], min_face=4,
                             color=color)
        img, boxes = np.asarray(img), np.asarray(boxes)
        assert img.shape == (out, out, 3) and boxes.shape == (1, 4)  # the centre is always kept
        gray = img.mean(-1)
        found = _bright_box(img, (gray.max() + gray.min()) / 2)
        assert iou_np(boxes * out, [found])[0, 0] > 0.85, (seed, boxes * out, found)
        crops.add(round(float(boxes[0, 2] - boxes[0, 0]), 3))
        flips += int(found[0] > out / 2)  # an unflipped face stays left of centre only sometimes
    assert len(crops) > 5  # crops vary in scale


def test_augment_drops_small_faces_and_handles_no_faces():
    image = np.zeros((1000, 1000, 3), np.uint8)
    _, boxes = augment(image, [[100, 100, 110, 110]], (128, 128), [0, 0], crop=False)
    assert np.asarray(boxes).shape == (0, 4)  # 10 px -> 1.3 px < 20 px
    img, boxes = augment(image, np.zeros((0, 4)), (128, 128), [0, 0])
    assert np.asarray(img).shape == (128, 128, 3) and np.asarray(boxes).shape == (0, 4)


def test_augment_is_deterministic():
    image = np.random.default_rng(0).integers(0, 255, (200, 240, 3)).astype(np.uint8)
    a = augment(image, [[50, 50, 120, 130]], (96, 96), [3, 4])
    b = augment(image, [[50, 50, 120, 130]], (96, 96), [3, 4])
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
