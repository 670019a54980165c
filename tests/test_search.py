"""Design spaces, the latency model and `mobilekit search` (tiny spaces, 32 px, 1 epoch)."""
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import mobilekit
from mobilekit.search import latency, outputs, spaces
from mobilekit.zoo.mbspace import DEFAULT_SPEC


# ---------------------------------------------------------------- spaces


@pytest.mark.parametrize("name", ["mbspace-tiny", "regnet-tiny", "mbspace"])
def test_sampling_is_reproducible_serialisable_and_buildable(name):
    space = spaces.parse_space(name)
    a = [spaces.sample(space, i, 3, 32) for i in range(4)]
    b = [spaces.sample(space, i, 3, 32) for i in range(4)]
    c = [spaces.sample(space, i, 4, 32) for i in range(4)]
    assert a == b and a != c
    point = json.loads(json.dumps(a[0]))  # a spec survives JSON (trials.jsonl, cards)
    model = mobilekit.create_model(point["model"], resolution=32, num_classes=10,
                                   **point["kwargs"])
    assert model.output_shape == (None, 10)


def test_space_overrides_pin_a_choice():
    off = spaces.parse_space("mbspace:se=off,kernel=7")
    stages = [s for i in range(6) for s in spaces.sample(off, i, 0, 64)["kwargs"]["spec"]["stages"]]
    assert all(not s["se"] and s["kernel"] == 7 for s in stages)
    gw8 = spaces.parse_space("regnet-tiny:group_width=8,se=on")
    points = [spaces.sample(gw8, i, 0, 64)["kwargs"] for i in range(4)]
    assert all(p["group_width"] == 8 and p["se_ratio"] == 0.25 for p in points)
    subset = spaces.parse_space("mbspace:kernel=3|5")
    kernels = {s["kernel"] for i in range(6)
               for s in spaces.sample(subset, i, 0, 64)["kwargs"]["spec"]["stages"]}
    assert kernels == {3, 5}
    with pytest.raises(ValueError, match="outside the space's choices"):
        spaces.parse_space("mbspace:kernel=9")
    with pytest.raises(ValueError, match="Did you mean 'mbspace'"):
        spaces.parse_space("mbspacee")


def test_mbspace_spec_builds_what_it_says():
    spec = {"stem": 8, "head": 32, "stages": [
        {"channels": 16, "stride": 2, "depth": 2, "kernel": 7, "expansion": 6, "se": True,
         "width_mult": 0.5, "act": "hswish"}]}
    model = mobilekit.create_model("mbspace", spec=json.dumps(spec), resolution=32,
                                   num_classes=4)
    dw = [l for l in model.layers if type(l).__name__ == "DepthwiseConv2D"]
    assert [l.kernel_size for l in dw] == [(7, 7), (7, 7)]
    assert [l.strides for l in dw] == [(2, 2), (1, 1)]
    # width 16 * 0.5 = 8; expansion 6 of the stem's 8 = 48; SE at 1/4 of 48 = 16 (made divisible)
    assert model.get_layer("s1_b1_project").filters == 8
    assert model.get_layer("s1_b1_expand").filters == 48
    assert model.get_layer("s1_b1_se_reduce").filters == 16
    assert model.get_layer("s1_b2_add") is not None  # stride 1, same width: residual
    assert mobilekit.create_model("mbspace", resolution=32, num_classes=3).count_params() > 0
    bad = json.loads(json.dumps(DEFAULT_SPEC))
    bad["stages"][0]["expansion"] = 5
    with pytest.raises(ValueError, match=r"spec stage 0 expansion must be one of 3, 4, 6; got 5"):
        mobilekit.create_model("mbspace", spec=bad, resolution=32)


# ---------------------------------------------------------------- latency model


