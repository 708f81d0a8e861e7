"""Sweep trials without Ray: the sweep index, one trial's training (or, for a trained run, only
its evaluation) with its errors recorded, and `--only` (one trial in this process).

`depthcore.tuning` runs these same trials on Ray; everything here also works in a process that
never imports Ray (runners/sweep.py --only), so breakpoints and plain tracebacks work.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import os
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from depthcore import store
from depthcore.config import config_from_dict
from depthcore.errors import ConfigError, TrainingError
from depthcore.estimate import SweepEstimate, index_record
from depthcore.preflight import Work, check_data, check_sweep_name, pending_work
from depthcore.racing import RaceState, race
from depthcore.sweep import Sweep, SweepFile, Trial, expand, key_order

__all__ = [
    "NOT_STARTED",
    "SweepIndex",
    "SweepOutcome",
    "Work",
    "engine_train",
    "execute_trial",
    "find_trial",
    "index_entry",
    "pending_work",
    "run_one",
    "say",
    "swept_keys",
    "with_trial_cpus",
]

TrainFn = Callable[..., dict[str, Any]]
Out = Callable[[str], None]

# Failures that a retry in the same sweep invocation would only repeat (error.json "type").
DETERMINISTIC_ERRORS = ("TrainingError", "DataError", "ConfigError")
LOCK_POLL_S = float(os.environ.get("DEPTHSWEEP_LOCK_POLL_S", "10"))
# What execute_trial returns for a run the budget gate did not start (its folder untouched).
NOT_STARTED: dict[str, Any] = {"not_started": "budget"}
BUDGET_REFUSAL = "budget reached; run"
# The stop reason of a raced configuration one of whose runs failed (after Ray's retries): the
# race goes on without it in this invocation (docs/sweeps.md, "Adaptive seeds").
FAILED_ARM = "failed"


def say(message: str) -> None:
    """The default `out`: one flushed line on stdout."""
    # Not `print` itself: callbacks are pickled with the Tuner, and Ray swaps builtins.print.
    print(message, flush=True)


def engine_train() -> TrainFn:
    """The engine's `train`, imported only when a trial runs (it pulls in torch)."""
    from depthcore.engine import train

    return train


# ----------------------------------------------------------------------------------------------
# The sweep index: results/sweeps/<name>.yaml (schema: README.md, "Results layout")


