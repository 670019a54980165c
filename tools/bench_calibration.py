"""int8 calibration methods compared on trained runs: each run exported once per method and
scored image by image against its float model on the same validation images.

Only the activation ranges differ between the files of one run (same weights, same
calibration images), so the differences between methods are the calibration's.

Example:
  python tools/bench_calibration.py runs/train/shiftnet runs/train/mobilenet_v2 \\
      --methods average,mse --data synthetic:val=500 --out calib_cmp
Writes OUT/calibration.json and OUT/calibration.md; resumable (finished pairs are kept).
"""
import argparse
import json
from pathlib import Path

from paired_int8_eval import paired_top1

from mobilekit.report.writers import write_markdown_table


def score(run_dir, method, data, out):
    """method: a calibration method, "+bias" appended for bias correction."""
    from mobilekit.export.pipeline import export

    name = Path(run_dir).resolve()
    calibration, _, extra = method.partition("+")
    tflite, _ = export(str(run_dir), "int8", calib_method=calibration,
                       bias_correction=extra == "bias",
                       out=str(out / f"{name.parent.name}_{name.name}_{method}.tflite"))
    row = paired_top1(run_dir, tflite, data)
    return {"run": str(run_dir), "method": method, **row}


def write_report(rows, out, methods):
    by_run = {}
    for row in rows:
        by_run.setdefault(row["run"], {})[row["method"]] = row
    table = []
    for run, scored in by_run.items():
        first = next(iter(scored.values()))
        cells = [run, first["data"], first["images"], f"{100 * first['float_top1']:.2f}"]
        for method in methods:
            row = scored.get(method)
            cells.append(f"{row['drop_points']:+.2f} ± {row['drop_se_points']:.2f}"
                         if row else "-")
        table.append(cells)
    (out / "calibration.json").write_text(json.dumps(rows, indent=2))
    headers = ["run", "data", "images", "float top-1 %"] + [f"{m} drop (points)" for m in methods]
    write_markdown_table(out / "calibration.md", headers, table,
                         title="int8 top-1 drop by calibration method",
                         notes=["drop: float minus int8 top-1 on the same images, with the "
                                "standard error from the images only one of them gets right"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training run directories")
    parser.add_argument("--methods", default="average,mse",
                        help="comma-separated calibration methods; append +bias for bias "
                             "correction (e.g. average,average+bias)")
    parser.add_argument("--data", default="synthetic", help="validation data spec")
    parser.add_argument("--out", default="calibration_cmp")
    args = parser.parse_args()
    methods = args.methods.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    done_file = out / "calibration.json"
    rows = json.loads(done_file.read_text()) if done_file.is_file() else []
    for run in args.runs:
        for method in methods:
            if any(r["run"] == run and r["method"] == method and r["data"] == args.data
                   for r in rows):
                continue
            row = score(run, method, args.data, out)
            rows.append(row)
            print(f"{run} {method}: float {100 * row['float_top1']:.2f} %, drop "
                  f"{row['drop_points']:+.2f} ± {row['drop_se_points']:.2f}", flush=True)
            write_report(rows, out, methods)


if __name__ == "__main__":
    main()
