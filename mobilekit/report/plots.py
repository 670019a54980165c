"""Benchmark plots (PNG): latency vs MACs, latency vs accuracy Pareto front, per-op breakdown.

matplotlib is an optional extra (`pip install 'mobilekit[plot]'`), imported only when a plot
is drawn. Inputs are result rows (mobilekit.bench.schema); MACs and accuracy come from the
export report beside each model (mobilekit.bench.sweep.export_report_info), from
`accuracies` (model name -> value) or from an `accuracy` column in the rows.
"""
from pathlib import Path

__all__ = ["PlotDependencyError", "require_matplotlib", "plot_latency_vs_macs", "plot_pareto",
           "plot_op_breakdown", "plot_sustained", "write_plots", "pareto_front", "accuracy_for"]

PLOT_FILES = {"latency_vs_macs": "latency_vs_macs.png",
              "pareto": "latency_vs_accuracy.png",
              "op_breakdown": "op_breakdown.png"}
_TOP_OPS = 8


class PlotDependencyError(ValueError):
    """matplotlib is missing (a ValueError so the CLI prints one line and exits 2)."""


def require_matplotlib():
    """pyplot with the non-interactive Agg backend, or a clear error."""
    try:
        import matplotlib
    except ImportError:
        raise PlotDependencyError("plots need matplotlib, which is not installed: "
                                  "pip install 'mobilekit[plot]' (or pip install matplotlib)"
                                  ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(row):
    return f"{Path(row['model_path']).stem} {row['delegate']} t{row['threads']}"


def _ok_rows(rows):
    return [r for r in rows if r.get("ok") and r.get("inference_median_us")]


def _finish(plt, fig, ax, xlabel, ylabel, title, path):
    """Labels, grid and legend, then save atomically and free the figure."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    tmp.replace(path)   # atomic, like every other result file
    return path


def plot_latency_vs_macs(rows, infos, path):
    """Median latency against MACs: one colour per delegate/threads, one marker per quant
    mode, one point per model file (no lines: neighbours in MACs are different networks).
    None when no row has MACs."""
    points = [(infos.get(r["model_path"], {}).get("macs"), r) for r in _ok_rows(rows)]
    points = [(m, r) for m, r in points if m]
    if not points:
        return None
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(10, 6.5))
    quant = {r["model_path"]: infos.get(r["model_path"], {}).get("quant") for _, r in points}
    configs = sorted({(r["delegate"], r["threads"]) for _, r in points}, key=str)
    for colour, config in zip(_COLOURS * len(configs), configs):
        for mode in sorted({quant[r["model_path"]] for _, r in points}, key=str):
            series = [(m / 1e6, r["inference_median_us"] / 1e3) for m, r in points
                      if (r["delegate"], r["threads"]) == config and quant[r["model_path"]] == mode]
            if series:
                ax.scatter([s[0] for s in series], [s[1] for s in series], s=22, color=colour,
                           marker=_MARKERS.get(mode, "^"),
                           label=f"{config[0]}, {config[1]} thread(s)" + (f", {mode}" if mode else ""))
    for name, (x, y) in _lowest_point_per_model(points, quant).items():  # one label per model
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=6)
    _log_if_spread(ax, [m / 1e6 for m, _ in points], [r["inference_median_us"] / 1e3
                                                      for _, r in points])
    return _finish(plt, fig, ax, "MACs (millions)", "median latency (ms)",
                   "Latency vs MACs: MACs are not speed", path)


_COLOURS = ["tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
_MARKERS = {"fp32": "o", "int8": "s", "fp16": "D", "dynamic": "v", "int16x8": "P"}


def _lowest_point_per_model(points, quant=None):
    """{model name: fastest (MMACs, ms)}; the name drops a `_<quant>` file suffix."""
    lowest = {}
    for macs, row in points:
        xy = (macs / 1e6, row["inference_median_us"] / 1e3)
        name = Path(row["model_path"]).stem
        mode = (quant or {}).get(row["model_path"])
        if mode and name.endswith(f"_{mode}"):
            name = name[: -len(mode) - 1]
        if name not in lowest or xy[1] < lowest[name][1]:
            lowest[name] = xy
    return lowest


def _log_if_spread(ax, xs, ys, ratio=20):
    """Log axes where values span more than `ratio`x (model zoos span orders of magnitude)."""
    if xs and min(xs) > 0 and max(xs) / min(xs) > ratio:
        ax.set_xscale("log")
    if ys and min(ys) > 0 and max(ys) / min(ys) > ratio:
        ax.set_yscale("log")


def accuracy_for(row, infos, accuracies=None):
    """Accuracy of a row's model: `accuracies` (by file name, stem or path), then an
    `accuracy` column in the row, then the export report's eval top-1."""
    accuracies = accuracies or {}
    path = Path(row["model_path"])
    for key in (path.name, path.stem, str(path)):
        if key in accuracies:
            return accuracies[key]
    if row.get("accuracy") is not None:
        return row["accuracy"]
    return infos.get(row["model_path"], {}).get("accuracy")


def pareto_front(points):
    """Points (latency, accuracy, ...) not beaten by one both faster and at least as accurate."""
    front, best = [], float("-inf")
    for point in sorted(points, key=lambda p: (p[0], -p[1])):
        if point[1] > best:
            front.append(point)
            best = point[1]
    return front


def plot_pareto(rows, infos, path, accuracies=None):
    """Accuracy against median latency with the Pareto front. None when no accuracy is known."""
    points = [(r["inference_median_us"] / 1e3, accuracy_for(r, infos, accuracies), r)
              for r in _ok_rows(rows)]
    points = [p for p in points if p[1] is not None]
    if not points:
        return None
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    front = pareto_front(points)
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="tab:gray", zorder=2,
               label="all configurations")
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
            marker="o", zorder=3, label="Pareto front")
    for x, y, r in front:   # label the front only: the other points would crowd it
        ax.annotate(_label(r), (x, y), textcoords="offset points", xytext=(5, -11), fontsize=7)
    _log_if_spread(ax, [p[0] for p in points], None)
    return _finish(plt, fig, ax, "median latency (ms)", "accuracy (top-1)",
                   "Latency vs accuracy", path)


