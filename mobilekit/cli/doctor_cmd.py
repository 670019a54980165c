"""`mobilekit quant-doctor`: which layers int8 hurts, which remedy fixes it, the best file."""
import click

from mobilekit.cli.common import echo_json


@click.command("quant-doctor")
@click.argument("model")
@click.option("--data", default=None, show_default="the run's dataset",
              help="Dataset SPEC: calibration images from its train split, scored images "
                   "(labels needed) from its val split.")
@click.option("--calib-samples", type=int, default=300, show_default=True,
              help="Calibration images (the export default); the calibration-size curve "
                   "tries 8, 32, 128, 512 below it.")
@click.option("--calib-method", type=click.Choice(["average", "mse", "minmax"]),
              default="average", show_default=True,
              help="Calibration of the int8 file diagnosed (as `mobilekit export "
                   "--calib-method`); the other methods are tried as remedies.")
@click.option("--eval-samples", type=int, default=500, show_default=True,
              help="Validation images float and int8 are scored on, image by image.")
@click.option("--target-drop", type=float, default=1.0, show_default=True,
              help="Stop at the first remedy whose top-1 drop is within this many points.")
@click.option("--remedies", default=None, show_default="all, in the order the diagnosis gives",
              help="Comma-separated remedies to try: average, mse, minmax, bias_correction, "
                   "per_channel_dense, float_1, float_2, float_3, int16x8, qat, calib_N.")
@click.option("--qat-epochs", type=int, default=2, show_default=True,
              help="Epochs of the QAT remedy (train split, Adam 1e-4).")
@click.option("--bench-rounds", type=int, default=30, show_default=True,
              help="Host latency: timed invokes per file (round-robin over the files).")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              show_default="RUN_DIR/quant_doctor, else ./quant_doctor_<model>",
              help="Folder for quant_doctor.md/.json, plots and the recommended .tflite.")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print the JSON report instead of the summary.")
def quant_doctor(model, data, calib_samples, calib_method, eval_samples, target_drop,
                 remedies, qat_epochs, bench_rounds, out, as_json):
    """Find the layers int8 hurts in MODEL (a run directory or a .keras classifier),
    measure each remedy (drop vs float +/- SE on the same images, host latency, size) and
    write the recommended .tflite with its export report.

    \b
    Examples:
      mobilekit quant-doctor runs/train/mobilenet_v1
      mobilekit quant-doctor model.keras --data synthetic --eval-samples 300 --out doc
      mobilekit quant-doctor runs/train/mobilenet_v3_large --target-drop 0.5 --json
      mobilekit quant-doctor runs/train/shiftnet --calib-method minmax --remedies mse,qat
    """
    from pathlib import Path

    from mobilekit.export.doctor import diagnose, write_report

    log = (lambda msg: None) if as_json else (lambda msg: click.echo(msg, err=True))
    result = diagnose(model, data=data, calib_samples=calib_samples,
                      eval_samples=eval_samples, target_drop=target_drop,
                      calib_method=calib_method, qat_epochs=qat_epochs,
                      remedies=None if remedies is None else [
                          r.strip() for r in remedies.split(",") if r.strip()],
                      bench_rounds=bench_rounds, log=log)
    if out is None:
        source = Path(model)
        out = source / "quant_doctor" if source.is_dir() else Path(
            f"quant_doctor_{result['model']}")
    folder = write_report(result, out)
    if as_json:
        import json

        echo_json(json.loads((folder / "quant_doctor.json").read_text()))
        return
    click.echo(f"wrote {folder}/quant_doctor.md, quant_doctor.json, plots and "
               f"{result['model']}_int8_doctor.tflite")
    click.echo(result["summary"])
