"""Pretrained weights without the internet: a keras.applications-format weights file (from a
randomly initialised keras.applications model) served from a loopback HTTP server stands in
for keras.applications' published file; Keras' own downloader fetches it, checks its hash and
caches it. Then transfer learning: a new head, a frozen phase, fine-tuning, resume."""
import functools
import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from mobilekit.keras import keras
from mobilekit.zoo.registry import create_model
from mobilekit.zoo.weights import (URL_ENV, WeightsFile, WeightsUnavailable, _weighted_layers,
                                   fetch, imagenet_file, keras_application)

ALPHA, RES = 0.25, 32
FILE = "mobilenet_2_5_224_tf.h5"  # v1 alpha 0.25: below 128 px the 224 px file is used
KERAS_PATH = "tensorflow/keras-applications/mobilenet/"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(served root, the keras.applications model the file was saved from, file md5)."""
    root = tmp_path_factory.mktemp("mirror")
    source = keras_application("mobilenet_v1", (RES, RES, 3), alpha=ALPHA)  # 1000 classes
    rng = np.random.default_rng(0)  # BN statistics away from their 0/1 start, to be seen
    source.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype) if w.ndim == 1 else w
                        for w in source.get_weights()])
    path = root / KERAS_PATH / FILE
    path.parent.mkdir(parents=True)
    source.save_weights(path)
    return root, source, hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def server(published):
    """A loopback HTTP server (127.0.0.1 only) serving the mirror; counts GET requests."""
    root = published[0]
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                            functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def offline_home(tmp_path, monkeypatch, server):
    """A fresh Keras cache (~/.keras) and the published origin pointed at the server."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(URL_ENV, server[0])
    return tmp_path / "home" / ".keras" / "models"


def _pairs(source, target):
    return list(zip(_weighted_layers(source), _weighted_layers(target)))


def _same(src_layer, dst_layer):
    return all(np.array_equal(a.ravel(), b.ravel())
               for a, b in zip(src_layer.get_weights(), dst_layer.get_weights()))


def test_published_files_are_keras_applications_own():
    from tf_keras.src.applications import efficientnet, mobilenet_v3

    v3 = imagenet_file("mobilenet_v3_large", 1.0, 224)
    assert v3.url == (mobilenet_v3.BASE_WEIGHT_PATH + "weights_mobilenet_v3_large_224_1.0_float.h5")
    assert v3.file_hash == mobilenet_v3.WEIGHTS_HASHES["large_224_1.0_float"][0]
    small = imagenet_file("mobilenet_v3_small", 1.0, 224, minimalistic=True)
    assert small.file_name == "weights_mobilenet_v3_small_minimalistic_224_1.0_float.h5"
    b2 = imagenet_file("efficientnet_b2")
    assert b2.url == "https://storage.googleapis.com/keras-applications/efficientnetb2.h5"
    assert b2.file_hash == efficientnet.WEIGHTS_HASHES["b2"][0]
    v1 = imagenet_file("mobilenet_v1", 0.75, 160)
    assert v1.url.endswith("/keras-applications/mobilenet/mobilenet_7_5_160_tf.h5")
    assert v1.file_hash is None  # keras.applications publishes none for v1 / v2
    v2 = imagenet_file("mobilenet_v2", 0.35, 96)
    assert v2.file_name == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96.h5"
    assert imagenet_file("mobilenet_v2", 1.4, 300).file_name.endswith("_1.4_224.h5")
    with pytest.raises(ValueError, match="no published Keras weights for shufflenet_v2"):
        imagenet_file("shufflenet_v2")
    with pytest.raises(ValueError, match="at alpha 0.3; published: 0.25, 0.5, 0.75, 1"):
        imagenet_file("mobilenet_v1", 0.3)
    with pytest.raises(ValueError, match=r"minimalistic\) at alpha 0.75"):
        imagenet_file("mobilenet_v3_small", 0.75, minimalistic=True)


