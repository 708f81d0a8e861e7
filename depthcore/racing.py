"""Adaptive seeds (racing): which runs a sweep with `seeds: {start, max}` trains next.

A pure function of the finished runs: no Ray, no torch, no files. The race is replayed from the
beginning at every call, so a rerun (or a later sweep with a larger `max`) reaches the same
decisions from the same run folders and never trains a run twice.

Rounds: look k (k = 0 .. max - start) compares every still-open arm with the baseline on their
first `start + k` seeds. An arm leaves the race when `decide` gives a verdict; the baseline gets its
next seed while any arm is open. An arm still open after the last look stops at `max` seeds.
The statistical rule (alpha spent over the planned looks) lives in
`depthcore.report.significance`; here it is only called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Why an arm stopped; "open" only mid-race, "baseline" for the reference arm.
DECIDED = ("better", "worse", "no difference")
STOP_REASONS = (*DECIDED, "max seeds", "open", "baseline")

# decide(baseline (seeds, images), candidate (seeds, images), look, n_looks) -> a DECIDED verdict
# or "open". `look` counts from 0; n_looks = max - start + 1.
Decide = Callable[[np.ndarray, np.ndarray, int, int], str]
# scores(run_id) -> the per-image metric of a finished run (images in test order), else None.
Scores = Callable[[str], "np.ndarray | None"]


@dataclass(frozen=True)
class SeedPlan:
    """`seeds: {start, max}` of a sweep file: every arm runs `start` seeds, at most `max`."""

    start: int
    max: int

    @property
    def looks(self) -> int:
        return self.max - self.start + 1


@dataclass(frozen=True)
class ArmState:
    """Where one arm stands: how many of its seeds the race used and why it stopped."""

    seeds_run: int
    stop_reason: str  # one of STOP_REASONS
    look: int | None = None  # the look that decided it (None: not decided)


@dataclass(frozen=True)
class RaceState:
    """The replayed race: each arm's state and the runs to train before the next look."""

    arms: dict[str, ArmState]
    next_runs: list[str]  # run ids, baseline first, in arm then seed order

    @property
    def finished(self) -> bool:
        return not self.next_runs


def race(
    arms: Mapping[str, Sequence[str]],
    baseline: str,
    scores: Scores,
    plan: SeedPlan,
    decide: Decide,
) -> RaceState:
    """Replay the race over the finished runs and say what to train next.

    Args:
        arms: arm name -> its run ids in seed order (at least `plan.max` of them); includes the
            baseline arm.
        baseline: the name of the baseline arm.
        scores: per-image metric of a finished run, None when it has not finished.
        plan: start and max seeds.
        decide: the sequential test (see `Decide`).
    """
    _check_arms(arms, baseline, plan)
    candidates = [a for a in arms if a != baseline]
    states: dict[str, ArmState] = {}
    open_arms = list(candidates)
    for look in range(plan.looks):
        n = plan.start + look
        missing = [r for a in [baseline, *open_arms] for r in arms[a][:n] if scores(r) is None]
        if missing:
            done = {a: sum(scores(r) is not None for r in arms[a][:n]) for a in arms}
            return _midway(states, open_arms, baseline, done, missing)
        base = _matrix(arms[baseline][:n], scores)
        for arm in list(open_arms):
            verdict = decide(base, _matrix(arms[arm][:n], scores), look, plan.looks)
            if verdict in DECIDED:
                states[arm] = ArmState(n, verdict, look)
                open_arms.remove(arm)
            elif verdict != "open":
                raise ValueError(f"decide returned {verdict!r}; expected one of {DECIDED} or open")
        if not open_arms:
            return _done(states, candidates, baseline, n)
    for arm in open_arms:
        states[arm] = ArmState(plan.max, "max seeds")
    return _done(states, candidates, baseline, plan.max)


def run_bounds(n_arms: int, plan: SeedPlan) -> tuple[int, int]:
    """(fewest, most) runs of a race over `n_arms` arms, the baseline included."""
    return n_arms * plan.start, n_arms * plan.max


def _check_arms(arms: Mapping[str, Sequence[str]], baseline: str, plan: SeedPlan) -> None:
    if baseline not in arms:
        raise ValueError(f"baseline arm {baseline!r} is not among the arms {sorted(arms)}")
    if plan.start < 2 or plan.max < plan.start:
        raise ValueError(f"seeds: need 2 <= start <= max, got start={plan.start} max={plan.max}")
    short = [a for a, runs in arms.items() if len(runs) < plan.max]
    if short:
        raise ValueError(f"arms {short} have fewer than max={plan.max} runs")


def _matrix(run_ids: Sequence[str], scores: Scores) -> np.ndarray:
    rows = [np.asarray(scores(r), dtype=float) for r in run_ids]
    widths = {row.shape for row in rows}
    if len(widths) != 1:
        raise ValueError(f"runs {list(run_ids)} have per-image results of different sizes {widths}")
    return np.stack(rows)


def _midway(
    states: dict[str, ArmState],
    open_arms: list[str],
    baseline: str,
    done: Mapping[str, int],
    missing: list[str],
) -> RaceState:
    arms = dict(states)
    for arm in open_arms:
        arms[arm] = ArmState(done[arm], "open")
    arms[baseline] = ArmState(done[baseline], "baseline")
    return RaceState(arms, list(dict.fromkeys(missing)))


def _done(states: dict[str, ArmState], candidates: list[str], baseline: str, n: int) -> RaceState:
    arms = {a: states[a] for a in candidates}
    arms[baseline] = ArmState(n, "baseline")
    return RaceState(arms, [])
