"""Benchmark sweeps: every model x delegate x thread count, one result row each.

Targets: `host` (in-process LiteRT, mobilekit.bench.host), `local` (benchmark_model on this
Linux host) and `adb` (benchmark_model on an Android device); the last two use
mobilekit.bench.benchmark_model. A configuration that fails becomes a row with `ok: False`
and its error; the sweep always goes on.

Files in the output directory:
  results.jsonl  one row per line, appended and flushed as each configuration finishes
                 (an existing file from an earlier sweep is first renamed results.<time>.jsonl,
                 unless the sweep resumes it: then the new rows are appended)
  results.csv    one row per configuration (the result schema), written at the end, also
                 after Ctrl-C
  results.md     the human table (ms, 95 % interval, FPS, speed-up, GMAC/s, size, delegation,
                 CV, temperatures, stability, status); one section per device when rows come
                 from several

Trust (issue 17, mobilekit.bench.trust): every row carries the device state read before and
after it, `repeat` runs merged into a median with a 95 % interval and a CV, and an
`unstable` flag with its reasons; `cpu_mask="auto"` (adb) runs each CPU cluster and all cores
(per device: each phone's own clusters).

Resuming (mobilekit.bench.resume), several phones and device loss (mobilekit.bench.fleet):
see run_sweep. Host and local configurations never run concurrently (they would share cores).
"""
import functools
import json
import math
import os
import re
import threading
import time
from pathlib import Path

from mobilekit.bench import resume as resume_mod
from mobilekit.bench.schema import DELEGATES, RESULT_KEYS, empty_result, file_sha256, model_fields
from mobilekit.errors import check_choice, unknown_name
from mobilekit.report.tables import format_table
from mobilekit.report.writers import (_md_cell, append_jsonl, write_atomic, write_csv,
                                      write_markdown_table)

__all__ = ["TARGETS", "run_sweep", "export_report_info", "summary_table", "write_summary",
           "delegates_for"]

TARGETS = ("host", "local", "adb")
JSONL, CSV, MARKDOWN = "results.jsonl", "results.csv", "results.md"
TABLE_HEADERS = ("model", "delegate", "threads", "cpu", "median ms", "95% CI ms", "avg ms", "FPS",
                 "speed-up", "GMAC/s", "size MB", "delegation", "CV %", "CPU °C", "stable",
                 "status")
_MAX_STATUS_CHARS = 120


def delegates_for(target):
    check_choice("target", target, TARGETS)
    if target == "host":
        from mobilekit.bench.host import HOST_DELEGATES
        return HOST_DELEGATES
    return DELEGATES


