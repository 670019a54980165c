"""benchmark_model log parser and `mobilekit bench-parse`.

Real published logs (shared/fixtures/benchmark_logs) must give their .json values exactly;
the other formats of reference/benchmark_model_format.md are covered by small snippets
modelled on the formats quoted there.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mobilekit.bench import parse as parse_mod
from mobilekit.bench.parse import parse_log, parse_log_file, parse_log_with_details
from mobilekit.bench.schema import RESULT_KEYS
from mobilekit.cli import cli

LOG_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "benchmark_logs"
FIXTURES = sorted(LOG_DIR.glob("*.json")) if LOG_DIR.is_dir() else []
# fixture key -> schema key where the schema names the same quantity differently
ALIASES = {"num_threads": "threads", "summary_by_node_type": "op_profile", "tf_version": "runtime_version"}


def _needs_fixtures():
    if not FIXTURES:
        pytest.skip(f"benchmark log fixtures not found at {LOG_DIR} (../shared beside the repo)")


# ------------------------------------------------------------------ real published logs

@pytest.mark.parametrize("fixture", FIXTURES or [None], ids=lambda p: p.stem if p else "absent")
def test_fixture_values_exact(fixture):
    _needs_fixtures()
    spec = json.loads(fixture.read_text())
    row, details = parse_log_with_details(fixture.with_suffix(".txt").read_text())
    assert set(row) == set(RESULT_KEYS)
    checked = dict(spec["expected"], ok=spec["ok"], delegate=spec["delegate"])
    if "tf_version" in spec:
        checked["tf_version"] = spec["tf_version"]
    for key, want in checked.items():
        if key in RESULT_KEYS or key in ALIASES:
            got = row[ALIASES.get(key, key)]
        else:
            got = details[key]
        assert got == want, f"{fixture.stem}: {key} = {got!r}, expected {want!r}"
        if key in details:  # the details copy agrees with the schema row
            assert details[key] == want, key


def test_fixture_file_sets_raw_log_path_and_skips_init_profile():
    _needs_fixtures()
    path = next(LOG_DIR.glob("11_*.txt"))
    row = parse_log_file(path)
    assert row["raw_log_path"] == str(path)
    # the init section's AllocateTensors table is not the op profile of the runs
    assert [op["node_type"] for op in row["op_profile"]] == [
        "CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "SOFTMAX", "SQUEEZE"]
    # the profiler's own "Timings (microseconds): ... avg=11036" is not the summary (11040.4)
    assert row["inference_avg_us"] == 11040.4


def test_missing_file_raises():
    with pytest.raises(FileNotFoundError, match="nope.log"):
        parse_log_file("/nonexistent/nope.log")


# ------------------------------------------------------------------ other formats (snippets)

TF220_XNNPACK = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Min num runs: [100]
INFO: Num threads: [4]
INFO: Min warmup runs: [5]
INFO: Graph: [/data/local/tmp/mobilenet_v2.tflite]
INFO: Signature to run: []
INFO: #threads used for CPU inference: [4]
INFO: Loaded model /data/local/tmp/mobilenet_v2.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: Replacing 66 out of 66 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for the whole graph.
INFO: The input model file size (MB): 13.9786
INFO: Initialized session in 61.524ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=31 first=24412 curr=15871 min=15509 max=24412 avg=16210.5 std=1562 p5=15509 median=15839 p95=17730

INFO: Running benchmark for at least 100 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=100 first=15902 curr=15776 min=15412 max=18873 avg=15947.2 std=456 p5=15466 median=15821 p95=16889

INFO: Inference timings in us: Init: 61524, First inference: 24412, Warmup (avg): 16210.5, Inference (avg): 15947.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=37.25 overall=45.875
INFO: Overall peak memory footprint (MB) via periodic monitoring: 52.3047
INFO: Memory status at the end of exeution:
INFO: - VmRSS              : 58 MB
INFO: + RssAnnon           : 35 MB
INFO: + RssFile + RssShmem : 23 MB
"""


