"""`mobilekit train --qat --from RUN`: QAT fine-tune of a float run, saved, reloaded, full int8."""
from mobilekit.export.pipeline import export
from mobilekit.io import load_keras
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
