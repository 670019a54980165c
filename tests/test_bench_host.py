"""The in-process LiteRT host runner (mobilekit.bench.host)."""
import hashlib
import time

import numpy as np
import pytest

from mobilekit.bench.host import NO_GPU, _random_array, litert_version, run_host
from mobilekit.bench.schema import RESULT_KEYS

# Few runs and no minimum durations keep each call in the milliseconds.
FAST = dict(warmup_runs=2, warmup_min_secs=0.0, num_runs=5, min_secs=0.0)


def _convert(model, int8=False):
    from mobilekit.keras import tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        rng = np.random.default_rng(0)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: (
            [rng.uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)] for _ in range(8))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    return converter.convert()


def tiny_model():
    """4 ops (CONV, DEPTHWISE, MEAN, FULLY_CONNECTED), 16 x 16 x 3 in, 10 logits out."""
    from mobilekit.keras import keras, layers

    inp = keras.Input((16, 16, 3), batch_size=1)
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(10)(x))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """tiny: 4 ops, all XNNPACK; split: CONV, LOG_SOFTMAX (not delegated), CONV; int8."""
    from mobilekit.keras import keras, layers

    out = tmp_path_factory.mktemp("host_models")
    tiny = tiny_model()
    inp = keras.Input((8, 8, 3), batch_size=1)
    x = layers.Activation("log_softmax")(layers.Conv2D(4, 3, padding="same")(inp))
    split = keras.Model(inp, layers.Conv2D(4, 1)(x))
    paths = {}
    for name, model, int8 in (("tiny", tiny, False), ("split", split, False),
                              ("int8", tiny, True)):
        paths[name] = out / f"{name}.tflite"
        paths[name].write_bytes(_convert(model, int8))
    return paths


def _check_stats(row, num_runs):
    assert row["ok"] is True and row["error"] is None
    assert row["inference_count"] >= num_runs
    assert 0 < row["inference_min_us"] <= row["inference_median_us"] <= row["inference_max_us"]
    assert row["inference_min_us"] <= row["inference_avg_us"] <= row["inference_max_us"]
    assert row["inference_std_us"] >= 0
    assert row["init_us"] > 0 and row["first_inference_us"] > 0 and row["warmup_avg_us"] > 0


def test_xnnpack_row_is_complete_schema_row(models):
    path = models["tiny"]
    row = run_host(path, "xnnpack", 1, **FAST)
    assert set(row) == set(RESULT_KEYS)
    _check_stats(row, FAST["num_runs"])
    assert (row["target"], row["runtime"], row["delegate"], row["threads"]) == \
        ("host", "litert", "xnnpack", 1)
    assert row["runtime_version"] == litert_version() and row["runtime_version"]
    assert row["model_size_bytes"] == path.stat().st_size
    assert row["model_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (row["delegated_nodes"], row["total_nodes"], row["delegation"]) == (4, 4, "complete")
    assert row["peak_memory_mb"] > 0 and row["op_profile"] is None


def test_cpu_delegate_uses_no_delegate(models):
    row = run_host(models["tiny"], "cpu", 2, **FAST)
    _check_stats(row, FAST["num_runs"])
    assert (row["delegated_nodes"], row["total_nodes"], row["delegation"]) == (0, 4, "none")
    assert row["threads"] == 2


def test_partial_delegation_counts_nodes(models):
    # XNNPACK takes both convolutions; LOG_SOFTMAX stays on the reference kernels.
    row = run_host(models["split"], "xnnpack", 1, **FAST)
    assert (row["delegated_nodes"], row["total_nodes"], row["delegation"]) == (2, 3, "partial")


def test_int8_inputs_are_fed(models):
    row = run_host(models["int8"], "xnnpack", 1, **FAST)
    _check_stats(row, FAST["num_runs"])


def test_run_count_follows_benchmark_model_rules(models):
    exact = run_host(models["tiny"], "xnnpack", 1, warmup_runs=3, warmup_min_secs=0.0,
                     num_runs=7, min_secs=0.0)
    assert exact["inference_count"] == 7
    # min_secs extends the count far beyond num_runs for a microsecond-scale model.
    longer = run_host(models["tiny"], "xnnpack", 1, warmup_runs=0, warmup_min_secs=0.0,
                      num_runs=2, min_secs=0.2)
    assert longer["inference_count"] > 2
    assert longer["first_inference_us"] is None and longer["warmup_avg_us"] is None
    # max_secs stops starting new runs even though num_runs is far from reached.
    start = time.perf_counter()
    capped = run_host(models["tiny"], "xnnpack", 1, warmup_runs=0, warmup_min_secs=0.0,
                      num_runs=10**9, min_secs=0.0, max_secs=0.2)
    assert capped["ok"] and 1 <= capped["inference_count"] < 10**9
    assert time.perf_counter() - start < 5


def test_gpu_without_accelerator_is_a_clean_error_row(models, tmp_path, monkeypatch):
    # No Vulkan driver the loader can find: what a machine without the GPU set-up sees.
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "missing_icd.json"))
    row = run_host(models["tiny"], "gpu", 1, **FAST)
    assert row["ok"] is False and row["error"].startswith(NO_GPU)
    assert row["inference_median_us"] is None and row["delegate"] == "gpu"
    assert row["model_size_bytes"] == models["tiny"].stat().st_size


