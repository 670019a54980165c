"""Repeated trials and the judgement of a row: state before/after, cooldown, CI, CV, flags.

`Trials` wraps a one-run function (model, delegate, threads, **kw) -> row:

* before every benchmark run except the sweep's first it cools down: `cooldown` seconds,
  and/or until the hottest CPU thermal zone is below `cooldown_temp` °C (polled, at most
  `cooldown_timeout` seconds; a timeout is a note and an `unstable` reason, not a failure);
* it reads the device state (mobilekit.bench.device_state) before and after each run;
* it runs `repeat` times and merges the runs into one row: `repeat_medians_us` (one
  median per run), `inference_median_us` = the median of those, `median_ci_low_us` /
  `median_ci_high_us` (95 % percentile bootstrap over runs, mobilekit.bench.stats), `cv`
  (across runs when repeat >= 2, else the run's own std/avg), `state_before` (first run) and
  `state_after` (last run);
* `unstable` is True, with `unstable_reasons`, when the CV exceeds 5 %, a CPU frequency
  (current or maximum) of the CPUs used changed between readings, a governor other than a
  fixed one (performance, powersave, userspace) was active, the hottest CPU zone rose more
  than `temp_rise_c` °C, Android reported a thermal status above 0 (none), or a cooldown
  timed out. It is False when none fired and None when nothing could be judged.
"""
import time

from mobilekit.bench import device_state as ds
from mobilekit.bench.stats import cv as sample_cv, median_ci

__all__ = ["Trials", "unstable_reasons", "merge_repeats", "CV_LIMIT", "TEMP_RISE_C",
           "FIXED_GOVERNORS", "check_trial_args"]

CV_LIMIT = 0.05
TEMP_RISE_C = 5.0
FIXED_GOVERNORS = ("performance", "powersave", "userspace")
_THERMAL_STATUS = {0: "none", 1: "light", 2: "moderate", 3: "severe", 4: "critical",
                   5: "emergency", 6: "shutdown"}


def check_trial_args(repeat=1, cooldown=0.0, cooldown_temp=None, cooldown_timeout=600.0,
                     temp_rise_c=TEMP_RISE_C):
    """ValueError naming the bad value (the CLI turns it into `Error: ...`, exit 2)."""
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError(f"repeat must be an integer >= 1; got {repeat!r}")
    if cooldown is None or cooldown < 0:
        raise ValueError(f"cooldown must be >= 0 seconds; got {cooldown!r}")
    if cooldown_temp is not None and not 0 < cooldown_temp < 150:
        raise ValueError(f"cooldown_temp must be in (0, 150) °C; got {cooldown_temp!r}")
    if cooldown_timeout is None or cooldown_timeout <= 0:
        raise ValueError(f"cooldown_timeout must be > 0 seconds; got {cooldown_timeout!r}")
    if temp_rise_c is None or temp_rise_c <= 0:
        raise ValueError(f"temp_rise_c must be > 0 °C; got {temp_rise_c!r}")


