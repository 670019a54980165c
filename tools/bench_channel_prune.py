"""Channel pruning of MobileNetV2: accuracy after a short fine-tune, MACs, host latency.

Steps (one process, one machine):
  1. a training run (given with --run, or trained here with the trainer's defaults on the
     synthetic data: mobilenet_v2 alpha 0.5 at 64 px, 10 epochs);
  2. `mobilekit compress channel-prune` job: keep <= --macs-fraction of the MACs, fine-tune
     --epochs epochs;
  3. the control: the unpruned model fine-tuned with the same recipe (so extra training
     is not mistaken for "pruning did not hurt");
  4. fp32 and int8 .tflite of the unpruned and the pruned model, latency with the host
     LiteRT runner (mobilekit.bench.host.run_host: XNNPACK, 1 thread), measured in
     alternating rounds (unpruned, pruned, unpruned, ...) and summarised as the median of
     the per-round medians, so that load changes on a shared host hit both alike.

  5. with --latency-resolution R: the same two architectures rebuilt at R x R (the conv
     weights do not depend on the input size) and timed the same way, int8 calibrated on
     random images (enough for speed, not for accuracy).

Host numbers, not phone numbers: only the ratio pruned / unpruned means something.
Usage:
  python tools/bench_channel_prune.py --workdir /tmp/cp [--run RUN_DIR] [--macs-fraction 0.7]
      [--epochs 2] [--rounds 7] [--latency-resolution 224] [--json result.json]
"""
import argparse
import json
import statistics
import sys
from pathlib import Path

import mobilekit  # noqa: F401  (tf_keras)


def train_run(workdir):
    from mobilekit.train import trainer

    out = Path(workdir) / "mobilenet_v2_0.5"
    if (out / "model.keras").is_file():
        return out
    config = trainer.resolve_config("mobilenet_v2", alpha=0.5)
    out.mkdir(parents=True, exist_ok=True)
    trainer.train(config, out, verbose=2)
    return out


def control_run(run, out, epochs):
    """The unpruned model through the same fine-tune (identity compression)."""
    from mobilekit.compress import finetune

    return finetune.compress_run(run, "finetuned", lambda model, steps: (model, {}), out=out,
                                 epochs=epochs, measure_compressed=False)


def export_pair(run_dir, workdir, tag):
    """{quant: .tflite path} for fp32 and int8 (calibrated on the run's training images)."""
    from mobilekit.export.convert import convert
    from mobilekit.export.pipeline import dataset_samples
    from mobilekit.compress.finetune import load_source

    model, config = load_source(run_dir)
    samples = dataset_samples(config["data"], config["resolution"], 200, config["mean"],
                              config["std"])
    paths = {}
    for quant in ("fp32", "int8"):
        data = convert(model, quant, representative_data=samples if quant == "int8" else None)
        path = Path(workdir) / f"{tag}_{quant}.tflite"
        path.write_bytes(data)
        paths[quant] = path
    return paths


def at_resolution(model, resolution):
    """The same architecture and weights with a resolution x resolution input."""
    from mobilekit.keras import keras

    config = model.get_config()
    entry = config["layers"][0]
    entry["config"]["batch_input_shape"] = (None, resolution, resolution,
                                            entry["config"]["batch_input_shape"][-1])
    new = keras.Model.from_config(config)
    new.set_weights(model.get_weights())
    return new


def export_at_resolution(run_dir, workdir, tag, resolution):
    import numpy as np

    from mobilekit.compress.finetune import load_source
    from mobilekit.export.convert import convert

    model = at_resolution(load_source(run_dir)[0], resolution)
    samples = np.random.default_rng(0).normal(size=(16, resolution, resolution, 3))
    paths = {}
    for quant in ("fp32", "int8"):
        data = convert(model, quant, representative_data=samples.astype(np.float32)
                       if quant == "int8" else None)
        paths[quant] = Path(workdir) / f"{tag}_{resolution}px_{quant}.tflite"
        paths[quant].write_bytes(data)
    return paths


