"""The sweep estimate (depthcore.estimate) against measured costs of tiny CPU runs.

The estimate predicts a run's wall seconds (setup + training + evaluation); the measurement is
the same quantity from the run's cost record (cost.json wall_s), as the report counts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from depthcore import store
from depthcore.config import load_config
from depthcore.estimate import (
    cost_shape,
    estimate_sweep,
    eval_passes,
    rates_from_runs,
    read_calibration,
    shape_key,
    train_steps,
)
from depthcore.sweep import Sweep, expand, sweep_from_dict
from depthcore.trials import run_one

# Enough steps that training, not process start-up, dominates a run.
LONGER = ("train.epochs=2", "train.steps_per_epoch=4")


def tiny_sweep(overrides: list[str], seeds: list[int]) -> Sweep:
    base = load_config(None, [*overrides, *LONGER]).to_dict()
    tree = {"name": "est", "base": base, "trials": [{"label": "tiny"}], "seeds": seeds}
    return sweep_from_dict({**tree, "resources": {"cpu": 1}})


def prepared(overrides: list[str]) -> None:
    """Synthetic drives generated before anything is timed (the first run would otherwise
    pay for them, which no other run of the shape does)."""
    from depthcore.data import resolve_data

    resolve_data(load_config(None, [*overrides, *LONGER]))


def measured_wall(results: Path, run_id: str) -> float:
    cost = store.read_cost(store.run_path(results, run_id))
    assert cost is not None
    return float(cost["wall_s"])


def quiet(line: str) -> None:
    pass


def test_train_steps_and_eval_passes_follow_the_config(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, [*tiny_overrides, *LONGER])
    # 2 drives, 12 frames: one test drive; 10 inner frames, a tenth kept for validation.
    assert train_steps(cfg) == 2 * min(4, 9 // 2)
    assert eval_passes(cfg) == 3
    longer = load_config(None, [*tiny_overrides, "train.epochs=3", "eval.every_epoch=false"])
    assert eval_passes(longer) == 1
    uncapped = load_config(None, [*tiny_overrides, "train.steps_per_epoch=100"])
    assert train_steps(uncapped) == 9 // 2  # the split's full batches


def test_cost_shape_separates_what_changes_step_time(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, tiny_overrides)
    same = load_config(None, [*tiny_overrides, "loss.w_c=0.7", "train.seed=3"])
    wider = load_config(None, [*tiny_overrides, "data.width=256"])
    key = shape_key(cost_shape(cfg, "cpu"))
    assert shape_key(cost_shape(same, "cpu")) == key
    assert shape_key(cost_shape(wider, "cpu")) != key
    assert shape_key(cost_shape(cfg, "cuda")) != key


@pytest.mark.slow
def test_estimate_from_finished_runs_within_20_percent(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    prepared(tiny_overrides)
    sweep = tiny_sweep(tiny_overrides, [1, 2])
    first, second = expand(sweep)
    assert estimate_sweep(sweep, [second], tmp_path, out=quiet).runs[0].source == "unknown"
    assert run_one(sweep, first.trial_id, tmp_path, out=quiet).exit_code == 0
    assert len(rates_from_runs(tmp_path)) == 1

    est = estimate_sweep(sweep, [first, second], tmp_path, out=quiet)
    by_run = {r.run_id: r for r in est.runs}
    assert by_run[first.run_id].status == "finished" and by_run[first.run_id].hours == 0.0
    predicted = by_run[second.run_id]
    assert predicted.source == "finished runs" and predicted.wall_s is not None
    assert est.device_hours == pytest.approx(predicted.wall_s * est.share / 3600)

    assert run_one(sweep, second.trial_id, tmp_path, out=quiet).exit_code == 0
    actual = measured_wall(tmp_path, second.run_id)
    assert predicted.wall_s == pytest.approx(actual, rel=0.20)


@pytest.mark.slow
def test_estimate_from_calibration_within_35_percent(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    prepared(tiny_overrides)
    sweep = tiny_sweep(tiny_overrides, [5])
    (trial,) = expand(sweep)
    lines: list[str] = []
    est = estimate_sweep(sweep, [trial], tmp_path, calibrate_here=True, out=lines.append)
    assert any("calibrated" in line for line in lines)  # it says so
    assert len(read_calibration(tmp_path)) == 1  # and caches the figure under results/
    predicted = est.runs[0]
    assert predicted.source == "calibration" and predicted.wall_s is not None

    assert run_one(sweep, trial.trial_id, tmp_path, out=quiet).exit_code == 0
    actual = measured_wall(tmp_path, trial.run_id)
    assert predicted.wall_s == pytest.approx(actual, rel=0.35)
    # A finished run of the shape now takes over from the calibration.
    again: Any = estimate_sweep(sweep, [trial], tmp_path, out=quiet)
    assert again.runs[0].status == "finished"
