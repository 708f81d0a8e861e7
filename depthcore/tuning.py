"""Runs a sweep's trials on Ray Tune. The only module in depthsweep that imports Ray.

The expansion in `depthcore.sweep` stays the single source of truth: Ray grid-searches over our
trial ids, and each Ray trial trains one run folder with the engine. What the report reads is the
results store (results/runs/<run_id>/ and results/sweeps/<name>.yaml), never Ray's own files:

- trials whose evaluation is recorded are filtered out before Ray sees the trials, so a run shared
  by several sweeps (the baseline of Tables 1-4) trains once; trials with the same run id train
  once; a trained run asked for another evaluation (other eval.* keys) is only evaluated;
- the engine resumes from run_dir/checkpoint, so a retry (FailureConfig), a killed driver or
  Ctrl-C followed by the same command continues where it stopped (no Tuner.restore needed);
- a run locked by another live process (another sweep) is waited for, then its result is used;
- every failure leaves error.json in the run folder; the summary points at those files.

What needs no Ray (the sweep index, one trial's training and its error.json, `--only`) lives in
`depthcore.trials`; this module adds the trainable, progress lines, `ray_session`, `run_sweep`
and Optuna.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import logging
import math
import os
import re
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import ray
from ray import tune

from depthcore import store
from depthcore.config import Config, config_from_dict
from depthcore.errors import ConfigError
from depthcore.estimate import BudgetGate, SweepEstimate, device_share
from depthcore.preflight import (
    check_data,
    check_resources,
    check_sweep_name,
    continue_lines,
    promote_lines,
)
from depthcore.racing import run_bounds
from depthcore.stopping import (
    OBJECTIVE,
    Promotion,
    final_objective,
    objective_curve,
    objective_value,
    select_promotions,
    stop_record,
)
from depthcore.sweep import Range, Sweep, Trial, expand, selection_line, trial_from_params
from depthcore.trials import (
    BUDGET_REFUSAL,
    FAILED_ARM,
    LOCK_POLL_S,
    Out,
    SweepIndex,
    SweepOutcome,
    TrainFn,
    engine_train,
    execute_trial,
    pending_work,
    say,
    with_trial_cpus,
)

__all__ = ["SweepOutcome", "promote_trials", "ray_session", "run_sweep"]

# Set for the driver and every worker before Ray starts.
RAY_ENV = {
    "RAY_CHDIR_TO_TRIAL_DIR": "0",  # trials stay in the driver's cwd (we pass absolute paths)
    "RAY_AIR_NEW_OUTPUT": "0",  # with verbose=0 Tune prints nothing; _Progress prints our lines
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",  # epochs lack metrics when eval.every_epoch=false
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # A failed attempt: _Progress prints one line and keeps Ray's error in the run's faults.log,
    # instead of Tune logging the whole traceback on the console at every attempt.
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",
}
CONNECT_TIMEOUT_S = 10.0
# The user attribute of the Optuna trial that tells the study a promoted trial's full-length
# value (its number: the PRUNED trial it continues); not counted among the study's n_trials.
PROMOTED = "promoted_from"  # --address: how long a cluster's head may take to accept a connection


# ----------------------------------------------------------------------------------------------
# The Ray side of a trial (runs in a Ray worker)


@dataclass(frozen=True)
class _Job:
    """What every Ray trial needs; shipped once through the object store (with_parameters)."""

    sweep: Sweep
    trials: Mapping[str, Trial]  # trial id -> trial (empty for search: optuna)
    results: str
    train_fn: TrainFn
    session_start: float
    poll_s: float = LOCK_POLL_S
    gate: BudgetGate | None = None

    def trial_for(self, config: Mapping[str, Any]) -> Trial:
        if "trial_id" in config:
            return self.trials[config["trial_id"]]
        return trial_from_params(self.sweep, config)


def _trainable(config: dict[str, Any], job: _Job) -> None:
    for name in ("ray.train", "ray.tune"):  # "Checkpoint successfully created" on every epoch
        logging.getLogger(name).setLevel(logging.WARNING)
    resources = job.sweep.file.resources
    trial = with_trial_cpus(job.trial_for(config), resources.cpu)
    run_dir = store.run_path(job.results, trial.run_id)
    split, metric = trial.config.eval.objective, job.sweep.file.metric
    final = execute_trial(
        trial,
        run_dir,
        job.train_fn,
        report=functools.partial(_report_epoch, split=split, metric=metric),
        session_start=job.session_start,
        before_train=_restore_from_ray,
        poll_s=job.poll_s,
        out=_worker_out,
        device_share=device_share(resources),  # this node's CPUs
        gate=functools.partial(job.gate.allows, trial.run_id) if job.gate is not None else None,
    )
    metrics = {k: v for k, v in (final.get("metrics") or {}).items() if _is_number(v)}
    skipped = {"not_started": 1} if final.get("not_started") else {}
    # The search's value of the trial (its last per-epoch objective; objective test: the final
    # test metric); the scheduler leaves a final report alone.
    value = None if skipped else final_objective(run_dir, split, metric, final)
    told = {OBJECTIVE: value} if value is not None else {}
    tune.report({**metrics, "epoch": final.get("epochs", 0), "final": 1, **skipped, **told})


def _worker_out(message: str) -> None:
    """A trial's own messages, less the budget's refusal: the driver prints that one."""
    if BUDGET_REFUSAL not in message:
        say(message)


def _report_epoch(record: dict[str, Any], *, split: str, metric: str) -> None:
    """An epoch to Ray: its numbers, and the objective the scheduler and the search read. A
    scheduler's stop arrives here as SystemExit, after the driver recorded it (stopped.json)."""
    metrics = {k: v for k, v in record.items() if _is_number(v)}
    value = objective_value(record, split, metric)
    if value is not None:
        metrics[OBJECTIVE] = value
    checkpoint = tune.Checkpoint.from_directory(record["checkpoint_dir"])
    tune.report(metrics, checkpoint=checkpoint)  # copies the checkpoint into Ray's storage now


