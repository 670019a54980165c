"""`mobilekit bench`: benchmark .tflite files over delegates and thread counts."""
import os

import click

from mobilekit.cli.common import echo_json, echo_next

_TARGETS = ("host", "local", "adb")


def _split(text, what):
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"--{what} needs at least one value; got {text!r}")
    return items


def _threads(text):
    values = []
    for item in _split(text, "threads"):
        try:
            values.append(int(item))
        except ValueError:
            raise ValueError(f"--threads must be comma-separated integers >= 1; got {item!r}") from None
    return values


def _accuracies(items):
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--accuracy must look like model_name=0.712; got {item!r}") from None
    return out


def _progress_start(index, total, model, delegate, threads, serial=None):
    where = f"{serial} " if serial else ""
    click.echo(f"[{index}/{total}] {where}{os.path.basename(model)} {delegate} t{threads} ...",
               err=True)


def _progress_row(index, total, row):
    where = f"{row['serial']} " if row.get("target") == "adb" and row.get("serial") else ""
    tries = f" after {row['attempts']} attempts" if (row.get("attempts") or 0) > 1 else ""
    if row["ok"]:
        median = row["inference_median_us"]
        click.echo(f"[{index}/{total}]   {where}median {median / 1000:.2f} ms "
                   f"({row['inference_count']} runs){tries}", err=True)
        if row.get("unstable"):
            click.echo(f"[{index}/{total}]   UNSTABLE: {'; '.join(row['unstable_reasons'])}",
                       err=True)
    else:
        click.echo(f"[{index}/{total}]   {where}FAILED{tries}: {row['error']}", err=True)


def _note(text):
    click.echo(f"Note: {text}", err=True)


def resume_command(ctx):
    """The command line that continues this sweep: the same arguments plus --resume."""
    import shlex

    words = ["mobilekit", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            words += [str(v) for v in value]
            continue
        flag = max(param.opts, key=len)
        if param.name in ("resume", "out_dir"):
            continue
        if param.is_flag:
            if value:
                words.append(flag)
        elif param.multiple:
            for item in value:
                words += [flag, str(item)]
        elif value is not None and value != param.default:
            words += [flag, str(value)]
    words += ["--out", str(ctx.params["out_dir"]), "--resume"]
    return shlex.join(words)


@click.command("bench")
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--target", type=click.Choice(_TARGETS), default="host", show_default=True,
              help="host: in-process LiteRT here; local: benchmark_model on this Linux host; "
                   "adb: benchmark_model on an Android device.")
@click.option("--delegate", "delegates", default="xnnpack", show_default=True,
              help="Comma-separated delegates: xnnpack, cpu, gpu (and nnapi for local/adb).")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts.")
@click.option("--warmup-runs", type=int, default=1, show_default=True,
              help="Minimum warm-up runs.")
@click.option("--warmup-min-secs", type=float, default=0.5, show_default=True,
              help="Minimum seconds of warm-up (the count can exceed --warmup-runs).")
@click.option("--num-runs", type=int, default=50, show_default=True,
              help="Minimum timed runs.")
@click.option("--min-secs", type=float, default=1.0, show_default=True,
              help="Minimum seconds of timed runs (the count can exceed --num-runs).")
@click.option("--max-secs", type=float, default=150.0, show_default=True,
              help="Start no timed run after this many seconds.")
@click.option("--op-profiling", is_flag=True, default=False, show_default="off",
              help="Per-operator profile (local/adb; the host runner has no profiler).")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), default=None,
              show_default="$MOBILEKIT_BENCHMARK_MODEL",
              help="benchmark_model binary for --target local/adb.")
@click.option("--serial", default=None, show_default="the only device",
              help="adb device serial, a comma-separated list (A,B,C) or `all`: one worker per "
                   "device, all in parallel (never two benchmarks on one phone).")
@click.option("--retries", type=int, default=1, show_default=True,
              help="adb: run a configuration this many more times when its failure is the "
                   "device (device_lost), after it is back.")
@click.option("--wait-device", type=float, default=60.0, show_default=True,
              help="adb: seconds to wait (adb wait-for-device) for a lost device to come back "
                   "before a configuration; missing files are re-pushed (size + sha256 check). "
                   "0: do not wait.")
@click.option("--cpu-mask", default=None, show_default="none",
              help="adb: run under `taskset MASK` (hex, e.g. f0 for big cores), or `auto`: "
                   "every CPU cluster (little/big/prime from cpu_capacity) and all cores.")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs per configuration: per-run medians, their median, a 95% bootstrap "
                   "interval and the CV.")