def test_fit_recovers_known_operator_costs():
    rng = np.random.default_rng(0)
    truth = {"base_us": 3.0, "ops": {
        "conv_k1_s1": {"us_per_op": 0.5, "us_per_mmac": 20.0, "us_per_melement": 40.0},
        "dwconv_k3_s1": {"us_per_op": 0.2, "us_per_mmac": 60.0, "us_per_melement": 10.0},
        "add": {"us_per_op": 0.1, "us_per_mmac": 0.0, "us_per_melement": 80.0}}}
    rows = []
    for _ in range(40):
        feats = {k: [int(rng.integers(1, 12)), float(rng.uniform(0, 3)) * (k != "add"),
                     float(rng.uniform(0, 0.5)), []] for k in truth["ops"]}
        rows.append({"features": feats,
                     "measured_us": {"fp32": latency.predict_features(truth, feats)}})
    table = latency.fit(rows, "fp32")
    pred = [latency.predict_features(table, r["features"]) for r in rows]
    err = latency.errors(pred, [r["measured_us"]["fp32"] for r in rows])
    assert err["rmspe_pct"] < 2.0 and err["within_10pct"] == 1.0
    assert table["ops"]["dwconv_k3_s1"]["us_per_mmac"] == pytest.approx(60.0, rel=0.1)


def test_kernel_table_looks_up_measured_shapes_interpolates_between_and_refuses_outside():
    entry = {"shapes": [[8, 16, 4.0], [8, 64, 16.0], [8, 256, 32.0], [2, 16, 1.0],
                        [4, 32, 64, 10.0], [4, 32, 256, 40.0]]}
    # measured shapes exactly; between channels log-log (32 at side 8: 4 * 2 = 8.0)
    assert latency.kernel_us(entry, [[8, 64]]) == 16.0
    assert latency.kernel_us(entry, [[8, 32], [2, 16]]) == pytest.approx(9.0)
    # between sides per output pixel, log-log: side 4 lies between 1/4 µs/px (side 2) and
    # 1/16 µs/px (side 8) -> 1/8 µs/px x 16 px = 2.0
    assert latency.kernel_us(entry, [[4, 16]]) == pytest.approx(2.0)
    # pointwise (side, C_in, C_out): along C_out
    assert latency.kernel_us(entry, [[4, 32, 128]]) == pytest.approx(20.0)
    for outside in ([8, 1024], [16, 16], [4, 64, 64]):  # beyond the grid: no extrapolation
        with pytest.raises(latency.OutsideTable, match="outside the latency model's kernel"):
            latency.kernel_us(entry, [outside], "dwconv_k7_s1")
    assert latency.kernel_us(None, [[1024, 8]]) == 0.0
    # an op key neither tabulated nor fitted (7x7 from a 3x3/5x5 LUT) is refused too, a
    # fitted key without a table (pointwise in a depthwise-only LUT) is priced by its costs
    table = {"base_us": 1.0, "kernels": {"dwconv_k3_s1": {"shapes": [[8, 16, 2.0]]}},
             "ops": {"dwconv_k3_s1": {"us_per_op": 0.5, "kernel_scale": 1.0},
                     "conv_k1_s1": {"us_per_op": 3.0}}}
    feats = {"dwconv_k3_s1": [1, 0.1, 0.1, [[8, 16]]], "conv_k1_s1": [2, 0.1, 0.1, [[8, 8, 8]]]}
    assert latency.predict_features(table, feats) == pytest.approx(1.0 + 0.5 + 2.0 + 6.0)
    with pytest.raises(latency.OutsideTable, match="dwconv_k7_s1 was neither measured"):
        latency.predict_features(table, {**feats, "dwconv_k7_s1": [1, 0.1, 0.1, [[8, 16]]]})


def test_elementwise_ops_are_priced_by_their_elements_on_a_size_grid():
    # a sampled model's elementwise ops carry the elements they write (mean: it reads)
    model = spaces.build(spaces.sample(spaces.parse_space("mbspace-tiny:se=on"), 0, 3, 32), 32)
    by_layer = {name: (key, ref) for name, key, _, _, ref in latency.model_ops(model, True)}
    for layer in model.layers:
        key, ref = by_layer.get(layer.name, (None, None))
        if key in latency.ELEMENTWISE_KEYS:
            src = layer.input_shape if key == "mean" else layer.output_shape
            assert ref == (int(np.prod(src[1:])),), layer.name
    assert {"add", "mean", "mul"} <= {k for k, _ in by_layer.values()}
    # the single-op models the table is timed on hold that op on exactly n elements
    for key in sorted(latency.ELEMENTWISE_KEYS):
        assert [(k, ref) for k, _, _, ref in latency.model_ops(
            latency._kernel_model(key, (4096,)))] == [(key, (4096,))]
    # log-log between grid sizes, linear in n beyond the grid, the smallest size's time below
    entry = {"shapes": [[64, 1.0], [1024, 4.0], [4096, 10.0]]}
    assert latency.kernel_us(entry, [[256]]) == pytest.approx(2.0)
    assert latency.kernel_us(entry, [[8192]]) == pytest.approx(20.0)
    assert latency.kernel_us(entry, [[8]]) == pytest.approx(1.0)


