"""Sweep budgets: refused before Ray starts, and a gate that stops new trials mid-sweep."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_runner import run_sweep_runner

from depthcore import store
from depthcore.config import load_config
from depthcore.errors import ConfigError
from depthcore.estimate import CALIBRATION_FILE, BudgetGate, Rate, cost_shape, shape_key
from depthcore.sweep import expand, sweep_from_dict
from depthcore.trials import NOT_STARTED, execute_trial


def sweep_tree(overrides: list[str], budget: float | None = None) -> dict[str, Any]:
    tree: dict[str, Any] = {
        "name": "budgeted",
        "base": load_config(None, overrides).to_dict(),
        "trials": [{"label": "a", "optim.lr": 1e-4}, {"label": "b", "optim.lr": 2e-4}],
        "resources": {"cpu": 1},
        "max_concurrent": 1,
    }
    if budget is not None:
        tree["budget"] = {"device_hours": budget}
    return tree


def run_runner(tmp_path: Path, tree: dict[str, Any], *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return run_sweep_runner(str(path), "--results", str(tmp_path), *args, timeout=120)


def calibrated(tmp_path: Path, overrides: list[str], step_s: float) -> None:
    """A cached calibration for the tiny shape, as --calibrate would write it."""
    key = shape_key(cost_shape(load_config(None, overrides), "cpu"))
    rate = asdict(Rate(step_s=step_s, eval_s=1.0, setup_s=1.0, source="calibration"))
    store.write_json_atomic(tmp_path / CALIBRATION_FILE, {key: rate})


def test_budget_key_is_validated(tiny_overrides: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"budget\.device_hours"):
        sweep_from_dict(sweep_tree(tiny_overrides, budget=0))
    assert sweep_from_dict(sweep_tree(tiny_overrides, 2.5)).file.budget.device_hours == 2.5


def test_estimate_over_budget_is_refused_before_ray(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    calibrated(tmp_path, tiny_overrides, step_s=3600.0)  # an hour per step: far over budget
    proc = run_runner(tmp_path, sweep_tree(tiny_overrides, budget=0.5))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "budget 0.5 device-hours" in proc.stderr and "--budget " in proc.stderr
    assert "estimated for 2 runs" in proc.stderr
    assert "RAY_IMPORTED=False" in proc.stderr
    assert not (tmp_path / "runs").exists()
    # --budget overrides the file's key: the same sweep within a larger budget passes the
    # check (and stops at the dry run, which still prints the estimate).
    ok = run_runner(tmp_path, sweep_tree(tiny_overrides, 0.5), "--budget", "1e9", "--dry-run")
    assert ok.returncode == 0, ok.stderr
    assert "2 runs, 0 finished; 2 to train:" in ok.stdout


def test_unknown_estimate_with_a_budget_is_refused(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    proc = run_runner(tmp_path, sweep_tree(tiny_overrides), "--budget", "100")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--calibrate" in proc.stderr and "RAY_IMPORTED=False" in proc.stderr


def fake_cost(run_dir: Path, device_hours: float) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    store.write_cost(run_dir, {"device_hours": device_hours, "samples": 4, "wall_s": 1.0})


def test_gate_counts_spent_cost_from_the_run_folders(tmp_path: Path) -> None:
    fake_cost(store.run_path(tmp_path, "r1"), 0.25)
    gate = BudgetGate(0.5, str(tmp_path), {"r1": 0.3, "r2": 0.3})
    assert gate.committed() == pytest.approx(0.25) and gate.allows()
    fake_cost(store.run_path(tmp_path, "r2"), 0.25)
    assert not gate.allows()  # spent reaches the budget
    # A running run counts its estimate until it has spent more than that.
    with store.RunLock(store.run_path(tmp_path, "r2")):
        assert gate.committed() == pytest.approx(0.25 + 0.3)


def test_gate_leaves_a_run_untouched(tiny_overrides: list[str], tmp_path: Path) -> None:
    trial = expand(sweep_from_dict(sweep_tree(tiny_overrides)))[0]
    run_dir = store.run_path(tmp_path, trial.run_id)

    def must_not_train(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("the budget gate should have stopped this run")

    said: list[str] = []
    result = execute_trial(trial, run_dir, must_not_train, gate=lambda: False, out=said.append)
    assert result == NOT_STARTED
    assert not run_dir.exists() and store.run_status(run_dir) == "pending"
    assert "budget reached" in said[0]


def test_trials_pass_label_and_share_to_a_train_fn_that_takes_them(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    trial = expand(sweep_from_dict(sweep_tree(tiny_overrides)))[1]
    seen: dict[str, Any] = {}

    def train(
        cfg: Any, run_dir: Path, *, device_share: float | None, label: str | None, **kw: Any
    ) -> dict[str, Any]:
        seen.update(label=label, device_share=device_share)
        return {"metrics": {}}

    execute_trial(trial, tmp_path / "run", train, device_share=0.5)
    assert seen["label"] == trial.trial_id and seen["device_share"] == 0.5
    assert trial.trial_id.startswith("b,seed=")


@pytest.mark.slow
def test_budget_reached_mid_sweep_and_a_larger_budget_finishes(
    tiny_overrides: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from depthcore.tuning import run_sweep

    sweep = sweep_from_dict(sweep_tree(tiny_overrides))
    trials = expand(sweep)
    runs = {t.run_id: 1e-9 for t in trials}
    tight = BudgetGate(1e-9, str(tmp_path), runs)  # the first run's cost already reaches it
    first = run_sweep(sweep, tmp_path, dashboard=False, budget=tight)
    statuses = sorted(first.statuses.values())
    assert statuses == ["finished", "pending"], statuses
    assert "budget reached" in capsys.readouterr().out
    done = next(t for t in trials if first.statuses[t.trial_id] == "finished")
    final_path = store.eval_path(store.run_path(tmp_path, done.run_id), done.eval_id)
    final_before = (final_path / store.FINAL_FILE).read_bytes()

    larger = BudgetGate(1e6, str(tmp_path), runs)
    second = run_sweep(sweep, tmp_path, dashboard=False, budget=larger)
    assert second.exit_code == 0 and second.trained == 1
    final_after = final_path / store.FINAL_FILE
    assert final_after.read_bytes() == final_before  # not retrained
    cost = json.loads((store.run_path(tmp_path, done.run_id) / store.COST_FILE).read_text())
    assert cost["segments"] == 1


def test_estimate_recorded_in_the_index_is_what_the_report_reads(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    from depthcore.estimate import estimate_sweep
    from depthcore.report.compute import read_estimate
    from depthcore.trials import SweepIndex

    calibrated(tmp_path, tiny_overrides, step_s=36.0)
    sweep = sweep_from_dict(sweep_tree(tiny_overrides))
    trials = expand(sweep)
    est = estimate_sweep(sweep, trials, tmp_path)
    index = SweepIndex(sweep, tmp_path, trials)
    index.keep_estimate(est)  # as run_sweep records it at the sweep's start
    index.write()
    recorded = read_estimate(tmp_path, sweep.name)
    assert recorded is not None and recorded["runs"] == 2 and recorded["source"] == "calibration"
    assert recorded["device_hours"] == pytest.approx(est.total_device_hours, rel=1e-3)
    SweepIndex(sweep, tmp_path, trials).write()  # the sweep's own rewrites keep it
    assert read_estimate(tmp_path, sweep.name) == recorded


def test_dry_run_with_a_budget_below_the_estimate_exits_2(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    calibrated(tmp_path, tiny_overrides, step_s=3600.0)
    proc = run_runner(tmp_path, sweep_tree(tiny_overrides, budget=0.5), "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # as the real start: refused
    assert "2 runs, 0 finished; 2 to train:" in proc.stdout  # after the plan and estimate
    assert "  budget: FAILED" in proc.stdout
    assert "budget: budget 0.5 device-hours" in proc.stderr and "--budget " in proc.stderr
    assert not (tmp_path / "sweeps").exists()


def test_cpus_do_not_change_the_budget_check(tiny_overrides: list[str], tmp_path: Path) -> None:
    # Runs are priced at the trial's share of this machine, as their cost records will count
    # them: half the estimate is refused with --cpus as without (--cpus at 3x the cores once
    # divided the estimate by 3 and passed it).
    from depthcore.estimate import estimate_sweep

    calibrated(tmp_path, tiny_overrides, step_s=60.0)
    sweep = sweep_from_dict(sweep_tree(tiny_overrides))
    need = estimate_sweep(sweep, expand(sweep), tmp_path, out=print).device_hours
    assert need is not None and need > 0
    budget = f"{need / 2:.6f}"
    cpus = str(3 * len(os.sched_getaffinity(0)))
    for extra in ((), ("--cpus", cpus)):
        proc = run_runner(tmp_path, sweep_tree(tiny_overrides), "--budget", budget, *extra)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "budget" in proc.stderr and "RAY_IMPORTED=False" in proc.stderr


def finished_run(results: Path, trial: Any, train_s: float, share: float) -> None:
    """A finished run's files with a cost record of `train_s` seconds of training."""
    from depthcore.estimate import train_steps

    run_dir = store.run_path(results, trial.run_id)
    run_dir.mkdir(parents=True)
    cfg = trial.config
    store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
    samples = (train_steps(cfg) or 1) * cfg.optim.batch_size
    cost = {"device_kind": "cpu", "share": share, "samples": samples, "train_s": train_s}
    cost.update(wall_s=train_s, setup_s=0.0, eval_s=0.0, device_hours=train_s * share / 3600)
    store.write_cost(run_dir, cost)
    store.write_json_atomic(run_dir / store.FINAL_FILE, {"metrics": {}, "cost": cost})