def test_download_checks_the_hash_and_caches(published, server, tmp_path):
    base, hits = server
    url = f"{base}/{KERAS_PATH}{FILE}"
    good = WeightsFile(FILE, url, published[2])
    before = len(hits)
    path = fetch(good, cache_dir=tmp_path / "cache")
    assert path == tmp_path / "cache" / "models" / FILE
    assert path.read_bytes() == (published[0] / KERAS_PATH / FILE).read_bytes()
    assert len(hits) == before + 1
    assert fetch(good, cache_dir=tmp_path / "cache") == path  # from the cache
    assert len(hits) == before + 1
    with pytest.raises(ValueError, match="failed its hash check"):
        fetch(WeightsFile(FILE, url, "0" * 32), cache_dir=tmp_path / "other")
    assert len(hits) == before + 2


def test_offline_error_names_file_url_and_place(tmp_path):
    with pytest.raises(WeightsUnavailable) as info:
        fetch(WeightsFile(FILE, "http://127.0.0.1:9/" + FILE, None), cache_dir=tmp_path)
    message = str(info.value)
    assert FILE in message and "http://127.0.0.1:9/" + FILE in message
    assert str(tmp_path / "models" / FILE) in message


def test_create_model_imagenet_and_path(published, offline_home, server):
    _, source, _ = published
    model = create_model("mobilenet_v1", alpha=ALPHA, resolution=RES, weights="imagenet")
    assert (offline_home / FILE).is_file()
    assert all(_same(s, d) for s, d in _pairs(source, model))  # every layer, head included
    hits = len(server[1])
    again = create_model("mobilenet_v1", alpha=ALPHA, resolution=RES,
                         weights=offline_home / FILE)  # a local PATH
    assert len(server[1]) == hits
    assert all(_same(s, d) for s, d in _pairs(source, again))


def test_ten_class_head_on_a_thousand_class_file(published, offline_home):
    _, source, _ = published
    model = create_model("mobilenet_v1", alpha=ALPHA, resolution=RES, num_classes=10,
                         weights="imagenet")
    pairs = _pairs(source, model)
    assert all(_same(s, d) for s, d in pairs[:-1])  # the backbone
    assert model.layers[-1].output_shape[-1] == 10 and not _same(*pairs[-1])
    with pytest.raises(ValueError, match="no published Keras weights for squeezenet_1_0"):
        create_model("squeezenet_1_0", resolution=64, weights="imagenet")


def _train(run_dir, **settings):
    from mobilekit.train import trainer

    config = trainer.resolve_config("mobilenet_v1", alpha=ALPHA, resolution=RES,
                                    data="synthetic:train=8,val=4", batch_size=16,
                                    precise_bn=2, **settings)
    return trainer.train(config, run_dir, verbose=0)


def test_frozen_phase_then_fine_tune_and_resume(published, offline_home, tmp_path):
    from mobilekit.loading import load_keras

    _, source, md5 = published
    run_dir = tmp_path / "run"
    _train(run_dir, weights="imagenet", freeze_epochs=1, epochs=1, lr=0.05)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["weights_file"]["source"] == "imagenet"
    assert config["weights_file"]["file"] == FILE and config["weights_file"]["url"].endswith(FILE)
    assert config["weights_file"]["sha256"] == hashlib.sha256(
        (offline_home / FILE).read_bytes()).hexdigest()
    assert config["mean"] == [127.5] * 3 and config["std"] == [127.5] * 3
    assert [p["name"] for p in config["phases"]] == ["head"]
    head_only = load_keras(run_dir / "model.keras")
    pairs = _pairs(source, head_only)
    # Backbone bit-identical (kernels and BatchNorm statistics); the new head trained.
    assert all(_same(s, d) for s, d in pairs[:-1])
    assert head_only.layers[-1].output_shape[-1] == 10

    from mobilekit.cli.train_cmds import _config_for_resume
    from mobilekit.train import rundir, trainer

    resumed = dict(_config_for_resume(rundir.load_run(run_dir)), epochs=2)
    metrics = trainer.train(resumed, run_dir, resume=True, verbose=0)
    assert metrics["epochs_completed"] == 2
    config = json.loads((run_dir / "config.json").read_text())
    assert [(p["name"], p["first_epoch"], p["last_epoch"]) for p in config["phases"]] == [
        ("head", 1, 1), ("fine-tune", 2, 2)]
    assert config["phases"][1]["lr"] == pytest.approx(0.005)
    ckpt = run_dir / "checkpoints" / "epoch-0002"
    state = json.loads((ckpt / "state.json").read_text())
    # A fresh optimizer for the new phase: one epoch of steps, not two.
    assert state["optimizer_iterations"] == config["steps_per_epoch"] == 5  # 80 images / 16
    tuned = create_model("mobilenet_v1", alpha=ALPHA, resolution=RES, num_classes=10)
    rundir.restore_checkpoint(ckpt, {"model": tuned})
    assert not any(_same(s, d) for s, d in _pairs(source, tuned)[:-1])  # all of it trained


