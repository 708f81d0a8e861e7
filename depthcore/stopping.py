"""Early stopping without Ray: the per-epoch objective a sweep selects on, the record of a trial
its scheduler stopped, and which stopped trials `runners/sweep.py --promote` continues.

A sweep with `scheduler:` stops trials on their per-epoch objective (depthcore.tuning runs Ray
Tune's ASHAScheduler on it). A stopped trial keeps its run folder and checkpoint; the driver
records the stop in the run folder (`store.write_stopped`: epoch, last validation metrics) while
the trial waits at that epoch's checkpoint, and the run's status reads `stopped`. A rerun of the
same sweep leaves it be; `--promote` (or any other sweep that contains the configuration) trains
it on from the checkpoint, so no epoch is trained twice (docs/sweeps.md, "Early stopping").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthcore import store
from depthcore.errors import ConfigError
from depthcore.metrics import METRIC_NAMES, is_finite_number
from depthcore.sweep import Sweep, Trial, expand, trial_from_params

__all__ = [
    "OBJECTIVE",
    "Promotion",
    "final_objective",
    "objective_curve",
    "objective_value",
    "select_promotions",
    "stop_record",
    "stopped_trials",
]

# The name of the per-epoch objective in what a trial reports to Ray (the scheduler's and the
# search's metric): the sweep's metric on the validation frames, or on the test split.
OBJECTIVE = "objective"
TOP = "top:"


def objective_value(record: Mapping[str, Any], split: str, metric: str) -> float | None:
    """The objective in an epoch's report: `val_<metric>` (objective val) or `<metric>`."""
    value = record.get(f"val_{metric}" if split == "val" else metric)
    return float(value) if is_finite_number(value) else None


def objective_curve(run_dir: str | Path, split: str, metric: str) -> dict[int, float]:
    """epoch -> the objective the run recorded after it (metrics.jsonl: its "val" records, or
    its "epoch" records' test metrics with objective test)."""
    kind = "val" if split == "val" else "epoch"
    curve = {}
    for record in store.read_curves(run_dir):
        epoch, value = record.get("epoch"), record.get(metric)
        if record.get("type") == kind and isinstance(epoch, int) and is_finite_number(value):
            curve[epoch] = float(value)
    return curve


def final_objective(
    run_dir: str | Path, split: str, metric: str, final: Mapping[str, Any]
) -> float | None:
    """What a search is told a finished trial scored: its last validation value (objective
    val), else its final test metric (objective test, as before validation existed)."""
    if split == "val":
        curve = objective_curve(run_dir, split, metric)
        return curve[max(curve)] if curve else None
    value = (final.get("metrics") or {}).get(metric)
    return float(value) if is_finite_number(value) else None


def stop_record(sweep: Sweep, trial: Trial, result: Mapping[str, Any]) -> dict[str, Any] | None:
    """stopped.json for a trial the scheduler stopped after the epoch of `result` (its last
    report to Ray), or None when `result` is no epoch's report (then nothing stopped it)."""
    epoch, value = result.get("epoch"), result.get(OBJECTIVE)
    if result.get("final") or not is_finite_number(epoch) or not is_finite_number(value):
        return None
    split = trial.config.eval.objective
    prefix = "val_" if split == "val" else ""
    values = {m: result.get(prefix + m) for m in METRIC_NAMES}
    metrics = {m: float(v) for m, v in values.items() if is_finite_number(v)}
    scheduler = sweep.file.scheduler
    return {
        "run_id": trial.run_id,
        "trial_id": trial.trial_id,
        "sweep": sweep.name,
        "epoch": int(epoch),
        "epochs": trial.config.train.epochs,
        "objective": split,
        "metric": sweep.file.metric,
        "value": float(value),
        "metrics": metrics,
        "scheduler": scheduler.model_dump() if scheduler is not None else None,
        "stopped_at": store.now(),
    }


# ----------------------------------------------------------------------------------------------
# --promote


@dataclass(frozen=True)
class Promotion:
    """A stopped trial to train to full length, and where its scheduler stopped it."""

    trial: Trial
    stopped: dict[str, Any]  # its stopped.json

    def line(self) -> str:
        rec = self.stopped
        value = rec.get("value")
        shown = ""
        if is_finite_number(value):
            shown = f", {rec.get('objective')} {rec.get('metric')} {value:.4f}"
        left = self.trial.config.train.epochs - int(rec["epoch"])
        return (
            f"  {self.trial.trial_id}: stopped at epoch {rec['epoch']}/"
            f"{self.trial.config.train.epochs}{shown}; {left} epochs to train"
        )


