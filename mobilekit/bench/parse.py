"""Parse the output of the TFLite / LiteRT `benchmark_model` tool into a result row.

Handles every format in shared/reference/benchmark_model_format.md: the TF 1.x summary
(`Average inference timings in us: Warmup, Init, no stats`), the old README / Android APK
line (`... Inference: <avg>Overall <memory>`), the TF 2.x summary (`Inference timings in us:
Init, First inference, Warmup (avg), Inference (avg)`), the LiteRT
`========== BENCHMARK RESULTS ==========` block (ms), `INFO:`/`ERROR:`/logcat/glog prefixes,
C++ float formats (`2.95034e+06`), op-profiling tables, delegate lines and failures.

The parser never raises on text: anything it cannot read stays None. When a log holds
several runs (a shell loop pasted into one file) the last run is the one reported.
Pure Python, no TensorFlow import: `mobilekit bench-parse` must start fast.
"""
import math
import os
import re

from mobilekit.bench.gpu_log import parse_gpu_log
from mobilekit.bench.schema import DELEGATES, delegation_state, empty_result

__all__ = ["parse_log", "parse_log_file", "parse_log_with_details", "delegate_not_applied"]

_NUM = r"[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|nan|inf)"

# Line prefixes added by the TFLite logger, LiteRT, glog and Android logcat (repeatable).
_PREFIXES = [re.compile(p) for p in (
    r"^(?:\d{4}-)?\d\d-\d\d\s+\d\d:\d\d:\d\d\.\d+\s+\d+\s+\d+\s+[VDIWEFA]\s+[^:]*?:\s?",  # threadtime
    r"^[VDIWEFA]/[^(:]*\(\s*\d+\):\s?",                                                  # brief
    r"^[VDIWEFA]\s+[\w.\-]+\s*:\s?",                                                     # I tflite  :
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: )?[IWEF]\d{0,4}(?: \d\d:\d\d:\d\d\.\d+)?"
    r"\s+(?:\d+\s+)?[\w./\-]+:\d+\]\s?",                                                 # glog
    r"^(?:INFO|VERBOSE|WARNING|ERROR|DEBUG|FATAL)\s*:\s?",                               # TFLite
    r"^\[[\w./\-]+:\d+\]\s?",                                                            # LiteRT
)]
_ERROR_PREFIX = re.compile(r"^(?:ERROR\s*:|E/|E\s+\S+\s*:|E\d{4}\s|"
                           r"(?:\d{4}-)?\d\d-\d\d\s+\S+\s+\d+\s+\d+\s+E\s)")

