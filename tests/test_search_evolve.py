"""`mobilekit search --strategy evolve`: regularized evolution's mutation (one choice changed,
inside the space), its children's rows, and that a search interrupted mid-generation resumes
into exactly the draws of an unbroken one (tiny spaces, 32 px, 1 epoch)."""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from mobilekit.search import run, spaces
from mobilekit.zoo.regnet import QUANT

MB_KEYS = ("depth", "kernel", "expansion", "se", "width_mult", "act")


def _changes(a, b, path=""):
    """[(path, old, new)] where the JSON trees a and b differ."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return [c for k in a for c in _changes(a[k], b[k], f"{path}.{k}" if path else k)]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [c for n, (x, y) in enumerate(zip(a, b)) for c in _changes(x, y, f"{path}[{n}]")]
    return [] if a == b and type(a) is type(b) else [(path, a, b)]


def _check_mutation(point, child, mutation):
    """The child differs from the point in exactly the one choice the mutation text names."""
    where, _, values = mutation.partition(": ")
    old, new = (json.loads(v) for v in values.split(" -> "))
    prefix = "kwargs.spec." if point["model"] == "mbspace" else "kwargs."
    assert _changes(point, child) == [(prefix + where, old, new)], mutation
    assert old != new


def _inside(space, point, resolution):
    """The point is one the space can produce (every choice among the space's)."""
    kwargs = point["kwargs"]
    if space["family"] == "mbspace":
        stages = kwargs["spec"]["stages"]
        assert len(stages) == len(space["stages"])
        for stage, (channels, stride, (low, high)) in zip(stages, space["stages"]):
            assert (stage["channels"], stage["stride"]) == (channels, stride)
            assert low <= stage["depth"] <= high
            assert stage["se"] in [v == "on" for v in space["se"]]
            for key in ("kernel", "expansion", "width_mult", "act"):
                assert stage[key] in space[key], (key, stage[key])
        return
    assert space["depth"][0] <= kwargs["depth"] <= space["depth"][-1]
    assert kwargs["w0"] % QUANT == 0
    assert min(space["w0"]) - QUANT / 2 <= kwargs["w0"] <= max(space["w0"]) + QUANT / 2
    for key, digits in (("wa", 0.05), ("wm", 0.0005)):
        assert min(space[key]) - digits <= kwargs[key] <= max(space[key]) + digits
    assert kwargs["group_width"] in space["group_width"]
    assert kwargs["bottleneck_ratio"] in space["bottleneck_ratio"]
    assert kwargs["se_ratio"] in [0.25 if v == "on" else 0.0 for v in space["se"]]
    assert spaces._regnet_valid(space, kwargs, resolution)  # pycls's checks, MAC range


@pytest.mark.parametrize("name,resolution", [
    ("mbspace", 64), ("mbspace-tiny", 32), ("mbspace-tiny:kernel=3|5,se=off", 32),
    ("mbspace:act=relu,width_mult=1.0", 64),
    ("regnet", 64), ("regnet-tiny", 32), ("regnet-tiny:group_width=8,se=on", 32)])
def test_mutation_changes_exactly_one_choice_and_stays_in_the_space(name, resolution):
    space = spaces.parse_space(name)
    seen = set()
    for seed in range(60):
        point = spaces.sample(space, seed, 5, resolution)
        before = json.loads(json.dumps(point))
        child, mutation = spaces.mutate(space, point, np.random.default_rng([9, seed]),
                                        resolution)
        assert point == before  # the parent is not touched
        _check_mutation(point, child, mutation)
        _inside(space, child, resolution)
        assert json.loads(json.dumps(child)) == child  # trials.jsonl holds it
        again = spaces.mutate(space, point, np.random.default_rng([9, seed]), resolution)
        assert again == (child, mutation)  # the rng fixes the mutation
        seen.add(mutation.split(": ")[0].split(".")[-1])
    # over 60 mutations every choice the space leaves open is changed at some point
    if space["family"] == "mbspace":
        pinned = {k for k in MB_KEYS if k != "depth" and len(space[k]) == 1}
        assert seen == set(MB_KEYS) - pinned
        assert not seen & {"channels", "stride"}
    else:
        keys = {"depth", "w0", "wa", "wm", "group_width", "bottleneck_ratio", "se_ratio"}
        pinned = {k for k in keys if len(set(space["se" if k == "se_ratio" else k])) == 1}
        assert seen == keys - pinned


def test_a_mutated_point_builds():
    for name in ("mbspace-tiny", "regnet-tiny"):
        space = spaces.parse_space(name)
        child, _ = spaces.mutate(space, spaces.sample(space, 0, 0, 32),
                                 np.random.default_rng(1), 32)
        assert spaces.build(child, 32, num_classes=4).output_shape == (None, 4)


def test_a_space_with_one_point_cannot_be_mutated():
    space = spaces.parse_space("mbspace-tiny:kernel=3,expansion=3,se=off,act=relu,"
                               "width_mult=0.5")
    space["stages"] = [(16, 2, (1, 1))]
    point = spaces.sample(space, 0, 0, 32)
    with pytest.raises(ValueError, match="single point: nothing to mutate"):
        spaces.mutate(space, point, np.random.default_rng(0), 32)


# ---------------------------------------------------------------- settings


def _settings(**over):
    s = {"space": "mbspace-tiny", "data": "synthetic:train=12,val=4", "target": "host",
         "benchmark_binary": None, "serial": None, "adb_path": None, "delegate": None,
         "latency_limit": None, "latency_target": 1.0, "quant": "fp32", "trials": 4,
         "epochs": 1, "workers": 1, "engine": "local", "ray_address": None, "max_draws": None,
         "finalists": 0, "zoo": [], "lut": None, "lut_samples": 4, "resolution": 32,
         "batch_size": 16, "threads": 1, "seed": 0, "strategy": "evolve", "population": 2,
         "tournament": 2}
    return {**s, **over}


def test_evolve_bad_input_is_one_error_line_exit_2(tmp_path):
    from mobilekit.cli import cli

    base = ["search", "--space", "mbspace-tiny", "--latency-target", "1", "--trials", "4",
            "--zoo", "none"]
    cases = [(["--strategy", "evolve", "--population", "1"],
              "--population must be an integer >= 2; got 1"),
             (["--strategy", "evolve", "--population", "3", "--tournament", "0"],
              "--tournament must be between 1 and --population (3); got 0"),
             (["--strategy", "evolve", "--population", "3", "--tournament", "4"],
              "--tournament must be between 1 and --population (3); got 4"),
             (["--strategy", "evolve"],  # the default population, 8, over 4 trials
              "--population (8) must not exceed --trials (4)"),
             (["--population", "3"], "--population / --tournament are for --strategy evolve"),
             (["--strategy", "grow"], "Invalid value for '--strategy'")]
    runner = CliRunner()
    for n, (args, message) in enumerate(cases):
        out = tmp_path / f"s{n}"
        res = runner.invoke(cli, base + args + ["--out", str(out)])
        assert res.exit_code == 2, res.output
        assert message in res.output and res.output.count("Error:") == 1, res.output
        assert not out.exists()  # refused before anything is written


def test_search_json_records_the_strategy_and_a_resume_with_others_is_refused(tmp_path):
    out = tmp_path / "s"
    run.Search(out, _settings(workers=2))
    saved = json.loads((out / "search.json").read_text())
    assert {k: saved[k] for k in ("strategy", "population", "tournament", "generation")} == \
        {"strategy": "evolve", "population": 2, "tournament": 2, "generation": 2}
    run.Search(out, _settings(workers=2))  # the same settings: resumes
    for over, message in (({"tournament": 1}, "tournament differ: tournament=2"),
                          ({"population": 3}, "population differ: population=2"),
                          ({"workers": 1}, "resume with --workers 2"),
                          ({"strategy": "random", "population": None, "tournament": None},
                           "strategy='evolve'")):
        with pytest.raises(ValueError, match="holds a search with other settings") as err:
            run.Search(out, _settings(**{"workers": 2, **over}))
        assert message in str(err.value)
        assert ("resume with --workers" in str(err.value)) == ("workers" in over)
    # a random search records its strategy, and one written before strategies existed
    # (no such keys in its search.json) resumes as the random search it was
    old = tmp_path / "old"
    run.Search(old, _settings(strategy="random", population=None, tournament=None))
    saved = json.loads((old / "search.json").read_text())
    assert saved["strategy"] == "random" and saved["population"] is None
    for key in run.STRATEGY_FIXED:
        del saved[key]
    (old / "search.json").write_text(json.dumps(saved))
    run.Search(old, _settings(strategy="random", population=None, tournament=None,
                              workers=3))
    with pytest.raises(ValueError, match="strategy, tournament differ"):
        run.Search(old, _settings())


# ---------------------------------------------------------------- the search


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check_children(rows, population, generation, space, resolution):
    """Every child's parent is a trained row among the `population` most recent (by draw)
    trained rows when its generation was drawn, and the child is the parent's point with
    exactly the recorded mutation; the initial population has no parent."""
    by_draw = {r["draw"]: r for r in rows}
    accepted = sorted((r for r in rows if r["status"] != "rejected"), key=lambda r: r["draw"])
    first = accepted[population - 1]["draw"]  # the last draw of the initial population
    assert all("parent" not in r and "mutation" not in r for r in rows if r["draw"] <= first)
    chunks = [accepted[i:i + generation] for i in range(population, len(accepted), generation)]
    start, trained_before = first + 1, accepted[:population]
    children = 0
    for chunk in chunks:
        pool = {r["draw"] for r in trained_before[-population:]}
        for draw in range(start, chunk[-1]["draw"] + 1):  # rejected children included
            row = by_draw[draw]
            assert row["parent"] in pool, (draw, row["parent"], pool)
            parent = by_draw[row["parent"]]
            assert parent["val_accuracy"] is not None and parent["draw"] < start
            _check_mutation(parent["point"], row["point"], row["mutation"])
            _inside(space, row["point"], resolution)
            children += 1
        trained_before += chunk
        start = chunk[-1]["draw"] + 1
    return children


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_evolve_search_interrupted_mid_generation_redraws_the_same_children(tmp_path):
    """A real search (2 workers, generations of 2) against the same search stopped when the
    first child of its first generation has finished (the other child still training), then
    rerun: the same rows, draw for draw."""
    lut = tmp_path / "lut.json"
    from test_search import _fixed_lut

    predictor = _fixed_lut(lut)
    space = spaces.parse_space("mbspace-tiny")
    preds = [predictor.predict(spaces.build(spaces.sample(space, i, 0, 32), 32))
             for i in range(12)]
    limit = float(np.quantile(preds, 0.7)) / 1e3  # some children are rejected too
    settings = dict(latency_limit=limit, latency_target=None, lut=str(lut), trials=6,
                    population=3, tournament=2, workers=2)

    whole = tmp_path / "whole"
    run.Search(whole, _settings(**settings), log=lambda msg: None).run(skip_finalists=True)
    rows = _rows(whole / "trials.jsonl")
    trained = [r for r in rows if r["status"] == "trained"]
    assert len(trained) == 6 and all(r["val_accuracy"] is not None for r in trained)
    assert sorted(r["draw"] for r in rows) == list(range(len(rows)))
    assert all(r["predicted_us"] > limit * 1e3 for r in rows if r["status"] == "rejected")
    assert all(r["predicted_us"] <= limit * 1e3 for r in trained)
    # an initial population of 3, then generations of 2 and 1 (and any rejected children)
    assert _check_children(rows, 3, 2, space, 32) >= 3

    broken = tmp_path / "broken"
    finished = []

    def stop_after_first_child(msg):  # the log line of each trial saved as it ends
        if msg.startswith("trial draw"):
            finished.append(msg)
            if len(finished) == 4:
                raise _Stop(msg)

    with pytest.raises(_Stop):
        run.Search(broken, _settings(**settings), log=stop_after_first_child).run(
            skip_finalists=True)
    cut = _rows(broken / "trials.jsonl")
    children = [r for r in cut if "parent" in r]
    assert sorted(r["status"] for r in children if r["status"] != "rejected") == \
        ["accepted", "trained"]  # stopped mid-generation
    run.Search(broken, _settings(**settings), log=lambda msg: None).run(skip_finalists=True)
    again = _rows(broken / "trials.jsonl")
    same = ("draw", "point", "parent", "mutation", "status", "predicted_us", "val_accuracy")
    assert [{k: r.get(k) for k in same} for r in again] == \
        [{k: r.get(k) for k in same} for r in rows]
    kept = {r["draw"]: r for r in cut if r["status"] == "trained"}
    for r in again:  # trained before the stop: kept, not retrained
        if r["draw"] in kept:
            assert r["train_seconds"] == kept[r["draw"]]["train_seconds"]


def _fake_train(job):
    """In-process stand-in for train_trial: an accuracy that is a fixed function of the
    point (for the study's plumbing; the real training is exercised above)."""
    digest = sum(ord(c) * (n + 1) for n, c in enumerate(json.dumps(job["point"], sort_keys=True)))
    acc = (digest % 97) / 97
    return {**job["row"], "status": "trained", "val_accuracy": acc, "error": 1 - acc,
            "train_seconds": 0.0, "run_dir": job["run_dir"]}


def test_study_evolves_each_space_on_the_same_budget(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "train_trial", _fake_train)
    settings = _settings(trials=5, population=2, tournament=1, latency_target=None)
    del settings["space"]
    run.run_study(tmp_path / "study", ["mbspace-tiny:se=on", "regnet-tiny"], **settings)
    for folder, name in (("mbspace-tiny__se-on", "mbspace-tiny:se=on"),
                         ("regnet-tiny", "regnet-tiny")):
        rows = _rows(tmp_path / "study" / folder / "trials.jsonl")
        assert len(rows) == 5 and all(r["status"] == "trained" for r in rows)
        space = spaces.parse_space(name)
        assert _check_children(rows, 2, 1, space, 32) == 3
        if name.endswith("se=on"):
            assert all(s["se"] for r in rows for s in r["point"]["kwargs"]["spec"]["stages"])
        assert json.loads((tmp_path / "study" / folder / "search.json").read_text())[
            "strategy"] == "evolve"
    assert math.isfinite(json.loads((tmp_path / "study" / "study.json").read_text())[
        "comparisons"][0]["ks_distance"])


def test_children_over_the_limit_are_rejected_rows_and_count_against_max_draws(tmp_path,
                                                                               monkeypatch):
    from test_search import _fixed_lut

    monkeypatch.setattr(run, "train_trial", _fake_train)
    lut = tmp_path / "lut.json"
    predictor = _fixed_lut(lut)
    space = spaces.parse_space("mbspace-tiny")
    preds = [predictor.predict(spaces.build(spaces.sample(space, i, 0, 32), 32))
             for i in range(12)]
    limit = float(np.quantile(preds, 0.3)) / 1e3  # tight: children cross it too
    settings = _settings(latency_limit=limit, latency_target=None, lut=str(lut), trials=6,
                         population=3, tournament=2)
    out = tmp_path / "s"
    run.Search(out, settings, log=lambda msg: None).run(skip_finalists=True)
    rows = _rows(out / "trials.jsonl")
    assert sorted(r["draw"] for r in rows) == list(range(len(rows)))
    assert sum(r["status"] == "trained" for r in rows) == 6
    assert _check_children(rows, 3, 1, space, 32) > 3  # rejected children included
    rejected = [r for r in rows if r["status"] == "rejected" and "parent" in r]
    assert rejected and all(r["predicted_us"] > limit * 1e3 for r in rejected)

    # a budget of draws that ends mid-search: stops there with fewer trained, says so
    logged = []
    short = tmp_path / "short"
    run.Search(short, {**settings, "max_draws": rows[-1]["draw"] - 1},
               log=logged.append).run(skip_finalists=True)
    cut = _rows(short / "trials.jsonl")
    assert [r["draw"] for r in cut] == list(range(rows[-1]["draw"] - 1))
    assert [{k: r.get(k) for k in ("point", "parent", "status")} for r in cut] == \
        [{k: r.get(k) for k in ("point", "parent", "status")} for r in rows[:len(cut)]]
    assert any(m.startswith("warning: only ") for m in logged)
