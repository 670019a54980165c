"""Check that mobilekit's in-process host runner agrees with LiteRT's own benchmark script.

Converts a model (mobilenet_v2 fp32, 224, random weights by default), then alternates
`mobilekit.bench.host.run_host` and ai_edge_litert's `benchmark_litert_model.py` (the
`litert-benchmark` CLI) on it, same threads and run counts, each in a fresh process. Prints
both medians per repetition and the ratio of their medians; exits 1 when the ratio is outside
1 +- tolerance. Not a test: it takes about a minute and a quiet machine.

Both tools use XNNPACK on the CPU; run_host goes through the Interpreter API, the LiteRT
script through CompiledModel, so the comparison also checks the runner's timing loop.

Examples:
    python tools/check_host_runner_agreement.py
    python tools/check_host_runner_agreement.py --threads 2 --repeats 5 --num-runs 100
    python tools/check_host_runner_agreement.py --tflite model.tflite
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_HOST_SNIPPET = """
import json, sys
from mobilekit.bench.host import run_host
row = run_host(sys.argv[1], "xnnpack", int(sys.argv[2]), warmup_runs=int(sys.argv[3]),
               warmup_min_secs=0.0, num_runs=int(sys.argv[4]), min_secs=0.0)
print("RESULT " + json.dumps(row))
"""


def convert(model_name, resolution, path):
    import mobilekit  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    from mobilekit.keras import tf
    from mobilekit.zoo import create_model

    model = create_model(model_name, resolution=resolution)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    path.write_bytes(converter.convert())
    return path


def host_median_ms(tflite, threads, warmup_runs, num_runs):
    out = subprocess.run([sys.executable, "-c", _HOST_SNIPPET, str(tflite), str(threads),
                          str(warmup_runs), str(num_runs)],
                         capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("RESULT "))
    row = json.loads(line[len("RESULT "):])
    if not row["ok"]:
        raise RuntimeError(f"run_host failed: {row['error']}")
    return row["inference_median_us"] / 1000.0, row["inference_count"]


def litert_median_ms(tflite, threads, warmup_runs, num_runs, workdir):
    result = Path(workdir) / "litert_result.json"
    cmd = [sys.executable, "-m", "ai_edge_litert.tools.benchmark_litert_model",
           f"--model={tflite}", f"--num_threads={threads}", f"--warmup_runs={warmup_runs}",
           f"--num_runs={num_runs}", f"--result_json={result}"]
    subprocess.run(cmd, capture_output=True, text=True, check=True)
    latency = json.loads(result.read_text())["latency"]
    return latency["median_ms"], latency["num_runs"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="mobilenet_v2", help="zoo model to convert")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--tflite", help="use this .tflite instead of converting a zoo model")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup-runs", type=int, default=5)
    parser.add_argument("--num-runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3, help="alternating repetitions")
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
                if which == "host":
                    median, count = host_median_ms(tflite, args.threads, args.warmup_runs,
                                                   args.num_runs)
                    host.append(median)
                else:
                    median, count = litert_median_ms(tflite, args.threads, args.warmup_runs,
                                                     args.num_runs, workdir)
                    litert.append(median)
                print(f"  rep {rep + 1} {which:<6} median {median:8.3f} ms ({count} runs)")
    host_ms, litert_ms = statistics.median(host), statistics.median(litert)
    ratio = host_ms / litert_ms
    ok = abs(ratio - 1.0) <= args.tolerance
    print(f"run_host median {host_ms:.3f} ms | litert-benchmark median {litert_ms:.3f} ms | "
          f"ratio {ratio:.3f} -> {'AGREE' if ok else 'DISAGREE'} (tolerance {args.tolerance:.0%})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
