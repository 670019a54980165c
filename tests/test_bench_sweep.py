"""Benchmark sweeps, result writers, the `mobilekit bench` command and plots."""
import json
import shutil

import pytest
from click.testing import CliRunner

from mobilekit.bench.schema import RESULT_KEYS, empty_result
from mobilekit.bench.sweep import export_report_info, run_sweep, summary_table
from mobilekit.report.writers import read_csv, read_jsonl

FAST = dict(warmup_runs=1, warmup_min_secs=0.0, num_runs=3, min_secs=0.0)
MACS = 123_456


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two copies of a tiny model; `a` has an export report with MACs and eval top-1."""
    from mobilekit.keras import keras, layers, tf

    inp = keras.Input((16, 16, 3), batch_size=1)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inp)
    x = layers.GlobalAveragePooling2D()(x)
    data = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inp, layers.Dense(3)(x))).convert()
    out = tmp_path_factory.mktemp("sweep_models")
    a, b = out / "a.tflite", out / "b.tflite"
    a.write_bytes(data)
    shutil.copy(a, b)
    (out / "a.json").write_text(json.dumps({"macs": MACS, "eval": {"top1": 0.61}}))
    return a, b


@pytest.fixture(scope="module")
def sweep(models, tmp_path_factory):
    """2 models x 2 delegates x 2 threads, plus a missing model (4 error rows)."""
    out = tmp_path_factory.mktemp("sweep_out")
    missing = out / "missing.tflite"
    lines_seen = []

    def on_row(index, total, row):  # results.jsonl must hold every finished row already
        lines_seen.append((index, total, len(read_jsonl(out / "results.jsonl"))))

    rows = run_sweep([*models, missing], "host", ["xnnpack", "cpu"], [1, 2], out_dir=out,
                     on_row=on_row, **FAST)
    return rows, out, lines_seen


def test_sweep_runs_the_whole_matrix(sweep, models):
    rows, _, _ = sweep
    assert len(rows) == 12
    expected = [(m, d, t) for m in ("a.tflite", "b.tflite", "missing.tflite")
                for d in ("xnnpack", "cpu") for t in (1, 2)]
    assert [(r["model_path"].rsplit("/", 1)[-1], r["delegate"], r["threads"]) for r in rows] \
        == expected
    assert all(r["ok"] for r in rows[:8])
    assert all(r["inference_count"] == FAST["num_runs"] for r in rows[:8])


def test_failing_model_is_an_error_row_not_an_abort(sweep):
    rows, _, _ = sweep
    for row in rows[8:]:
        assert row["ok"] is False and row["error"].startswith("FileNotFoundError")
        assert row["model_path"].endswith("missing.tflite") and set(row) == set(RESULT_KEYS)


def test_jsonl_is_appended_row_by_row(sweep):
    _, _, lines_seen = sweep
    assert lines_seen == [(i, 12, i) for i in range(1, 13)]


def test_three_files_agree(sweep):
    rows, out, _ = sweep
    jsonl = read_jsonl(out / "results.jsonl")
    columns, csv_rows = read_csv(out / "results.csv")
    assert jsonl == rows
    assert columns == list(RESULT_KEYS) and all(list(r) == list(RESULT_KEYS) for r in jsonl)
    assert len(csv_rows) == 12
    for row, cells in zip(rows, csv_rows):
        assert cells["model_path"] == row["model_path"]
        if row["ok"]:
            assert float(cells["inference_median_us"]) == row["inference_median_us"]
            assert json.loads(cells["device"]) == row["device"]
        assert cells["ok"] == str(row["ok"])
    table = (out / "results.md").read_text().splitlines()
    body = [line for line in table if line.startswith("| ") and "model" not in line]
    assert len(body) == 12
    assert sum("error: FileNotFoundError" in line for line in body) == 4
    assert not list(out.glob("*.tmp"))


def test_markdown_numbers(sweep):
    rows, _, _ = sweep
    headers, cells, notes = summary_table(rows)
    first = dict(zip(headers, cells[0]))
    assert first["speed-up"] == "1.00x" and first["status"] == "ok"
    median = rows[0]["inference_median_us"]
    gmacs = MACS / median / 1e3
    expected = f"{gmacs:.1f}" if gmacs >= 100 else f"{gmacs:.2f}" if gmacs >= 1 else f"{gmacs:.3g}"
    assert first["GMAC/s"] == expected
    assert first["delegation"] == "complete 3/3"
    b_row = dict(zip(headers, cells[4]))          # b.tflite has no export report
    assert b_row["model"] == "b.tflite" and b_row["GMAC/s"] is None
    assert dict(zip(headers, cells[2]))["delegation"] == "none 0/3"
    assert any("8 of 12 configurations succeeded" in n for n in notes)


def test_existing_results_are_kept_aside(models, tmp_path):
    (tmp_path / "results.jsonl").write_text('{"old": 1}\n')
    run_sweep([models[1]], "host", ["cpu"], [1], out_dir=tmp_path, **FAST)
    aside = [p for p in tmp_path.glob("results.*.jsonl")]
    assert len(aside) == 1 and aside[0].read_text() == '{"old": 1}\n'
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 1


def test_bad_sweep_arguments(models, tmp_path):
    with pytest.raises(ValueError, match="unknown delegate for target host 'nnapi'"):
        run_sweep([models[0]], "host", ["nnapi"], [1], out_dir=tmp_path)
    with pytest.raises(ValueError, match="target must be one of host, local, adb; got 'phone'"):
        run_sweep([models[0]], "phone", ["cpu"], [1], out_dir=tmp_path)
    with pytest.raises(ValueError, match="threads must be integers >= 1; got 0"):
        run_sweep([models[0]], "host", ["cpu"], [0], out_dir=tmp_path)


def test_host_sweep_interrupted_then_resumed_measures_each_configuration_once(models, tmp_path):
    from mobilekit.bench.resume import config_key
    from mobilekit.bench.sweep import SweepInterrupted

    def stop_after_two(index, total, row):
        if index == 2:
            raise KeyboardInterrupt   # Ctrl-C arrives as the second row is being recorded

    with pytest.raises(SweepInterrupted) as stop:
        run_sweep(list(models), "host", ["cpu"], [1, 2], out_dir=tmp_path, on_row=stop_after_two,
                  **FAST)
    assert (stop.value.done, stop.value.total) == (2, 4)
    _, csv_rows = read_csv(tmp_path / "results.csv")
    assert [(c["model_path"].rsplit("/", 1)[-1], c["threads"]) for c in csv_rows] == \
        [("a.tflite", "1"), ("a.tflite", "2")]
    assert (tmp_path / "results.md").read_text().count("| ok") == 2
    started = []
    rows = run_sweep(list(models), "host", ["cpu"], [1, 2], out_dir=tmp_path, resume=True,
                     on_start=lambda *args, **kw: started.append(args[3:5]), **FAST)
    assert started == [("cpu", 1), ("cpu", 2)]   # only b's two configurations ran
    assert [(r["model_path"].rsplit("/", 1)[-1], r["threads"]) for r in rows] == \
        [("a.tflite", 1), ("a.tflite", 2), ("b.tflite", 1), ("b.tflite", 2)]
    assert len({config_key(r) for r in rows}) == 4 and all(r["ok"] for r in rows)
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 4
    assert all(r["flags"] == rows[0]["flags"] and r["attempts"] == 1 for r in rows)
    # other settings are other configurations: nothing is skipped
    again = run_sweep([models[0]], "host", ["cpu"], [1], out_dir=tmp_path, resume=True,
                      **dict(FAST, num_runs=4))
    assert len(again) == 5
    assert [r["inference_count"] for r in again if "num_runs=4" in r["flags"]] == [4]


def test_local_target_without_binary_is_an_error_row(models, tmp_path, monkeypatch):
    monkeypatch.delenv("MOBILEKIT_BENCHMARK_MODEL", raising=False)
    rows = run_sweep([models[0]], "local", ["xnnpack"], [1], out_dir=tmp_path, **FAST)
    assert len(rows) == 1 and rows[0]["ok"] is False and rows[0]["target"] == "local"
    assert "MOBILEKIT_BENCHMARK_MODEL" in rows[0]["error"]


def test_export_report_info_variants(tmp_path):
    model = tmp_path / "m.tflite"
    none = {"macs": None, "accuracy": None, "quant": None}
    assert export_report_info(model) == none
    (tmp_path / "m.json").write_text(json.dumps({"profile": {"macs": 5}, "eval": {"top_1": 0.5}}))
    assert export_report_info(model) == {"macs": 5, "accuracy": 0.5, "quant": None}
    (tmp_path / "m.json").write_text(json.dumps({"macs": 7, "eval": 0.25, "quant": "int8"}))
    assert export_report_info(model) == {"macs": 7, "accuracy": 0.25, "quant": "int8"}
    (tmp_path / "m.json").write_text("{broken")
    assert export_report_info(model) == none


def test_cli_bench_json_and_errors(models, tmp_path):
    from mobilekit.cli import cli

    runner = CliRunner()
    result = runner.invoke(cli, ["bench", str(models[0]), "--delegate", "cpu", "--threads", "1",
                                 "--num-runs", "2", "--min-secs", "0", "--warmup-min-secs", "0",
                                 "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 1 and rows[0]["ok"] and rows[0]["inference_count"] == 2
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.csv").exists()
    bad = runner.invoke(cli, ["bench", str(models[0]), "--delegate", "tpu", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "unknown delegate for target host 'tpu'" in bad.output
    all_failed = runner.invoke(cli, ["bench", str(tmp_path / "nope.tflite"), "--out",
                                     str(tmp_path / "o2"), "--num-runs", "1"])
    assert all_failed.exit_code == 1 and "FileNotFoundError" in all_failed.output


# ---------------------------------------------------------------- plots


def test_pareto_front():
    from mobilekit.report.plots import pareto_front

    points = [(5.0, 0.70, "a"), (3.0, 0.65, "b"), (4.0, 0.60, "c"), (9.0, 0.72, "d"),
              (3.0, 0.66, "e")]
    assert [p[2] for p in pareto_front(points)] == ["e", "a", "d"]


def _row(name, delegate, median_us, op_profile=None):
    return empty_result(model_path=f"/m/{name}.tflite", delegate=delegate, threads=1, ok=True,
                        inference_median_us=median_us, op_profile=op_profile)


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from mobilekit.report.plots import write_plots

    profile = [{"node_type": "CONV_2D", "count": 3, "avg_ms": 1.5, "avg_pct": 75.0,
                "times_called": 3},
               {"node_type": "MEAN", "count": 1, "avg_ms": 0.5, "avg_pct": 25.0,
                "times_called": 1}]
    rows = [_row("a", "xnnpack", 1000.0, profile), _row("b", "xnnpack", 3000.0),
            _row("a", "cpu", 2500.0, profile)]
    infos = {"/m/a.tflite": {"macs": 2e8, "accuracy": 0.7}, "/m/b.tflite": {"macs": 5e7}}
    made = write_plots(rows, tmp_path, infos=infos, accuracies={"b": 0.6})
    assert set(made) == {"latency_vs_macs", "pareto", "op_breakdown"}
    for path in made.values():
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Without MACs, accuracy or profiles each plot is skipped with its reason.
    skipped = write_plots([_row("c", "cpu", 10.0)], tmp_path / "none", infos={})
    assert all(v.startswith("skipped: ") for v in skipped.values())
    assert not (tmp_path / "none").exists() or not list((tmp_path / "none").glob("*.png"))


def test_missing_matplotlib_gives_a_clear_error(monkeypatch):
    import sys

    from mobilekit.report.plots import PlotDependencyError, require_matplotlib

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(PlotDependencyError, match=r"pip install 'mobilekit\[plot\]'"):
        require_matplotlib()
