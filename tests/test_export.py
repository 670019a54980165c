"""mobilekit.export: every quant mode, the report, metadata, float-op refusal, the CLI."""
import json

import numpy as np
import pytest

from mobilekit.keras import keras, layers, register, tf

RES = 16


@register("mobilekit_test")
class Cosine(layers.Layer):
    """No int8 kernel exists for COS: a guaranteed float island."""

    QUANT = "output"

    def call(self, inputs):
        return tf.math.cos(inputs)


def tiny_model(extra=None):
    from mobilekit.layers import HardSwish

    inp = layers.Input((RES, RES, 3), name="input")
    x = layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inp)
    x = HardSwish(name="hswish")(x)
    if extra is not None:
        x = extra(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inp, layers.Dense(4, name="logits")(x), name="tiny")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return tiny_model()


def calib(n=8, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, RES, RES, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def int8_bytes(model):
    from mobilekit.export.convert import convert

    return convert(model, "int8", representative_data=calib())


FLOAT_OPS = {"CONV_2D", "HARD_SWISH", "MEAN", "FULLY_CONNECTED"}
UNFUSED = {"CONV_2D", "ADD", "MUL", "MEAN", "FULLY_CONNECTED"}


@pytest.mark.parametrize("quant,in_dtype,op_types", [
    ("fp32", "float32", FLOAT_OPS), ("fp16", "float32", FLOAT_OPS | {"DEQUANTIZE"}),
    ("dynamic", "float32", FLOAT_OPS), ("int16x8", "float32", UNFUSED | {"QUANTIZE", "DEQUANTIZE"}),
])
def test_float_and_16x8_modes(model, quant, in_dtype, op_types):
    from mobilekit.export.convert import convert
    from mobilekit.export.report import analyze

    data = calib() if quant == "int16x8" else None
    report = analyze(convert(model, quant, representative_data=data))
    assert report["inputs"][0]["shape"] == [1, RES, RES, 3]  # static batch 1
    assert report["inputs"][0]["dtype"] == in_dtype
    assert set(report["ops"]) == op_types
    assert report["max_tensor_rank"] == 4
    if quant == "int16x8":
        assert report["float_ops"] == 0  # hard-swish is unfused: int16 ADD/MUL kernels exist


def test_int8_report_fields(int8_bytes):
    from mobilekit.export.report import analyze

    report = analyze(int8_bytes)
    assert report["size_bytes"] == len(int8_bytes)
    # HardSwish is exported unfused so XNNPACK takes the whole int8 graph.
    assert report["ops"] == {"ADD": 1, "CONV_2D": 1, "FULLY_CONNECTED": 1, "MEAN": 1, "MUL": 2}
    assert report["num_ops"] == 6
    assert report["float_ops"] == 0 and report["float_op_list"] == []
    inp, out = report["inputs"][0], report["outputs"][0]
    assert inp["dtype"] == "int8" and out["dtype"] == "int8"
    # calibration data spans [-1, 1]: scale ~ 2/255, zero point ~ 0
    assert inp["scale"] == pytest.approx(2 / 255, rel=0.02) and abs(inp["zero_point"]) <= 1
    assert report["xnnpack"] == {"partitions": 1, "delegated_nodes": 6, "total_nodes": 6,
                                 "undelegated_ops": {}}
    assert report["gpu"]["analyzer_compatible"] is True
    assert report["gpu_compatible"] is True
    assert report["metadata"] is None


def test_int8_float_io_and_uint8(model):
    from mobilekit.export.convert import convert
    from mobilekit.export.report import analyze

    report = analyze(convert(model, "int8", calib(), io="float"))
    assert report["inputs"][0]["dtype"] == "float32"
    assert report["ops"]["QUANTIZE"] == 1 and report["ops"]["DEQUANTIZE"] == 1
    assert report["float_ops"] == 0  # QUANTIZE/DEQUANTIZE do not count
    report = analyze(convert(model, "int8", calib(), io="uint8"))
    assert report["inputs"][0]["dtype"] == "uint8"


def test_bad_arguments_name_accepted_values(model):
    from mobilekit.export.convert import convert

    with pytest.raises(ValueError, match="fp32, fp16, dynamic, int8, int16x8; got 'int4'"):
        convert(model, "int4")
    with pytest.raises(ValueError, match="needs calibration data"):
        convert(model, "int8")
    with pytest.raises(ValueError, match="io for quant fp32 must be one of float; got 'int8'"):
        convert(model, "fp32", io="int8")


def test_float_ops_refused_then_allowed():
    from mobilekit.export.convert import FloatOpsError, convert
    from mobilekit.export.report import analyze

    model = tiny_model(Cosine(name="cos"))
    with pytest.raises(FloatOpsError, match=r"1 op\(s\) compute in float: COS"):
        convert(model, "int8", calib())
    report = analyze(convert(model, "int8", calib(), allow_float_ops=True))
    assert report["float_op_types"] == {"COS": 1}
    assert report["float_op_list"][0]["op"] == "COS"


def test_report_flags_rank5_and_dynamic_shapes():
    from mobilekit.export.report import analyze

    # Classic 5-D channel shuffle, converted with a dynamic batch: the analyzer misses both.
    inp = layers.Input((4, 4, 8))
    x = layers.Reshape((4, 4, 2, 4))(inp)
    x = layers.Permute((1, 2, 4, 3))(x)
    model = keras.Model(inp, layers.Reshape((4, 4, 8))(x))
    report = analyze(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    assert report["max_tensor_rank"] == 5
    assert report["gpu"]["rank_over_4"] and report["gpu"]["dynamic_shapes"]
    assert report["gpu"]["analyzer_compatible"] is True
    assert report["gpu_compatible"] is False


def test_metadata_round_trip_and_still_runs(int8_bytes, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.metadata import build_metadata, embed_metadata, read_metadata

    meta = build_metadata("tiny", "int8", (RES, RES, 3), labels=["a", "b", "c", "d"],
                          mean=[123.7, 116.3, 103.5], std=[58.4, 57.1, 57.4])
    tagged = embed_metadata(int8_bytes, meta)
    path = tmp_path / "m.tflite"
    path.write_bytes(embed_metadata(tagged, dict(meta, quant="changed")))  # replace, not add
    assert read_metadata(tagged) == meta
    assert read_metadata(path)["quant"] == "changed"
    assert read_metadata(int8_bytes) is None
    outputs = []
    for data in (int8_bytes, path.read_bytes()):
        interp = Interpreter(model_content=data)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], np.full(inp["shape"], 7, np.int8))
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        read_metadata(b"not a model at all")


def test_qat_annotation_rules():
    from mobilekit.compress.qat import (OutputQuantizerConfig, PassthroughQuantizeConfig,
                                        quant_config_for, quantize_model)
    from mobilekit.layers import GateScale

    class NoQuant(layers.Layer):
        def call(self, inputs):
            return inputs

    class Passthrough(layers.Layer):
        QUANT = "passthrough"

    assert isinstance(quant_config_for(GateScale()), OutputQuantizerConfig)
    assert type(quant_config_for(Passthrough())) is PassthroughQuantizeConfig
    assert quant_config_for(layers.Conv2D(2, 1)) is None
    inp = layers.Input((8, 8, 3))
    model = keras.Model(inp, NoQuant(name="mystery")(inp))
    with pytest.raises(ValueError, match="'mystery' \\(NoQuant\\) is a custom layer without a "
                                         "QUANT attribute"):
        quantize_model(model)


def run_cli(*args, cwd=None):
    """The CLI in-process (a subprocess would pay TensorFlow's import again)."""
    import os

    from click.testing import CliRunner

    from mobilekit.cli import cli

    old = os.getcwd()
    os.chdir(cwd or old)
    try:
        return CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)


