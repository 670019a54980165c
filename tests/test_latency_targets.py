"""Latency models for --target local / adb (benchmark_model op profiling) and gpu.

No real benchmark_model binary and no phone exist here. The stand-in `benchmark_model`
below reads the .tflite it is given (LiteRT's op list and tensor names, as the real tool
executes them) and prints a log in the real tool's format (the layout of the published log
shared/fixtures/benchmark_logs/11_...: parameter echo, count lines, summary, and the
tab-separated Run Order / Top / Summary-by-node-type tables with `[tensor name]:node index`)
whose per-operator times follow planted costs per op type. So the parser, the row -> TFLite
node -> Keras layer mapping and the per-key fit run for real, and the fitted costs can be
checked against the planted ones. The stand-in `adb` keeps pushed files in a folder and runs
the stand-in on them. The gpu test uses the real GPU accelerator (skips without one).
"""
import json
import os
import shlex
import stat
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from mobilekit.bench.parse import parse_log_with_details
from mobilekit.search import latency, profiled

SPACE = "mbspace-tiny:se=on,act=hswish"
# Planted costs per op type: µs per op, per MMAC, per million elements read + written.
# (Phone-like sizes: the log prints ms with 3 decimals, so times are rounded to 1 µs.)
PLANTED = {"CONV_2D": (30.0, 400.0, 200.0), "DEPTHWISE_CONV_2D": (20.0, 1500.0, 300.0),
           "FULLY_CONNECTED": (10.0, 500.0, 0.0), "MEAN": (10.0, 0.0, 600.0),
           "ADD": (5.0, 0.0, 250.0), "MUL": (5.0, 0.0, 250.0), "HARD_SWISH": (8.0, 0.0, 450.0)}
OVERHEAD_US = 300.0

