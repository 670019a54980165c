"""RegNet (exact pycls counts, width quantization, design-space constraints), GhostNet
blocks, the Shift layer (NumPy reference, TFLite builtins, zero MACs) and .keras round-trips."""
import csv
import functools
import math
from pathlib import Path

import numpy as np
import pytest

from mobilekit.keras import keras, layers
from mobilekit.layers.ghost import ChannelSlice, ghost_module
from mobilekit.layers.shift import Shift
from mobilekit.profile import profile_model
from mobilekit.zoo import regnet as R
from mobilekit.zoo.registry import create_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DESIGN_CSV = SHARED / "reference" / "regnet_design.csv"


@functools.lru_cache(maxsize=None)
def pycls_rows():
    if not DESIGN_CSV.is_file():
        pytest.skip(f"{DESIGN_CSV} not found")
    with open(DESIGN_CSV, newline="") as f:
        return {r["model"].lower().replace("-", "_"): r for r in csv.DictReader(f)}


def _ints(text):
    return [int(v) for v in text.split("/")]


# ------------------------------------------------------------------ RegNet


def test_design_table_matches_the_pycls_configs():
    rows = pycls_rows()
    assert sorted(rows) == sorted(R.REGNET_DESIGNS)
    for name, row in rows.items():
        d = R.design(name)
        assert (d["depth"], d["w0"], d["group_width"]) == (
            int(row["depth_d"]), int(row["w0"]), int(row["group_width_g"]))
        assert (d["wa"], d["wm"], d["bottleneck_ratio"], d["se_ratio"]) == (
            float(row["wa"]), float(row["wm"]), float(row["bottleneck_b"]), float(row["se_ratio"]))


