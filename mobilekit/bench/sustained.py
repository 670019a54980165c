"""Sustained mode (`--sustained MINUTES`): back-to-back inference for a whole period.

The period is cut into windows of `window` seconds; each window is one benchmark run of
exactly that length (benchmark_model `--min_secs=W --max_secs=W`, or the host runner with
min_secs = max_secs = W, no warm-up after the first), so inference never pauses longer
than a model load. Before each window the device state is read (temperatures and
frequencies over time). The row's `sustained` field:

    minutes, window_s
    windows               [{"t_s", "median_us", "avg_us", "count", "hottest_cpu_c",
                            "cur_khz": {cpu: kHz}, "ok"}] (t_s: window start from the start)
    first_minute_median_us  median of the window medians that started in the first minute
    steady_median_us        median of the window medians of the second half of the period
    slowdown                steady / first minute (1.25: 25 % slower once warm)

`inference_median_us` of a sustained row is the steady-state median; `unstable` is judged
on the first and last readings (a throttling phone will say so).
"""
import statistics
import time

from mobilekit.bench.trust import TEMP_RISE_C, judge

__all__ = ["Sustained", "summarise_windows"]


class Sustained:
    """run_window(model, delegate, threads, **kw) -> row, repeated for `minutes`."""

    def __init__(self, run_window, read_state=None, minutes=1.0, window=10.0,
                 clock=time.monotonic, temp_rise_c=TEMP_RISE_C):
        if minutes is None or minutes <= 0:
            raise ValueError(f"sustained minutes must be > 0; got {minutes!r}")
        if window is None or window <= 0 or window > minutes * 60:
            raise ValueError(f"sustained window must be in (0, {minutes * 60:g}] seconds; "
                             f"got {window!r}")
        self.run_window, self.read_state = run_window, read_state
        self.minutes, self.window, self.clock = minutes, window, clock
        self.temp_rise_c = temp_rise_c

    def _state(self):
        try:
            return self.read_state() if self.read_state else None
        except Exception as exc:   # the state never fails a run
            return {"notes": [f"device state unreadable: {type(exc).__name__}: {exc}"]}

    def __call__(self, model, delegate, threads, **kwargs):
        from mobilekit.bench.device_state import hottest_cpu_c

        start = self.clock()
        end = start + self.minutes * 60.0
        windows, rows, first_state, state = [], [], None, None
        while self.clock() < end or not windows:
            state = self._state()
            first_state = first_state or state
            t = self.clock() - start
            row = self.run_window(model, delegate, threads, **kwargs)
            rows.append(row)
            cpus = (state or {}).get("cpus") or {}
            windows.append({"t_s": round(t, 3),
                            "median_us": row.get("inference_median_us") or row.get("inference_avg_us"),
                            "avg_us": row.get("inference_avg_us"),
                            "count": row.get("inference_count"),
                            "hottest_cpu_c": hottest_cpu_c(state or {}),
                            "cur_khz": {c: e.get("cur_khz") for c, e in cpus.items()},
                            "ok": bool(row.get("ok"))})
        last_state = self._state()
        ok = [r for r in rows if r.get("ok")]
        merged = dict(ok[0] if ok else rows[0])
        summary = summarise_windows(windows, self.minutes, self.window)
        merged.update(sustained=summary, repeats=len(rows),
                      inference_count=sum(r.get("inference_count") or 0 for r in ok) or None)
        if summary["steady_median_us"] is not None:
            merged["inference_median_us"] = summary["steady_median_us"]
        return judge(merged, [(first_state, last_state)] if first_state else [], (),
                     self.temp_rise_c)


def summarise_windows(windows, minutes, window):
    good = [w for w in windows if w["ok"] and w["median_us"]]
    first = [w["median_us"] for w in good if w["t_s"] < 60.0]
    half = minutes * 60.0 / 2.0
    steady = [w["median_us"] for w in good if w["t_s"] >= half] or [w["median_us"] for w in good[-1:]]
    first_median = statistics.median(first) if first else None
    steady_median = statistics.median(steady) if steady else None
    slowdown = (round(steady_median / first_median, 4)
                if first_median and steady_median else None)
    return {"minutes": minutes, "window_s": window, "windows": windows,
            "first_minute_median_us": first_median, "steady_median_us": steady_median,
            "slowdown": slowdown}