STAND_IN = r'''
import re, sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

PLANTED = __PLANTED__
OVERHEAD_US = __OVERHEAD__
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--") and "=" in a)
graph = flags["graph"]
profiling = flags.get("enable_op_profiling") == "true"
xnnpack = flags.get("use_xnnpack", "true") == "true"
threads = flags.get("num_threads", "1")
try:
    it = Interpreter(model_path=graph, experimental_op_resolver_type=
                     OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
except Exception as exc:
    print(f"ERROR: Could not open '{graph}'.\nFailed to mmap model {graph}")
    sys.exit(1)
it.allocate_tensors()
t = {d["index"]: d for d in it.get_tensor_details()}
def elems(i):
    return int(np.prod(t[i]["shape"][1:])) if i >= 0 and len(t[i]["shape"]) else 0
rows = []
for op in it._get_ops_details():
    name, ins, outs = op["op_name"], op["inputs"], op["outputs"]
    out = elems(outs[0])
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        f = t[ins[1]]["shape"]
        k = f[1] * f[2] * (f[3] if name == "CONV_2D" else 1)
        macs, e = out * k, out + elems(ins[0])
    elif name == "FULLY_CONNECTED":
        macs, e = out * t[ins[1]]["shape"][1], out + elems(ins[0])
    else:  # activations only: constants (the hard-sigmoid's 1/6) are not read per element
        macs = 0
        e = out + sum(elems(i) for i in ins if i >= 0 and t[i]["shape"].size > 1
                      and t[i]["shape"][0] == 1 and len(t[i]["shape"]) == 4)
    a, b, c = PLANTED.get(name, (5.0, 0.0, 200.0))  # any other op (LOGISTIC, RESHAPE, ...)
    rows.append((name, a + b * macs / 1e6 + c * e / 1e6, t[outs[0]]["name"], op["index"]))
total_us = sum(r[1] for r in rows) + OVERHEAD_US
print(f"""STARTING!
Log parameter values verbosely: [0]
Min num runs: [{flags.get('num_runs', 50)}]
Num threads: [{threads}]
Graph: [{graph}]
Enable op profiling: [{1 if profiling else 0}]
#threads used for CPU inference: [{threads}]
Use xnnpack: [{1 if xnnpack else 0}]
Loaded model {graph}""")
if xnnpack:
    print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
print(f"""The input model file size (MB): 0.0123
Initialized session in 0.243ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=43 first={total_us * 2:.0f} curr={total_us:.0f} min={total_us:.0f} max={total_us * 2:.0f} avg={total_us * 1.1:.1f} std=3

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=90 first={total_us:.0f} curr={total_us:.0f} min={total_us:.0f} max={total_us:.0f} avg={total_us:.1f} std=0

Inference timings in us: Init: 243, First inference: {total_us * 2:.0f}, Warmup (avg): {total_us * 1.1:.1f}, Inference (avg): {total_us:.1f}
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Peak memory footprint (MB): init=4.87109 overall=41.4102""")
if not profiling:
    sys.exit(0)
HEAD = "\t             [node type]\t          [start]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]"
def line(node, start, ms, pct, cdf, name):
    return (f"\t{node:>24}\t{start:17.3f}\t{ms:9.3f}\t{ms:9.3f}\t{pct:7.3f}%\t{cdf:7.3f}%"
            f"\t{0:10.3f}\t{1:9d}\t{name}")
if xnnpack:  # a build that cannot profile inside XNNPACK: one opaque delegate row
    rows = [("TfLiteXNNPackDelegate", sum(r[1] for r in rows), "Identity", len(rows))]
print("""Profiling Info for Benchmark Initialization:
============================== Run Order ==============================""")
print(HEAD)
print(line("AllocateTensors", 0, 0.029, 100, 100, "AllocateTensors/0"))
print("\nNumber of nodes executed: 1\n")
print("\n\nOperator-wise Profiling Info for Regular Benchmark Runs:")
print("============================== Run Order ==============================")
print(HEAD)
ops_us = sum(r[1] for r in rows)
start = cdf = 0.0
for node, us, name, index in rows:
    pct = 100 * us / ops_us
    cdf += pct
    print(line(node, start / 1e3, us / 1e3, pct, cdf, f"[{name}]:{index}"))
    start += us
print("\n============================== Top by Computation Time ==============================")
print(HEAD)
for node, us, name, index in sorted(rows, key=lambda r: -r[1])[:10]:
    print(line(node, 0.0, us / 1e3, 100 * us / ops_us, 0.0, f"[{name}]:{index}"))
print(f"\nNumber of nodes executed: {len(rows)}")
print("============================== Summary by node type ==============================")
print("\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]")
kinds = {}
for node, us, *_ in rows:
    kinds.setdefault(node, []).append(us)
for node, v in sorted(kinds.items(), key=lambda kv: -sum(kv[1])):
    print(f"\t{node:>24}\t{len(v):9d}\t{sum(v) / 1e3:10.3f}\t{100 * sum(v) / ops_us:10.3f}%\t"
          f"{0:10.3f}%\t{0:10.3f}\t{len(v):9d}")
print(f"\nTimings (microseconds): count=90 first={ops_us:.0f} curr={ops_us:.0f} min={ops_us:.0f} max={ops_us:.0f} avg={ops_us:.0f} std=0")
print(f"Memory (bytes): count=0\n{len(rows)} nodes observed\n\n")
'''