def sweep_trials(sweep: Sweep, results: str | Path) -> list[Trial]:
    """The sweep's trials: expanded from the file, or (search: optuna) rebuilt from the sampled
    values the sweep index lists, each checked to give the run it names."""
    if sweep.file.search.method != "optuna":
        return expand(sweep)
    index = store.read_sweep_index(results, sweep.name) or {}
    trials = []
    for entry in index.get("trials") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
            continue
        trial = trial_from_params(sweep, entry["params"])
        if trial.run_id == entry.get("run_id"):
            trials.append(trial)
    return trials


def stopped_trials(sweep: Sweep, results: str | Path) -> list[Promotion]:
    """The sweep's trials that are stopped early (and not trained since), in sweep order."""
    found = []
    for trial in sweep_trials(sweep, results):
        run_dir = store.run_path(results, trial.run_id)
        record = store.read_stopped(run_dir)
        if record is not None and store.read_trained(run_dir) is None:
            found.append(Promotion(trial, record))
    return found


def select_promotions(sweep: Sweep, results: str | Path, keys: Sequence[str]) -> list[Promotion]:
    """The stopped trials `--promote` names: trial ids (or labels, run ids, unique id prefixes),
    or `top:K`, the K best by their last objective value. A ConfigError (exit 2) names a key
    that is no trial of the sweep, or a trial that is not stopped (finished, or unfinished for
    another reason: a rerun of the sweep trains it)."""
    stopped = stopped_trials(sweep, results)
    if len(keys) == 1 and keys[0].startswith(TOP):
        return _top(sweep, keys[0], stopped)
    if any(key.startswith(TOP) for key in keys):
        raise ConfigError("--promote: give top:K alone, or trial ids")
    trials = sweep_trials(sweep, results)
    chosen: dict[str, Promotion] = {}
    for key in keys:
        trial = _match(sweep, key, trials, stopped)
        found = next((p for p in stopped if p.trial.run_id == trial.run_id), None)
        if found is None:
            raise ConfigError(_not_stopped(sweep, key, trial, results))
        chosen.setdefault(found.trial.trial_id, found)
    return list(chosen.values())


def _top(sweep: Sweep, key: str, stopped: list[Promotion]) -> list[Promotion]:
    count = key[len(TOP) :]
    if not count.isdecimal() or int(count) < 1:
        raise ConfigError(f"--promote {key}: expected top:K with K >= 1, e.g. --promote top:3")
    if not stopped:
        raise ConfigError(
            f"--promote {key}: {sweep.source} has no trial stopped early (in this results "
            "folder); nothing to promote"
        )
    sign = 1.0 if sweep.file.resolved_mode == "min" else -1.0

    def rank(p: Promotion) -> float:
        value = p.stopped.get("value")
        return sign * float(value) if is_finite_number(value) else math.inf

    return sorted(stopped, key=rank)[: int(count)]


def _match(sweep: Sweep, key: str, trials: list[Trial], stopped: list[Promotion]) -> Trial:
    for match in (
        lambda t: key in (t.trial_id, t.run_id),
        lambda t: t.label == key,
        lambda t: t.trial_id.startswith(key),
    ):
        found = list({t.run_id: t for t in trials if match(t)}.values())
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            ids = ", ".join(t.trial_id for t in found[:5])
            raise ConfigError(f"--promote {key}: matches {len(found)} trials ({ids}); be precise")
    listed = "\n  ".join(p.trial.trial_id for p in stopped) or "(none)"
    raise ConfigError(
        f"--promote {key}: no such trial in {sweep.source}; its trials stopped early:\n  {listed}"
    )


def _not_stopped(sweep: Sweep, key: str, trial: Trial, results: str | Path) -> str:
    status = store.run_status(store.run_path(results, trial.run_id), trial.eval_id)
    if status in ("finished", "trained"):
        why = f"has finished (trained all {trial.config.train.epochs} epochs); nothing to promote"
    else:
        why = f"is {status}, not stopped early; a rerun of {sweep.source} trains it"
    return f"--promote {key}: trial {trial.trial_id} {why}"