def test_kernel_shapes_enumerate_every_shape_the_space_builds():
    space = spaces.parse_space("mbspace-tiny")
    shapes = spaces.kernel_shapes(space, 32)
    assert set(shapes) == {"conv_k1_s1"} | {f"dwconv_k{k}_s{s}" for k in (3, 5, 7)
                                             for s in (1, 2)}
    seen = 0
    for i in range(6):
        model = spaces.build(spaces.sample(space, i, 11, 32), 32)
        for key, f in latency.op_features(model).items():
            if latency.is_kernel_key(key):
                assert {tuple(x) for x in f[3]} <= shapes[key], key
                seen += len(f[3])
    assert seen > 30
    assert spaces.kernel_shapes(spaces.parse_space("regnet-tiny"), 32) == {}


def test_fit_with_kernel_tables_prices_ops_by_their_measured_shape():
    rng = np.random.default_rng(1)
    table = {"shapes": [[s, c, 0.001 * s * s * c ** 1.5] for s in (2, 4, 8) for c in (16, 64)]}
    rows = []
    for _ in range(12):
        refs = [[int(rng.choice([2, 4, 8])), int(rng.choice([16, 64]))]
                for _ in range(int(rng.integers(1, 5)))]
        feats = {"dwconv_k7_s1": [len(refs), 1.0, 1.0, refs], "add": [2, 0.0, 0.1, []]}
        us = 5.0 + 1.3 * latency.kernel_us(table, refs) + 40 * 0.1
        rows.append({"features": feats, "measured_us": {"int8": us}})
    fitted = latency.fit(rows, "int8", {"dwconv_k7_s1": table}, table_scale="fitted")
    assert fitted["ops"]["dwconv_k7_s1"]["kernel_scale"] == pytest.approx(1.3, rel=0.05)
    pred = [latency.predict_features(fitted, r["features"]) for r in rows]
    assert latency.errors(pred, [r["measured_us"]["int8"] for r in rows])["rmspe_pct"] < 3
    # the MMAC / element columns of a tabulated key stay unused (the table prices them)
    assert fitted["ops"]["dwconv_k7_s1"]["us_per_mmac"] == 0.0
    # the default: one scale per kind of table (here the depthwise one), nothing per op
    kind = latency.fit(rows, "int8", {"dwconv_k7_s1": table})
    assert kind["ops"]["dwconv_k7_s1"] == {"us_per_op": 0.0, "us_per_mmac": 0.0,
                                           "us_per_melement": 0.0,
                                           "kernel_scale": pytest.approx(1.3, rel=0.05)}
    assert latency.table_kind("dwconv_k7_s1") == "depthwise"
    # "fixed": a tabulated op costs its table time; the rest is fitted on top of it
    rows = [{**r, "measured_us": {"int8": r["measured_us"]["int8"] - 0.3 * latency.kernel_us(
        table, r["features"]["dwconv_k7_s1"][3])}} for r in rows]
    fixed = latency.fit(rows, "int8", {"dwconv_k7_s1": table}, table_scale="fixed")
    assert fixed["ops"]["dwconv_k7_s1"] == {"us_per_op": 0.0, "us_per_mmac": 0.0,
                                            "us_per_melement": 0.0, "kernel_scale": 1.0}
    pred = [latency.predict_features(fixed, r["features"]) for r in rows]
    assert latency.errors(pred, [r["measured_us"]["int8"] for r in rows])["rmspe_pct"] < 1


def test_errors_are_rmspe_and_share_within_ten_percent():
    e = latency.errors([110, 95, 130, 100], [100, 100, 100, 100])
    assert e["rmspe_pct"] == pytest.approx(100 * np.sqrt((0.01 + 0.0025 + 0.09 + 0) / 4), abs=0.01)
    assert e["within_10pct"] == 0.75 and e["max_abs_pct"] == 30.0