def plot_op_breakdown(rows, path, top=_TOP_OPS):
    """Stacked bars of per-op-type time (op_profile). None when no row has a profile."""
    profiled = [r for r in rows if r.get("ok") and r.get("op_profile")]
    if not profiled:
        return None
    totals = {}
    for r in profiled:
        for op in r["op_profile"]:
            totals[op["node_type"]] = totals.get(op["node_type"], 0.0) + (op.get("avg_ms") or 0)
    kept = sorted(totals, key=totals.get, reverse=True)[:top]
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.5 * len(profiled)))
    labels = [_label(r) for r in profiled]
    left = [0.0] * len(profiled)
    for name in kept + ["other"]:
        widths = [sum(op.get("avg_ms") or 0 for op in r["op_profile"]
                      if (op["node_type"] == name) or (name == "other" and op["node_type"] not in kept))
                  for r in profiled]
        if not any(widths):
            continue
        ax.barh(labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_xlabel("time per inference (ms, operator profile)")
    ax.set_title("Per-operator breakdown")
    ax.invert_yaxis()
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_sustained(row, path):
    """Latency per window and the hottest CPU zone vs time of a `--sustained` row."""
    windows = [w for w in (row.get("sustained") or {}).get("windows", []) if w.get("median_us")]
    if not windows:
        return None
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4))
    minutes = [w["t_s"] / 60.0 for w in windows]
    ax.plot(minutes, [w["median_us"] / 1e3 for w in windows], "o-", color="tab:blue",
            label="median latency per window (ms)")
    ax.set_ylabel("latency (ms)")
    temps = [(m, w["hottest_cpu_c"]) for m, w in zip(minutes, windows)
             if w.get("hottest_cpu_c") is not None]
    if temps:
        twin = ax.twinx()
        twin.plot([m for m, _ in temps], [t for _, t in temps], "s--", color="tab:red",
                  label="hottest CPU zone (°C)")
        twin.set_ylabel("temperature (°C)")
        twin.legend(fontsize=8, loc="lower right")
    return _finish(plt, fig, ax, "time (minutes)", "latency (ms)",
                   f"sustained: {_label(row)}", path)


def write_plots(rows, out_dir, infos=None, accuracies=None):
    """Draw every plot the data allows into out_dir. Returns {name: path or skip reason}."""
    require_matplotlib()
    if infos is None:
        from mobilekit.bench.sweep import export_report_info

        infos = {r["model_path"]: export_report_info(r["model_path"]) for r in rows
                 if r.get("model_path")}
    out_dir = Path(out_dir)
    made = {
        "latency_vs_macs": (plot_latency_vs_macs(rows, infos, out_dir / PLOT_FILES["latency_vs_macs"]),
                            "no successful row has MACs (export report X.json with `macs`)"),
        "pareto": (plot_pareto(rows, infos, out_dir / PLOT_FILES["pareto"], accuracies),
                   "no accuracy known (--accuracy name=value or the export report's eval)"),
        "op_breakdown": (plot_op_breakdown(rows, out_dir / PLOT_FILES["op_breakdown"]),
                         "no row has an operator profile (benchmark_model --op-profiling)"),
    }
    for row in rows:
        if row.get("ok") and row.get("sustained"):
            name = f"sustained_{Path(row['model_path']).stem}_{row['delegate']}_t{row['threads']}"
            if row.get("cluster") or row.get("cpu_mask"):
                name += f"_{row.get('cluster') or row.get('cpu_mask')}"
            made[name] = (plot_sustained(row, out_dir / f"{name}.png"), "no window succeeded")
    return {name: (str(path) if path else f"skipped: {why}") for name, (path, why) in made.items()}