def _is_number(value: Any) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _restore_from_ray(run_dir: Path) -> None:
    """A retry on a node that cannot see the run folder's checkpoint gets Ray's copy of it."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None or store.has_checkpoint(run_dir):
        return
    target = run_dir / store.CHECKPOINT_DIR
    tmp = run_dir / f".{store.CHECKPOINT_DIR}.from-ray"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.to_directory(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


# ----------------------------------------------------------------------------------------------
# Driver-side progress: one line per trial event, and the index kept up to date


class _Progress(tune.Callback):
    """One line per trial event. Every status printed is the run folder's (store.run_status): a
    trial Ray gave up on gets an error.json first, so it reads `failed` with its error."""

    def __init__(self, job: _Job, index: SweepIndex, total: int, out: Out) -> None:
        self.job, self.index, self.total, self.out = job, index, total, out
        self.numbers: dict[str, int] = {}
        self.skipped: set[str] = set()  # Ray trial ids the budget gate did not start

    def _trial(self, trial: Any) -> tuple[str, Trial]:
        ours = self.job.trial_for(trial.config)
        self.numbers.setdefault(trial.trial_id, len(self.numbers) + 1)
        return f"[{self.numbers[trial.trial_id]}/{self.total}]", ours

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tag, ours = self._trial(trial)
        self.index.add(ours, "running")
        self.index.set_status(ours.run_id, "running")
        self.index.write()
        self.out(f"{tag} start   {ours.trial_id}  (run {ours.run_id})")

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get("not_started"):
            self.skipped.add(trial.trial_id)
        if result.get("final") == 1 or "step" not in result:
            return
        tag, ours = self._trial(trial)
        epochs = ours.config.train.epochs
        value = result.get(OBJECTIVE)
        split = "val " if ours.config.eval.objective == "val" else ""
        shown = f"  {split}{self.job.sweep.file.metric} {value:.4f}" if _is_number(value) else ""
        self.out(f"{tag} epoch {result.get('epoch')}/{epochs}  {ours.trial_id}{shown}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tag, ours = self._trial(trial)
        run_dir = self.index.run_dir(ours.run_id)
        what, log = _record_fault(trial, run_dir, "retried", self.job.sweep.file.max_failures)
        again = (
            "resuming from its last checkpoint"
            if store.has_checkpoint(run_dir)
            else "starting again (no checkpoint yet)"
        )
        self.out(f"{tag} retry   {ours.trial_id}: {what}; {again}; Ray's error in {log}")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.job.sweep.file.scheduler is not None:
            self._record_stop(trial)
        self._ended(trial)

    def _record_stop(self, trial: Any) -> None:
        """A trial that completes on an epoch's report (not its final one) was stopped by the
        scheduler: Ray calls this before it tells the trial's worker, which waits at that
        epoch's checkpoint, to stop (Ctrl-C stops trials without calling it)."""
        _, ours = self._trial(trial)
        record = stop_record(self.job.sweep, ours, trial.last_result or {})
        if record is not None:
            store.write_stopped(self.index.run_dir(ours.run_id), record)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        _, ours = self._trial(trial)
        run_dir = self.index.run_dir(ours.run_id)
        _record_fault(trial, run_dir, "gave up", self.job.sweep.file.max_failures)
        _record_error(trial, run_dir, ours.eval_id, self.job.session_start)
        self._ended(trial)

    def _ended(self, trial: Any) -> None:
        tag, ours = self._trial(trial)
        run_dir = self.index.run_dir(ours.run_id)
        self.index.refresh([ours.run_id])
        self.index.write()
        status = store.run_status(run_dir, ours.eval_id)
        final = store.read_evaluation(run_dir, ours.eval_id)
        if final is not None:
            metric = self.job.sweep.file.metric
            value = final["metrics"].get(metric)
            split = "test " if ours.config.eval.objective == "val" else ""  # not the val value
            shown = f"  {split}{metric} {value:.4f}" if _is_number(value) else ""
            self.out(f"{tag} done    {ours.trial_id}{shown}")
        elif status == "failed":
            path = store.error_path(run_dir, ours.eval_id)
            error = store.read_error(path.parent) or {}
            first = str(error.get("error") or "").strip().splitlines()[:1]
            self.out(
                f"{tag} FAILED  {ours.trial_id}: {error.get('type')}: {''.join(first)}  "
                f"(see {path})"
            )
        elif status == "stopped":
            rec = store.read_stopped(run_dir) or {}
            value, metric = rec.get("value"), self.job.sweep.file.metric
            split = "val " if rec.get("objective") == "val" else ""
            shown = f" ({split}{metric} {value:.4f})" if _is_number(value) else ""
            self.out(
                f"{tag} stopped {ours.trial_id}: early, by ASHA at epoch {rec.get('epoch')}/"
                f"{ours.config.train.epochs}{shown}; --promote trains it to the end"
            )
        elif status == "pending" and trial.trial_id in self.skipped:
            self.out(f"{tag} skipped {ours.trial_id}: budget reached, not started")
        elif status == "pending":
            self.out(f"{tag} stopped {ours.trial_id}: not started")
        elif status == "interrupted":
            self.out(f"{tag} stopped {ours.trial_id}: interrupted; resumes from its checkpoint")
        else:
            self.out(f"{tag} {status:<7} {ours.trial_id}")


