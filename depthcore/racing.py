"""Adaptive seeds (racing): which runs a sweep with `seeds: {start, max}` trains next.

A pure function of the finished runs: no Ray, no torch, no files. The race is replayed from the
beginning at every call, so a rerun (or a later sweep with a larger `max`) reaches the same
decisions from the same run folders and never trains a run twice.

Rounds: look k (k = 0 .. max - start) measures every arm still sampling against the baseline on
their first `start + k` seeds, then `decide` judges the whole family at once (the verdict on one
arm depends on the others: Holm across arms, docs/statistics.md). An arm stops sampling when it
is claimed (better / worse) or stopped for futility (no difference); the baseline gets its next
seed while any arm samples. An arm stopped for futility keeps its place in the family, so a
later look, where other arms' claims free error rate, can still claim it (its stop reason then
changes, its seeds do not). An arm still sampling after the last look stops at `max` seeds.
The statistics live in `depthcore.report.significance`; here they are only called, and the
report measures other metrics at the same looks with `measure_looks`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Why an arm stopped; "open" only mid-race, "baseline" for the reference arm.
CLAIMS = ("better", "worse")
DECIDED = (*CLAIMS, "no difference")
STOP_REASONS = (*DECIDED, "max seeds", "open", "baseline")

# measure(baseline (seeds, images), candidate (seeds, images)) -> the arm's statistic at a look.
Measure = Callable[[np.ndarray, np.ndarray], Any]
# decide(histories, sampling, look, n_looks) -> a verdict (DECIDED or "open") for every candidate
# arm. histories: arm -> its measurements at looks 0, 1, ... (an arm that stopped sampling keeps
# its last ones); sampling: the arms measured at this look; look counts from 0.
Decide = Callable[[Mapping[str, Sequence[Any]], Sequence[str], int, int], Mapping[str, str]]
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
    """Where one arm stands: how many of its seeds the race used and why it stopped.

    measured: the looks it was measured at (looks 0 .. measured - 1, i.e. start .. start +
    measured - 1 seeds): what the report judges it on.
    """

    seeds_run: int
    stop_reason: str  # one of STOP_REASONS
    look: int | None = None  # the look that decided it (None: not decided)
    measured: int = 0


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
    measure: Measure,
    decide: Decide,
) -> RaceState:
    """Replay the race over the finished runs and say what to train next.

    Args:
        arms: arm name -> its run ids in seed order (at least `plan.max` of them); includes the
            baseline arm.
        baseline: the name of the baseline arm.
        scores: per-image metric of a finished run, None when it has not finished.
        plan: start and max seeds.
        measure, decide: the statistics (see `Measure`, `Decide`).
    """
    _check_arms(arms, baseline, plan)
    candidates = [a for a in arms if a != baseline]
    history: dict[str, list[Any]] = {a: [] for a in candidates}
    states: dict[str, ArmState] = {}
    sampling = list(candidates)
    for look in range(plan.looks):
        n = plan.start + look
        missing = [r for a in [baseline, *sampling] for r in arms[a][:n] if scores(r) is None]
        if missing:
            done = {a: sum(scores(r) is not None for r in arms[a][:n]) for a in arms}
            return _midway(states, sampling, baseline, done, missing, history)
        base = _matrix(arms[baseline][:n], scores)
        for arm in sampling:
            history[arm].append(measure(base, _matrix(arms[arm][:n], scores)))
        verdicts = decide(history, list(sampling), look, plan.looks)
        sampling = _apply(verdicts, states, sampling, history, n, look)
        if not sampling:
            return _done(states, candidates, baseline, n)
    for arm in sampling:
        states[arm] = ArmState(plan.max, "max seeds", None, len(history[arm]))
    return _done(states, candidates, baseline, plan.max)


def _apply(
    verdicts: Mapping[str, str],
    states: dict[str, ArmState],
    sampling: list[str],
    history: Mapping[str, list[Any]],
    n: int,
    look: int,
) -> list[str]:
    """Record this look's verdicts; returns the arms that keep sampling."""
    for arm, verdict in verdicts.items():
        if verdict not in (*DECIDED, "open"):
            raise ValueError(f"decide returned {verdict!r}; expected one of {DECIDED} or open")
        old = states[arm].stop_reason if arm in states else None
        if arm in sampling and verdict in DECIDED:
            states[arm] = ArmState(n, verdict, look, len(history[arm]))
        elif old in CLAIMS and verdict != old:
            raise ValueError(f"decide withdrew the claim {old!r} on arm {arm!r}")
        elif old == "no difference" and verdict in CLAIMS:
            # Stopped for futility, claimed now that other arms' claims raised its Holm level.
            states[arm] = ArmState(states[arm].seeds_run, verdict, look, len(history[arm]))
    return [a for a in sampling if a not in states]


def measure_looks(
    arms: Mapping[str, Sequence[str]],
    baseline: str,
    scores: Scores,
    plan: SeedPlan,
    state: RaceState,
    measure: Measure,
) -> dict[str, list[Any]]:
    """Each candidate arm measured at the looks the race measured it at (`ArmState.measured`),
    with `scores` (e.g. another metric of the same runs): the report judges every metric of a
    raced sweep on the race's own seeds."""
    out: dict[str, list[Any]] = {}
    for arm, arm_state in state.arms.items():
        if arm == baseline:
            continue
        seeds = range(plan.start, plan.start + arm_state.measured)
        out[arm] = [
            measure(_matrix(arms[baseline][:n], scores), _matrix(arms[arm][:n], scores))
            for n in seeds
        ]
    return out


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
    rows = []
    for run_id in run_ids:
        row = scores(run_id)
        if row is None:
            raise ValueError(f"run {run_id} has no per-image results")
        rows.append(np.asarray(row, dtype=float))
    widths = {row.shape for row in rows}
    if len(widths) != 1:
        raise ValueError(f"runs {list(run_ids)} have per-image results of different sizes {widths}")
    return np.stack(rows)


def _midway(
    states: dict[str, ArmState],
    sampling: list[str],
    baseline: str,
    done: Mapping[str, int],
    missing: list[str],
    history: Mapping[str, list[Any]],
) -> RaceState:
    arms = dict(states)
    for arm in sampling:
        arms[arm] = ArmState(done[arm], "open", None, len(history[arm]))
    arms[baseline] = ArmState(done[baseline], "baseline")
    return RaceState(arms, list(dict.fromkeys(missing)))


def _done(states: dict[str, ArmState], candidates: list[str], baseline: str, n: int) -> RaceState:
    arms = {a: states[a] for a in candidates}
    arms[baseline] = ArmState(n, "baseline")
    return RaceState(arms, [])
