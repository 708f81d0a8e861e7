"""Adaptive seeds end to end: a raced sweep on Ray with a stand-in engine, then its report; and a
race over many arms in this process, whose decisions its report must print.

The stand-in writes the engine's files (config.yaml, per_image.csv, final.json) with per-image
abs_rel = image difficulty + the arm's shift + a seed effect, so the arm `good` is far better
than the baseline and the arm `same` is the baseline under other seeds (an A/A arm).
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from depthcore import store
from depthcore.metrics import METRIC_NAMES
from depthcore.report import build_report
from depthcore.report.loading import load_sweep_results
from depthcore.report.significance import look_fractions
from depthcore.sweep import expand, sweep_from_dict
from depthcore.trials import SweepIndex, race_state
from depthcore.tuning import run_sweep

ATTEMPTS = "attempts.jsonl"
SHIFT = {"standard": 0.0, "l1": -0.05, "ssim_a": 0.0}  # loss.photometric -> abs_rel shift
N_IMAGES = 30


def stand_in_train(cfg: Any, run_dir: str | Path, **_: Any) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.RunLock(run_dir):
        final = store.read_final(run_dir)
        if final is not None:
            return final
        store.append_jsonl(run_dir / ATTEMPTS, {"seed": cfg.train.seed})
        # A crash that leaves no final.json, while results/crash-<seed> exists (files, not the
        # environment: Ray's workers started before the test set anything).
        if (run_dir.parent.parent / f"crash-{cfg.train.seed}").exists():
            raise RuntimeError("simulated crash")
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        difficulty = np.random.default_rng(0).uniform(0.1, 0.3, N_IMAGES)
        noise = np.random.default_rng([cfg.train.seed, len(cfg.loss.photometric)])
        value = difficulty + SHIFT[cfg.loss.photometric] + noise.normal(0, 0.003)
        value = value + noise.normal(0, 0.002, N_IMAGES)
        rows = [
            {"image": i, "scale": 0, **dict.fromkeys(METRIC_NAMES, v)} for i, v in enumerate(value)
        ]
        store.write_per_image(run_dir, rows)
        metrics = dict.fromkeys(METRIC_NAMES, float(value.mean()))
        final = {"status": "finished", "metrics": metrics, "epochs": 1, "run_id": cfg.run_id()}
        store.write_json_atomic(run_dir / store.FINAL_FILE, final)
        return final


def race_sweep() -> Any:
    return sweep_from_dict(
        {
            "name": "race",
            "base": {"model": {"pretrained": False}, "train": {"seed": 10, "device": "cpu"}},
            "trials": [
                {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
                {"label": "good", "loss.photometric": "l1"},
                {"label": "same", "loss.photometric": "ssim_a"},
            ],
            "seeds": {"start": 2, "max": 4, "spending": "bonferroni"},
            "max_concurrent": 2,
        }
    )


def attempts(results: Path, run_id: str) -> int:
    return len(store.read_jsonl(store.run_path(results, run_id) / ATTEMPTS))


@pytest.mark.slow
def test_a_race_adds_seeds_only_to_open_trials_resumes_and_reports_why_it_stopped(
    ray_local: Any, tmp_path: Path
) -> None:
    sweep = race_sweep()
    trials = expand(sweep)
    by_arm = {arm: [t for t in trials if t.arm == arm] for arm in ("baseline", "good", "same")}
    # First invocation: the third seed (12) crashes every time it starts.
    (tmp_path / "crash-12").touch()
    outcome = run_sweep(sweep, tmp_path, train_fn=stand_in_train, dashboard=False)
    assert outcome.exit_code == 1
    state = race_state(sweep, tmp_path, trials)
    assert state.arms["good"].stop_reason == "better" and state.arms["good"].seeds_run == 2
    assert state.arms["same"].stop_reason == "open"
    assert set(state.next_runs) == {by_arm["baseline"][2].run_id, by_arm["same"][2].run_id}
    # The decided arm got no third seed; nothing finished is trained again.
    assert not store.run_path(tmp_path, by_arm["good"][2].run_id).exists()

    (tmp_path / "crash-12").unlink()
    outcome = run_sweep(sweep, tmp_path, train_fn=stand_in_train, dashboard=False)
    assert outcome.exit_code == 0
    state = race_state(sweep, tmp_path, trials)
    assert state.finished
    assert state.arms["same"].stop_reason in ("no difference", "max seeds")
    n_same = state.arms["same"].seeds_run
    assert n_same >= 3
    for trial in by_arm["baseline"][:2] + by_arm["good"][:2] + by_arm["same"][:2]:
        assert attempts(tmp_path, trial.run_id) == 1  # trained once across both invocations

    index = store.read_sweep_index(tmp_path, "race")
    assert index is not None and index["seeds"]["max"] == 4
    entries = {e["trial_id"]: e for e in index["trials"]}
    assert {e["stop_reason"] for e in entries.values() if e["label"] == "good"} == {"better"}
    assert sum(e["label"] == "same" for e in entries.values()) == n_same

    data = load_sweep_results(tmp_path, "race")
    assert data.race is not None and data.race["start"] == 2
    build_report(tmp_path, out=tmp_path / "report", formats=("csv", "md"))
    sig = (tmp_path / "report" / "race" / "significance.csv").read_text()
    assert "stop_reason" in sig and "better" in sig
    table = pd.read_csv(tmp_path / "report" / "race" / "significance.csv")
    abs_rel = table[table["metric"] == "abs_rel"].set_index("name")
    assert bool(abs_rel.loc["good", "significant"])
    assert not bool(abs_rel.loc["same", "significant"])  # the A/A arm claims nothing
    assert int(abs_rel.loc["same", "seeds_run"]) == n_same
    assert_report_is_the_race(tmp_path, "race", state, "abs_rel")


# ----------------------------------------------------------------------------------------------
# Many arms, raced in this process (the race's own bookkeeping, no Ray), then reported

# optim.lr -> abs_rel shift: 10 arms equal to the baseline (A/A), one better, one worse.
AA_ARMS = 10
AA_LR = [round(1e-4 * (10 + i), 8) for i in range(AA_ARMS)]
MANY_SHIFT = {1e-4: 0.0, 2e-4: -0.02, 3e-4: 0.02} | dict.fromkeys(AA_LR, 0.0)


def many_arms_train(cfg: Any, run_dir: Path) -> None:
    """The engine's result files for one run: per-image abs_rel = image difficulty + the arm's
    shift + a seed effect (sd 0.004) + image noise, the noise drawn from the run id."""
    difficulty = np.random.default_rng(0).uniform(0.1, 0.3, N_IMAGES)
    noise = np.random.default_rng(zlib.crc32(cfg.run_id().encode()))
    value = difficulty + MANY_SHIFT[round(cfg.optim.lr, 8)] + noise.normal(0, 0.004)
    value = value + noise.normal(0, 0.002, N_IMAGES)
    run_dir.mkdir(parents=True)
    store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
    rows = [{"image": i, "scale": 0, **dict.fromkeys(METRIC_NAMES, v)} for i, v in enumerate(value)]
    store.write_per_image(run_dir, rows)
    metrics = dict.fromkeys(METRIC_NAMES, float(value.mean()))
    final = {"status": "finished", "metrics": metrics, "epochs": 1, "run_id": cfg.run_id()}
    store.write_json_atomic(run_dir / store.FINAL_FILE, final)


def many_arms_sweep(spending: str) -> Any:
    trials = [
        {"label": "baseline", "role": "baseline", "optim.lr": 1e-4},
        {"label": "good", "optim.lr": 2e-4},
        {"label": "bad", "optim.lr": 3e-4},
    ] + [{"label": f"aa{i}", "optim.lr": lr} for i, lr in enumerate(AA_LR)]
    return sweep_from_dict(
        {
            "name": "many",
            "base": {"model": {"pretrained": False}, "train": {"seed": 10, "device": "cpu"}},
            "trials": trials,
            "seeds": {"start": 2, "max": 6, "spending": spending},
        }
    )


def assert_report_is_the_race(results: Path, name: str, state: Any, metric: str) -> pd.DataFrame:
    """Every claim the race made is the report's verdict on `metric`, and every claim the
    report makes there is the race's; each row's interval excludes 0 exactly where it claims."""
    build_report(results, out=results / "report", formats=("csv", "md"), figures=False)
    table = pd.read_csv(results / "report" / name / "significance.csv")
    rows = table[table["metric"] == metric].set_index("name")
    arms = {arm: s for arm, s in state.arms.items() if s.stop_reason != "baseline"}
    assert set(rows.index) == set(arms)
    for arm, arm_state in arms.items():
        row = rows.loc[arm]
        race_claim = arm_state.stop_reason if arm_state.stop_reason in ("better", "worse") else None
        report_claim = row["verdict"].split(" ")[0] if row["significant"] else None
        assert race_claim == report_claim, (arm, arm_state, row.to_dict())
        assert (row["stop_reason"], row["seeds_run"]) == (
            arm_state.stop_reason,
            arm_state.seeds_run,
        )
        assert row["n_seeds"] == row["n_seeds_baseline"] <= arm_state.seeds_run
    tested = table[table["p_sequential"].notna()]
    excludes = (tested["ci_low"] > 0) | (tested["ci_high"] < 0)
    assert (excludes == tested["significant"].astype(bool)).all()
    assert ((tested["p_adjusted"] <= tested["alpha"]) == tested["significant"]).all()
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("spending", ["bonferroni", "obrien-fleming"])
def test_a_many_arm_race_and_its_report_agree(tmp_path: Path, spending: str) -> None:
    """12 arms against one baseline (10 A/A, one better, one worse), raced to the end from the
    run folders; the report replays the race and prints its decisions."""
    sweep = many_arms_sweep(spending)
    trials = expand(sweep)
    by_run = {t.run_id: t for t in trials}
    index = SweepIndex(sweep, tmp_path, trials)
    for _ in range(6):
        state = index.race(trials)
        index.write()
        if state.finished:
            break
        for run_id in state.next_runs:
            many_arms_train(by_run[run_id].config, store.run_path(tmp_path, run_id))
    assert state.finished
    claims = {
        a: s.stop_reason for a, s in state.arms.items() if s.stop_reason in ("better", "worse")
    }
    assert claims == {"good": "better", "bad": "worse"}  # and no A/A arm
    assert state == race_state(sweep, tmp_path, trials)  # a rerun replays the same race
    rows = assert_report_is_the_race(tmp_path, "many", state, "abs_rel")
    assert rows.loc["good", "verdict"] == "better (seeds and images)"
    # An unclaimed arm is held to 0.05 / 10 (12 arms, 2 claimed), times its look's share.
    share = look_fractions(2, 6, spending=spending)  # type: ignore[arg-type]
    for arm in (f"aa{i}" for i in range(AA_ARMS)):
        look = int(rows.loc[arm, "n_seeds"]) - 2
        assert rows.loc[arm, "level"] == pytest.approx(1 - 0.05 / 10 * share[look])
    md = (tmp_path / "report" / "many" / "significance.md").read_text()
    assert "95% CI" not in md and "adjusted p (claim if ≤ 0.05)" in md and "| level" in md
    assert "Raced sweep" in md


@pytest.mark.slow
def test_a_race_halted_midway_is_reported_as_far_as_it_got(tmp_path: Path) -> None:
    """Before the first look nothing is judged (and the report says why); midway through a
    later round, the report judges every configuration on the looks the race has made."""
    sweep = many_arms_sweep("obrien-fleming")
    trials = expand(sweep)
    by_run = {t.run_id: t for t in trials}
    index = SweepIndex(sweep, tmp_path, trials)
    state = index.race(trials)
    for run_id in state.next_runs[:-1]:  # the last arm's second seed is missing
        many_arms_train(by_run[run_id].config, store.run_path(tmp_path, run_id))
    state = index.race(trials)
    index.write()
    build_report(tmp_path, out=tmp_path / "report", formats=("csv",), figures=False)
    assert pd.read_csv(tmp_path / "report" / "many" / "significance.csv").empty
    page = (tmp_path / "report" / "many" / "report.html").read_text()
    assert "12 configuration(s) not judged yet" in page

    many_arms_train(
        by_run[state.next_runs[-1]].config, store.run_path(tmp_path, state.next_runs[-1])
    )
    state = index.race(trials)
    assert state.next_runs  # the second look needs a third seed of the open arms
    for run_id in state.next_runs[: len(state.next_runs) // 2]:
        many_arms_train(by_run[run_id].config, store.run_path(tmp_path, run_id))
    state = index.race(trials)
    index.write()
    assert "open" in {s.stop_reason for s in state.arms.values()}
    rows = assert_report_is_the_race(tmp_path, "many", state, "abs_rel")
    assert (rows["n_seeds"] == 2).all()  # only the first look has been made


# ----------------------------------------------------------------------------------------------
# A configuration whose run fails leaves the race; the others go on; nothing finished is dropped


FAULTY_ARMS = [
    {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
    {"label": "good", "loss.photometric": "l1"},
    {"label": "same", "loss.photometric": "ssim_a"},
    {"label": "bad", "loss.photometric": "ssim_m"},
]


def faulty_race(results: Path, fail: str, arms: int = 4) -> tuple[Any, list[Any]]:
    """A race of the stand-in engine (tests/sweep_runner.py) over the first `arms` of
    FAULTY_ARMS, in which the first seed of the arm `fail` fails (a non-finite loss, which Ray's
    retry would only repeat)."""
    from sweep_runner import STAND_IN_FILE

    sweep = sweep_from_dict(
        {
            "name": "faulty",
            "base": {"model": {"pretrained": False}, "train": {"seed": 10, "device": "cpu"}},
            "trials": FAULTY_ARMS[:arms],
            "seeds": {"start": 2, "max": 4, "spending": "bonferroni"},
            "max_concurrent": 2,
            "max_failures": 1,
        }
    )
    trials = expand(sweep)
    streams = {"baseline": 0, "good": 1, "same": 2, "bad": 3}
    plan = {
        t.run_id: {"sleep": 0.1, "stream": streams[t.arm], "shift": -0.05 * (t.arm == "good")}
        for t in trials
    }
    plan[next(t for t in trials if t.arm == fail).run_id]["fail"] = True
    results.mkdir(parents=True, exist_ok=True)
    store.write_json_atomic(results / STAND_IN_FILE, plan)
    return sweep, trials


def index_matches_folders(results: Path, name: str, trials: list[Any]) -> dict[str, Any]:
    """Every status in the index is its run folder's, and no finished run is left out."""
    index = store.read_sweep_index(results, name)
    assert index is not None
    entries = {e["trial_id"]: e for e in index["trials"]}
    for entry in entries.values():
        assert entry["status"] == store.run_status(store.run_path(results, entry["run_id"]))
    finished = {t.trial_id for t in trials if store.read_final(store.run_path(results, t.run_id))}
    assert finished <= set(entries), finished - set(entries)
    return entries


