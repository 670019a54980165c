"""Registry, validation, profiler, save/load and CLI behaviour of the foundation."""
import json

import numpy as np
import pytest

import mobilekit
from mobilekit.keras import keras, layers
from mobilekit.layers import make_divisible
from mobilekit.profile import profile_model
from mobilekit.zoo.efficientnet import compound_coefficients

FOUNDATION = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
              "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
              "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2",
              "efficientnet_lite3", "efficientnet_lite4", "mnasnet_a1"]


def test_foundation_names_registered():
    assert set(FOUNDATION) <= set(mobilekit.list_models())


def test_every_model_has_a_card():
    for name in mobilekit.list_models():
        card = mobilekit.get_card(name)
        assert card["name"] == name
        assert card["family"]


def test_unknown_model_suggests_a_name():
    with pytest.raises(ValueError, match="Did you mean 'mobilenet_v2'"):
        mobilekit.create_model("mobilenet_v9")


@pytest.mark.parametrize("kwargs,message", [
    (dict(alpha=-1), r"alpha must be in \(0, 4\]; got -1"),
    (dict(alpha=0), r"alpha must be in \(0, 4\]"),
    (dict(resolution=7), r"must be >= 32 .*got 7"),
    (dict(num_classes=0), "num_classes must be a positive integer"),
    (dict(dropout=1.5), r"dropout must be in \[0, 1\)"),
    (dict(colour="red"), "unknown argument for mobilenet_v1 'colour'"),
])
def test_bad_arguments_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mobilekit.create_model("mobilenet_v1", **kwargs)


def test_make_divisible_matches_reference_rule():
    # Values from the MobileNetV2 reference implementation's rounding.
    assert make_divisible(32 * 0.35) == 16
    assert make_divisible(1280 * 1.4) == 1792
    assert make_divisible(24 * 0.5) == 16
    assert make_divisible(16 * 0.75) == 16
    assert make_divisible(72 * 0.25) == 24


def test_efficientnet_compound_scaling_reproduces_published_coefficients():
    assert compound_coefficients(0) == (1.0, 1.0, 224)
    assert compound_coefficients(0.5) == (1.0, 1.1, 240)
    assert compound_coefficients(1) == (1.1, 1.2, 260)
    assert compound_coefficients(2) == (1.2, 1.4, 300)


def test_profile_counts_by_hand_on_a_small_model():
    inputs = layers.Input((8, 8, 3))
    x = layers.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(inputs)  # 4x4x4
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)  # 4x4x4
    x = layers.Conv2D(6, 1, groups=2, use_bias=False)(x)  # grouped 1x1
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(5)(x)
    p = profile_model(keras.Model(inputs, x))
    conv, dw, group, _, dense = [r for r in p["layers"]]
    assert conv["macs"] == 4 * 4 * 4 * 3 * 3 * 3
    assert dw["macs"] == 4 * 4 * 4 * 3 * 3
    assert group["macs"] == 4 * 4 * 6 * 2  # each output sees cin / groups = 2 channels
    assert dense["macs"] == 6 * 5
    assert p["macs"] == sum(r["macs"] for r in p["layers"])
    assert p["params"] == 4 * 27 + 4 * 9 + 6 * 2 + 6 * 5 + 5
    assert conv["memory_access"] == 8 * 8 * 3 + 4 * 4 * 4 + 108
    # receptive field: 3 (conv s2) -> +2*2 (dw 3x3 at jump 2) = 7, output stride 2
    assert (p["receptive_field"], p["output_stride"]) == (7, 2)


def test_profile_keys_and_totals():
    p = profile_model(mobilekit.create_model("mobilenet_v1", alpha=0.25, resolution=128))
    for key in ("model", "params", "trainable_params", "macs", "activations", "layers"):
        assert key in p
    for key in ("name", "type", "output_shape", "params", "macs"):
        assert key in p["layers"][0]
    assert p["params"] == sum(r["params"] for r in p["layers"])
    assert p["output_stride"] == 32


@pytest.mark.parametrize("name,kwargs", [("mobilenet_v3_small", dict(alpha=0.75)),
                                         pytest.param("efficientnet_b0", {},
                                                      marks=pytest.mark.slow)])
def test_keras_save_load_round_trip(tmp_path, name, kwargs):
    model = mobilekit.create_model(name, resolution=32, num_classes=5, **kwargs)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode: only registered layers allowed
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    custom = {type(layer).__name__ for layer in loaded.layers} & {"HardSwish", "HardSigmoid",
                                                                   "Swish", "GateScale"}
    assert custom, "the round trip must exercise the custom layers"


def test_load_keras_needs_no_prior_imports(tmp_path):
    """mobilekit.loading.load_keras registers every custom layer itself: a fresh process that
    imports nothing else loads a model full of them (hard-swish, SE, shift)."""
    import subprocess
    import sys

    paths = []
    for name in ("mobilenet_v3_small", "shiftnet"):
        paths.append(str(tmp_path / f"{name}.keras"))
        mobilekit.create_model(name, alpha=0.25, resolution=32, num_classes=3).save(paths[-1])
    code = ("import sys; from mobilekit.loading import load_keras\n"
            "for p in sys.argv[1:]: print(load_keras(p).name)")
    result = subprocess.run([sys.executable, "-c", code, *paths], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(result.stdout.split()) == 2


def test_cli_profile_json(mobilekit_cli):
    r = mobilekit_cli("profile", "--model", "mobilenet_v1", "--alpha", "0.75",
                      "--resolution", "160", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["model"] == "mobilenet_v1"
    from mobilekit.zoo.weights import keras_application

    twin = keras_application("mobilenet_v1", (160, 160, 3), alpha=0.75)
    assert data["trainable_params"] == sum(int(np.prod(w.shape)) for w in twin.trainable_weights)
    assert abs(data["macs"] / 1e6 - 162) / 162 < 0.03  # TF-slim 0.75_160: 162 M


@pytest.mark.parametrize("args,needle", [
    (["--model", "mobilenet_v9"], "Did you mean 'mobilenet_v2'"),
    pytest.param(["--model", "mobilenet_v1", "--alpha", "-1"], "alpha must be in (0, 4]; got -1",
                 marks=pytest.mark.slow),  # a subprocess each: one stays in the fast tier
    pytest.param(["--model", "mobilenet_v1", "--resolution", "7"], "got 7",
                 marks=pytest.mark.slow),
])
def test_cli_bad_input_is_one_line_and_exit_2(mobilekit_cli, args, needle):
    r = mobilekit_cli("profile", *args)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and needle in errors[0], r.stderr
    assert "Traceback" not in r.stderr