FAKE_ADB = r'''
import hashlib, json, os, shlex, shutil, subprocess, sys
cfg = json.load(open(os.environ["FAKE_ADB_CONFIG"]))
root = cfg["root"]  # the device's files: /data/... -> root/data/...
argv = sys.argv[1:]
with open(os.path.join(root, "calls.jsonl"), "a") as f:
    f.write(json.dumps(argv) + "\n")
def done(out="", rc=0):
    sys.stdout.write(out); sys.exit(rc)
if argv[:2] == ["devices", "-l"]:
    done("List of devices attached\n" + "".join(f"{s}\t{st} model:{m}\n" for s, st, m in cfg["devices"]) + "\n")
serial = argv[1] if argv[0] == "-s" else None
argv = argv[2:] if serial else argv
states = {s: st for s, st, _ in cfg["devices"]}
if serial not in states:
    done(f"adb: device '{serial}' not found\n", 1)
if argv[0] == "get-state":
    done(states[serial] + "\n")
if states[serial] != "device":
    done(f"error: device {states[serial]}\n", 1)
local = lambda p: os.path.join(root, p.lstrip("/"))
if argv[0] == "push":
    os.makedirs(os.path.dirname(local(argv[2])), exist_ok=True)
    shutil.copyfile(argv[1], local(argv[2]))
    done(f"{argv[1]}: 1 file pushed, 0 skipped.\n")
if argv[0] == "shell":
    toks = shlex.split(" ".join(argv[1:]))
    if toks[0] == "getprop":
        done("".join(f"[{k}]: [{v}]\n" for k, v in cfg["props"].items()))
    if toks[0] in ("mkdir", "chmod"):
        done()
    if toks[0] in ("stat", "sha256sum"):
        path = local(toks[-1])
        if not os.path.exists(path):
            done(f"{toks[0]}: {toks[-1]}: No such file or directory\n", 1)
        if toks[0] == "stat":
            done(f"{os.path.getsize(path)}\n")
        done(hashlib.sha256(open(path, "rb").read()).hexdigest() + f"  {toks[-1]}\n")
    if toks[:2] == ["sh", "-c"] and "exec" in toks[2]:
        binary, flags = toks[5], toks[6:]
        if not os.path.exists(local(binary)):
            done(f"/system/bin/sh: {binary}: inaccessible or not found\n", 127)
        flags = [f"--graph={local(f[8:])}" if f.startswith("--graph=") else f for f in flags]
        proc = subprocess.run([sys.executable, cfg["stand_in"], *flags], capture_output=True, text=True)
        done(proc.stdout.replace(root, ""), proc.returncode)
    if toks[:2] == ["sh", "-c"]:
        done()
done(f"adb: unknown command {argv}\n", 1)
'''


def _stand_in(tmp_path):
    script = tmp_path / "stand_in_benchmark_model.py"
    script.write_text(STAND_IN.replace("__PLANTED__", repr(PLANTED))
                      .replace("__OVERHEAD__", repr(OVERHEAD_US)))
    binary = tmp_path / "benchmark_model"
    binary.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} "
                      f"{shlex.quote(str(script))} \"$@\"\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    return script, binary


def test_run_order_rows_of_the_published_log(shared_dir):
    """The parser's per-operator rows on a real log (fixture 11, XNNPACK off)."""
    path = shared_dir / "fixtures" / "benchmark_logs" / \
        "11_linux_x86_avx2_4threads_op_profiling_duplicate_flags.txt"
    _, details = parse_log_with_details(path.read_text())
    rows = details["run_order"]
    assert len(rows) == details["profiling_nodes_executed"] == 31
    assert rows[0] == {"node_type": "CONV_2D", "avg_ms": 0.605, "first_ms": 0.64,
                       "times_called": 1, "name": "MobilenetV1/MobilenetV1/Conv2d_0/Relu6",
                       "node_index": 0}
    assert [r["node_index"] for r in rows] == list(range(31))
    by_type = {}
    for r in rows:
        by_type[r["node_type"]] = by_type.get(r["node_type"], 0.0) + r["avg_ms"]
    # the summary table's per-type totals (the tool rounds them separately: 8.342 vs 8.356)
    assert {s["node_type"]: s["avg_ms"] for s in details["summary_by_node_type"]} == \
        pytest.approx(by_type, abs=0.02)


def _planted_us(key, macs, elements):
    """The stand-in's planted time of a one-op layer (None: a layer of several ops / none)."""
    kind = next((op for prefix, op in (("dwconv_", "DEPTHWISE_CONV_2D"), ("conv_", "CONV_2D"),
                                        ("dense", "FULLY_CONNECTED"), ("mean", "MEAN"),
                                        ("add", "ADD"), ("hard_swish", "HARD_SWISH"))
                 if key.startswith(prefix)), None)
    if kind is None:
        return None
    a, b, c = PLANTED[kind]
    return a + b * macs / 1e6 + c * elements / 1e6


