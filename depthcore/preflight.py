"""A sweep's pre-flight: what a start checks before it writes or trains anything, what
`--dry-run` shows of it, and the command that continues a sweep that stopped.

The checks, in the order a start makes them: the cost estimate (and, with --calibrate, the
device to time), the budget, the sweep name (one sweep file per name in a results folder),
the resources a local machine has, and the data with its ground truth. `--dry-run` makes all of
them, prints each, and exits 2 when a real start here would stop; a real start stops at the
first that fails, before the sweep index is written. No Ray and no torch at import: the dry run
never starts Ray (docs/sweeps.md, "Pre-flight").
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from depthcore import store
from depthcore.config import Config, config_from_dict
from depthcore.errors import ConfigError, DepthcoreError
from depthcore.estimate import (
    BudgetGate,
    SweepEstimate,
    budget_gate,
    check_budget,
    concurrency_limit,
    estimate_lines,
    estimate_sweep,
    needed_budget,
    suggested_budget,
)
from depthcore.sweep import Sweep, Trial, expand, first_runs, plan_lines

__all__ = [
    "Options",
    "Start",
    "Work",
    "check_data",
    "check_resources",
    "check_sweep_name",
    "continue_lines",
    "is_local",
    "pending_work",
    "preflight",
    "promote_lines",
]

Out = Callable[[str], None]
RUNNER = "runners/sweep.py"


@dataclass(frozen=True)
class Options:
    """The runner's flags that the pre-flight reads."""

    results: str = "results"
    dry_run: bool = False
    calibrate: bool = False
    budget: float | None = None  # --budget (overrides the file's budget.device_hours)
    cpus: int | None = None
    gpus: int | None = None
    max_concurrent: int | None = None  # --max-concurrent
    address: str | None = None
    only: str | None = None
    command: tuple[str, ...] = ()  # the runner's argv, for the hint that continues a sweep


@dataclass(frozen=True)
class Start:
    """What a real start takes from the pre-flight."""

    max_concurrent: int | None  # --max-concurrent, the file's, and what --cpus/--gpus allow
    estimate: SweepEstimate | None = None
    gate: BudgetGate | None = None
    checks: list[tuple[str, str]] = field(default_factory=list)  # (check, what it found)


def preflight(sweep: Sweep, opts: Options, out: Out = print) -> Start:
    """Estimate and check a sweep before it starts (see the module doc). Raises ConfigError or
    DataError (exit 2) where a real start here would stop; with --dry-run, after printing the
    plan, the estimate and every check."""
    budget = opts.budget or (sweep.file.budget.device_hours if sweep.file.budget else None)
    limit = concurrency_limit(sweep.file.resources, cpus=opts.cpus, gpus=opts.gpus)
    wanted = opts.max_concurrent or sweep.file.max_concurrent
    max_concurrent = min(x for x in (wanted, limit) if x) if (wanted or limit) else None
    if sweep.file.search.method == "optuna":
        if opts.dry_run:
            out("\n".join(plan_lines(sweep, [])))
            out(
                f"estimate: none for search: optuna (its {sweep.file.search.n_trials} trials are "
                "sampled while it runs); a budget is refused for it"
            )
        if budget is not None:
            raise ConfigError(f"{sweep.where('budget')}: search: optuna has no cost estimate yet")
        checks = _checks(sweep, opts, ([config_from_dict(sweep.base)], []), None, None)
        return Start(max_concurrent, checks=_conclude(sweep, checks, opts, out))
    trials = expand(sweep)
    est = estimate_sweep(
        sweep,
        trials,
        opts.results,
        cpus=opts.cpus,
        gpus=opts.gpus,
        max_concurrent=max_concurrent,
        calibrate_here=opts.calibrate,
        out=out,
    )
    kind = "cuda" if sweep.file.resources.gpu > 0 else "cpu"
    if opts.dry_run:
        out("\n".join([*_plan(sweep, trials, opts.results), *estimate_lines(est, kind)]))
    else:
        out("\n".join(estimate_lines(est, kind, per_run=False)))
    work = pending_work(opts.results, trials, sweep.name)
    budget_check = (budget, _budget_flag(sweep, opts)) if opts.only is None else None
    configs = ([t.config for t in work.train], [t.config for t in work.evaluate])
    checks = _checks(sweep, opts, configs, est, budget_check)
    found = _conclude(sweep, checks, opts, out)
    gate = budget_gate(est, budget, opts.results) if budget is not None else None
    return Start(max_concurrent, est, gate, found)


