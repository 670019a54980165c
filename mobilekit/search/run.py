"""`mobilekit search`: latency-aware architecture search over a design space.

Loop (MnasNet's objective, RegNet's sampling): draw point i of the space (seeded, see
mobilekit.search.spaces; or, --strategy evolve, mutate a tournament winner: Search.evolve),
predict its latency with the target's latency model and reject it when over
--latency-limit; train the accepted ones briefly (proxy accuracy, one run directory each);
measure the best `finalists` for real on the target; also train and measure a few zoo
models on the same budget; choose.

  OUT/search.json      the settings (a rerun with other settings is refused)
  OUT/trials.jsonl     one row per draw: rejected (predicted over the limit) or trained
                       (val_accuracy, error), finalists with measured_us
  OUT/trials/draw-NNNN/  the run directory of each trained candidate
  OUT/zoo.jsonl        the zoo models on the same budget (trained + measured)
  OUT/edf.png          error EDF of the trained candidates (RegNet Fig. 2 style)
  OUT/pareto.png       accuracy vs latency: candidates, zoo models, Pareto front, chosen
  OUT/chosen/          spec.json, model_card.toml and run/ (the chosen trial's run directory)
  OUT/summary.json     counts, the chosen model and how it compares with the zoo

--target host times finalists and zoo models with LiteRT here; local / adb / gpu with the
Runner of `latency-model build|eval` (mobilekit.search.profiled: benchmark_model on this
machine or a phone, LiteRT's GPU accelerator), its device checked before any training; each
measured row says where (`measured_on`).

Trials train in spawned local processes or as Ray Tune trials (mobilekit.search.engines,
--engine); either way the rows and run directories are the same.

Resumable: rerunning the same command keeps every row already in trials.jsonl / zoo.jsonl,
redraws the same points, and continues a trial killed mid-training from its last epoch
checkpoint. Rows are written atomically after each trial.

--latency-limit MS: hard constraint (reject by prediction, choose among measured finalists
within it). --latency-target MS: soft, MnasNet's reward acc * (lat / T) ** w with w = -0.07.
"""
import json
import shutil
import sys
import time
from pathlib import Path

from mobilekit.errors import check_choice
from mobilekit.io import write_atomic, write_json_atomic
from mobilekit.search.engines import ENGINES, import_ray, run_jobs
from mobilekit.search.latency import TARGETS

SEARCH, TRIALS, ZOO = "search.json", "trials.jsonl", "zoo.jsonl"
DEFAULT_ZOO = ("mobilenet_v3_small:0.75", "mobilenet_v2:0.35")
MNAS_W = -0.07
DRAWS_PER_TRIAL = 50
QUANTS = ("fp32", "int8")
STRATEGIES = ("random", "evolve")
POPULATION, TOURNAMENT = 8, 3  # --strategy evolve's defaults
# Settings that change what a trial means: a resumed search must repeat them.
FIXED = ("space", "data", "target", "latency_limit", "latency_target", "quant", "epochs",
         "seed", "resolution", "threads", "batch_size", "zoo", "lut", "delegate")
# And the strategy's: evolve draws children in generations of --workers, so its --workers
# fixes the draws too. Searches written before these existed were random ones.
STRATEGY_FIXED = {"strategy": "random", "population": None, "tournament": None,
                  "generation": None}


def check_settings(s):
    s["zoo"] = list(s.get("zoo") or ())  # JSON round-trips lists, not tuples
    check_choice("quant", s["quant"], QUANTS)
    check_choice("--engine", s.setdefault("engine", "local"), ENGINES)
    if s.get("ray_address") and s["engine"] != "ray":
        raise ValueError("--ray-address is for --engine ray")
    if s["engine"] == "ray":
        import_ray()  # before any draw: a missing extra is one clear error
    if (s["latency_limit"] is None) == (s["latency_target"] is None) and not s.get("study"):
        raise ValueError("give exactly one of --latency-limit MS and --latency-target MS")
    for key in ("latency_limit", "latency_target"):
        if s[key] is not None and s[key] <= 0:
            raise ValueError(f"--{key.replace('_', '-')} must be > 0 ms; got {s[key]}")
    for key in ("trials", "epochs", "workers", "threads", "batch_size"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be a positive integer; "
                             f"got {s[key]!r}")
    if s["finalists"] < 0:
        raise ValueError(f"--finalists must be >= 0; got {s['finalists']}")
    if s["resolution"] < 32:
        raise ValueError(f"--resolution must be >= 32; got {s['resolution']}")
    check_strategy(s)