def test_width_quantization_reproduces_pycls_and_torchvision_stages():
    x400 = R.regnet_stages(22, 24, 24.48, 2.54, 16)
    assert [s[0] for s in x400] == [32, 64, 160, 384]  # 392/16 = 24.5 rounds to even -> 384
    assert [s[1] for s in x400] == [1, 2, 7, 12]
    y800 = R.regnet_stages(14, 56, 38.84, 2.4, 16)
    assert [s[0] for s in y800] == [64, 128, 320, 768]  # 8.5 -> 8, 48.5 -> 48
    assert [s[1] for s in y800] == [1, 3, 8, 2]
    for name, row in pycls_rows().items():
        d = R.design(name)
        args = (d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"], d["bottleneck_ratio"])
        stages = R.regnet_stages(*args)
        assert [s[0] for s in stages] == _ints(row["stage_widths_pycls"]), name
        assert [s[1] for s in stages] == _ints(row["stage_depths_pycls"]), name
        if row["stage_widths_torchvision"]:
            tv = R.regnet_stages(*args, width_rounding="torchvision")
            assert [s[0] for s in tv] == _ints(row["stage_widths_torchvision"]), name


def _bias_adds(profile, model):
    """pycls counts one add per bias output element; our MACs do not."""
    total = 0
    for layer, row in zip([lay for lay in model.layers if not isinstance(lay, layers.InputLayer)],
                          profile["layers"]):
        if getattr(layer, "use_bias", False) and row["macs"]:
            total += row["activations"]
    return total


@pytest.mark.parametrize("name", sorted(R.REGNET_DESIGNS))
def test_named_regnet_equals_pycls_counts(name):
    row = pycls_rows()[name]
    model = create_model(name)
    profile = profile_model(model)
    assert profile["trainable_params"] == int(row["params_pycls"])
    flops = int(row["flops_pycls_macs"])
    assert abs(profile["macs"] - flops) / flops < 1e-3
    assert profile["macs"] + _bias_adds(profile, model) == flops  # the architecture is exact
    d = R.design(name)
    stages = R.regnet_stages(d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"])
    cx = R.regnet_complexity(stages, d["se_ratio"])
    assert (cx["macs"], cx["flops"], cx["trainable_params"]) == (profile["macs"], flops,
                                                                 profile["trainable_params"])
    assert cx["conv_activations"] == R.conv_activations(profile)


@pytest.mark.slow  # ~20 s; the named RegNet counts stay fast
def test_constraints_on_a_sampled_model_match_the_formulas():
    rng = np.random.default_rng(7)
    kwargs = R.sample_regnet(rng, flops_range=(150e6, 250e6))
    profile = profile_model(create_model("regnet", resolution=224, **kwargs))
    assert 150e6 <= profile["macs"] <= 250e6
    stages = R.regnet_stages(kwargs["depth"], kwargs["w0"], kwargs["wa"], kwargs["wm"],
                             kwargs["group_width"], kwargs["bottleneck_ratio"])
    cx = R.regnet_complexity(stages)
    assert (cx["macs"], cx["trainable_params"]) == (profile["macs"], profile["trainable_params"])
    assert cx["conv_activations"] == R.conv_activations(profile)
    got = R.regnet_constraints(profile)
    flops_b = profile["macs"] / 1e9
    acts_m = sum(r["activations"] for r in profile["layers"] if r["macs"] > 0) / 1e6
    assert got["activations_ok"] == (acts_m <= 6.5 * math.sqrt(flops_b))
    assert got["params_ok"] == (profile["trainable_params"] / 1e6 <= 3.0 + 5.5 * flops_b)
    assert got["ok"] == (got["activations_ok"] and got["params_ok"])
    assert got == R.regnet_constraints(cx)


def test_sampler_stays_in_the_space_and_constraints_split_it():
    rng = np.random.default_rng(0)
    verdicts = []
    for _ in range(25):
        d = R.sample_regnet(rng, flops_range=(360e6, 440e6))
        assert 1 <= d["depth"] <= 63 and d["w0"] % 8 == 0 and 8 <= d["w0"] < 256
        assert 0 < d["wa"] <= 256 and 1.5 <= d["wm"] <= 3.0
        assert d["group_width"] in (1, 2, 4, 8, 16, 32)
        assert d["bottleneck_ratio"] in (1.0, 0.5, 0.25)
        stages = R.regnet_stages(d["depth"], d["w0"], d["wa"], d["wm"], d["group_width"],
                                 d["bottleneck_ratio"])
        assert len(stages) == 4
        cx = R.regnet_complexity(stages)
        assert 360e6 <= cx["macs"] <= 440e6
        verdicts.append(R.regnet_constraints(cx)["ok"])
    assert any(verdicts) and not all(verdicts)  # the constraints really cut the space


def test_regnet_rejects_bad_design_values():
    with pytest.raises(ValueError, match="w0 must be a positive multiple of 8; got 20"):
        create_model("regnet", w0=20)
    with pytest.raises(ValueError, match="width_rounding must be one of pycls, torchvision"):
        create_model("regnetx_200mf", width_rounding="timm")


# ------------------------------------------------------------------ GhostNet


@pytest.mark.parametrize("out", [16, 15])
def test_ghost_module_channels_and_cost(out):
    inputs = layers.Input((8, 8, 12))
    y = ghost_module(inputs, out, "g")
    model = keras.Model(inputs, y)
    assert y.shape[-1] == out
    has_slice = any(isinstance(lay, ChannelSlice) for lay in model.layers)
    assert has_slice == (out % 2 == 1)
    init = math.ceil(out / 2)
    # primary 1x1 (12 -> init) + depthwise 3x3 on init channels, on an 8x8 map
    assert profile_model(model)["macs"] == 64 * (12 * init + 9 * init)
    x = np.random.default_rng(0).normal(size=(1, 8, 8, 12)).astype("float32")
    primary = keras.Model(inputs, model.get_layer("g_primary_act").output)
    np.testing.assert_allclose(model(x).numpy()[..., :init], primary(x).numpy(), rtol=1e-6)


# ------------------------------------------------------------------ Shift


def shift_numpy(x, k):
    """Independent reference: C // k^2 channels per offset in row-major window order, the
    remainder with the centre; out[y, x] = in[y + dy, x + dx], zero outside."""
    c = x.shape[-1]
    sizes = [c // (k * k)] * (k * k)
    sizes[(k * k) // 2] += c % (k * k)
    bounds = np.cumsum([0] + sizes)
    out = np.zeros_like(x)
    h, w = x.shape[1:3]
    for g in range(k * k):
        dy, dx = g // k - k // 2, g % k - k // 2
        chans = slice(bounds[g], bounds[g + 1])
        ys, xs = slice(max(0, -dy), min(h, h - dy)), slice(max(0, -dx), min(w, w - dx))
        src_y, src_x = slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)
        out[:, ys, xs, chans] = x[:, src_y, src_x, chans]
    return out


@pytest.mark.parametrize("k,channels", [(3, 20), (3, 7), (5, 30)])
def test_shift_matches_numpy(k, channels):
    x = np.random.default_rng(k).normal(size=(2, 6, 7, channels)).astype("float32")
    got = Shift(k)(x).numpy()
    np.testing.assert_array_equal(got, shift_numpy(x, k))
    if channels >= k * k:  # every offset is used: not the identity
        assert not np.array_equal(got, x)


def test_shift_profile_and_tflite_builtins():
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.convert import convert
    from mobilekit.export.report import analyze

    inputs = layers.Input((8, 8, 20))
    model = keras.Model(inputs, Shift(3, name="shift")(inputs))
    profile = profile_model(model)
    assert (profile["macs"], profile["params"], profile["receptive_field"]) == (0, 0, 3)
    assert Shift.QUANT == "passthrough"
    tflite = convert(model, "fp32")
    ops = analyze(tflite)["ops"]
    assert ops and not any(op.startswith("Flex") or op == "CUSTOM" for op in ops), ops
    assert set(ops) <= {"STRIDED_SLICE", "SLICE", "PAD", "PADV2", "CONCATENATION"}, ops
    interp = Interpreter(model_content=tflite)
    interp.allocate_tensors()
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 20)).astype("float32")
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    np.testing.assert_array_equal(out, shift_numpy(x, 3))


@pytest.mark.parametrize("k,channels", [(3, 20), (5, 30)])
def test_shift_int8_stand_in_is_one_exact_depthwise_conv(k, channels):
    from mobilekit.export.convert import convert
    from mobilekit.export.delegable import DelegableShift, delegable_clone
    from mobilekit.export.report import analyze

    x = np.random.default_rng(k).normal(size=(2, 6, 7, channels)).astype("float32")
    np.testing.assert_array_equal(DelegableShift(k)(x).numpy(), shift_numpy(x, k))
    inputs = layers.Input((6, 7, channels))
    model = keras.Model(inputs, Shift(k, name="shift")(inputs))
    assert type(delegable_clone(model).get_layer("shift")) is DelegableShift
    calib = np.random.default_rng(0).uniform(-2, 2, (16, 6, 7, channels)).astype("float32")
    report = analyze(convert(model, "int8", calib))
    assert report["ops"] == {"DEPTHWISE_CONV_2D": 1}, report["ops"]
    assert report["float_ops"] == 0 and report["xnnpack"]["partitions"] == 1


def test_shift_rejects_even_kernel():
    with pytest.raises(ValueError, match="positive odd integer; got 2"):
        Shift(2)


# ------------------------------------------------------------------ references


def _trainable(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.slow  # ~9 s of large models
def test_xception_and_keras_style_resnet50_match_keras_applications():
    apps = keras.applications
    ours = create_model("xception", include_top=False, resolution=299)
    theirs = apps.Xception(weights=None, include_top=False, input_shape=(299, 299, 3))
    assert _trainable(ours) == _trainable(theirs) == 22855952 - (2048 * 1000 + 1000)
    assert ours.count_params() == theirs.count_params()
    ours = create_model("resnet50", include_top=False, stride_in_1x1=True, use_bias=True)
    theirs = apps.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    assert ours.count_params() == theirs.count_params()
    assert ours.output_shape == theirs.output_shape


def test_vgg16_signal_reaches_the_head_at_init():
    # No BatchNorm: with Glorot weights block5's output was ~1/40 of He's (0.003 vs 0.12 std
    # on unit-normal 64 px inputs); torchvision's He fan-out init keeps it at the order of
    # the first conv's output, each conv with its own weights.
    keras.utils.set_random_seed(0)
    model = create_model("vgg16", resolution=64, num_classes=10)
    x = np.random.default_rng(0).normal(0, 1, (4, 64, 64, 3)).astype(np.float32)
    probe = keras.Model(model.input, [model.get_layer("block1_conv1").output,
                                      model.get_layer("block5_conv3").output])
    first, last = (np.asarray(t).std() for t in probe(x))
    assert 0.1 < last / first < 10
    kernels = [model.get_layer(f"block5_conv{c}").get_weights()[0] for c in (1, 2, 3)]
    assert not np.array_equal(kernels[0], kernels[1])


# ------------------------------------------------------------------ round-trips


@pytest.mark.parametrize("name,kwargs", [
    pytest.param("ghostnet", {"alpha": 0.5, "resolution": 32, "num_classes": 5},
                 marks=pytest.mark.slow),  # ~11 s; shiftnet keeps custom layers fast
    ("shiftnet", {"alpha": 0.5, "resolution": 32, "num_classes": 5}),
])
def test_keras_round_trip(tmp_path, name, kwargs):
    model = create_model(name, **kwargs)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"Lambda", "TFOpLambda", "SlicingOpLambda"}, kinds
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-6)
