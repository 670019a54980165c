"""Build (or load) a host latency model and measure its error on held-out models.

A built LUT's held-out models are timed in the same round-robin sessions as its samples and
kernel models (latency.build_lut_with_heldout): this shared host's speed wanders over
minutes, all models together (2-4 % between a build and a later session when quiet, up to
30 % under other jobs), and timed together they share it, so the table shows the
predictor's own error. `--later` (or `--lut`) measures them again in sessions of their own,
as `mobilekit latency-model eval` does (`--retime-samples`: the drift since the build).

Prints one row per dtype and subset: space, LUT samples, held-out models, RMSPE, share
within ±10 %, max error, and the noise floor (RMSPE of one end-to-end measurement of the
held-out models against a repeat of it: what no predictor can beat), plus the CPU flags and
the load average before and after. Ablations refit the same LUT samples with the tables
unscaled, with a cost and a scale per tabulated key (the earlier fit), with fewer kernel
tables (none: fitted costs only; depthwise only) and score them on the same measurements.

    nice -n 10 python tools/latency_model_accuracy.py --space mbspace --samples 30 \\
        --heldout 15 --resolution 64 --out docs/search/accuracy_mbspace.json

Everything is done by mobilekit.search.latency (build_lut, evaluate_lut, fit); this script
only chooses the subsets and prints the table.
"""
import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

from mobilekit.bench.hostinfo import cpu_info
from mobilekit.io import write_json_atomic
from mobilekit.search import latency

def _subsets(rows):
    """Row subsets: all, and (when present) without / only the models with 7x7 depthwise."""
    has7 = [any(k.startswith("dwconv_k7") for k in r["features"]) for r in rows]
    out = {"all": list(range(len(rows)))}
    if any(has7) and not all(has7):
        out["no 7x7"] = [i for i, h in enumerate(has7) if not h]
        out["with 7x7"] = [i for i, h in enumerate(has7) if h]
    return out


def _kernels_only(kernels, prefix):
    return {k: v for k, v in (kernels or {}).items() if prefix is None or k.startswith(prefix)}


def score(lut, result):
    """[{dtype, model, subset, n, rmspe, within, max, noise}] for the LUT and its ablations."""
    out = []
    for d, res in result["dtypes"].items():
        rows = res["rows"]
        kernels = lut["tables"][d].get("kernels") or {}
        variants = {"lut": lut["tables"][d],
                    "tables, a scale per kind": latency.fit(lut["samples"], d, kernels)}
        if result.get("refit"):  # refitted on the samples re-timed with the held-out models
            variants["lut, samples re-timed"] = result["refit"][d]["table"]
        if kernels:  # refit on the same samples with fewer kernel tables
            variants["tables at scale 1"] = latency.fit(lut["samples"], d, kernels,
                                                        table_scale="fixed")
            variants["tables, costs and scale per key"] = latency.fit(
                lut["samples"], d, kernels, table_scale="fitted")
            variants["fitted only"] = latency.fit(lut["samples"], d, {})
            variants["dw tables only"] = latency.fit(lut["samples"], d,
                                                     _kernels_only(kernels, "dwconv_"))
        for name, table in variants.items():
            pred = [latency.predict_features(table, r["features"]) for r in rows]
            for subset, idx in _subsets(rows).items():
                meas = [rows[i]["measured_us"] for i in idx]
                e = latency.errors([pred[i] for i in idx], meas)
                noise = None
                if rows[0].get("repeat_us") and len(rows[0]["repeat_us"]) > 1:
                    noise = latency.errors([rows[i]["repeat_us"][0] for i in idx],
                                           [rows[i]["repeat_us"][1] for i in idx])["rmspe_pct"]
                out.append({"dtype": d, "model": name, "subset": subset, "n": len(idx),
                            "rmspe_pct": e["rmspe_pct"], "within_10pct": e["within_10pct"],
                            "max_abs_pct": e["max_abs_pct"], "noise_rmspe_pct": noise})
    return out


