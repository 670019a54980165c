"""quant-doctor: planted int8 culprits are ranked first and their remedy is measured to work.

One tiny CNN (32x32, 4 synthetic classes) is trained once; each fault is planted by weight
surgery that leaves the float function (almost) unchanged, so the float top-1 stays the
trained one and only int8 suffers:
  outlier  conv1's channel 3 scaled x1000, conv2 reading it / 1000: one outlier channel
           stretches conv1's output range and flattens every other channel;
  dense    one unit of `hidden` made dead (bias far below zero) with weights x1000: under
           per-tensor quantization its scale rounds every other unit's weights to ~0;
  shift    conv3's output shifted by +300, taken back in conv4's BatchNorm (folded into
           conv4, so BN cannot absorb the shift of conv3's output tensor): int8 steps
           of the shifted range are bigger than conv3's whole signal.
"""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobilekit.cli import cli

SPEC = "synthetic:classes=4,train=100,val=50"
FAST = dict(calib_samples=64, eval_samples=200, bench_rounds=3, curve_sizes=())


def _base_model():
    from mobilekit.keras import keras

    L = keras.layers
    i = L.Input((32, 32, 3), name="input")
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv1")(i)
    x = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = L.Conv2D(16, 1, name="conv3")(x)
    x = L.Conv2D(16, 1, use_bias=False, name="conv4")(x)
    x = L.BatchNormalization(name="bn4")(x)
    x = L.ReLU(name="relu4")(x)
    x = L.GlobalAveragePooling2D(name="pool")(x)
    x = L.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(i, L.Dense(4, name="logits")(x), name="tiny")


def _arrays(split):
    from mobilekit.data import load_dataset

    ds, _ = load_dataset(SPEC, split, 32, 64, training=False)
    xs, ys = zip(*[(a.numpy(), b.numpy()) for a, b in ds])
    return np.concatenate(xs), np.concatenate(ys)


