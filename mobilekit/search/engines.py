"""Where a search's trials train: `local` (spawned worker processes on this machine) or
`ray` (Ray Tune trials on a local or existing Ray cluster: the optional extra
`pip install "mobilekit[ray]"`). Both call the same per-trial function and hand each finished
row to the caller as soon as it arrives, so trials.jsonl, resume, plots and the choice do
not depend on the engine.

A SIGINT / SIGTERM to the parent stops its workers (pool processes, Ray trials and the Ray
instance it started) before the signal takes its usual effect: no worker outlives a killed
search, and rows already written stay (the search resumes on a rerun).
"""
import contextlib
import json
import os
import signal
import sys
import threading

ENGINES = ("local", "ray")
RAY_HINT = 'pip install "mobilekit[ray]"'


class Interrupted(BaseException):
    """A stop signal, raised in the main thread while trials run (BaseException so that no
    `except Exception` on the way swallows it)."""

    def __init__(self, signum):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Turn SIGINT/SIGTERM into Interrupted inside the block (so the caller can stop its
    workers), then deliver the signal again under its previous handler: a SIGTERM still
    terminates the process, a SIGINT still raises KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    caught = []

    def handler(signum, frame):
        if not caught:  # a second signal must not break the clean-up of the first
            caught.append(signum)
            raise Interrupted(signum)

    previous = {}
    for sig in signals:
        old = signal.getsignal(sig)
        if old in (signal.SIG_IGN, None):  # ignored (e.g. nohup) or set outside Python
            continue
        previous[sig] = old
        signal.signal(sig, handler)
    try:
        yield
    except Interrupted:
        pass
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if caught:
        os.kill(os.getpid(), caught[0])


def run_jobs(fn, jobs, workers, done_cb, engine="local", ray_address=None, storage=None):
    """Run fn(job) for every job, at most `workers` at a time; done_cb(row) in this process
    for each result as it arrives."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    with stop_on_signals():
        if engine == "ray":
            run_ray(fn, jobs, workers, done_cb, ray_address, storage)
        else:
            run_local(fn, jobs, workers, done_cb)


# ---------------------------------------------------------------- local processes


def run_local(fn, jobs, workers, done_cb):
    """In this process (workers=1) or in `workers` spawned processes."""
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            done_cb(fn(job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # TensorFlow is not fork-safe
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = [pool.submit(fn, job) for job in jobs]
        for future in as_completed(futures):
            done_cb(future.result())
    except BaseException:
        _terminate(pool)  # else running workers train on after the parent is gone
        raise
    pool.shutdown(wait=True)


def _terminate(pool):
    # Python 3.14 has pool.terminate_workers(); before it the processes are only reachable
    # through the private _processes.
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join(5)


# ---------------------------------------------------------------- Ray Tune


def import_ray():
    try:
        import ray
        from ray import tune
    except ImportError as exc:
        raise ValueError(f"--engine ray needs Ray Tune, which is not installed ({exc}); "
                         f"install the extra: {RAY_HINT}") from None
    return ray, tune


def _ray_trial(config, fn=None, jobs=None, cwd=None):
    """A Ray Tune function trainable: one trial = fn(job), reported as the trial's one
    result (the row as JSON text: Tune flattens nested result dicts)."""
    if cwd and os.path.isdir(cwd):  # Tune runs trials in their own folder; relative
        os.chdir(cwd)                # --data paths are the driver's
    return {"row": json.dumps(fn(jobs[config["job"]]))}


def run_ray(fn, jobs, workers, done_cb, address=None, storage=None):
    """Each job a Ray Tune trial needing 1 CPU, at most `workers` at once. Without an address
    a local Ray instance with `workers` CPUs is started (and stopped afterwards); with one, the
    cluster's nodes need mobilekit installed and the run directories on a shared disk."""
    ray, tune = import_ray()
    if not jobs:
        return
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        started = True
    # Tune's own SIGINT handler would end the run "gracefully" and leave the trials to
    # finish; ours (stop_on_signals) stops them.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"

    class RowWriter(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "row" in result:
                done_cb(json.loads(result["row"]))

    draws = [job["row"].get("draw", i) for i, job in enumerate(jobs)]
    trainable = tune.with_resources(
        tune.with_parameters(_ray_trial, fn=fn, jobs=jobs, cwd=os.getcwd()), {"cpu": 1})
    tuner = tune.Tuner(
        trainable, param_space={"job": tune.grid_search(list(range(len(jobs))))},
        tune_config=tune.TuneConfig(max_concurrent_trials=workers, num_samples=1,
                                    trial_dirname_creator=lambda t: f"draw-{draws[t.config['job']]}"),
        run_config=tune.RunConfig(name="trials", storage_path=storage, verbose=0,
                                  callbacks=[RowWriter()]))
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Tune's tables; stdout is the result
            results = tuner.fit()
    finally:
        if started:
            ray.shutdown()  # stops the trials' processes, also when interrupted
    if results.errors:
        raise results.errors[0]