def test_tf220_percentiles_xnnpack_peak_memory():
    row, details = parse_log_with_details(TF220_XNNPACK)
    assert row["ok"] is True and row["error"] is None
    assert (row["threads"], row["warmup_runs"], row["num_runs"]) == (4, 5, 100)
    assert (row["init_us"], row["first_inference_us"], row["warmup_avg_us"]) == (61524, 24412, 16210.5)
    assert (row["inference_avg_us"], row["inference_std_us"], row["inference_min_us"],
            row["inference_max_us"], row["inference_median_us"], row["inference_count"]) == \
        (15947.2, 456, 15412, 18873, 15821, 100)
    assert (row["memory_init_mb"], row["memory_overall_mb"], row["peak_memory_mb"]) == (37.25, 45.875, 52.3047)
    assert (row["delegate"], row["delegated_nodes"], row["total_nodes"], row["delegation"]) == \
        ("xnnpack", 66, 66, "complete")
    assert details["warmup_count"] == 31 and details["model_size_mb"] == 13.9786
    assert details["use_xnnpack"] is True and details["init_ms"] == 61.524


TF215_GPU_FULL = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [mobilenet_v1_1.0_224.tflite]
INFO: Use gpu: [1]
INFO: Tensorflow Version : 2.15.0
INFO: Loaded model mobilenet_v1_1.0_224.tflite
INFO: Created TensorFlow Lite delegate for GPU.
VERBOSE: Replacing 31 out of 31 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 1 partitions for subgraph 0.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
INFO: Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 16.9008
INFO: Initialized session in 1361.24ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=58 first=23175 curr=8412 min=8127 max=23175 avg=8642.91 std=1953

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=121 first=8465 curr=8240 min=8098 max=8903 avg=8312.45 std=150

INFO: Inference timings in us: Init: 1361236, First inference: 23175, Warmup (avg): 8642.91, Inference (avg): 8312.45
INFO: Memory footprint delta from the start of the tool (MB): init=278.512 overall=281.883
"""


def test_tf215_gpu_full_delegation_and_version():
    row, details = parse_log_with_details(TF215_GPU_FULL)
    assert row["ok"] is True
    assert row["runtime_version"] == "2.15.0"
    assert (row["delegate"], row["delegated_nodes"], row["total_nodes"], row["delegation"]) == \
        ("gpu", 31, 31, "complete")
    # "Initialized session in 1361.24ms." is the same quantity as Init: 1361236 (less precise)
    assert row["init_us"] == 1361236 and details["init_ms"] == 1361.236
    assert row["inference_median_us"] is None  # 2.15 count lines have no percentiles
    assert (row["inference_count"], row["inference_avg_us"]) == (121, 8312.45)


PARTIAL_NNAPI = """\
STARTING!
Num threads: [4]
Use NNAPI: [1]
NNAPI accelerators available: [qti-dsp,qti-gpu,nnapi-reference]
Loaded model /data/local/tmp/model.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
INFO: Replacing 60 out of 64 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 2 partitions for the whole graph.
Explicitly applied NNAPI delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels.
The input model file size (MB): 3.57776
Initialized session in 412.5ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=21 first=31085 curr=22941 min=22602 max=31085 avg=23812.4 std=1785

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=22981 curr=23120 min=22517 max=24410 avg=23058.6 std=362

Inference timings in us: Init: 412500, First inference: 31085, Warmup (avg): 23812.4, Inference (avg): 23058.6
Peak memory footprint (MB): init=5.73438 overall=12.3281
"""


def test_partial_delegation():
    row = parse_log(PARTIAL_NNAPI)
    assert row["ok"] is True
    assert (row["delegate"], row["delegated_nodes"], row["total_nodes"], row["delegation"]) == \
        ("nnapi", 60, 64, "partial")
    assert (row["memory_init_mb"], row["memory_overall_mb"]) == (5.73438, 12.3281)


NOT_EXECUTED = """\
STARTING!
Use NNAPI: [1]
Loaded model /data/local/tmp/model.tflite
Though NNAPI delegate is explicitly applied, the model graph will not be executed by the delegate.
Initialized session in 5.432ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=30 first=17843 curr=16512 min=16402 max=17843 avg=16650 std=290

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=61 first=16530 curr=16497 min=16390 max=17001 avg=16541.2 std=111