class SweepIndex:
    """The sweep's trials and their statuses, rewritten atomically whenever one changes."""

    def __init__(self, sweep: Sweep, results: Path, trials: Sequence[Trial]) -> None:
        self.sweep, self.results = sweep, results
        self.path = store.sweep_index_path(results, sweep.name)
        self.entries: dict[str, dict[str, Any]] = {}
        old = store.read_sweep_index(results, sweep.name) or {}
        # Recorded at the sweep's start (depthcore.estimate.index_record); kept on rewrites.
        self.estimate = old.get("estimate")
        # eval id -> the settings it hashes, for the index's `evaluations`
        self.evaluations: dict[str, Any] = {}
        # The trials' eval.objective (what the per-epoch evaluation, a search and a scheduler
        # score): the index's `objective` when they share one.
        self.objectives: set[str] = set()
        if sweep.file.search.method == "optuna":
            self.objectives.add(str(config_from_dict(sweep.base).eval.objective))
        if sweep.file.search.method == "optuna":
            self.swept = list(sweep.file.search.space)
            for entry in old.get("trials") or []:
                if isinstance(entry, dict) and entry.get("trial_id") and entry.get("run_id"):
                    self.entries[str(entry["trial_id"])] = entry
            if isinstance(old.get("evaluations"), dict):
                self.evaluations.update(old["evaluations"])
        else:
            order = key_order(sweep)  # the file's order, for the report's columns
            rank = {key: i for i, key in enumerate(order)}
            self.swept = sorted(swept_keys(trials), key=lambda k: rank.get(k, len(rank)))
        for trial in trials:
            self.add(trial)
        # An index naming other evaluations of the same runs is kept beside the new one.
        self.replaced = old if _evaluations_replaced(old, self.entries) else None

    def add(self, trial: Trial, status: str | None = None) -> None:
        status = status or store.run_status(self.run_dir(trial.run_id), trial.eval_id)
        self.entries[trial.trial_id] = _with_stop(
            index_entry(trial, status), self.run_dir(trial.run_id)
        )
        self.evaluations[trial.eval_id] = trial.config.eval_identity()
        self.objectives.add(trial.config.eval.objective)

    def run_dir(self, run_id: str) -> Path:
        return store.run_path(self.results, run_id)

    def set_status(self, run_id: str, status: str) -> None:
        for entry in self.entries.values():
            if entry["run_id"] == run_id:
                entry["status"] = status

    def refresh(self, run_ids: Sequence[str] | None = None) -> None:
        """Statuses from the run folders (the source of truth): of every trial, or of the trials
        of `run_ids`; each trial's own evaluation decides whether it finished."""
        for entry in self.entries.values():
            if run_ids is None or entry["run_id"] in run_ids:
                run_dir = self.run_dir(entry["run_id"])
                entry["status"] = store.run_status(run_dir, entry.get("eval_id"))
                _with_stop(entry, run_dir)

    def status_of(self, run_id: str) -> str:
        return next(e["status"] for e in self.entries.values() if e["run_id"] == run_id)

    def race(self, trials: Sequence[Trial], failed_arms: Collection[str] = ()) -> RaceState:
        """Replay the race (adaptive seeds): the index then lists the trials it has used or asked
        for, each with its arm's `seeds_run` and `stop_reason`. `failed_arms` (a run of theirs
        failed in this invocation) race no more: listed up to their last run tried, `failed`."""
        in_race = [t for t in trials if t.arm not in failed_arms]
        state = race_state(self.sweep, self.results, in_race)
        self.entries = {}
        for trial in raced_trials(in_race, state):
            self.add(trial)
            arm = state.arms[trial.arm]
            self.entries[trial.trial_id].update(
                seeds_run=arm.seeds_run, stop_reason=arm.stop_reason
            )
        for name in failed_arms:
            self._add_failed_arm([t for t in trials if t.arm == name])
        return state

    def _add_failed_arm(self, group: Sequence[Trial]) -> None:
        statuses = [store.run_status(self.run_dir(t.run_id), t.eval_id) for t in group]
        tried = [i + 1 for i, status in enumerate(statuses) if status != "pending"]
        last = max(tried, default=0)
        finished = statuses[:last].count("finished")
        for trial in group[:last]:
            self.add(trial)
            self.entries[trial.trial_id].update(seeds_run=finished, stop_reason=FAILED_ARM)

    def keep_estimate(self, est: SweepEstimate | None) -> None:
        """Record the sweep's estimate at its start (written with the index); a rerun of the same
        trials keeps the first known one, so the report compares the cost with what was expected
        up front."""
        if est is None:
            return
        old = self.estimate if isinstance(self.estimate, dict) else {}
        if old.get("runs") != len(est.runs) or old.get("device_hours") is None:
            self.estimate = index_record(est)

    def write(self) -> None:
        spec = self.sweep.file
        index: dict[str, Any] = {
            "name": spec.name,
            "sweep_file": str(self.sweep.path.resolve()) if self.sweep.path else None,
            "updated": store.now(),
            "metric": spec.metric,
            "mode": spec.resolved_mode,
            "swept": self.swept,
            "design": sweep_design(spec),
            "trials": list(self.entries.values()),
            "evaluations": self._named_evaluations(),
        }
        if len(self.objectives) == 1:
            index["objective"] = next(iter(self.objectives))
        if spec.scheduler is not None:
            index["scheduler"] = spec.scheduler.model_dump()
        if self.estimate is not None:
            index["estimate"] = self.estimate
        if spec.adaptive is not None:
            index["seeds"] = spec.adaptive.model_dump()
        if spec.report.labels or spec.report.columns is not None:
            index["report"] = spec.report.model_dump(exclude_none=True)
        if self.replaced is not None:
            name = f"{self.sweep.name}@{evaluations_key(self.replaced)}"
            store.write_sweep_index(self.results, name, {**self.replaced, "name": name})
            self.replaced = None
        store.write_sweep_index(self.results, self.sweep.name, index)
        # A kept index of the evaluation this one names again is this one's older copy.
        store.remove_sweep_index(self.results, f"{self.sweep.name}@{evaluations_key(index)}")
        for entry in self.entries.values():
            store.link_tensorboard(self.results, spec.name, entry["trial_id"], entry["run_id"])

    def _named_evaluations(self) -> dict[str, Any]:
        named = {e.get("eval_id") for e in self.entries.values()}
        return {k: v for k, v in self.evaluations.items() if k in named}


