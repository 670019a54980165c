"""`mobilekit search` and `mobilekit latency-model build|eval`."""
from pathlib import Path

import click

from mobilekit.cli.common import echo_json

TARGETS = ("host", "local", "adb", "gpu")
SPACE_HELP = ("Design space NAME[:key=value,...]: regnet, regnet-tiny, mbspace, mbspace-tiny; "
              "overrides pin a choice or keep a subset, e.g. mbspace:se=off, "
              "mbspace:kernel=3|5, regnet:group_width=8.")


def _dtypes(text):
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--dtype needs at least one of fp32, int8; got {text!r}")
    return items


def _ints(what, text):
    if text.strip().lower() == "none":
        return ()
    if text.strip().lower() == "space":
        return None
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers or 'none'; "
                         f"got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive; got {text!r}")
    return tuple(values)


def _log(msg):
    click.echo(msg, err=True)


@click.group("latency-model")
def latency_model():
    """Per-target latency models (operator lookup tables fitted to measured models).

    \b
    Examples:
      mobilekit latency-model build --target host --space mbspace --samples 40 --out lut.json
      mobilekit latency-model build --target adb --serial R58M --benchmark-binary ./android_aarch64_benchmark_model --out lut_phone.json
      mobilekit latency-model eval lut.json --samples 20
    """


def _runner(target, threads, benchmark_binary, serial, adb, delegate, log_dir):
    from mobilekit.search.profiled import runner_for

    return runner_for(target, threads, benchmark_binary, serial, adb, delegate, log_dir)