def pooled(lut, others):
    """`lut` refitted on its samples plus the others' (more samples for the fitted costs)."""
    same = ("space", "resolution", "target", "threads")
    for other in others:
        bad = [k for k in same if other[k] != lut[k]]
        if bad:
            raise SystemExit(f"Error: --pool LUTs must share {', '.join(same)}; "
                             f"{bad[0]} is {other[bad[0]]!r}, not {lut[bad[0]]!r}")
    samples = lut["samples"] + [s for other in others for s in other["samples"]]
    tables = {d: latency.fit(samples, d, t.get("kernels")) for d, t in lut["tables"].items()}
    return {**lut, "samples": samples, "tables": tables}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--space", default="mbspace")
    ap.add_argument("--samples", type=int, default=30, help="LUT samples (default 30)")
    ap.add_argument("--heldout", type=int, default=15, help="held-out models (default 15)")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--dtype", default="fp32,int8")
    ap.add_argument("--seed", type=int, default=0, help="LUT seed; held-out: seed + 1000")
    ap.add_argument("--heldout-seed", type=int, default=None,
                    help="seed of the held-out models (default: the LUT's seed + 1000)")
    ap.add_argument("--repeats", type=int, default=2, help="held-out measurements (>= 2)")
    ap.add_argument("--lut", default=None, help="evaluate this LUT instead of building one")
    ap.add_argument("--lut-out", default=None, help="write the built LUT here")
    ap.add_argument("--pool", nargs="*", default=[], metavar="LUT",
                    help="refit the LUT on its samples plus those of these LUTs (same space, "
                         "resolution, target, threads; the first LUT's kernel tables)")
    ap.add_argument("--later", action="store_true",
                    help="after building, also measure the held-out models again in sessions "
                         "of their own (as `latency-model eval` does): the error a LUT shows "
                         "when the host has drifted since its build")
    ap.add_argument("--retime-samples", action="store_true",
                    help="time the LUT's samples again with the held-out models (same "
                         "round-robin sessions): prints the host's drift since the build and "
                         "the error of the table refitted on the re-timed samples")
    ap.add_argument("--rescore", default=None, metavar="REPORT",
                    help="no measuring: score the held-out rows of an earlier report of this "
                         "tool (JSON, may be gzipped) again against --lut's samples refitted "
                         "by today's fit and its ablations")
    ap.add_argument("--out", default=None, help="write the result JSON here")
    args = ap.parse_args(argv)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    load_before, t0 = os.getloadavg(), time.time()
    if args.rescore:
        return rescore(args.lut, args.rescore)
    if args.lut:
        lut, result = latency.load_lut(args.lut), None
    else:  # the held-out models timed in the same sessions as the LUT's samples and kernels
        lut, held = latency.build_lut_with_heldout(
            args.space, args.samples, args.seed, args.resolution, dtypes, log=log,
            heldout=args.heldout, heldout_seed=args.heldout_seed, repeats=args.repeats)
        result = {"space": lut["space"], "seed": args.heldout_seed or args.seed + 1000,
                  "sessions": "same as the LUT's", "repeats": args.repeats,
                  "dtypes": {d: latency.heldout_errors(lut["tables"][d], held, d)
                             for d in dtypes}}
        if args.lut_out:
            latency.write_lut(args.lut_out, lut)
    if args.pool:
        lut = pooled(lut, [latency.load_lut(p) for p in args.pool])
        result = None  # the pooled samples were timed in other sessions
    build_s = time.time() - t0
    later = None
    if result is None or args.later:  # measured now, in sessions of their own
        later = latency.evaluate_lut(lut, samples=args.heldout, seed=args.heldout_seed,
                                     dtypes=dtypes, log=log, repeats=args.repeats,
                                     retime_samples=args.retime_samples)
        result = result or later
    report = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": cpu_info(),
              "load_avg_before": [round(x, 2) for x in load_before],
              "load_avg_after": [round(x, 2) for x in os.getloadavg()],
              "space": lut["space"], "resolution": lut["resolution"],
              "lut_samples": len(lut["samples"]), "heldout": args.heldout,
              "heldout_seed": result["seed"],
              "build_seconds": round(build_s, 1),
              "eval_seconds": round(time.time() - t0 - build_s, 1),
              "scores": score(lut, result), "eval": result,
              "later": later if later is not result else None,
              "later_scores": score(lut, later) if later and later is not result else None}
    if args.out:
        write_json_atomic(args.out, report)
    cpu = report["cpu"]
    print(f"# {report['date']}; {cpu['model']}, {cpu.get('cpus')} CPUs, flags "
          f"{' '.join(cpu['flags'])}; load avg before {report['load_avg_before']}, after "
          f"{report['load_avg_after']}; XNNPACK, {lut['threads']} thread(s); build "
          f"{report['build_seconds']:.0f} s, eval {report['eval_seconds']:.0f} s")
    print("| space | samples | held-out | held-out timed in sessions | dtype | model | subset | "
          "RMSPE | within ±10 % | max | noise floor RMSPE (repeat) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    _print_scores(lut, report["scores"], result)
    if report["later_scores"]:
        _print_scores(lut, report["later_scores"], later)
    for d, e in (later or {}).get("drift", {}).items():
        print(f"# drift since the build ({d}): the LUT's {e['n']} samples re-timed with the "
              f"later held-out sessions, RMSPE {e['rmspe_pct']:.1f} % (build-time vs then), "
              f"max {e['max_abs_pct']:.1f} %")
    return report


def rescore(lut_path, report_path):
    """{"scores", "later_scores"} of an earlier report, recomputed from its held-out rows
    and the LUT's samples with today's fit (no measuring); prints the tables."""
    if not lut_path:
        raise SystemExit("Error: --rescore needs the report's LUT (--lut)")
    lut, raw = latency.load_lut(lut_path), Path(report_path).read_bytes()
    report = json.loads(gzip.decompress(raw) if report_path.endswith(".gz") else raw)
    print(f"# rescored {report_path} (measured {report['date']}, load avg "
          f"{report['load_avg_before']} -> {report['load_avg_after']})")
    out = {"scores": score(lut, report["eval"]),
           "later_scores": score(lut, report["later"]) if report.get("later") else None}
    _print_scores(lut, out["scores"], report["eval"])
    if out["later_scores"]:
        _print_scores(lut, out["later_scores"], report["later"])
    return out


def _print_scores(lut, scores, result):
    """The table rows; `result` says in which sessions its held-out models were timed."""
    sessions = result.get("sessions", "their own, after the build")
    for s in scores:
        noise = "-" if s["noise_rmspe_pct"] is None else f"{s['noise_rmspe_pct']:.1f} %"
        print(f"| `{lut['space']}` @{lut['resolution']} px | {len(lut['samples'])} | {s['n']} | "
              f"{sessions} | {s['dtype']} | {s['model']} | {s['subset']} | "
              f"{s['rmspe_pct']:.1f} % | {100 * s['within_10pct']:.0f} % | "
              f"{s['max_abs_pct']:.1f} % | {noise} |")


if __name__ == "__main__":
    main()