def test_unloadable_models_give_error_rows(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer" * 8)
    row = run_host(bad, **FAST)
    assert row["ok"] is False and "Flatbuffer" in row["error"]
    missing = run_host(tmp_path / "missing.tflite", **FAST)
    assert missing["ok"] is False and missing["error"].startswith("FileNotFoundError")


@pytest.mark.parametrize("kwargs, message", [
    (dict(delegate="npu"), "delegate must be one of xnnpack, cpu, gpu; got 'npu'"),
    (dict(threads=0), "threads must be an integer >= 1; got 0"),
    (dict(num_runs=0), "num_runs must be an integer >= 1; got 0"),
    (dict(min_secs=-1), "min_secs must be a number >= 0; got -1"),
    (dict(max_secs=0), "max_secs must be a number > 0; got 0"),
])
def test_bad_arguments_raise(kwargs, message, tmp_path):
    with pytest.raises(ValueError) as info:
        run_host(tmp_path / "m.tflite", **kwargs)
    assert str(info.value) == message


def test_random_inputs_match_dtype_and_range():
    rng = np.random.default_rng(0)
    cases = {np.float32: (-1.0, 1.0), np.float16: (-1.0, 1.0), np.int8: (-128, 127),
             np.uint8: (0, 255), np.int32: (0, 99), np.int64: (0, 99)}
    for dtype, (low, high) in cases.items():
        data = _random_array(dtype, [2, 50, 50], rng)
        assert data.dtype == np.dtype(dtype) and data.shape == (2, 50, 50)
        assert low <= data.min() < data.max() <= high
    flags = _random_array(np.bool_, [100], rng)
    assert flags.dtype == np.bool_ and 0 < flags.sum() < 100


def test_interleaved_medians_one_median_per_file(models):
    from mobilekit.bench import host

    paths = [models["tiny"], models["int8"], models["split"]]
    medians = host.interleaved_medians(paths, rounds=5, warmup_runs=1)
    assert len(medians) == 3 and all(m > 0 for m in medians)
    cpu = host.interleaved_medians(paths[:1], rounds=2, delegate="cpu", warmup_runs=0)
    assert len(cpu) == 1 and cpu[0] > 0
    with pytest.raises(ValueError, match="delegate"):
        host.interleaved_medians(paths, delegate="gpu")
    with pytest.raises(ValueError, match="rounds"):
        host.interleaved_medians(paths, rounds=0)