@pytest.mark.slow
def test_a_failed_configuration_leaves_the_race_and_the_others_go_on(
    ray_local: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import sweep_runner
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sweep_runner)  # Ray's workers cannot import tests/
    sweep, trials = faulty_race(tmp_path, fail="bad")
    outcome = run_sweep(sweep, tmp_path, train_fn=sweep_runner.stand_in_train, dashboard=False)
    out = capsys.readouterr().out
    assert outcome.exit_code == 1
    assert "faulty: bad leaves the race: its run bad,seed=10 failed (TrainingError" in out
    assert "race halted" not in out
    kept = [t for t in trials if t.arm != "bad"]
    assert race_state(sweep, tmp_path, kept).finished  # the race went on to its end
    entries = index_matches_folders(tmp_path, "faulty", trials)
    bad = {tid: e for tid, e in entries.items() if e["label"] == "bad"}
    assert {e["stop_reason"] for e in bad.values()} == {"failed"}
    assert {e["status"] for e in bad.values()} == {"failed", "finished"}  # seed 11 finished
    assert entries["good,seed=10"]["stop_reason"] == "better"
    counts = ", ".join(
        f"{n} {s}" for s, n in sorted(Counter(e["status"] for e in entries.values()).items())
    )
    assert f"faulty: {len(entries)} trials: {counts}" in out
    assert "1 failed run will be tried again" in out

    # A failed baseline run halts the race: no configuration can be judged without it.
    halted = tmp_path / "halted"
    sweep, trials = faulty_race(halted, fail="baseline", arms=2)
    outcome = run_sweep(sweep, halted, train_fn=sweep_runner.stand_in_train, dashboard=False)
    out = capsys.readouterr().out
    assert outcome.exit_code == 1
    assert "race halted: the baseline's run baseline,seed=10 failed" in out
    assert "race round" in out and out.count("race round") == 1
    entries = index_matches_folders(halted, "faulty", trials)
    assert {e["stop_reason"] for e in entries.values() if e["label"] != "baseline"} == {"open"}


def test_the_index_keeps_a_finished_seed_while_an_earlier_one_is_unfinished() -> None:
    from depthcore.racing import ArmState, RaceState
    from depthcore.trials import raced_trials

    trials = expand(race_sweep())
    ids = {(t.arm, t.seed): t.run_id for t in trials}
    # Look 0 (2 seeds): the baseline's seed 10 finished and 11 not; `same`'s 10 failed and
    # its 11 finished; `good` decided already.
    state = RaceState(
        {
            "baseline": ArmState(1, "baseline"),
            "good": ArmState(2, "better", 0),
            "same": ArmState(1, "open"),
        },
        [ids["baseline", 11], ids["same", 10]],
    )
    listed = {(t.arm, t.seed) for t in raced_trials(trials, state)}
    assert ("same", 11) in listed  # finished: never dropped from the index
    assert listed == {(a, s) for a in ("baseline", "good", "same") for s in (10, 11)}