def run_sweep(models, target="host", delegates=("xnnpack",), threads=(1,), *, warmup_runs=1,
              warmup_min_secs=0.5, num_runs=50, min_secs=1.0, max_secs=150.0, op_profiling=False,
              benchmark_binary=None, serial=None, cpu_mask=None, apk=False, adb_path=None,
              out_dir="bench_results", on_start=None, on_row=None, resume=False, retries=1,
              wait_device=60.0, on_note=None, repeat=1, cooldown=0.0, cooldown_temp=None,
              cooldown_timeout=600.0, temp_rise_c=5.0, read_state=None, sustained=None,
              window=10.0):
    """Run the matrix; return the table rows. Writes results.jsonl as it goes, then .csv and .md.

    on_start(index, total, model, delegate, threads, serial=None), on_row(index, total, row)
    and on_note(text) are optional progress callbacks.

    resume: keep out_dir/results.jsonl and skip the configurations it already measured
    (mobilekit.bench.resume); the tables then cover every row. adb only: `serial` is one
    serial, "A,B,C" or "all" (one worker per device, in parallel); retries / wait_device:
    see mobilekit.bench.fleet. Host and local configurations always run one after another.

    repeat / cooldown / cooldown_temp / cooldown_timeout / temp_rise_c:
    mobilekit.bench.trust.Trials (one per device); read_state() -> snapshot overrides the
    target's reader (mobilekit.bench.device_state). sustained (minutes) / window (seconds):
    mobilekit.bench.sustained, one benchmark run per window instead of repeats.

    Ctrl-C (KeyboardInterrupt): the current configuration is abandoned (ended on the device
    too), the tables are written for the rows done and SweepInterrupted is raised.
    """
    from mobilekit.bench.trust import check_trial_args

    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise ValueError(f"retries must be an integer >= 0; got {retries!r}")
    if wait_device is None or not wait_device >= 0:
        raise ValueError(f"wait_device must be a number of seconds >= 0; got {wait_device!r}")
    check_trial_args(repeat, cooldown, cooldown_temp, cooldown_timeout, temp_rise_c)
    if sustained is not None:
        if repeat > 1:
            raise ValueError("--sustained runs one long trial per configuration; drop --repeat")
        from mobilekit.bench.sustained import Sustained

        Sustained(None, None, sustained, window)   # ValueError for a bad period or window
    cpu_mask = check_cpu_mask(cpu_mask, target, apk)
    configs = _configs(models, target, delegates, threads)
    out_dir = Path(out_dir)
    previous = resume_mod.load_previous(out_dir) if resume else []
    trial = dict(repeat=repeat, cooldown=cooldown, cooldown_temp=cooldown_temp,
                 cooldown_timeout=cooldown_timeout, temp_rise_c=temp_rise_c,
                 sustained=sustained, window=window)
    flags = resume_mod.sweep_flags(target, warmup_runs=warmup_runs,
                                   warmup_min_secs=warmup_min_secs, num_runs=num_runs,
                                   min_secs=min_secs, max_secs=max_secs,
                                   op_profiling=op_profiling, cpu_mask=cpu_mask, apk=apk,
                                   **_trial_settings(**trial))
    serials = [None]
    if target == "adb":
        from mobilekit.bench.fleet import resolve_serials
        serials = resolve_serials(serial, adb_path)
    readers = {s: read_state or _state_reader(target, adb_path, s) for s in serials}
    placed = {s: _placed(configs, cpu_mask, readers[s]) for s in serials}
    hashes = {m: _sha256_or_none(m) for m in dict.fromkeys(c[0] for c in configs)}
    stale = []
    if resume:
        for path, old, new in resume_mod.changed_models(previous, hashes):
            stale.append((path, old))
            _say(on_note, f"{Path(path).name} changed since it was measured in {out_dir / JSONL} "
                          f"(sha256 {old[:12]} then, {new[:12]} now): measuring it again")
    done = resume_mod.measured_keys(previous)
    plans = {s: [c for c in placed[s]
                 if _planned_key(c, hashes, target, s, flags) not in done] for s in serials}
    total = sum(len(p) for p in plans.values())
    if resume:
        planned = sum(len(p) for p in placed.values())
        _say(on_note, f"resume: {planned - total} of {planned} configurations "
                      f"already measured in {out_dir / JSONL}; {total} to measure")
    jsonl = out_dir / JSONL
    if resume:
        jsonl.touch()
    else:
        _fresh_jsonl(jsonl)
    new_rows, counter, lock = [], [0], threading.Lock()

    def emit(row):
        with lock:
            row = dict(row, flags=list(flags))
            append_jsonl(jsonl, row)
            new_rows.append(row)
            counter[0] += 1
            if on_row:
                on_row(counter[0], total, row)

    def start(config, device_serial=None):
        if on_start:
            on_start(min(counter[0] + 1, total), total, *config[:3], serial=device_serial)

    common = dict(warmup_runs=warmup_runs, warmup_min_secs=warmup_min_secs, num_runs=num_runs,
                  min_secs=min_secs, max_secs=max_secs, op_profiling=op_profiling,
                  binary=benchmark_binary, cpu_mask=cpu_mask, apk=apk, adb_path=adb_path,
                  log_dir=out_dir / "logs")
    run_flags = _host_flags(target, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs)
    interrupted = False
    try:
        if target == "adb":
            _run_adb_devices(serials, plans, target, common, retries, wait_device, emit, start,
                             on_note, readers, trial)
        else:
            trials = _trials(_runner(target, **common),
                             _runner(target, **_window_settings(common, window)),
                             readers[None], trial)
            for config in plans[None]:
                model, delegate, n_threads, where = config
                start(config)
                row = _safe_run(trials, model, target, delegate, n_threads, warmup_runs,
                                num_runs)
                row = _placed_row(row, where, cpu_mask, run_flags(delegate, n_threads))
                emit(dict(row, attempts=1, attempt_log=[]))
    except KeyboardInterrupt:
        interrupted = True
    rows = resume_mod.table_rows(previous + new_rows, stale)
    order = {}   # tables in configuration (and placement) order
    for config in (c for s in serials for c in placed[s]):
        order.setdefault(_order_key(*config[:3], (config[3] or {}).get("cluster")), len(order))
    rows.sort(key=lambda r: order.get(_order_key(r.get("model_path"), r.get("delegate"),
                                                 r.get("threads"), r.get("cluster")), len(order)))
    write_summary(rows, out_dir)
    if interrupted:
        raise SweepInterrupted(rows, len(new_rows), total, out_dir)
    return rows


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C ended a sweep early; the tables hold the rows done. Resume with resume=True."""

    def __init__(self, rows, done, total, out_dir):
        super().__init__(f"sweep interrupted after {done} of {total} configurations")
        self.rows, self.done, self.total, self.out_dir = rows, done, total, Path(out_dir)


def _say(on_note, text):
    if on_note:
        on_note(text)


def _sha256_or_none(path):
    try:
        return file_sha256(path)
    except OSError:
        return None


def _planned_key(config, hashes, target, serial, flags):
    model, delegate, threads, where = config
    return resume_mod.config_key({"model_path": model, "model_sha256": hashes.get(model),
                                  "target": target, "serial": serial, "delegate": delegate,
                                  "threads": threads, "flags": flags,
                                  "cluster": (where or {}).get("cluster")})


def _order_key(model, delegate, threads, cluster):
    return model, delegate, threads, cluster


def _trial_settings(repeat, cooldown, cooldown_temp, cooldown_timeout, temp_rise_c, sustained,
                    window):
    """The trial settings that change a row (resume key); a setting that is off has no say."""
    return dict(repeat=repeat, cooldown=cooldown, cooldown_temp=cooldown_temp,
                cooldown_timeout=cooldown_timeout if cooldown_temp is not None else None,
                temp_rise_c=temp_rise_c, sustained=sustained,
                window=window if sustained is not None else None)


def _window_settings(common, window):
    """The runner settings of one --sustained window: exactly `window` seconds, no warm-up."""
    return dict(common, warmup_runs=0, warmup_min_secs=0.0, num_runs=1, min_secs=window,
                max_secs=window)


def _trials(run_once, run_window, read_state, trial, sleep=time.sleep):
    """Trials (repeats, cooldowns, state) or Sustained around the one-run functions."""
    if trial["sustained"] is not None:
        from mobilekit.bench.sustained import Sustained

        return Sustained(run_window, read_state, trial["sustained"], trial["window"],
                         temp_rise_c=trial["temp_rise_c"])
    from mobilekit.bench.trust import Trials

    return Trials(run_once, read_state, trial["repeat"], trial["cooldown"],
                  trial["cooldown_temp"], trial["cooldown_timeout"], trial["temp_rise_c"],
                  sleep=sleep)


def _placed_row(row, where, cpu_mask, run_flags):
    """The row with its CPU placement and, where the runner kept none, its run flags."""
    return dict(row, cpu_mask=(where or {}).get("cpu_mask", cpu_mask),
                cluster=(where or {}).get("cluster"),
                run_flags=row.get("run_flags") or run_flags)


def _run_adb_devices(serials, plans, target, common, retries, wait_device, emit, start, on_note,
                     readers, trial):
    """One worker per device (mobilekit.bench.fleet), each with its own adb session and its
    own Trials (cooldowns and state readings are per phone)."""
    from mobilekit.bench import benchmark_model as bm
    from mobilekit.bench.fleet import run_devices

    binary = common["binary"] or os.environ.get(bm.ENV_BINARY) or None
    per_device, lock = {}, threading.Lock()

    def runner(adb, cancel, settings):
        extra = (f"--warmup_min_secs={settings['warmup_min_secs']:g}",
                 f"--max_secs={settings['max_secs']:g}")
        return lambda m, d, t, mask=common["cpu_mask"]: bm.run_adb(
            m, binary, d, t, num_runs=settings["num_runs"], warmup_runs=settings["warmup_runs"],
            min_secs=settings["min_secs"], op_profiling=settings["op_profiling"],
            extra_flags=extra, serial=adb.requested, cpu_mask=mask,
            apk=common["apk"], adb=adb, log_dir=common["log_dir"], cancel=cancel,
            progress=len(serials) == 1)   # several phones: no interleaved status lines

    def trials_of(adb, cancel):
        with lock:
            if adb.requested not in per_device:
                per_device[adb.requested] = _trials(
                    runner(adb, cancel, common),
                    runner(adb, cancel, _window_settings(common, trial["window"])),
                    readers.get(adb.requested) or readers[serials[0]], trial,
                    sleep=cancel.wait)   # a cooldown ends at once on Ctrl-C
            return per_device[adb.requested]

    def run_one(config, adb, cancel):
        model, delegate, threads, where = config
        trials = trials_of(adb, cancel)
        run = functools.partial(trials, mask=where["cpu_mask"]) if where else trials
        row = _safe_run(run, model, target, delegate, threads, common["warmup_runs"],
                        common["num_runs"])
        return _placed_row(row, where, common["cpu_mask"], None)

    def lost_row(config, serial, adb, error):
        model, delegate, threads, where = config
        fields = {"model_path": model}
        if os.path.isfile(model):
            fields = model_fields(model)
        device = adb.known_fingerprint()
        row = empty_result(**fields, target=target, serial=serial, device=device,
                           runtime=bm.RUNTIME_APK if common["apk"] else bm.RUNTIME,
                           delegate=delegate, threads=threads,
                           warmup_runs=common["warmup_runs"], num_runs=common["num_runs"],
                           ok=False, error=error)
        return _placed_row(row, where, common["cpu_mask"], None)

    run_devices({s: plans[s] for s in serials}, run_one, adb_path=common["adb_path"],
                retries=retries, wait_device=wait_device, emit=emit, cancel=threading.Event(),
                on_start=start, on_note=on_note, lost_row=lost_row)


def write_summary(rows, out_dir):
    """results.csv (schema columns) and results.md (human table, one per device), atomic."""
    out_dir = Path(out_dir)
    write_csv(out_dir / CSV, rows, columns=RESULT_KEYS)
    groups = device_groups(rows)
    if len(groups) <= 1:
        headers, cells, notes = summary_table(rows)
        write_markdown_table(out_dir / MARKDOWN, headers, cells, title="mobilekit bench results",
                             notes=notes)
    else:
        write_atomic(out_dir / MARKDOWN, markdown_by_device(groups))
    return out_dir / CSV, out_dir / MARKDOWN


def device_groups(rows):
    """[(title, rows)] per device, ordered by serial."""
    groups = {}
    for row in rows:
        groups.setdefault(row.get("serial"), []).append(row)
    return [(device_title(serial, groups[serial]), groups[serial])
            for serial in sorted(groups, key=lambda s: (s is not None, str(s)))]


def device_title(serial, rows):
    """`SERIAL: Google Pixel 7 (GS201), Android 14` from the rows' device fingerprint."""
    device = next((r["device"] for r in rows if isinstance(r.get("device"), dict)), None) or {}
    name = " ".join(str(device[k]) for k in ("manufacturer", "model") if device.get(k))
    if device.get("soc"):
        name += f" ({device['soc']})"
    if device.get("android_version"):
        name += f", Android {device['android_version']}"
    label = serial or rows[0].get("target") or "?"
    return f"{label}: {name.strip()}" if name.strip() else str(label)