def test_freeze_needs_pretrained_weights():
    from mobilekit.train import trainer

    with pytest.raises(ValueError, match="--freeze-epochs trains a new head"):
        trainer.resolve_config("mobilenet_v1", freeze_epochs=1)
    with pytest.raises(ValueError, match=r"freeze_epochs must be an integer in \[0, epochs=3\]"):
        trainer.resolve_config("mobilenet_v1", weights="imagenet", freeze_epochs=4, epochs=3)


def test_cards_list_exactly_the_published_files():
    from mobilekit.zoo.registry import get_card, list_models

    with_weights = set()
    for name in list_models():
        try:
            card = get_card(name).get("pretrained")
        except FileNotFoundError:
            card = None
        if card is None:
            with pytest.raises(ValueError, match=f"no published Keras weights for {name}"):
                imagenet_file(name)
            continue
        with_weights.add(name)
        grid = [(a, r, False) for a in card["alphas"] for r in card["resolutions"] or [224]]
        grid += [(a, 224, True) for a in card.get("minimalistic_alphas", [])]
        files = {imagenet_file(name, a, r, m).file_name for a, r, m in grid}
        assert len(files) == len(grid)  # one published file per listed combination
        assert all(imagenet_file(name, a, r, m).file_hash is not None
                   for a, r, m in grid) == card["file_hash"].startswith("md5")
    assert with_weights == {"mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large",
                            "mobilenet_v3_small", "efficientnet_b0", "efficientnet_b1",
                            "efficientnet_b2", "efficientnet_b3"}


