"""The race's bookkeeping (depthcore.racing) with a scripted decision rule."""

from __future__ import annotations

import numpy as np
import pytest

from depthcore.racing import ArmState, SeedPlan, race, run_bounds

PLAN = SeedPlan(start=2, max=4)
ARMS = {a: [f"{a}{s}" for s in range(PLAN.max)] for a in ("base", "good", "same")}


def scores_of(finished: set[str]):
    return lambda run_id: np.full(5, 0.1) if run_id in finished else None


def scripted(verdicts: dict[tuple[float, int], str]):
    """Decide by (candidate's first value, look): 'good' arms carry 0.2, others 0.1."""

    def decide(base: np.ndarray, cand: np.ndarray, look: int, n_looks: int) -> str:
        assert base.shape == cand.shape and n_looks == PLAN.looks
        return verdicts.get((round(float(cand[0, 0]), 3), look), "open")

    return decide


def test_first_round_asks_for_start_seeds_of_every_arm_baseline_first() -> None:
    state = race(ARMS, "base", scores_of(set()), PLAN, scripted({}))
    assert state.next_runs == ["base0", "base1", "good0", "good1", "same0", "same1"]
    assert state.arms["good"] == ArmState(0, "open")


def test_decided_arms_get_no_more_seeds_and_the_baseline_follows_open_ones() -> None:
    finished = {f"{a}{s}" for a in ARMS for s in range(2)}

    def scores(run_id: str) -> np.ndarray | None:
        value = 0.2 if run_id.startswith("good") else 0.1
        return np.full(5, value) if run_id in finished else None

    state = race(ARMS, "base", scores, PLAN, scripted({(0.2, 0): "better"}))
    assert state.arms["good"] == ArmState(2, "better", 0)
    assert state.next_runs == ["base2", "same2"]  # one more seed for the open arm and the baseline
    assert state.arms["same"] == ArmState(2, "open")


def test_an_arm_open_at_the_last_look_stops_at_max_and_the_race_is_finished() -> None:
    finished = {r for runs in ARMS.values() for r in runs}
    state = race(ARMS, "base", scores_of(finished), PLAN, scripted({}))
    assert state.finished and state.next_runs == []
    assert state.arms["same"] == ArmState(4, "max seeds")
    assert state.arms["base"] == ArmState(4, "baseline")


def test_replay_is_deterministic_and_a_larger_max_continues_where_it_stopped() -> None:
    finished = {r for runs in ARMS.values() for r in runs}
    bigger = SeedPlan(start=2, max=6)
    arms = {a: [f"{a}{s}" for s in range(6)] for a in ARMS}
    state = race(arms, "base", scores_of(finished), bigger, lambda *_: "open")
    assert state.next_runs == ["base4", "good4", "same4"]


def test_all_decided_early_stops_the_baseline_too() -> None:
    finished = {f"{a}{s}" for a in ARMS for s in range(2)}
    state = race(ARMS, "base", scores_of(finished), PLAN, lambda *_: "no difference")
    assert state.finished
    assert state.arms["base"] == ArmState(2, "baseline")
    assert {s.stop_reason for a, s in state.arms.items() if a != "base"} == {"no difference"}


def test_bounds_and_bad_input() -> None:
    assert run_bounds(3, PLAN) == (6, 12)
    with pytest.raises(ValueError, match="baseline arm"):
        race(ARMS, "nope", scores_of(set()), PLAN, scripted({}))
    with pytest.raises(ValueError, match="start <= max"):
        race(ARMS, "base", scores_of(set()), SeedPlan(1, 4), scripted({}))
    with pytest.raises(ValueError, match="decide returned"):
        finished = {f"{a}{s}" for a in ARMS for s in range(2)}
        race(ARMS, "base", scores_of(finished), PLAN, lambda *_: "maybe")
