"""A/B comparisons with an interval and a verdict (`mobilekit bench-compare`).

Two kinds of input:

* two result sets (results.jsonl files, or sweep directories holding one): rows are matched
  by (model file name, delegate, threads, cpu_mask); when no model name is common to both
  sets (fp32 sweep vs int8 sweep) by (delegate, threads, cpu_mask) alone. The samples of a
  configuration are its per-repeat medians (`repeat_medians_us`, from `--repeat R`), else
  each matching row's median (several rows when run_sweep.sh repeated it), so an interval
  needs at least 2 runs a side;
* two .tflite models, measured now: on the host round-robin (`interleaved_times`: one
  invoke of A, one of B, per round; paired bootstrap over rounds), on a device or with a
  local benchmark_model by alternating A and B runs (A, B, A, B, ...; one sample per run).
  The host's speed-up is the median of the per-round ratios (see mobilekit.bench.stats).

Statistics: mobilekit.bench.stats (speed-up of B over A = median(A) / median(B)).
"""
import json
from pathlib import Path

from mobilekit.bench.stats import CONFIDENCE, NO_DIFFERENCE, compare_samples
from mobilekit.report.writers import read_jsonl

__all__ = ["load_result_set", "compare_result_sets", "compare_models", "row_samples",
           "COMPARE_HEADERS", "compare_table"]

COMPARE_HEADERS = ("A", "B", "delegate", "threads", "cpu", "A ms", "B ms", "speed-up B/A",
                   "CI", "runs A/B", "verdict")


def load_result_set(path):
    """Rows of a result set: a .jsonl file, a JSON list, or a directory with results.jsonl."""
    path = Path(path)
    if path.is_dir():
        if not (path / "results.jsonl").is_file():
            raise FileNotFoundError(f"{str(path)!r} has no results.jsonl (is it a `mobilekit bench` "
                                    "--out directory?)")
        path = path / "results.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"result set {str(path)!r} does not exist")
    if path.suffix == ".json":
        rows = json.loads(path.read_text(encoding="utf-8"))
        rows = rows if isinstance(rows, list) else [rows]
    else:
        rows = read_jsonl(path)
    if not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{str(path)!r} does not hold result rows (JSON objects)")
    return rows


def row_samples(row):
    """Per-run medians (µs) of one ok row: its repeats, else its one median (or average)."""
    if not row.get("ok"):
        return []
    repeats = [v for v in (row.get("repeat_medians_us") or []) if v]
    if repeats:
        return repeats
    value = row.get("inference_median_us") or row.get("inference_avg_us")
    return [value] if value else []


def _model_name(row):
    return Path(row.get("model_path") or "?").name


def _key(row, with_model):
    base = (row.get("delegate"), row.get("threads"), row.get("cluster") or row.get("cpu_mask"))
    return ((_model_name(row),) + base) if with_model else base


def _group(rows, with_model):
    groups = {}
    for row in rows:
        entry = groups.setdefault(_key(row, with_model), {"rows": [], "samples": []})
        entry["rows"].append(row)
        entry["samples"] += row_samples(row)
    return groups


def compare_result_sets(rows_a, rows_b, confidence=CONFIDENCE):
    """One comparison dict per configuration present in both sets (see compare_samples)."""
    with_model = bool({_model_name(r) for r in rows_a} & {_model_name(r) for r in rows_b})
    groups_a, groups_b = _group(rows_a, with_model), _group(rows_b, with_model)
    out = []
    for key, a in groups_a.items():
        b = groups_b.get(key)
        if b is None:
            continue
        result = _compare(a["samples"], b["samples"], False, confidence)
        first_a, first_b = a["rows"][0], b["rows"][0]
        result.update(a=_model_name(first_a), b=_model_name(first_b),
                      delegate=first_a.get("delegate"), threads=first_a.get("threads"),
                      cpu=first_a.get("cluster") or first_a.get("cpu_mask"))
        out.append(result)
    if not out:
        raise ValueError("the two result sets have no configuration in common (matched on "
                         "delegate, threads and cpu mask, and the model name when one is shared)")
    return out


def _compare(a, b, paired, confidence):
    if not a or not b:
        result = {"n_a": len(a), "n_b": len(b), "median_a_us": None, "median_b_us": None,
                  "speedup": None, "ci_low": None, "ci_high": None, "paired": paired,
                  "confidence": confidence, "verdict": NO_DIFFERENCE}
    else:
        result = compare_samples(a, b, paired=paired, confidence=confidence)
    result["note"] = None
    if min(result["n_a"], result["n_b"]) < 2:
        result["note"] = ("fewer than 2 successful runs on a side: no interval "
                          "(rerun with --repeat 5)")
    return result


def compare_models(model_a, model_b, target="host", delegate="xnnpack", threads=1, *,
                   rounds=100, repeat=5, warmup_runs=5, confidence=CONFIDENCE, run_one=None,
                   on_run=None):
    """Measure A and B now and compare them (one comparison dict).

    host: `rounds` round-robin rounds (paired). local/adb: `repeat` alternating A/B runs of
    `run_one(model) -> row` (a benchmark_model runner bound to the target's options).
    """
    if target == "host":
        from mobilekit.bench.host import interleaved_times

        times_a, times_b = interleaved_times([model_a, model_b], rounds, delegate, threads,
                                             warmup_runs)
        result = _compare(times_a, times_b, True, confidence)
        result["method"] = f"host round-robin, {rounds} rounds, paired bootstrap over rounds"
    else:
        if run_one is None:
            raise ValueError("compare_models needs run_one for target local/adb")
        samples = {model_a: [], model_b: []}
        errors = []
        for index in range(repeat):
            for model in (model_a, model_b):   # alternate: drift hits both sides alike
                row = run_one(model)
                if on_run:
                    on_run(index, model, row)
                if row.get("ok"):
                    samples[model] += row_samples(row)
                else:
                    errors.append(row.get("error"))
        result = _compare(samples[model_a], samples[model_b], False, confidence)
        result["method"] = f"{target}: {repeat} alternating A/B runs, bootstrap over runs"
        if errors:
            result["note"] = f"{len(errors)} failed run(s), first: {errors[0]}"
    result.update(a=Path(model_a).name, b=Path(model_b).name, delegate=delegate,
                  threads=threads, cpu=None)
    return result


def _ms(value):
    return None if value is None else f"{value / 1000:.3f}"


def compare_table(results):
    """(headers, cells) of comparisons for mobilekit.report.tables.format_table."""
    cells = []
    for r in results:
        ci = (f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]" if r["ci_low"] is not None else None)
        cells.append([r["a"], r["b"], r["delegate"], r["threads"], r["cpu"],
                      _ms(r["median_a_us"]), _ms(r["median_b_us"]),
                      None if r["speedup"] is None else f"{r['speedup']:.3f}x", ci,
                      f"{r['n_a']}/{r['n_b']}", r["verdict"]])
    headers = list(COMPARE_HEADERS)
    if results:
        headers[8] = f"{results[0]['confidence'] * 100:g}% CI"
    return headers, cells
