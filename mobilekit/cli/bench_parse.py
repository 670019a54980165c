"""`mobilekit bench-parse`: read a benchmark_model log and print its numbers."""
import click

from mobilekit.cli.common import echo_json

_TOP_OPS = 5


def _ms(us):
    return "-" if us is None else f"{us / 1000:.2f} ms"


def _mb(mb):
    return "-" if mb is None else f"{mb:.2f} MB"


def _runs(count):
    return "" if count is None else f" ({count} runs)"


def _delegate_text(row):
    text = row["delegate"] or "unknown"
    if row["delegation"]:
        nodes = ""
        if row["delegated_nodes"] is not None:
            total = "?" if row["total_nodes"] is None else row["total_nodes"]
            nodes = f", {row['delegated_nodes']}/{total} nodes"
        text += f" ({row['delegation']}{nodes})"
    return text


def summary_lines(row):
    """Short human summary of a parsed row (times in ms)."""
    lines = [f"status:     {'ok' if row['ok'] else 'FAILED: ' + str(row['error'])}"]
    if row["runtime_version"]:
        lines.append(f"runtime:    {row['runtime_version']}")
    threads = "-" if row["threads"] is None else row["threads"]
    lines.append(f"delegate:   {_delegate_text(row)}, threads {threads}")
    lines.append(f"init:       {_ms(row['init_us'])}")
    lines.append(f"first run:  {_ms(row['first_inference_us'])}")
    lines.append(f"warm-up:    {_ms(row['warmup_avg_us'])} avg")
    lines.append(f"inference:  {_ms(row['inference_avg_us'])} avg{_runs(row['inference_count'])}, "
                 f"std {_ms(row['inference_std_us'])}, min {_ms(row['inference_min_us'])}, "
                 f"median {_ms(row['inference_median_us'])}, max {_ms(row['inference_max_us'])}")
    if any(row[k] is not None for k in ("memory_init_mb", "memory_overall_mb", "peak_memory_mb")):
        lines.append(f"memory:     init {_mb(row['memory_init_mb'])}, "
                     f"overall {_mb(row['memory_overall_mb'])}, peak {_mb(row['peak_memory_mb'])}")
    for op in (row["op_profile"] or [])[:_TOP_OPS]:
        pct = "" if op["avg_pct"] is None else f" ({op['avg_pct']:.1f}%)"
        avg = "-" if op["avg_ms"] is None else f"{op['avg_ms']:.2f} ms"
        lines.append(f"  op {op['node_type']:<24} x{op['count']}: {avg}{pct}")
    return lines


@click.command("bench-parse")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the full result row as JSON.")
@click.pass_context
def bench_parse(ctx, log, as_json):
    """Parse a benchmark_model log (native binary, Android APK logcat or LiteRT) into a result row.

    Exit code 0 when the log shows a finished run, 1 when it shows a failed one.

    \b
    Examples:
      mobilekit bench-parse run.log
      adb logcat -d | grep tflite > apk.log && mobilekit bench-parse apk.log --json
    """
    from mobilekit.bench.parse import parse_log_file

    row = parse_log_file(log)
    if as_json:
        echo_json(row)
    else:
        click.echo("\n".join(summary_lines(row)))
    if not row["ok"]:
        ctx.exit(1)