def _target_options(of_lut=False, delegate_default=None):
    """--benchmark-binary / --serial / --adb / --delegate; for eval the LUT's are defaults."""
    options = [
        click.option("--benchmark-binary", type=click.Path(dir_okay=False), default=None,
                     show_default="$MOBILEKIT_BENCHMARK_MODEL",
                     help="benchmark_model binary for --target local / adb (never downloaded)."),
        click.option("--serial", default=None,
                     show_default="the LUT's" if of_lut else "the only device",
                     help="adb device serial (--target adb)."),
        click.option("--adb", "adb_path", type=click.Path(dir_okay=False), default=None,
                     show_default="adb on PATH", help="adb executable (--target adb)."),
        click.option("--delegate", type=click.Choice(["xnnpack", "cpu"]), default=None,
                     show_default=delegate_default or ("the LUT's" if of_lut else "xnnpack"),
                     help="benchmark_model delegate (--target local / adb; cpu: the builtin "
                          "kernels, for a build that cannot profile inside XNNPACK)."),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return apply


@latency_model.command("build")
@click.option("--target", type=click.Choice(TARGETS), default="host",
              help="Where to measure: host (LiteRT here, fitted end to end), local / adb "
                   "(benchmark_model per-operator profile on this machine / a phone), gpu "
                   "(LiteRT's GPU accelerator, fitted end to end).")
@_target_options()
@click.option("--space", default="mbspace", help=SPACE_HELP)
@click.option("--samples", type=int, default=40, help="Models sampled, converted and timed.")
@click.option("--seed", type=int, default=0, help="Sampling seed.")
@click.option("--resolution", type=int, default=64, help="Input size of the sampled models.")
@click.option("--dtype", "dtype", default="fp32,int8", help="Comma-separated: fp32, int8.")
@click.option("--threads", type=int, default=1, help="Interpreter threads.")
@click.option("--kernel-channels", default="space",
              help="host: 'space' times every depthwise / pointwise conv shape the space can "
                   "produce one by one; a comma list also times depthwise convs on the grid "
                   "--kernel-sides x these channels (for models outside the space); 'none': "
                   "no kernel tables, fitted costs only.")
@click.option("--kernel-sides", default="2,4,8,16,32",
              help="host: output sides (pixels) of that extra depthwise grid.")
@click.option("--element-sizes", default="grid",
              help="host: sizes (elements) the elementwise ops (add, mul, hard-swish, "
                   "hard-sigmoid, mean) are timed on one by one; 'grid': 64, 128, ... "
                   "1048576; a comma list; 'none': fitted costs only.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              show_default="required", help="LUT file (JSON) to write; local / adb also keep "
                                            "the benchmark_model logs in OUT.logs/.")
def build(target, benchmark_binary, serial, adb_path, delegate, space, samples, seed, resolution,
          dtype, threads, kernel_channels, kernel_sides, element_sizes, out):
    """Sample models of a space, time them on the target and fit the operator table.

    \b
    Examples:
      mobilekit latency-model build --target host --space mbspace --samples 40 --out lut.json
      mobilekit latency-model build --space regnet:se=off --dtype int8 --threads 2 --out lut_t2.json
      mobilekit latency-model build --target local --benchmark-binary ./linux_x86-64_benchmark_model --out lut_local.json
      mobilekit latency-model build --target adb --serial R58M --delegate cpu --samples 20 --out lut_phone.json
      mobilekit latency-model build --target gpu --dtype fp32 --samples 20 --out lut_gpu.json
    """
    from mobilekit.search.latency import build_lut, write_lut

    if target == "host":
        if serial or benchmark_binary or adb_path or delegate:
            raise ValueError("--serial / --benchmark-binary / --adb / --delegate are for "
                             "--target local / adb")
        channels = _ints("--kernel-channels", kernel_channels)
        lut = build_lut(space, samples, seed, resolution, _dtypes(dtype), threads, target,
                        log=_log, kernel_channels=channels,
                        kernel_sides=_ints("--kernel-sides", kernel_sides),
                        element_sizes=None if element_sizes.strip().lower() == "grid"
                        else _ints("--element-sizes", element_sizes))
    else:
        from mobilekit.search.profiled import build_target_lut

        runner = _runner(target, threads, benchmark_binary, serial, adb_path, delegate,
                         f"{out}.logs")
        lut = build_target_lut(space, samples, seed, resolution, _dtypes(dtype), runner, _log)
    write_lut(out, lut)
    click.echo(f"Latency model: {out}")
    echo_json({"target": lut["target"], "threads": lut["threads"], "space": lut["space"],
               "samples": samples, "fit_error": lut["fit_error"],
               "measure_seconds": lut["measure_seconds"],
               **{k: lut[k] for k in ("serial", "delegate", "emulation") if lut.get(k)}})


@latency_model.command("eval")
@click.argument("lut", type=click.Path(dir_okay=False))
@click.option("--space", default=None, show_default="the LUT's space", help=SPACE_HELP)
@click.option("--samples", type=int, default=20, help="Held-out models measured end to end.")
@click.option("--seed", type=int, default=None, show_default="the LUT's seed + 1000",
              help="Sampling seed of the held-out models (must differ from the LUT's).")
@click.option("--dtype", "dtype", default=None, show_default="every dtype of the LUT")
@click.option("--target", type=click.Choice(TARGETS), default=None, show_default="the LUT's",
              help="Where to measure; another target than the LUT's is refused.")
@_target_options(of_lut=True)
@click.option("--threads", type=int, default=None, show_default="the LUT's",
              help="Interpreter threads; another count than the LUT's is refused.")
@click.option("--repeats", type=int, default=2,
              help="host: measure the held-out models this many times; the RMSPE between "
                   "the first two is the noise floor (needs >= 2).")
@click.option("--retime-samples", is_flag=True, default=False,
              help="host: time the LUT's own samples again beside the held-out models: "
                   "prints how far this host's timings moved since the build (drift) and "
                   "the error of the table refitted on them (the predictor without the drift).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, show_default="none",
              help="Also write the full result (per-model rows) as JSON.")
def eval_cmd(lut, space, samples, seed, dtype, target, benchmark_binary, serial, adb_path,
             delegate, threads, repeats, retime_samples, out):
    """RMSPE and the share within ±10 % of a LUT's predictions on held-out models.

    \b
    Examples:
      mobilekit latency-model eval lut.json --samples 20
      mobilekit latency-model eval lut.json --space mbspace:se=off --dtype int8 --out eval.json
      mobilekit latency-model eval lut.json --samples 20 --retime-samples
      mobilekit latency-model eval lut_phone.json --serial R58M --benchmark-binary ./android_aarch64_benchmark_model
    """
    from mobilekit.io import write_json_atomic
    from mobilekit.search.latency import evaluate_lut, load_lut

    if samples < 1:
        raise ValueError(f"--samples must be >= 1; got {samples}")
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    table = load_lut(lut)
    for what, given in (("target", target), ("threads", threads)):
        if given is not None and given != table[what]:
            raise ValueError(f"latency model {lut} was built for {what} {table[what]!r}, not "
                             f"{given!r}; build one with --{what} {given}")
    dtypes = _dtypes(dtype) if dtype else None
    if retime_samples and table["target"] != "host":
        raise ValueError("--retime-samples is for host LUTs (target local / adb / gpu LUTs "
                         "are fitted to per-operator or end-to-end timings of their target)")
    if table["target"] == "host":
        result = evaluate_lut(table, space, samples, seed, None, dtypes, log=_log,
                              repeats=repeats, retime_samples=retime_samples)
    else:
        from mobilekit.search.profiled import evaluate_target_lut

        if delegate is None and table["target"] != "gpu":
            delegate = table.get("delegate")
        runner = _runner(table["target"], table["threads"], benchmark_binary,
                         serial or (table.get("serial") if table["target"] == "adb" else None),
                         adb_path, delegate, f"{out or lut}.eval-logs")
        result = evaluate_target_lut(table, runner, space, samples, seed, dtypes, log=_log)
    if out:
        write_json_atomic(out, result)
    where = f"{result['target']}" + (f" {result['serial']}" if result.get("serial") else "")
    for d, r in result["dtypes"].items():
        noise = r.get("noise_floor")
        click.echo(f"{d}: RMSPE {r['rmspe_pct']:.1f} %, {100 * r['within_10pct']:.0f} % within "
                   f"±10 % (max {r['max_abs_pct']:.1f} %) on {r['n']} held-out models "
                   f"({result['space']}, seed {result['seed']}, {result['threads']} thread(s), "
                   f"{where})"
                   + (f"; noise floor (repeat vs repeat) RMSPE {noise['rmspe_pct']:.1f} %"
                      if noise else ""))
    for d, drift in result.get("drift", {}).items():
        refit = result["refit"][d]
        click.echo(f"{d}: drift since the build: the LUT's {drift['n']} samples now differ by "
                   f"RMSPE {drift['rmspe_pct']:.1f} % from their build-time timings; refitted "
                   f"on them: RMSPE {refit['rmspe_pct']:.1f} %, "
                   f"{100 * refit['within_10pct']:.0f} % within ±10 %")
    if result.get("emulation"):
        click.echo(f"note: {result['emulation']}")


@click.command("search")
@click.option("--space", "spaces", multiple=True, default=("mbspace",), help=SPACE_HELP +
              " Repeat with --study to compare spaces.")
@click.option("--data", default="synthetic", help="Dataset SPEC for the proxy training.")
@click.option("--target", type=click.Choice(TARGETS), default="host",
              help="Where latency is predicted (its LUT) and finalists / zoo models are "
                   "measured: host (LiteRT here), local / adb (benchmark_model on this "
                   "machine / a phone), gpu (LiteRT's GPU accelerator).")
@_target_options(delegate_default="--lut's, else xnnpack")
@click.option("--latency-limit", type=float, default=None, show_default="none",
              help="Hard limit (ms): candidates predicted over it are rejected.")
@click.option("--latency-target", type=float, default=None, show_default="none",
              help="Soft target (ms): MnasNet reward acc * (lat / T) ** -0.07.")
@click.option("--quant", type=click.Choice(["fp32", "int8"]), default="fp32",
              help="Model format whose latency counts.")
@click.option("--trials", type=int, default=20, help="Candidates trained.")
@click.option("--epochs-per-trial", "epochs", type=int, default=2, help="Proxy training length.")
@click.option("--workers", type=int, default=1,
              help="Trials trained at once (worker processes, or concurrent Ray trials); "
                   "with --strategy evolve also the children per generation.")
@click.option("--strategy", type=click.Choice(["random", "evolve"]), default="random",
              help="random: sample every candidate; evolve: regularized evolution (a random "
                   "initial population, then mutations of tournament winners).")
@click.option("--population", type=int, default=None, show_default="8 with --strategy evolve",
              help="evolve: the initial random candidates, and how many of the most recent "
                   "trained ones the tournaments draw from.")
@click.option("--tournament", type=int, default=None, show_default="3 with --strategy evolve",
              help="evolve: candidates per tournament; the best one's mutation is the child.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              help="Where trials train: local spawned processes, or Ray Tune trials "
                   '(pip install "mobilekit[ray]").')
@click.option("--ray-address", default=None, show_default="start a local Ray instance",
              help="Existing Ray cluster for --engine ray (e.g. auto, or HEAD_IP:6379).")
@click.option("--max-draws", type=int, default=None, show_default="50 x --trials",
              help="Give up (exit 2 when none fits) after this many draws.")
@click.option("--finalists", type=int, default=3, help="Best candidates measured on the target.")
@click.option("--zoo", default=",".join(("mobilenet_v3_small:0.75", "mobilenet_v2:0.35")),
              help="Comma-separated zoo models NAME[:ALPHA] trained and measured on the same "
                   "budget for the Pareto plot ('none': no zoo models).")
@click.option("--lut", type=click.Path(dir_okay=False), default=None,
              show_default="build OUT/lut.json on the target",
              help="Latency model from `latency-model build` (same target, threads, delegate; "
                   "adb: same phone model).")
@click.option("--lut-samples", type=int, default=24, help="Samples when building OUT/lut.json.")
@click.option("--resolution", type=int, default=64, help="Input size for training and timing.")
@click.option("--batch-size", type=int, default=32)
@click.option("--threads", type=int, default=1, help="Interpreter threads when timing.")
@click.option("--seed", type=int, default=0, help="Sampling seed (same seed: same candidates).")
@click.option("--study", is_flag=True, default=False,
              help="Design-space study: compare the error EDFs of the given --space values.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/search",
              help="Search directory (rerun the same command on it to resume).")
def search(spaces, zoo, study, out, **settings):
    """Latency-aware architecture search over a design space.

    \b
    Examples:
      mobilekit search --space mbspace --latency-limit 2 --quant int8 --trials 30 --out runs/s1
      mobilekit search --space regnet --latency-target 3 --trials 20 --workers 2
      mobilekit search --study --space mbspace:se=on --space mbspace:se=off --trials 12
      mobilekit search --space mbspace --latency-limit 2 --strategy evolve --population 8 --tournament 3 --trials 40 --workers 2
      mobilekit search --space mbspace --latency-limit 2 --engine ray --workers 8 --out runs/s2
      mobilekit search --space mbspace --latency-limit 5 --quant int8 --target adb --serial R58M --benchmark-binary ./android_aarch64_benchmark_model --lut lut_phone.json --out runs/phone
      mobilekit search --space mbspace --latency-limit 3 --target local --benchmark-binary ./linux_x86-64_benchmark_model --delegate cpu --out runs/local
      mobilekit search --space mbspace --latency-limit 4 --target gpu --lut lut_gpu.json --out runs/gpu
    """
    from mobilekit.search.run import run_search, run_study

    settings["zoo"] = [] if zoo.strip().lower() == "none" else [
        z.strip() for z in zoo.split(",") if z.strip()]
    if study:
        result = run_study(out, list(spaces), **settings)
        for c in result["comparisons"]:
            lo, hi = c["diff_ci90"]
            diff = 100 * c["mean_error_diff_b_minus_a"]
            click.echo(f"{c['b']} vs {c['a']}: mean error {diff:+.2f} points (90 % CI "
                       f"{100 * lo:+.2f} .. {100 * hi:+.2f}), KS {c['ks_distance']:.2f}, "
                       f"n = {c['n_b']} / {c['n_a']}")
        click.echo(f"Study: {Path(out) / 'study.json'}")
        return
    if len(spaces) != 1:
        raise ValueError("give one --space (several only with --study)")
    summary = run_search(out, space=spaces[0], **settings)
    click.echo(f"Search directory: {out}")
    echo_json(summary)
    if summary["measured_on"].get("emulation"):
        click.echo(f"note: {summary['measured_on']['emulation']}")