# ----------------------------------------------------------------------------------------------
# The checks


Check = tuple[str, Callable[[], str]]


def _checks(
    sweep: Sweep,
    opts: Options,
    configs: tuple[list[Config], list[Config]],  # to train, to evaluate only
    est: SweepEstimate | None,
    budget: tuple[float | None, str] | None,
) -> list[Check]:
    """The checks a start makes here. A real start leaves the sweep name and the data to
    `tuning.run_sweep` / `trials.run_one`, which check them before writing the index (so that a
    sweep started from Python is checked too, and the data only once)."""
    checks: list[Check] = []
    if budget is not None and est is not None:
        amount, flag = budget
        checks.append(("budget", lambda: _budget(est, amount, opts.results, flag)))
    if opts.only is None:
        checks.append(("resources", lambda: check_resources(sweep, opts.address)))
    if opts.dry_run:
        checks.append(("sweep name", lambda: check_sweep_name(sweep, opts.results)))
        train, evaluate = configs
        checks.append(("data", lambda: check_data(train, opts.address, evaluate=evaluate)))
    return checks


def _plan(sweep: Sweep, trials: Sequence[Trial], results: str) -> list[str]:
    """The dry run's plan: every trial with its status, then what a start would train and what
    it would only evaluate (runs trained already, asked for another evaluation)."""
    statuses = {
        t.trial_id: store.run_status(store.run_path(results, t.run_id), t.eval_id) for t in trials
    }
    sure = first_runs(sweep, trials)  # a race: the runs of its first look
    work = pending_work(results, [t for t in trials if t.run_id in sure], sweep.name).line()
    if sweep.file.adaptive is not None:
        work += " before the race's first look"
    return [*plan_lines(sweep, trials, statuses), work]


def _conclude(sweep: Sweep, checks: list[Check], opts: Options, out: Out) -> list[tuple[str, str]]:
    """A real start raises the first failure as it is; a dry run prints every check, then
    raises one ConfigError naming each failure."""
    found: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    if opts.dry_run:
        out("pre-flight (what a real start here checks before it writes anything):")
    for name, check in checks:
        try:
            found.append((name, check()))
        except DepthcoreError as exc:
            if not opts.dry_run:
                raise
            failed.append((name, str(exc)))
            out(f"  {name}: FAILED (see the error below)")
        else:
            if opts.dry_run:
                out(f"  {name}: ok: {found[-1][1]}")
    if failed:
        problems = "\n".join(f"  {name}: {text}" for name, text in failed)
        raise ConfigError(
            f"{sweep.source}: a real start here would stop (exit 2) at {len(failed)} "
            f"check{'s' * (len(failed) != 1)}:\n{problems}"
        )
    return found


def _budget_flag(sweep: Sweep, opts: Options) -> str:
    if opts.budget:
        return f"--budget {opts.budget:g}"
    return sweep.where("budget", "device_hours")


def _budget(est: SweepEstimate, budget: float | None, results: str, flag: str) -> str:
    if budget is None:
        return "none set"
    check_budget(est, budget, results, flag)
    needed = needed_budget(est, results)
    assert needed is not None  # check_budget refuses an unknown cost
    spent, need = needed
    return f"{budget:g} device-hours ({flag}): {spent:.3g} spent + {need - spent:.3g} estimated"


def check_sweep_name(sweep: Sweep, results: str | Path) -> str:
    """Refuse a sweep whose name another sweep file already uses in `results`: its index (and
    the report's tables) would be overwritten. A recorded file that no longer exists (the sweep
    file moved) is taken over."""
    index_path = store.sweep_index_path(results, sweep.name)
    old = store.read_sweep_index(results, sweep.name) or {}
    recorded = old.get("sweep_file")
    if sweep.path is None or not recorded:
        return f"{index_path} is {'this sweep' if old else 'new'}"
    mine, theirs = sweep.path.resolve(), Path(str(recorded))
    if theirs.exists() and not theirs.samefile(mine):
        raise ConfigError(
            f"{sweep.where('name')}: the name {sweep.name!r} is already used in {results} by "
            f"another sweep file, {theirs} (its index {index_path} would be overwritten); "
            f"give {sweep.path} another name: (e.g. name: {sweep.name}_2), or use another "
            "--results folder"
        )
    return f"{index_path} belongs to this sweep file"