@click.option("--cooldown", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds to wait before each run after the first.")
@click.option("--cooldown-temp", type=click.FloatRange(0, 150, min_open=True), default=None,
              show_default="off",
              help="Before each run after the first, wait until the hottest CPU thermal zone "
                   "is below this many °C.")
@click.option("--cooldown-timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Give up waiting for --cooldown-temp after this many "
                                      "seconds (the row is flagged unstable).")
@click.option("--temp-rise", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Flag a row unstable when its hottest CPU zone rose more "
                                      "than this many °C during timing.")
@click.option("--sustained", type=click.FloatRange(min=0, min_open=True), default=None,
              show_default="off",
              help="Run each configuration back to back for this many minutes: latency, "
                   "temperatures and frequencies per window, steady state vs the first minute.")
@click.option("--window", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="--sustained: seconds per window (one benchmark run).")
@click.option("--apk", is_flag=True, default=False, show_default="off",
              help="adb: use the benchmark APK (an Activity) instead of the native binary.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="bench_results",
              show_default=True, help="Directory for results.jsonl/.csv/.md, logs and plots.")
@click.option("--resume", is_flag=True, default=False, show_default="off",
              help="Continue the sweep in --out: skip the configurations its results.jsonl "
                   "already measured (same model sha256, target, serial, delegate, threads and "
                   "settings; failed ones run again) and write the tables over all rows.")
@click.option("--plots", is_flag=True, default=False, show_default="off",
              help="Also write PNG plots (needs matplotlib: pip install 'mobilekit[plot]').")
@click.option("--accuracy", "accuracy", multiple=True, default=(), show_default="from X.json",
              help="model_name=value accuracy for the Pareto plot (repeatable).")
@click.option("--json", "as_json", is_flag=True, default=False, show_default="off",
              help="Print the result rows as JSON instead of the table.")
@click.pass_context
def bench(ctx, models, target, delegates, threads, warmup_runs, warmup_min_secs, num_runs,
          min_secs, max_secs, op_profiling, benchmark_binary, serial, retries, wait_device,
          cpu_mask, repeat, cooldown, cooldown_temp, cooldown_timeout, temp_rise, sustained,
          window, apk, out_dir, resume, plots, accuracy, as_json):
    """Benchmark MODELS (.tflite) for every delegate x thread count; write results to --out.

    A configuration that fails becomes a row with its error; the sweep goes on (exit code 1
    only when every configuration failed). Rows are
    appended to results.jsonl as they finish; results.csv and results.md (median/avg ms,
    FPS, speed-up, GMAC/s when the export report X.json gives MACs) are written at the end.

    Host and local configurations never run concurrently with each other (they would share
    the host's cores); only --target adb with several serials runs in parallel, one worker
    per phone, and results.md then has one table per device. A row whose failure is the
    phone (unplugged, offline) says `device_lost: <adb's words>`. Ctrl-C abandons the
    current configuration (ending it on the phone too), writes the tables for the rows done
    and prints the command that resumes the sweep (exit code 130).

    \b
    Examples:
      mobilekit bench a.tflite b.tflite --delegate xnnpack,cpu --threads 1,2,4
      mobilekit bench m.tflite --target local --benchmark-binary ./linux_x86-64_benchmark_model
      mobilekit bench m.tflite --target adb --serial R58M --cpu-mask f0 --threads 1,4
      mobilekit bench m.tflite --target adb --cpu-mask auto --repeat 5 --cooldown-temp 40
      mobilekit bench m.tflite --target adb --sustained 30 --window 20 --plots
      mobilekit bench a.tflite b.tflite --plots --accuracy a=0.70 --accuracy b=0.72
      mobilekit bench *.tflite --target adb --serial all --retries 2 --wait-device 300 --out zoo
      mobilekit bench *.tflite --target adb --serial all --out zoo --resume
    """
    from mobilekit.bench.sweep import SweepInterrupted, device_groups, run_sweep, summary_table
    from mobilekit.report.tables import format_table

    if retries < 0:   # ValueError: the group prints one `Error:` line, exit code 2
        raise ValueError(f"--retries must be an integer >= 0; got {retries}")
    if not wait_device >= 0:
        raise ValueError(f"--wait-device must be seconds >= 0; got {wait_device}")

    accuracies = _accuracies(accuracy)
    if plots:
        from mobilekit.report.plots import require_matplotlib
        require_matplotlib()   # fail before the sweep, not after it
    if op_profiling and target == "host":
        click.echo("Note: the in-process host runner has no per-operator profiler; op_profile "
                   "stays empty (use --target local with a benchmark_model binary).", err=True)
    try:
        rows = run_sweep(list(models), target, _split(delegates, "delegate"), _threads(threads),
                         warmup_runs=warmup_runs, warmup_min_secs=warmup_min_secs,
                         num_runs=num_runs, min_secs=min_secs,
                         max_secs=max_secs, op_profiling=op_profiling,
                         benchmark_binary=benchmark_binary, serial=serial, cpu_mask=cpu_mask,
                         apk=apk, out_dir=out_dir, on_start=_progress_start,
                         on_row=_progress_row, resume=resume, retries=retries,
                         wait_device=wait_device, on_note=_note, repeat=repeat,
                         cooldown=cooldown, cooldown_temp=cooldown_temp,
                         cooldown_timeout=cooldown_timeout, temp_rise_c=temp_rise,
                         sustained=sustained, window=window)
    except SweepInterrupted as stop:
        click.echo(f"\nInterrupted: {stop.done} of {stop.total} configurations measured this "
                   f"time; the current one was abandoned. Tables for {len(stop.rows)} rows: "
                   f"{os.path.join(out_dir, 'results.csv')}, "
                   f"{os.path.join(out_dir, 'results.md')}", err=True)
        click.echo(f"Resume with:\n  {resume_command(ctx)}", err=True)
        ctx.exit(130)
    written = [os.path.join(out_dir, n) for n in ("results.jsonl", "results.csv", "results.md")]
    if plots:
        from mobilekit.report.plots import write_plots
        for name, where in write_plots(rows, out_dir, accuracies=accuracies).items():
            click.echo(f"plot {name}: {where}", err=True)
    if as_json:
        echo_json(rows)
    else:
        groups = device_groups(rows)
        for title, group in groups:
            headers, cells, _ = summary_table(group)
            if len(groups) > 1:
                click.echo(f"\n{title}")
            click.echo(format_table(headers, cells))
        click.echo(f"wrote {', '.join(written)}", err=True)
    if not any(row["ok"] for row in rows):
        ctx.exit(1)
    if target != "adb":  # the honest figure is the phone's
        echo_next(f"mobilekit bench {' '.join(models)} --target adb --threads 1,4  "
                  "(see android_bench/)")
