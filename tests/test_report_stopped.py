"""The report of a sweep whose scheduler stopped trials: their status and epoch in runs.csv and
the HTML, their validation curves, left out of the tables and verdicts, and what stopping saved
(run folders written by the stand-in engine with known curves, tests/sweep_runner.py; no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sweep_runner import curve_train

from depthcore import store
from depthcore.report.build import _learning_curves, build_report
from depthcore.report.loading import load_sweep_results
from depthcore.report.tables import aggregate_configs
from depthcore.stopping import stop_record
from depthcore.sweep import Sweep, expand, sweep_from_dict
from depthcore.trials import SweepIndex, execute_trial

BASE = {"loss": {"photometric": "ssim_a"}, "train": {"epochs": 9, "device": "cpu"}}
ASHA = {"type": "asha", "grace_epochs": 1, "reduction_factor": 3}
HOURS_PER_EPOCH = 0.001


def stopped_at(sweep: Sweep, trial: Any, run_dir: Path, epoch: int) -> None:
    """Train `trial` until the scheduler stops it after `epoch`, as a sweep's driver would."""

    def report(record: dict[str, Any]) -> None:
        if record["epoch"] == epoch:
            result = {**record, "objective": record["val_abs_rel"]}
            store.write_stopped(run_dir, stop_record(sweep, trial, result))
            sys.exit(0)

    with pytest.raises(SystemExit):
        execute_trial(trial, run_dir, curve_train, report=report)


def write_sweep(results: Path, spec: dict[str, Any], stop: dict[str, int]) -> Sweep:
    """Each trial finished, or stopped at the epoch `stop` gives for its label; a cost record
    of HOURS_PER_EPOCH per epoch trained."""
    sweep = sweep_from_dict(spec)
    for trial in expand(sweep):
        run_dir = store.run_path(results, trial.run_id)
        epoch = stop.get(trial.label or "")
        if epoch is None:
            execute_trial(trial, run_dir, curve_train)
        else:
            stopped_at(sweep, trial, run_dir, epoch)
        hours = HOURS_PER_EPOCH * (epoch or trial.config.train.epochs)
        store.write_cost(run_dir, {"device": "cpu:x", "share": 1.0, "device_hours": hours})
    SweepIndex(sweep, results, expand(sweep)).write()
    return sweep


TRIALS = [
    {"label": "base", "role": "baseline", "loss.w_c": 0.1},
    {"label": "good", "loss.w_c": 0.4},
    {"label": "bad", "loss.w_c": 0.2},
]


def test_a_stopped_trial_is_reported_as_stopped_and_left_out_of_tables_and_verdicts(
    tmp_path: Path,
) -> None:
    results = tmp_path / "results"
    spec = {"name": "asha", "base": BASE, "trials": TRIALS, "scheduler": ASHA}
    write_sweep(results, spec, {"bad": 3})
    out = build_report(results, out=tmp_path / "report")
    folder = out / "asha"

    runs = pd.read_csv(folder / "runs.csv", keep_default_na=False).set_index("configuration")
    assert runs.loc["bad", "status"] == "stopped" and runs.loc["bad", "epochs"] == "3/9"
    assert runs.loc["good", "status"] == "finished" and runs.loc["good", "epochs"] == "9/9"
    message = runs.loc["bad", "message"]
    assert "stopped early by the scheduler at epoch 3 of 9 (val abs_rel 0.5500)" in message
    ablation = pd.read_csv(folder / "ablation.csv")
    assert "bad" not in set(ablation.astype(str).to_numpy().ravel())
    assert "good" in set(ablation.astype(str).to_numpy().ravel())
    significance = pd.read_csv(folder / "significance.csv")
    assert "bad" not in significance.astype(str).to_numpy().ravel()

    page = (folder / "report.html").read_text()
    assert "Unfinished runs (missing, failed, stopped early)" in page and "3/9" in page
    summary = " ".join(store.read_json(folder / "summary.json")["summary"])
    assert "Per-epoch objective: abs_rel on held-out validation frames" in summary
    assert "Early stopping: ASHA (grace_epochs 1, reduction_factor 3) stopped 1 of 3" in summary

    # Compute: 21 of 27 epochs trained; the 6 not trained at the finished runs' rate.
    compute = (folder / "compute.md").read_text()
    assert "Early stopping: 21 of 27 epochs trained (78%)" in compute
    assert "would have trained 6 more: about 0.006 device-hours saved" in compute
    sweep_row = pd.read_csv(folder / "compute.csv").iloc[-1]
    assert (sweep_row["epochs"], sweep_row["epochs_full"]) == (21, 27)
    assert sweep_row["saved_device_hours"] == pytest.approx(6 * HOURS_PER_EPOCH)

    # The learning curves: the validation values, the stopped run in grey with its own entry.
    data = load_sweep_results(results, "asha")
    fig, _ = _learning_curves(data, aggregate_configs(data))
    assert fig is not None
    names = [text.get_text() for text in fig.legends[0].get_texts()]
    assert names == ["base", "good", "stopped early (1)"]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1] == "validation AbsRel↓"
    lines = [line for line in fig.axes[1].get_lines() if len(line.get_xdata()) > 1]
    stopped = [line for line in lines if line.get_color() == "0.6"]
    assert len(stopped) == 1 and list(stopped[0].get_xdata()) == [1, 2, 3]


def test_a_search_selected_on_the_test_split_says_so(tmp_path: Path) -> None:
    results = tmp_path / "results"
    base = {**BASE, "eval": {"objective": "test"}}
    spec = {"name": "tested", "base": base, "trials": TRIALS[:2], "scheduler": ASHA}
    write_sweep(results, spec, {})
    out = build_report(results, out=tmp_path / "report", figures=False)
    summary = " ".join(store.read_json(out / "tested" / "summary.json")["summary"])
    assert "Selection on the test split (eval.objective: test)" in summary
    assert "optimistic" in summary and "stopped 0 of 2" in summary