def _fixed_lut(path, threads=1, target="host"):
    """A LUT whose prediction is 5 µs + 100 µs per MMAC (every key falls back to one cost)."""
    lut = {"format": latency.FORMAT, "target": target, "threads": threads, "delegate": "xnnpack",
           "space": "mbspace-tiny", "seed": 0, "resolution": 32, "tables": {"fp32": {
               "base_us": 5.0, "ops": {"conv_k1_s1": {"us_per_op": 0.0, "us_per_mmac": 100.0,
                                                      "us_per_melement": 0.0}}}}}
    path.write_text(json.dumps(lut))
    return latency.Predictor(lut, target, threads)


def test_a_lut_of_the_old_format_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"format": "mobilekit-latency-lut/1", "target": "host"}))
    with pytest.raises(ValueError, match="format mobilekit-latency-lut/1.*rebuild it"):
        latency.load_lut(path)


def test_predictor_refuses_another_target_thread_count_or_dtype(tmp_path):
    lut = json.loads(json.dumps({"format": latency.FORMAT, "target": "host", "threads": 1,
                                 "tables": {"fp32": {"base_us": 1.0, "ops": {}}}}))
    with pytest.raises(ValueError, match="measured with 1 thread"):
        latency.Predictor(lut, threads=2)
    with pytest.raises(ValueError, match="built for target 'host', not 'adb'"):
        latency.Predictor(lut, target="adb")
    with pytest.raises(ValueError, match="no int8 table"):
        latency.Predictor(lut, dtype="int8")
    with pytest.raises(ValueError, match="not implemented for --target adb"):
        latency.check_target("adb")


def test_latency_model_build_and_eval_on_the_host(tmp_path):
    from mobilekit.cli import cli

    out = tmp_path / "lut.json"
    runner = CliRunner()
    space = "mbspace-tiny:kernel=3,expansion=3,width_mult=0.5"  # few shapes to time
    res = runner.invoke(cli, ["latency-model", "build", "--space", space, "--samples",
                              "4", "--resolution", "32", "--dtype", "fp32", "--kernel-channels",
                              "16,64", "--kernel-sides", "4", "--element-sizes", "64,4096",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    lut = latency.load_lut(out)
    assert lut["target"] == "host" and lut["threads"] == 1 and list(lut["tables"]) == ["fp32"]
    assert len(lut["samples"]) == 4 and all(r["measured_us"]["fp32"] > 0 for r in lut["samples"])
    assert all(len(r["pass_us"]["fp32"]) == 3 for r in lut["samples"])  # min over 3 passes
    # The table prices each measured model; keys are op type + kernel + stride.
    assert any(k.startswith("dwconv_k") for k in lut["tables"]["fp32"]["ops"])
    # every depthwise / pointwise shape of the space timed one by one, plus the grid 4 x 16,64
    kernels = lut["tables"]["fp32"]["kernels"]
    want = spaces.kernel_shapes(spaces.parse_space(space), 32)
    for key in ("dwconv_k3_s1", "dwconv_k3_s2"):
        want[key] |= {(4, 16), (4, 64)}
    # and the elementwise ops the samples hold, on the sizes asked for
    held = {k for r in lut["samples"] for k in r["features"]} & latency.ELEMENTWISE_KEYS
    assert "add" in held
    want.update({k: {(64,), (4096,)} for k in held})
    assert {k: {tuple(r[:-1]) for r in v["shapes"]} for k, v in kernels.items()} == want
    assert all(r[-1] > 0 for v in kernels.values() for r in v["shapes"])
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--samples", "2",
                              "--out", str(tmp_path / "eval.json")])
    assert res.exit_code == 0, res.output
    assert "fp32: RMSPE" in res.output and "on 2 held-out models" in res.output
    assert "noise floor (repeat vs repeat) RMSPE" in res.output
    ev = json.loads((tmp_path / "eval.json").read_text())
    assert ev["seed"] == 1000 and len(ev["dtypes"]["fp32"]["rows"]) == 2
    rows, noise = ev["dtypes"]["fp32"]["rows"], ev["dtypes"]["fp32"]["noise_floor"]
    assert all(len(r["repeat_us"]) == 2 and r["measured_us"] == min(r["repeat_us"]) for r in rows)
    assert noise == latency.errors([r["repeat_us"][0] for r in rows],
                                   [r["repeat_us"][1] for r in rows])
    # the LUT's own samples re-timed beside the held-out models: drift and a refitted table
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--samples", "2",
                              "--retime-samples", "--out", str(tmp_path / "eval2.json")])
    assert res.exit_code == 0, res.output
    assert "fp32: drift since the build: the LUT's 4 samples now differ by RMSPE" in res.output
    ev = json.loads((tmp_path / "eval2.json").read_text())
    now = ev["refit"]["fp32"]["samples_us"]
    assert len(now) == 4 and ev["drift"]["fp32"] == latency.errors(
        [r["measured_us"]["fp32"] for r in lut["samples"]], now)
    assert ev["refit"]["fp32"]["table"] == latency.fit(
        [{**r, "measured_us": {"fp32": u}} for r, u in zip(lut["samples"], now)], "fp32",
        lut["tables"]["fp32"]["kernels"])
    # a held-out model with a shape the table cannot bracket is refused, not extrapolated
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--space", "mbspace-tiny",
                              "--samples", "3", "--seed", "5"])
    assert res.exit_code == 2 and "outside the latency model's kernel table" in res.output
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--seed", "0"])
    assert res.exit_code == 2 and "seed the LUT was fitted on" in res.output
    res = runner.invoke(cli, ["latency-model", "build", "--target", "adb", "--adb",
                              str(tmp_path / "no-adb"), "--out", str(out)])
    assert res.exit_code == 2 and "adb executable" in res.output and "does not exist" in res.output