# A worker that dies takes Ray's traceback with it; these keep what Ray says about the attempt.


def _trial_error(trial: Any) -> BaseException | None:
    """The exception of a Ray trial's latest failed attempt (Ray pickles it into the trial's
    folder before it calls the callbacks)."""
    path = getattr(trial, "pickled_error_file", None)
    if not path or not Path(path).is_file():
        return None
    try:
        with open(path, "rb") as f:
            error = ray.cloudpickle.load(f)
    except Exception:  # an exception class this process cannot unpickle
        return None
    return error if isinstance(error, BaseException) else None


def _describe_error(error: BaseException | None) -> tuple[str, str, str]:
    """(type, first line, full text) of a failed attempt: a RayTaskError wraps the trial's own
    exception (its text holds the remote traceback); an ActorDiedError is a worker that died."""
    if error is None:
        return "RayTrialError", "the trial failed (Ray kept no error)", ""
    cause = getattr(error, "cause", None)
    shown = cause if isinstance(cause, BaseException) else error
    text = "".join(traceback.format_exception(error))
    first = next((line for line in str(shown).splitlines() if line.strip()), "").strip()
    if type(shown).__name__ in ("ActorDiedError", "WorkerCrashedError"):
        detail = re.search(r"Worker exit detail: (.*?)(?: Some common causes|$)", str(shown))
        first = "its Ray worker process died" + (f": {detail.group(1)}" if detail else "")
    return type(shown).__name__, first, text


def _record_fault(trial: Any, run_dir: Path, outcome: str, retries: int) -> tuple[str, Path]:
    """Append the attempt's error, in full, to the run folder's faults.log; returns a one-line
    description and the log's path."""
    kind, first, text = _describe_error(_trial_error(trial))
    failures = int(getattr(getattr(trial, "run_metadata", None), "num_failures", 0) or 0)
    header = f"attempt {failures} of {retries + 1} failed, {outcome} (Ray trial {trial.trial_id})"
    log = store.append_fault(run_dir, header, text)
    return f"attempt {failures} of {retries + 1}: {_short(first)} ({kind})", log


def _short(text: str, width: int = 160) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _record_error(trial: Any, run_dir: Path, eval_id: str, session_start: float) -> None:
    """A trial Ray gave up on is failed, with its error: the engine recorded its own failures;
    a worker that died (killed, out of memory) recorded nothing, so its Ray error goes into
    the error.json of what it was doing (the training, or the evaluation of a trained run).
    An error.json recorded in this sweep invocation is kept."""
    if store.read_evaluation(run_dir, eval_id) is not None:
        return
    path = store.error_path(run_dir, eval_id)
    try:
        recorded = path.stat().st_mtime >= session_start - 1
    except FileNotFoundError:
        recorded = False
    if recorded:
        return
    kind, first, text = _describe_error(_trial_error(trial))
    path.parent.mkdir(parents=True, exist_ok=True)
    store.write_error(path.parent, kind=kind, message=first, step=None, traceback=text)


# ----------------------------------------------------------------------------------------------
# Starting or joining Ray


@contextlib.contextmanager
def ray_session(address: str | None, *, dashboard: bool, out: Out = say) -> Iterator[bool]:
    """Join `address` (or RAY_ADDRESS), reuse a connected Ray, or start a local one.

    Yields whether the Ray instance is local and started here (only then is it shut down).
    """
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    if ray.is_initialized():
        with _quiet_ray():
            _print_dashboard(ray.init(ignore_reinit_error=True), out)
            yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    # RAY_AUTH_MODE: we keep Ray 2.60's choice for a new local instance, token auth (it writes
    # ~/.ray/auth_token; the dashboard's API routes then need the token). Setting the variable
    # here would be too late: Ray reads it when imported, and a mismatch crashes its GCS.
    # RAY_AUTH_MODE=disabled (set before starting) turns it off; a joined cluster decides itself.
    with _quiet_ray():
        ctx = _connect(address, dashboard)
        _print_dashboard(ctx, out)
        try:
            yield address is None
        finally:
            ray.shutdown()