def _plant(model, fault, images):
    from mobilekit.keras import keras

    def get(name):
        return model.get_layer(name), model.get_layer(name).get_weights()

    if fault == "outlier":
        (c1, w1), (c2, w2) = get("conv1"), get("conv2")
        w1[0][..., 3] *= 1000
        w1[1][3] *= 1000
        w2[0][:, :, 3, :] /= 1000
        c1.set_weights(w1)
        c2.set_weights(w2)
    elif fault == "dense":
        probe = keras.Model(model.inputs, model.get_layer("pool").output)
        features = probe(images).numpy()
        (hidden, wh), (logits, wl) = get("hidden"), get("logits")
        unit = int(np.argmin(np.maximum(features @ wh[0] + wh[1], 0).mean(0)))
        wh[0][:, unit] *= 1000
        wh[1][unit] = -2 * float(np.abs(features @ wh[0][:, unit]).max()) - 1  # always off
        wl[0][unit, :] = 0
        hidden.set_weights(wh)
        logits.set_weights(wl)
    elif fault == "shift":
        (c3, w3), (c4, w4), (bn, wb) = get("conv3"), get("conv4"), get("bn4")
        w3[1] += 300.0
        wb[2] += 300.0 * w4[0].sum(axis=(0, 1, 2))
        c3.set_weights(w3)
        bn.set_weights(wb)
    return model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{fault: .keras path} of the trained tiny CNN, healthy and with each planted fault."""
    from mobilekit.loading import load_keras
    from mobilekit.keras import keras

    folder = tmp_path_factory.mktemp("doctor")
    x, y = _arrays("train")
    keras.utils.set_random_seed(0)
    model = _base_model()
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    paths = {"healthy": folder / "healthy.keras"}
    model.save(paths["healthy"])
    for fault in ("outlier", "dense", "shift"):
        paths[fault] = folder / f"{fault}.keras"
        _plant(load_keras(paths["healthy"]), fault, x[:256]).save(paths[fault])
    untrained = _base_model()
    paths["untrained"] = folder / "untrained.keras"
    untrained.save(paths["untrained"])
    return paths


@pytest.mark.parametrize("fault,culprit", [("outlier", "conv1"), ("dense", "hidden"),
                                           ("shift", "conv3")])
def test_planted_fault_ranked_first_and_cured(models, fault, culprit, tmp_path):
    from mobilekit.export.doctor import diagnose, write_report

    result = diagnose(str(models[fault]), data=SPEC, **FAST)
    assert result["ranked"][0] == culprit
    assert result["baseline"]["drop_points"] > 10  # the planted fault really hurts int8
    best = next(r for r in result["remedies"] if r["name"] == result["recommended"])
    assert best["drop_points"] <= result["target_drop"]
    # Early stop: the cure is the last remedy tried.
    assert result["remedies"][-1]["name"] == best["name"]
    assert result["summary"].startswith(f"int8 drop {result['baseline']['drop_points']:.1f}")
    out = write_report(result, tmp_path / "doc")
    report = json.loads((out / "quant_doctor.json").read_text())
    assert report["recommended"] == best["name"] and report["layers"]
    # The recommended file is the measured one: scoring it again gives the same drop.
    from mobilekit.export.metadata import read_metadata
    from mobilekit.export.pipeline import tflite_predict
    from mobilekit.loading import load_keras
    from mobilekit.train.evaluate import paired_drop

    tflite = (out / f"{fault}_int8_doctor.tflite").read_bytes()
    assert read_metadata(tflite)["doctor"]["remedy"] == best["name"]
    x, y = _arrays("val")
    float_hits = load_keras(models[fault]).predict(x, verbose=0).argmax(-1) == y
    again = paired_drop(float_hits, tflite_predict(tflite, x).argmax(-1) == y)
    assert again["drop_points"] == pytest.approx(best["drop_points"])
    assert json.loads((out / f"{fault}_int8_doctor.json").read_text())["eval"][
        "drop_points"] == best["drop_points"]


def test_dense_fault_is_a_weight_fault_cured_by_per_channel_dense(models):
    from mobilekit.export.doctor import diagnose

    result = diagnose(str(models["dense"]), data=SPEC, **FAST)
    worst = next(r for r in result["layers"] if r["layer"] == "hidden")
    assert worst["dominant"] == "weights"
    assert worst["weights_sqnr_db"] < 10 < worst["activations_sqnr_db"]
    assert result["remedies"][0]["name"] == "per_channel_dense"
    assert result["recommended"] == "per_channel_dense"


def test_layer_table_api(models):
    from mobilekit.export.layer_errors import LayerTable, layer_errors
    from mobilekit.loading import load_keras

    x, _ = _arrays("val")
    table, calibrated = layer_errors(load_keras(models["outlier"]), x[:32], x[:16])
    assert isinstance(table, LayerTable) and len(table) == len(table["layer"]) >= 7
    assert table.ranked()[0]["layer"] == "conv1"
    conv1 = table[0]
    assert conv1["sqnr_db"] < 5 and conv1["activations_sqnr_db"] < 5 < conv1["weights_sqnr_db"]
    assert "| `conv1` |" in table.to_markdown() and isinstance(calibrated, bytes)


def test_healthy_model_needs_no_remedy(models, tmp_path):
    runner = CliRunner()
    out = tmp_path / "doc"
    result = runner.invoke(cli, ["quant-doctor", str(models["healthy"]), "--data", SPEC,
                                 "--calib-samples", "64", "--eval-samples", "200",
                                 "--bench-rounds", "3", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["no_remedy_needed"] and report["remedies"] == []
    assert report["summary"].endswith("no remedy needed")
    assert report["baseline"]["drop_points"] <= report["target_drop"] == 1.0
    assert (out / "healthy_int8_doctor.tflite").is_file()
    assert "cannot keep chosen layers in int16x8" in (out / "quant_doctor.md").read_text()


def _bad(args, tmp_path):
    out = tmp_path / "doc"
    result = CliRunner().invoke(cli, ["quant-doctor", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists() and not list(tmp_path.glob(".doc*"))
    return result.output


def test_bad_input(models, tmp_path):
    from mobilekit.keras import keras

    assert "no images to diagnose" in _bad([str(models["healthy"])], tmp_path)
    assert "near chance" in _bad([str(models["untrained"]), "--data", SPEC], tmp_path)
    i = keras.layers.Input((32, 32, 3))
    flat = keras.Model(i, keras.layers.Softmax()(keras.layers.GlobalAveragePooling2D()(i)))
    flat.save(tmp_path / "flat.keras")
    assert "no quantizable layer" in _bad([str(tmp_path / "flat.keras"), "--data", SPEC],
                                          tmp_path)
    i = keras.layers.Input((32, 24, 3))
    wide = keras.Model(i, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling2D()(
        keras.layers.Conv2D(4, 3)(i))))
    wide.save(tmp_path / "wide.keras")
    assert "wrong image size" in _bad([str(tmp_path / "wide.keras"), "--data", SPEC], tmp_path)


def test_paired_drop():
    from mobilekit.train.evaluate import paired_drop

    a = np.array([1, 1, 1, 0, 0, 1, 1, 0], bool)
    b = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    row = paired_drop(a, b)
    assert (row["float_only"], row["int8_only"]) == (2, 1)
    assert row["drop_points"] == pytest.approx(100 * 1 / 8)
    assert row["drop_se_points"] == pytest.approx(100 * np.sqrt(3) / 8)


def test_chosen_remedies_are_all_measured(models):
    """remedies=[...]: QAT (one epoch), int16x8 and a calibration-size point are each built,
    scored and timed, in the plan's order (the target is out of reach: no early stop)."""
    from mobilekit.export.doctor import diagnose

    result = diagnose(str(models["shift"]), data=SPEC, remedies=["qat", "int16x8", "calib_16"],
                      qat_epochs=1, **dict(FAST, target_drop=-100))
    rows = result["remedies"]
    assert [r["name"] for r in rows] == ["int16x8", "qat", "calib_16"]
    for row in rows:
        assert row["ok"] and row["size_bytes"] > 0 and row["latency_us"] > 0
        assert row["float_only"] + row["int8_only"] <= row["images"] == 200
    assert result["summary"].startswith(f"int8 drop {result['baseline']['drop_points']:.1f}")
    assert result["recommended"] in ["baseline"] + [r["name"] for r in rows]


