"""Early stopping (scheduler: asha) and --promote, on a local Ray, driven by the stand-in engine
with known learning curves (tests/sweep_runner.py, `curve_train`): the tests can work out by
hand which trials ASHA stops at which rung. One local Ray (2 CPUs) serves the whole module.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import sweep_runner
import yaml
from ray import cloudpickle
from sweep_runner import CURVES, attempts, curve_train, val_curve

from depthcore import store
from depthcore.errors import ConfigError
from depthcore.stopping import select_promotions
from depthcore.sweep import expand, load_sweep, sweep_from_dict
from depthcore.trials import execute_trial
from depthcore.tuning import promote_trials, run_sweep

EPOCHS = 9
BASE = {
    "loss": {"photometric": "ssim_a"},
    "model": {"pretrained": False},
    "train": {"epochs": EPOCHS, "device": "cpu"},
}
ASHA = {"type": "asha", "grace_epochs": 1, "reduction_factor": 3}  # rungs at epochs 1 and 3

cloudpickle.register_pickle_by_value(sweep_runner)  # Ray's workers cannot import tests/


def must_not_train(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
    raise AssertionError(f"trained {run_dir}")


def starts(results: Path, run_id: str) -> list[int]:
    """The epoch each training attempt of the run started from (curve_train logs them)."""
    return [a["start_epoch"] for a in attempts(results, run_id)]


def epochs_trained(results: Path, run_id: str) -> int:
    records = store.read_curves(store.run_path(results, run_id))
    return len([r for r in records if r.get("type") == "epoch"])


@pytest.mark.slow
def test_asha_stops_the_trials_it_should_and_promotion_continues_them(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "asha.yaml"
    trials = [{"label": k, "loss.w_c": w} for k, w in zip("abcde", CURVES, strict=True)]
    trials[1]["role"] = "baseline"  # every verdict needs it: never stopped
    spec = {"name": "asha", "base": BASE, "trials": trials, "scheduler": ASHA}
    path.write_text(yaml.safe_dump({**spec, "max_concurrent": 1}))  # one at a time: in order
    sweep = load_sweep(path)
    a, b, c, d, e = expand(sweep)
    assert a.config.eval.objective == "val"  # a scheduled sweep selects on validation
    results = tmp_path / "results"

    outcome = run_sweep(sweep, results, train_fn=curve_train)
    out = capsys.readouterr().out
    # By hand (ASHA keeps the best 1/3 of the values recorded at a rung so far):
    # rung 1: a, the first, goes on; b (0.60 > a's 0.50) would stop but is the baseline; c
    # (0.45) beats the 2/3 quantile of {0.50, 0.60}; d (0.40) likewise; e (0.55) is worse
    # than the 2/3 quantile of {0.50, 0.60, 0.45, 0.40} (0.45): stopped after epoch 1.
    # rung 3: c (0.47) is worse than that of a's 0.40 and b's 0.55 (0.45): stopped after
    # epoch 3; d (0.30) goes on.
    assert outcome.statuses == {
        a.trial_id: "finished",
        b.trial_id: "finished",
        c.trial_id: "stopped",
        d.trial_id: "finished",
        e.trial_id: "stopped",
    }, out
    assert outcome.exit_code == 0
    assert [epochs_trained(results, t.run_id) for t in (a, b, c, d, e)] == [9, 9, 3, 9, 1]
    for trial, epoch, value in ((c, 3, 0.47), (e, 1, 0.55)):
        run_dir = store.run_path(results, trial.run_id)
        record = store.read_stopped(run_dir)
        assert record is not None and (record["epoch"], record["epochs"]) == (epoch, EPOCHS)
        assert record["value"] == pytest.approx(value) and record["sweep"] == "asha"
        assert record["metrics"]["abs_rel"] == pytest.approx(value)
        assert store.has_checkpoint(run_dir) and store.read_trained(run_dir) is None
        assert store.run_status(run_dir) == "stopped"
        assert f"stopped {trial.trial_id}: early, by ASHA at epoch {epoch}/{EPOCHS}" in out
    index = store.read_sweep_index(results, "asha")
    assert index is not None and index["objective"] == "val" and index["scheduler"] == ASHA
    entries = {t["trial_id"]: t for t in index["trials"]}
    assert entries[c.trial_id]["stopped"]["epoch"] == 3 and "stopped" not in entries[a.trial_id]
    assert "2 trials stopped early" in out and "--promote top:1" in out

    # A rerun of the same sweep trains nothing: stopped trials stay stopped.
    again = run_sweep(sweep, results, train_fn=must_not_train)
    assert (again.exit_code, again.trained) == (0, 0)
    assert "3 trials done, 2 stopped early" in capsys.readouterr().out

    # A trial added later is judged against the rung values recorded before (read from the run
    # folders): f's 0.80 after epoch 1 is worse than the 2/3 quantile of a..e's; the first trial
    # of a fresh scheduler would otherwise pass every rung.
    more = [*trials, {"label": "f", "loss.w_c": 0.6}]
    path.write_text(yaml.safe_dump({**spec, "trials": more, "max_concurrent": 1}))
    wider = load_sweep(path)
    f = expand(wider)[-1]
    assert run_sweep(wider, results, train_fn=curve_train).statuses[f.trial_id] == "stopped"
    assert epochs_trained(results, f.run_id) == 1

    # --promote: a name that is no trial, a finished trial, a bad top:K -> exit-2 errors.
    for keys, message in (
        (["zzz"], "no such trial"),
        ([a.trial_id], "has finished"),
        (["top:0"], "K >= 1"),
    ):
        with pytest.raises(ConfigError, match=message) as refused:
            select_promotions(sweep, results, keys)
        assert keys[0] in str(refused.value)
    # top:1 is the best stopped trial by its last value: c (0.47) before e (0.55).
    assert [p.trial.trial_id for p in select_promotions(sweep, results, ["top:1"])] == [c.trial_id]
    promoted = promote_trials(sweep, results, ["top:1"], train_fn=curve_train)
    assert promoted.statuses == {c.trial_id: "finished"} and promoted.exit_code == 0
    assert starts(results, c.run_id) == [0, 3]  # continued from its checkpoint, no epoch again
    assert epochs_trained(results, c.run_id) == 9
    clean = execute_trial(c, tmp_path / "clean", curve_train)  # uninterrupted, no Ray
    assert store.read_evaluation(store.run_path(results, c.run_id), c.eval_id) == clean
    assert store.read_stopped(store.run_path(results, c.run_id)) is None
    entries = {t["trial_id"]: t for t in store.read_sweep_index(results, "asha")["trials"]}
    assert entries[c.trial_id]["status"] == "finished" and "stopped" not in entries[c.trial_id]

    # A later sweep with the same configuration (same run id) reuses e's run and continues it.
    later = sweep_from_dict({"name": "later", "base": BASE, "trials": [trials[4]]})
    assert expand(later)[0].run_id != e.run_id  # objective test there: another run
    later = sweep_from_dict(
        {"name": "later", "base": {**BASE, "eval": {"objective": "val"}}, "trials": [trials[4]]}
    )
    assert expand(later)[0].run_id == e.run_id
    assert run_sweep(later, results, train_fn=curve_train).exit_code == 0
    assert starts(results, e.run_id) == [0, 1]


@pytest.mark.slow
def test_optuna_is_told_pruned_with_the_last_value_and_learns_promotions(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    search = {"method": "optuna", "n_trials": 6, "seed": 7, "n_startup_trials": 6}
    search["space"] = {"loss.w_c": {"uniform": [0.6, 0.9]}}  # val = w_c + 0.2 / epoch
    sweep = sweep_from_dict(
        {"name": "tpe", "base": BASE, "search": search, "scheduler": ASHA, "max_concurrent": 1}
    )
    results = tmp_path / "results"
    outcome = run_sweep(sweep, results, train_fn=curve_train)
    assert outcome.exit_code == 0, capsys.readouterr().out
    index = store.read_sweep_index(results, "tpe")
    assert index is not None and len(index["trials"]) == 6
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(store.optuna_journal_path(results, "tpe")))
    )
    study = optuna.load_study(study_name="tpe", storage=storage)
    by_wc = {round(t.params["loss.w_c"], 9): t for t in study.trials}
    stopped = 0
    for entry in index["trials"]:
        run_dir = store.run_path(results, entry["run_id"])
        told = by_wc[round(entry["params"]["loss.w_c"], 9)]
        curve = [r for r in store.read_curves(run_dir) if r["type"] == "val"]
        assert told.intermediate_values == {r["epoch"]: r["abs_rel"] for r in curve}
        if entry["status"] == "stopped":
            stopped += 1
            record = store.read_stopped(run_dir)
            assert told.state.name == "PRUNED" and told.value == pytest.approx(record["value"])
            assert told.last_step == record["epoch"] < EPOCHS
        else:
            assert entry["status"] == "finished" and told.state.name == "COMPLETE"
            assert told.value == pytest.approx(curve[-1]["abs_rel"]) and len(curve) == EPOCHS
    assert stopped >= 2  # the rungs stopped some (worse w_c), else this test tests nothing

    # A rerun trains nothing: pruned trials count as spent.
    again = run_sweep(sweep, results, train_fn=must_not_train)
    assert (again.exit_code, again.trained) == (0, 0)
    # A promoted trial's full-length value is told to the study as a new COMPLETE trial.
    (best,) = select_promotions(sweep, results, ["top:1"])
    promoted = promote_trials(sweep, results, ["top:1"], train_fn=curve_train)
    assert promoted.statuses == {best.trial.trial_id: "finished"}
    study = optuna.load_study(study_name="tpe", storage=storage)
    told = [t for t in study.trials if "promoted_from" in t.user_attrs]
    assert len(told) == 1 and told[0].state.name == "COMPLETE"
    assert told[0].value == pytest.approx(val_curve(best.trial.config.loss.w_c, EPOCHS))
    assert run_sweep(sweep, results, train_fn=must_not_train).trained == 0  # still 6 spent


def test_a_stop_is_recorded_only_for_an_epoch_report(tmp_path: Path) -> None:
    from depthcore.stopping import stop_record

    sweep = sweep_from_dict({"name": "s", "base": BASE, "trials": [{}], "scheduler": ASHA})
    (trial,) = expand(sweep)
    epoch = {"epoch": 2, "objective": 0.3, "val_abs_rel": 0.3, "val_a1": 0.8, "abs_rel": 9.0}
    record = stop_record(sweep, trial, epoch)
    assert record is not None and record["metrics"] == {"abs_rel": 0.3, "a1": 0.8}
    assert (record["epoch"], record["value"], record["objective"]) == (2, 0.3, "val")
    assert stop_record(sweep, trial, {**epoch, "final": 1}) is None  # a finished trial's
    assert stop_record(sweep, trial, {"epoch": 2}) is None  # no objective: nothing to judge


def test_promote_on_the_command_line_names_a_bad_trial_and_exits_2(tmp_path: Path) -> None:
    from sweep_runner import run_sweep_runner

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": BASE, "trials": [{"label": "a"}],
                                    "scheduler": ASHA}))  # fmt: skip
    results = tmp_path / "results"
    (trial,) = expand(load_sweep(path))
    run_dir = store.run_path(results, trial.run_id)
    functools.partial(curve_train, report=None)(trial.config, run_dir)  # finished
    for key, message in (("nope", "--promote nope: no such trial"), ("a", "has finished")):
        proc = run_sweep_runner(str(path), "--promote", key, "--results", str(results))
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert message in proc.stderr and "Traceback" not in proc.stderr
        assert "RAY_IMPORTED=False" in proc.stderr


@pytest.mark.slow
def test_a_real_search_with_asha_trains_at_most_half_the_epochs(
    ray_local: Any, synthetic_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The engine, tiny, on synthetic drives: 8 random learning rates (far apart, so the rungs'
    comparisons are not decided by rounding), one trial at a time (ASHA's decisions depend on
    the order results arrive in), 9 epochs each without a scheduler."""
    from conftest import TINY_OVERRIDES

    search = {"method": "optuna", "n_trials": 8, "seed": 3, "n_startup_trials": 8}
    search["space"] = {"optim.lr": {"loguniform": [1e-6, 1e-2]}}
    sweep = sweep_from_dict(
        {"name": "real", "search": search, "scheduler": ASHA, "max_concurrent": 1},
        overrides=[
            *TINY_OVERRIDES,
            f"data.cache_dir={synthetic_cache}",
            "data.synthetic.drives=3",  # 2 validation frames
            f"train.epochs={EPOCHS}",
            "train.steps_per_epoch=1",
            "eval.max_images=2",
        ],
    )
    results = tmp_path / "results"
    outcome = run_sweep(sweep, results, dashboard=False)
    out = capsys.readouterr().out
    assert outcome.exit_code == 0 and len(outcome.statuses) == 8, out
    index = store.read_sweep_index(results, "real")
    trained = 0
    for entry in index["trials"]:
        run_dir = store.run_path(results, entry["run_id"])
        epochs = epochs_trained(results, entry["run_id"])
        trained += epochs
        if entry["status"] == "stopped":  # the engine stopped at its checkpoint by Ray
            assert store.read_stopped(run_dir)["epoch"] == epochs < EPOCHS
            cost = store.read_cost(run_dir)
            assert cost["log"][-1]["end"] == "stopped" and cost["lost_s"] == 0
        else:
            assert entry["status"] == "finished" and epochs == EPOCHS
    full = 8 * EPOCHS  # the same search without a scheduler trains every trial to the end
    assert trained <= full / 2, out