# Ray's console messages that a line of ours replaces: the token-auth notice of every local start
# (the dashboard line says how to use the token), and the raylet's report of a worker that died
# (the trial's retry or FAILED line says it; faults.log in the run folder keeps Ray's words).
# Also Tune's closing words on a sweep that did not finish: the unfinished Ray trial ids, its
# Tuner.restore hint (the runner continues with the same command, which the summary gives) and
# the trials it has no metrics for (those the budget or a stop left untouched).
_DROPPED = {
    "ray._private.authentication.authentication_token_setup": (
        "Token authentication is enabled for this Ray cluster",
    ),
    "ray.tune.tune": ("Trials did not complete", "Experiment has been interrupted"),
    "ray.tune.analysis.experiment_analysis": ("Failed to fetch metrics",),
}
_WORKER_DIED = "A worker died or was killed while executing"


class _DropMessages(logging.Filter):
    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(needle in record.getMessage() for needle in self.needles)


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """While Ray runs here: drop the messages above. The raylet's goes through
    `ray._private.worker.print_to_stdstream`, which Ray 2.60 offers no setting for; it is
    wrapped only while the session lasts, and only when it exists."""
    filters = {name: _DropMessages(*needles) for name, needles in _DROPPED.items()}
    for name, drop in filters.items():
        logging.getLogger(name).addFilter(drop)
    worker: Any = importlib.import_module("ray._private.worker")
    original = getattr(worker, "print_to_stdstream", None)
    if callable(original):
        worker.print_to_stdstream = functools.partial(_without_worker_deaths, original)
    try:
        yield
    finally:
        for name, drop in filters.items():
            logging.getLogger(name).removeFilter(drop)
        if callable(original):
            worker.print_to_stdstream = original


def _without_worker_deaths(
    original: Callable[..., None], data: dict[str, Any], *args: Any, **kwargs: Any
) -> None:
    if data.get("pid") == "raylet":
        lines = [line for line in data.get("lines") or [] if _WORKER_DIED not in str(line)]
        if not lines:
            return
        data = {**data, "lines": lines}
    original(data, *args, **kwargs)


def _connect(address: str | None, dashboard: bool) -> Any:
    env = {"env_vars": dict(RAY_ENV)}
    try:
        if address is not None:
            _check_reachable(address)
            return ray.init(address=address, runtime_env=env, logging_level=logging.WARNING)
        # "local", not None: None would join whatever /tmp/ray/ray_current_cluster names
        # (a `ray start` or a test cluster), silently running the sweep elsewhere.
        return ray.init(
            address="local",
            num_cpus=len(os.sched_getaffinity(0)),
            include_dashboard=dashboard,
            runtime_env=env,
            logging_level=logging.WARNING,
        )
    except ConnectionError as exc:
        raise ConfigError(
            f"--address {address}: no Ray cluster there ({exc}); start one with "
            "`ray start --head`, or leave out --address (and unset RAY_ADDRESS) to run locally"
        ) from None
    except Exception as exc:
        if "uthentication" in str(exc):
            raise ConfigError(
                f"Ray at {address} refused the connection: {exc}. The cluster uses token auth: "
                "export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN (or copy ~/.ray/auth_token)"
            ) from None
        raise