def test_cli_export_fp32_writes_tflite_report_and_parity(model, tmp_path):
    path = tmp_path / "tiny.keras"
    model.save(path)
    out = tmp_path / "out" / "tiny_fp32.tflite"
    result = run_cli("export", path, "--quant", "fp32", "--out", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["quant"] == "fp32" and report["size_bytes"] == out.stat().st_size
    assert report["parity"]["ok"] is True and report["parity"]["max_abs_diff"] <= 1e-4
    assert report["metadata"]["model"] == "tiny" and report["metadata"]["quant"] == "fp32"
    assert report["metadata"]["input_size"] == [RES, RES, 3]
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny_fp32.json", "tiny_fp32.tflite"]


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"garbage")
    cases = [
        ((bad, "--quant", "fp32"), "broken.keras is not a valid .keras file"),
        ((tmp_path / "nope.keras",), "does not exist"),
        ((tmp_path,), "is not a run directory"),
        (("mobilenet_v2", "--quant", "int8", "--resolution", "32", "--alpha", "0.35"),
         "needs calibration images: give --calib-data"),
    ]
    for args, message in cases:
        result = run_cli("export", *args, cwd=tmp_path)
        assert result.exit_code == 2, (args, result.output)
        errors = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]
        assert len(errors) == 1 and message in errors[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.keras"]


def test_cli_run_dir_int8_uses_run_data_labels_and_eval(tmp_path):
    from mobilekit.data import load_dataset

    _, info = load_dataset("synthetic", "train", RES * 2, 8, training=False)
    run = tmp_path / "run"
    run.mkdir()
    keras.utils.set_random_seed(1)
    import mobilekit

    mobilekit.create_model("mobilenet_v1", alpha=0.25, resolution=RES * 2,
                           num_classes=info["num_classes"]).save(run / "model.keras")
    config = {"model": "mobilenet_v1", "model_kwargs": {"alpha": 0.25}, "data": "synthetic",
              "resolution": RES * 2, "mean": info["mean"], "std": info["std"],
              "class_names": info["class_names"], "num_classes": info["num_classes"]}
    (run / "config.json").write_text(json.dumps(config))
    result = run_cli("export", run, "--quant", "int8", "--calib-samples", "8",
                     "--eval-data", "synthetic", "--eval-samples", "16")
    assert result.exit_code == 0, result.output
    report = json.loads((run / "mobilenet_v1_int8.json").read_text())
    assert report["calibration"] == {"data": "synthetic", "samples": 8, "method": "average"}
    assert report["dense_quant"] == "per-tensor"
    assert report["float_ops"] == 0 and report["inputs"][0]["dtype"] == "int8"
    assert report["metadata"]["labels"] == info["class_names"]
    assert report["metadata"]["mean"] == pytest.approx(info["mean"])
    evaluation = report["eval"]
    assert evaluation["tflite"]["num_samples"] == evaluation["keras"]["num_samples"] >= 16
    assert evaluation["top1_delta"] == pytest.approx(
        evaluation["tflite"]["top1"] - evaluation["keras"]["top1"])


def crelu_pool_model():
    """C.ReLU (as FaceBoxes' RDCL writes it) and a zero-padded valid 3x3 average pool
    (ShuffleNet v1 / FaceBoxes Inception): ops with no XNNPACK int8 kernel as written."""
    from mobilekit.layers.crelu import crelu

    inp = layers.Input((RES, RES, 3), name="input")
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = crelu(x, "crelu")
    x = layers.ZeroPadding2D(1, name="pad")(x)
    x = layers.AveragePooling2D(3, 2, padding="valid", name="pool")(x)
    x = layers.Conv2D(4, 1, name="head")(x)
    return keras.Model(inp, x, name="crelu_pool")


def test_int8_export_rewrites_crelu_and_avg_pool_for_xnnpack():
    from mobilekit.export.convert import convert
    from mobilekit.export.delegable import delegable_clone
    from mobilekit.export.report import analyze

    keras.utils.set_random_seed(1)
    model = crelu_pool_model()
    clone = delegable_clone(model)
    swapped = {type(layer).__name__ for layer in clone.layers} - {type(layer).__name__
                                                                  for layer in model.layers}
    assert swapped == {"DelegableIdentity", "DelegableSignedReLU", "DelegableAveragePool"}
    x = calib(4)
    np.testing.assert_allclose(clone(x).numpy(), model(x).numpy(), atol=1e-5)
    # Cloning twice must find the pattern again (shared layers gain nodes from each clone).
    assert {type(layer).__name__ for layer in delegable_clone(model).layers} >= swapped
    report = analyze(convert(model, "int8", calib()))
    assert report["float_ops"] == 0
    assert "NEG" not in report["ops"] and "AVERAGE_POOL_2D" not in report["ops"]
    assert report["xnnpack"]["partitions"] == 1 and report["xnnpack"]["undelegated_ops"] == {}
    # The fp32 export keeps C.ReLU as written; the zero-padded pool becomes a depthwise conv
    # (the GPU delegate would merge the PAD and drop the zeros from the average).
    fp32 = analyze(convert(model, "fp32"))["ops"]
    assert "NEG" in fp32 and "AVERAGE_POOL_2D" not in fp32 and "DEPTHWISE_CONV_2D" in fp32


def test_cli_export_sparse_encodes_pruned_weights(tmp_path):
    """--sparse stores a mostly-zero kernel sparse-encoded (DENSIFY), dense otherwise."""
    from click.testing import CliRunner

    from mobilekit.cli import cli

    keras.utils.set_random_seed(2)
    inp = layers.Input((RES, RES, 16), name="input")
    x = layers.Conv2D(64, 1, name="pw")(inp)
    model = keras.Model(inp, layers.GlobalAveragePooling2D(name="pool")(x), name="sparse_me")
    kernel, bias = model.get_layer("pw").get_weights()
    mask = np.random.default_rng(0).uniform(size=kernel.shape) < 0.9
    model.get_layer("pw").set_weights([np.where(mask, 0.0, kernel), bias])
    model.save(tmp_path / "pruned.keras")
    ops = {}
    for flag in ([], ["--sparse"]):
        out = tmp_path / f"pruned{'_sparse' if flag else ''}.tflite"
        res = CliRunner().invoke(cli, ["export", str(tmp_path / "pruned.keras"), "--out",
                                       str(out), *flag])
        assert res.exit_code == 0, res.output
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["sparse"] is bool(flag) and report["parity"]["ok"]
        ops[bool(flag)] = report["ops"]
    assert "DENSIFY" in ops[True] and "DENSIFY" not in ops[False]


@pytest.mark.parametrize("size,kernel,stride,pad,padding", [
    ((32, 40), 7, 4, 3, "valid"),   # FaceBoxes conv1, non-square
    ((32, 32), 3, 2, 0, "same"),    # MobileNet stem, even input
    ((33, 35), 3, 2, 0, "same"),    # odd input: "same" pads symmetrically
    ((30, 30), 7, 2, 0, "valid"),   # SqueezeNet conv1: the last rows are never read (crop)
])
def test_space_to_depth_stem_is_exact(size, kernel, stride, pad, padding):
    from mobilekit.export.stem import apply_input_layout, space_to_depth_stem

    keras.utils.set_random_seed(3)
    inp = layers.Input((*size, 3), name="input")
    x = layers.ZeroPadding2D(pad, name="pad")(inp) if pad else inp
    x = layers.Conv2D(6, kernel, stride, padding=padding, activation="relu", name="stem")(x)
    x = layers.Conv2D(4, 3, name="next")(x)
    model = keras.Model(inp, x)
    rewritten, layout = space_to_depth_stem(model)
    assert layout["space_to_depth"] == stride and layout["image_size"] == list(size)
    assert rewritten.input.shape[-1] == 3 * stride * stride
    images = np.random.default_rng(0).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    np.testing.assert_allclose(rewritten(apply_input_layout(images, layout)).numpy(),
                               model(images).numpy(), atol=1e-5)


@pytest.mark.parametrize("size,kernel,stride,pad,padding", [
    ((32, 40), 7, 4, 3, "valid"),   # FaceBoxes conv1: blocks of zeros before, none after
    ((32, 32), 3, 2, 0, "same"),    # "same" pads only after: the kernel at offset 0
    ((36, 28), 3, 2, 0, "same"),
    ((32, 32), 7, 4, 0, "valid"),   # the last block is never read: crop
    ((32, 32), 5, 4, 2, "valid"),   # offset 2 in a 2-block kernel
])
def test_in_graph_space_to_depth_stem_is_exact(size, kernel, stride, pad, padding):
    from mobilekit.export.stem import SpaceToDepth, in_graph_space_to_depth_stem

    keras.utils.set_random_seed(4)
    inp = layers.Input((*size, 3), name="image")
    x = layers.ZeroPadding2D(pad, name="pad")(inp) if pad else inp
    x = layers.Conv2D(6, kernel, stride, padding=padding, activation="relu", name="stem")(x)
    model = keras.Model(inp, layers.Conv2D(4, 3, name="next")(x))
    rewritten = in_graph_space_to_depth_stem(model, min_stride=2)
    assert rewritten.input_names == ["image"] and rewritten.input.shape == model.input.shape
    assert any(type(layer) is SpaceToDepth for layer in rewritten.layers)
    images = np.random.default_rng(1).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
    np.testing.assert_allclose(rewritten(images).numpy(), model(images).numpy(), atol=1e-5)


def test_in_graph_space_to_depth_stem_only_for_large_strides_on_whole_blocks():
    from mobilekit.export.stem import in_graph_space_to_depth_stem

    inp = layers.Input((30, 32, 3))
    model = keras.Model(inp, layers.Conv2D(4, 7, 4, padding="same")(inp))
    assert in_graph_space_to_depth_stem(model) is model  # 30 rows: not whole 4-row blocks
    inp = layers.Input((32, 32, 3))
    model = keras.Model(inp, layers.Conv2D(4, 3, 2, padding="same")(inp))
    assert in_graph_space_to_depth_stem(model) is model  # stride 2 < IN_GRAPH_MIN_STRIDE


@pytest.mark.slow  # ~30 s: four conversions of a small FaceBoxes
def test_faceboxes_fast_forms_same_outputs_and_ops():
    """The export's default forms of FaceBoxes compute what the model computes: float files
    run each C.ReLU after the max pool that follows it, int8 files run conv1 after
    SPACE_TO_DEPTH with the image's padding fused into the conv (no PAD before it)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.convert import convert
    from mobilekit.export.delegable import float_clone
    from mobilekit.export.pipeline import reestimate_batchnorm
    from mobilekit.export.stem import in_graph_space_to_depth_stem
    from mobilekit.zoo.registry import create_model

    keras.utils.set_random_seed(5)
    model = create_model("faceboxes", input_shape=(128, 160, 3), alpha=0.25)
    images = np.random.default_rng(2).uniform(-1, 1, (4, 128, 160, 3)).astype(np.float32)
    reestimate_batchnorm(model, images)
    reference = [t.numpy() for t in model(images[:2], training=False)]
    for fast in (float_clone(model), in_graph_space_to_depth_stem(model)):
        for want, got in zip(reference, fast(images[:2], training=False)):
            np.testing.assert_allclose(got.numpy(), want, atol=1e-4)

    def ops(quant, fast_forms):
        data = convert(model, quant, images if quant == "int8" else None,
                       fast_forms=fast_forms)
        return [op["op_name"] for op in Interpreter(model_content=data)._get_ops_details()]

    # float: each C.ReLU runs after the max pool that follows it (pool on x and on -x,
    # then CONCATENATION + RELU on the 4x smaller maps)
    fp32 = ops("fp32", True)
    assert fp32[:9] == ["PAD", "CONV_2D", "NEG", "MAX_POOL_2D", "SLICE", "MAX_POOL_2D",
                        "SLICE", "CONCATENATION", "RELU"], fp32
    assert fp32.count("NEG") == ops("fp32", False).count("NEG") == 2
    int8 = ops("int8", True)
    assert int8[0] == "SPACE_TO_DEPTH" and "SPACE_TO_DEPTH" not in ops("int8", False)
    # int8: the stem's C.ReLU folds into the space-to-depth conv (no CONCATENATION + MUL
    # between it and pool1); both: each max pool without a PAD of its own before it
    assert int8[:5] == ["SPACE_TO_DEPTH", "PAD", "CONV_2D", "MAX_POOL_2D", "SLICE"]
    assert ops("int8", False)[:6] == ["PAD", "CONV_2D", "CONCATENATION", "MUL", "PAD",
                                      "MAX_POOL_2D"]
    for quant, count in (("fp32", 4), ("int8", 2)):
        listed = ops(quant, True)
        pools = [i for i, name in enumerate(listed) if name == "MAX_POOL_2D"]
        assert len(pools) == count and all(listed[i - 1] != "PAD" and listed[i + 1] == "SLICE"
                                           for i in pools), (quant, listed)


def test_int8_fast_form_matches_the_model():
    """The int8 export's Keras-side rewrites (stem C.ReLU folded into the conv, max pools
    without a lone PAD, then the space-to-depth stem) compute the model's function."""
    from mobilekit.export.convert import _int8_fast_form
    from mobilekit.export.delegable import delegable_clone
    from mobilekit.export.pipeline import reestimate_batchnorm
    from mobilekit.export.stem import in_graph_space_to_depth_stem
    from mobilekit.zoo.registry import create_model

    keras.utils.set_random_seed(6)
    model = create_model("faceboxes", input_shape=(128, 160, 3), alpha=0.25)
    images = np.random.default_rng(3).uniform(-1, 1, (3, 128, 160, 3)).astype(np.float32)
    reestimate_batchnorm(model, images)
    fast = in_graph_space_to_depth_stem(delegable_clone(_int8_fast_form(model, False)))
    names = {layer.name: type(layer).__name__ for layer in _int8_fast_form(model, False).layers}
    assert names["pool1"] == names["pool2"] == "CroppedMaxPool" and names["conv1"] == "Conv2D"
    for want, got in zip(model(images, training=False), fast(images, training=False)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


def _resnet_like_stem(relu=True, side=64):
    inp = layers.Input((side, side, 3))
    x = layers.ZeroPadding2D(3)(inp)
    x = layers.Conv2D(8, 7, 2, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    if relu:
        x = layers.ReLU()(x)
    x = layers.ZeroPadding2D(1)(x)
    return keras.Model(inp, layers.MaxPooling2D(3, 2)(x))


def test_crelu_after_pool_exact_with_and_without_padding_swaps():
    """C.ReLU -> (ZeroPadding2D) -> max pool: the pool on x and -x first, the same outputs,
    whether the pool keeps its zero padding (an odd map: no padding swap) or pads itself."""
    from mobilekit.export.delegable import (crelu_after_pool_swaps, float_clone,
                                            max_pool_padding_swaps)
    from mobilekit.layers.crelu import crelu

    for side in (64, 66):
        inp = layers.Input((side, side, 3))
        x = layers.Conv2D(8, 7, 2, use_bias=False)(layers.ZeroPadding2D(3)(inp))
        x = crelu(layers.BatchNormalization()(x), "c")
        model = keras.Model(inp, layers.MaxPooling2D(3, 2)(layers.ZeroPadding2D(1)(x)))
        swaps = crelu_after_pool_swaps(model, max_pool_padding_swaps(model))
        pooled = [layer for layer in swaps.values() if type(layer).__name__ == "PooledCReLU"]
        assert len(pooled) == 1
        assert type(pooled[0].layer).__name__ == ("CroppedMaxPool" if side == 64
                                                 else "MaxPooling2D")
        x = np.random.default_rng(side).normal(size=(2, side, side, 3)).astype(np.float32)
        np.testing.assert_allclose(float_clone(model)(x).numpy(), model(x).numpy(), atol=1e-5)


def test_max_pool_padding_swaps_exact_and_only_where_exact():
    """ResNet's stem (conv 7x7/2 -> BN -> ReLU -> pad 1 -> max pool 3x3/2): the conv grows
    one output row / column and the pool pads itself; the same outputs. Not rewritten
    without the ReLU (zeros and the pool's -inf padding differ on negative values) nor on
    an odd-sided map (SAME would then pad differently)."""
    from mobilekit.export.delegable import float_clone, max_pool_padding_swaps

    model = _resnet_like_stem()
    model.layers[3].set_weights([np.array(w) + 0.3 for w in model.layers[3].get_weights()])
    swaps = max_pool_padding_swaps(model)
    assert sorted(type(layer).__name__ for layer in swaps.values()) == [
        "CroppedMaxPool", "DelegableIdentity", "ZeroPadding2D"]
    grown = next(layer for layer in swaps.values() if type(layer) is layers.ZeroPadding2D)
    assert grown.padding == ((3, 4), (3, 4))  # 70 -> 71 rows: 33 outputs instead of 32
    x = np.random.default_rng(0).normal(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(float_clone(model)(x).numpy(), model(x).numpy(), atol=1e-5)
    assert max_pool_padding_swaps(_resnet_like_stem(relu=False)) == {}
    assert max_pool_padding_swaps(_resnet_like_stem(side=66)) == {}  # 33 rows after conv


def test_space_to_depth_stem_needs_a_strided_3_channel_stem():
    from mobilekit.export.convert import convert
    from mobilekit.export.stem import space_to_depth_stem

    inp = layers.Input((RES, RES, 3), name="input")
    model = keras.Model(inp, layers.Conv2D(4, 3, name="conv")(inp))  # stride 1
    assert space_to_depth_stem(model) == (model, None)
    with pytest.raises(ValueError, match="does not start with a strided convolution"):
        convert(model, "fp32", s2d_input=True)


@pytest.mark.slow  # ~50 s; the plain int8 CLI export stays fast
def test_cli_export_s2d_input_int8_scores_like_plain_int8(tmp_path):
    """--s2d-input: the layout travels in the metadata and `mobilekit eval` applies it, so the
    file scores as the plain int8 export does (same calibration, same weights)."""
    import mobilekit
    from mobilekit.train.evaluate import evaluate

    keras.utils.set_random_seed(4)
    mobilekit.create_model("mobilenet_v2", alpha=0.35, resolution=RES * 2,
                           num_classes=10).save(tmp_path / "m.keras")
    results = {}
    for flag in ([], ["--s2d-input"]):
        out = tmp_path / f"m{'_s2d' if flag else ''}.tflite"
        res = run_cli("export", tmp_path / "m.keras", "--quant", "int8", "--calib-data",
                      "synthetic", "--calib-samples", "8", "--out", out, *flag)
        assert res.exit_code == 0, res.output
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["float_ops"] == 0 and report["xnnpack"]["partitions"] == 1
        results[bool(flag)] = (report, evaluate(str(out), limit=64))
    (plain, plain_eval), (s2d, s2d_eval) = results[False], results[True]
    assert s2d["metadata"]["input_layout"]["space_to_depth"] == 2
    assert "input_layout" not in plain["metadata"]
    assert s2d["inputs"][0]["shape"][-1] == 12 and plain["inputs"][0]["shape"][-1] == 3
    assert s2d_eval["resolution"] == plain_eval["resolution"] == RES * 2
    assert abs(s2d_eval["top1"] - plain_eval["top1"]) <= 2 / 64


@pytest.mark.parametrize("method", ["average", "minmax"])
def test_int8_calibration_method_sets_activation_ranges(method):
    """average: each tensor's range is the mean of per-8-image min/max, so one extreme image
    among 32 widens it by a quarter of its excess; minmax: the global extremes. The output
    keeps its global extremes either way (a clipped top score would make ties)."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.calibration import CHUNK
    from mobilekit.export.convert import convert

    inp = layers.Input((4, 4, 2), name="input")
    model = keras.Model(inp, layers.Conv2D(3, 1, name="conv")(inp))
    images = np.random.default_rng(0).uniform(-1, 1, (4 * CHUNK, 4, 4, 2)).astype(np.float32)
    images[CHUNK + 3, 0, 0, 0] = 50.0  # one rare extreme value
    tflite = convert(model, "int8", images, io="int8", calibration=method)
    interpreter = Interpreter(model_content=tflite)
    scale, _ = interpreter.get_input_details()[0]["quantization"]
    chunks = images.reshape(4, CHUNK, -1)
    if method == "average":
        low, high = chunks.min(axis=(1, 2)).mean(), chunks.max(axis=(1, 2)).mean()
    else:
        low, high = images.min(), images.max()
    assert scale == pytest.approx((high - low) / 255, rel=0.02)
    outputs = model.predict(images, verbose=0)
    output_scale, _ = interpreter.get_output_details()[0]["quantization"]
    assert output_scale == pytest.approx(np.ptp(outputs) / 255, rel=0.02)


def test_calibration_hook_restores_the_converter_hook():
    from tensorflow.lite.python.optimize import calibrator

    from mobilekit.export.calibration import calibration_hook

    original = calibrator.Calibrator.calibrate
    with pytest.raises(RuntimeError), calibration_hook("mse"):
        assert calibrator.Calibrator.calibrate is not original
        raise RuntimeError("conversion failed")
    assert calibrator.Calibrator.calibrate is original


def add_input_scales(tflite):
    """The int8 scales of the inputs of the (only) ADD op of a TFLite model."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(tflite, 0)
    graph = model.Subgraphs(0)
    for k in range(graph.OperatorsLength()):
        op = graph.Operators(k)
        if model.OperatorCodes(op.OpcodeIndex()).DeprecatedBuiltinCode() == 0:  # ADD
            return sorted(float(graph.Tensors(op.Inputs(j)).Quantization().Scale(0))
                          for j in range(op.InputsLength()))
    raise AssertionError("no ADD op")


def test_int8_ranges_of_tensors_an_in_place_op_overwrites_are_their_own():
    """TFLite's calibrator gives an ADD's inputs the sum's range when the ADD runs in place
    (tensorflow/tensorflow#127842); each input of the int8 ADD must be scaled to its own
    values."""
    from mobilekit.export.convert import convert

    inp = layers.Input((4, 4, 2), name="input")
    small = layers.Conv2D(3, 1, name="small")(inp)
    large = layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(3.0),
                          name="large")(inp)
    total = layers.Add(name="add")([small, large])
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(total))  # ADD not the output
    images = np.random.default_rng(0).uniform(-1, 1, (16, 4, 4, 2)).astype(np.float32)
    expected = sorted(float(np.ptp(out)) / 255 for out in
                      keras.Model(inp, [small, large]).predict(images, verbose=0))
    scales = add_input_scales(convert(model, "int8", images, io="int8", calibration="minmax"))
    assert scales == pytest.approx(expected, rel=0.02)


def test_int8_range_before_a_hard_swish_stops_at_its_dead_zone():
    """Every value below -3 leaves hard-swish at 0: the int8 range of its input starts at -3,
    not at the conv's far lower minimum."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.convert import convert
    from mobilekit.layers.activations import HardSwish

    inp = layers.Input((4, 4, 2), name="input")
    pre = layers.Conv2D(3, 1, kernel_initializer=keras.initializers.Constant(-6.0),
                        bias_initializer=keras.initializers.Constant(1.0), name="pre")(inp)
    model = keras.Model(inp, layers.Conv2D(2, 1, name="head")(HardSwish(name="hswish")(pre)))
    images = np.random.default_rng(0).uniform(-1, 1, (16, 4, 4, 2)).astype(np.float32)
    values = keras.Model(inp, pre).predict(images, verbose=0)
    assert values.min() < -9  # the naive range would be 1.5x wider
    interpreter = Interpreter(model_content=convert(model, "int8", images, io="int8",
                                                    calibration="minmax"))
    scales = [float(d["quantization"][0]) for d in interpreter.get_tensor_details()
              if "pre" in d["name"] and d["dtype"] == np.int8 and len(d["shape"]) == 4
              and d["shape"][0] == 1]
    assert scales == [pytest.approx((values.max() + 3) / 255, rel=0.02)]


def test_int8_score_logits_take_the_sigmoids_live_range():
    """Logits that reach a sigmoid output through RESHAPE / CONCATENATION (a detector's
    scores) are quantized on [-b, b], b = ln(511) where int8's 1/256 output step saturates,
    whatever the calibration saw (here -60 .. -10): finer steps, and a confident input the
    calibration never showed keeps its score instead of the calibration's top."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.calibration import sigmoid_bound
    from mobilekit.export.convert import convert

    inp = layers.Input((4, 4, 2), name="input")
    convs = [layers.Conv2D(1, 1, use_bias=False, name=f"logit{k}") for k in (30, 20)]
    logits = layers.Concatenate(axis=1, name="logits")(
        [layers.Reshape((-1, 1))(conv(inp)) for conv in convs])
    model = keras.Model(inp, layers.Activation("sigmoid", name="scores")(logits))
    for conv, k in zip(convs, (30, 20)):  # logit = k * channel 1
        conv.set_weights([np.float32([0, k]).reshape(1, 1, 2, 1)])
    rng = np.random.default_rng(0)
    images = np.stack([rng.uniform(-1, 1, (16, 4, 4)), rng.uniform(-2, -0.5, (16, 4, 4))],
                      axis=-1).astype(np.float32)
    seen = keras.Model(inp, logits).predict(images, verbose=0)
    assert seen.min() < -55 and seen.max() < -9  # no confident score in calibration
    interpreter = Interpreter(model_content=convert(model, "int8", images, io="int8",
                                                    calibration="minmax"))
    interpreter.allocate_tensors()
    bound = sigmoid_bound("int8")
    inp_d, out_d = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    logit_scales = [d["quantization"][0] for d in interpreter.get_tensor_details()
                    if d["dtype"] == np.int8 and np.prod(d["shape"]) >= 16
                    and d["index"] not in (inp_d["index"], out_d["index"])]
    assert len(logit_scales) == 5  # two conv outputs, their reshapes, the concatenation
    assert logit_scales == pytest.approx([2 * bound / 255] * len(logit_scales), rel=0.01)
    test = np.zeros((1, 4, 4, 2), np.float32)
    test[..., 1] = np.linspace(-0.25, 0.25, 16).reshape(4, 4)  # logits -7.5 .. 7.5
    scale, zero = inp_d["quantization"]
    fed = np.round(test / scale + zero)
    interpreter.set_tensor(inp_d["index"], fed.astype(np.int8))
    interpreter.invoke()
    expected = model.predict(((fed - zero) * scale).astype(np.float32), verbose=0)
    scale, zero = out_d["quantization"]
    got = (interpreter.get_tensor(out_d["index"]).astype(np.float32) - zero) * scale
    assert expected.max() > 0.99
    np.testing.assert_allclose(got, expected, atol=0.01)  # a logit step: <= 0.0061 of score


def test_mse_range_matches_a_brute_force_search_on_the_values():
    """The histogram estimate picks a range whose real int8 error is within 5 % of the best
    range of the same family found by quantizing every value (heavy-tailed values: clipping
    the tails beats the full range by a quarter)."""
    from mobilekit.export.calibration import MSE_BINS, MSE_SCALES, mse_range

    rng = np.random.default_rng(0)
    values = rng.laplace(size=200_000)
    low, high = float(values.min()), float(values.max())

    def int8_error(lo, hi):
        scale = (hi - lo) / 255
        zero = np.round(-128 - lo / scale)
        q = np.clip(np.round(values / scale) + zero, -128, 127)
        return np.mean(((q - zero) * scale - values) ** 2)

    counts = np.histogram(values, MSE_BINS, (low, high))[0]
    chosen = mse_range(counts, low, high)
    best = min(int8_error(c * low, c * high) for c in MSE_SCALES)
    assert int8_error(*chosen) <= 1.05 * best
    assert int8_error(*chosen) < 0.8 * int8_error(low, high)
    assert chosen[0] > low and chosen[1] < high


def test_cli_offers_every_calibration_method():
    from mobilekit.cli.export_cmds import CALIBRATION_METHODS as CLI_METHODS
    from mobilekit.export.calibration import CALIBRATION_METHODS

    assert CLI_METHODS == CALIBRATION_METHODS


def narrow_int8_model():
    """Four 1x1 convs of 8 channels: four all-zero int64 zero-point vectors of length 8
    for the weights and four for the biases, written once each by model_to_bytes."""
    from mobilekit.export.convert import convert

    keras.utils.set_random_seed(1)
    inp = layers.Input((RES, RES, 3), name="input")
    x = inp
    for i in range(4):
        x = layers.Conv2D(8, 1, activation="relu", name=f"conv{i}")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inp, layers.Dense(4, name="logits")(x), name="narrow")
    return convert(model, "int8", representative_data=calib())


