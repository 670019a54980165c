"""Our models vs keras.applications: equal trainable counts, weight import, equal outputs."""
import numpy as np
import pytest

from mobilekit.keras import keras
from mobilekit.zoo.registry import create_model
from mobilekit.zoo.weights import KERAS_APPLICATIONS, keras_application


def _trainable(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# (name, kwargs): default sizes for the count, since counts do not depend on resolution.
PARITY = [
    ("mobilenet_v1", dict(alpha=1.0)), ("mobilenet_v1", dict(alpha=0.25)),
    ("mobilenet_v2", dict(alpha=1.0)), ("mobilenet_v2", dict(alpha=1.4)),
    ("mobilenet_v2", dict(alpha=0.35)),
    ("mobilenet_v3_large", dict(alpha=1.0)), ("mobilenet_v3_large", dict(alpha=0.75)),
    ("mobilenet_v3_large", dict(alpha=1.0, minimalistic=True)),
    ("mobilenet_v3_small", dict(alpha=1.0)), ("mobilenet_v3_small", dict(alpha=0.75)),
    ("mobilenet_v3_small", dict(alpha=1.0, minimalistic=True)),
    ("efficientnet_b0", {}), ("efficientnet_b1", {}), ("efficientnet_b2", {}),
    ("efficientnet_b3", {}),
]


# The fast tier (`pytest -m "not slow"`) keeps one case per kind of block; the rest is slow.
FAST_PARITY = {("mobilenet_v1", "{'alpha': 0.25}"), ("mobilenet_v2", "{'alpha': 0.35}")}


def _tiered(cases, ids, fast):
    return [pytest.param(*case, id=i, marks=() if i in fast else pytest.mark.slow)
            for case, i in zip(cases, ids)]


@pytest.mark.parametrize("name,kwargs", _tiered(
    PARITY, [f"{n}-{k}" for n, k in PARITY],
    {f"{n}-{k}" for n, k in FAST_PARITY}))
def test_trainable_params_equal_keras_applications(name, kwargs):
    ours = create_model(name, **kwargs)
    theirs = keras_application(name, ours.inputs[0].shape[1:], **kwargs)
    assert _trainable(ours) == _trainable(theirs)


IMPORT = [("mobilenet_v1", dict(alpha=0.25), 64, False),
          ("mobilenet_v2", dict(alpha=0.35), 64, True),
          ("mobilenet_v3_large", dict(alpha=0.75), 64, True),
          ("mobilenet_v3_small", dict(alpha=1.0, minimalistic=True), 64, False),
          ("efficientnet_b0", {}, 64, True)]


def _randomise_bn(model, rng):
    """Random BN statistics so a wrong mapping of moving stats cannot go unnoticed."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


@pytest.mark.parametrize("name,kwargs,res,whole_model",
                         _tiered(IMPORT, [i[0] for i in IMPORT], {"mobilenet_v2"}))
def test_weight_import_matches_keras_outputs(tmp_path, name, kwargs, res, whole_model):
    rng = np.random.default_rng(0)
    theirs = keras_application(name, (res, res, 3), num_classes=10, **kwargs)
    _randomise_bn(theirs, rng)
    if whole_model:
        path = tmp_path / f"{name}.keras"
        theirs.save(path)
    else:
        path = tmp_path / f"{name}.weights.h5"
        path = tmp_path / f"{name}.h5"
        theirs.save_weights(path)
    ours = create_model(name, resolution=res, num_classes=10, classifier_activation="softmax",
                        weights=str(path), **kwargs)
    x = rng.uniform(0, 255, (2, res, res, 3)).astype("float32")
    expected = theirs(x, training=False).numpy()
    # keras EfficientNet rescales by 1/255 inside the model; mobilekit does it in the pipeline.
    ours_in = x / 255.0 if name.startswith("efficientnet") else x
    got = ours(ours_in, training=False).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.slow  # ~9 s; test_pretrained covers the importer's errors in the fast tier
def test_weight_import_rejects_other_architecture(tmp_path):
    other = keras_application("mobilenet_v2", (64, 64, 3), num_classes=10, alpha=0.35)
    path = tmp_path / "v2.keras"
    other.save(path)
    with pytest.raises(ValueError, match="not the same architecture|does not fit"):
        create_model("mobilenet_v1", alpha=0.25, resolution=64, num_classes=10, weights=str(path))


def test_weight_import_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        create_model("mobilenet_v1", alpha=0.25, resolution=64, weights=str(tmp_path / "no.h5"))


def test_every_keras_twin_is_registered():
    from mobilekit.zoo.registry import list_models

    assert set(KERAS_APPLICATIONS) <= set(list_models())