def is_local(address: str | None) -> bool:
    """Whether the sweep starts its own Ray here (no --address, no RAY_ADDRESS)."""
    return not (address or os.environ.get("RAY_ADDRESS"))


def check_resources(sweep: Sweep, address: str | None) -> str:
    """A local Ray that cannot fit one trial would wait forever: refuse it before anything
    starts (tuning checks Ray's own count again once it runs)."""
    if not is_local(address):
        return "on the cluster (its nodes decide)"
    want = sweep.file.resources
    have = {"cpu": len(os.sched_getaffinity(0)), "gpu": _local_gpus() if want.gpu > 0 else 0}
    short = [
        f"{name}: {amount:g} per trial, "
        + ("this machine has no GPU" if have[name] == 0 else f"this machine has {have[name]:g}")
        for name, amount in (("cpu", want.cpu), ("gpu", want.gpu))
        if amount > have[name]
    ]
    if short:
        raise ConfigError(
            f"{sweep.where('resources')}: no trial fits this machine ({'; '.join(short)}); "
            "lower resources in the sweep file (gpu: 0 trains on CPU) or join a cluster with "
            "--address"
        )
    return f"a trial (cpu {want.cpu:g}, gpu {want.gpu:g}) fits this machine"


def _local_gpus() -> int:
    import torch  # only for a GPU sweep

    return torch.cuda.device_count()


def check_data(
    configs: Sequence[Config], address: str | None, *, evaluate: Sequence[Config] = ()
) -> str:
    """On this machine, KITTI data is checked before anything is written: a missing frame,
    calibration or ground truth stops the sweep with a DataError naming the file and split line
    (exit 2), instead of failing every trial. `configs` train (every split is checked),
    `evaluate` only evaluate trained runs (the test split alone). Synthetic drives are generated
    by the first trial that needs them; on a cluster the data lives on the workers, and each
    trial checks its own."""
    if not configs and not evaluate:
        return "nothing to train or evaluate"
    if not is_local(address):
        return "on the cluster's workers (each trial checks its own)"
    from depthcore.data import resolve_data

    checked: dict[str, tuple[Config, bool]] = {}
    for cfg, train in [*((c, True) for c in configs), *((c, False) for c in evaluate)]:
        if cfg.data.dataset == "kitti":
            tree = cfg.to_dict()
            key = repr((tree["data"], tree["eval"], train))
            checked.setdefault(key, (cfg, train))
    for cfg, train in checked.values():
        resolve_data(cfg, train=train)
    if not checked:
        return "synthetic drives (the first trial that needs them generates them)"
    roots = ", ".join(sorted({str(c.data.root) for c, _ in checked.values()}))
    return f"KITTI in {roots}: every split frame and the ground truth are there"


# ----------------------------------------------------------------------------------------------
# What a sweep has left to do: training, or only evaluation of trained runs


@dataclass(frozen=True)
class Work:
    """A sweep's unfinished trials, one per run to train and one per evaluation left."""

    train: list[Trial]  # one trial per run to train (its evaluation comes with it)
    evaluate: list[Trial]  # one trial per other evaluation left: of trained runs, no training
    done: int  # trials whose evaluation is recorded
    stopped: list[Trial] = field(default_factory=list)  # stopped early by this sweep: left be

    def line(self) -> str:
        text = (
            f"{len(self.train)} runs to train, {len(self.evaluate)} to evaluate only "
            f"(trained already), {self.done} trials done"
        )
        if self.stopped:
            text += f", {len(self.stopped)} stopped early (--promote continues them)"
        return text