Inference timings in us: Init: 5432, First inference: 17843, Warmup (avg): 16650, Inference (avg): 16541.2
"""


def test_delegate_not_executed():
    row = parse_log(NOT_EXECUTED)
    assert row["ok"] is True
    assert (row["delegate"], row["delegation"], row["delegated_nodes"]) == ("nnapi", "none", None)


OLD_REPLACING_SCI = """\
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 1022 while completing NNAPI compilation.
INFO: Replacing 71 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 1 partitions.
Explicitly applied NNAPI delegate, and the model graph will be completely executed by the delegate.
Initialized session in 1357.6ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=2.95034e+06

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=1.3576e+06 curr=1.35123e+06 min=1.34789e+06 max=1.40112e+06 avg=1.3576e+06 std=9876

Inference timings in us: Init: 1357600, First inference: 2950340, Warmup (avg): 2.95034e+06, Inference (avg): 1.3576e+06
"""


def test_cpp_float_format_old_replacing_and_harmless_error_line():
    row, details = parse_log_with_details(OLD_REPLACING_SCI)
    assert row["ok"] is True and row["error"] is None  # an ERROR: line in a run that succeeded
    assert (row["warmup_avg_us"], row["inference_avg_us"], row["inference_min_us"],
            row["inference_max_us"]) == (2950340, 1357600, 1347890, 1401120)
    assert details["warmup_count"] == 1 and row["first_inference_us"] == 2950340
    assert (row["delegate"], row["delegated_nodes"], row["total_nodes"], row["delegation"]) == \
        ("nnapi", 71, None, "complete")


README_OLD = """\
Loaded model mobilenet_quant_v1_224.tflite
resolved reporter
Initialized session in 38.467ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=6 first=95230 curr=80116 min=79210 max=95230 avg=83235 std=5520

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=80011 curr=79903 min=78921 max=81812 avg=79760.9 std=612

Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""


def test_readme_old_summary():
    row = parse_log(README_OLD)
    assert row["ok"] is True
    assert (row["warmup_avg_us"], row["init_us"], row["inference_avg_us"]) == (83235, 38467, 79760.9)
    assert row["first_inference_us"] == 95230  # the first warm-up run
    assert row["warmup_runs"] == 1 and row["num_runs"] == 50  # from "Running benchmark" lines


APK_LOGCAT = """\
01-23 10:15:42.123  7021  7021 I tflite_BenchmarkModelActivity: Running TensorFlow Lite benchmark with args: --graph=/data/local/tmp/mobilenet_v2.tflite --num_threads=4
01-23 10:15:42.131  7021  7040 I tflite  : Min num runs: [50]
01-23 10:15:42.131  7021  7040 I tflite  : Num threads: [4]
01-23 10:15:42.140  7021  7040 I tflite  : Loaded model /data/local/tmp/mobilenet_v2.tflite
01-23 10:15:45.901  7021  7040 E tflite  : Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1Overall max resident set size = 28.9 MB, total malloc-ed size = 12.3 MB, in-use allocated/mmapped size = 9.87 MB
"""
APK_SHORT = "I tflite  : Average inference timings in us: Warmup: 1.2e+05, Init: 5291, Inference: 98765.4\n"


def test_apk_logcat_line():
    row = parse_log(APK_LOGCAT)
    assert row["ok"] is True
    assert (row["warmup_avg_us"], row["init_us"], row["inference_avg_us"]) == (91471, 4108, 80660.1)
    assert row["peak_memory_mb"] == 28.9 and row["threads"] == 4 and row["num_runs"] == 50
    short = parse_log(APK_SHORT)
    assert (short["ok"], short["warmup_avg_us"], short["inference_avg_us"]) == (True, 120000, 98765.4)
    assert short["delegate"] is None  # nothing in one line says which delegate ran