def markdown_by_device(groups):
    """The markdown document with one section (table + notes) per device."""
    parts = ["# mobilekit bench results\n"]
    for title, group in groups:
        headers, cells, notes = summary_table(group)
        cells = [[None if c is None else _md_cell(c) for c in row] for row in cells]
        parts.append(f"## {title}\n\n" + format_table(headers, cells, markdown=True) + "\n\n"
                     + "".join(f"- {n}\n" for n in notes))
    return "\n".join(parts)


# ---------------------------------------------------------------- configurations


def _configs(models, target, delegates, threads):
    if not models:
        raise ValueError("no models given; pass one or more .tflite files")
    accepted = delegates_for(target)
    for delegate in delegates:
        if delegate not in accepted:
            raise unknown_name(f"delegate for target {target}", delegate, accepted)
    for n in threads:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"threads must be integers >= 1; got {n!r}")
    # Absolute paths: results (and the X.json lookups behind the table and plots) must still
    # resolve when read from another directory later.
    paths = [os.path.abspath(os.path.expanduser(os.fspath(m))) for m in models]
    return [(m, d, t) for m in paths for d in delegates for t in threads]


def _fresh_jsonl(path):
    """Keep an earlier sweep's rows: rename its results.jsonl aside instead of appending."""
    if path.exists() and path.stat().st_size > 0:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(path.stat().st_mtime))
        aside = path.with_name(f"results.{stamp}.jsonl")
        n = 1
        while aside.exists():
            aside = path.with_name(f"results.{stamp}-{n}.jsonl")
            n += 1
        os.replace(path, aside)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    return path


