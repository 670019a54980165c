"""Intervals and A/B verdicts (mobilekit.bench.stats, mobilekit.bench.compare, bench-compare)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from mobilekit.bench import compare, stats
from mobilekit.bench.schema import empty_result


def lognormal(rng, median, n, sigma=0.02):
    return median * np.exp(rng.normal(0.0, sigma, n))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_percent_is_not_measurable_at_small_n_but_is_at_large_n(seed):
    rng = np.random.default_rng(seed)
    # B is 1 % faster than A; 2 % run-to-run noise (a quiet phone)
    small = stats.compare_samples(lognormal(rng, 10_000, 6), lognormal(rng, 9_900, 6))
    assert small["ci_low"] < 1.0 < small["ci_high"]
    assert small["verdict"] == "no difference measurable"
    large = stats.compare_samples(lognormal(rng, 10_000, 2000), lognormal(rng, 9_900, 2000))
    assert 1.0 < large["ci_low"] < 1.0101 < large["ci_high"] < 1.02
    assert large["verdict"] == "faster"
    # the same samples the other way round: slower, and the interval inverts
    back = stats.compare_samples(lognormal(rng, 9_900, 2000), lognormal(rng, 10_000, 2000))
    assert back["verdict"] == "slower" and back["ci_high"] < 1.0


def test_intervals_cover_one_when_there_is_no_difference():
    """95 % intervals: of 40 A/A comparisons about 38 must say 'no difference measurable'."""
    hits = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        result = stats.compare_samples(lognormal(rng, 5_000, 40, 0.05),
                                       lognormal(rng, 5_000, 40, 0.05), resamples=500)
        hits += result["verdict"] == "no difference measurable"
    assert 34 <= hits <= 40


def test_paired_rounds_cancel_a_shared_load_change():
    """Host round-robin: a load that hits A and B in the same round cancels when paired."""
    rng = np.random.default_rng(7)
    load = np.exp(rng.normal(0.0, 0.25, 60))          # 25 % round-to-round load swings
    a = 10_000 * load * np.exp(rng.normal(0, 0.005, 60))
    b = 9_800 * load * np.exp(rng.normal(0, 0.005, 60))   # B 2 % faster
    assert stats.compare_samples(a, b, paired=False)["verdict"] == "no difference measurable"
    paired = stats.compare_samples(a, b, paired=True)
    assert paired["verdict"] == "faster" and paired["ci_low"] > 1.01
    assert paired["ci_low"] <= paired["speedup"] <= paired["ci_high"]
    assert paired["speedup"] == pytest.approx(10_000 / 9_800, abs=0.005)   # median of a_i / b_i
    with pytest.raises(ValueError, match="equal counts"):
        stats.ratio_ci(a, b[:-1], paired=True)


def test_median_ci_cv_and_degenerate_inputs():
    median, low, high = stats.median_ci([100, 102, 98, 101, 99, 100, 103])
    assert median == 100 and low <= 100 <= high and 98 <= low and high <= 103
    assert stats.median_ci([100]) == (100.0, None, None)
    assert stats.median_ci([]) == (None, None, None)
    assert stats.cv([100, 100]) == 0.0 and stats.cv([5]) is None
    assert stats.cv([90, 110]) == pytest.approx(np.std([90, 110], ddof=1) / 100)
    assert stats.verdict(None, None) == "no difference measurable"
    assert stats.ratio_ci([100, 101], [50]) == (pytest.approx(100.5 / 50), None, None)
    with pytest.raises(ValueError, match="positive"):
        stats.median_ci([1, -2])
    # deterministic: same samples, same interval
    assert stats.median_ci([3, 1, 4, 1, 5, 9, 2, 6]) == stats.median_ci([3, 1, 4, 1, 5, 9, 2, 6])


def _row(model, median_us, repeats=None, **extra):
    row = empty_result(model_path=f"/m/{model}", delegate="xnnpack", threads=4, ok=True,
                       inference_median_us=median_us, repeat_medians_us=repeats, **extra)
    return row


def test_compare_result_sets_matches_configurations_and_uses_repeats():
    rng = np.random.default_rng(3)
    before = [_row("net.tflite", 10_000, list(lognormal(rng, 10_000, 8, 0.01))),
              _row("other.tflite", 5_000, [5_000, 5_010, 4_990])]
    after = [_row("net.tflite", 8_000, list(lognormal(rng, 8_000, 8, 0.01))),
             _row("other.tflite", 5_000, [5_005, 4_995, 5_001])]
    results = {r["a"]: r for r in compare.compare_result_sets(before, after)}
    assert results["net.tflite"]["verdict"] == "faster"
    assert results["net.tflite"]["ci_low"] > 1.15 and (results["net.tflite"]["n_a"],
                                                       results["net.tflite"]["n_b"]) == (8, 8)
    assert results["other.tflite"]["verdict"] == "no difference measurable"
    # fp32 vs int8 sweeps: no common model name -> matched on delegate/threads alone
    fp32 = [_row("m_fp32.tflite", 10_000, [10_000, 10_100, 9_900, 10_050])]
    int8 = [_row("m_int8.tflite", 5_000, [5_000, 5_050, 4_950, 5_020])]
    (only,) = compare.compare_result_sets(fp32, int8)
    assert (only["a"], only["b"], only["verdict"]) == ("m_fp32.tflite", "m_int8.tflite", "faster")
    # one median a side (no --repeat): no interval, and a note that says why
    (single,) = compare.compare_result_sets([_row("x.tflite", 100)], [_row("x.tflite", 50)])
    assert single["speedup"] == 2.0 and single["ci_low"] is None
    assert single["verdict"] == "no difference measurable" and "--repeat" in single["note"]
    with pytest.raises(ValueError, match="no configuration in common"):
        compare.compare_result_sets([_row("x.tflite", 1)],
                                    [dict(_row("x.tflite", 1), threads=1)])


def test_rows_repeated_by_run_sweep_pool_into_samples():
    """read_sweep gives one row per repeat: they pool into one configuration's samples."""
    a = [_row("n.tflite", v) for v in (10_000, 10_050, 9_980, 10_020, 10_010)]
    b = [_row("n.tflite", v) for v in (9_000, 9_030, 8_990, 9_010, 9_020)]
    b.append(dict(_row("n.tflite", None), ok=False, error="crashed"))   # failures are not samples
    (result,) = compare.compare_result_sets(a, b)
    assert (result["n_a"], result["n_b"], result["verdict"]) == (5, 5, "faster")


