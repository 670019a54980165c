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


class SignalGuard:
    """What stop_on_signals yields: the signal caught (if any), a switch to only record
    signals (`deferred`: while the main thread is inside a library's C code, e.g. Ray's, an
    exception raised by a signal handler comes out garbled), check() to raise then, and
    arm() to set the handlers again after a library replaced them (ray.init does)."""

    def __init__(self, signals):
        self.caught, self.deferred, self.previous = None, False, {}
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for sig in signals:
            old = signal.getsignal(sig)
            if old not in (signal.SIG_IGN, None):  # not ignored (nohup), not set outside Python
                self.previous[sig] = old

    def handler(self, signum, frame):
        if self.caught is None:  # a second signal must not break the clean-up of the first
            self.caught = signum
            if not self.deferred:
                raise Interrupted(signum)

    def check(self):
        if self.caught is not None:
            raise Interrupted(self.caught)

    def arm(self):
        for sig in self.previous:
            signal.signal(sig, self.handler)

    def restore(self):
        for sig, old in self.previous.items():
            signal.signal(sig, old)


@contextlib.contextmanager
def stop_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """Turn SIGINT/SIGTERM into Interrupted inside the block (so the caller can stop its
    workers), then deliver the signal again under its previous handler: a SIGTERM still
    terminates the process, a SIGINT still raises KeyboardInterrupt."""
    guard = SignalGuard(signals)
    guard.arm()
    try:
        yield guard
    except BaseException:
        if guard.caught is None:
            raise  # a real error; a caught signal wins over whatever it turned into
    finally:
        guard.restore()
    if guard.caught is not None:
        os.kill(os.getpid(), guard.caught)


def run_jobs(fn, jobs, workers, done_cb, engine="local", ray_address=None, storage=None):
    """Run fn(job) for every job, at most `workers` at a time; done_cb(row) in this process
    for each result as it arrives."""
    if engine not in ENGINES:
        raise ValueError(f"--engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    with stop_on_signals() as guard:
        if engine == "ray":
            run_ray(fn, jobs, workers, done_cb, ray_address, storage, guard)
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
    errors = []
    try:
        futures = [pool.submit(fn, job) for job in jobs]
        for future in as_completed(futures):
            try:
                row = future.result()
            except Exception as exc:  # the other trials go on, as Ray Tune's do
                errors.append(exc)
                continue
            done_cb(row)
    except BaseException:
        _terminate(pool)  # else running workers train on after the parent is gone
        raise
    pool.shutdown(wait=True)
    if errors:
        raise errors[0]


def _terminate(pool):
    # Python 3.14's pool.terminate_workers() does this; 3.11 only has the private _processes.
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


def run_ray(fn, jobs, workers, done_cb, address=None, storage=None, guard=None):
    """Each job a Ray Tune trial needing 1 CPU, at most `workers` at once. Without an address
    a local Ray instance with `workers` CPUs is started (and stopped afterwards); with one, the
    cluster's nodes need mobilekit installed and the run directories on a shared disk."""
    ray, tune = import_ray()
    if not jobs:
        return
    guard = guard or SignalGuard(())
    guard.deferred = True  # signals are acted on between Tune's steps

    class RowWriter(tune.Callback):
        def on_step_begin(self, iteration, trials, **info):
            if guard.caught is not None:
                _kill_trials(ray, trials)
                guard.check()

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "row" in result:
                done_cb(json.loads(result["row"]))

    draws = [job["row"].get("draw", i) for i, job in enumerate(jobs)]
    trainable = tune.with_resources(
        tune.with_parameters(_ray_trial, fn=fn, jobs=jobs, cwd=os.getcwd()), {"cpu": 1})
    started = not ray.is_initialized()
    try:
        if started and address:
            ray.init(address=address, log_to_driver=False)
        elif started:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home
            ray.init(address="local", num_cpus=workers, include_dashboard=False,  # a new one,
                     log_to_driver=False)  # not a cluster RAY_ADDRESS or /tmp/ray points to
        guard.arm()  # ray.init replaced SIGTERM's handler with one that aborts the process
        guard.check()
        tuner = tune.Tuner(
            trainable, param_space={"job": tune.grid_search(list(range(len(jobs))))},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=workers, num_samples=1,
                trial_dirname_creator=lambda t: f"draw-{draws[t.config['job']]}"),
            run_config=tune.RunConfig(name="trials", storage_path=storage, verbose=0,
                                      callbacks=[RowWriter()]))
        # Tune's own SIGINT handler would end the run "gracefully", letting running
        # trials finish; ours stops them.
        with _env(TUNE_DISABLE_SIGINT_HANDLER="1"), \
                contextlib.redirect_stdout(sys.stderr):  # Tune's tables; stdout is the result
            results = tuner.fit()
        guard.check()
    finally:
        if started:
            ray.shutdown()  # stops the trials' processes, also when interrupted
    if results.errors:
        raise results.errors[0]


def _kill_trials(ray, trials):
    """Stop running trials now: ray.kill interrupts their training (Tune's own clean-up
    asks them to stop and waits; ray.shutdown leaves a local instance's workers running
    until they notice). The actor handle is Tune's internal trial state."""
    for trial in trials:
        actor = getattr(getattr(trial, "temporary_state", None), "ray_actor", None)
        if actor is not None:
            ray.kill(actor, no_restart=True)


@contextlib.contextmanager
def _env(**values):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