def _with_stop(entry: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """A stopped trial's entry says where it stopped: {epoch, epochs, metric: value}."""
    record = store.read_stopped(run_dir) if entry["status"] == "stopped" else None
    if record is None:
        entry.pop("stopped", None)
        return entry
    entry["stopped"] = {
        "epoch": record["epoch"],
        "epochs": record.get("epochs"),
        "sweep": record.get("sweep"),
        **({record["metric"]: record.get("value")} if record.get("metric") else {}),
    }
    return entry


def _evaluations_replaced(old: Mapping[str, Any], entries: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether `old` (the index on disk) names another evaluation of a run than `entries` do
    for the same trial: a re-evaluation, whose predecessor stays reportable."""
    for entry in old.get("trials") or []:
        if not isinstance(entry, dict) or not entry.get("eval_id"):
            continue
        new = entries.get(str(entry.get("trial_id"))) or {}
        if new.get("run_id") == entry.get("run_id") and new.get("eval_id") != entry["eval_id"]:
            return True
    return False


def evaluations_key(index: Mapping[str, Any]) -> str:
    """A short name for the evaluations an index names: the eval id (8 characters) when its
    trials share one, else a hash of the sorted ids."""
    ids = sorted({str(e.get("eval_id")) for e in index.get("trials") or [] if isinstance(e, dict)})
    if len(ids) == 1:
        return ids[0][:8]
    return hashlib.sha256(",".join(ids).encode()).hexdigest()[:8]


# ----------------------------------------------------------------------------------------------
# One trial, in any process: wait for a foreign lock, restore, train, record unexpected errors


def execute_trial(
    trial: Trial,
    run_dir: Path,
    train_fn: TrainFn,
    *,
    report: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    session_start: float | None = None,
    before_train: Callable[[Path], None] | None = None,
    poll_s: float = LOCK_POLL_S,
    out: Out = say,
    device_share: float | None = None,
    gate: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Train `trial` into `run_dir` (resuming), evaluate it as its config's eval keys say, and
    return the evaluation's final.json dict.

    `device_share` (Ray's resources.gpu, or CPUs over the node's) goes to the cost record;
    `gate` (the budget) is asked right before training: False leaves the run untouched and
    returns NOT_STARTED.

    A recorded evaluation is returned as is; a trained run is only evaluated (`train_fn` does
    that without training; no budget gate); a run locked by another live process is waited
    for. `session_start` (the sweep's start time) makes a deterministic failure recorded since
    then (non-finite loss, bad data) fail again at once instead of being retrained.
    """
    waited = False
    while True:
        final = store.read_evaluation(run_dir, trial.eval_id)
        if final is not None:
            return final
        if store.lock_is_held(run_dir):
            if not waited:
                owner = store.read_json(run_dir / store.LOCK_FILE) or {}
                out(
                    f"{trial.trial_id}: run {trial.run_id} is being trained by "
                    f"{owner.get('host')} pid {owner.get('pid')}; waiting for it to finish"
                )
            waited = True
            time.sleep(poll_s)
            continue
        _refuse_repeated_failure(store.error_path(run_dir, trial.eval_id), session_start)
        trained = store.read_trained(run_dir) is not None
        if trained:
            out(f"{trial.trial_id}: run {trial.run_id} is trained; evaluation {trial.eval_id} only")
        elif gate is not None and not gate():
            out(f"{trial.trial_id}: {BUDGET_REFUSAL} {trial.run_id} not started")
            return NOT_STARTED
        stopped = store.read_stopped(run_dir) if not trained else None
        if stopped is not None:
            out(
                f"{trial.trial_id}: run {trial.run_id} was stopped early at epoch "
                f"{stopped['epoch']}; training it on from its checkpoint"
            )
        if before_train is not None and not trained:
            before_train(run_dir)
        try:
            kwargs = _cost_kwargs(train_fn, trial, device_share)
            return _train_recording_errors(trial, run_dir, train_fn, report, progress, kwargs)
        except store.RunLockedError:
            continue  # another process claimed it between our check and the engine's lock


def _train_recording_errors(
    trial: Trial,
    run_dir: Path,
    train_fn: TrainFn,
    report: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    kwargs: Mapping[str, Any],
) -> dict[str, Any]:
    started = time.time()
    last: dict[str, Any] = {}

    def tracking_report(record: dict[str, Any]) -> None:
        last["step"] = record.get("step")
        if report is not None:
            report(record)

    try:
        return train_fn(trial.config, run_dir, report=tracking_report, progress=progress, **kwargs)
    except store.RunLockedError:
        raise
    except (KeyboardInterrupt, SystemExit):
        # Ray stops a trial (Ctrl-C, shutdown) with sys.exit(0) inside tune.report: the run is
        # interrupted, not failed; drop an error.json that recorded the stop as an error.
        path = store.error_path(run_dir, trial.eval_id)
        error = store.read_error(path.parent) or {}
        if error.get("type") in ("SystemExit", "KeyboardInterrupt") and _recorded_since(
            path, started
        ):
            path.unlink(missing_ok=True)
        raise
    except Exception as exc:
        # The engine records its own failures; anything raised outside it (imports, a report
        # callback, a wrapper) is recorded here so that every failed trial has an error.json
        # (the evaluation's once the run is trained).
        path = store.error_path(run_dir, trial.eval_id)
        if not _recorded_since(path, started):
            store.write_error(
                path.parent,
                kind=type(exc).__name__,
                message=str(exc),
                step=last.get("step"),
                traceback=traceback.format_exc(),
            )
        raise


def _cost_kwargs(train_fn: TrainFn, trial: Trial, share: float | None) -> dict[str, Any]:
    """The engine's cost keywords (label for TensorBoard, device share), for a train_fn that
    names them: stand-ins (and wrappers passing **kwargs on to one) keep the plain
    `(cfg, run_dir, *, report, progress)` contract."""
    wanted = {"label": trial.trial_id, "device_share": share}  # the id: label and seed
    try:
        params = inspect.signature(train_fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in wanted.items() if k in params}


def _recorded_since(error_file: Path, since: float) -> bool:
    try:
        return error_file.stat().st_mtime >= since - 1
    except FileNotFoundError:
        return False


def _refuse_repeated_failure(error_file: Path, session_start: float | None) -> None:
    error = store.read_error(error_file.parent)
    if session_start is None or error is None or error.get("type") not in DETERMINISTIC_ERRORS:
        return
    if _recorded_since(error_file, session_start + 1):
        raise TrainingError(
            f"{error_file}: this run already failed in this sweep with "
            f"{error.get('type')}: {error.get('error')}; not retrying a failure that would repeat"
        )


# ----------------------------------------------------------------------------------------------
# How a sweep ended


@dataclass
class SweepOutcome:
    """How a sweep ended; `exit_code` is 0 only when every run finished."""

    name: str
    index_path: Path
    statuses: dict[str, str]  # trial id -> status
    errors: dict[str, Path] = field(default_factory=dict)  # trial id -> error.json
    trained: int = 0
    evaluated: int = 0  # evaluations of runs trained before (no training)

    @property
    def exit_code(self) -> int:
        """0 when every trial finished or was stopped early by the sweep's scheduler."""
        return 0 if all(s in ("finished", "stopped") for s in self.statuses.values()) else 1


# ----------------------------------------------------------------------------------------------
# --only: one trial in this process, no Ray


def find_trial(sweep: Sweep, key: str) -> Trial:
    """The trial whose id, label or run id is `key` (or a unique id prefix)."""
    if sweep.file.search.method == "optuna":
        raise ConfigError(f"--only {key}: search: optuna has no fixed trials to pick from")
    trials = expand(sweep)
    for match in (
        lambda t: key in (t.trial_id, t.run_id),
        lambda t: t.label == key,
        lambda t: t.trial_id.startswith(key),
    ):
        found = [t for t in trials if match(t)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            ids = ", ".join(t.trial_id for t in found[:5])
            raise ConfigError(f"--only {key}: matches {len(found)} trials ({ids}); be precise")
    known = "\n  ".join(t.trial_id for t in trials)
    raise ConfigError(f"--only {key}: no such trial in {sweep.source}; trials:\n  {known}")


def run_one(
    sweep: Sweep,
    key: str,
    results: str | Path = "results",
    *,
    train_fn: TrainFn | None = None,
    out: Out = say,
) -> SweepOutcome:
    """Train one trial in this process (debugging: breakpoints work, no Ray involved)."""
    results = Path(results).resolve()
    trial = find_trial(sweep, key)
    check_sweep_name(sweep, results)  # before anything is written
    work = pending_work(results, [trial])  # this process trains or evaluates it, here
    check_data([t.config for t in work.train], None, evaluate=[t.config for t in work.evaluate])
    index = SweepIndex(sweep, results, expand(sweep))
    run_dir = index.run_dir(trial.run_id)
    out(f"{trial.trial_id}: run {trial.run_id} -> {run_dir}")
    index.set_status(trial.run_id, "running")
    index.write()
    try:
        execute_trial(trial, run_dir, train_fn or engine_train(), progress=True, out=out)
    finally:
        index.refresh()
        index.write()
    only = {trial.trial_id: index.entries[trial.trial_id]["status"]}
    failed = only[trial.trial_id] == "failed"
    errors = {trial.trial_id: store.error_path(run_dir, trial.eval_id)} if failed else {}
    return SweepOutcome(sweep.name, index.path, only, errors, 1)


# ----------------------------------------------------------------------------------------------
# Index entries (schema: README.md, "Results layout")


def sweep_design(spec: SweepFile) -> str:
    """How the trials were chosen, for the report: a factor model needs a grid or listed trials;
    a search samples the space (depthcore.report.loading.DESIGNS)."""
    if spec.search.method == "optuna":
        return "search"
    return "grid" if spec.grid else "trials"


def swept_keys(trials: Sequence[Trial]) -> list[str]:
    """Dotted keys that trials set and whose resolved values differ, in first-seen order."""
    keys = list(dict.fromkeys(k for t in trials for k in t.params))
    trees = [t.config.to_dict() for t in trials]
    return [k for k in keys if len({repr(_get_dotted(tree, k)) for tree in trees}) > 1]


def _get_dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def index_entry(trial: Trial, status: str) -> dict[str, Any]:
    """One `trials:` item of results/sweeps/<name>.yaml (schema: README.md, "Results layout")."""
    return {
        "trial_id": trial.trial_id,
        "run_id": trial.run_id,
        "eval_id": trial.eval_id,
        "label": trial.label,
        "role": trial.role,
        "params": _plain(trial.params),
        "seed": trial.seed,
        "status": status,
    }


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Adaptive seeds: the race over the run folders (the statistics: depthcore.report.significance)


def race_state(sweep: Sweep, results: str | Path, trials: Sequence[Trial]) -> RaceState:
    """Replay the sweep's race over its finished runs: each arm's seeds and stop reason, and the
    runs to train next (empty when every arm is decided or at max seeds). The report replays it
    with the same rule (depthcore.report.significance), so its verdicts are these decisions."""
    settings = sweep.file.adaptive
    if settings is None:
        raise ValueError(f"sweep {sweep.name!r} has no adaptive seeds (seeds: {{start, max}})")
    # scipy and pandas: only when racing
    from depthcore.report.significance import RaceRule, finished_per_image, race_rules

    arms: dict[str, list[str]] = {}
    for trial in trials:
        arms.setdefault(trial.arm, []).append(trial.run_id)
    baseline = next(t.arm for t in trials if t.role == "baseline")
    rule = RaceRule(
        start=settings.start,
        max_seeds=settings.max,
        lower_is_better=sweep.file.resolved_mode == "min",
        level=settings.level,
        spending=settings.spending,
        margin=settings.margin,
    )

    evals = {t.run_id: t.eval_id for t in trials}  # one per run in a race (load_sweep checks)

    @functools.cache
    def scores(run_id: str) -> np.ndarray | None:
        folder = store.find_evaluation(store.run_path(results, run_id), evals[run_id])
        table = finished_per_image(folder) if folder is not None else None
        return None if table is None else table[sweep.file.metric].to_numpy()

    return race(arms, baseline, scores, settings.plan, *race_rules(rule))


def raced_trials(trials: Sequence[Trial], state: RaceState) -> list[Trial]:
    """The trials the race has used or asked for so far, each arm's first seeds: a decided
    arm's `seeds_run`, an open arm's (and the baseline's) every seed up to the current look,
    finished or not, so a finished run is never left out while an earlier seed is unfinished."""
    wanted = set(state.next_runs)
    by_arm: dict[str, list[Trial]] = {}
    for trial in trials:
        by_arm.setdefault(trial.arm, []).append(trial)
    # Seeds per arm at the current look: the baseline's finished ones plus those asked for.
    look = max(
        (
            state.arms[arm].seeds_run + sum(t.run_id in wanted for t in group)
            for arm, group in by_arm.items()
            if state.arms[arm].stop_reason == "baseline"
        ),
        default=0,
    )
    out = []
    for arm, group in by_arm.items():
        asked = [i + 1 for i, t in enumerate(group) if t.run_id in wanted]
        seeds = max([state.arms[arm].seeds_run, *asked])
        if state.arms[arm].stop_reason in ("open", "baseline"):
            seeds = max(seeds, look)
        out += group[:seeds]
    return out


def with_trial_cpus(trial: Trial, cpus: float) -> Trial:
    """The trial with `data.num_workers: auto` resolved within the CPUs Ray gave it (loader
    workers plus the training process, at most 8 workers): 'auto' alone counts the machine's
    cores, and every trial on the machine would start that many. The run id does not change
    (num_workers is not part of it)."""
    cfg = trial.config
    if cfg.data.num_workers != "auto":
        return trial
    workers = max(0, min(8, int(cpus) - 1))
    data = cfg.data.model_copy(update={"num_workers": workers})
    return dataclasses.replace(trial, config=cfg.model_copy(update={"data": data}))