def test_cli_offline_and_unpublished_errors(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mobilekit.cli import cli

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv(URL_ENV, "http://127.0.0.1:9")  # nothing listens on the discard port
    result = CliRunner().invoke(cli, ["train", "--model", "mobilenet_v1", "--alpha", "0.25",
                                      "--weights", "imagenet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(error) == 1 and "mobilenet_2_5_224_tf.h5" in error[0]
    assert "http://127.0.0.1:9/tensorflow/keras-applications/mobilenet/" in error[0]
    assert str(tmp_path / ".keras" / "models" / "mobilenet_2_5_224_tf.h5") in error[0]
    result = CliRunner().invoke(cli, ["train", "--model", "shufflenet_v2", "--weights",
                                      "imagenet", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "Error: no published Keras weights for shufflenet_v2" in result.output


def test_a_mobilekit_run_as_weights_source_keeps_its_normalisation(tmp_path):
    """Fine-tuning from another run's model.keras: the backbone saw that run's statistics."""
    from mobilekit.train import rundir
    from mobilekit.train.trainer import _source_normalisation

    run = tmp_path / "source"
    run.mkdir()
    rundir.write_config(run, {"model": "mobilenet_v1", "mean": [128.9, 123.5, 128.8],
                              "std": [75.3, 75.0, 75.9]})
    assert _source_normalisation(run / "model.keras") == ([128.9, 123.5, 128.8],
                                                          [75.3, 75.0, 75.9])
    assert _source_normalisation(tmp_path / "mobilenet_1_0_224_tf.h5") is None


def _source_run(run, names, resolution=RES):
    """A mobilekit run folder (model.keras + config.json) trained on `names`, in that order."""
    from mobilekit.train import rundir

    run.mkdir()
    model = create_model("mobilenet_v1", alpha=ALPHA, resolution=resolution,
                         num_classes=len(names))
    rng = np.random.default_rng(1)  # a head whose columns differ clearly
    head = model.layers[-1]
    head.set_weights([rng.normal(0, 1, w.shape).astype(w.dtype) for w in head.get_weights()])
    model.save(run / "model.keras")
    rundir.write_config(run, {"model": "mobilenet_v1", "class_names": list(names),
                              "mean": [120.0] * 3, "std": [70.0] * 3, "resolution": resolution})
    return model


def test_match_head_reorders_by_name_or_starts_a_new_head():
    from mobilekit.zoo.weights import head_plan, match_head

    source = create_model("mobilenet_v1", alpha=ALPHA, resolution=RES, num_classes=4)
    images = np.random.default_rng(0).normal(0, 1, (3, RES, RES, 3)).astype("float32")
    before = source.predict(images, verbose=0)
    names = ["disk", "square", "triangle", "ring"]
    target = keras.models.clone_model(source)
    target.set_weights(source.get_weights())
    assert match_head(target, names, sorted(names)) == "reordered"
    order = [names.index(n) for n in sorted(names)]
    np.testing.assert_allclose(target.predict(images, verbose=0), before[:, order], rtol=1e-6)
    assert match_head(target, sorted(names), sorted(names)) == "kept"
    fresh = keras.models.clone_model(source)
    fresh.set_weights(source.get_weights())
    assert match_head(fresh, names, ["a", "b", "c", "d"]) == "new"
    assert all(_same(s, d) for s, d in _pairs(source, fresh)[:-1])  # backbone untouched
    assert not _same(*_pairs(source, fresh)[-1])
    assert head_plan(names, names) == "kept"


def test_a_source_run_with_the_same_classes_in_another_order_keeps_its_predictions(tmp_path):
    """Regression: a 10-class synthetic-data run fine-tuned on a folder of the same 10
    classes (listed alphabetically) kept its head column for column, so every prediction
    named the wrong class and validation fell below chance (5.4 % at the phase boundary).
    The head must answer in the folder's order: same logits, columns reordered by name."""
    from PIL import Image

    from mobilekit.data import synthetic
    from mobilekit.loading import load_keras

    names = list(synthetic.CLASS_NAMES[:4])  # disk, square, triangle, ring
    source = _source_run(tmp_path / "source", names)
    folder = tmp_path / "photos"
    for split, per in (("train", 2), ("val", 1)):
        images, labels = synthetic.generate(split, RES, per_class=per, seed=7, num_classes=4)
        for i, (image, label) in enumerate(zip(images, labels)):
            (folder / split / names[label]).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / names[label] / f"{i}.png")
    from mobilekit.train import trainer

    config = trainer.resolve_config("mobilenet_v1", alpha=ALPHA, resolution=RES,
                                    data=str(folder), batch_size=4, precise_bn=0, epochs=1,
                                    freeze_epochs=1, lr=0.0, fine_tune_lr=1e-3,
                                    weights=str(tmp_path / "source" / "model.keras"))
    trainer.train(config, tmp_path / "run", verbose=0)
    written = json.loads((tmp_path / "run" / "config.json").read_text())
    assert written["class_names"] == sorted(names) != names
    assert written["weights_file"]["class_names"] == names
    tuned = load_keras(tmp_path / "run" / "model.keras")  # lr 0: only the reordering
    images = np.random.default_rng(0).normal(0, 1, (3, RES, RES, 3)).astype("float32")
    order = [names.index(n) for n in sorted(names)]
    np.testing.assert_allclose(tuned.predict(images, verbose=0),
                               source.predict(images, verbose=0)[:, order], rtol=1e-5,
                               atol=1e-5)


def test_a_source_run_at_another_resolution_warns_once(tmp_path, capsys):
    from mobilekit.train import rundir, trainer

    run = tmp_path / "source"
    run.mkdir()
    (run / "model.keras").write_bytes(b"not read here")
    rundir.write_config(run, {"model": "mobilenet_v1", "class_names": ["a", "b"],
                              "mean": [120.0] * 3, "std": [70.0] * 3, "resolution": 64})
    config = trainer.resolve_config("mobilenet_v1", alpha=ALPHA, resolution=128,
                                    weights=str(run / "model.keras"))
    config = trainer._pretrained(config)
    assert config["weights_file"]["resolution"] == 64
    assert config["weights_file"]["class_names"] == ["a", "b"]
    err = capsys.readouterr().err
    assert err.count("warning: the weights were trained at 64 px and this run trains at "
                     "128 px") == 1
    trainer._pretrained(dict(config, resolution=64, mean=None))
    assert "warning" not in capsys.readouterr().err