def test_unknown_remedy_is_a_usage_error(models, tmp_path):
    output = _bad([str(models["healthy"]), "--data", SPEC, "--remedies", "msee"], tmp_path)
    assert "unknown remedy 'msee'" in output and "Did you mean 'mse'" in output


@pytest.mark.slow
def test_faceboxes_ap50_and_decode_tail(tmp_path):
    """FaceBoxes overfit on the WIDER sample (as tests/test_detection_train.py): scored by
    AP50 of the decoded boxes; the box-decoding ops are in the per-layer table."""
    from pathlib import Path

    from mobilekit.detection.train import train_detector
    from mobilekit.export.doctor import diagnose, write_report

    sample = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / \
        "wider_face_sample"
    if not sample.is_dir():
        pytest.skip(f"{sample} not found")
    spec = f"wider:{sample}"
    run = tmp_path / "fb"
    train_detector(data=spec, val_data=spec, val_split="train", resolution=320, epochs=80,
                   batch_size=6, lr=3e-3, augment=False, min_face=20, target_ap50=1.0,
                   out=run, progress=False)
    result = diagnose(str(run), remedies=["float_1"], bench_rounds=3, curve_sizes=(),
                      target_drop=-100)
    assert result["task"] == "detector" and result["metric"] == "AP50"
    assert result["float_score"] >= 0.9 and result["images"] == 6
    assert result["decode_tail"]["ops"] > 0
    from mobilekit.detection.postprocess import DECODE_TENSOR

    assert any(DECODE_TENSOR.search(row["tensor"]) for row in result["layers"])
    (row,) = result["remedies"]
    assert row["ok"] and row["settings"]["float_nodes"]
    assert result["baseline"]["drop_points"] == pytest.approx(
        100 * (result["float_score"] - result["baseline"]["int8_ap50"]))
    out = write_report(result, tmp_path / "doc")
    assert "Box decoding in the file" in (out / "quant_doctor.md").read_text()
    assert json.loads((out / "faceboxes_int8_doctor.json").read_text())["eval"]["metric"] == \
        "AP50"