def _runner(target, *, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs, op_profiling,
            binary, log_dir, **_adb_only):
    """A function (model, delegate, threads) -> row for the host or local target."""
    if target == "host":
        from mobilekit.bench.host import run_host

        return lambda model, delegate, threads: run_host(
            model, delegate, threads, warmup_runs=warmup_runs, warmup_min_secs=warmup_min_secs,
            num_runs=num_runs, min_secs=min_secs, max_secs=max_secs, op_profiling=op_profiling)
    from mobilekit.bench import benchmark_model as bm

    binary = binary or os.environ.get(bm.ENV_BINARY) or None
    extra = (f"--warmup_min_secs={warmup_min_secs:g}", f"--max_secs={max_secs:g}")
    return lambda model, delegate, threads: bm.run_local(
        model, binary, delegate, threads, num_runs=num_runs, warmup_runs=warmup_runs,
        min_secs=min_secs, op_profiling=op_profiling, extra_flags=extra, log_dir=log_dir)


# ---------------------------------------------------------------- state, CPU placement


def check_cpu_mask(cpu_mask, target, apk=False):
    """None, "auto" or a hex mask; ValueError for anything else (or a mask off adb)."""
    if cpu_mask is None or str(cpu_mask).strip() == "":
        return None
    cpu_mask = str(cpu_mask).strip().lower()
    if cpu_mask != "auto" and (not re.fullmatch(r"(0x)?[0-9a-f]+", cpu_mask)
                               or int(cpu_mask, 16) == 0):
        raise ValueError(f"--cpu-mask must be 'auto' (every CPU cluster, then all cores) or a "
                         f"non-zero hex CPU mask such as f0; got {cpu_mask!r}")
    if target != "adb":
        raise ValueError(f"--cpu-mask needs --target adb (taskset on the device); got target "
                         f"{target!r}")
    if apk:
        raise ValueError("--cpu-mask cannot be used with --apk (the APK runs as an Activity)")
    return cpu_mask