def test_model_to_bytes_stores_repeated_vectors_once_and_changes_nothing_else():
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    from mobilekit.export.flatbuffer import BUFFER_ALIGNMENT, model_to_bytes

    original = narrow_int8_model()
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(original))
    plain = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    compact = model_to_bytes(model)
    # 8 zero-point vectors of 8 int64 (64 bytes + length) collapse to one at least.
    assert len(compact) <= len(plain) - 7 * 64
    again = flatbuffer_utils.read_model_from_bytearray(bytearray(compact))
    for a, b in zip(model.subgraphs[0].tensors, again.subgraphs[0].tensors):
        assert (a.name, list(a.shape), a.type, a.buffer) == (b.name, list(b.shape), b.type,
                                                              b.buffer)
        qa, qb = a.quantization, b.quantization
        if qa is not None and qa.scale is not None:
            np.testing.assert_array_equal(qa.scale, qb.scale)
            np.testing.assert_array_equal(qa.zeroPoint, qb.zeroPoint)
    for a, b in zip(model.buffers, again.buffers):
        assert (a.data is None) == (b.data is None)
        if a.data is not None:
            np.testing.assert_array_equal(a.data, b.data)

    outputs = []
    for data in (original, compact):
        interp = Interpreter(model_content=data)
        interp.allocate_tensors()
        inp = interp.get_input_details()[0]
        interp.set_tensor(inp["index"], (calib(1, seed=3) * 100).astype(np.int8))
        interp.invoke()
        outputs.append(interp.get_tensor(interp.get_output_details()[0]["index"]))
    np.testing.assert_array_equal(outputs[0], outputs[1])

    # Weight buffers start on 16 bytes, as the converter writes them.
    from ai_edge_litert import schema_py_generated as schema

    root = schema.Model.GetRootAsModel(compact, 0)
    for i in range(root.BuffersLength()):
        buffer = root.Buffers(i)
        if buffer.DataLength() >= BUFFER_ALIGNMENT:
            start = buffer._tab.Vector(buffer._tab.Offset(4))
            assert start % BUFFER_ALIGNMENT == 0