def check_strategy(s):
    check_choice("--strategy", s.setdefault("strategy", "random"), STRATEGIES)
    if s["strategy"] == "random":
        if s.get("population") is not None or s.get("tournament") is not None:
            raise ValueError("--population / --tournament are for --strategy evolve")
        s["population"] = s["tournament"] = s["generation"] = None
        return
    if s.get("population") is None:
        s["population"] = POPULATION
    if s.get("tournament") is None:
        s["tournament"] = TOURNAMENT
    population, tournament = s["population"], s["tournament"]
    if not isinstance(population, int) or population < 2:
        raise ValueError(f"--population must be an integer >= 2; got {population!r}")
    if not isinstance(tournament, int) or not 1 <= tournament <= population:
        raise ValueError(f"--tournament must be between 1 and --population ({population}); "
                         f"got {tournament!r}")
    if population > s["trials"]:
        raise ValueError(f"--population ({population}) must not exceed --trials "
                         f"({s['trials']}): the initial population is trained first")
    s["generation"] = s["workers"]


# ---------------------------------------------------------------- files


def read_jsonl(path):
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{n} is not a JSON line; the file was edited or "
                                 "damaged (remove that line to resume)") from None
    return rows


def write_jsonl(path, rows):
    write_atomic(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


def _open_out(out, settings):
    """Create OUT or check that it holds a search with the same settings."""
    out = Path(out)
    saved = out / SEARCH
    fixed = {k: settings[k] for k in FIXED} | {k: settings[k] for k in STRATEGY_FIXED}
    if saved.is_file():
        old = STRATEGY_FIXED | json.loads(saved.read_text())
        diff = sorted(k for k in fixed if old.get(k) != fixed[k])
        if diff:
            hint = (" (--strategy evolve draws a generation per --workers trials: resume "
                    f"with --workers {old['generation']})" if diff == ["generation"] else "")
            raise ValueError(f"{out} holds a search with other settings ({', '.join(diff)} "
                             f"differ: {', '.join(f'{k}={old.get(k)!r}' for k in diff)}){hint}; "
                             "rerun it with its settings to resume, or choose another --out")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"--out {str(out)!r} exists, is not empty and holds no search")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(saved, {**fixed, "trials": settings["trials"],
                              "finalists": settings["finalists"]})
    return out


# ---------------------------------------------------------------- training one trial


def train_config(point, data, epochs, resolution, batch_size, seed):
    from mobilekit.train.trainer import resolve_config

    kwargs = dict(point["kwargs"])
    alpha = kwargs.pop("alpha", None)
    return resolve_config(point["model"], data=data, epochs=epochs, resolution=resolution,
                          batch_size=batch_size, seed=seed, alpha=alpha,
                          model_options=kwargs or None, keep_checkpoints=1)


def train_trial(job):
    """Train one candidate into its run directory (resuming a killed one); a result row.
    Top-level so that worker processes can run it."""
    from mobilekit.train.rundir import latest_checkpoint
    from mobilekit.train.trainer import train

    run_dir = Path(job["run_dir"])
    config = train_config(job["point"], job["data"], job["epochs"], job["resolution"],
                          job["batch_size"], job["seed"])
    resume = latest_checkpoint(run_dir)[1] is not None
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    metrics = train(config, run_dir, resume=resume, verbose=0)
    acc = metrics["val_accuracy"]
    return {**job["row"], "status": "trained", "val_accuracy": acc,
            "error": None if acc is None else round(1.0 - acc, 6),
            "train_seconds": round(time.time() - t0, 1), "run_dir": str(run_dir)}