def _state_reader(target, adb_path, serial):
    from mobilekit.bench import device_state as ds

    if target != "adb":
        return ds.host_state
    from mobilekit.bench.benchmark_model import Adb

    session = {}

    def read():   # its own Adb session: reading state must never disturb the runs' one
        if "adb" not in session:
            session["adb"] = Adb(adb_path, serial)
        return ds.adb_state(session["adb"])

    return read


def _placed(configs, cpu_mask, read_state):
    """(model, delegate, threads, where): where None, or {cluster, cpu_mask} for "auto"."""
    if cpu_mask != "auto":
        return [(*c, None) for c in configs]
    from mobilekit.bench.device_state import placements

    state = read_state() or {}
    threads = sorted({t for _, _, t in configs})
    models = list(dict.fromkeys((m, d) for m, d, _ in configs))
    return [(m, d, t, {"cluster": name, "cpu_mask": mask})
            for name, mask, fits in placements(state, threads) for m, d in models for t in fits]


def _host_flags(target, warmup_runs, warmup_min_secs, num_runs, min_secs, max_secs):
    """The host runner's settings as a `run_flags` list (benchmark_model rows carry their own)."""
    def flags(delegate, threads):
        if target != "host":
            return None
        return [f"--delegate={delegate}", f"--threads={threads}", f"--warmup_runs={warmup_runs}",
                f"--warmup_min_secs={warmup_min_secs:g}", f"--num_runs={num_runs}",
                f"--min_secs={min_secs:g}", f"--max_secs={max_secs:g}"]

    return flags