@pytest.fixture(scope="module")
def naive_fault(tmp_path_factory):
    """{"fault", "unloadable": .keras path}: the tiny CNN with a hard-swish after conv1,
    trained, then one conv1 channel made dead (a large negative bias, conv2 no longer
    reading it). Hard-swish maps it to 0 in float, but the plain converter's min/max range of
    conv1's output reaches the bias and leaves the live channels a step or two (MobileNetV3-
    Large's head shows the same: values down to -500 before a hard-swish). TFLite's int8
    HARD_SWISH takes an input range at most 128x its output range: "fault" sits at 3/4 of
    that bound, "unloadable" beyond it (the naive file fails to load)."""
    from mobilekit.keras import keras
    from mobilekit.layers.activations import HardSwish

    L = keras.layers
    x, y = _arrays("train")
    keras.utils.set_random_seed(0)
    i = L.Input((32, 32, 3), name="input")
    h = HardSwish(name="conv1_act")(L.Conv2D(8, 3, strides=2, padding="same",
                                              name="conv1")(i))
    h = L.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    h = L.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(i, L.Dense(4, name="logits")(h), name="hswish")
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=40, batch_size=32, verbose=0)
    c1, c2 = model.get_layer("conv1"), model.get_layer("conv2")
    w1, w2 = c1.get_weights(), c2.get_weights()
    live = np.delete(keras.Model(i, c1.output)(x).numpy(), 5, axis=-1)
    top = float((live * np.clip(live + 3, 0, 6) / 6).max())  # hard-swish's largest output
    # HARD_SWISH's input range limit (128x the output's), less the live values' own span.
    bound = 128 * (top + 0.375) - float(live.max() - live.min())
    w2[0][:, :, 5, :] = 0
    c2.set_weights(w2)
    folder = tmp_path_factory.mktemp("naive")
    paths = {}
    for name, bias in (("fault", -0.75 * bound), ("unloadable", -2 * bound)):
        w1[1][5] = bias
        c1.set_weights(w1)
        paths[name] = folder / f"hswish_{name}.keras"
        model.save(paths[name])
    return paths


def test_naive_file_diagnosed_and_cured_by_mobilekit_export(naive_fault):
    """--baseline naive: the plain converter's file (fused HARD_SWISH, its own min/max) is
    the one scored and compared layer by layer; mobilekit's export is the first remedy."""
    from mobilekit.export.convert import NAIVE, convert_naive
    from mobilekit.export.doctor import diagnose
    from mobilekit.export.layer_errors import calibrated_model, quantize_calibrated
    from mobilekit.export.pipeline import tflite_predict
    from mobilekit.export.report import analyze
    from mobilekit.loading import load_keras

    result = diagnose(str(naive_fault["fault"]), data=SPEC, baseline="naive", **FAST)
    base = result["baseline"]
    assert base["settings"] == {"calibration": NAIVE} and result["calib_method"] == NAIVE
    assert base["drop_points"] > 5  # the dead channel's range hurts the naive file
    assert result["ranked"][0] == "conv1"
    conv1 = next(r for r in result["layers"] if r["layer"] == "conv1")
    assert conv1["activations_sqnr_db"] < 10 < conv1["weights_sqnr_db"]
    assert any(r["op"] == "HARD_SWISH" for r in result["layers"])  # the fused op, diagnosed
    first = result["remedies"][0]
    assert first["name"] == "average" and first["label"].startswith("mobilekit")
    assert first["drop_points"] <= result["target_drop"] and result["recommended"] == "average"
    ops = {name: set(analyze(tflite)["ops"]) for name, tflite in result["_files"].items()}
    assert "HARD_SWISH" in ops["baseline"] and "HARD_SWISH" not in ops["average"]
    # The layer table describes the file scored: the debugger's quantization of the naive
    # calibration gives the naive file's outputs exactly.
    model = load_keras(naive_fault["fault"])
    x, _ = _arrays("val")
    calibrated, _ = calibrated_model(model, x[:64], NAIVE)
    np.testing.assert_array_equal(tflite_predict(quantize_calibrated(calibrated, "per-channel"),
                                                 x[:16]),
                                  tflite_predict(convert_naive(model, x[:64]), x[:16]))


