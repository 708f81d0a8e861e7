"""The sweep estimate (depthcore.estimate) against measured costs of tiny CPU runs.

The estimate predicts a run's wall seconds (setup + training + evaluation); the measurement is
the same quantity from the run's cost record (cost.json wall_s), as the report counts it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

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

RUNNER = Path(__file__).resolve().parent.parent / "runners" / "sweep.py"

# Enough steps that training, not process start-up, dominates a run.
LONGER = ("train.epochs=2", "train.steps_per_epoch=4")


def tiny_sweep(overrides: list[str], seeds: list[int], folder: Path) -> Sweep:
    """The sweep, also written to folder/sweep.yaml for the runner."""
    base = load_config(None, [*overrides, *LONGER]).to_dict()
    tree = {"name": "est", "base": base, "trials": [{"label": "tiny"}], "seeds": seeds}
    tree["resources"] = {"cpu": 1}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return sweep_from_dict(tree, path=path)


def runner(sweep: Sweep, results: Path, *args: str) -> None:
    """runners/sweep.py in a fresh process, as each trial of a sweep trains in its own (the
    first run in a process also pays for imports: timing both in pytest would not compare)."""
    command = [sys.executable, str(RUNNER), str(sweep.path), "--results", str(results), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
    sweep = tiny_sweep(tiny_overrides, [1, 2, 3], tmp_path)
    first, second, third = expand(sweep)
    assert estimate_sweep(sweep, [second], tmp_path, out=quiet).runs[0].source == "unknown"
    runner(sweep, tmp_path, "--only", first.trial_id)
    assert len(rates_from_runs(tmp_path)) == 1

    est = estimate_sweep(sweep, [first, second], tmp_path, out=quiet)
    by_run = {r.run_id: r for r in est.runs}
    assert by_run[first.run_id].status == "finished" and by_run[first.run_id].hours == 0.0
    predicted = by_run[second.run_id]
    assert predicted.source == "finished runs" and predicted.wall_s is not None
    assert est.device_hours == pytest.approx(predicted.wall_s * est.share / 3600)

    runner(sweep, tmp_path, "--only", second.trial_id)
    actual = measured_wall(tmp_path, second.run_id)
    print(f"finished runs: estimate {predicted.wall_s:.2f} s, measured {actual:.2f} s")
    if predicted.wall_s != pytest.approx(actual, rel=0.20):
        # Runs of ~10 s move by 20% when the machine is busy: one more run of the shape, now
        # estimated from the median of two, must then be within 20%.
        again = estimate_sweep(sweep, [third], tmp_path, out=quiet).runs[0]
        runner(sweep, tmp_path, "--only", third.trial_id)
        actual = measured_wall(tmp_path, third.run_id)
        print(f"again: estimate {again.wall_s:.2f} s, measured {actual:.2f} s")
        assert again.wall_s == pytest.approx(actual, rel=0.20)


@pytest.mark.slow
def test_estimate_from_calibration_within_35_percent(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    prepared(tiny_overrides)
    sweep = tiny_sweep(tiny_overrides, [5], tmp_path)
    (trial,) = expand(sweep)
    lines: list[str] = []
    est = estimate_sweep(sweep, [trial], tmp_path, calibrate_here=True, out=lines.append)
    assert any("calibrated" in line for line in lines)  # it says so
    assert len(read_calibration(tmp_path)) == 1  # and caches the figure under results/
    assert estimate_sweep(sweep, [trial], tmp_path, out=quiet).runs[0].source == "calibration"
    predicted = est.runs[0]
    assert predicted.source == "calibration" and predicted.wall_s is not None

    runner(sweep, tmp_path, "--only", trial.trial_id)
    actual = measured_wall(tmp_path, trial.run_id)
    print(f"calibration: estimate {predicted.wall_s:.2f} s, measured {actual:.2f} s")
    assert predicted.wall_s == pytest.approx(actual, rel=0.35)
    # A finished run of the shape now takes over from the calibration.
    again: Any = estimate_sweep(sweep, [trial], tmp_path, out=quiet)
    assert again.runs[0].status == "finished"
