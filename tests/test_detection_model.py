"""FaceBoxes model: structure, published size, anchors in the profile, backbone swap,
in-graph decoding, .keras round trip and TFLite fp32 == Keras."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobilekit.detection.anchors import generate_anchors, num_anchors
from mobilekit.detection.boxes import decode
from mobilekit.detection.postprocess import Detector, inference_model, nms, select
from mobilekit.export.convert import convert
from mobilekit.keras import keras, layers, tf
from mobilekit.zoo.registry import create_model


@pytest.fixture(scope="module")
def small():
    return create_model("faceboxes", input_shape=(128, 160, 3))


def test_structure_and_size(small):
    a = num_anchors((128, 160))
    assert a == 4 * 5 * 21 + 2 * 3 + 1 * 2
    assert [tuple(o.shape) for o in small.outputs] == [(None, a, 4), (None, a, 2)]
    assert [o.name.split("/")[0] for o in small.outputs] == ["loc", "conf"]
    # Parameters do not depend on the input size: the derived count of backbones_notes §12.
    trainable = sum(int(np.prod(w.shape)) for w in small.trainable_weights)
    assert trainable == 1_007_330
    kinds = {type(layer).__name__ for layer in small.layers}
    assert "Lambda" not in kinds and "TFOpLambda" not in kinds and "Negate" in kinds
    assert all(len(layer.output.shape) <= 4 for layer in small.layers)
    assert small.get_layer("inception3_concat").output.shape[1:] == (4, 5, 128)
    assert small.get_layer("conv4_2_relu").output.shape[1:] == (1, 2, 256)


def test_crelu_is_concat_of_relu_and_negated_relu():
    inputs = layers.Input((2, 2, 3))
    from mobilekit.layers.crelu import crelu

    model = keras.Model(inputs, crelu(inputs, "c"))
    x = np.random.default_rng(0).normal(size=(1, 2, 2, 3)).astype(np.float32)
    np.testing.assert_allclose(model(x).numpy(), np.concatenate([np.maximum(x, 0), np.maximum(-x, 0)], -1))


def test_profile_reports_anchors_and_published_cost():
    from mobilekit.cli import cli

    result = CliRunner().invoke(cli, ["profile", "--model", "faceboxes", "--resolution", "1024",
                                      "--json", "--no-layers"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert data["num_anchors"] == 21824
    assert data["trainable_params"] == 1_007_330
    assert data["macs"] / 1e6 == pytest.approx(933.2, abs=0.1)  # derived count, notes §12


def test_backbone_swap():
    model = create_model("faceboxes", backbone="mobilenet_v2", alpha=0.5, resolution=128)
    assert model.outputs[0].shape[1] == num_anchors((128, 128))
    maps = [model.get_layer(f"head{i}_loc").input.shape[1:3] for i in (1, 2, 3)]
    assert maps == [(4, 4), (2, 2), (1, 1)]  # strides 32 / 64 / 128
    assert model.get_layer("block16_project_bn") is not None
    with pytest.raises(ValueError, match="backbone"):
        create_model("faceboxes", backbone="resnet", resolution=128)


def test_inference_model_decodes_and_round_trips(small, tmp_path):
    infer = inference_model(small)
    x = np.random.default_rng(1).uniform(-1, 1, (1, 128, 160, 3)).astype(np.float32)
    loc, conf = small(x)
    boxes, scores = infer(x)
    np.testing.assert_allclose(boxes.numpy(), decode(loc, generate_anchors((128, 160))).numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), tf.nn.softmax(conf)[..., 1].numpy(), atol=1e-6)
    infer.save(tmp_path / "infer.keras")
    again = keras.models.load_model(tmp_path / "infer.keras")
    np.testing.assert_allclose(again(x)[0].numpy(), boxes.numpy(), atol=1e-6)


def test_tflite_fp32_matches_keras(small, tmp_path):
    path = tmp_path / "fb.tflite"
    path.write_bytes(convert(inference_model(small), "fp32"))
    keras_det, lite_det = Detector(small), Detector.load(path)
    assert lite_det.input_hw == (128, 160)
    x = np.random.default_rng(2).uniform(-1, 1, (1, 128, 160, 3)).astype(np.float32)
    kb, ks = keras_det.raw(x)
    lb, ls = lite_det.raw(x)
    np.testing.assert_allclose(lb, kb, atol=2e-4)
    np.testing.assert_allclose(ls, ks, atol=2e-5)


def test_nms_and_select():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.3).tolist() == [3, 2]
    kept, s = select(boxes / 30, scores, score_threshold=0.75, nms_iou=0.3)
    assert s.tolist() == [0.95] and len(kept) == 1
