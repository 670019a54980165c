"""Resuming a benchmark sweep: which configurations an output directory already measured.

A configuration is identified by its key: (model path, model sha256, target, serial, delegate,
threads, flags, cluster), where `flags` are the measurement settings of the sweep (runs,
seconds, op profiling, CPU mask, APK mode, and the trial settings that change a row: repeat,
cooldown, cooldown_temp and its timeout, temp_rise_c, sustained and its window) as sorted
`name=value` strings stored in every row, and `cluster` the CPU cluster of a
`--cpu-mask auto` row (None otherwise). A
configuration counts as measured when some row with its key has `ok: true`; failed rows
(device lost, delegate failure) are measured again on resume.

Public API:
    sweep_flags(target, **settings) -> list[str]
    config_key(row) -> tuple
    load_previous(out_dir) -> list[dict]           rows of out_dir/results.jsonl (ValueError
                                                   when there is no earlier sweep to resume)
    changed_models(rows, current) -> [(path, old_sha, new_sha)]
    table_rows(rows, stale=()) -> list[dict]       one row per configuration (the last ok row,
                                                   else the last one); rows of `stale`
                                                   (path, sha) pairs left out
"""
from pathlib import Path

from mobilekit.report.writers import read_jsonl

JSONL = "results.jsonl"

# Settings that change what a measurement means; all targets, then the adb-only ones.
_SETTINGS = ("warmup_runs", "warmup_min_secs", "num_runs", "min_secs", "max_secs", "op_profiling")
_ADB_SETTINGS = ("cpu_mask", "apk")
# Trial settings (issue 17, mobilekit.bench.trust / sustained): repeats, cooldowns, the
# unstable threshold and sustained mode change what a row holds (a setting that is off is
# passed as None by the sweep, so that e.g. --window alone does not re-measure).
_TRIAL_SETTINGS = ("repeat", "cooldown", "cooldown_temp", "cooldown_timeout", "temp_rise_c",
                   "sustained", "window")


def sweep_flags(target, **settings):
    """The sweep's measurement settings as sorted `name=value` strings (the `flags` column)."""
    names = _SETTINGS + _TRIAL_SETTINGS + (_ADB_SETTINGS if target == "adb" else ())
    missing = [n for n in names if n not in settings]
    if missing:
        raise TypeError(f"sweep_flags needs {', '.join(missing)}")
    return sorted(f"{n}={_text(settings[n])}" for n in names)


def _text(value):
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def config_key(row):
    """The identity of a row's configuration (see the module docstring)."""
    return (row.get("model_path"), row.get("model_sha256"), row.get("target"), row.get("serial"),
            row.get("delegate"), row.get("threads"), tuple(row.get("flags") or ()),
            row.get("cluster"))


def load_previous(out_dir):
    """Rows of an earlier sweep in out_dir; ValueError when there is none to resume."""
    out_dir = Path(out_dir)
    path = out_dir / JSONL
    if not out_dir.is_dir():
        raise ValueError(f"--resume needs the output directory of an earlier sweep; "
                         f"--out {str(out_dir)!r} does not exist")
    if not path.is_file():
        raise ValueError(f"--resume needs an earlier sweep's {JSONL}; {str(path)!r} does not exist")
    return read_jsonl(path)


def changed_models(rows, current):
    """Models measured before under the same path with other bytes: [(path, old, new)].

    current maps model path -> sha256 of the file now (None when it does not exist).
    """
    changed = {}
    for row in rows:
        path, old = row.get("model_path"), row.get("model_sha256")
        new = current.get(path)
        if path in current and old and new and old != new:
            changed.setdefault((path, old), (path, old, new))
    return list(changed.values())


def table_rows(rows, stale=()):
    """One row per configuration, in first-seen order: its last ok row, else its last row."""
    stale = set(stale)
    chosen = {}
    for row in rows:
        if (row.get("model_path"), row.get("model_sha256")) in stale:
            continue
        key = config_key(row)
        if key not in chosen or row.get("ok") or not chosen[key].get("ok"):
            chosen[key] = row
    return list(chosen.values())


def measured_keys(rows):
    return {config_key(r) for r in rows if r.get("ok")}
