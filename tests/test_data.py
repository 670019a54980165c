"""Dataset specs, the synthetic set, the tf.data pipeline and dataset statistics."""
import importlib.util

import numpy as np
import pytest

from mobilekit.data import load_dataset, parse_spec, synthetic
from mobilekit.data.specs import open_source
from mobilekit.keras import tf

SMALL = "synthetic:train=6,val=3"


def test_synthetic_is_deterministic_balanced_and_split():
    a_img, a_lab = synthetic._draw("train", 32, 4, 7, 10)
    b_img, b_lab = synthetic._draw("train", 32, 4, 7, 10)
    assert a_img.shape == (40, 32, 32, 3) and a_img.dtype == np.uint8
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert np.bincount(a_lab).tolist() == [4] * 10
    other_seed, _ = synthetic._draw("train", 32, 4, 8, 10)
    val, _ = synthetic._draw("val", 32, 4, 7, 10)
    assert not np.array_equal(a_img, other_seed)
    assert not np.array_equal(a_img, val)
    # Not blank: every image has foreground, background and noise.
    assert (a_img.reshape(40, -1).std(axis=1) > 10).all()


def test_synthetic_generation_is_cached_and_fast_enough():
    first = synthetic.generate("val", 48, 20, 3, 10)
    assert synthetic.generate("val", 48, 20, 3, 10) is first


def test_parse_spec_forms_and_errors():
    assert parse_spec("synthetic")[0] == "synthetic"
    assert parse_spec("synthetic:train=5,seed=2")[1]["train"] == 5
    assert parse_spec("tfrecord:/x/*.rec") == ("tfrecord", "/x/*.rec")
    assert parse_spec("./some/dir") == ("folder", "./some/dir")
    with pytest.raises(ValueError, match="'size=3'.*accepted: train=INT"):
        parse_spec("synthetic:size=3")
    with pytest.raises(ValueError, match="needs an argument"):
        parse_spec("tfrecord:")


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_datasets") is not None,
                    reason="tensorflow-datasets is installed here")
def test_tfds_without_the_package_says_so():
    with pytest.raises(ValueError, match="tensorflow-datasets package, which is not installed"):
        open_source("tfds:mnist", "train", 32)


def test_load_dataset_contract_and_normalisation():
    ds, info = load_dataset(SMALL, "val", 32, 8, training=False)
    assert info["num_classes"] == 10 and info["num_examples"] == 30
    assert info["class_names"][:3] == ["disk", "square", "triangle"]
    images, labels = next(iter(ds))
    assert images.dtype == tf.float32 and images.shape == (8, 32, 32, 3)
    assert labels.dtype == tf.int32
    # Eval transform of the native-size synthetic set is exactly (pixel - mean) / std.
    raw, raw_labels = synthetic.generate("val", 32, 3, 0, 10)
    expected = (raw[:8].astype(np.float32) - np.float32(info["mean"])) / np.float32(info["std"])
    np.testing.assert_allclose(images.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(labels.numpy(), raw_labels[:8])


def test_stats_match_numpy():
    ds, info = load_dataset(SMALL, "train", 32, 4, training=False)
    raw, _ = synthetic.generate("train", 32, 6, 0, 10)
    pixels = raw.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(info["mean"], pixels.mean(0), atol=1e-3)
    np.testing.assert_allclose(info["std"], pixels.std(0), atol=1e-3)


def test_training_pipeline_is_seeded_and_augments():
    def first_batch(seed):
        ds, _ = load_dataset(SMALL, "train", 32, 16, training=True, seed=seed)
        return next(iter(ds))

    a, b, c = first_batch(3), first_batch(3), first_batch(4)
    np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
    np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())
    assert not np.array_equal(a[0].numpy(), c[0].numpy())
    # Two epochs of one dataset differ (reshuffled, re-augmented).
    ds, _ = load_dataset(SMALL, "train", 32, 60, training=True, seed=3)
    epochs = [next(iter(ds))[0].numpy() for _ in range(2)]
    assert not np.array_equal(*epochs)