# ---------------------------------------------------------------- the search


class Search:
    def __init__(self, out, settings, log=None):
        check_settings(settings)
        self.s = settings
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        from mobilekit.search.spaces import parse_space

        check_choice("--target", settings["target"], TARGETS)
        self.space = parse_space(settings["space"])
        # The target's device is checked before anything is written or trained.
        self.runner = self._runner(out)
        settings["delegate"] = self.runner.delegate if self.runner else None
        self.out = _open_out(out, settings)
        self.rows = read_jsonl(self.out / TRIALS)
        self.zoo_rows = read_jsonl(self.out / ZOO)

    def _runner(self, out):
        """The profiled.Runner of --target local / adb / gpu (None: host, timed in-process),
        the one `latency-model build|eval` use; a given LUT's delegate is the default."""
        from mobilekit.search.latency import load_lut
        from mobilekit.search.profiled import PROFILED_TARGETS, runner_for

        s = self.s
        delegate = s.get("delegate")
        if delegate is None and s["target"] in PROFILED_TARGETS and s.get("lut"):
            delegate = load_lut(s["lut"]).get("delegate")
        return runner_for(s["target"], s["threads"], s.get("benchmark_binary"), s.get("serial"),
                          s.get("adb_path"), delegate, log_dir=Path(out) / "bench-logs",
                          preflight=True)

    def measured_on(self):
        """Where the measured_us of a row came from (for gpu: the adapter, and whether it is
        a software emulation)."""
        if self.runner is None:
            return {"target": "host", "delegate": "xnnpack", "threads": self.s["threads"]}
        return {k: v for k, v in self.runner.describe().items() if v is not None}

    # -- latency model
    def predictor(self):
        from mobilekit.search.latency import KERNEL_CHANNELS, Predictor, build_lut, write_lut
        from mobilekit.search.profiled import build_target_lut, check_runner_matches

        path = Path(self.s["lut"]) if self.s["lut"] else self.out / "lut.json"
        if not path.is_file() and not self.s["lut"]:
            self.log(f"Building the latency model {path} ({self.s['lut_samples']} samples, "
                     f"target {self.s['target']})")
            if self.runner:  # local / adb: per-operator profiles; gpu: end to end
                lut = build_target_lut(self.s["space"], self.s["lut_samples"],
                                       self.s["seed"] + 7777, self.s["resolution"],
                                       [self.s["quant"]], self.runner, self.log)
            else:
                lut = build_lut(self.s["space"], self.s["lut_samples"], self.s["seed"] + 7777,
                                self.s["resolution"], [self.s["quant"]], self.s["threads"],
                                self.s["target"], log=self.log,
                                kernel_channels=self.s.get("kernel_channels", KERNEL_CHANNELS))
            write_lut(path, lut)
        predictor = Predictor.load(path, self.s["target"], self.s["threads"], self.s["quant"])
        if self.runner:  # and its delegate, and (adb) the phone's model
            try:
                check_runner_matches(predictor.lut, self.runner)
            except ValueError as exc:
                raise ValueError(f"latency model {path}: {exc}") from None
        if predictor.lut["resolution"] != self.s["resolution"]:
            self.log(f"warning: {path} was fitted at {predictor.lut['resolution']} px; "
                     f"predicting at {self.s['resolution']} px")
        return predictor

    def save(self):
        write_jsonl(self.out / TRIALS, sorted(self.rows, key=lambda r: r["draw"]))

    def _job(self, row):
        return {"row": row, "point": row["point"], "data": self.s["data"],
                "epochs": self.s["epochs"], "resolution": self.s["resolution"],
                "batch_size": self.s["batch_size"], "seed": self.s["seed"],
                "run_dir": str(self.out / "trials" / f"draw-{row['draw']:04d}")}

    # -- sampling and rejection
    def max_draws(self):
        return self.s.get("max_draws") or DRAWS_PER_TRIAL * self.s["trials"]

    def candidate(self, i, point, predictor, **extra):
        """Draw i's row: predicted, then accepted or rejected by --latency-limit."""
        from mobilekit.keras import keras
        from mobilekit.search.spaces import build

        model = build(point, self.s["resolution"])
        predicted = predictor.predict(model) if predictor else None
        row = {"draw": i, "point": point, "predicted_us": predicted,
               "params": int(model.count_params()), "space": self.space["label"], **extra}
        keras.backend.clear_session()
        limit_us = self.s["latency_limit"] * 1e3 if self.s["latency_limit"] else None
        row["status"] = ("rejected" if limit_us is not None and predicted > limit_us
                         else "accepted")
        return row

    def draw(self, predictor, want=None):
        """Rows of the accepted candidates still to train (rejected draws are recorded):
        random points until `want` (default --trials) are accepted."""
        from mobilekit.search.spaces import sample

        want = want or self.s["trials"]
        done = {r["draw"]: r for r in self.rows}
        accepted = [r for r in self.rows if r["status"] != "rejected"]
        pending = [r for r in accepted if r["status"] == "accepted"]
        max_draws = self.max_draws()
        i = 0
        while len(accepted) < want and i < max_draws:
            if i in done:
                i += 1
                continue
            row = self.candidate(i, sample(self.space, i, self.s["seed"],
                                           self.s["resolution"]), predictor)
            if row["status"] == "accepted":
                accepted.append(row)
                pending.append(row)
            self.rows.append(row)
            done[i] = row
            i += 1
        self.save()
        rejected = sum(r["status"] == "rejected" for r in self.rows)
        if not accepted:
            raise ValueError(f"no candidate of space {self.space['label']!r} is predicted "
                             f"under --latency-limit {self.s['latency_limit']} ms after "
                             f"{max_draws} draws ({rejected} rejected); raise the limit or "
                             "change the space")
        if len(accepted) < want:
            self.log(f"warning: only {len(accepted)} of {want} draws fit the limit "
                     f"after {max_draws} draws")
        return pending

    def evolve(self, predictor):
        """Regularized (aging) evolution (Real et al. 2019): the first --population accepted
        candidates are random draws; then, a generation of --workers children at a time, each
        child mutates the best (self.objective) of --tournament rows drawn from the
        --population most recent (by draw) trained rows. A generation is drawn only from
        rows all trained and saved, and saved whole before it trains, so a rerun after a
        kill trains what was pending and then draws exactly what an unbroken run would."""
        pending = self.draw(predictor, want=self.s["population"])
        while True:
            if pending:
                self.train_pending(pending)
            accepted = sorted((r for r in self.rows if r["status"] != "rejected"),
                              key=lambda r: r["draw"])
            if len(accepted) >= self.s["trials"]:
                return
            start = max(r["draw"] for r in self.rows) + 1
            if start >= self.max_draws():
                self.log(f"warning: only {len(accepted)} of {self.s['trials']} draws fit the "
                         f"limit after {self.max_draws()} draws")
                return
            want = min(self.s["generation"], self.s["trials"] - len(accepted))
            pending = self.draw_children(predictor, accepted[-self.s["population"]:], start,
                                         want)

    def draw_children(self, predictor, population, start, want):
        """Draws start, start + 1, ... (each from default_rng([seed, draw])) until `want`
        children are accepted or --max-draws is reached; saved together."""
        import numpy as np

        from mobilekit.search.spaces import mutate

        children, i = [], start
        while len([c for c in children if c["status"] == "accepted"]) < want \
                and i < self.max_draws():
            rng = np.random.default_rng([self.s["seed"], i])
            size = min(self.s["tournament"], len(population))
            entrants = [population[int(k)] for k in rng.choice(len(population), size,
                                                                replace=False)]
            parent = max(entrants, key=self.objective)  # the first of equals: deterministic
            point, mutation = mutate(self.space, parent["point"], rng, self.s["resolution"])
            children.append(self.candidate(i, point, predictor, parent=parent["draw"],
                                           mutation=mutation))
            i += 1
        self.rows += children
        self.save()
        accepted = [c for c in children if c["status"] == "accepted"]
        self.log(f"generation of draws {start}-{i - 1}: {len(accepted)} child(ren) to train, "
                 f"{len(children) - len(accepted)} rejected")
        return accepted

    def train_pending(self, pending):
        def done(row):
            self.rows = [r for r in self.rows if r["draw"] != row["draw"]] + [row]
            self.save()
            self.log(f"trial draw {row['draw']}: val_accuracy {row['val_accuracy']} "
                     f"({row['train_seconds']} s)")

        engine = self.s["engine"]
        self.log(f"Training {len(pending)} candidate(s), {self.s['epochs']} epoch(s) each, "
                 f"{self.s['workers']} worker(s), engine {engine}")
        run_jobs(train_trial, [self._job(r) for r in pending], self.s["workers"], done,
                 engine=engine, ray_address=self.s.get("ray_address"),
                 storage=str((self.out / ".ray").resolve()))
        shutil.rmtree(self.out / ".ray", ignore_errors=True)  # Tune's own state: rows suffice

    # -- measuring on the target
    def measure(self, model_fn, name):
        from mobilekit.keras import keras
        from mobilekit.search.latency import convert_for_latency, measure_file

        tmp = self.out / ".measure" / f"{name}_{self.s['quant']}.tflite"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            convert_for_latency(model_fn(), self.s["quant"], tmp)
            us = self.runner.time(tmp) if self.runner else measure_file(tmp, self.s["threads"])
            return round(us, 2)
        finally:
            tmp.unlink(missing_ok=True)
            keras.backend.clear_session()

    def objective(self, row, key="predicted_us"):
        acc = row.get("val_accuracy") or 0.0
        if self.s["latency_target"] is None or row.get(key) is None:
            return acc
        return acc * (row[key] / (self.s["latency_target"] * 1e3)) ** MNAS_W

    def measure_finalists(self):
        from mobilekit.loading import load_keras

        trained = [r for r in self.rows if r["status"] in ("trained", "measured")]
        finalists = sorted(trained, key=self.objective, reverse=True)[:self.s["finalists"]]
        for row in finalists:
            if row.get("measured_us") is None:
                path = Path(row["run_dir"]) / "model.keras"
                row["measured_us"] = self.measure(lambda: load_keras(path), f"draw{row['draw']}")
                row["measured_on"] = self.measured_on()
                row["status"] = "measured"
                self.save()
                self.log(f"finalist draw {row['draw']}: measured {row['measured_us'] / 1e3:.3f} "
                         f"ms (predicted {row['predicted_us'] / 1e3:.3f} ms)")
        return finalists

    def run_zoo(self, predictor):
        from mobilekit.loading import load_keras
        from mobilekit.search.latency import OutsideTable

        have = {r["zoo"] for r in self.zoo_rows if r.get("measured_us") is not None}
        for n, item in enumerate(self.s["zoo"]):
            if item in have:
                continue
            name, _, alpha = item.partition(":")
            point = {"model": name, "kwargs": {"alpha": float(alpha)} if alpha else {}}
            run_dir = self.out / "zoo" / item.replace(":", "_")
            row = {"zoo": item, "draw": -1 - n, "point": point}
            row = train_trial({**self._job(row), "run_dir": str(run_dir)})
            model = load_keras(run_dir / "model.keras")
            row["params"] = int(model.count_params())
            try:
                row["predicted_us"] = predictor.predict(model) if predictor else None
            except OutsideTable as exc:  # a zoo model outside the LUT's space: measured only
                self.log(f"zoo {item}: no prediction ({exc})")
                row["predicted_us"] = None
            row["measured_us"] = self.measure(lambda: model, item.replace(":", "_"))
            row["measured_on"] = self.measured_on()
            self.zoo_rows = [r for r in self.zoo_rows if r["zoo"] != item] + [row]
            write_jsonl(self.out / ZOO, self.zoo_rows)
            self.log(f"zoo {item}: val_accuracy {row['val_accuracy']}, measured "
                     f"{row['measured_us'] / 1e3:.3f} ms")

    def choose(self, finalists):
        if not finalists:
            return None
        ok = finalists
        if self.s["latency_limit"] is not None:
            ok = [r for r in finalists if r["measured_us"] <= self.s["latency_limit"] * 1e3]
        pool = ok or finalists
        best = max(pool, key=lambda r: self.objective(r, "measured_us"))
        return {**best, "within_limit_measured": bool(ok)}

    def run(self, skip_finalists=False):
        predictor = self.predictor() if (self.s["latency_limit"] or self.s["latency_target"]
                                         or self.s["lut"]) else None
        if self.s["strategy"] == "evolve":
            self.evolve(predictor)
        else:
            pending = self.draw(predictor)
            if pending:
                self.train_pending(pending)
        if skip_finalists:
            return None
        finalists = self.measure_finalists()
        self.run_zoo(predictor)
        chosen = self.choose(finalists)
        return self.finish(chosen)

    # -- outputs
    def finish(self, chosen):
        from mobilekit.search import outputs

        trained = [r for r in self.rows if r.get("val_accuracy") is not None]
        files = {"trials": str(self.out / TRIALS), "zoo": str(self.out / ZOO)}
        files["edf"] = str(outputs.plot_edf({self.space["label"]: trained},
                                            self.out / "edf.png"))
        files["pareto"] = str(outputs.plot_pareto(trained, self.zoo_rows, chosen,
                                                  self.out / "pareto.png", self.s))
        if chosen:
            files.update(outputs.write_chosen(self.out / "chosen", chosen, self.s))
        summary = outputs.summary(self.rows, self.zoo_rows, chosen, self.s, files)
        summary["measured_on"] = self.measured_on()
        write_json_atomic(self.out / "summary.json", summary)
        shutil.rmtree(self.out / ".measure", ignore_errors=True)
        return summary


