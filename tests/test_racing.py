"""The race's bookkeeping (depthcore.racing) with a scripted decision rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from depthcore.racing import ArmState, SeedPlan, measure_looks, race, run_bounds

PLAN = SeedPlan(start=2, max=4)
ARMS = {a: [f"{a}{s}" for s in range(PLAN.max)] for a in ("base", "good", "same")}


def scores_of(finished: set[str]):
    return lambda run_id: np.full(5, 0.1) if run_id in finished else None


def measure(base: np.ndarray, cand: np.ndarray) -> tuple[float, int]:
    """The candidate's first value ('good' arms carry 0.2, others 0.1) and its seeds."""
    assert base.shape == cand.shape
    return round(float(cand[0, 0]), 3), len(cand)


def scripted(verdicts: dict[tuple[float, int], str], plan: SeedPlan = PLAN):
    """Decide each sampling arm by (its value, look); arms no longer sampling stay as they are."""

    def decide(
        histories: Mapping[str, Sequence[tuple[float, int]]],
        sampling: Sequence[str],
        look: int,
        n_looks: int,
    ) -> dict[str, str]:
        assert n_looks == plan.looks and set(sampling) <= set(histories)
        for arm in sampling:
            assert len(histories[arm]) == look + 1 and histories[arm][-1][1] == plan.start + look
        return {a: verdicts.get((histories[a][-1][0], look), "open") for a in sampling}

    return decide


def test_first_round_asks_for_start_seeds_of_every_arm_baseline_first() -> None:
    state = race(ARMS, "base", scores_of(set()), PLAN, measure, scripted({}))
    assert state.next_runs == ["base0", "base1", "good0", "good1", "same0", "same1"]
    assert state.arms["good"] == ArmState(0, "open")


def good_scores(finished: set[str]):
    def scores(run_id: str) -> np.ndarray | None:
        value = 0.2 if run_id.startswith("good") else 0.1
        return np.full(5, value) if run_id in finished else None

    return scores


def test_decided_arms_get_no_more_seeds_and_the_baseline_follows_open_ones() -> None:
    finished = {f"{a}{s}" for a in ARMS for s in range(2)}
    state = race(ARMS, "base", good_scores(finished), PLAN, measure, scripted({(0.2, 0): "better"}))
    assert state.arms["good"] == ArmState(2, "better", 0, measured=1)
    assert state.next_runs == ["base2", "same2"]  # one more seed for the open arm and the baseline
    assert state.arms["same"] == ArmState(2, "open", None, measured=1)


def test_an_arm_open_at_the_last_look_stops_at_max_and_the_race_is_finished() -> None:
    finished = {r for runs in ARMS.values() for r in runs}
    state = race(ARMS, "base", scores_of(finished), PLAN, measure, scripted({}))
    assert state.finished and state.next_runs == []
    assert state.arms["same"] == ArmState(4, "max seeds", None, measured=3)
    assert state.arms["base"] == ArmState(4, "baseline")


def test_replay_is_deterministic_and_a_larger_max_continues_where_it_stopped() -> None:
    finished = {r for runs in ARMS.values() for r in runs}
    bigger = SeedPlan(start=2, max=6)
    arms = {a: [f"{a}{s}" for s in range(6)] for a in ARMS}
    state = race(arms, "base", scores_of(finished), bigger, measure, scripted({}, bigger))
    assert state.next_runs == ["base4", "good4", "same4"]
    assert state == race(arms, "base", scores_of(finished), bigger, measure, scripted({}, bigger))


def test_all_decided_early_stops_the_baseline_too() -> None:
    finished = {f"{a}{s}" for a in ARMS for s in range(2)}
    state = race(
        ARMS, "base", scores_of(finished), PLAN, measure, scripted({(0.1, 0): "no difference"})
    )
    assert state.finished
    assert state.arms["base"] == ArmState(2, "baseline")
    assert {s.stop_reason for a, s in state.arms.items() if a != "base"} == {"no difference"}


def test_an_arm_stopped_for_futility_is_claimed_when_a_later_look_says_so() -> None:
    """Holm across arms: a later claim on another arm can raise a stopped arm's level."""
    finished = {r for runs in ARMS.values() for r in runs}

    def decide(histories, sampling, look, n_looks):  # type: ignore[no-untyped-def]
        if look == 0:
            return {"good": "no difference", "same": "open"}
        return {"good": "better", "same": "better" if look == 1 else "open"}

    state = race(ARMS, "base", good_scores(finished), PLAN, measure, decide)
    assert state.arms["good"] == ArmState(2, "better", 1, measured=1)  # its seeds do not change
    assert state.arms["same"] == ArmState(3, "better", 1, measured=2)

    def withdraw(histories, sampling, look, n_looks):  # type: ignore[no-untyped-def]
        return {"good": "better" if look == 0 else "no difference", "same": "open"}

    with pytest.raises(ValueError, match="withdrew the claim"):
        race(ARMS, "base", good_scores(finished), PLAN, measure, withdraw)


def test_measure_looks_repeats_the_race_s_looks_on_other_scores() -> None:
    finished = {r for runs in ARMS.values() for r in runs}
    state = race(ARMS, "base", good_scores(finished), PLAN, measure, scripted({(0.2, 1): "better"}))
    looks = measure_looks(ARMS, "base", good_scores(finished), PLAN, state, measure)
    assert looks == {"good": [(0.2, 2), (0.2, 3)], "same": [(0.1, 2), (0.1, 3), (0.1, 4)]}


def test_bounds_and_bad_input() -> None:
    assert run_bounds(3, PLAN) == (6, 12)
    with pytest.raises(ValueError, match="baseline arm"):
        race(ARMS, "nope", scores_of(set()), PLAN, measure, scripted({}))
    with pytest.raises(ValueError, match="start <= max"):
        race(ARMS, "base", scores_of(set()), SeedPlan(1, 4), measure, scripted({}))
    with pytest.raises(ValueError, match="decide returned"):
        finished = {f"{a}{s}" for a in ARMS for s in range(2)}
        race(ARMS, "base", scores_of(finished), PLAN, measure, lambda *_: {"good": "maybe"})
