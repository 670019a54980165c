"""What a search leaves behind: EDF and Pareto plots, the chosen model's spec and card,
the summary, and the EDF comparison of a design-space study."""
import json
import shutil
from pathlib import Path

import numpy as np

from mobilekit.io import write_atomic, write_json_atomic

BOOTSTRAP = 2000


def edf(errors):
    """(sorted errors, F) with F(e_i) = share of models with error <= e_i."""
    e = np.sort(np.asarray(errors, float))
    return e, np.arange(1, len(e) + 1) / len(e)


def plot_edf(groups, path):
    """Error EDFs (RegNet's design-space view), one curve per group {label: rows}."""
    from mobilekit.report.plots import _finish, require_matplotlib

    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in groups.items():
        errs = [100 * r["error"] for r in rows if r.get("error") is not None]
        if errs:
            x, f = edf(errs)
            ax.step(np.concatenate([[x[0]], x]), np.concatenate([[0], f]), where="post",
                    label=f"{label} (n={len(errs)})")
    ax.set_ylim(0, 1.02)
    return _finish(plt, fig, ax, "proxy validation error (%)", "cumulative share of models",
                   "Error EDF of the sampled space", path)


def _latency_ms(row):
    v = row.get("measured_us") if row.get("measured_us") is not None else row.get("predicted_us")
    return None if v is None else v / 1e3