@pytest.mark.parametrize("dense_quant,scales", [("per-tensor", 1), ("per-channel", 4)])
def test_int8_dense_weights_per_tensor_by_default(model, dense_quant, scales):
    from ai_edge_litert.tools import flatbuffer_utils

    from mobilekit.export.convert import convert

    kwargs = {} if dense_quant == "per-tensor" else {"dense_quant": dense_quant}
    tflite = convert(model, "int8", representative_data=calib(), **kwargs)
    graph = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite)).subgraphs[0]
    weights = next(graph.tensors[op.inputs[1]] for op in graph.operators
                   if list(graph.tensors[op.inputs[1]].shape) == [4, 8])  # the Dense
    assert list(weights.shape) == [4, 8] and len(weights.quantization.scale) == scales
    with pytest.raises(ValueError, match="dense_quant"):
        convert(model, "int8", representative_data=calib(), dense_quant="per-row")


def test_calibration_images_do_not_depend_on_tensorflow_global_seed():
    """The same export must calibrate on the same images whatever ran before it in the
    process (a training run sets TensorFlow's global seed)."""
    from mobilekit.export.pipeline import dataset_samples

    spec = "synthetic:train=64,val=8,classes=4"
    first = dataset_samples(spec, RES, 12, seed=0)
    tf.random.set_seed(123)
    tf.random.uniform(())
    again = dataset_samples(spec, RES, 12, seed=0)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, dataset_samples(spec, RES, 12, seed=1))