def _check_lut(lut, dtype="fp32"):
    rows = lut["samples"]
    for r in rows:
        total, mapped = r["op_rows"][dtype]
        assert mapped == total > 10 and r["unmapped_us"][dtype] == 0  # every op to a layer
    table = lut["tables"][dtype]
    # Every layer's profiled time is what the planted cost of its op type gives for the
    # layer's MACs / elements read off the Keras graph, and the per-key table prices it.
    for r in rows:
        for name, key, macs, elements in r["layers"]:
            us = r["op_us"][dtype][name]
            planted = _planted_us(key, macs, elements)
            if planted is not None:
                assert us == pytest.approx(planted, abs=0.51), (name, key)
            cost = table["ops"][key]
            fitted = cost["us_per_op"] + cost["us_per_mmac"] * macs / 1e6 + \
                cost["us_per_melement"] * elements / 1e6
            assert fitted == pytest.approx(us, rel=0.03, abs=1.0), (name, key)
    assert all(v == 0 for k, v in table["ops"]["relu"].items())  # fused into the convs
    assert table["base_us"] == pytest.approx(OVERHEAD_US, abs=10.0)
    assert lut["fit_error"][dtype]["rmspe_pct"] < 3.0


def test_local_target_builds_and_evaluates_from_op_profiles(tmp_path):
    from mobilekit.cli import cli

    _, binary = _stand_in(tmp_path)
    out = tmp_path / "lut.json"
    runner = CliRunner()
    base = ["latency-model", "build", "--target", "local", "--benchmark-binary", str(binary),
            "--space", SPACE, "--samples", "3", "--resolution", "32", "--dtype", "fp32"]
    # The default delegate (XNNPACK) on a build that cannot profile inside it: one clear error.
    res = runner.invoke(cli, base + ["--out", str(out)])
    assert res.exit_code == 2 and "opaque TfLiteXNNPackDelegate row" in res.output, res.output
    res = runner.invoke(cli, base + ["--delegate", "cpu", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lut = latency.load_lut(out)
    assert (lut["target"], lut["delegate"], lut["threads"]) == ("local", "cpu", 1)
    assert lut["binary_sha256"] and lut["device"]["abi"]
    assert len(list(Path(f"{out}.logs").glob("*__cpu__*.log"))) == 6  # profiled + end-to-end runs
    _check_lut(lut)
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--samples", "2",
                              "--benchmark-binary", str(binary), "--out", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "e.json").read_text())["dtypes"]["fp32"]
    assert ev["n"] == 2 and ev["rmspe_pct"] < 5.0
    # Another target or thread count than the LUT's: refused.
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--target", "adb"])
    assert res.exit_code == 2 and "built for target 'local', not 'adb'" in res.output
    res = runner.invoke(cli, ["latency-model", "eval", str(out), "--threads", "2"])
    assert res.exit_code == 2 and "threads 1, not 2" in res.output
    with pytest.raises(ValueError, match="built for target 'local', not 'host'"):
        latency.Predictor(lut, "host", 1, "fp32")


@pytest.fixture
def phone(tmp_path, monkeypatch):
    from test_benchmark_model_adb import make_elf

    script, _ = _stand_in(tmp_path)
    root = tmp_path / "device"
    root.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    adb = bindir / "adb"
    adb.write_text(f"#!{sys.executable}\n" + FAKE_ADB)
    adb.chmod(0o755)
    cfg = {"root": str(root), "stand_in": str(script),
           "devices": [["R58M", "device", "SM_G991B"], ["EMU1", "offline", "sdk"]],
           "props": {"ro.product.model": "SM-G991B", "ro.product.cpu.abi": "arm64-v8a",
                     "ro.product.cpu.abilist": "arm64-v8a", "ro.soc.model": "Exynos 2100"}}
    (tmp_path / "adb.json").write_text(json.dumps(cfg))
    monkeypatch.setenv("FAKE_ADB_CONFIG", str(tmp_path / "adb.json"))
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    binary = make_elf(tmp_path / "android_aarch64_benchmark_model")
    return root, binary