def pending_work(results: str | Path, trials: Sequence[Trial], sweep: str | None = None) -> Work:
    """From the run folders: which runs to train, which evaluations to make without training.

    Trials with the same run and evaluation are one piece of work; a second evaluation of a run
    still to train is an evaluation only (it follows the training). A run the scheduler of sweep
    `sweep` stopped is left as it is (`--promote` continues it); one another sweep stopped is
    trained on from its checkpoint, as this sweep needs it finished."""
    train: dict[str, Trial] = {}
    evaluate: list[Trial] = []
    stopped: list[Trial] = []
    seen: set[tuple[str, str]] = set()
    done = 0
    for trial in trials:
        run_dir = store.run_path(results, trial.run_id)
        if store.find_evaluation(run_dir, trial.eval_id) is not None:
            done += 1
            continue
        if (trial.run_id, trial.eval_id) in seen:
            continue
        if store.stopped_by(run_dir, sweep):
            stopped.append(trial)
            continue
        seen.add((trial.run_id, trial.eval_id))
        if store.read_trained(run_dir) is None and trial.run_id not in train:
            train[trial.run_id] = trial
        else:
            evaluate.append(trial)
    return Work(list(train.values()), evaluate, done, stopped)


# ----------------------------------------------------------------------------------------------
# After a stop: the command that continues


def continue_lines(
    sweep: Sweep,
    results: str | Path,
    statuses: Mapping[str, str],
    *,
    gate: BudgetGate | None = None,
    command: Sequence[str] = (),
) -> list[str]:
    """What is left and the command that continues it: the same command, or, when the budget
    would refuse that one, the same with a --budget that fits what is left."""
    kinds = ("interrupted", "pending", "trained")
    counts = {s: sum(v == s for v in statuses.values()) for s in kinds}
    failed = sum(v == "failed" for v in statuses.values())
    if not (any(counts.values()) or failed):
        return []
    argv = list(command) or [RUNNER, str(sweep.path or f"{sweep.name}.yaml")]
    parts = []
    if counts["pending"]:
        parts.append(f"{_n(counts['pending'], 'run')} not started yet will train")
    if counts["interrupted"]:
        parts.append(f"{_n(counts['interrupted'], 'interrupted run')} will resume from checkpoints")
    if counts["trained"]:
        parts.append(f"{_n(counts['trained'], 'trained run')} will be evaluated (not trained)")
    if failed:
        parts.append(f"{_n(failed, 'failed run')} will be tried again")
    lines = []
    if gate is not None:
        need = _need(sweep, results)
        spent = gate.committed()
        if counts["pending"]:
            lines.append(
                f"  budget reached: {spent:.3g} of {gate.device_hours:g} device-hours spent; "
                f"{counts['pending']} runs not started"
            )
        if need is None:
            lines.append(
                "  the cost of what is left is unknown, so the budget check would refuse the same "
                f"command; add --calibrate to it: {_shell([*argv, '--calibrate'])}"
            )
            return [*lines, f"  ({'; '.join(parts)})"]
        if need > gate.device_hours:
            argv = _with_budget(argv, suggested_budget(need))
            lines.append(
                f"  the same command would be refused (spent + the estimate of what is left = "
                f"{need:.3g} device-hours > {gate.device_hours:g}); to continue: {_shell(argv)}"
            )
            return [*lines, f"  ({'; '.join(parts)})"]
    lines.append(f"  to continue, run the same command: {_shell(argv)}")
    return [*lines, f"  ({'; '.join(parts)})"]


def promote_lines(
    sweep: Sweep, statuses: Mapping[str, str], command: Sequence[str] = ()
) -> list[str]:
    """After a sweep whose scheduler stopped trials: how many, and the command that trains the
    best of them to the end (`--promote top:1`, or any trial ids)."""
    stopped = sum(v == "stopped" for v in statuses.values())
    if not stopped:
        return []
    argv = _without_promote(list(command) or [RUNNER, str(sweep.path or f"{sweep.name}.yaml")])
    return [
        f"  {_n(stopped, 'trial')} stopped early by the scheduler (each keeps its checkpoint); "
        f"to train the best of them to the end: {_shell([*argv, '--promote', 'top:1'])}"
    ]


def _without_promote(argv: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if arg == "--promote":
            skip = True
        elif skip and not arg.startswith("--"):
            continue
        else:
            skip = False
            out.append(arg)
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' * (count != 1)}"


def _need(sweep: Sweep, results: str | Path) -> float | None:
    est = estimate_sweep(sweep, expand(sweep), results, out=lambda _: None)
    needed = needed_budget(est, results)
    return None if needed is None else needed[1]


def _with_budget(argv: list[str], budget: float) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--budget":
            skip = True
        elif not arg.startswith("--budget="):
            out.append(arg)
    return [*out, "--budget", f"{budget:g}"]


def _shell(argv: Sequence[str]) -> str:
    return shlex.join(["python", *argv])
