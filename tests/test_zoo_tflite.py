"""Every zoo classifier converts to fp32 and full int8 TFLite: no float op, rank <= 4, one
XNNPACK partition in int8, fp32 outputs equal Keras'. Parametrized from the registry, so a
new model cannot skip it."""
import numpy as np
import pytest

import mobilekit
from mobilekit.zoo.registry import get_entry

CLASSIFIERS = mobilekit.list_models(task="classification")
NUM_CLASSES = 10
# QAT is slow (tfmot clones every layer): a few models that cover hard-swish + SE,
# swish + SE and a channel shuffle.
QAT_MODELS = [n for n in ("mobilenet_v3_small", "efficientnet_b0", "shufflenet_v2")
              if n in CLASSIFIERS]
# The fast tier (`pytest -m "not slow"`) converts one model per kind of block: depthwise
# separable, inverted residual + hard-swish + SE, channel shuffle, fire, shift, group conv;
# the rest of the zoo is marked slow (the full suite still converts every model).
FAST = {"mobilenet_v1", "mobilenet_v3_small", "shufflenet_v2", "squeezenet_1_1", "shiftnet",
        "regnetx_200mf"}
FAST_QAT = {"shufflenet_v2"}


def tiered(names, fast):
    return [pytest.param(n, marks=() if n in fast else pytest.mark.slow) for n in names]


def tiny(name):
    entry = get_entry(name)
    alpha = min(entry.alphas) if entry.alphas else 0.25
    resolution = max(32, entry.min_resolution)
    return mobilekit.create_model(name, alpha=alpha, resolution=resolution,
                                  num_classes=NUM_CLASSES)


def random_images(model, n, seed=0):
    shape = tuple(model.inputs[0].shape[1:])
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


def test_every_classifier_is_covered():
    assert len(CLASSIFIERS) >= 14 and "mobilenet_v2" in CLASSIFIERS
    assert all(get_entry(n).task == "classification" for n in CLASSIFIERS)


@pytest.mark.parametrize("name", tiered(CLASSIFIERS, FAST))
def test_zoo_model_exports_fp32_and_full_int8(name):
    from mobilekit.export.convert import convert
    from mobilekit.export.pipeline import tflite_predict
    from mobilekit.export.report import analyze, float_op_report

    model = tiny(name)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert not kinds & {"Lambda", "TFOpLambda", "SlicingOpLambda"}, "real layers only"
    images = random_images(model, 2)
    fp32 = convert(model, "fp32")
    assert float_op_report(fp32)["max_tensor_rank"] <= 4
    expected = model(images, training=False).numpy()
    got = tflite_predict(fp32, images)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)

    # As `mobilekit export` does for random-init zoo models: realistic activation ranges
    # (fresh BN statistics shrink activations towards 0, and int8 ADDs whose input and output
    # scales differ by > ~1000x are refused by XNNPACK, splitting the partition).
    from mobilekit.export.pipeline import reestimate_batchnorm

    reestimate_batchnorm(model, random_images(model, 8, seed=2))
    int8 = convert(model, "int8", representative_data=random_images(model, 4, seed=1))
    report = analyze(int8)
    assert report["float_ops"] == 0, report["float_op_list"]
    assert report["max_tensor_rank"] <= 4
    # The whole int8 graph runs in one XNNPACK partition (mobilekit.export.delegable).
    assert report["xnnpack"]["partitions"] == 1, report["xnnpack"]


@pytest.mark.parametrize("name", tiered(QAT_MODELS, FAST_QAT))
def test_qat_model_exports_full_int8(name):
    from mobilekit.compress.qat import quantize_model
    from mobilekit.export.convert import convert
    from mobilekit.export.report import analyze

    qat = quantize_model(tiny(name))
    # A training-mode pass sets the moving-average ranges, as fine-tuning would.
    qat(random_images(qat, 4), training=True)
    report = analyze(convert(qat, "int8"))
    assert report["float_ops"] == 0
    assert report["inputs"][0]["dtype"] == "int8"
    assert report["max_tensor_rank"] <= 4
    assert "HARD_SWISH" not in report["ops"]
    assert report["xnnpack"]["partitions"] == 1, report["xnnpack"]