def test_adb_target_pushes_profiles_and_fits(tmp_path, phone):
    from mobilekit.cli import cli

    root, binary = phone
    out = tmp_path / "lut_phone.json"
    res = CliRunner().invoke(cli, [
        "latency-model", "build", "--target", "adb", "--serial", "R58M", "--benchmark-binary",
        str(binary), "--delegate", "cpu", "--space", SPACE, "--samples", "3", "--resolution",
        "32", "--dtype", "fp32", "--out", str(out)])
    assert res.exit_code == 0, res.output
    lut = latency.load_lut(out)
    assert (lut["target"], lut["serial"], lut["device"]["model"]) == ("adb", "R58M", "SM-G991B")
    _check_lut(lut)
    calls = [json.loads(line) for line in (root / "calls.jsonl").read_text().splitlines()]
    pushed = [c[-1] for c in calls if "push" in c]
    assert f"{profiled_remote()}/android_aarch64_benchmark_model" in pushed
    assert any("--enable_op_profiling=true" in " ".join(c) for c in calls)
    # eval runs on the LUT's phone (its serial) with its delegate, end to end
    res = CliRunner().invoke(cli, ["latency-model", "eval", str(out), "--samples", "1",
                                   "--benchmark-binary", str(binary)])
    assert res.exit_code == 0 and "on 1 held-out models" in res.output and "adb R58M" in \
        res.output, res.output
    # a phone of another model is refused
    other = type("R", (), {"info": {"serial": "X1", "device": {"model": "Pixel 7"}},
                           "describe": lambda self: {"target": "adb", "threads": 1,
                                                     "delegate": "cpu"}})()
    with pytest.raises(ValueError, match=r"built on R58M \(SM-G991B\); device X1 is a Pixel 7"):
        profiled.check_runner_matches(lut, other)


def profiled_remote():
    from mobilekit.bench.benchmark_model import REMOTE_DIR

    return REMOTE_DIR


@pytest.mark.parametrize("serial,message", [
    ("EMU1", "device 'EMU1' cannot be used: it is offline"),
    ("NOPE", "device 'NOPE' not found; connected: R58M (device), EMU1 (offline)"),
    (None, "2 devices connected"),
])
def test_adb_target_without_a_usable_device_exits_2(tmp_path, phone, serial, message):
    from mobilekit.cli import cli

    _, binary = phone
    args = ["latency-model", "build", "--target", "adb", "--benchmark-binary", str(binary),
            "--space", SPACE, "--samples", "3", "--out", str(tmp_path / "l.json")]
    res = CliRunner().invoke(cli, args + (["--serial", serial] if serial else []))
    assert res.exit_code == 2 and message in res.output, res.output
    assert res.output.count("Error:") == 1 and not (tmp_path / "l.json").exists()