def test_latency_model_accuracy_tool_prints_the_table_with_the_noise_floor(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    try:
        import latency_model_accuracy as tool
    finally:
        sys.path.pop(0)
    out = tmp_path / "acc.json"
    report = tool.main(["--space", "mbspace-tiny:kernel=3,expansion=3,width_mult=0.5",
                        "--samples", "3", "--heldout", "2", "--resolution", "32", "--dtype",
                        "fp32", "--lut-out", str(tmp_path / "lut.json"), "--out", str(out)])
    printed = capsys.readouterr().out
    assert json.loads(out.read_text())["scores"] == report["scores"]
    lut_rows = [r for r in report["scores"] if r["model"] == "lut" and r["subset"] == "all"]
    assert len(lut_rows) == 1 and lut_rows[0]["n"] == 2
    rows = report["eval"]["dtypes"]["fp32"]["rows"]
    assert lut_rows[0]["rmspe_pct"] == pytest.approx(latency.errors(  # rows hold rounded µs
        [r["predicted_us"] for r in rows], [r["measured_us"] for r in rows])["rmspe_pct"],
        abs=0.05)
    assert lut_rows[0]["noise_rmspe_pct"] == report["eval"]["dtypes"]["fp32"]["noise_floor"][
        "rmspe_pct"]
    assert {"fitted only", "dw tables only"} <= {r["model"] for r in report["scores"]}
    assert "| space | samples | held-out |" in printed and "flags" in printed
    lut = latency.load_lut(tmp_path / "lut.json")
    assert lut["space"] == report["space"]
    both = tool.pooled(lut, [lut])  # refit on more samples: same data twice, same costs
    assert len(both["samples"]) == 6 and both["tables"]["fp32"]["kernels"] == \
        lut["tables"]["fp32"]["kernels"]
    assert both["tables"]["fp32"]["base_us"] == pytest.approx(
        lut["tables"]["fp32"]["base_us"], rel=1e-3, abs=1e-3)
    with pytest.raises(SystemExit, match="must share space, resolution, target, threads"):
        tool.pooled(lut, [{**lut, "resolution": 64}])
    # the held-out models were timed in the LUT's own sessions; --rescore recomputes the
    # table from the saved rows without measuring (a gzipped report and LUT too)
    assert report["eval"]["sessions"] == "same as the LUT's" and report["later"] is None
    gz = tmp_path / "acc.json.gz"
    gz.write_bytes(gzip.compress(out.read_bytes()))
    lut_gz = tmp_path / "lut.json.gz"
    lut_gz.write_bytes(gzip.compress((tmp_path / "lut.json").read_bytes()))
    capsys.readouterr()
    again = tool.main(["--lut", str(lut_gz), "--rescore", str(gz)])
    assert again["scores"] == report["scores"]
    assert "| `mbspace-tiny:kernel=3,expansion=3,width_mult=0.5` @32 px | 3 | 2 | same as the " \
           "LUT's | fp32 | tables, a scale per kind | all |" in capsys.readouterr().out


# ---------------------------------------------------------------- search


def test_edf_comparison_counts_and_uncertainty():
    c = outputs.compare_edfs([0.2, 0.3, 0.4, 0.5], [0.1, 0.2, 0.3])
    assert c["n_a"] == 4 and c["n_b"] == 3
    assert c["mean_error_diff_b_minus_a"] == pytest.approx(0.2 - 0.35)
    assert c["ks_distance"] == pytest.approx(0.5)  # at e = 0.3: F_b = 1, F_a = 0.5
    assert c["diff_ci90"][0] <= c["mean_error_diff_b_minus_a"] <= c["diff_ci90"][1]
    with pytest.raises(ValueError, match=">= 2 trained models"):
        outputs.compare_edfs([0.1], [0.2, 0.3])


def test_search_bad_input_exits_2_and_keeps_the_rows(tmp_path):
    from mobilekit.cli import cli

    lut = tmp_path / "lut.json"
    _fixed_lut(lut)
    _fixed_lut(tmp_path / "lut_t2.json", threads=2)
    out = tmp_path / "s"
    base = ["search", "--space", "mbspace-tiny", "--resolution", "32", "--trials", "1",
            "--max-draws", "8",
            "--zoo", "none", "--out", str(out)]
    runner = CliRunner()
    res = runner.invoke(cli, base + ["--latency-limit", "0.001", "--lut", str(lut)])
    assert res.exit_code == 2 and "no candidate of space 'mbspace-tiny' is predicted under" \
        in res.output
    rows = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["status"] == "rejected" and r["predicted_us"] > 1 for r in rows)
    res = runner.invoke(cli, base + ["--latency-limit", "1", "--lut", str(tmp_path / "lut_t2.json")])
    assert res.exit_code == 2 and "other settings (latency_limit, lut differ" in res.output
    res = runner.invoke(cli, base[:-1] + [str(tmp_path / "t2"), "--latency-limit", "1",
                                          "--lut", str(tmp_path / "lut_t2.json")])
    assert res.exit_code == 2 and "measured with 2 thread(s), not 1" in res.output
    res = runner.invoke(cli, base[:-1] + [str(tmp_path / "x"), "--latency-limit", "1",
                                          "--latency-target", "1"])
    assert res.exit_code == 2 and "exactly one of --latency-limit" in res.output
    res = runner.invoke(cli, base[:-1] + [str(tmp_path / "y"), "--latency-limit", "1",
                                          "--target", "adb", "--adb",
                                          str(tmp_path / "no-adb")])
    assert res.exit_code == 2 and "adb executable" in res.output
    res = runner.invoke(cli, ["search", "--study", "--space", "mbspace-tiny", "--out",
                              str(tmp_path / "z")])
    assert res.exit_code == 2 and "give --space at least twice" in res.output
    assert len((out / "trials.jsonl").read_text().splitlines()) == 8  # kept throughout


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_tiny_search_files_consistent_and_resumes_after_kill(tmp_path):
    lut = tmp_path / "lut.json"
    predictor = _fixed_lut(lut)
    space = spaces.parse_space("mbspace-tiny")
    preds = [predictor.predict(spaces.build(spaces.sample(space, i, 0, 32), 32))
             for i in range(12)]
    limit_ms = float(np.median(preds)) / 1e3  # about half the draws are rejected
    out = tmp_path / "search"
    cmd = [sys.executable, "-m", "mobilekit", "search", "--space", "mbspace-tiny",
           "--resolution", "32", "--trials", "4", "--epochs-per-trial", "1", "--batch-size", "16",
           "--data", "synthetic:train=12,val=4", "--latency-limit", str(limit_ms),
           "--lut", str(lut), "--finalists", "2", "--zoo", "mobilenet_v2:0.35",
           "--out", str(out)]
    proc = subprocess.Popen(cmd + ["--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 300
    try:
        trials = out / "trials.jsonl"
        while not (trials.exists() and any(r.get("val_accuracy") is not None
                                           for r in _rows(trials))):
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "no trial finished in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the search and its worker processes
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    before = {r["draw"]: r for r in _rows(out / "trials.jsonl") if r.get("val_accuracy") is not None}
    assert 1 <= len(before) < 4, "the search finished before the kill; make it longer"
    assert not (out / "summary.json").exists()
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    rows = _rows(out / "trials.jsonl")
    trained = [r for r in rows if r.get("val_accuracy") is not None]
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert len(trained) == 4 and rejected
    assert sorted(r["draw"] for r in rows) == list(range(len(rows)))  # every draw, once
    for r in trained:  # the predictor's verdict and the run directory agree with the row
        assert r["predicted_us"] <= limit_ms * 1e3
        metrics = json.loads((out / "trials" / f"draw-{r['draw']:04d}" / "metrics.json").read_text())
        assert metrics["val_accuracy"] == r["val_accuracy"] and metrics["epochs_completed"] == 1
        assert r["error"] == pytest.approx(1 - r["val_accuracy"])
        if r["draw"] in before:  # finished before the kill: kept, not retrained
            assert r["val_accuracy"] == before[r["draw"]]["val_accuracy"]
            assert r["train_seconds"] == before[r["draw"]]["train_seconds"]
    assert all(r["predicted_us"] > limit_ms * 1e3 for r in rejected)
    measured = [r for r in trained if r.get("measured_us")]
    assert len(measured) == 2
    best2 = sorted(trained, key=lambda r: r["val_accuracy"], reverse=True)[:2]
    assert {r["val_accuracy"] for r in measured} == {r["val_accuracy"] for r in best2}

    summary = json.loads((out / "summary.json").read_text())
    chosen = summary["chosen"]
    assert chosen["draw"] in {r["draw"] for r in measured}
    assert summary["trained"] == 4 and summary["rejected"] == len(rejected)
    zoo = _rows(out / "zoo.jsonl")
    assert zoo[0]["zoo"] == "mobilenet_v2:0.35" and zoo[0]["measured_us"] > 0
    for name in ("edf.png", "pareto.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    card = tomllib.loads((out / "chosen" / "model_card.toml").read_text())
    assert card["name"] == "mbspace" and card["search"]["draw"] == chosen["draw"]
    assert card["kwargs"] == chosen["point"]["kwargs"]
    spec_path = out / "chosen" / "spec.json"
    assert json.loads(spec_path.read_text()) == chosen["point"]["kwargs"]["spec"]
    model = mobilekit.create_model("mbspace", spec=str(spec_path), resolution=32, num_classes=10)
    run = out / "chosen" / "run"
    assert json.loads((run / "config.json").read_text())["model_kwargs"]["spec"] == \
        chosen["point"]["kwargs"]["spec"]
    assert (run / "model.keras").is_file()
    from mobilekit.loading import load_keras

    assert model.count_params() == load_keras(run / "model.keras").count_params()


@pytest.mark.slow
def test_study_compares_the_edfs_of_two_settings(tmp_path):
    from mobilekit.cli import cli

    out = tmp_path / "study"
    res = CliRunner().invoke(cli, ["search", "--study", "--space", "mbspace-tiny:se=on",
                                   "--space", "mbspace-tiny:se=off", "--trials", "2",
                                   "--epochs-per-trial", "1", "--resolution", "32",
                                   "--data", "synthetic:train=8,val=4", "--out", str(out)])
    assert res.exit_code == 0, res.output
    study = json.loads((out / "study.json").read_text())
    for label, folder in (("mbspace-tiny:se=on", "mbspace-tiny__se-on"),
                          ("mbspace-tiny:se=off", "mbspace-tiny__se-off")):
        rows = _rows(out / folder / "trials.jsonl")
        assert all(all(s["se"] == label.endswith("on")
                       for s in r["point"]["kwargs"]["spec"]["stages"]) for r in rows)
        assert study["edfs"][label] == sorted(r["error"] for r in rows)
    c = study["comparisons"][0]
    a, b = study["edfs"]["mbspace-tiny:se=on"], study["edfs"]["mbspace-tiny:se=off"]
    assert c["n_a"] == len(a) == 2 and c["n_b"] == len(b) == 2
    assert c["mean_error_diff_b_minus_a"] == pytest.approx(np.mean(b) - np.mean(a), abs=1e-6)
    assert (out / "study_edf.png").read_bytes()[:4] == b"\x89PNG"
    assert "mbspace-tiny:se=off vs mbspace-tiny:se=on: mean error" in res.output