def alternating_latency(paths, rounds, threads=1):
    """{name: {"median_us", "round_medians_us", "delegation"}} measured in alternating rounds."""
    from mobilekit.bench.host import run_host

    rows = {name: [] for name in paths}
    delegation = {}
    for _ in range(rounds):
        for name, path in paths.items():
            row = run_host(path, delegate="xnnpack", threads=threads, num_runs=30, min_secs=1.0)
            if not row["ok"]:
                raise RuntimeError(f"{path}: {row['error']}")
            rows[name].append(row["inference_median_us"])
            delegation[name] = f"{row['delegated_nodes']}/{row['total_nodes']}"
    return {name: {"median_us": round(statistics.median(v), 1), "round_medians_us": v,
                   "delegated_nodes": delegation[name]} for name, v in rows.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="bench_channel_prune")
    parser.add_argument("--run", default=None, help="existing training run (else train one)")
    parser.add_argument("--macs-fraction", type=float, default=0.7)
    parser.add_argument("--criterion", default="l1", choices=["l1", "bn_gamma"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--latency-resolution", type=int, default=None)
    parser.add_argument("--latency-only", action="store_true",
                        help="reuse --workdir's pruned run; only time at --latency-resolution")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    from mobilekit.compress.jobs import channel_prune_run

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    run = Path(args.run) if args.run else train_run(workdir)
    if args.latency_only:
        return latency_only(run, workdir, args)
    pruned_dir, metrics = channel_prune_run(
        run, macs_fraction=args.macs_fraction, criterion=args.criterion, epochs=args.epochs,
        out=_pruned_dir(workdir, args))
    control_dir, control = control_run(run, workdir / f"control_e{args.epochs}", args.epochs)
    paths = {}
    for tag, run_dir in (("unpruned", run), ("pruned", pruned_dir)):
        for quant, path in export_pair(run_dir, workdir, tag).items():
            paths[f"{tag}_{quant}"] = path
    if args.latency_resolution:
        for tag, run_dir in (("unpruned", run), ("pruned", pruned_dir)):
            for quant, path in export_at_resolution(run_dir, workdir, tag,
                                                    args.latency_resolution).items():
                paths[f"{tag}_{args.latency_resolution}px_{quant}"] = path
    latency = alternating_latency(paths, args.rounds)
    result = {
        "source_run": str(run), "pruned_run": str(pruned_dir), "control_run": str(control_dir),
        "criterion": args.criterion, "fine_tune_epochs": args.epochs,
        "val_accuracy": {"source": metrics["source_val_accuracy"],
                         "pruned_no_fine_tune": metrics["compressed_val_accuracy"],
                         "pruned_fine_tuned": metrics["val_accuracy"],
                         "unpruned_fine_tuned_control": control["val_accuracy"]},
        "macs": [metrics["macs_before"], metrics["macs_after"], metrics["macs_fraction"]],
        "params": [metrics["params_before"], metrics["params_after"],
                   metrics["params_fraction"]],
        "latency_xnnpack_1thread": latency,
        "speedup": {q: round(latency[f"unpruned_{q}"]["median_us"]
                             / latency[f"pruned_{q}"]["median_us"], 3)
                    for q in ("fp32", "int8")},
    }
    res = args.latency_resolution
    if res:
        result["speedup"].update({
            f"{res}px_{q}": round(latency[f"unpruned_{res}px_{q}"]["median_us"]
                                  / latency[f"pruned_{res}px_{q}"]["median_us"], 3)
            for q in ("fp32", "int8")})
    return _emit(result, args.json)


def _pruned_dir(workdir, args):
    return workdir / f"pruned_{args.macs_fraction:g}_{args.criterion}_e{args.epochs}"


def latency_only(run, workdir, args):
    """Time the unpruned / pruned architectures at --latency-resolution only."""
    res = args.latency_resolution
    if not res:
        raise SystemExit("--latency-only needs --latency-resolution")
    paths = {}
    for tag, run_dir in (("unpruned", run), ("pruned", _pruned_dir(workdir, args))):
        for quant, path in export_at_resolution(run_dir, workdir, tag, res).items():
            paths[f"{tag}_{res}px_{quant}"] = path
    latency = alternating_latency(paths, args.rounds)
    return _emit({"source_run": str(run), "pruned_run": str(_pruned_dir(workdir, args)),
                  "latency_xnnpack_1thread": latency,
                  "speedup": {f"{res}px_{q}": round(latency[f"unpruned_{res}px_{q}"]["median_us"]
                                                     / latency[f"pruned_{res}px_{q}"]["median_us"],
                                                     3) for q in ("fp32", "int8")}}, args.json)


def _emit(result, json_path):
    text = json.dumps(result, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