LITERT_BLOCK = """\
INFO: [litert_environment.cc:45] Loaded GPU accelerator.
...
========== BENCHMARK RESULTS ==========
INFO: [benchmark_litert_model.h:92] Signature name:       prefill_1024
INFO: [benchmark_litert_model.h:94] Model initialization: 23744.73 ms
INFO: [benchmark_litert_model.h:96] Warmup (first):       7441.04 ms
INFO: [benchmark_litert_model.h:98] Warmup (avg):         7441.04 ms (1 runs)
INFO: [benchmark_litert_model.h:100] Inference (avg):      7430.20 ms (10 runs)
INFO: [benchmark_litert_model.h:104] Inference (min):      7416.40 ms
INFO: [benchmark_litert_model.h:106] Inference (max):      7448.86 ms
INFO: [benchmark_litert_model.h:108] Inference (std):      9.92
INFO: [benchmark_litert_model.h:115] Throughput:           27.46 MB/s
INFO: [benchmark_litert_model.h:124] 
Memory Usage:
INFO: [benchmark_litert_model.h:126] Init footprint:       6391.74 MB
INFO: [benchmark_litert_model.h:128] Overall footprint:    6391.74 MB
INFO: [benchmark_litert_model.h:135] Peak memory usage not available. (peak_mem_mb <= 0)
INFO: [benchmark_litert_model.h:137] ======================================
"""


def test_litert_block_ms_to_us():
    row, details = parse_log_with_details(LITERT_BLOCK)
    assert row["ok"] is True
    assert (row["init_us"], row["first_inference_us"], row["warmup_avg_us"]) == (23744730, 7441040, 7441040)
    assert (row["inference_avg_us"], row["inference_min_us"], row["inference_max_us"],
            row["inference_std_us"], row["inference_count"]) == (7430200, 7416400, 7448860, 9920, 10)
    assert (row["memory_init_mb"], row["memory_overall_mb"], row["peak_memory_mb"]) == (6391.74, 6391.74, None)
    assert details["warmup_count"] == 1 and details["init_ms"] == 23744.73


def test_litert_block_loses_to_microsecond_summary():
    log = ("INFO: Inference timings in us: Init: 23744731, First inference: 7441042, "
           "Warmup (avg): 7441042, Inference (avg): 7430203.5\n" + LITERT_BLOCK)
    row = parse_log(log)
    assert (row["init_us"], row["inference_avg_us"], row["inference_min_us"]) == (23744731, 7430203.5, 7416400)


OP_TABLES_NO_SUMMARY = """\
Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t                 CONV_2D\t       15\t     8.342\t    75.706%\t    75.706%\t     0.000\t       15
\t       DEPTHWISE_CONV_2D\t       13\t     2.668\t    24.294%\t   100.000%\t     0.000\t       13

Timings (microseconds): count=90 first=11307 curr=10581 min=10539 max=12256 avg=11036 std=437
Memory (bytes): count=0
28 nodes observed
"""


def test_profiler_timings_line_is_not_the_summary():
    row = parse_log(OP_TABLES_NO_SUMMARY)
    assert row["inference_avg_us"] is None and row["inference_count"] is None
    assert row["ok"] is False and "no benchmark result" in row["error"]
    assert row["op_profile"] == [
        {"node_type": "CONV_2D", "count": 15, "avg_ms": 8.342, "avg_pct": 75.706, "times_called": 15},
        {"node_type": "DEPTHWISE_CONV_2D", "count": 13, "avg_ms": 2.668, "avg_pct": 24.294, "times_called": 13}]


def test_single_regular_run_and_tail_only_paste():
    row = parse_log("count=1 curr=2.95034e+06\n\n"
                    "Inference timings in us: Init: 1200, First inference: 2950340, "
                    "Warmup (avg): 2.95034e+06, Inference (avg): 2.95034e+06\n")
    assert row["ok"] is True and row["inference_count"] == 1 and row["inference_avg_us"] == 2950340
    tail = parse_log("count=50 first=8465 curr=8240 min=8098 max=8903 avg=8312.45 std=150\n")
    assert tail["ok"] is True and tail["inference_count"] == 50 and tail["inference_min_us"] == 8098


def test_last_of_several_runs_is_reported():
    # a shell loop over thread counts pasted into one file
    second = README_OLD.replace("79760.9", "66767.6").replace("count=50 first=80011", "count=25 first=66753")\
        .replace("min=78921", "min=66699").replace("count=6 ", "count=13 ")
    row, details = parse_log_with_details(
        "STARTING!\nNum threads: [1]\n" + README_OLD + "STARTING!\nNum threads: [2]\n" + second)
    assert row["threads"] == 2 and row["inference_avg_us"] == 66767.6
    assert (row["inference_count"], row["inference_min_us"], details["warmup_count"]) == (25, 66699, 13)