def plot_pareto(trials, zoo_rows, chosen, path, settings):
    """Accuracy vs latency: candidates (hollow: predicted, filled: measured), the zoo
    models (measured), the Pareto front of everything measured, the chosen model."""
    from mobilekit.report.plots import _save, pareto_front, require_matplotlib

    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pred = [(_latency_ms(r), r["val_accuracy"]) for r in trials
            if r.get("measured_us") is None and r.get("predicted_us") is not None]
    meas = [(r["measured_us"] / 1e3, r["val_accuracy"], r) for r in trials
            if r.get("measured_us") is not None]
    zoo = [(r["measured_us"] / 1e3, r["val_accuracy"], r) for r in zoo_rows
           if r.get("measured_us") is not None and r.get("val_accuracy") is not None]
    if pred:
        ax.scatter(*zip(*pred), facecolors="none", edgecolors="tab:gray",
                   label="candidates (predicted latency)")
    if meas:
        ax.scatter([p[0] for p in meas], [p[1] for p in meas], color="tab:blue", zorder=3,
                   label="finalists (measured)")
    if zoo:
        ax.scatter([p[0] for p in zoo], [p[1] for p in zoo], color="tab:orange", marker="s",
                   zorder=3, label="zoo models (measured)")
        for x, y, r in zoo:
            ax.annotate(r["zoo"], (x, y), textcoords="offset points", xytext=(4, -10),
                        fontsize=7)
    front = pareto_front(meas + zoo)
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="tab:red",
                zorder=2, label="Pareto front (measured)")
    if chosen and chosen.get("measured_us") is not None:
        ax.scatter([chosen["measured_us"] / 1e3], [chosen["val_accuracy"]], marker="*", s=200,
                   color="tab:red", zorder=4, label="chosen")
    if settings.get("latency_limit"):
        ax.axvline(settings["latency_limit"], color="k", ls="--", lw=1, label="latency limit")
    ax.set_xlabel(f"latency on {settings['target']} {settings['quant']}, "
                  f"{settings['threads']} thread(s) (ms)")
    ax.set_ylabel(f"proxy val accuracy ({settings['epochs']} epoch(s))")
    ax.set_title("Accuracy vs latency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    try:
        return _save(fig, path)
    finally:
        plt.close(fig)


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if v is None:
        return '"none"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a JSON string is a valid TOML basic string


def model_card(chosen, settings, spec_file="spec.json"):
    """A model card (TOML) for the chosen point, in the zoo cards' shape."""
    from mobilekit.zoo.registry import get_entry

    point = chosen["point"]
    option = (f"--option spec={spec_file}" if point["model"] == "mbspace" else
              " ".join(f"--option {k}={v}" for k, v in point["kwargs"].items()))
    lines = [
        f'name = {_toml_value(point["model"])}',
        f'family = {_toml_value(get_entry(point["model"]).family)}',
        'paper = "mobilekit search"',
        f'default_input = [{settings["resolution"]}, {settings["resolution"]}, 3]',
        'notes = """',
        f'Found by `mobilekit search --space {settings["space"]}` (seed {settings["seed"]}, draw '
        f'{chosen["draw"]}) on {settings["data"]}: proxy val accuracy {chosen["val_accuracy"]} '
        f'after {settings["epochs"]} epoch(s); measured {chosen["measured_us"] / 1e3:.3f} ms '
        f'({settings["quant"]}, {settings["target"]}, {settings["threads"]} thread(s)). Train '
        f'it at full length with: mobilekit train --model {point["model"]} {option} '
        f'--resolution {settings["resolution"]} --data {settings["data"]}',
        '"""',
        f'kwargs = {_toml_value(point["kwargs"])}',
        "",
        "[search]",
        f'space = {_toml_value(settings["space"])}',
        f'seed = {settings["seed"]}',
        f'draw = {chosen["draw"]}',
        f'data = {_toml_value(settings["data"])}',
        f'epochs = {settings["epochs"]}',
        f'resolution = {settings["resolution"]}',
        f'val_accuracy = {_toml_value(chosen["val_accuracy"])}',
        f'predicted_us = {_toml_value(chosen["predicted_us"])}',
        f'measured_us = {_toml_value(chosen["measured_us"])}',
        f'quant = {_toml_value(settings["quant"])}',
        f'target = {_toml_value(settings["target"])}',
        f'threads = {settings["threads"]}',
        f'within_limit_measured = {_toml_value(chosen["within_limit_measured"])}',
    ]
    return "\n".join(lines) + "\n"


def write_chosen(folder, chosen, settings):
    """chosen/spec.json (create_model kwargs), model_card.toml and run/ (its run directory)."""
    folder = Path(folder)
    point = chosen["point"]
    if point["model"] == "mbspace":
        write_json_atomic(folder / "spec.json", point["kwargs"]["spec"])
    else:
        write_json_atomic(folder / "spec.json", point["kwargs"])
    write_json_atomic(folder / "chosen.json", {**chosen, "resolution": settings["resolution"]})
    write_atomic(folder / "model_card.toml", model_card(chosen, settings, folder / "spec.json"))
    run = folder / "run"
    tmp = folder / ".run.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(chosen["run_dir"], tmp)
    shutil.rmtree(run, ignore_errors=True)
    tmp.rename(run)
    return {"spec": str(folder / "spec.json"), "card": str(folder / "model_card.toml"),
            "run_dir": str(run)}


def summary(rows, zoo_rows, chosen, settings, files):
    trained = [r for r in rows if r.get("val_accuracy") is not None]
    result = {"space": settings["space"], "draws": len(rows),
              "rejected": sum(r["status"] == "rejected" for r in rows),
              "trained": len(trained),
              "measured": sum(r.get("measured_us") is not None for r in rows),
              "chosen": None, "zoo": [], "files": files}
    if chosen:
        result["chosen"] = {k: chosen.get(k) for k in ("draw", "point", "val_accuracy",
                                                        "predicted_us", "measured_us",
                                                        "within_limit_measured")}
    for z in zoo_rows:
        result["zoo"].append({k: z.get(k) for k in ("zoo", "val_accuracy", "measured_us",
                                                    "predicted_us")})
    if chosen:
        peers = [z for z in zoo_rows if z.get("measured_us") is not None
                 and z["measured_us"] <= chosen["measured_us"]]
        best = max(peers, key=lambda z: z["val_accuracy"] or 0, default=None)
        result["best_zoo_at_or_below_chosen_latency"] = best and best["zoo"]
        result["chosen_at_least_as_accurate"] = (best is None or chosen["val_accuracy"]
                                                 >= (best["val_accuracy"] or 0))
    return result


def compare_edfs(errors_a, errors_b, seed=0):
    """RegNet-style comparison of two error samples: n per EDF, the KS distance between the
    EDFs, and the difference of mean errors (b - a) with a bootstrap 90 % interval."""
    a, b = np.asarray(errors_a, float), np.asarray(errors_b, float)
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"an EDF comparison needs >= 2 trained models per side; got "
                         f"{len(a)} and {len(b)}")
    grid = np.union1d(a, b)
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    rng = np.random.default_rng(seed)
    diffs = [rng.choice(b, len(b)).mean() - rng.choice(a, len(a)).mean()
             for _ in range(BOOTSTRAP)]
    low, high = np.percentile(diffs, [5, 95])
    return {"n_a": int(len(a)), "n_b": int(len(b)),
            "mean_error_a": round(float(a.mean()), 6), "mean_error_b": round(float(b.mean()), 6),
            "mean_error_diff_b_minus_a": round(float(b.mean() - a.mean()), 6),
            "diff_ci90": [round(float(low), 6), round(float(high), 6)],
            "ks_distance": round(float(np.max(np.abs(fa - fb))), 6),
            "bootstrap_resamples": BOOTSTRAP}
