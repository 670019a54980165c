"""`mobilekit search --target local|adb|gpu`: prediction with the target's LUT, finalists and
zoo models measured end to end by the same Runner as `latency-model build|eval`.

No benchmark_model binary or phone exists here: the stand-in `benchmark_model` and `adb` of
tests/test_latency_targets.py (planted per-op costs) take their place."""
import json
import re
import subprocess

import pytest
from click.testing import CliRunner

from mobilekit.bench.schema import file_sha256
from mobilekit.search import latency
from test_latency_targets import SPACE, _stand_in, phone  # noqa: F401  (phone: a fixture)
from test_search import _fixed_lut, _rows

TINY = ["search", "--space", "mbspace-tiny", "--resolution", "32", "--epochs-per-trial", "1",
        "--batch-size", "16", "--data", "synthetic:train=12,val=4"]


def _stand_in_us(binary, model_path, tmp_path):
    """The stand-in's end-to-end time for the model, converted here again (fp32 conversion
    is deterministic: the same operators as the file the search measured)."""
    from mobilekit.loading import load_keras

    path = tmp_path / "again.tflite"
    latency.convert_for_latency(load_keras(model_path), "fp32", path)
    log = subprocess.run([str(binary), f"--graph={path}", "--use_xnnpack=false"],
                         capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Inference \(avg\): ([0-9.]+)", log).group(1))


@pytest.mark.slow  # ~1-2 min on the 2-core machine: a 3-sample LUT, 2 trials and a zoo model
def test_search_on_local_target_measures_with_benchmark_model(tmp_path):
    from mobilekit.cli import cli

    _, binary = _stand_in(tmp_path)
    out = tmp_path / "s"
    res = CliRunner().invoke(cli, TINY[:2] + [SPACE] + TINY[3:] + [
        "--trials", "2", "--finalists", "2", "--latency-limit", "100", "--zoo",
        "mobilenet_v2:0.35", "--target", "local", "--benchmark-binary", str(binary),
        "--delegate", "cpu", "--lut-samples", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lut = latency.load_lut(out / "lut.json")  # built in the search, by the same runner
    assert (lut["target"], lut["delegate"], len(lut["samples"])) == ("local", "cpu", 3)
    where = {"target": "local", "delegate": "cpu", "threads": 1,
             "binary_sha256": file_sha256(binary)}
    finalists = [r for r in _rows(out / "trials.jsonl") if r["status"] == "measured"]
    assert len(finalists) == 2
    for r in finalists:
        assert {k: r["measured_on"][k] for k in where} == where and r["measured_on"]["device"]
        stand_in = _stand_in_us(binary, f"{r['run_dir']}/model.keras", tmp_path)
        assert r["measured_us"] == pytest.approx(stand_in, abs=0.6)  # planted costs, not host
        # predicted by the local LUT (fitted on 3 samples: a key may be unseen there)
        assert r["predicted_us"] == pytest.approx(r["measured_us"], rel=0.1)
    zoo = _rows(out / "zoo.jsonl")[0]
    assert {k: zoo["measured_on"][k] for k in where} == where
    assert zoo["measured_us"] == pytest.approx(
        _stand_in_us(binary, out / "zoo" / "mobilenet_v2_0.35" / "model.keras", tmp_path), abs=0.6)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_on"]["target"] == "local" and summary["measured"] == 2
    chosen = next(r for r in finalists if r["draw"] == summary["chosen"]["draw"])
    assert summary["chosen"]["measured_us"] == chosen["measured_us"]
    assert json.loads((out / "chosen" / "chosen.json").read_text())["measured_on"] == \
        chosen["measured_on"]
    assert json.loads((out / "search.json").read_text())["delegate"] == "cpu"
    # 3 LUT samples x (profiled + end to end) + 2 finalists + 1 zoo model
    assert len(list((out / "bench-logs").glob("*__cpu__*.log"))) >= 3


def _adb_lut(path, **changes):
    _fixed_lut(path)
    lut = json.loads(path.read_text())
    lut.update({"target": "adb", "delegate": "cpu", "serial": "R58M",
                "device": {"model": "SM-G991B"}, **changes})
    path.write_text(json.dumps(lut))
    return path


def test_search_on_adb_refuses_a_missing_device_and_keeps_the_trials(tmp_path, phone):  # noqa: F811
    from mobilekit.cli import cli

    _, binary = phone
    lut, out = _adb_lut(tmp_path / "lut_phone.json"), tmp_path / "s"
    args = TINY + ["--trials", "1", "--max-draws", "4", "--zoo", "none", "--latency-limit",
                   "0.001", "--target", "adb", "--serial", "R58M", "--benchmark-binary",
                   str(binary), "--lut", str(lut), "--out", str(out)]
    runner = CliRunner()
    res = runner.invoke(cli, args)  # predicted with the phone's LUT: all over the limit
    assert res.exit_code == 2 and "no candidate" in res.output, res.output
    kept = (out / "trials.jsonl").read_text()
    assert len(kept.splitlines()) == 4
    cfg_path = tmp_path / "adb.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["devices"] = [["R58M", "offline", "SM_G991B"]]
    cfg_path.write_text(json.dumps(cfg))
    res = runner.invoke(cli, args)
    assert res.exit_code == 2 and res.output.count("Error:") == 1, res.output
    assert "device 'R58M' cannot be used: it is offline" in res.output
    cfg["devices"] = []
    cfg_path.write_text(json.dumps(cfg))
    res = runner.invoke(cli, [a for a in args if a not in ("--serial", "R58M")])
    assert res.exit_code == 2 and "no Android device found" in res.output, res.output
    assert (out / "trials.jsonl").read_text() == kept


def test_search_refuses_a_lut_of_another_target_delegate_or_phone(tmp_path, phone):  # noqa: F811
    from mobilekit.cli import cli

    _, binary = phone
    _, local_binary = _stand_in(tmp_path)
    _fixed_lut(tmp_path / "host.json")
    base = TINY + ["--trials", "1", "--zoo", "none", "--latency-limit", "1"]
    runner = CliRunner()
    res = runner.invoke(cli, base + ["--target", "local", "--benchmark-binary", str(local_binary),
                                     "--lut", str(tmp_path / "host.json"), "--out",
                                     str(tmp_path / "a")])
    assert res.exit_code == 2 and "built for target 'host', not 'local'" in res.output, res.output
    phone_args = ["--target", "adb", "--benchmark-binary", str(binary), "--serial", "R58M"]
    res = runner.invoke(cli, base + phone_args + [
        "--delegate", "xnnpack", "--lut", str(_adb_lut(tmp_path / "p.json")),
        "--out", str(tmp_path / "b")])
    assert res.exit_code == 2 and "built with delegate 'cpu', not 'xnnpack'" in res.output
    other = _adb_lut(tmp_path / "pixel.json", serial="X1", device={"model": "Pixel 7"})
    res = runner.invoke(cli, base + phone_args + ["--lut", str(other), "--out",
                                                  str(tmp_path / "c")])
    assert res.exit_code == 2 and "built on X1 (Pixel 7); device R58M is a SM-G991B" in res.output
    res = runner.invoke(cli, base + ["--serial", "R58M", "--out", str(tmp_path / "d")])
    assert res.exit_code == 2 and "are for --target local / adb" in res.output
    for name in "abcd":  # refused before any trial
        assert not (tmp_path / name / "trials.jsonl").exists()


def test_search_on_gpu_without_an_accelerator_exits_2_before_training(tmp_path, monkeypatch):
    from mobilekit.cli import cli

    monkeypatch.setenv("VK_DRIVER_FILES", str(tmp_path / "none.json"))
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "none.json"))
    res = CliRunner().invoke(cli, TINY + ["--trials", "1", "--zoo", "none", "--latency-limit",
                                          "1", "--target", "gpu", "--out", str(tmp_path / "g")])
    assert res.exit_code == 2 and "no GPU accelerator available" in res.output, res.output
    assert res.output.count("Error:") == 1 and not (tmp_path / "g").exists()


@pytest.mark.slow  # ~1 min on the 2-core machine (Mesa lavapipe)
def test_search_on_gpu_measures_on_the_accelerator_and_says_which(tmp_path):
    from mobilekit.bench.gpu import NO_GPU
    from mobilekit.cli import cli

    out = tmp_path / "g"
    res = CliRunner().invoke(cli, TINY[:2] + [SPACE] + TINY[3:] + [
        "--trials", "2", "--finalists", "1", "--zoo", "none", "--latency-limit", "1000",
        "--target", "gpu", "--lut-samples", "3", "--out", str(out)])
    if res.exit_code == 2 and NO_GPU in res.output:
        pytest.skip(res.output.strip().splitlines()[-1])
    assert res.exit_code == 0, res.output
    lut = latency.load_lut(out / "lut.json")
    assert (lut["target"], lut["delegate"]) == ("gpu", "gpu")
    row = next(r for r in _rows(out / "trials.jsonl") if r["status"] == "measured")
    on = row["measured_on"]
    assert (on["target"], on["delegate"], on["gpu_precision"]) == ("gpu", "gpu", "fp16")
    assert on["adapter"]["name"] and row["measured_us"] > 0
    software = on["adapter"]["software"]
    assert software == ("emulation" in on) == (lut.get("emulation") is not None)
    if software:  # lavapipe: the timings are the CPU's, and the search says so
        assert on["emulation"].startswith("software") and "note: software" in res.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_on"] == on and summary["chosen"]["draw"] == row["draw"]