_RE = {name: re.compile(p, re.IGNORECASE if name in ("version",) else 0) for name, p in {
    "version": r"(?:TensorFlow|LiteRT)(?: Lite)? Version\s*:?\s*\[?v?(\d+\.\d+[\w.\-]*)",
    "param": r"^([A-Za-z#][^:\[\]]*):\s*\[(.*)\]$",
    "running": r"^Running benchmark for (?:at least |max )?(\d+) iterations",
    "count": r"^count=(\d+)\b(.*)$",
    "kv": r"(\w+)=(" + _NUM + r")",
    "tf_summary": r"[Ii]nference timings in us:(.*)$",
    "summary_kv": r"(First inference|Warmup \(avg\)|Inference \(avg\)|no stats|with stats|Init|"
                  r"Warmup|Inference)\s*:\s*(" + _NUM + r")",
    "apk_memory": r"Overall\s*max resident set size(?:/physical footprint)?\s*=\s*(" + _NUM + r")\s*MB",
    "rss_overall": r"^\[Overall\] - Memory usage: max resident set size(?:/physical footprint)?"
                   r"\s*=\s*(" + _NUM + r")\s*MB",
    "init_session": r"^Initialized session in (" + _NUM + r")\s*ms",
    "model_size": r"^(?:The input model file size \(MB\):|Model size:)\s*(" + _NUM + r")\s*(?:MB)?\s*$",
    "mem_pair": r"^(?:Peak memory footprint|Memory footprint delta from the start of the tool) \(MB\):"
                r"\s*init=(" + _NUM + r")\s+overall=(" + _NUM + r")",
    "mem_peak": r"^Overall peak memory footprint \(MB\) via periodic monitoring:\s*(" + _NUM + r")",
    "litert_block": r"^=+ BENCHMARK RESULTS =+$",
    "litert_line": r"^(Model initialization|Warmup \(first\)|Warmup \(avg\)|Inference \(avg\)|"
                   r"Inference \(min\)|Inference \(max\)|Inference \(std\)|Init footprint|"
                   r"Overall footprint|Peak memory)\s*:\s*(" + _NUM + r")\s*(ms|MB)?"
                   r"(?:\s*\((\d+) runs\))?",
    "explicit": r"Explicitly applied (\S+) delegate, and the model graph will be "
                r"(completely|partially) executed by the delegate",
    "not_executed": r"Though (\S+) delegate is explicitly applied, the model graph will not be "
                    r"executed by the delegate",
    "replacing": r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \((.+?)\) node"
                 r"(?:, yielding \d+ partitions(?: for (subgraph \d+|the whole graph))?)?",
    "gpu_split": r"(\d+) operations will run on the GPU, and the remaining (\d+) operations? "
                 r"will run on the CPU",
    "xnnpack_created": r"Created TensorFlow Lite XNNPACK delegate for CPU",
    "cmd_flag": r"--(num_threads|num_runs|warmup_runs|use_gpu|use_nnapi|use_xnnpack)=(\S+)",
    "section_init": r"^Profiling Info for Benchmark Initialization",
    "section_regular": r"^Operator-wise Profiling Info for Regular Benchmark Runs",
    "table_title": r"^=+ (Run Order|Top by Computation Time|Summary by node type) =+$",
    "nodes_executed": r"^Number of nodes executed:\s*(\d+)",
    "starting": r"^STARTING!",
    "ran": r"^(?:STARTING!|Loaded model )",
}.items()}

# Failure lines, most specific first: the first class that matches gives the error text.
_FAILURES = [p if p is None else re.compile(p) for p in (
    r"not executable|: not found$|inaccessible or not found|[Pp]ermission denied|"
    r"[Ee]xec format error|cannot execute|CANNOT LINK EXECUTABLE|No such file or directory",
    r"Didn't find (?:op for builtin opcode|custom op)|Encountered unresolved custom op",
    r"Failed to (?:apply|create) \S+ delegate",
    None,  # any other ERROR-level line (OpenCL build errors, NNAPI errors, ...)
    r"Failed to (?:initialize the interpreter|allocate tensors|invoke|mmap model|construct "
    r"interpreter|load model|prepare)|Model file doesn't exist|Segmentation fault|Aborted|"
    r"Fatal signal",
    r"Benchmarking failed\.",
)]
_GENERIC_ERRORS = re.compile(r"^(?:Registration failed\.?|Failed to initialize the interpreter|"
                             r"Benchmarking failed\.?)$")
# The tool's own "Failed to apply <NAME> delegate." is fatal; the interpreter's "Failed to apply
# the default ... delegate" alone is not (a fatal one is followed by "Benchmarking failed.").
_FATAL = re.compile(r"Benchmarking failed\.|Failed to apply \S+ delegate\.|"
                    r"not executable|CANNOT LINK EXECUTABLE|Segmentation fault|Fatal signal")

_DELEGATE_NAMES = {"gpu": "gpu", "nnapi": "nnapi", "xnnpack": "xnnpack",
                   "tflitegpudelegatev2": "gpu", "tflitegpudelegate": "gpu",
                   "tflitennapidelegate": "nnapi", "tflitexnnpackdelegate": "xnnpack"}
_MAX_ERROR_CHARS = 500
_MAX_LINE_CHARS = 2000  # real lines are far shorter; the cap bounds regex time on junk input


def parse_log(text):
    """Parse one `benchmark_model` log into a result row (never raises on text)."""
    return parse_log_with_details(text)[0]