def test_naive_file_that_does_not_load_is_one_clear_error(naive_fault, tmp_path):
    output = _bad([str(naive_fault["unloadable"]), "--data", SPEC, "--baseline", "naive",
                   "--calib-samples", "64", "--eval-samples", "50"], tmp_path)
    assert "naive int8 file of hswish_unloadable does not run" in output and "HARD_SWISH" in output


def test_given_file_compared_by_name_matches_the_debug_mode_table(naive_fault, tmp_path):
    """--tflite FILE: a user's int8 file is scored as the baseline and its tensors compared
    with the float model's by name; on the naive file this gives the quantizer debug mode's
    numbers (--baseline naive), and on mobilekit's own int8-I/O export its numbers too."""
    from mobilekit.export.convert import convert, convert_naive
    from mobilekit.export.doctor import _float_references, diagnose
    from mobilekit.export.layer_errors import file_layer_errors, layer_errors
    from mobilekit.export.pipeline import dataset_samples
    from mobilekit.loading import load_keras

    model = load_keras(naive_fault["fault"])
    calib = dataset_samples(SPEC, 32, FAST["calib_samples"])  # the doctor's own images
    path = tmp_path / "mine.tflite"
    path.write_bytes(convert_naive(model, calib))
    given = diagnose(str(naive_fault["fault"]), data=SPEC, tflite=str(path), **FAST)
    rebuilt = diagnose(str(naive_fault["fault"]), data=SPEC, baseline="naive", **FAST)
    assert given["baseline"]["label"] == "given file `mine.tflite`"
    assert given["baseline"]["drop_points"] == rebuilt["baseline"]["drop_points"] > 5
    assert given["ranked"][0] == "conv1" and given["baseline_kind"] == "file"
    debug = {r["tensor"]: r["sqnr_db"] for r in rebuilt["layers"]}
    shared = [r for r in given["layers"] if r["tensor"] in debug]
    assert len(shared) >= 4
    for row in shared:
        assert row["sqnr_db"] == pytest.approx(debug[row["tensor"]], abs=0.01)
    assert given["remedies"][0]["name"] == "average"
    assert all(r["kind"] != "mixed" for r in given["remedies"])
    x, _ = _arrays("val")
    mine = file_layer_errors(convert(model, "int8", calib), _float_references(model), x[:16],
                             [layer.name for layer in model.layers])
    table, _ = layer_errors(model, calib, x[:16], split=False, debugger_images=0)
    debug = {r["tensor"]: r["sqnr_db"] for r in table}
    shared = [r for r in mine if r["tensor"] in debug]
    assert len(shared) >= 4 and any(r["layer"] == "conv1" for r in shared)
    for row in shared:
        assert row["sqnr_db"] == pytest.approx(debug[row["tensor"]], abs=0.01)


def test_given_file_bad_input(naive_fault, tmp_path):
    from mobilekit.export.convert import convert
    from mobilekit.loading import load_keras
    from mobilekit.keras import keras

    fp32 = tmp_path / "fp32.tflite"
    fp32.write_bytes(convert(load_keras(naive_fault["fault"]), "fp32"))
    args = [str(naive_fault["fault"]), "--data", SPEC, "--eval-samples", "50"]
    assert "has no quantized tensor" in _bad(args + ["--tflite", str(fp32)], tmp_path)
    assert "no such file" in _bad(args + ["--tflite", str(tmp_path / "none.tflite")], tmp_path)
    assert "not both" in _bad(args + ["--tflite", str(fp32), "--baseline", "naive"], tmp_path)
    i = keras.layers.Input((16, 16, 3))
    wrong = tmp_path / "wrong.tflite"
    wrong.write_bytes(convert(keras.Model(i, keras.layers.Conv2D(4, 3)(i)), "fp32"))
    assert "wrong image size" in _bad(args + ["--tflite", str(wrong)], tmp_path)
