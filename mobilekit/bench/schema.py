"""The one result schema: one JSON object per benchmarked configuration.

Times are microseconds (`*_us`), memory in MB. Missing values are None, never absent,
so every row of a sweep has the same columns.
"""
import datetime as _dt
import hashlib
import os

TIMING_KEYS = ("init_us", "first_inference_us", "warmup_avg_us", "inference_avg_us",
               "inference_std_us", "inference_min_us", "inference_max_us",
               "inference_median_us", "inference_count")
MEMORY_KEYS = ("memory_init_mb", "memory_overall_mb", "peak_memory_mb")
DELEGATES = ("cpu", "xnnpack", "gpu", "nnapi")
DELEGATION_STATES = ("complete", "partial", "none")

RESULT_KEYS = (
    # model
    "model_path", "model_sha256", "model_size_bytes",
    # target
    "target", "serial", "device",
    # runtime
    "runtime", "runtime_version", "delegate", "threads", "warmup_runs", "num_runs",
) + TIMING_KEYS + MEMORY_KEYS + (
    "delegated_nodes", "total_nodes", "delegation", "fallback_ops", "gpu_adapter", "op_profile",
    "ok", "error", "raw_log_path", "timestamp",
    # sweep bookkeeping: measurement settings (resume key), runs started, failed tries/waits
    "flags", "attempts", "attempt_log",
)

# Issue 17: what a reader needs to judge a number (see mobilekit.bench.trust / device_state).
TRUST_KEYS = (
    # printed by benchmark_model, dropped before
    "warmup_count", "model_size_mb",
    # how it ran: the full flag list (`flags` above are the sweep's settings, the resume key),
    # binary identity, CPU placement
    "run_flags", "binary_sha256", "binary_version", "cpu_mask", "cluster",
    # device state read before and after the configuration (mobilekit.bench.device_state)
    "emulator", "state_before", "state_after",
    # repeated trials (--repeat): per-repeat medians, 95 % bootstrap interval, spread, flags
    "repeats", "repeat_medians_us", "median_ci_low_us", "median_ci_high_us", "cv",
    "unstable", "unstable_reasons", "notes",
    # --sustained: latency, temperature and frequencies per window (mobilekit.bench.sustained)
    "sustained",
)
RESULT_KEYS += TRUST_KEYS

DEVICE_KEYS = ("manufacturer", "model", "board", "soc", "abi", "android_version", "fingerprint")


def empty_result(**fields):
    """A result row with every schema key present (None where unknown)."""
    row = {key: None for key in RESULT_KEYS}
    row["ok"] = False
    row["timestamp"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    unknown = set(fields) - set(RESULT_KEYS)
    if unknown:
        raise KeyError(f"not result-schema keys: {sorted(unknown)}")
    row.update(fields)
    return row


def file_sha256(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def model_fields(path):
    """model_path / model_sha256 / model_size_bytes of a model file."""
    return {"model_path": os.fspath(path), "model_sha256": file_sha256(path),
            "model_size_bytes": os.path.getsize(path)}


def delegation_state(delegated_nodes, total_nodes):
    if delegated_nodes is None or total_nodes is None:
        return None
    if delegated_nodes <= 0:
        return "none"
    return "complete" if delegated_nodes >= total_nodes else "partial"
