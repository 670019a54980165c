"""The main job, end to end: train -> export fp32 + int8 -> evaluate both -> benchmark both.

Every step is the same library call the individual commands make; this module only
chains them and puts accuracy and latency side by side in one table.
"""
from pathlib import Path

from mobilekit.io import write_json_atomic
from mobilekit.report.tables import format_table

QUANTS = ("fp32", "int8")


def run(model="mobilenet_v1", alpha=0.75, epochs=3, resolution=None, data="synthetic",
        batch_size=None, threads=1, out=None, num_runs=50, log=print):
    """Returns the summary rows; writes RUN_DIR/quickstart.json and quickstart.md."""
    from mobilekit.bench.sweep import run_sweep
    from mobilekit.export.pipeline import export
    from mobilekit.train import rundir, trainer
    from mobilekit.train.evaluate import evaluate

    config = trainer.resolve_config(model, alpha=alpha, epochs=epochs, resolution=resolution,
                                    data=data, batch_size=batch_size)
    run_dir = Path(out) if out else rundir.new_run_dir(f"quickstart-{model}")
    run_dir.mkdir(parents=True, exist_ok=True)
    log(f"[1/4] training {model} alpha={alpha} for {epochs} epochs on {data} -> {run_dir}")
    metrics = trainer.train(config, run_dir)

    tflites, reports = {}, {}
    for quant in QUANTS:
        log(f"[2/4] exporting {quant}")
        tflites[quant], reports[quant] = export(str(run_dir), quant)

    log("[3/4] evaluating the Keras model and both .tflite files on the validation split")
    accuracy = {"keras": evaluate(str(run_dir / "model.keras"), data)}
    for quant in QUANTS:
        accuracy[quant] = evaluate(str(tflites[quant]), data)

    log(f"[4/4] benchmarking on the host (LiteRT, XNNPACK, {threads} thread)")
    rows = run_sweep([str(tflites[q]) for q in QUANTS], target="host", delegates=("xnnpack",),
                     threads=(threads,), num_runs=num_runs, out_dir=run_dir / "bench")
    summary = _summary(metrics, accuracy, reports, rows)
    write_json_atomic(run_dir / "quickstart.json", {"run_dir": str(run_dir), "rows": summary,
                                                    "train_metrics": metrics})
    table = format_summary(summary)
    (run_dir / "quickstart.md").write_text(table + "\n")
    log("")
    log(table)
    return summary


def _summary(metrics, accuracy, reports, bench_rows):
    out = [{"model": "keras (float)", "top1": accuracy["keras"]["top1"],
            "top5": accuracy["keras"]["top5"], "size_bytes": None, "median_ms": None,
            "fps": None, "train_val_accuracy": metrics.get("val_accuracy")}]
    for quant, row in zip(QUANTS, bench_rows):
        median = row.get("inference_median_us")
        out.append({"model": f"tflite {quant}", "top1": accuracy[quant]["top1"],
                    "top5": accuracy[quant]["top5"], "size_bytes": reports[quant]["size_bytes"],
                    "median_ms": None if median is None else median / 1000.0,
                    "fps": None if not median else 1e6 / median,
                    "ok": row.get("ok"), "error": row.get("error")})
    return out


def format_summary(rows):
    base = next((r["median_ms"] for r in rows if r.get("median_ms")), None)

    def cell(value, fmt):
        return "-" if value is None else format(value, fmt)

    return format_table(
        ["model", "top-1", "top-5", "size (KB)", "latency (ms, median)", "FPS", "speed-up"],
        [[r["model"], cell(r["top1"], ".3f"), cell(r["top5"], ".3f"),
          cell(None if r["size_bytes"] is None else r["size_bytes"] / 1024, ".1f"),
          cell(r["median_ms"], ".3f"), cell(r["fps"], ".1f"),
          "-" if not (base and r.get("median_ms")) else f"{base / r['median_ms']:.2f}x"]
         for r in rows], markdown=True)