def _check_reachable(address: str) -> None:
    """Ray retries an unreachable HOST:PORT for minutes; a plain TCP connect fails in seconds."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", or a form Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {host}:{port}: {exc}") from None


def _print_dashboard(ctx: Any, out: Out) -> None:
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        out("Ray dashboard: off")
        return
    url = url if url.startswith("http") else f"http://{url}"
    auth = os.environ.get("RAY_AUTH_MODE", "")  # Ray sets it to "token" when it enables auth
    note = " (token auth: paste `ray get-auth-token` when asked)" if auth == "token" else ""
    out(f"Ray dashboard: {url}{note}")


def _check_resources(sweep: Sweep, local: bool, out: Out = say) -> None:
    """A local Ray that cannot fit one trial would wait forever: say so instead."""
    want = sweep.file.resources
    have = ray.cluster_resources()
    short = [
        f"{name}: {amount:g} per trial, the cluster has {have.get(key, 0):g}"
        for name, key, amount in (("cpu", "CPU", want.cpu), ("gpu", "GPU", want.gpu))
        if amount > have.get(key, 0)
    ]
    if short and local:
        raise ConfigError(
            f"{sweep.where('resources')}: no trial fits this machine ({'; '.join(short)}); lower "
            "resources in the sweep file (gpu: 0 trains on CPU) or join a cluster with --address"
        )
    if short:
        out(f"warning: no node fits a trial now ({'; '.join(short)}); trials wait for one")


# ----------------------------------------------------------------------------------------------
# The sweep


@dataclass(frozen=True)
class _Options:
    """How to run on Ray (the runner's flags)."""

    address: str | None
    max_concurrent: int | None
    dashboard: bool
    storage: str | None
    out: Out
    command: tuple[str, ...] = ()  # the runner's argv: the hint that continues names it


def run_sweep(
    sweep: Sweep,
    results: str | Path = "results",
    *,
    train_fn: TrainFn | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    dashboard: bool = True,
    storage: str | None = None,
    poll_s: float = LOCK_POLL_S,
    out: Out = say,
    budget: BudgetGate | None = None,
    estimate: SweepEstimate | None = None,
    command: Sequence[str] = (),
) -> SweepOutcome:
    """Run every unfinished trial of `sweep` on Ray and return how the sweep ended.

    Args:
        sweep: a loaded sweep (`depthcore.sweep.load_sweep`).
        results: the results folder (runs/ and sweeps/ inside; Ray's files in ray/).
        train_fn: `train(cfg, run_dir, *, report, progress) -> final dict`; default the engine.
        address: a Ray cluster to join ("auto", "ray://host:10001", host:port); default
            RAY_ADDRESS, else a local Ray with every CPU of this machine.
        max_concurrent: at most this many trials at once (default: the sweep file's value).
        dashboard: start the Ray dashboard with a local Ray (its URL is printed).
        storage: Ray's storage_path (a shared path or s3://...); default <results>/ray.
        poll_s: seconds between checks of a run another process is training.
        budget: no run starts unless spent + running cost + its own fits (depthcore.estimate).
        estimate: the pre-flight's estimate, recorded in the sweep index at its start.
        command: the command line that started the sweep (the runner's argv), for the hint
            that continues a sweep that stopped.

    Nothing is written before the sweep name and, on a local machine, the data are checked
    (depthcore.preflight): a ConfigError or DataError leaves the results folder as it was.
    """
    results = Path(results).resolve()
    check_sweep_name(sweep, results)
    job = _Job(sweep, {}, str(results), train_fn or engine_train(), time.time(), poll_s, budget)
    opts = _Options(address, max_concurrent, dashboard, storage, out, tuple(command))
    if sweep.file.search.method == "optuna":
        check_data([config_from_dict(sweep.base)], address)
        return _run_optuna(job, opts)
    trials = expand(sweep)
    if sweep.file.adaptive is not None:
        return _race(job, opts, trials, estimate)
    index = SweepIndex(sweep, results, trials)
    work = pending_work(results, trials, sweep.name)
    todo = _todo(index, trials)
    check_data([t.config for t in work.train], address, evaluate=[t.config for t in work.evaluate])
    index.keep_estimate(estimate)
    index.write()
    out(f"{sweep.name}: {len(trials)} trials: {work.line()}")
    if sweep.file.scheduler is not None and trials:
        out(f"{sweep.name}: {selection_line(sweep, trials[0].config)}")
    if todo:
        job = dataclasses.replace(job, trials={t.trial_id: t for t in todo})
        space = {"trial_id": tune.grid_search([t.trial_id for t in todo])}
        baseline = {t.run_id for t in trials if t.role == "baseline"}
        scheduler = _scheduler(job, index, trials[0].config, baseline)
        _run_on_ray(job, opts, index, space, scheduler=scheduler)
    return _summarise(job, opts, index, len(work.train), len(work.evaluate))


def _race(
    job: _Job, opts: _Options, trials: Sequence[Trial], estimate: SweepEstimate | None
) -> SweepOutcome:
    """Adaptive seeds: rounds of Ray trials, each over the runs the race asks for next, until
    every arm is decided or at max seeds (see depthcore/racing.py). A configuration whose run
    fails (after Ray's retries) leaves the race and the others go on; a failed baseline run, or
    runs that did not finish (interrupted, not started), stop it."""
    sweep, out = job.sweep, opts.out
    index = SweepIndex(sweep, Path(job.results), trials)
    state = index.race(trials)
    work = pending_work(job.results, trials, sweep.name)
    check_data(
        [t.config for t in work.train], opts.address, evaluate=[t.config for t in work.evaluate]
    )
    index.keep_estimate(estimate)
    index.write()
    settings = sweep.file.adaptive
    assert settings is not None  # run_sweep races only such sweeps
    low, high = run_bounds(len({t.arm for t in trials}), settings.plan)
    out(f"{sweep.name}: adaptive seeds (start {settings.start}, max {settings.max}): "
        f"{low} to {high} runs")  # fmt: skip
    tried: set[str] = set()
    failed_arms: set[str] = set()
    trained = evaluated = 0
    while state.next_runs:
        asked = set(state.next_runs)
        if tried.issuperset(asked):
            out(f"{sweep.name}: race halted: {len(asked)} runs did not finish")
            break
        tried |= asked
        todo = _todo(index, [t for t in trials if t.run_id in asked])
        if not todo:  # finished, yet the race cannot read their per-image results
            out(f"{sweep.name}: race halted: finished runs without a readable per_image.csv")
            break
        work = pending_work(job.results, todo, sweep.name)
        out(f"{sweep.name}: race round: {work.line()}")
        round_job = dataclasses.replace(job, trials={t.trial_id: t for t in todo})
        _run_on_ray(round_job, opts, index, {"trial_id": tune.grid_search(list(round_job.trials))})
        trained += len(work.train)
        evaluated += len(work.evaluate)
        go_on = _after_round(sweep, index, todo, failed_arms, out)
        state = index.race(trials, failed_arms)
        index.write()
        if not go_on:
            break
    for arm, arm_state in state.arms.items():
        out(f"  {arm}: {arm_state.seeds_run} seeds, {arm_state.stop_reason}")
    for arm in sorted(failed_arms):
        out(f"  {arm}: {FAILED_ARM} (left the race)")
    return _summarise(job, opts, index, trained, evaluated)


def _after_round(
    sweep: Sweep, index: SweepIndex, todo: Sequence[Trial], failed_arms: set[str], out: Out
) -> bool:
    """Whether the race goes on after a round: a configuration with a failed run leaves it
    (the others go on; rerunning the command tries the run again); a failed baseline run, or a
    run that did not finish (the sweep was stopped, or the budget left it), stops it."""
    statuses = {t.trial_id: store.run_status(index.run_dir(t.run_id), t.eval_id) for t in todo}
    unfinished = ("interrupted", "pending", "running", "trained")
    stopped = [t for t in todo if statuses[t.trial_id] in unfinished]
    if stopped:
        out(f"{sweep.name}: race stopped: {len(stopped)} runs of the round did not finish")
        return False
    for trial in (t for t in todo if statuses[t.trial_id] == "failed"):
        path = store.error_path(index.run_dir(trial.run_id), trial.eval_id)
        error = store.read_error(path.parent) or {}
        why = f"{error.get('type')}: {str(error.get('error') or '').strip()[:120]}"
        if trial.role == "baseline":
            out(
                f"{sweep.name}: race halted: the baseline's run {trial.trial_id} failed ({why}); "
                "no configuration can be judged without it"
            )
            return False
        if trial.arm not in failed_arms:
            failed_arms.add(trial.arm)
            out(
                f"{sweep.name}: {trial.arm} leaves the race: its run {trial.trial_id} failed "
                f"({why}); the other configurations go on"
            )
    return True


def _todo(index: SweepIndex, trials: Sequence[Trial]) -> list[Trial]:
    """One trial per unfinished (run, evaluation); runs another process is training, and second
    evaluations of a run to train, go last (they wait for the training)."""
    work = pending_work(index.results, trials, index.sweep.name)
    training = {t.run_id: t for t in work.train}

    def last(trial: Trial) -> tuple[bool, bool]:
        running = store.run_status(index.run_dir(trial.run_id)) == "running"
        return running, training.get(trial.run_id, trial) is not trial

    return sorted([*work.train, *work.evaluate], key=last)


def _run_on_ray(
    job: _Job,
    opts: _Options,
    index: SweepIndex,
    space: dict[str, Any],
    search_alg: Any = None,
    num_samples: int = 1,
    scheduler: Any = None,
) -> None:
    spec = job.sweep.file
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    trainable = tune.with_resources(tune.with_parameters(_trainable, job=job), resources)
    total = num_samples if search_alg is not None else len(job.trials)
    try:
        with ray_session(opts.address, dashboard=opts.dashboard, out=opts.out) as local:
            _check_resources(job.sweep, local, opts.out)
            tuner = tune.Tuner(
                trainable,
                param_space=space,
                tune_config=tune.TuneConfig(
                    search_alg=search_alg,
                    scheduler=scheduler,
                    num_samples=num_samples,
                    max_concurrent_trials=opts.max_concurrent or spec.max_concurrent,
                    trial_dirname_creator=_trial_dirname,
                ),
                run_config=tune.RunConfig(
                    name=f"{spec.name}_{time.strftime('%Y%m%d-%H%M%S')}",
                    storage_path=opts.storage or str(Path(job.results) / "ray"),
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    callbacks=[_Progress(job, index, total, opts.out)],
                    verbose=0,
                ),
            )
            grid = tuner.fit()
    finally:
        index.refresh()  # after Ray is gone, so locks of stopped trials no longer count
        index.write()
    _prune_ray_checkpoints(grid, job)


def _trial_dirname(trial: Any) -> str:
    return f"trial_{trial.trial_id}"


def _prune_ray_checkpoints(grid: Any, job: _Job) -> None:
    """Ray's copies of trained runs' checkpoints only cost disk: the run folder has its own."""
    for result in grid:
        path = Path(result.path) if result.path else None
        if path is None or not path.is_dir() or not result.config:
            continue
        run_id = job.trial_for(result.config).run_id
        if store.read_trained(store.run_path(job.results, run_id)) is not None:
            for old in path.glob("checkpoint_*"):
                shutil.rmtree(old, ignore_errors=True)


def _summarise(
    job: _Job, opts: _Options, index: SweepIndex, trained: int, evaluated: int = 0
) -> SweepOutcome:
    """The closing lines: the index's statuses counted as the index lists them (each status is
    the run folder's), each failed trial with its error, and the command that continues."""
    sweep, out = job.sweep, opts.out
    statuses = {tid: e["status"] for tid, e in index.entries.items()}
    errors = {
        tid: store.error_path(index.run_dir(e["run_id"]), e.get("eval_id"))
        for tid, e in index.entries.items()
        if e["status"] == "failed"
    }
    outcome = SweepOutcome(sweep.name, index.path, statuses, errors, trained, evaluated)
    counts: dict[str, int] = {}
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    runs = len({e["run_id"] for e in index.entries.values()})
    shared = f" ({runs} runs)" if runs != len(statuses) else ""
    out(f"{sweep.name}: {len(statuses)} trials{shared}: {parts}  (index: {index.path})")
    for tid, path in errors.items():
        error = store.read_error(path.parent) or {}
        out(f"  failed: {tid}: {error.get('type')}: {error.get('error')}  -> {path}")
    lines = continue_lines(sweep, Path(job.results), statuses, gate=job.gate, command=opts.command)
    for line in [*lines, *promote_lines(sweep, statuses, opts.command)]:
        out(line)
    return outcome


# ----------------------------------------------------------------------------------------------
# search: optuna


def _run_optuna(job: _Job, opts: _Options) -> SweepOutcome:
    from optuna.samplers import TPESampler

    sweep, results = job.sweep, Path(job.results)
    index = SweepIndex(sweep, results, [])
    index.refresh()
    index.write()
    journal = _journal(results, sweep.name)
    n_trials = sweep.file.search.n_trials
    assert n_trials is not None  # Search requires it for optuna
    remaining = max(n_trials - _prepare_study(journal, sweep, opts.out), 0)
    where = store.optuna_journal_path(results, sweep.name)
    opts.out(f"{sweep.name}: optuna study {where}: {remaining} trials to run")
    base = config_from_dict(sweep.base)
    opts.out(f"{sweep.name}: {selection_line(sweep, base)}")
    if remaining:
        search = sweep.file.search
        searcher = _objective_optuna()(
            metric=OBJECTIVE,
            mode=sweep.file.resolved_mode,
            sampler=TPESampler(seed=search.seed, n_startup_trials=search.n_startup_trials),
            study_name=sweep.name,
            storage=journal,
        )
        space = {key: _domain(rng) for key, rng in search.space.items()}
        scheduler = _scheduler(job, index, base)
        _run_on_ray(job, opts, index, space, searcher, remaining, scheduler)
    return _summarise(job, opts, index, remaining)


def _objective_optuna() -> type:
    from optuna.trial import TrialState
    from ray.tune.search.optuna import OptunaSearch

    class ObjectiveOptunaSearch(OptunaSearch):
        """Tells Optuna what the sweep selects on (OBJECTIVE): each epoch's value as an
        intermediate value at step = epoch; a finished trial's final value as COMPLETE; a trial
        the scheduler stopped as PRUNED, which makes its last intermediate value its value, so
        TPE learns from it; a trial that errored as FAIL (OptunaSearch would record its last
        epoch value for the last two, as a COMPLETE trial)."""

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if not result.get("final"):
                self._intermediate(trial_id, result)

        def on_trial_complete(
            self, trial_id: str, result: dict | None = None, error: bool = False
        ) -> None:
            if error or not result:
                super().on_trial_complete(trial_id, None, error)
            elif result.get("final"):
                super().on_trial_complete(trial_id, result if OBJECTIVE in result else None)
            elif trial_id not in self._completed_trials:
                # Ray passes no STOP decision's result to on_trial_result: report it first.
                self._intermediate(trial_id, result)
                study: Any = self._ot_study
                study.tell(self._ot_trials[trial_id], state=TrialState.PRUNED)
                self._completed_trials.add(trial_id)

        def _intermediate(self, trial_id: str, result: dict) -> None:
            value, epoch = result.get(OBJECTIVE), result.get("epoch")
            trial = self._ot_trials.get(trial_id)
            if trial is not None and _is_number(value) and _is_number(epoch):
                trial.report(float(value), int(epoch))

    return ObjectiveOptunaSearch


# ----------------------------------------------------------------------------------------------
# Early stopping: Ray Tune's ASHA on the per-epoch objective


def _scheduler(job: _Job, index: SweepIndex, base: Config, protected: Collection[str] = ()) -> Any:
    """Ray Tune's ASHAScheduler on the per-epoch objective (time_attr epoch, the sweep's mode),
    or None without `scheduler:`. It never stops a trial at its last epoch (only the final
    evaluation is left), nor the runs in `protected` (the baseline: every verdict needs it),
    and it starts with the rung values of the sweep's runs recorded before (a rerun, or a
    search that continues), so a trial is judged against them and a resumed run is not judged
    again at a rung it passed."""
    spec = job.sweep.file.scheduler
    if spec is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    epochs, metric = base.train.epochs, job.sweep.file.metric
    grace, factor, mode = spec.grace_epochs, spec.reduction_factor, job.sweep.file.resolved_mode
    sign = -1.0 if mode == "min" else 1.0  # ASHA keeps the largest of sign x value
    split = base.eval.objective
    prior = {
        entry["run_id"]: objective_curve(index.run_dir(entry["run_id"]), split, metric)
        for entry in index.entries.values()
    }

    class EpochASHA(ASHAScheduler):
        def __init__(self) -> None:
            super().__init__(
                time_attr="epoch",
                metric=OBJECTIVE,
                mode=mode,
                max_t=epochs,
                grace_period=grace,
                reduction_factor=factor,
            )
            for milestone, recorded in self._rungs():
                for run_id, curve in prior.items():
                    value = curve.get(math.ceil(milestone - 1e-9))
                    if value is not None:
                        recorded[f"run:{run_id}"] = sign * value

        def _rungs(self) -> list[tuple[float, dict[str, float]]]:
            return [rung for bracket in self._brackets for rung in bracket._rungs]

        def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
            super().on_trial_add(tune_controller, trial)
            run_id = job.trial_for(trial.config).run_id
            for _, recorded in self._rungs():  # the run's own earlier values: rungs it passed
                if f"run:{run_id}" in recorded:
                    recorded[trial.trial_id] = recorded.pop(f"run:{run_id}")

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            epoch = result.get("epoch")
            if result.get("final") or not _is_number(epoch) or epoch >= epochs:
                return TrialScheduler.CONTINUE
            decision = super().on_trial_result(tune_controller, trial, result)
            stop = decision == TrialScheduler.STOP
            if stop and protected and job.trial_for(trial.config).run_id in protected:
                return TrialScheduler.CONTINUE
            return str(decision)

    return EpochASHA()


def _journal(results: Path, name: str) -> Any:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = store.optuna_journal_path(results, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def _prepare_study(storage: Any, sweep: Sweep, out: Out) -> int:
    """Trials already spent; trials left RUNNING by a dead driver are re-queued (same params),
    so their runs resume from the run folders' checkpoints."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=sweep.name, storage=storage)
    except KeyError:
        return 0
    spent = 0
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get(PROMOTED):
            continue  # a stopped trial's full-length value, told after --promote
        if trial.state == TrialState.RUNNING:
            storage.set_trial_user_attr(trial._trial_id, "requeued", True)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            study.enqueue_trial(trial.params)
            out(f"  re-queued interrupted optuna trial {trial.number}: {trial.params}")
        elif trial.state.is_finished() and not trial.user_attrs.get("requeued"):
            spent += 1
    return spent


def _domain(rng: Range) -> Any:
    if rng.choice is not None:
        return tune.choice(list(rng.choice))
    if rng.uniform is not None:
        return tune.uniform(*rng.uniform)
    return tune.loguniform(*(rng.loguniform or []))


# ----------------------------------------------------------------------------------------------
# --promote: stopped trials trained to full length


def promote_trials(
    sweep: Sweep,
    results: str | Path,
    keys: Sequence[str],
    *,
    train_fn: TrainFn | None = None,
    address: str | None = None,
    max_concurrent: int | None = None,
    dashboard: bool = True,
    storage: str | None = None,
    poll_s: float = LOCK_POLL_S,
    out: Out = say,
    command: Sequence[str] = (),
) -> SweepOutcome:
    """Train the stopped trials `keys` names (ids, or `top:K`: depthcore.stopping) to full
    length on Ray, each from its run's checkpoint: no epoch is trained twice, no scheduler
    stops them, and on CPU each ends bit for bit where an unstopped run would. An optuna
    sweep's study is then told each one's full-length value as a new COMPLETE trial (the PRUNED
    one stays). A ConfigError (exit 2), before anything is written, names a key that is no
    stopped trial of the sweep."""
    results = Path(results).resolve()
    check_sweep_name(sweep, results)
    chosen = select_promotions(sweep, results, keys)
    check_resources(sweep, address)
    check_data([p.trial.config for p in chosen], address)
    optuna = sweep.file.search.method == "optuna"
    index = SweepIndex(sweep, results, [] if optuna else expand(sweep))
    index.refresh()
    index.write()
    out(f"{sweep.name}: promoting {len(chosen)} trials stopped early, to full length:")
    for promotion in chosen:
        out(promotion.line())
    trials = {p.trial.trial_id: p.trial for p in chosen}
    job = _Job(sweep, trials, str(results), train_fn or engine_train(), time.time(), poll_s)
    opts = _Options(address, max_concurrent, dashboard, storage, out, tuple(command))
    _run_on_ray(job, opts, index, {"trial_id": tune.grid_search(list(trials))})
    if optuna:
        _tell_promoted(sweep, results, chosen, out)
    outcome = _summarise(job, opts, index, len(chosen))
    promoted = {t: outcome.statuses.get(t, "missing") for t in trials}
    return dataclasses.replace(outcome, statuses=promoted)


def _tell_promoted(sweep: Sweep, results: Path, chosen: Sequence[Promotion], out: Out) -> None:
    """Each promoted trial's full-length value to the study, as a COMPLETE trial with the
    PRUNED trial's values (user attribute PROMOTED: that trial's number)."""
    import optuna

    storage = _journal(results, sweep.name)
    study = optuna.load_study(study_name=sweep.name, storage=storage)
    pruned = {
        trial_from_params(sweep, t.params).run_id: t
        for t in study.get_trials(deepcopy=False)
        if t.state == optuna.trial.TrialState.PRUNED
    }
    for promotion in chosen:
        trial, run_dir = promotion.trial, store.run_path(results, promotion.trial.run_id)
        final = store.read_evaluation(run_dir, trial.eval_id)
        found = pruned.get(trial.run_id)
        if final is None or found is None:
            continue
        value = final_objective(run_dir, trial.config.eval.objective, sweep.file.metric, final)
        if value is None:
            continue
        study.add_trial(
            optuna.trial.create_trial(
                params=found.params,
                distributions=found.distributions,
                value=value,
                user_attrs={PROMOTED: found.number},
            )
        )
        out(f"  optuna: trial {found.number} (pruned) trained to the end: {value:.4f}")
