"""`mobilekit bench-compare A B`: speed-up of B over A with a 95 % interval and a verdict."""
import click

from mobilekit.cli.common import echo_json

_TARGETS = ("host", "local", "adb")


def _is_model(path):
    return str(path).endswith(".tflite")


@click.command("bench-compare")
@click.argument("a", type=click.Path(exists=True))
@click.argument("b", type=click.Path(exists=True))
@click.option("--target", type=click.Choice(_TARGETS), default="host", show_default=True,
              help="Where to measure when A and B are .tflite models (result sets are "
                   "compared as they are).")
@click.option("--delegate", default="xnnpack", show_default=True, help="Delegate for models.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Thread count for models.")
@click.option("--rounds", type=click.IntRange(min=2), default=100, show_default=True,
              help="host: round-robin rounds (one invoke of A, one of B, per round).")
@click.option("--repeat", type=click.IntRange(min=1), default=5, show_default=True,
              help="local/adb: alternating A/B benchmark_model runs per model.")
@click.option("--num-runs", type=click.IntRange(min=1), default=50, show_default=True,
              help="local/adb: timed runs inside each benchmark_model run.")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), default=None,
              show_default="$MOBILEKIT_BENCHMARK_MODEL", help="benchmark_model for local/adb.")
@click.option("--serial", default=None, show_default="the only device", help="adb device serial.")
@click.option("--cpu-mask", default=None, show_default="none",
              help="adb: run under `taskset MASK` (hex).")
@click.option("--log-dir", type=click.Path(file_okay=False), default="bench_logs",
              show_default=True, help="local/adb: where each run's raw log is saved.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the interval.")
@click.option("--json", "as_json", is_flag=True, default=False, show_default="off",
              help="Print the comparisons as JSON.")
def bench_compare(a, b, target, delegate, threads, rounds, repeat, num_runs, benchmark_binary,
                  serial, cpu_mask, log_dir, confidence, as_json):
    """Compare B against A: speed-up median(A)/median(B), its interval, and a verdict.

    A and B are two result sets (results.jsonl files or `mobilekit bench --out`
    directories; configurations matched by model name, delegate, threads and cpu mask),
    or two .tflite models measured now. The verdict is "faster" / "slower" (B relative to
    A) only when the whole interval lies above / below 1, else "no difference
    measurable". Intervals are percentile bootstraps over runs (repeats, or host
    round-robin rounds, paired); see the README's benchmarking section.

    \b
    Examples:
      mobilekit bench-compare mnv2_fp32.tflite mnv2_int8.tflite --rounds 200
      mobilekit bench-compare before/ after/
      mobilekit bench-compare a.tflite b.tflite --target adb --benchmark-binary ./bm --repeat 7
    """
    from mobilekit.bench import compare
    from mobilekit.report.tables import format_table

    if _is_model(a) != _is_model(b):
        raise click.UsageError("A and B must both be .tflite models or both result sets")
    if _is_model(a):
        run_one = None if target == "host" else _runner(target, delegate, threads, num_runs,
                                                        benchmark_binary, serial, cpu_mask,
                                                        log_dir)
        results = [compare.compare_models(a, b, target, delegate, threads, rounds=rounds,
                                          repeat=repeat, confidence=confidence,
                                          run_one=run_one)]
    else:
        results = compare.compare_result_sets(compare.load_result_set(a),
                                              compare.load_result_set(b), confidence)
    if as_json:
        echo_json(results)
        return
    headers, cells = compare.compare_table(results)
    click.echo(format_table(headers, cells))
    for r in results:
        if r.get("method"):
            click.echo(f"method: {r['method']}", err=True)
        if r.get("note"):
            click.echo(f"note: {r['a']} vs {r['b']}: {r['note']}", err=True)


def _runner(target, delegate, threads, num_runs, binary, serial, cpu_mask, log_dir):
    from mobilekit.bench import benchmark_model as bm

    if target == "local":
        return lambda model: bm.run_local(model, binary, delegate, threads, num_runs=num_runs,
                                          progress=False, log_dir=log_dir)
    session = bm.Adb(None, serial)
    return lambda model: bm.run_adb(model, binary, delegate, threads, num_runs=num_runs,
                                    serial=serial, cpu_mask=cpu_mask, adb=session,
                                    progress=False, log_dir=log_dir)