def test_bias_correction_cancels_the_mean_shift_of_int8_weights():
    """After a ReLU the inputs have a large mean, so rounding the next layer's weights
    shifts its outputs; with bias correction the int8 file's per-channel mean error shrinks,
    and the Keras model keeps its own weights."""
    from ai_edge_litert.interpreter import Interpreter

    from mobilekit.export.convert import convert

    keras.utils.set_random_seed(3)
    inp = layers.Input((8, 8, 3), name="input")
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name="features")(inp)
    model = keras.Model(inp, layers.Conv2D(4, 1, name="head")(x))
    images = np.random.default_rng(0).uniform(0, 4, (64, 8, 8, 3)).astype(np.float32)
    before = [w.copy() for w in model.get_weights()]
    expected = model.predict(images, verbose=0)

    def mean_error(corrected):
        tflite = convert(model, "int8", images, io="float", bias_correction=corrected)
        interpreter = Interpreter(model_content=tflite)
        interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"],
                                        images.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
        interpreter.invoke()
        out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        return np.abs((out - expected).mean(axis=(0, 1, 2))).mean()

    plain, corrected = mean_error(False), mean_error(True)
    assert corrected < 0.5 * plain
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.slow  # ~40 s; bias correction's own tests stay fast
def test_model_card_export_table_turns_bias_correction_on(tmp_path):
    """models/squeezenet_1_0.toml [export] sets bias correction (measured to keep it within
    a point); --no-bias-correction still wins, and other models keep it off."""
    from mobilekit.export.pipeline import card_export_defaults

    assert card_export_defaults("squeezenet_1_0") == {"bias_correction": True}
    assert card_export_defaults("mobilenet_v2") == {} == card_export_defaults("my_net")
    for flag, expected in (([], True), (["--no-bias-correction"], False)):
        out = tmp_path / f"sq{len(flag)}.tflite"
        res = run_cli("export", "squeezenet_1_0", "--quant", "int8", "--calib-data", "random",
                      "--calib-samples", "4", "--resolution", "32", "--num-classes", "4",
                      "--out", out, *flag)
        assert res.exit_code == 0, res.output
        assert json.loads(out.with_suffix(".json").read_text())["bias_correction"] is expected
        assert ("models/squeezenet_1_0.toml [export]" in res.output) is expected