def test_gate_prices_runs_at_the_measured_rate_once_one_finished(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    from depthcore.estimate import budget_gate, estimate_sweep

    tree = sweep_tree(tiny_overrides)
    tree["trials"] = [{"label": "a"}]
    tree["seeds"] = [1, 2, 3]
    sweep = sweep_from_dict(tree)
    one, two, three = expand(sweep)
    calibrated(tmp_path, tiny_overrides, step_s=10.0)  # the estimate: 2 steps, 23 s per run
    est = estimate_sweep(sweep, [one, two, three], tmp_path)
    share = est.share
    start_price = 23.0 * share / 3600
    assert est.device_hours == pytest.approx(3 * start_price)
    gate = budget_gate(est, 3 * 60.0 * share / 3600 * 0.9, tmp_path)  # < 3 runs at 60 s
    assert gate.prices()[two.run_id] == pytest.approx(start_price)

    finished_run(tmp_path, one, train_s=60.0, share=share)  # 2.6x the estimate
    measured = 60.0 * share / 3600
    assert gate.prices()[two.run_id] == pytest.approx(measured)
    assert gate.allows(two.run_id)  # 1 run spent + its own: fits
    with store.RunLock(store.run_path(tmp_path, two.run_id)):
        # The running run counts at the measured rate (not the start's third of it): the
        # third run would not fit, although spent + the start's estimates would.
        assert gate.committed() == pytest.approx(2 * measured)
        assert measured + 2 * start_price < gate.device_hours
        assert not gate.allows(three.run_id)
        assert gate.allows()  # budget is left; only this run does not fit in it


@pytest.mark.slow
def test_a_budget_with_cpus_is_overshot_by_at_most_the_runs_started_together(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    """The runner with the stand-in engine on a local Ray, --cpus 2 (2 trials at once), and a
    calibration that says a third of what a run costs (as --cpus at 3x the cores once made the
    estimate): the up-front check passes, and the gate, pricing running runs at the measured
    rate once one finished, stops the sweep within the budget plus the runs started together."""
    from sweep_runner import SIM_TRAIN_S, run_sweep_runner

    from depthcore.estimate import device_share, spent_device_hours, train_steps
    from depthcore.sweep import load_sweep

    tree = sweep_tree(tiny_overrides)
    tree.pop("max_concurrent")
    tree.update(trials=[{"label": "a"}], seeds=[1, 2, 3, 4, 5, 6])
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    trials = expand(load_sweep(path))
    run_cost = SIM_TRAIN_S * device_share(sweep_from_dict(tree).file.resources) / 3600
    steps = train_steps(trials[0].config) or 1
    key = shape_key(cost_shape(trials[0].config, "cpu"))
    third = asdict(Rate(step_s=SIM_TRAIN_S / 3 / steps, eval_s=0.0, setup_s=0.0, source=""))
    store.write_json_atomic(tmp_path / CALIBRATION_FILE, {key: third})
    budget, together = 2.5 * run_cost, 2  # --cpus 2 at cpu 1 per trial
    args = (str(path), "--results", str(tmp_path), "--no-dashboard", "--cpus", "2")
    proc = run_sweep_runner(*args, "--budget", f"{budget:.6g}", stand_in=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert f"6 to train: {6 * run_cost / 3:.2g} CPU-h" in out  # the estimate passed the check

    spent = spent_device_hours(tmp_path, [t.run_id for t in trials])
    assert spent <= budget + together * run_cost
    statuses = {t.trial_id: store.run_status(store.run_path(tmp_path, t.run_id)) for t in trials}
    # Once the first runs finished, each further run was priced at what they cost: none fit.
    assert sorted(statuses.values()) == ["finished"] * 2 + ["pending"] * 4, out
    assert spent <= budget
    index = store.read_sweep_index(tmp_path, "budgeted")
    assert index is not None
    assert {e["trial_id"]: e["status"] for e in index["trials"]} == statuses
    assert "6 trials: 2 finished, 4 pending" in out
    assert out.count("skipped a,seed=") == 4 and "budget reached" in out

    # The hint's command continues: the same command is refused, the hint's budget passes.
    hint = next(line for line in out.splitlines() if "to continue:" in line)
    assert "the same command would be refused" in hint
    raised = hint.rsplit("--budget ", 1)[1].split()[0]
    again = run_sweep_runner(*args, "--budget", f"{budget:.6g}", "--dry-run")
    assert again.returncode == 2 and "budget: FAILED" in again.stdout
    ok = run_sweep_runner(*args, "--budget", raised, "--dry-run")
    assert ok.returncode == 0, ok.stdout + ok.stderr