def test_bench_compare_cli_on_result_dirs(tmp_path):
    from mobilekit.cli import cli

    for name, values in (("a", [10_000, 10_100, 9_950, 10_050]), ("b", [7_000, 7_050, 6_990, 7_020])):
        (tmp_path / name).mkdir()
        row = _row("net.tflite", values[0], values)
        (tmp_path / name / "results.jsonl").write_text(json.dumps(row) + "\n")
    runner = CliRunner()
    result = runner.invoke(cli, ["bench-compare", str(tmp_path / "a"), str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "faster" in result.output and "95% CI" in result.output and "1.4" in result.output
    result = runner.invoke(cli, ["bench-compare", str(tmp_path / "a"), str(tmp_path / "b"), "--json"])
    (parsed,) = json.loads(result.output)
    assert parsed["verdict"] == "faster" and parsed["n_a"] == 4
    (tmp_path / "m.tflite").write_bytes(b"TFL3")
    result = runner.invoke(cli, ["bench-compare", str(tmp_path / "m.tflite"), str(tmp_path / "b")])
    assert result.exit_code == 2 and "both be .tflite models or both result sets" in result.output
    result = runner.invoke(cli, ["bench-compare", str(tmp_path / "a"), str(tmp_path)])
    assert result.exit_code == 2 and "has no results.jsonl" in result.output
    result = runner.invoke(cli, ["bench-compare", str(tmp_path / "a"), str(tmp_path / "b"),
                                 "--repeat", "0"])
    assert result.exit_code == 2 and "--repeat" in result.output


@pytest.fixture(scope="module")
def small_and_big(tmp_path_factory):
    """Two real .tflite files, one ~30x the work of the other."""
    from mobilekit.keras import keras, layers, tf

    out = tmp_path_factory.mktemp("compare_models")
    paths = []
    for name, filters in (("small", 4), ("big", 96)):
        inp = keras.Input((48, 48, 8), batch_size=1)
        x = layers.Conv2D(filters, 3, padding="same")(inp)
        x = layers.Conv2D(filters, 3, padding="same")(x)
        data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, x)).convert()
        paths.append(out / f"{name}.tflite")
        paths[-1].write_bytes(data)
    return paths


def test_host_compare_is_round_robin_and_paired(small_and_big, monkeypatch):
    small, big = small_and_big
    result = compare.compare_models(small, big, "host", rounds=25, warmup_runs=2)
    assert (result["n_a"], result["n_b"], result["paired"]) == (25, 25, True)
    assert result["verdict"] == "slower" and result["ci_high"] < 0.5   # big is B
    assert result["ci_low"] <= result["speedup"] <= result["ci_high"]
    assert "round-robin" in result["method"]
    from mobilekit.bench.host import interleaved_medians, interleaved_times

    times = interleaved_times([small, big], rounds=3, warmup_runs=0)
    assert [len(t) for t in times] == [3, 3] and all(v > 0 for t in times for v in t)
    # warm_invokes: that many untimed invokes of the same file just before each timed one
    calls = []
    from ai_edge_litert.interpreter import Interpreter

    real_invoke = Interpreter.invoke

    def invoke(self):
        calls.append(id(self))
        return real_invoke(self)

    monkeypatch.setattr(Interpreter, "invoke", invoke)
    times = interleaved_times([small, big], rounds=3, warmup_runs=1, warm_invokes=2)
    assert [len(t) for t in times] == [3, 3]
    a, b = calls[0], calls[1]  # the warm-up invoke of each, then rounds of [a a a b b b]
    assert calls == [a, b] + [a, a, a, b, b, b] * 3
    assert len(interleaved_medians([small], rounds=2, warmup_runs=0)) == 1