def run_search(out, **settings):
    return Search(out, settings).run()


# ---------------------------------------------------------------- design-space study


def run_study(out, spaces, **settings):
    """RegNet's design-space comparison: the same budget (trials, epochs, seed) in each
    space, error EDFs on one plot, and each space compared with the first (n per EDF, KS
    distance, mean-error difference with a bootstrap 90 % interval). OUT/<space>/ holds
    each space's search (resumable like any search); OUT/study.json and OUT/study_edf.png
    the comparison."""
    from mobilekit.search import outputs
    from mobilekit.search.spaces import parse_space

    if len(spaces) < 2:
        raise ValueError("--study compares design spaces: give --space at least twice "
                         "(e.g. --space mbspace:se=on --space mbspace:se=off)")
    if len(set(spaces)) != len(spaces):
        raise ValueError(f"--study got the same space twice: {', '.join(spaces)}")
    for text in spaces:
        parse_space(text)
    out = Path(out)
    groups = {}
    for text in spaces:
        sub = out / text.replace(":", "__").replace(",", "_").replace("=", "-")
        search = Search(sub, {**settings, "space": text, "finalists": 0, "zoo": (),
                              "study": True})
        search.run(skip_finalists=True)
        groups[text] = [r for r in search.rows if r.get("error") is not None]
    base = spaces[0]
    result = {"spaces": spaces, "trials_per_space": settings["trials"],
              "epochs": settings["epochs"], "seed": settings["seed"],
              "latency_limit": settings.get("latency_limit"),
              "edfs": {k: sorted(r["error"] for r in v) for k, v in groups.items()},
              "comparisons": [{"a": base, "b": other,
                               **outputs.compare_edfs([r["error"] for r in groups[base]],
                                                      [r["error"] for r in groups[other]],
                                                      settings["seed"])}
                              for other in spaces[1:]]}
    result["plot"] = str(outputs.plot_edf(groups, out / "study_edf.png"))
    write_json_atomic(out / "study.json", result)
    return result