class Trials:
    """Run configurations with cooldowns, state readings and repeats (see module doc)."""

    def __init__(self, run_once, read_state=None, repeat=1, cooldown=0.0, cooldown_temp=None,
                 cooldown_timeout=600.0, temp_rise_c=TEMP_RISE_C, poll_interval=1.0,
                 sleep=time.sleep, clock=time.monotonic):
        check_trial_args(repeat, cooldown, cooldown_temp, cooldown_timeout, temp_rise_c)
        self.run_once, self.read_state = run_once, read_state
        self.repeat, self.cooldown, self.cooldown_temp = repeat, cooldown, cooldown_temp
        self.cooldown_timeout, self.temp_rise_c = cooldown_timeout, temp_rise_c
        self.poll_interval, self.sleep, self.clock = poll_interval, sleep, clock
        self.runs = 0   # benchmark runs so far: no cooldown before the very first

    def __call__(self, model, delegate, threads, **kwargs):
        runs, states, waits = [], [], []
        for _ in range(self.repeat):
            waits.append(self._cool_down())
            before = self._state()
            runs.append(self.run_once(model, delegate, threads, **kwargs))
            self.runs += 1
            states.append((before, self._state()))
        row = merge_repeats(runs)
        return judge(row, states, [w for w in waits if w], self.temp_rise_c)

    def _state(self):
        if self.read_state is None:
            return None
        try:
            return self.read_state()
        except Exception as exc:   # never fail a run for the sake of its state
            return {"notes": [f"device state unreadable: {type(exc).__name__}: {exc}"]}

    def _cool_down(self):
        """None, or an unstable reason when the temperature wait timed out."""
        if self.runs == 0:
            return None
        if self.cooldown:
            self.sleep(self.cooldown)
        if self.cooldown_temp is None or self.read_state is None:
            return None
        last = {}

        def cool():
            last["c"] = ds.hottest_cpu_c(self._state() or {})
            return last["c"] is None or last["c"] < self.cooldown_temp

        ok, waited = ds.wait_for(cool, self.cooldown_timeout, self.poll_interval,
                                 clock=self.clock, sleep=self.sleep)
        if last.get("c") is None:
            return "cooldown-temp: no CPU temperature readable, could not wait for it"
        if not ok:
            return (f"cooldown to {self.cooldown_temp:g} °C timed out after {waited:.1f} s "
                    f"(hottest CPU zone {last['c']:.1f} °C)")
        return None


# ---------------------------------------------------------------- merging repeats


def _median_of(row):
    return row.get("inference_median_us") or row.get("inference_avg_us")


def merge_repeats(runs):
    """One row from the runs of one configuration (the first run's row when repeat is 1)."""
    ok = [r for r in runs if r.get("ok") and _median_of(r)]
    row = dict(ok[0] if ok else runs[0])
    notes = list(row.get("notes") or [])
    failed = [r for r in runs if not (r.get("ok") and _median_of(r))]
    if failed and ok:
        notes.append(f"{len(failed)} of {len(runs)} repeats failed; first error: "
                     f"{failed[0].get('error')}")
    medians = [round(float(_median_of(r)), 3) for r in ok]
    row.update(repeats=len(runs), repeat_medians_us=medians or None, notes=notes)
    if len(ok) >= 2:
        median, low, high = median_ci(medians)
        counts = [r.get("inference_count") or 1 for r in ok]
        avgs = [r.get("inference_avg_us") or _median_of(r) for r in ok]
        mean = sum(a * n for a, n in zip(avgs, counts)) / sum(counts)
        row.update(inference_median_us=round(median, 3), median_ci_low_us=round(low, 3),
                   median_ci_high_us=round(high, 3), inference_avg_us=round(mean, 3),
                   inference_count=sum(counts), cv=round(sample_cv(medians), 5),
                   inference_min_us=_pick(min, ok, "inference_min_us"),
                   inference_max_us=_pick(max, ok, "inference_max_us"),
                   inference_std_us=_pooled_std(ok, counts, avgs, mean))
    elif ok and row.get("inference_std_us") is not None and row.get("inference_avg_us"):
        row["cv"] = round(row["inference_std_us"] / row["inference_avg_us"], 5)
    return row