def _png(path, h, w, value):
    image = np.full((h, w, 3), value, np.uint8)
    image[: h // 2] = 255 - value
    path.write_bytes(tf.io.encode_png(image).numpy())


def _jpeg_bytes(h=40, w=50):
    rng = np.random.default_rng(0)
    return tf.io.encode_jpeg(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).numpy()


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "flowers"
    for c, name in enumerate(["daisy", "rose", "tulip"]):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(4):
            _png(folder / f"img{i}.png", 40 + 5 * i, 50, 30 * c + i)
    (root / "rose" / "notes.txt").write_text("not an image")
    (root / "tulip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)  # truncated
    return root


def test_folder_dataset_split_skips_bad_files(image_folder):
    with pytest.warns(UserWarning, match="skipped 2 corrupt or non-image"):
        train, info = load_dataset(str(image_folder), "train", 32, 4, training=True, seed=1)
    assert info["class_names"] == ["daisy", "rose", "tulip"]
    assert info["num_examples"] == 9 and info["skipped"] == 2
    labels = np.concatenate([y.numpy() for _, y in train])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.warns(UserWarning):
        val, val_info = load_dataset(str(image_folder), "val", 32, 8, training=False,
                                     mean=[0, 0, 0], std=[1, 1, 1])
    images, labels = next(iter(val))
    assert val_info["num_examples"] == 3 and labels.numpy().tolist() == [0, 1, 2]
    assert images.shape == (3, 32, 32, 3)
    # img3 of daisy (55x50, value 3): bottom half 3, top half 252 after resize + centre crop.
    daisy = images.numpy()[0, :, 16, 0]
    assert daisy[-1] == pytest.approx(3, abs=1) and daisy[0] == pytest.approx(252, abs=1)


def test_decode_failure_inside_an_epoch_drops_the_file(tmp_path):
    # Right signature and end marker, garbage inside: passes the up-front check, fails decode.
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(3):
            (tmp_path / name / f"{i}.jpg").write_bytes(_jpeg_bytes())
    good = _jpeg_bytes()
    (tmp_path / "a" / "0.jpg").write_bytes(good[:30] + b"\x00" * 200 + b"\xff\xd9")
    ds, info = load_dataset(str(tmp_path), "train", 32, 8, training=False, mean=[0] * 3, std=[1] * 3)
    assert info["num_examples"] == 4
    assert sum(int(y.shape[0]) for _, y in ds) == 3


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_dataset(str(tmp_path / "nope"), "train", 32, 4, training=False)
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset(str(tmp_path), "train", 32, 4, training=False)
    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "readme.md").write_text("hi")
    with pytest.raises(ValueError, match="cats' has no readable images"):
        load_dataset(str(tmp_path), "train", 32, 4, training=False)


def test_tfrecord_dataset_with_val_every_tenth(tmp_path):
    path = tmp_path / "data.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(20):
            feature = {
                "image/encoded": tf.train.Feature(bytes_list=tf.train.BytesList(value=[_jpeg_bytes(24, 30)])),
                "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[i % 4])),
            }
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    (tmp_path / "labels.txt").write_text("w\nx\ny\nz\n")
    val, info = load_dataset(f"tfrecord:{tmp_path}/*.tfrecord", "val", 16, 8, training=False)
    assert info["class_names"] == ["w", "x", "y", "z"] and info["num_examples"] == 2
    assert [y.numpy().tolist() for _, y in val] == [[1, 3]]  # records 9 and 19
    train, tinfo = load_dataset(f"tfrecord:{tmp_path}/*.tfrecord", "train", 16, 32, training=True)
    images, labels = next(iter(train))
    assert tinfo["num_examples"] == 18 and images.shape == (18, 16, 16, 3)


def test_data_stats_cli():
    import json

    from click.testing import CliRunner

    from mobilekit.cli import cli

    result = CliRunner().invoke(cli, ["data", "stats", SMALL, "--resolution", "32", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    raw, _ = synthetic.generate("train", 32, 6, 0, 10)
    np.testing.assert_allclose(out["mean"], raw.reshape(-1, 3).mean(0), atol=1e-3)
    assert out["train_examples"] == 60 and out["val_examples"] == 30 and out["num_classes"] == 10
