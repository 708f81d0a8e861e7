"""The Ray plumbing of depthcore.tuning, driven by a small stand-in for the engine.

`fake_train` keeps the engine's contract (RunLock, config.yaml, metrics.jsonl, checkpoint,
final.json, error.json, `report` after each checkpoint, resume from run_dir/checkpoint) and
logs every attempt, so the tests can see what was trained, resumed or skipped. One local Ray
(2 CPUs, with the dashboard) serves the whole module.
"""

from __future__ import annotations

import functools
import json
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

from depthcore import store
from depthcore.config import config_from_dict
from depthcore.errors import ConfigError, DataError, TrainingError
from depthcore.sweep import expand, sweep_from_dict, trial_from_params
from depthcore.trials import execute_trial, find_trial, run_one
from depthcore.tuning import run_sweep

ATTEMPTS = "attempts.jsonl"
TINY_BASE = {
    "loss": {"photometric": "ssim_a"},
    "model": {"pretrained": False},
    "train": {"epochs": 2, "device": "cpu"},
}


# ----------------------------------------------------------------------------------------------
# A stand-in engine with the engine's file contract


def fake_train(
    cfg: Any,
    run_dir: str | Path,
    *,
    report: Any = None,
    progress: bool = True,
    probe_url: str | None = None,
    fail_at_epoch: int | None = None,
    fault_once_after: int | None = None,
    drop_checkpoint: bool = False,
) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.RunLock(run_dir):
        final = store.read_final(run_dir)
        if final is not None:
            return final
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        (run_dir / store.ERROR_FILE).unlink(missing_ok=True)
        state = _load_state(run_dir)
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        store.append_jsonl(run_dir / ATTEMPTS, {"start_epoch": state["epoch"], "node": node})
        try:
            for epoch in range(state["epoch"] + 1, cfg.train.epochs + 1):
                if epoch == fail_at_epoch:
                    raise TrainingError(f"non-finite loss at step {2 * epoch}")
                # A state chain: resuming from anything but the last checkpoint changes the result.
                state = {"epoch": epoch, "x": state["x"] * (0.5 + cfg.loss.w_c) + 0.01 * epoch}
                ckpt = run_dir / store.CHECKPOINT_DIR
                store.write_json_atomic(ckpt / store.CHECKPOINT_FILE, state)  # JSON in state.pt
                record = {"type": "epoch", "epoch": epoch, "step": 2 * epoch, "train_loss": 1.0}
                record["abs_rel"] = state["x"] / 10
                store.append_jsonl(run_dir / store.METRICS_FILE, record)
                if report is not None:
                    _report(report, record, ckpt, fault_once_after, drop_checkpoint)
        except BaseException as exc:  # like the engine: everything but Ctrl-C is recorded
            if isinstance(exc, KeyboardInterrupt):
                raise
            store.write_json_atomic(
                run_dir / store.ERROR_FILE,
                {"error": str(exc), "type": type(exc).__name__, "traceback": "", "step": None},
            )
            raise
        final = {"run_id": cfg.run_id(), "metrics": {"abs_rel": state["x"] / 10}, "node": node}
        final["epochs"] = cfg.train.epochs
        if probe_url:  # the dashboard, asked while the sweep runs
            final["dashboard_status"] = urllib.request.urlopen(probe_url, timeout=20).status
        store.write_json_atomic(run_dir / store.FINAL_FILE, final)
        return final


def _load_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    return store.read_json(path) or {"epoch": 0, "x": 1.0}


def _report(
    report: Any, record: dict, ckpt: Path, fault_once_after: int | None, drop: bool
) -> None:
    report({**record, "checkpoint_dir": str(ckpt)})
    marker = ckpt.parent / "fault-injected"
    if record["epoch"] == fault_once_after and not marker.exists():
        marker.write_text("x")
        if drop:  # as if the retry ran on a node that cannot see this run folder's checkpoint
            for path in ckpt.iterdir():
                path.unlink()
        raise RuntimeError("injected fault after the first epoch's checkpoint")