def parse_log_file(path):
    """parse_log on a file; sets raw_log_path. A missing file raises FileNotFoundError."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"benchmark log not found: {path}")
    with open(path, encoding="utf-8", errors="replace") as f:
        row = parse_log(f.read())
    row["raw_log_path"] = path
    return row


def parse_log_with_details(text):
    """(row, details): the schema row plus what the log gives beyond the schema.

    details: warmup_count, num_threads, init_ms, model_size_mb, use_xnnpack, op_profiling,
    profiling_nodes_executed, summary_by_node_type, top_by_computation_time_first, run_order
    (the regular runs' per-operator rows: node_type, avg_ms, first_ms, times_called, name,
    node_index; the name without its brackets, node_index the number after its last ':').
    """
    try:
        return _parse(_as_text(text))
    except Exception as exc:  # defensive: a parser bug must not crash a whole sweep
        row = empty_result(ok=False, error=f"log could not be parsed: {type(exc).__name__}: {exc}")
        return row, {}


def _as_text(text):
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text).decode("utf-8", errors="replace")
    return str(text)


# ---------------------------------------------------------------------------- parsing core

class _Fields:
    """Values with a priority: a more precise source (µs summary) beats a rounder one (ms)."""

    def __init__(self):
        self._values = {}

    def put(self, key, value, prio):
        if value is None:
            return
        old = self._values.get(key)
        if old is None or prio >= old[1]:
            self._values[key] = (value, prio)

    def get(self, key, default=None):
        return self._values.get(key, (default, 0))[0]

    def prio(self, key):
        return self._values.get(key, (None, -1))[1]


class _State:
    def __init__(self):
        self.f = _Fields()
        self.params = {}           # lower-cased echo label -> raw value
        self.flags = {}            # command-line flags seen in the log
        self.stage = 0             # 1 = warm-up, 2 = regular runs (from "Running benchmark")
        self.counts = []           # (stage or None, {key: value}) of each count= line
        self.explicit = []         # (delegate name, "complete"|"partial"|"none")
        self.replacing = []        # (delegate name, n, m or None, subgraph key)
        self.gpu_split = None
        self.gpu = {}              # mobilekit.bench.gpu_log.parse_gpu_log of the run
        self.xnnpack_created = False
        self.ran = False
        self.in_litert = False
        self.section = None        # op-profiling part: "init" / "regular" / None (TF 1.x)
        self.table = None          # (section, title) of the table being read
        self.tables = {}           # (section, title) -> [rows]
        self.nodes_executed = {}   # section -> N
        self.lines = []            # (stripped text, is_error_level) for failure detection


def _parse(text):
    state = _State()
    lines = _last_run([line[:_MAX_LINE_CHARS] for line in text.splitlines()])
    for raw in lines:
        body, is_error = _strip_prefixes(raw)
        state.lines.append((body.strip(), is_error))
        _read_line(state, body)
    state.gpu = parse_gpu_log("\n".join(lines))
    return _build(state)


_UNCONSUMED = re.compile(r"Unconsumed cmdline flags?:\s*(.*)$", re.M)
_EVIDENCE = {
    # Release builds never print the interpreter's VERBOSE "Replacing N out of M node(s)";
    # the delegates' own lines are the evidence that they were applied.
    "gpu": re.compile(r"Created TensorFlow Lite delegate for GPU|Created \d*[1-9]\d* GPU delegate "
                      r"kernels|executed by the delegate|operations will run on the GPU|"
                      r"Replacing \d+ .*node\(s\) with delegate \(TfLiteGpuDelegate|"
                      r"(?:Explicitly applied|Though) GPU delegate"),
    "nnapi": re.compile(r"Created TensorFlow Lite delegate for NNAPI|Replacing \d+ .*node\(s\) "
                        r"with delegate \(TfLiteNnapiDelegate|(?:Explicitly applied|Though) NNAPI delegate"),
}
_GPU_FAILURE = re.compile(r"No GPU detected|Failed to apply GPU delegate|"
                          r"TfLiteGpuDelegate Init: [^\n]*|OpenGL-based API disabled")


def delegate_not_applied(delegate, text):
    """Why a `gpu` / `nnapi` run did not use that delegate (None when the log shows it did,
    or for other delegates): unconsumed flags (a benchmark_model built without it), the
    delegate's own failure lines, or no line at all saying it was applied."""
    if delegate not in _EVIDENCE:
        return None
    text = _as_text(text)
    m = _UNCONSUMED.search(text)
    if m:
        flags = [f for f in m.group(1).split() if f.startswith(f"--use_{delegate}")
                 or f.startswith(f"--{delegate}_")]
        if flags:
            return (f"this benchmark_model has no {delegate.upper()} delegate (unconsumed flags: "
                    f"{' '.join(m.group(1).split())}); its timings would be CPU timings")
    if delegate == "gpu":
        failure = _GPU_FAILURE.search(text)
        if failure:
            return f"GPU delegate not applied: {failure.group(0).strip()}"
    if not _EVIDENCE[delegate].search(text):
        return (f"no line in the log shows the {delegate.upper()} delegate applied; the "
                "timings cannot be taken for its")
    return None


