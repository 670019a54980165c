"""Check that mobilekit's in-process host runner agrees with LiteRT's own benchmark script.

Converts a model (mobilenet_v2 fp32, 224, random weights by default), then alternates
`mobilekit.bench.host.run_host` and ai_edge_litert's `benchmark_litert_model.py` (the
`litert-benchmark` CLI, its `run_benchmark` called in this process) on it, with the same
threads and run counts, many short alternating repetitions. Prints both medians per
repetition, the ratio of the medians of medians, the ratio of each tool's best median, and
the median of the per-pair ratios (adjacent repetitions see about the same machine load),
which decides: exit 1 when it is outside 1 +- tolerance. Not a test: it takes a minute or
two; on a loaded shared machine single repetitions swing by 2x, so read all three numbers.

Both tools use XNNPACK on the CPU; run_host goes through the Interpreter API, the LiteRT
script through CompiledModel, so the comparison also checks the runner's timing loop.

Examples:
    python tools/check_host_runner_agreement.py
    python tools/check_host_runner_agreement.py --threads 2 --repeats 5 --num-runs 100
    python tools/check_host_runner_agreement.py --tflite model.tflite
"""
import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def convert(model_name, resolution, path):
    """Convert in a child process so TensorFlow is not loaded in the measuring process."""
    code = ("import sys, mobilekit; from mobilekit.keras import tf; "
            "from mobilekit.zoo import create_model; "
            "m = create_model(sys.argv[1], resolution=int(sys.argv[2])); "
            "open(sys.argv[3], 'wb').write(tf.lite.TFLiteConverter.from_keras_model(m).convert())")
    subprocess.run([sys.executable, "-c", code, model_name, str(resolution), str(path)],
                   check=True, capture_output=True, text=True)
    return path


def host_median_ms(tflite, threads, warmup_runs, num_runs):
    from mobilekit.bench.host import run_host

    row = run_host(tflite, "xnnpack", threads, warmup_runs=warmup_runs, warmup_min_secs=0.0,
                   num_runs=num_runs, min_secs=0.0)
    if not row["ok"]:
        raise RuntimeError(f"run_host failed: {row['error']}")
    return row["inference_median_us"] / 1000.0, row["inference_count"]


def litert_median_ms(tflite, threads, warmup_runs, num_runs):
    """ai_edge_litert's own benchmark (the `litert-benchmark` CLI), called in process."""
    from ai_edge_litert.tools import benchmark_litert_model as tool

    args = argparse.Namespace(
        model=str(tflite), signature="", use_cpu=True, no_cpu=False, use_gpu=False,
        use_npu=False, require_full_delegation=False, dispatch_library_path="",
        compiler_plugin_path="", runtime_path="", num_runs=num_runs, warmup_runs=warmup_runs,
        num_threads=threads, result_json="", verbose=False)
    with contextlib.redirect_stdout(io.StringIO()), _quiet_stderr():
        latency = tool.run_benchmark(args)["latency"]
    return latency["median_ms"], latency["num_runs"]


@contextlib.contextmanager
def _quiet_stderr():
    """Silence LiteRT's C++ plugin-loading warnings (written to fd 2, not sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2", help="zoo model to convert")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--tflite", help="use this .tflite instead of converting a zoo model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup-runs", type=int, default=3)
    parser.add_argument("--num-runs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=20, help="alternating repetitions")
    parser.add_argument("--tolerance", type=float, default=0.10)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mk_agree_") as workdir:
        tflite = Path(args.tflite) if args.tflite else convert(
            args.model, args.resolution, Path(workdir) / f"{args.model}_fp32.tflite")
        print(f"model {tflite.name} ({os.path.getsize(tflite) / 1e6:.2f} MB), xnnpack, "
              f"{args.threads} thread(s), {args.warmup_runs} warm-up + {args.num_runs} runs")
        host, litert = [], []
        for rep in range(args.repeats):
            order = ("host", "litert") if rep % 2 == 0 else ("litert", "host")
            for which in order:
                measure = host_median_ms if which == "host" else litert_median_ms
                median, count = measure(tflite, args.threads, args.warmup_runs, args.num_runs)
                (host if which == "host" else litert).append(median)
                print(f"  rep {rep + 1} {which:<6} median {median:8.3f} ms ({count} runs)")
    host_ms, litert_ms = statistics.median(host), statistics.median(litert)
    pair_ratio = statistics.median(h / l for h, l in zip(host, litert))
    best_ratio = min(host) / min(litert)
    # Verdict on adjacent pairs: a shared machine's load drifts over seconds, and a pair
    # sees about the same load, so its ratio cancels most of it.
    ok = abs(pair_ratio - 1.0) <= args.tolerance
    print(f"median of medians: run_host {host_ms:.3f} ms, litert-benchmark {litert_ms:.3f} ms, "
          f"ratio {host_ms / litert_ms:.3f}")
    print(f"best median: run_host {min(host):.3f} ms, litert-benchmark {min(litert):.3f} ms, "
          f"ratio {best_ratio:.3f}")
    print(f"median per-pair ratio {pair_ratio:.3f} -> {'AGREE' if ok else 'DISAGREE'} "
          f"(tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