def _safe_run(run_one, model, target, delegate, threads, warmup_runs, num_runs):
    """run_one, with any exception turned into an ok=False row (the sweep never aborts)."""
    try:
        return run_one(model, delegate, threads)
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return empty_result(model_path=model, target=target, delegate=delegate,
                            threads=threads, warmup_runs=warmup_runs, num_runs=num_runs,
                            ok=False, error=f"{type(exc).__name__}: {text}"[:500])


# ---------------------------------------------------------------- export report + table


def export_report_info(model_path):
    """{"macs", "accuracy", "quant"} from the export report `X.json` beside `X.tflite`
    (None where absent).

    macs: the report's `macs` (or `profile.macs`); accuracy: its `eval` top-1 (`top1`,
    `top_1`, `top1_accuracy` or `accuracy`; `eval` may also be the number itself).
    """
    info = {"macs": None, "accuracy": None, "quant": None}
    report = Path(model_path).with_suffix(".json")
    try:
        data = json.loads(report.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return info
    if not isinstance(data, dict):
        return info
    macs = data.get("macs")
    if macs is None and isinstance(data.get("profile"), dict):
        macs = data["profile"].get("macs")
    info["macs"] = _number(macs)
    info["quant"] = data.get("quant") if isinstance(data.get("quant"), str) else None
    evaluation = data.get("eval")
    if isinstance(evaluation, dict):
        for key in ("top1", "top_1", "top1_accuracy", "accuracy"):
            if _number(evaluation.get(key)) is not None:
                info["accuracy"] = _number(evaluation[key])
                break
    else:
        info["accuracy"] = _number(evaluation)
    return info


def _number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def summary_table(rows, infos=None):
    """(headers, cells, notes) of the human table; times in ms.

    speed-up is relative to the first successful row; GMAC/s needs `macs` in the export
    report beside the model (`infos` maps model_path -> export_report_info, read if None).
    """
    if infos is None:
        infos = {r["model_path"]: export_report_info(r["model_path"]) for r in rows
                 if r.get("model_path")}
    base_row = next((r for r in rows if r.get("ok") and r.get("inference_median_us")), None)
    cells = [_table_row(r, base_row, infos.get(r.get("model_path"), {})) for r in rows]
    return list(TABLE_HEADERS), cells, _notes(rows, base_row)


def _table_row(row, base_row, info):
    median = row.get("inference_median_us") if row.get("ok") else None
    avg = row.get("inference_avg_us") if row.get("ok") else None
    macs = info.get("macs")
    speedup = (base_row["inference_median_us"] / median) if median and base_row else None
    size = row.get("model_size_bytes")
    return [Path(row.get("model_path") or "?").name, row.get("delegate"), row.get("threads"),
            row.get("cluster") or row.get("cpu_mask"),
            _num(median and median / 1e3), _ci_text(row), _num(avg and avg / 1e3),
            _num(median and 1e6 / median), _speedup_text(speedup, row, base_row),
            _num(macs / median / 1e3 if macs and median else None),
            _num(size and size / 1e6), _delegation_text(row),
            None if row.get("cv") is None else f"{row['cv'] * 100:.1f}",
            _temps_text(row), _stable_text(row), _status(row)]


def _ci_text(row):
    low, high = row.get("median_ci_low_us"), row.get("median_ci_high_us")
    if not row.get("ok") or low is None or high is None:
        return None
    return f"{_num(low / 1e3)}-{_num(high / 1e3)}"


def _speedup_text(speedup, row, base_row):
    """x-fold speed-up; with its interval and verdict when both rows have repeats."""
    if speedup is None:
        return None
    text = f"{_num(speedup)}x"
    if row is base_row:
        return text
    from mobilekit.bench.compare import row_samples
    from mobilekit.bench.stats import compare_samples

    a, b = row_samples(base_row), row_samples(row)
    if len(a) >= 2 and len(b) >= 2:
        c = compare_samples(a, b)
        text += f" [{c['ci_low']:.2f}, {c['ci_high']:.2f}] {c['verdict']}"
    return text


def _temps_text(row):
    from mobilekit.bench.device_state import hottest_cpu_c

    before, after = (hottest_cpu_c(row.get(k) or {}) for k in ("state_before", "state_after"))
    if before is None and after is None:
        return None
    show = lambda t: "?" if t is None else f"{t:.0f}"   # noqa: E731
    return f"{show(before)}->{show(after)}"


def _stable_text(row):
    if row.get("emulator"):
        prefix = "EMULATOR "
    else:
        prefix = ""
    if row.get("unstable") is None:
        return (prefix + "-").strip() if prefix else None
    if not row["unstable"]:
        return prefix + "stable"
    reasons = "; ".join(row.get("unstable_reasons") or [])
    return (prefix + "UNSTABLE: " + reasons)[:_MAX_STATUS_CHARS]


def _num(value):
    """Human number: 2 decimals from 1 up (1 from 100 up), 3 significant digits below 1."""
    if value is None:
        return None
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}" if value else "0"