def _pick(fn, rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return fn(values) if values else None


def _pooled_std(rows, counts, avgs, mean):
    """Population std of all runs pooled (each run's std and mean, weighted by its count)."""
    stds = [r.get("inference_std_us") for r in rows]
    if any(s is None for s in stds):
        return None
    total = sum(n * (s * s + (a - mean) ** 2) for n, s, a in zip(counts, stds, avgs))
    return round((total / sum(counts)) ** 0.5, 3)


# ---------------------------------------------------------------- judging a row


def judge(row, states, extra_reasons=(), temp_rise_c=TEMP_RISE_C):
    """Attach state_before/after, emulator, notes and the unstable flag to a merged row."""
    row = dict(row)
    snapshots = [s for pair in states for s in pair if s]
    if states:
        row["state_before"], row["state_after"] = states[0][0], states[-1][1]
    first = row.get("state_before") or {}
    if row.get("emulator") is None:
        row["emulator"] = first.get("emulator")
    notes = list(row.get("notes") or [])
    for state in snapshots[:1] + snapshots[-1:]:
        notes += [n for n in state.get("notes") or [] if n not in notes]
    row["notes"] = notes or None
    if row.get("binary_version") is None:
        row["binary_version"] = row.get("runtime_version")
    if not row.get("ok"):
        row["unstable"], row["unstable_reasons"] = None, None
        return row
    cpus = _used_cpus(row, first)
    reasons = unstable_reasons(row.get("cv"), (row.get("repeats") or 1) >= 2, states, cpus,
                               temp_rise_c) + list(extra_reasons)
    judged = row.get("cv") is not None or any(s.get("cpus") for s in snapshots)
    row["unstable"] = bool(reasons) if (reasons or judged) else None
    row["unstable_reasons"] = reasons or None
    return row


def _used_cpus(row, state):
    mask = row.get("cpu_mask") or state.get("cpu_mask")
    if mask:
        try:
            return ds.cpus_of_mask(mask)
        except ValueError:
            pass
    return state.get("online") or [int(c) for c in (state.get("cpus") or {})]


def unstable_reasons(cv, across_repeats, states, cpus, temp_rise_c=TEMP_RISE_C):
    """Reasons (strings) to distrust a row; [] when none applies."""
    reasons = []
    if cv is not None and cv > CV_LIMIT:
        where = "across repeats" if across_repeats else "within the run"
        reasons.append(f"CV {cv * 100:.1f} % {where} > {CV_LIMIT * 100:g} %")
    snapshots = [s for pair in states for s in pair if s and s.get("cpus")]
    reasons += _frequency_reasons(snapshots, cpus)
    reasons += _governor_reasons(snapshots, cpus)
    reasons += _thermal_reasons(states, temp_rise_c)
    return reasons


def _frequency_reasons(snapshots, cpus):
    out = []
    for key, what in (("cur_khz", "frequency"), ("max_khz", "maximum frequency (a thermal cap)")):
        changed = []
        for cpu in cpus:
            seen = [s["cpus"].get(str(cpu), {}).get(key) for s in snapshots]
            seen = [v for v in seen if v is not None]
            if len(set(seen)) > 1:
                changed.append((cpu, seen[0], min(seen), max(seen)))
        if changed:
            cpu, _, low, high = changed[0]
            out.append(f"CPU {what} changed during timing on cpu "
                       f"{','.join(str(c[0]) for c in changed)} (cpu{cpu}: {low / 1000:g}-"
                       f"{high / 1000:g} MHz)")
    return out


def _governor_reasons(snapshots, cpus):
    dynamic = {}
    for state in snapshots:
        for cpu in cpus:
            governor = state["cpus"].get(str(cpu), {}).get("governor")
            if governor and governor not in FIXED_GOVERNORS:
                dynamic.setdefault(governor, set()).add(cpu)
    return [f"governor {g} on cpu {','.join(map(str, sorted(c)))} (not a fixed-frequency "
            f"governor: {', '.join(FIXED_GOVERNORS)})" for g, c in sorted(dynamic.items())]


def _thermal_reasons(states, temp_rise_c):
    out = []
    pairs = [(b, a) for b, a in states if b and a]
    if pairs:
        start = ds.hottest_cpu_c(pairs[0][0])
        peaks = [ds.hottest_cpu_c(a) for _, a in pairs]
        peaks = [p for p in peaks if p is not None]
        if start is not None and peaks and max(peaks) - start > temp_rise_c:
            out.append(f"hottest CPU zone rose {max(peaks) - start:.1f} °C ({start:.1f} -> "
                       f"{max(peaks):.1f} °C) > {temp_rise_c:g} °C")
    statuses = [s.get("thermal_status") for pair in states for s in pair if s]
    statuses = [s for s in statuses if s]
    if statuses:
        worst = max(statuses)
        out.append(f"Android thermal status {worst} ({_THERMAL_STATUS.get(worst, '?')}) "
                   "during timing")
    return out