def test_xnnpack_operator_rows_map_in_order():
    """Rows of a build that profiles inside XNNPACK (operator names, no TFLite index) go to
    the next TFLite operator of their kind; unknown ones stay unmapped."""
    ops = [{"index": 0, "op": "CONV_2D", "names": "m/stem_bn/F;m/stem/Conv2D"},
           {"index": 1, "op": "HARD_SWISH", "names": "m/stem_act/mul_1;m/stem_act/Relu6"},
           {"index": 2, "op": "DEPTHWISE_CONV_2D", "names": "m/dw_bn/F;m/dw/depthwise"},
           {"index": 3, "op": "MEAN", "names": "m/pool/Mean"},
           {"index": 4, "op": "FULLY_CONNECTED", "names": "Identity"}]
    layers = {"stem": "conv_k3_s2", "stem_act": "hard_swish", "dw": "dwconv_k3_s1",
              "pool": "mean", "head": "dense"}
    rows = [{"node_type": t, "avg_ms": ms, "name": f"Delegate/{t}", "node_index": i}
            for i, (t, ms) in enumerate([
                ("Convolution (NHWC, F32) IGEMM", 0.5), ("HardSwish (NC, F32)", 0.1),
                ("Depthwise Convolution (NHWC, F32)", 0.3), ("Convert (NC, F32, QS8)", 0.05),
                ("Mean (ND) Sum", 0.02), ("Fully Connected (NC, F32) GEMM", 0.04)])]
    times, unmapped, mapped = profiled.attribute(rows, ops, layers)
    assert times == pytest.approx({"stem": 500, "stem_act": 100, "dw": 300, "pool": 20,
                                   "head": 40})
    assert unmapped == pytest.approx(50) and mapped == 5


@pytest.mark.slow  # ~20 s on the 2-core machine (Mesa lavapipe), more on a cold start
def test_gpu_target_fits_end_to_end_on_the_accelerator(tmp_path):
    from mobilekit.bench.gpu import NO_GPU

    runner = profiled.Runner("gpu")
    try:
        lut = profiled.build_target_lut(SPACE, 3, 0, 32, ["fp32"], runner, log=lambda m: None)
    except ValueError as exc:
        if str(exc).startswith(f"--target gpu: {NO_GPU}"):
            pytest.skip(str(exc))
        raise
    assert (lut["target"], lut["delegate"], lut["gpu_precision"]) == ("gpu", "gpu", "fp16")
    assert lut["adapter"]["name"] and all(r["measured_us"]["fp32"] > 0 for r in lut["samples"])
    if lut["adapter"]["software"]:
        assert lut["emulation"].startswith("software")
    table = lut["tables"]["fp32"]
    pred = [latency.predict_features(table, r["features"]) for r in lut["samples"]]
    assert latency.errors(pred, [r["measured_us"]["fp32"] for r in lut["samples"]]) == \
        lut["fit_error"]["fp32"]
    with pytest.raises(ValueError, match="built for target 'gpu', not 'host'"):
        latency.Predictor(lut, "host", 1, "fp32")


def test_gpu_target_without_an_accelerator_exits_2(tmp_path, monkeypatch):
    from mobilekit.cli import cli

    monkeypatch.setenv("VK_DRIVER_FILES", str(tmp_path / "none.json"))
    monkeypatch.setenv("VK_ICD_FILENAMES", str(tmp_path / "none.json"))
    res = CliRunner().invoke(cli, ["latency-model", "build", "--target", "gpu", "--space", SPACE,
                                   "--samples", "3", "--resolution", "32", "--dtype", "fp32",
                                   "--out", str(tmp_path / "g.json")])
    assert res.exit_code == 2 and "no GPU accelerator available" in res.output, res.output


def test_a_fused_conv_that_lost_its_own_name_maps_upstream():
    """The converter can drop a conv's own name when fusing ('regnet/b_act/Relu;
    regnet/b_bn/FusedBatchNormV3;Conv2D1', seen for regnet-tiny's grouped convs): the op
    goes to the conv found upstream of the named layers in the Keras graph, not to the ReLU."""
    ops = [{"index": 0, "op": "CONV_2D",
            "names": "regnet/b_act/Relu;regnet/b_bn/FusedBatchNormV3;Conv2D1"},
           {"index": 1, "op": "LOGISTIC", "names": "regnet/gate/Sigmoid"}]
    layers = {"b": "gconv_k3_s2", "b_act": "relu", "gate": "act_sigmoid"}
    inbound = {"b": ["input"], "b_bn": ["b"], "b_act": ["b_bn"], "gate": ["b_act"]}
    assert profiled.op_layers(ops, layers, inbound) == {0: "b", 1: "gate"}
    assert profiled.op_layers(ops, layers) == {0: "b_act", 1: "gate"}  # without the graph