def _delegation_text(row):
    state = row.get("delegation")
    if state is None:
        return None
    if row.get("delegated_nodes") is None or row.get("total_nodes") is None:
        return state
    return f"{state} {row['delegated_nodes']}/{row['total_nodes']}"


def _status(row):
    if row.get("ok"):
        return "ok"
    text = " ".join(str(row.get("error") or "failed").split())
    return ("error: " + text)[:_MAX_STATUS_CHARS]


def _notes(rows, base_row):
    notes = []
    if base_row is not None:
        notes.append(f"speed-up: median latency of the first successful row "
                     f"({Path(base_row['model_path']).name}, {base_row['delegate']}, "
                     f"{base_row['threads']} thread(s)) divided by each row's median")
    notes.append("GMAC/s: MACs from the export report (X.json beside X.tflite) / median "
                 "latency; blank when the report has no `macs`")
    targets = sorted({str(r.get("target")) for r in rows if r.get("target")})
    versions = sorted({f"{r.get('runtime')} {r.get('runtime_version') or ''}".strip()
                       for r in rows if r.get("runtime")})
    if targets:
        notes.append(f"target: {', '.join(targets)}; runtime: {', '.join(versions) or '-'}")
    if "host" in targets:
        notes.append("host rows: in-process LiteRT on this machine, not phone numbers")
    if any(r.get("emulator") for r in rows):
        notes.append("EMULATOR rows: timings are the host CPU's through virtualisation, "
                     "not a phone's")
    if any((r.get("repeats") or 1) > 1 for r in rows):
        notes.append("95% CI ms: percentile bootstrap of the median over repeats; CV: across "
                     "repeats (else within the one run); speed-up [interval] verdict when both "
                     "rows have repeats")
    if any(r.get("unstable") for r in rows):
        notes.append("UNSTABLE: CV > 5 %, a CPU frequency changed, a dynamic governor, a "
                     "temperature rise or thermal status during timing (reasons in the row)")
    for r in rows:
        summary = r.get("sustained") or {}
        if r.get("ok") and summary.get("steady_median_us") and summary.get("first_minute_median_us"):
            notes.append(f"sustained {Path(r['model_path']).name} {r['delegate']} t{r['threads']}: "
                         f"first minute {summary['first_minute_median_us'] / 1e3:.2f} ms, steady "
                         f"state {summary['steady_median_us'] / 1e3:.2f} ms "
                         f"({summary['slowdown']:.2f}x) over {len(summary['windows'])} windows")
    failed = sum(not r.get("ok") for r in rows)
    notes.append(f"{len(rows) - failed} of {len(rows)} configurations succeeded")
    return notes