def must_not_train(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
    raise AssertionError(f"trained {run_dir} although it had finished")


def attempts(results: Path, run_id: str) -> list[dict[str, Any]]:
    return store.read_jsonl(store.run_path(results, run_id) / ATTEMPTS)


def make_sweep(name: str, **keys: Any):
    return sweep_from_dict({"name": name, "base": TINY_BASE, **keys})


@pytest.mark.slow
def test_sweep_writes_the_results_contract_and_a_rerun_trains_nothing(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://{ray_local.dashboard_url}/"
    sweep = make_sweep("e2e", grid={"loss.w_c": [0.4, 0.6]})
    outcome = run_sweep(sweep, tmp_path, train_fn=functools.partial(fake_train, probe_url=url))
    out = capsys.readouterr().out
    assert outcome.exit_code == 0 and outcome.trained == 2
    assert f"Ray dashboard: {url.rstrip('/')}" in out
    assert "[1/2] start" in out and "epoch 2/2" in out and "done" in out
    for trial in expand(sweep):
        run_dir = store.run_path(tmp_path, trial.run_id)
        assert store.run_status(run_dir) == "finished"
        final = store.read_final(run_dir)
        assert final["dashboard_status"] == 200
        epochs = [r for r in store.read_jsonl(run_dir / store.METRICS_FILE) if r["type"] == "epoch"]
        assert [r["epoch"] for r in epochs] == [1, 2]
        assert yaml.safe_load((run_dir / store.CONFIG_FILE).read_text())["loss"]["w_c"] in (
            0.4,
            0.6,
        )
    index = yaml.safe_load((tmp_path / "sweeps" / "e2e.yaml").read_text())
    keys = {"name", "sweep_file", "updated", "metric", "mode", "swept", "design", "trials"}
    assert set(index) == {*keys, "evaluations", "objective"}
    assert (index["design"], index["objective"]) == ("grid", "test")
    assert (index["name"], index["metric"], index["mode"]) == ("e2e", "abs_rel", "min")
    assert index["swept"] == ["loss.w_c"]
    assert [t["status"] for t in index["trials"]] == ["finished", "finished"]
    assert [t["params"] for t in index["trials"]] == [{"loss.w_c": 0.4}, {"loss.w_c": 0.6}]
    assert not list((tmp_path / "ray").rglob("checkpoint_*"))  # Ray's copies pruned

    again = run_sweep(sweep, tmp_path, train_fn=must_not_train)
    assert again.exit_code == 0 and again.trained == 0
    assert "0 runs to train, 0 to evaluate only" in capsys.readouterr().out

    # Another sweep sharing one run: only its new run trains.
    wider = make_sweep("wider", grid={"loss.w_c": [0.6, 0.8]})
    assert run_sweep(wider, tmp_path, train_fn=fake_train).trained == 1
    for trial in expand(wider):
        assert len(attempts(tmp_path, trial.run_id)) == 1


@pytest.mark.slow
def test_trial_killed_mid_run_resumes_from_its_checkpoint(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = make_sweep(
        "fault",
        base={**TINY_BASE, "train": {"epochs": 3, "device": "cpu"}},
        trials=[{"label": "local", "loss.w_c": 0.3}, {"label": "remote", "loss.w_c": 0.7}],
        max_failures=1,
    )
    local, remote = expand(sweep)

    def flaky(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        drop = cfg.loss.w_c == 0.7  # this one must come back from Ray's copy of the checkpoint
        return fake_train(cfg, run_dir, fault_once_after=1, drop_checkpoint=drop, **kw)

    outcome = run_sweep(sweep, tmp_path, train_fn=flaky)
    assert outcome.exit_code == 0, capsys.readouterr().out
    assert "retry" in capsys.readouterr().out
    for trial in (local, remote):
        assert [a["start_epoch"] for a in attempts(tmp_path, trial.run_id)] == [0, 1]
        clean = tmp_path / "clean" / trial.run_id
        expected = execute_trial(trial, clean, fake_train)  # uninterrupted, no Ray
        got = store.read_final(store.run_path(tmp_path, trial.run_id))
        assert got["metrics"] == expected["metrics"]
        epochs = store.read_jsonl(store.run_path(tmp_path, trial.run_id) / store.METRICS_FILE)
        assert [r["epoch"] for r in epochs] == [1, 2, 3]


@pytest.mark.slow
def test_a_failed_run_records_its_error_and_the_sweep_goes_on(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = make_sweep(
        "failing",
        trials=[{"label": "nan", "loss.w_c": 0.1}, {"label": "fine", "loss.w_c": 0.2}],
        max_failures=1,
    )
    nan, fine = expand(sweep)

    def nan_at_2(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        return fake_train(cfg, run_dir, fail_at_epoch=2 if cfg.loss.w_c == 0.1 else None, **kw)

    outcome = run_sweep(sweep, tmp_path, train_fn=nan_at_2)
    out = capsys.readouterr().out
    assert outcome.exit_code == 1
    assert outcome.statuses == {nan.trial_id: "failed", fine.trial_id: "finished"}
    error_json = store.run_path(tmp_path, nan.run_id) / store.ERROR_FILE
    assert outcome.errors == {nan.trial_id: error_json}
    assert json.loads(error_json.read_text())["type"] == "TrainingError"
    assert f"failed: {nan.trial_id}: TrainingError: non-finite loss" in out
    assert str(error_json) in out
    # A non-finite loss would recur: Ray's retries fail at once instead of training again.
    assert len(attempts(tmp_path, nan.run_id)) == 1
    index = yaml.safe_load((tmp_path / "sweeps" / "failing.yaml").read_text())
    assert [t["status"] for t in index["trials"]] == ["failed", "finished"]


@pytest.mark.slow
def test_optuna_sweep_continues_its_study(ray_local: Any, tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    def optuna_sweep(n_trials: int):
        search = {"method": "optuna", "n_trials": n_trials, "seed": 3, "n_startup_trials": 2}
        search["space"] = {"loss.w_c": {"uniform": [0.3, 0.7]}, "loss.w_s": {"choice": [0.5, 0.7]}}
        # Selected on the test split's final metric (fake_train logs no validation): the
        # behaviour eval.objective: test keeps.
        base = {**TINY_BASE, "train": {"epochs": 1}, "eval": {"objective": "test"}}
        return make_sweep("tpe", base=base, search=search)

    # A trial a killed driver left RUNNING in the study: it is re-queued with the same values.
    journal = tmp_path / "sweeps" / "tpe.optuna.journal"
    journal.parent.mkdir(parents=True)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name="tpe", storage=storage, direction="minimize")
    space = {
        "loss.w_c": FloatDistribution(0.3, 0.7),
        "loss.w_s": CategoricalDistribution([0.5, 0.7]),
    }
    orphan = study.ask(space).params

    first = run_sweep(optuna_sweep(2), tmp_path, train_fn=fake_train)
    assert first.exit_code == 0 and len(first.statuses) == 2
    index = yaml.safe_load((tmp_path / "sweeps" / "tpe.yaml").read_text())
    assert trial_from_params(optuna_sweep(2), orphan).run_id in {
        e["run_id"] for e in index["trials"]
    }
    assert run_sweep(optuna_sweep(2), tmp_path, train_fn=must_not_train).trained == 0
    more = run_sweep(optuna_sweep(3), tmp_path, train_fn=fake_train)
    assert more.trained == 1 and len(more.statuses) == 3 and more.exit_code == 0
    index = yaml.safe_load((tmp_path / "sweeps" / "tpe.yaml").read_text())
    assert index["swept"] == ["loss.w_c", "loss.w_s"]
    for entry in index["trials"]:
        cfg = yaml.safe_load(
            (store.run_path(tmp_path, entry["run_id"]) / "config.yaml").read_text()
        )
        assert 0.3 <= cfg["loss"]["w_c"] <= 0.7 and cfg["loss"]["w_s"] in (0.5, 0.7)
        assert entry["params"]["loss.w_c"] == cfg["loss"]["w_c"]
        assert entry["status"] == "finished"
    states = [t.state.name for t in optuna.load_study(study_name="tpe", storage=storage).trials]
    assert states.count("COMPLETE") == 3 and states.count("FAIL") == 1  # the orphan, re-run


def test_resources_this_machine_lacks_are_a_config_error(ray_local: Any) -> None:
    from depthcore.tuning import _check_resources

    sweep = make_sweep("gpu", trials=[{"label": "a"}], resources={"gpu": 1})
    with pytest.raises(ConfigError, match=r"resources.*gpu: 1 per trial, the cluster has 0"):
        _check_resources(sweep, local=True)


# ----------------------------------------------------------------------------------------------
# Without Ray


@pytest.mark.parametrize(
    "search",
    [
        {},
        {
            "search": {
                "method": "optuna",
                "n_trials": 2,
                "space": {"loss.w_c": {"uniform": [0.1, 0.9]}},
            }
        },
    ],
)
def test_missing_kitti_data_stops_a_local_sweep_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, search: dict[str, Any]
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    root = tmp_path / "kitti_raw"
    root.mkdir()
    base = {**TINY_BASE, "data": {"dataset": "kitti", "root": str(root)}}
    keys = search or {"trials": [{"label": "a"}]}
    sweep = sweep_from_dict({"name": "nodata", "base": base, **keys})
    with pytest.raises(DataError, match=r"train_files\.txt"):
        run_sweep(sweep, tmp_path / "results", train_fn=must_not_train, dashboard=False)
    # (Raised by the driver: from a trial the error would only be recorded in error.json.)
    # Nothing was written: no sweep index whose report would read as a sweep that started.
    assert not (tmp_path / "results" / "sweeps").exists()
    assert not (tmp_path / "results" / "runs").exists()
    # On a cluster the workers hold the data: nothing is checked on the driver.
    from depthcore.preflight import check_data

    check_data([expand(make_sweep("x", trials=[{"label": "a"}]))[0].config], None)
    check_data([config_from_dict(sweep.base)], "auto")


def test_a_run_locked_by_another_process_is_waited_for(tmp_path: Path) -> None:
    sweep = make_sweep("lock", trials=[{"label": "a"}])
    (trial,) = expand(sweep)
    run_dir = store.run_path(tmp_path, trial.run_id)
    lock = store.RunLock(run_dir)
    lock.acquire()  # "another sweep" holds the run

    def finish_elsewhere() -> None:
        time.sleep(0.5)
        store.write_trained(run_dir, {"run_id": trial.run_id})
        final = {"metrics": {"abs_rel": 0.5}}
        store.write_json_atomic(store.eval_path(run_dir, trial.eval_id) / store.FINAL_FILE, final)
        lock.release()

    thread = threading.Thread(target=finish_elsewhere)
    thread.start()
    messages: list[str] = []
    final = execute_trial(trial, run_dir, must_not_train, poll_s=0.05, out=messages.append)
    thread.join()
    assert final["metrics"] == {"abs_rel": 0.5}
    assert "waiting for it to finish" in messages[0]


def test_errors_outside_the_engine_are_recorded(tmp_path: Path) -> None:
    (trial,) = expand(make_sweep("broken", trials=[{"label": "a"}]))
    run_dir = tmp_path / "run"

    def broken(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        raise MemoryError("out of memory (simulated)")

    with pytest.raises(MemoryError):
        execute_trial(trial, run_dir, broken)
    error = store.read_error(run_dir)
    assert error["type"] == "MemoryError" and "out of memory" in error["error"]
    assert "Traceback" in error["traceback"]
    assert store.run_status(run_dir) == "failed"


def test_only_runs_one_trial_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = make_sweep("one", trials=[{"label": "a", "loss.w_c": 0.1}, {"label": "b"}])
    a, b = expand(sweep)
    assert find_trial(sweep, "b") == b
    assert find_trial(sweep, a.run_id) == a
    assert find_trial(sweep, "a,seed") == a
    with pytest.raises(ConfigError, match="no such trial"):
        find_trial(sweep, "c")
    outcome = run_one(sweep, "a", tmp_path, train_fn=fake_train)
    assert outcome.exit_code == 0 and outcome.statuses == {a.trial_id: "finished"}
    index = yaml.safe_load((tmp_path / "sweeps" / "one.yaml").read_text())
    assert [t["status"] for t in index["trials"]] == ["finished", "pending"]


def test_a_stopped_trial_is_interrupted_not_failed(tmp_path: Path) -> None:
    """Ray stops a trial with sys.exit(0) inside tune.report; the run must not look failed."""
    (trial,) = expand(make_sweep("stop", trials=[{"label": "a"}]))
    run_dir = tmp_path / "run"

    def stopped(cfg: Any, run_dir: Any, *, report: Any = None, **kw: Any) -> dict[str, Any]:
        def stop_after_first(record: dict[str, Any]) -> None:
            report(record)
            sys.exit(0)

        return fake_train(cfg, run_dir, report=stop_after_first, **kw)

    with pytest.raises(SystemExit):
        execute_trial(trial, run_dir, stopped)
    assert store.run_status(run_dir) == "interrupted"
    assert execute_trial(trial, run_dir, fake_train)["epochs"] == 2
    assert [a["start_epoch"] for a in store.read_jsonl(run_dir / ATTEMPTS)] == [0, 1]


def test_an_unreachable_address_fails_fast() -> None:
    import socket

    from depthcore.tuning import _check_reachable

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        _check_reachable(f"127.0.0.1:{port}")
        _check_reachable(f"ray://127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
        _check_reachable(f"127.0.0.1:{port}")  # closed now: Ray itself would retry for minutes
    _check_reachable("auto")  # resolved by Ray


# ----------------------------------------------------------------------------------------------
# Train once, evaluate many: trials that differ only in eval.* keys share one run


def train_and_evaluate(cfg: Any, run_dir: str | Path, **_: Any) -> dict[str, Any]:
    """The engine's contract for evaluations: train once (trained.json), then record the
    evaluation `cfg.eval` asks for in evals/<eval id>/; a trained run is only evaluated."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.RunLock(run_dir):
        if store.read_trained(run_dir) is None:
            store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
            store.append_jsonl(run_dir / ATTEMPTS, {"trained": cfg.run_id()})
            store.write_trained(run_dir, {"run_id": cfg.run_id(), "epochs": cfg.train.epochs})
        found = store.read_evaluation(run_dir, cfg.eval_id())
        if found is not None:
            return found
        store.append_jsonl(run_dir / "evaluations.jsonl", {"eval_id": cfg.eval_id()})
        final = {"run_id": cfg.run_id(), "eval_id": cfg.eval_id(), "epochs": cfg.train.epochs}
        final["metrics"] = {"abs_rel": 0.1 * cfg.eval.max_images}
        store.write_json_atomic(store.eval_path(run_dir, cfg.eval_id()) / store.FINAL_FILE, final)
        return final


@pytest.mark.slow
def test_trials_differing_in_eval_keys_train_once_and_evaluate_each(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = make_sweep("evals", grid={"eval.max_images": [1, 2]})
    one, two = expand(sweep)
    assert one.run_id == two.run_id and one.eval_id != two.eval_id
    outcome = run_sweep(sweep, tmp_path, train_fn=train_and_evaluate)
    assert outcome.exit_code == 0, capsys.readouterr().out
    assert (outcome.trained, outcome.evaluated) == (1, 1)
    assert "1 runs to train, 1 to evaluate only" in capsys.readouterr().out
    run_dir = store.run_path(tmp_path, one.run_id)
    assert len(attempts(tmp_path, one.run_id)) == 1
    assert len(store.read_jsonl(run_dir / "evaluations.jsonl")) == 2
    index = yaml.safe_load((tmp_path / "sweeps" / "evals.yaml").read_text())
    assert [t["eval_id"] for t in index["trials"]] == [one.eval_id, two.eval_id]
    assert [t["status"] for t in index["trials"]] == ["finished", "finished"]
    assert index["evaluations"][two.eval_id]["max_images"] == 2

    # Another sweep asking the trained run for one known and one new evaluation: no training.
    more = make_sweep("more", grid={"eval.max_images": [2, 3]})
    outcome = run_sweep(more, tmp_path, train_fn=train_and_evaluate)
    assert (outcome.exit_code, outcome.trained, outcome.evaluated) == (0, 0, 1)
    assert "0 runs to train, 1 to evaluate only (trained already), 1 trials done" in (
        capsys.readouterr().out
    )
    assert len(attempts(tmp_path, one.run_id)) == 1
    assert len(store.read_jsonl(run_dir / "evaluations.jsonl")) == 3


# What a sweep says: the runner with the stand-in engine (tests/sweep_runner.py) on a local Ray

FAULTS_SWEEP = {
    "name": "faults",
    "base": {**TINY_BASE, "train": {"epochs": 1, "device": "cpu"}},
    "trials": [{"label": "a"}],
    "seeds": [1, 2, 3],
    "resources": {"cpu": 1},
    "max_failures": 1,
}


@pytest.mark.slow
def test_worker_deaths_print_one_line_each_and_a_spent_trial_fails_with_its_error(
    tmp_path: Path,
) -> None:
    from sweep_runner import STAND_IN_FILE, attempts, run_sweep_runner

    from depthcore.store import FAULTS_FILE
    from depthcore.sweep import load_sweep

    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(FAULTS_SWEEP))
    ok, once, always = expand(load_sweep(path))
    results = tmp_path / "results"
    results.mkdir()
    plan = {once.run_id: {"kill": 1}, always.run_id: {"kill": 99}}  # 99: every attempt dies
    (results / STAND_IN_FILE).write_text(json.dumps(plan))
    proc = run_sweep_runner(
        str(path), "--results", str(results), "--no-dashboard", stand_in=True, timeout=300
    )
    out, said = proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode == 1, said
    # Ray's own words stay off the console: no traceback, no raylet report, no OOM advice.
    for ray_words in ("Traceback", "(raylet)", "A worker died", "OOM", "Trials did not complete"):
        assert ray_words not in said, ray_words

    # A death Ray retries: one line of ours; Ray's error, in full, in the run's faults.log.
    retried = [line for line in out.splitlines() if once.trial_id in line and "retry" in line]
    assert len(retried) == 1 and "its Ray worker process died" in retried[0], out
    log = store.run_path(results, once.run_id) / FAULTS_FILE
    assert str(log) in retried[0]
    assert "ActorDiedError" in log.read_text() and "attempt 1 of 2 failed" in log.read_text()
    assert len(attempts(results, once.run_id)) == 2

    # Killed until its retries are spent: failed, with an error record naming the death.
    failed_dir = store.run_path(results, always.run_id)
    assert store.run_status(failed_dir) == "failed"
    error = store.read_error(failed_dir)
    assert error is not None and error["type"] == "ActorDiedError"
    assert "ActorDiedError" in error["traceback"]
    assert f"FAILED  {always.trial_id}: ActorDiedError: its Ray worker process died" in out
    assert len(attempts(results, always.run_id)) == 2
    # data.num_workers 'auto' was resolved within the trial's one CPU: no loader workers.
    assert {a["workers"] for a in attempts(results, ok.run_id)} == {0}

    # Every status printed is the run folder's, and the summary counts what the index lists.
    index = store.read_sweep_index(results, "faults")
    assert index is not None
    folders = {
        t.trial_id: store.run_status(store.run_path(results, t.run_id)) for t in (ok, once, always)
    }
    assert {e["trial_id"]: e["status"] for e in index["trials"]} == folders
    assert "faults: 3 trials: 1 failed, 2 finished" in out
    assert f"failed: {always.trial_id}: ActorDiedError" in out
    assert "to continue, run the same command:" in out and "1 failed run will be tried again" in out


def test_trial_loader_workers_fit_the_trial_cpus() -> None:
    from depthcore.trials import with_trial_cpus

    base = {**TINY_BASE, "data": {"num_workers": "auto"}}
    (trial,) = expand(make_sweep("w", base=base, trials=[{"label": "a"}]))
    assert trial.config.data.num_workers == "auto"
    assert with_trial_cpus(trial, 1).config.data.num_workers == 0  # the trial's one process
    four = with_trial_cpus(trial, 4)
    assert four.config.data.num_workers == 3 and four.run_id == trial.run_id
    assert with_trial_cpus(trial, 64).config.data.num_workers == 8
    fixed = expand(make_sweep("w", base={**TINY_BASE, "data": {"num_workers": 5}}, trials=[{}]))[0]
    assert with_trial_cpus(fixed, 1).config.data.num_workers == 5  # a number is the user's


def test_ray_notices_that_our_lines_replace_are_dropped_only_while_ray_runs(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    from ray._private import worker

    from depthcore.tuning import _quiet_ray

    notice = "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=..."
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    died = {"lines": ["A worker died or was killed while executing a task"], "pid": "raylet"}
    other = {"lines": ["something else"], "pid": "raylet", "is_err": False}
    with caplog.at_level(logging.WARNING), _quiet_ray():
        logger.warning(notice)
        worker.print_to_stdstream({**died, "is_err": False}, ignore_prefix=False)
        worker.print_to_stdstream(other, ignore_prefix=False)
    assert notice not in caplog.text
    printed = capsys.readouterr().out
    assert "A worker died" not in printed and "something else" in printed
    with caplog.at_level(logging.WARNING):
        logger.warning(notice)
    assert notice in caplog.text  # outside a session, Ray's logging is untouched


def test_a_sweep_name_used_by_another_sweep_file_is_refused(tmp_path: Path) -> None:
    from sweep_runner import run_sweep_runner

    from depthcore.preflight import check_sweep_name
    from depthcore.sweep import load_sweep

    original, copy = tmp_path / "orig.yaml", tmp_path / "copy.yaml"
    text = yaml.safe_dump({"name": "same", "base": TINY_BASE, "trials": [{"label": "a"}]})
    original.write_text(text)
    copy.write_text(text.replace("label: a", "label: b"))
    results = tmp_path / "results"
    run_one(load_sweep(original), "a", results, train_fn=fake_train)  # the original's index
    index_before = (results / "sweeps" / "same.yaml").read_bytes()
    with pytest.raises(ConfigError, match="already used") as refused:
        check_sweep_name(load_sweep(copy), results)
    assert str(original) in str(refused.value) and str(copy) in str(refused.value)
    with pytest.raises(ConfigError, match="already used"):
        run_sweep(load_sweep(copy), results, train_fn=must_not_train)
    with pytest.raises(ConfigError, match="already used"):
        run_one(load_sweep(copy), "b", results, train_fn=must_not_train)
    proc = run_sweep_runner(str(copy), "--dry-run", "--results", str(results))
    assert proc.returncode == 2 and "sweep name: FAILED" in proc.stdout
    assert str(original) in proc.stderr and str(copy) in proc.stderr
    assert (results / "sweeps" / "same.yaml").read_bytes() == index_before  # untouched
    check_sweep_name(load_sweep(original), results)  # the original itself goes on
    original.rename(tmp_path / "moved.yaml")  # a moved sweep file takes its index over
    check_sweep_name(load_sweep(tmp_path / "moved.yaml"), results)