def test_gpu_chosen_over_explicit_xnnpack():
    # --use_xnnpack=true --use_gpu=true: delegates are applied in flag order
    log = ("INFO: Explicitly applied XNNPACK delegate, and the model graph will be partially executed "
           "by the delegate w/ 3 delegate kernels.\n"
           "INFO: Replacing 12 out of 64 node(s) with delegate (TfLiteXNNPackDelegate) node, "
           "yielding 3 partitions for the whole graph.\n"
           "INFO: Replacing 52 out of 64 node(s) with delegate (TfLiteGpuDelegateV2) node, "
           "yielding 1 partitions for the whole graph.\n"
           "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed "
           "by the delegate w/ 1 delegate kernels.\n"
           "INFO: Inference timings in us: Init: 1200, First inference: 9000, Warmup (avg): 8000, "
           "Inference (avg): 7000\n")
    row = parse_log(log)
    assert (row["delegate"], row["delegated_nodes"], row["total_nodes"], row["delegation"]) == \
        ("gpu", 52, 64, "partial")


FAIL_NNAPI = """\
STARTING!
Use NNAPI: [1]
Loaded model /data/local/tmp/model.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite delegate for NNAPI.
Failed to apply NNAPI delegate.
Benchmarking failed.
"""
FAIL_OP = """\
STARTING!
Loaded model /data/local/tmp/mobilenet_v3.tflite
ERROR: Didn't find op for builtin opcode 'HARD_SWISH' version '1'. An older version of this builtin might be supported. Are you using an old TFLite binary with a newer model?

ERROR: Registration failed.

Failed to initialize the interpreter
Benchmarking failed.
"""
FAIL_OPENCL = """\
INFO: Created TensorFlow Lite delegate for GPU.
ERROR: Failed to build program executable - Build program failure<source>:17:5: error: use of undeclared identifier 'half4'
ERROR: Falling back to OpenGL
ERROR: TfLiteGpuDelegate Init: OpenGL-based API disabled
INFO: Created 0 GPU delegate kernels.
"""
FAIL_ABI = "/system/bin/sh: ./benchmark_model: not executable: 64-bit ELF file\n"


@pytest.mark.parametrize("log, error", [
    (FAIL_NNAPI, "Failed to apply NNAPI delegate."),
    (FAIL_OP, "Didn't find op for builtin opcode 'HARD_SWISH' version '1'. An older version of this "
              "builtin might be supported. Are you using an old TFLite binary with a newer model?"),
    (FAIL_OPENCL, "Failed to build program executable - Build program failure<source>:17:5: "
                  "error: use of undeclared identifier 'half4'"),
    (FAIL_ABI, "/system/bin/sh: ./benchmark_model: not executable: 64-bit ELF file"),
    ("", "no benchmark result in the log (no timing summary line)"),
], ids=["nnapi", "missing-op", "opencl-no-final-line", "wrong-abi", "empty"])
def test_failures_give_most_specific_error(log, error):
    row = parse_log(log)
    assert row["ok"] is False
    assert row["error"] == error
    assert row["inference_avg_us"] is None


def test_ignored_default_delegate_failure_is_not_fatal():
    log = ("WARNING: Failed to apply the default TensorFlow Lite delegate indexed at 0 because of "
           "incompatibility between runtime and delegate. Ignoring the error, and continuing anyway.\n"
           + NOT_EXECUTED)
    row = parse_log(log)
    assert (row["ok"], row["error"], row["inference_avg_us"]) == (True, None, 16541.2)


def test_failed_delegate_with_timings_is_not_ok():
    log = FAIL_NNAPI.replace("Benchmarking failed.\n", "") + NOT_EXECUTED.split("Initialized session")[1]
    row = parse_log(log)
    assert row["inference_avg_us"] == 16541.2  # the numbers stay, but they are not NNAPI numbers
    assert (row["ok"], row["error"]) == (False, "Failed to apply NNAPI delegate.")


# ------------------------------------------------------------------ never raises (fuzz)

_FRAGMENTS = [line for text in (TF220_XNNPACK, TF215_GPU_FULL, PARTIAL_NNAPI, OLD_REPLACING_SCI,
                                APK_LOGCAT, LITERT_BLOCK, OP_TABLES_NO_SUMMARY, FAIL_OP, FAIL_OPENCL)
              for line in text.splitlines()]