def _last_run(lines):
    """Lines of the last run when a log concatenates several `STARTING!` runs."""
    starts = [i for i, line in enumerate(lines) if _RE["starting"].match(_strip_prefixes(line)[0].strip())]
    if len(starts) <= 1:
        return lines
    first = starts[-1]
    if "--graph=" in lines[first - 1]:  # keep the run's command line (its flags)
        first -= 1
    return lines[first:]


def _strip_prefixes(line):
    is_error = bool(_ERROR_PREFIX.match(line))
    for _ in range(4):
        for prefix in _PREFIXES:
            new = prefix.sub("", line, count=1)
            if new != line:
                line = new
                break
        else:
            break
    return line, is_error


def _num(text):
    """C++ default float text -> int when integral, else float; nan/inf -> None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    if math.isnan(value) or math.isinf(value):
        return None
    if value.is_integer() and abs(value) < 1e15:
        return int(value)
    return value


def _ms_to_us(ms):
    return None if ms is None else _num(repr(round(ms * 1000.0, 3)))


def _read_line(state, body):
    if "\t" in body and state.table is not None and _read_table_row(state, body):
        return
    line = body.strip()
    if not line:
        state.table = None
        return
    for reader in (_read_profile_marker, _read_run_lines, _read_summaries, _read_memory,
                   _read_litert, _read_delegates, _read_params):
        if reader(state, line):
            return


def _read_profile_marker(state, line):
    if _RE["section_init"].match(line):
        state.section, state.table = "init", None
        return True
    if _RE["section_regular"].match(line):
        state.section, state.table = "regular", None
        return True
    m = _RE["table_title"].match(line)
    if m:
        state.table = (state.section or "regular", m.group(1))
        state.tables[state.table] = []
        return True
    m = _RE["nodes_executed"].match(line)
    if m:
        state.nodes_executed[state.section or "regular"] = int(m.group(1))
        state.table = None
        return True
    if line.startswith("Timings (microseconds):") or line.startswith("Memory (bytes):"):
        state.table = None  # the profiler's own stats, not the benchmark summary
        return True
    return False


def _read_table_row(state, body):
    cells = [c.strip() for c in body.split("\t")]
    cells = [c for c in cells if c != ""]
    if len(cells) < 2:
        return False
    state.tables[state.table].append(cells)
    return True


def _read_run_lines(state, line):
    if _RE["ran"].match(line):
        state.ran = True
    m = _RE["running"].match(line)
    if m:
        state.stage += 1
        key = "warmup_runs" if state.stage == 1 else "num_runs"
        state.f.put(key, int(m.group(1)), 1)
        return True
    m = _RE["count"].match(line)
    if m:
        values = {k: _num(v) for k, v in _RE["kv"].findall(m.group(2))}
        values["count"] = int(m.group(1))
        state.counts.append((state.stage if state.stage in (1, 2) else None, values))
        return True
    m = _RE["init_session"].match(line)
    if m:
        ms = _num(m.group(1))
        state.f.put("init_ms", ms, 1)
        state.f.put("init_us", _ms_to_us(ms), 1)
        return True
    m = _RE["model_size"].match(line)
    if m:
        state.f.put("model_size_mb", _num(m.group(1)), 2)
        return True
    return False


def _read_summaries(state, line):
    m = _RE["tf_summary"].search(line)
    if not m:
        return False
    pairs = {k: _num(v) for k, v in _RE["summary_kv"].findall(m.group(1))}
    f = state.f
    f.put("init_us", pairs.get("Init"), 3)
    f.put("first_inference_us", pairs.get("First inference"), 3)
    f.put("warmup_avg_us", pairs.get("Warmup (avg)", pairs.get("Warmup")), 3)
    avg = pairs.get("Inference (avg)", pairs.get("Inference", pairs.get("no stats")))
    f.put("inference_avg_us", avg, 3)
    apk = _RE["apk_memory"].search(m.group(1))
    if apk:
        f.put("peak_memory_mb", _num(apk.group(1)), 1)
    return True


def _read_memory(state, line):
    m = _RE["mem_pair"].match(line)
    if m:
        state.f.put("memory_init_mb", _num(m.group(1)), 2)
        state.f.put("memory_overall_mb", _num(m.group(2)), 2)
        return True
    m = _RE["mem_peak"].match(line) or _RE["rss_overall"].match(line)
    if m:
        state.f.put("peak_memory_mb", _num(m.group(1)), 2)
        return True
    return False


_LITERT_KEYS = {"Model initialization": "init_us", "Warmup (first)": "first_inference_us",
                "Warmup (avg)": "warmup_avg_us", "Inference (avg)": "inference_avg_us",
                "Inference (min)": "inference_min_us", "Inference (max)": "inference_max_us",
                "Inference (std)": "inference_std_us", "Init footprint": "memory_init_mb",
                "Overall footprint": "memory_overall_mb", "Peak memory": "peak_memory_mb"}


def _read_litert(state, line):
    if _RE["litert_block"].match(line):
        state.in_litert = True
        return True
    if not state.in_litert:
        return False
    m = _RE["litert_line"].match(line)
    if not m:
        return False
    label, value, runs = m.group(1), _num(m.group(2)), m.group(4)
    key = _LITERT_KEYS[label]
    if key.endswith("_us"):  # the block prints ms with 2 decimals (std has no unit, also ms)
        value = _ms_to_us(value)
    state.f.put(key, value, 1)
    if key == "init_us":
        state.f.put("init_ms", _num(m.group(2)), 0)
    if runs is not None:
        state.f.put("warmup_count" if label.startswith("Warmup") else "inference_count", int(runs), 1)
    return True


def _read_delegates(state, line):
    m = _RE["explicit"].search(line)
    if m:
        state.explicit.append((m.group(1), "complete" if m.group(2) == "completely" else "partial"))
        return True
    m = _RE["not_executed"].search(line)
    if m:
        state.explicit.append((m.group(1), "none"))
        return True
    m = _RE["replacing"].search(line)
    if m:
        total = int(m.group(2)) if m.group(2) else None
        state.replacing.append((m.group(3), int(m.group(1)), total, m.group(4) or "whole"))
        return True
    m = _RE["gpu_split"].search(line)
    if m:
        state.gpu_split = (int(m.group(1)), int(m.group(1)) + int(m.group(2)))
        return True
    if _RE["xnnpack_created"].search(line):
        state.xnnpack_created = True
        return True
    return False


def _read_params(state, line):
    m = _RE["version"].search(line)
    if m:
        state.f.put("runtime_version", m.group(1), 2)
        return True
    m = _RE["param"].match(line)
    if m:
        state.params[m.group(1).strip().lower()] = m.group(2).strip()
        return True
    if "--" in line:
        for name, value in _RE["cmd_flag"].findall(line):
            state.flags[name] = value
    return False


# ---------------------------------------------------------------------------- assembling

def _build(state):
    f = state.f
    _apply_counts(state)
    _apply_params(state)
    row = empty_result()
    for key in ("runtime_version", "threads", "warmup_runs", "num_runs", "init_us",
                "first_inference_us", "warmup_avg_us", "inference_avg_us", "inference_std_us",
                "inference_min_us", "inference_max_us", "inference_median_us", "inference_count",
                "memory_init_mb", "memory_overall_mb", "peak_memory_mb"):
        row[key] = f.get(key)
    row.update(_delegation(state))
    if row["delegate"] == "gpu":
        row["fallback_ops"] = state.gpu.get("fallback_ops") or []
        if row["delegation"] is None and state.gpu.get("executed"):
            row["delegation"] = state.gpu["executed"]
    profile = _op_profile(state)
    row["op_profile"] = profile["summary_by_node_type"]
    row["warmup_count"], row["model_size_mb"] = f.get("warmup_count"), f.get("model_size_mb")
    row["ok"], row["error"] = _outcome(state, row)
    init_ms = f.get("init_ms")
    if row["init_us"] is not None and (init_ms is None or f.prio("init_us") > 1):
        init_ms = _num(repr(row["init_us"] / 1000))  # the µs summary is the precise source
    details = {"warmup_count": f.get("warmup_count"), "num_threads": row["threads"],
               "init_ms": init_ms, "model_size_mb": f.get("model_size_mb"),
               "use_xnnpack": _use_xnnpack(state), **profile}
    return row, details


def _apply_counts(state):
    """Assign count= lines to warm-up / regular runs and fill the stats they give."""
    counts = state.counts
    if counts and all(stage is None for stage, _ in counts):
        # no "Running benchmark" lines (tail-only paste): last is regular, one before it warm-up
        counts = [(2, counts[-1][1])] + ([(1, counts[-2][1])] if len(counts) > 1 else [])
    f = state.f
    for stage, v in counts:
        single = v.get("curr") if v["count"] == 1 else None
        if stage == 1:
            f.put("warmup_count", v["count"], 2)
            f.put("first_inference_us", v.get("first", single), 1)
            f.put("warmup_avg_us", v.get("avg", single), 2)
        elif stage == 2:
            f.put("inference_count", v["count"], 2)
            f.put("inference_avg_us", v.get("avg", single), 2)
            f.put("inference_min_us", v.get("min", single), 2)
            f.put("inference_max_us", v.get("max", single), 2)
            f.put("inference_std_us", v.get("std"), 2)
            f.put("inference_median_us", v.get("median", v.get("p50", single)), 2)


def _int_or_none(text):
    value = _num(text)
    return value if isinstance(value, int) else None


def _apply_params(state):
    p, flags, f = state.params, state.flags, state.f
    f.put("threads", _int_or_none(flags.get("num_threads")), 0)
    f.put("threads", _int_or_none(p.get("#threads used for cpu inference")), 1)
    f.put("threads", _int_or_none(p.get("num threads")), 2)
    f.put("warmup_runs", _int_or_none(flags.get("warmup_runs")), 0)
    f.put("num_runs", _int_or_none(flags.get("num_runs")), 0)
    f.put("warmup_runs", _int_or_none(p.get("min warmup runs", p.get("warmup runs"))), 2)
    f.put("num_runs", _int_or_none(p.get("min num runs", p.get("num runs"))), 2)


def _flag_on(state, name):
    """True / False when the log echoes the flag (param echo or command line), else None."""
    value = state.params.get(f"use {name}", state.flags.get(f"use_{name}"))
    if value is None:
        return None
    return value.strip().lower() in ("1", "true")


def _use_xnnpack(state):
    echoed = _flag_on(state, "xnnpack")
    if echoed is not None:
        return echoed
    if state.xnnpack_created or any(_delegate_key(r[0]) == "xnnpack" for r in state.replacing):
        return True
    return None


def _delegate_key(name):
    return _DELEGATE_NAMES.get(re.sub(r"[^a-z0-9]", "", name.lower()))


def _pick_delegate(state):
    explicit = [(_delegate_key(n), n, s) for n, s in state.explicit]
    for key, name, status in explicit:
        if key != "xnnpack":
            return key, name, status
    if explicit:
        return explicit[0]
    for name in ("gpu", "nnapi", "xnnpack"):
        if _flag_on(state, name):
            return name, None, None
    for name, *_ in state.replacing:
        if _delegate_key(name) in ("gpu", "nnapi"):
            return _delegate_key(name), None, None
    if _use_xnnpack(state):
        return "xnnpack", None, None
    if state.ran or state.params:
        return "cpu", None, None
    return None, None, None


def _node_counts(state, key):
    groups = [r for r in state.replacing if _delegate_key(r[0]) == key]
    if not groups and state.replacing:  # unknown (vendor) delegate: the first one applied
        groups = [r for r in state.replacing if r[0] == state.replacing[0][0]]
    if groups:
        per_graph = {sub: (n, m) for _, n, m, sub in groups}  # last line per subgraph wins
        delegated = sum(n for n, _ in per_graph.values())
        totals = [m for _, m in per_graph.values()]
        return delegated, (sum(totals) if None not in totals else None)
    if state.gpu_split and key == "gpu":
        return state.gpu_split
    return None, None


def _delegation(state):
    key, _name, status = _pick_delegate(state)
    out = {"delegate": key if key in DELEGATES else None,
           "delegated_nodes": None, "total_nodes": None, "delegation": None}
    if key in (None, "cpu") and not state.explicit:
        return out
    delegated, total = _node_counts(state, key)
    out["delegated_nodes"], out["total_nodes"] = delegated, total
    out["delegation"] = status or delegation_state(delegated, total)
    return out


def _op_profile(state):
    summary = _summary_rows(state.tables.get(("regular", "Summary by node type"), []))
    top = _top_row(state.tables.get(("regular", "Top by Computation Time"), []))
    profiled = bool(state.tables) or _flag_value(state.params.get("enable op profiling"))
    return {"op_profiling": profiled,
            "profiling_nodes_executed": state.nodes_executed.get("regular"),
            "summary_by_node_type": summary or None,
            "top_by_computation_time_first": top,
            "run_order": _run_order_rows(state.tables.get(("regular", "Run Order"), [])) or None}


def _flag_value(text):
    return text is not None and text.strip().lower() in ("1", "true")


def _columns(header):
    return {re.sub(r"[\[\]]", "", c).strip().lower(): i for i, c in enumerate(header)}


def _cell(cells, cols, name, cast):
    i = cols.get(name)
    if i is None or i >= len(cells):
        return None
    value = _num(cells[i].rstrip("%"))
    return None if value is None else cast(value)


def _body(table):
    """(columns, cells) of each complete row of a profiling table ([] if it has no header)."""
    if not table or not table[0][0].startswith("["):
        return []
    cols = _columns(table[0])
    return [(cols, cells) for cells in table[1:] if len(cells) == len(table[0])]


def _summary_rows(table):
    return [{"node_type": cells[cols.get("node type", 0)],
             "count": _cell(cells, cols, "count", int),
             "avg_ms": _cell(cells, cols, "avg ms", float),
             "avg_pct": _cell(cells, cols, "avg %", float),
             "times_called": _cell(cells, cols, "times called", int)}
            for cols, cells in _body(table)]


_NODE_NAME = re.compile(r"^\[?(.*?)\]?(?::(\d+))?$", re.S)


def _run_order_rows(table):
    """Per-operator rows of a Run Order table (TF 1.x logs have no `:index` on names)."""
    rows = []
    for cols, cells in _body(table):
        name = cells[cols["name"]] if "name" in cols else ""
        m = _NODE_NAME.match(name)
        rows.append({"node_type": cells[cols.get("node type", 0)],
                     "avg_ms": _cell(cells, cols, "avg ms", float),
                     "first_ms": _cell(cells, cols, "first", float),
                     "times_called": _cell(cells, cols, "times called", int),
                     "name": m.group(1), "node_index": int(m.group(2)) if m.group(2) else None})
    return rows


def _top_row(table):
    if len(table) < 2 or not table[0][0].startswith("["):
        return None
    cols, cells = _columns(table[0]), table[1]
    if len(cells) != len(table[0]):
        return None
    name_i = cols.get("name")
    return {"node_type": cells[cols.get("node type", 0)],
            "avg_ms": _cell(cells, cols, "avg ms", float),
            "name": cells[name_i] if name_i is not None else None}


def _outcome(state, row):
    """(ok, error): a run is ok when it produced an inference average and nothing fatal."""
    fatal = any(_FATAL.search(text) for text, _ in state.lines)
    missing = delegate_not_applied(row["delegate"], "\n".join(t for t, _ in state.lines))
    if row["inference_avg_us"] is not None and not fatal and not missing:
        return True, None
    if missing and row["inference_avg_us"] is not None and not fatal:
        return False, missing
    return False, _error_text(state) or "no benchmark result in the log (no timing summary line)"


def _error_text(state):
    for pattern in _FAILURES:
        for text, is_error in state.lines:
            if pattern is None:
                hit = is_error and text and not _GENERIC_ERRORS.match(text) \
                    and "Average inference timings" not in text
            else:
                hit = bool(pattern.search(text))
            if hit:
                return text[:_MAX_ERROR_CHARS]
    return None
