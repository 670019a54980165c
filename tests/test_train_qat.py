"""`mobilekit train --qat --from RUN`: QAT fine-tune of a float run, saved, reloaded, full int8."""
from mobilekit.export.pipeline import export
from mobilekit.loading import load_keras
from mobilekit.train import trainer

DATA = "synthetic:train=16,val=8,classes=4"


def _train(out, **extra):
    config = trainer.resolve_config("mobilenet_v3_small", alpha=0.75, resolution=32, data=DATA,
                                    epochs=1, batch_size=16, precise_bn=0, **extra)
    trainer.train(config, out, verbose=0)
    return out


import pytest


@pytest.fixture(scope="module")
def float_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("float") / "run")


@pytest.mark.slow  # ~50 s; QAT conversion (test_zoo_tflite) and range init stay fast
def test_qat_fine_tune_exports_full_int8(tmp_path, float_run):
    qat_run = _train(tmp_path / "qat", qat=True, init_from=str(float_run))
    model = load_keras(qat_run / "model.keras")  # rebuilt from config + QAT weights
    assert any("Quantize" in type(layer).__name__ for layer in model.layers)
    path, report = export(str(qat_run), "int8")
    assert report["qat"] is True
    assert report["float_ops"] == 0
    assert report["max_tensor_rank"] <= 4
    assert report["inputs"][0]["dtype"] == "int8"


def test_from_rejects_another_architecture(tmp_path, float_run):
    config = trainer.resolve_config("mobilenet_v3_small", alpha=1.0, resolution=32, data=DATA,
                                    epochs=1, batch_size=16, init_from=str(float_run))
    with pytest.raises(ValueError, match="not the same architecture"):
        trainer.train(config, tmp_path / "other", verbose=0)


def _range_vars(qat_model):
    return {v.name.split("/")[0] + "/" + v.name.split("/")[-1].split(":")[0]: v.numpy()
            for v in qat_model.weights if v.name.split(":")[0].endswith(("_min", "_max"))}


def test_qat_ranges_start_from_float_activations():
    """tfmot starts activation ranges at [-6, 6]; a network whose activations are wider is
    clipped (the QAT model is far from its float model until ~1000 steps of EMA). After
    init_ranges each range is the mean over 8-image chunks of the float tensor's min/max
    (training mode, as tfmot measures them; the float model is left unchanged),
    weight ranges are the weights' own, and the QAT model tracks the float one."""
    import numpy as np

    from mobilekit.compress.qat import init_ranges, quantize_model
    from mobilekit.export.pipeline import reestimate_batchnorm
    from mobilekit.keras import keras, layers

    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, layers.Dense(4, name="fc")(x))
    rng = np.random.default_rng(0)
    images = (20 * rng.standard_normal((40, 8, 8, 3))).astype(np.float32)  # |x| up to ~80
    reestimate_batchnorm(model, images)  # BatchNorm statistics of a trained model
    bn = model.get_layer("bn")
    bn.gamma.assign(10 * np.ones(8, np.float32))  # post-ReLU values up to ~30, past 6
    qat = quantize_model(model)
    reference = model(images, training=False).numpy()
    float_weights = model.get_weights()

    def error():
        return np.abs(qat(images, training=False).numpy() - reference).mean() / np.abs(
            reference).mean()

    qat(images[:1], training=True)  # one training step sets the weight ranges only
    clipped = error()
    assert init_ranges(qat, model, images[:35]) == 4  # input, relu, pool, fc outputs
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), float_weights))
    ranges = _range_vars(qat)
    chunks = images[:32].reshape(4, 8, 8, 8, 3)  # full 8-image chunks only: 35 -> 32
    input_range = next(layer.quantizer_vars for layer in qat.layers
                       if type(layer).__name__ == "QuantizeLayer")
    assert np.isclose(input_range["min_var"].numpy(), np.mean([c.min() for c in chunks]))
    assert np.isclose(input_range["max_var"].numpy(), np.mean([c.max() for c in chunks]))
    relu = keras.Model(inputs, model.get_layer("relu").output)  # BN on batch statistics
    assert ranges["quant_relu/output_min"] == 0.0
    assert np.isclose(ranges["quant_relu/output_max"],
                      np.mean([relu(c, training=True).numpy().max() for c in chunks]), rtol=1e-5)
    kernel = model.get_layer("conv").kernel.numpy()
    assert np.allclose(ranges["quant_conv/kernel_max"], np.abs(kernel).max(axis=(0, 1, 2)))
    assert clipped > 0.3 and error() < 0.05, (clipped, error())