def _check_row(row):
    assert set(row) == set(RESULT_KEYS)
    json.dumps(row, allow_nan=False)  # no NaN / inf / odd objects
    assert isinstance(row["ok"], bool)
    assert row["ok"] or isinstance(row["error"], str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_fuzz_arbitrary_text(text):
    row, _ = parse_mod._parse(text)  # the unguarded core: a bug must show up here
    _check_row(row)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=40),
                          st.sampled_from(_FRAGMENTS).map(lambda s: s.replace("=", "=nan"))),
                max_size=30),
       st.sampled_from(["\n", "\r\n", "\n\n"]))
def test_fuzz_shuffled_log_fragments(lines, sep):
    row, details = parse_mod._parse(sep.join(lines))
    _check_row(row)
    json.dumps(details, allow_nan=False)
    for key in ("inference_avg_us", "inference_min_us", "init_us"):
        assert row[key] is None or math.isfinite(row[key])


def test_guard_turns_an_internal_error_into_a_failed_row(monkeypatch):
    def broken(text):
        raise RuntimeError("boom")

    monkeypatch.setattr(parse_mod, "_parse", broken)
    row = parse_log("anything")
    assert row["ok"] is False and "RuntimeError: boom" in row["error"]


# ------------------------------------------------------------------ CLI

def test_cli_exit_codes_and_json(tmp_path):
    runner = CliRunner()
    good, bad = tmp_path / "good.log", tmp_path / "bad.log"
    good.write_text(TF220_XNNPACK)
    bad.write_text(FAIL_OP)

    res = runner.invoke(cli, ["bench-parse", str(good)])
    assert res.exit_code == 0, res.output
    assert "15.95 ms avg (100 runs)" in res.output and "median 15.82 ms" in res.output

    res = runner.invoke(cli, ["bench-parse", str(good), "--json"])
    assert res.exit_code == 0
    row = json.loads(res.output)
    assert row["inference_avg_us"] == 15947.2 and row["raw_log_path"] == str(good)

    res = runner.invoke(cli, ["bench-parse", str(bad)])
    assert res.exit_code == 1
    assert "FAILED: Didn't find op for builtin opcode 'HARD_SWISH'" in res.output

    res = runner.invoke(cli, ["bench-parse", str(tmp_path / "missing.log")])
    assert res.exit_code == 2
    assert "missing.log" in res.output


def test_cli_does_not_import_tensorflow(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(TF215_GPU_FULL)
    code = ("import sys\nfrom mobilekit.cli import cli\n"
            f"try:\n    cli.main(args=['bench-parse', {str(log)!r}], prog_name='mobilekit')\n"
            "except SystemExit as e:\n    code = e.code\n"
            "print('EXIT', code, 'TF', 'tensorflow' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "EXIT 0 TF False" in out.stdout, out.stdout + out.stderr


def test_warmup_count_and_model_size_reach_the_row():
    """Issue 17 item 6: the tool's warm-up count (not the --warmup_runs flag) and model size."""
    _needs_fixtures()
    by_stem = {p.stem[:2]: parse_log_file(p) for p in LOG_DIR.glob("*.txt")}
    # fixture 29: --warmup_runs=1 asked, 14 warm-up runs happened (warmup_min_secs)
    assert (by_stem["29"]["warmup_runs"], by_stem["29"]["warmup_count"]) == (1, 14)
    assert by_stem["29"]["model_size_mb"] == 10.2973
    assert (by_stem["11"]["warmup_count"], by_stem["11"]["model_size_mb"]) == (43, 16.9008)
    # the TF 1.x tool prints no size line: None, not a guess
    assert (by_stem["09"]["warmup_count"], by_stem["09"]["model_size_mb"]) == (2, None)
    assert by_stem["10"]["warmup_count"] == 1
    row = parse_log("INFO: Model size: 3.25 MB\nINFO: count=5 first=1 curr=1 min=1 max=2 avg=1.2 "
                    "std=0\nINFO: count=50 first=1 curr=1 min=1 max=2 avg=1.1 std=0\n")
    assert (row["model_size_mb"], row["warmup_count"], row["inference_count"]) == (3.25, 5, 50)
