"""The delegate report (mobilekit.bench.delegates) as a markdown document."""
from mobilekit.report.tables import format_table

HEADERS = ("model", "delegate", "accelerated", "nodes", "CPU fallback (delegate's reason)",
           "static view", "max rel err", "agreement", "median ms", "verdict")


def _agreement(num):
    if not num:
        return None
    steps = [o["max_steps"] for o in num.get("outputs", []) if "max_steps" in o]
    parts = [f"max {max(steps)} int8 steps"] if steps else []
    if "top1_agreement" in num:
        parts.insert(0, f"top-1 {100 * num['top1_agreement']:.1f} %, "
                        f"top-5 {100 * num['top5_agreement']:.1f} %")
    elif num.get("min_box_iou") is not None:
        parts.insert(0, f"IoU >= {num['min_box_iou']:.3f}, "
                        f"score diff <= {num['max_score_diff']:.3f}")
    return ", ".join(parts) or None


def _row(report, row):
    name = row["delegate"] + (f" {row['precision']}" if row.get("precision") else "")
    nodes = (f"{row['delegated_nodes']}/{row['total_nodes']}"
             if row.get("delegated_nodes") is not None else None)
    fallback = "; ".join(f"{o['op']}: {o['reason']}" for o in row.get("fallback_ops") or [])
    static = row.get("static") or {}
    static_text = None if not static else ("compatible" if static.get("compatible")
                                           else "not compatible")
    num = row.get("numerics") or {}
    rel = [o["max_rel"] for o in num.get("outputs", []) if o.get("max_rel") is not None]
    timing = row.get("timing") or {}
    median = timing.get("median_us")
    return [report["model"], name, row.get("accelerated"), nodes, fallback or None, static_text,
            f"{max(rel):.2g}" if rel else None, _agreement(num),
            None if median is None else f"{median / 1000:.2f}", row["verdict"]]


def markdown_report(reports):
    rows = [_row(r, row) for r in reports for row in r["rows"]]
    lines = ["# Delegate report", "", format_table(HEADERS, rows, markdown=True), ""]
    adapters = {str(row["gpu_adapter"]) : row["gpu_adapter"] for r in reports
                for row in r["rows"] if row.get("gpu_adapter")}
    for adapter in adapters.values():
        kind = "software: timings are CPU emulation, never GPU figures" if adapter["software"] \
            else "hardware"
        lines.append(f"- GPU adapter: {adapter['name']} (vendor {adapter['vendor']}, backend "
                     f"{adapter['backend']}, {adapter['type']}; {kind})")
    for r in reports:
        lines.append(f"- {r['model']}: {r['samples']} {r['inputs']}")
    return "\n".join(lines) + "\n"
