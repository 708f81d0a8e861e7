"""Is a configuration's difference to the baseline real? Seed-aware verdicts (docs/statistics.md).

A per-image metric of run (arm a, seed s) on image i is modelled as
m[a, s, i] = mu_i + delta_a + u[a, s] + e[a, s, i]: image difficulty (shared, cancels because the
arms are paired by image), the configuration's effect, a run-level seed effect and a residual.
`compare` averages each run over the shared images and puts a Welch t interval on the difference
of the arm means of those seed-level means, so the interval covers seed and test-image variance.
With fewer than 2 seeds in an arm the training variance cannot be estimated: the interval is the
image-only one and no difference is ever claimed.

Many configurations are one family per metric: each has a sequential p-value over its looks
(one look without racing) and Holm across configurations gives the verdicts (`family_verdicts`).
The race (`race_rules`, `race_verdicts`) applies that same judgement after every round of seeds,
and the report replays the race from the run folders, so the two agree (docs/statistics.md).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from scipy import stats

from depthcore import store
from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.racing import ArmState, SeedPlan, measure_looks, race
from depthcore.report.loading import BASELINE, SweepData

LEVEL = 0.95
# seeds_needed's answer for a difference of 0 (no finite number of seeds resolves it).
SEEDS_LIMIT = 10_000
WELCH = "welch-t on seed means"
IMAGES_ONLY = "images only: training variance untested"
ZERO_SPREAD = "no seed spread: difference exact"

BETTER = "better (seeds and images)"
WORSE = "worse (seeds and images)"
NO_DIFFERENCE = "no difference shown"
ONE_SEED = "1 seed: training variance untested"

# Racing outcomes of `race_decision`.
RACE_BETTER: Final = "better"
RACE_WORSE: Final = "worse"
RACE_NO_DIFFERENCE: Final = "no difference"
RACE_MAX: Final = "no difference shown (max seeds)"
RACE_OPEN: Final = "open"
RaceOutcome = Literal["better", "worse", "no difference", "no difference shown (max seeds)", "open"]
# Futility's optimism: the far end of the difference's 80% interval (docs/statistics.md).
FUTILITY_QUANTILE = 0.9
Spending = Literal["bonferroni", "obrien-fleming"]

COLUMNS = (
    "config",
    "name",
    "metric",
    "n_images",
    "n_seeds",
    "n_seeds_baseline",
    "baseline",
    "value",
    "diff",
    "ci_low",
    "ci_high",
    "level",
    "p_value",
    "p_sequential",
    "p_adjusted",
    "alpha",
    "holm_level",
    "p_improve",
    "seed_sd",
    "seeds_needed",
    "method",
    "improved",
    "significant_unadjusted",
    "significant",
    "verdict",
    "seeds_run",
    "stop_reason",
)


@dataclass(frozen=True)
class Comparison:
    """Candidate against baseline on one metric.

    diff: candidate mean - baseline mean (over the shared images and all seeds of each arm).
    ci_low, ci_high: the `level` interval of diff (seed and image variance; image-only with 1 seed).
    p_value: two-sided, from the same t (NaN with fewer than 2 seeds in an arm: no test).
    p_improve: P(a random candidate seed beats a random baseline seed), ties count 1/2.
    significant: the interval excludes 0 and both arms have 2+ seeds.
    seed_sd: pooled sd of the seed-level means (NaN with fewer than 2 seeds in both arms).
    n_dropped: image columns dropped because some run had NaN there.
    se, df: standard error of diff and the t degrees of freedom behind the interval.
    """

    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    p_improve: float
    significant: bool
    improved: bool
    method: str
    n_seeds: int
    n_seeds_baseline: int
    n_images: int
    n_dropped: int
    seed_sd: float
    se: float
    df: float
    level: float


def compare(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    lower_is_better: bool,
    level: float = LEVEL,
    seed: int = 0,
) -> Comparison:
    """Compare two arms of per-image metrics, shaped (seeds, images), columns paired by image.

    `seed` is kept for a stable signature: the t method draws no random numbers.
    Raises ValueError for arrays that are not 2-D, differ in image count, have no seed, or leave
    no image without NaN.
    """
    del seed
    base, cand, dropped = _paired(baseline, candidate)
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    means_b, means_c = base.mean(axis=1), cand.mean(axis=1)
    diff = float(means_c.mean() - means_b.mean())
    improved = diff < 0 if lower_is_better else diff > 0
    p_imp = p_improve(means_b, means_c, lower_is_better=lower_is_better)
    shared = {
        "diff": diff,
        "p_improve": p_imp,
        "improved": bool(improved),
        "n_seeds": len(cand),
        "n_seeds_baseline": len(base),
        "n_images": base.shape[1],
        "n_dropped": dropped,
        "seed_sd": pooled_sd(means_b, means_c),
        "level": level,
    }
    if min(len(base), len(cand)) < 2:
        low, high, se, df = _images_only(base, cand, level)
        return Comparison(
            ci_low=low, ci_high=high, p_value=math.nan, significant=False, method=IMAGES_ONLY,
            se=se, df=df, **shared,
        )  # fmt: skip
    low, high, p_value, se, df, method = _welch(means_b, means_c, level)
    return Comparison(
        ci_low=low, ci_high=high, p_value=p_value, significant=bool(p_value < 1 - level),
        method=method, se=se, df=df, **shared,
    )  # fmt: skip


def _paired(baseline: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    base = np.asarray(baseline, dtype=np.float64)
    cand = np.asarray(candidate, dtype=np.float64)
    if base.ndim != 2 or cand.ndim != 2 or base.shape[1] != cand.shape[1]:
        raise ValueError(
            f"baseline {base.shape} and candidate {cand.shape} must be 2-D (seeds, images) "
            "with the same number of images, paired by column"
        )
    if not len(base) or not len(cand):
        raise ValueError(f"each arm needs a seed: baseline {base.shape}, candidate {cand.shape}")
    # An image some run could not score is dropped from every run, so the arms stay paired.
    keep = np.isfinite(base).all(axis=0) & np.isfinite(cand).all(axis=0)
    if not keep.any():
        raise ValueError(f"no image is finite in every run ({base.shape[1]} images)")
    return base[:, keep], cand[:, keep], int((~keep).sum())


def _welch(
    means_b: np.ndarray, means_c: np.ndarray, level: float
) -> tuple[float, float, float, float, float, str]:
    """Interval, two-sided p, se, Welch-Satterthwaite df and method of mean(c) - mean(b)."""
    diff, se, df, p_value = (float(v) for v in welch_t(means_b, means_c))
    if se == 0:
        # Identical seeds within each arm (training ignores the seed): the difference is exact.
        return diff, diff, p_value, 0.0, math.inf, ZERO_SPREAD
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    return diff - half, diff + half, p_value, se, df, WELCH


def welch_t(
    means_b: np.ndarray, means_c: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """diff, se, Welch-Satterthwaite df and two-sided p of mean(c) - mean(b) over the last axis
    (seed means, 2+ per arm); leading axes are separate comparisons (the simulations batch them).
    With no spread in either arm the difference is exact: se 0, df inf, p 1 if it is 0, else 0."""
    n_b, n_c = means_b.shape[-1], means_c.shape[-1]
    diff = means_c.mean(axis=-1) - means_b.mean(axis=-1)
    var_b = means_b.var(axis=-1, ddof=1) / n_b
    var_c = means_c.var(axis=-1, ddof=1) / n_c
    se = np.sqrt(var_b + var_c)
    zero = se == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (var_b + var_c) ** 2 / (var_b**2 / (n_b - 1) + var_c**2 / (n_c - 1))
        p_value = 2 * stats.t.sf(np.abs(diff) / se, df)
    df = np.where(zero, np.inf, df)
    p_value = np.where(zero, (diff == 0).astype(float), p_value)
    return diff, se, df, p_value


def _images_only(
    base: np.ndarray, cand: np.ndarray, level: float
) -> tuple[float, float, float, float]:
    """t interval over per-image differences of the seed-averaged arms (test-image variance)."""
    diffs = cand.mean(axis=0) - base.mean(axis=0)
    if len(diffs) < 2:
        return -math.inf, math.inf, math.inf, 0.0
    se = float(diffs.std(ddof=1)) / math.sqrt(len(diffs))
    half = float(stats.t.ppf((1 + level) / 2, len(diffs) - 1)) * se
    mean = float(diffs.mean())
    return mean - half, mean + half, se, float(len(diffs) - 1)


def p_improve(means_b: np.ndarray, means_c: np.ndarray, *, lower_is_better: bool) -> float:
    """P(a random candidate seed beats a random baseline seed) over all seed pairs, ties 1/2
    (Bouthillier et al., MLSys 2021). Inputs: one seed-level mean per run."""
    delta = np.asarray(means_c)[:, None] - np.asarray(means_b)[None, :]
    wins = delta < 0 if lower_is_better else delta > 0
    return float(np.mean(wins + 0.5 * (delta == 0)))


def pooled_sd(means_b: np.ndarray, means_c: np.ndarray) -> float:
    """Pooled sd of the seed-level means of both arms; NaN when neither arm has 2 seeds."""
    dof = max(len(means_b) - 1, 0) + max(len(means_c) - 1, 0)
    if dof == 0:
        return math.nan
    squares = ((means_b - means_b.mean()) ** 2).sum() + ((means_c - means_c.mean()) ** 2).sum()
    return float(math.sqrt(squares / dof))


def holm(p_values: np.ndarray | list[float], alpha: float) -> np.ndarray:
    """Holm-Bonferroni step-down: which hypotheses are rejected at family-wise level `alpha`.

    NaN p-values (untested, e.g. one seed) are never rejected and do not enlarge the family.
    """
    return holm_steps(np.asarray(p_values, dtype=np.float64).ravel(), alpha)[0]


def holm_steps(p_values: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Holm over the last axis (leading axes: separate families): (rejected, adjusted p, level).

    adjusted: Holm's adjusted p-values (rejected exactly where adjusted <= alpha); level: the
    error rate each hypothesis was compared with, alpha / (m - i) at its step i for a rejected
    one, and for the others the step where the procedure stopped (every unrejected p-value is
    above it). NaN p-values are untested: never rejected, not counted in m, NaN out.
    """
    p = np.asarray(p_values, dtype=np.float64)
    tested = np.isfinite(p)
    m = tested.sum(axis=-1, keepdims=True)
    order = np.argsort(np.where(tested, p, np.inf), axis=-1, kind="stable")
    ranked = np.take_along_axis(np.where(tested, p, np.inf), order, axis=-1)
    left = np.maximum(m - np.arange(p.shape[-1]), 1)  # hypotheses not yet rejected at each step
    passed = np.logical_and.accumulate(ranked <= alpha / left, axis=-1)
    stopped = np.maximum(m - passed.sum(axis=-1, keepdims=True), 1)
    ranked_level = np.where(passed, alpha / left, alpha / stopped)
    ranked_adjusted = np.maximum.accumulate(np.minimum(left * ranked, 1.0), axis=-1)
    out = [np.empty_like(p, dtype=bool), np.empty_like(p), np.empty_like(p)]
    for target, ranked_values in zip(out, (passed, ranked_adjusted, ranked_level), strict=True):
        np.put_along_axis(target, order, ranked_values, axis=-1)
    rejected, adjusted, level = out
    return rejected & tested, np.where(tested, adjusted, np.nan), np.where(tested, level, np.nan)


def seeds_needed(
    diff: float,
    seed_sd: float,
    *,
    level: float = LEVEL,
    power: float = 0.8,
    limit: int = SEEDS_LIMIT,
) -> int:
    """Seeds per arm for a two-sided `level` test to detect `diff` with `power`, given the sd of
    the seed-level means. Normal approximation 2 (z_a/2 + z_b)^2 sd^2 / d^2, then refined with t
    quantiles at the resulting degrees of freedom (2n - 2). Returns `limit` when diff is 0.

    Raises ValueError for a NaN or negative seed_sd (one seed per arm measures no spread).
    """
    if not math.isfinite(seed_sd) or seed_sd < 0:
        raise ValueError(f"seed_sd must be a finite number >= 0, got {seed_sd}")
    if seed_sd == 0:
        return 2
    if diff == 0 or not math.isfinite(diff):
        return limit
    ratio = 2 * (seed_sd / diff) ** 2
    n = ratio * (stats.norm.ppf((1 + level) / 2) + stats.norm.ppf(power)) ** 2
    for _ in range(20):
        df = max(2 * math.ceil(n) - 2, 1)
        quantiles = stats.t.ppf((1 + level) / 2, df) + stats.t.ppf(power, df)
        new = ratio * quantiles**2
        if math.ceil(new) == math.ceil(n):
            break
        n = new
    return int(min(max(math.ceil(n), 2), limit))


# ----------------------------------------------------------------------------------------------
# Racing: seeds added one per round from `start` to `max_seeds`; K = max_seeds - start + 1 looks.
# Every configuration of the sweep (an arm) races against the same baseline, and the family of
# arms is judged together: an arm's sequential p-value (its looks' p-values, each divided by its
# look's share of the error rate, the smallest of them) enters Holm across the arms. The report
# applies the same `family_verdicts` to the same looks, so a race's claims are the report's.


def look_levels(
    start: int, max_seeds: int, level: float = LEVEL, spending: Spending = "bonferroni"
) -> np.ndarray:
    """Per-look error rates alpha_k (k = 1..K) that sum to 1 - level.

    Validity does not depend on how the looks' statistics correlate: the race claims a difference
    only where one look's test rejects at its alpha_k, and the union bound caps the chance of any
    such claim under no difference at sum(alpha_k) = 1 - level. "bonferroni" splits it equally;
    "obrien-fleming" uses the Lan-DeMets O'Brien-Fleming spending increments (information
    fraction n/max_seeds), which keep most of it for the last looks, where t has degrees of freedom.
    """
    if not 2 <= start <= max_seeds:
        raise ValueError(f"racing needs 2 <= start <= max, got start={start}, max={max_seeds}")
    alpha = 1 - level
    looks = max_seeds - start + 1
    if spending == "bonferroni":
        return np.full(looks, alpha / looks)
    if spending != "obrien-fleming":
        raise ValueError(f"unknown spending {spending!r}; use 'bonferroni' or 'obrien-fleming'")
    fraction = np.arange(start, max_seeds + 1) / max_seeds
    spent = 2 * stats.norm.sf(stats.norm.isf(alpha / 2) / np.sqrt(fraction))
    return np.diff(spent, prepend=0.0)


def look_fractions(
    start: int, max_seeds: int, level: float = LEVEL, spending: Spending = "bonferroni"
) -> np.ndarray:
    """Each look's share f_k of the error rate (they sum to 1): look_levels / (1 - level). An
    arm held to error rate a (its Holm step) is tested at look k at a * f_k."""
    return look_levels(start, max_seeds, level, spending) / (1 - level)


def race_level(
    n_seeds: int,
    start: int,
    max_seeds: int,
    level: float = LEVEL,
    spending: Spending = "bonferroni",
) -> float:
    """The confidence level of the look with `n_seeds` seeds for a race of one arm (a family of
    one: Holm's first step is the whole error rate). With more arms see `family_verdicts`."""
    if not start <= n_seeds <= max_seeds:
        raise ValueError(f"{n_seeds} seeds is outside the race's looks {start}..{max_seeds}")
    return float(1 - look_levels(start, max_seeds, level, spending)[n_seeds - start])


@dataclass(frozen=True)
class RaceRule:
    """A sweep's `seeds: {start, max, level, spending, margin}` and its metric's direction."""

    start: int
    max_seeds: int
    lower_is_better: bool
    level: float = LEVEL
    spending: Spending = "bonferroni"
    margin: float | None = None

    @property
    def looks(self) -> int:
        return self.max_seeds - self.start + 1

    @property
    def alpha(self) -> float:
        return 1 - self.level

    def fractions(self) -> np.ndarray:
        return look_fractions(self.start, self.max_seeds, self.level, self.spending)


@dataclass(frozen=True)
class FamilyVerdicts:
    """Verdicts on a family of arms (arrays over arms; leading axes: separate families).

    claimed: Holm rejects the arm's sequential p-value at the family's error rate.
    improved: the direction at the look the arm is judged at (`look`, -1 where untested).
    p_sequential: min over the arm's looks of p_k / f_k (capped at 1): under no difference
        P(p_sequential <= a) <= sum_k a f_k = a, whatever the looks' correlation and whenever
        the arm stopped, so it is a valid p-value for Holm.
    p_adjusted: Holm's adjusted p-value of p_sequential (claimed exactly where <= alpha).
    holm_level: the error rate a the arm was held to (its Holm step); its look's test ran at
        a * f_look, and the interval at that level excludes 0 exactly where the arm is claimed.
    next_level: (..., 1) the Holm level an unclaimed arm is held to now, alpha / (m - claims).
    """

    claimed: np.ndarray
    improved: np.ndarray
    look: np.ndarray
    p_sequential: np.ndarray
    p_adjusted: np.ndarray
    holm_level: np.ndarray
    next_level: np.ndarray


def family_verdicts(
    p_values: np.ndarray,
    diffs: np.ndarray,
    fractions: np.ndarray,
    alpha: float,
    *,
    lower_is_better: bool,
) -> FamilyVerdicts:
    """Judge a family of arms from their looks: Holm over the arms' sequential p-values.

    Args:
        p_values, diffs: (..., arms, looks) two-sided p and difference of each arm at each look
            (look k uses the first start + k seeds of the arm and of the baseline); NaN where the
            arm was not measured or not tested (1 seed).
        fractions: each look's share of the error rate (`look_fractions`; [1.] without racing).
        alpha: the family-wise error rate (1 - level).
    """
    looks = p_values.shape[-1]
    ratio = p_values / np.asarray(fractions, dtype=np.float64)[:looks]
    key = np.where(np.isfinite(ratio), ratio, np.inf)
    # The latest look among ties: the verdict rests on the most seeds that give it.
    last = looks - 1 - np.argmin(key[..., ::-1], axis=-1)
    p_seq = np.take_along_axis(key, last[..., None], axis=-1)[..., 0]
    tested = np.isfinite(p_seq)
    p_seq = np.where(tested, np.minimum(p_seq, 1.0), np.nan)
    diff = np.take_along_axis(diffs, last[..., None], axis=-1)[..., 0]
    improved = diff < 0 if lower_is_better else diff > 0
    claimed, adjusted, holm_level = holm_steps(p_seq, alpha)
    remaining = tested.sum(axis=-1, keepdims=True) - claimed.sum(axis=-1, keepdims=True)
    return FamilyVerdicts(
        claimed=claimed,
        improved=improved & tested,
        look=np.where(tested, last, -1),
        p_sequential=p_seq,
        p_adjusted=adjusted,
        holm_level=holm_level,
        next_level=alpha / np.maximum(remaining, 1),
    )


@dataclass(frozen=True)
class LookStats:
    """Every arm at the current look (arrays over arms; leading axes allowed): what the stopping
    rules read besides the p-values."""

    diff: np.ndarray
    se: np.ndarray
    df: np.ndarray
    welch: np.ndarray  # a t test on 2+ seeds per side with seed spread
    n_seeds: np.ndarray
    n_seeds_baseline: np.ndarray

    @classmethod
    def of(cls, results: Sequence[Comparison]) -> LookStats:
        def column(key: str) -> np.ndarray:
            return np.array([getattr(r, key) for r in results], dtype=np.float64)

        return cls(
            diff=column("diff"),
            se=column("se"),
            df=column("df"),
            welch=np.array([r.method == WELCH for r in results], dtype=bool),
            n_seeds=column("n_seeds"),
            n_seeds_baseline=column("n_seeds_baseline"),
        )


# race_verdicts' codes, and what they mean to `race_decision` and to `depthcore.racing`.
OPEN, BETTER_CODE, WORSE_CODE, NO_DIFFERENCE_CODE, MAX_CODE, STOPPED = range(6)
OUTCOMES: Final = (RACE_OPEN, RACE_BETTER, RACE_WORSE, RACE_NO_DIFFERENCE, RACE_MAX, "stopped")
RACE_WORDS: Final = ("open", "better", "worse", "no difference", "open", "no difference")


def race_verdicts(
    p_values: np.ndarray,
    diffs: np.ndarray,
    current: LookStats,
    sampling: np.ndarray,
    rule: RaceRule,
) -> tuple[np.ndarray, FamilyVerdicts]:
    """The race's decision after a look: a code (OUTCOMES) per arm, and the family's verdicts.

    Args:
        p_values, diffs: (..., arms, looks so far) as for `family_verdicts`; the last look is the
            current one.
        current: the current look of every arm (rows of arms no longer sampling are not read).
        sampling: (..., arms) the arms measured at this look.
    Rules, in order: claimed by `family_verdicts` -> better / worse (an arm that stopped for
    futility too: Holm's level rises as other arms are claimed); an arm sampling at the last look
    -> max seeds; no difference (`_no_difference`) -> stops; otherwise open.
    """
    look = p_values.shape[-1] - 1
    if look >= rule.looks:
        raise ValueError(f"look {look} is past the race's last look {rule.looks - 1}")
    family = family_verdicts(
        p_values, diffs, rule.fractions(), rule.alpha, lower_is_better=rule.lower_is_better
    )
    level = np.where(np.isfinite(family.holm_level), family.holm_level, family.next_level)
    if look == rule.looks - 1:
        undecided = np.full(sampling.shape, MAX_CODE)
    else:
        stop = _no_difference(current, level, look, rule)
        undecided = np.where(stop, NO_DIFFERENCE_CODE, OPEN)
    codes = np.where(sampling, undecided, STOPPED)
    claims = np.where(family.improved, BETTER_CODE, WORSE_CODE)
    return np.where(family.claimed, claims, codes), family


def _no_difference(current: LookStats, level: np.ndarray, look: int, rule: RaceRule) -> np.ndarray:
    """Futility, or equivalence within `margin`, for arms held to error rate `level` (Holm's).

    Futility: even an optimistic projection cannot reach the last look's boundary at this
    level: the difference moved to the far end of its 80% interval (t quantile 0.9 at this look's
    df, away from 0), with the standard error shrunk to max_seeds seeds per arm, gives |t| below
    the critical t of the last look (at level * f_last, 2 max - 2 df). Equivalence: the interval
    at this look's level (level * f_look) lies inside (-margin, +margin).
    """
    fractions = rule.fractions()
    with np.errstate(divide="ignore", invalid="ignore"):
        critical = stats.t.ppf(1 - level * fractions[-1] / 2, 2 * rule.max_seeds - 2)
        n_base = np.maximum(current.n_seeds_baseline, rule.max_seeds)
        # Optimistic: the standard error shrinks as much as the faster-shrinking arm's term would.
        shrink = np.sqrt(
            np.minimum(current.n_seeds / rule.max_seeds, current.n_seeds_baseline / n_base)
        )
        spread = stats.t.ppf(FUTILITY_QUANTILE, current.df) * current.se
        optimistic = (np.abs(current.diff) + spread) / (current.se * shrink)
        futile = current.welch & (optimistic < critical)
        if rule.margin is None:
            return futile
        half = stats.t.ppf(1 - level * fractions[look] / 2, current.df) * current.se
        low, high = current.diff - half, current.diff + half
        inside = (-rule.margin < low) & (high < rule.margin)
    return futile | inside


def race_rules(
    rule: RaceRule,
) -> tuple[
    Callable[[np.ndarray, np.ndarray], Comparison],
    Callable[[Mapping[str, Sequence[Comparison]], Sequence[str], int, int], dict[str, str]],
]:
    """`depthcore.racing.race`'s measure and decide for this rule (the sweep runner's race and
    the report's replay of it use these two)."""

    def measure(baseline: np.ndarray, candidate: np.ndarray) -> Comparison:
        return compare(baseline, candidate, lower_is_better=rule.lower_is_better)

    def decide(
        histories: Mapping[str, Sequence[Comparison]],
        sampling: Sequence[str],
        look: int,
        looks: int,
    ) -> dict[str, str]:
        if looks != rule.looks:
            raise ValueError(f"the race has {looks} looks, its rule {rule.looks}")
        names = [a for a in histories if histories[a]]
        p_values = np.full((len(names), look + 1), np.nan)
        diffs = np.full_like(p_values, np.nan)
        for i, name in enumerate(names):
            for k, result in enumerate(histories[name]):
                p_values[i, k], diffs[i, k] = result.p_value, result.diff
        current = LookStats.of([histories[a][-1] for a in names])
        mask = np.array([a in sampling for a in names], dtype=bool)
        codes, _ = race_verdicts(p_values, diffs, current, mask, rule)
        return {a: RACE_WORDS[int(c)] for a, c in zip(names, codes, strict=True)}

    return measure, decide


def race_decision(
    baseline: np.ndarray,
    candidate: np.ndarray,
    *,
    start: int,
    max_seeds: int,
    lower_is_better: bool,
    level: float = LEVEL,
    spending: Spending = "bonferroni",
    margin: float | None = None,
) -> RaceOutcome:
    """Where a race of one arm stands after a round: decided, or open for one more seed.

    The look is the candidate's seed count (start..max_seeds); the baseline may have more seeds.
    Earlier looks are taken as not claimed (else the race would have stopped there). This is
    `race_verdicts` for a family of one arm: better / worse where this look's test rejects at
    alpha_k (`race_level`), "no difference shown (max seeds)" at max_seeds, "no difference" for
    futility or equivalence (`_no_difference` at the whole error rate), else "open". A sweep
    races all its arms together (`race_rules`): there each arm is held to its Holm level.
    """
    n_seeds = len(np.asarray(candidate))
    race_level(n_seeds, start, max_seeds, level, spending)  # checks the look exists
    rule = RaceRule(start, max_seeds, lower_is_better, level, spending, margin)
    result = compare(baseline, candidate, lower_is_better=lower_is_better)
    p_values = np.full((1, n_seeds - start + 1), np.nan)
    diffs = np.full_like(p_values, np.nan)
    p_values[0, -1], diffs[0, -1] = result.p_value, result.diff
    codes, _ = race_verdicts(p_values, diffs, LookStats.of([result]), np.array([True]), rule)
    return OUTCOMES[int(codes[0])]  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------
# The report's table


def finished_per_image(folder: str | Path) -> pd.DataFrame | None:
    """A finished evaluation's per-image metrics (scale 0, in test order), else None: what the
    race and the report's replay of it read. `folder`: the evaluation's folder
    (`store.find_evaluation`; the run folder itself in the earlier layout)."""
    return store.read_per_image(folder) if store.read_final(folder) else None


def run_matrix(runs: pd.DataFrame) -> tuple[dict[str, np.ndarray], pd.Index]:
    """Per metric a (seeds, images) array of a configuration's finished runs, and the images.

    Images missing from a run are NaN there (compare drops them).
    """
    finished = runs.loc[runs["status"] == "finished", "eval_dir"]  # the evaluation's folder
    read = [store.read_per_image(d) for d in finished if d]
    tables = [t for t in read if t is not None]
    if not tables:
        return {}, pd.Index([])
    images = tables[0].index
    for table in tables[1:]:
        images = images.union(table.index)
    aligned = [t.reindex(images) for t in tables]
    return {m: np.stack([t[m].to_numpy() for t in aligned]) for m in METRIC_NAMES}, images


# One look of one configuration on one metric: (baseline, candidate) per-image matrices.
LookPair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class _Arm:
    config: pd.Series
    looks: dict[str, list[LookPair]]  # metric -> the looks it is judged on (look 0, 1, ...)
    race: ArmState | None = None


@dataclass(frozen=True)
class _Family:
    """The configurations judged together, with the error rate and its split over looks."""

    arms: list[_Arm]
    fractions: np.ndarray
    alpha: float
    note: str = ""


def significance(data: SweepData, configs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per (configuration, metric) against the first baseline configuration.

    Per metric the configurations are one family (`family_verdicts`): without racing, one look
    on all seeds and Holm across configurations; for a raced sweep the race is replayed from the
    run folders and each configuration is judged on the looks the race measured it at, so on the
    sweep's metric the claims are the race's. Returns the table (COLUMNS) and a note: why
    nothing could be tested, or what the rows leave out.
    """
    empty = pd.DataFrame(columns=list(COLUMNS))
    if data.source != "results":
        return empty, "no per-image results (imported CSV): significance not computed"
    baselines = configs.loc[configs["role"] == BASELINE, "config"]
    if baselines.empty:
        return empty, "no baseline run (role 'baseline' in the sweep index) has finished"
    others = configs[configs["config"] != baselines.iloc[0]]
    if data.race:
        try:
            family = _raced_family(data, str(baselines.iloc[0]), others)
        except ValueError as exc:
            return empty, f"the race could not be replayed from the run folders: {exc}"
    else:
        family = _plain_family(data, str(baselines.iloc[0]), others)
    rows = [row for metric in METRIC_NAMES for row in _metric_rows(family, metric)]
    if not rows:
        return empty, family.note or (
            "no configuration other than the baseline has readable per-image metrics"
        )
    return pd.DataFrame(rows, columns=list(COLUMNS)), family.note


def _plain_family(data: SweepData, baseline: str, others: pd.DataFrame) -> _Family:
    """One look per configuration: all its seeds against all the baseline's."""
    base, base_images = run_matrix(data.runs[data.runs["config"] == baseline])
    if not base:
        return _Family([], np.ones(1), 1 - LEVEL, "the baseline has no readable per_image.csv")
    arms = []
    for _, config in others.iterrows():
        table, images = run_matrix(data.runs[data.runs["config"] == config["config"]])
        shared = images.intersection(base_images)
        if not table or len(shared) < 2:
            continue
        mine, theirs = images.get_indexer(shared), base_images.get_indexer(shared)
        looks = {m: [(base[m][:, theirs], table[m][:, mine])] for m in METRIC_NAMES}
        arms.append(_Arm(config, looks))
    return _Family(arms, np.ones(1), 1 - LEVEL)


def _raced_family(data: SweepData, baseline: str, others: pd.DataFrame) -> _Family:
    """Replay the race on the sweep's metric (the same `race_rules` the sweep ran), then measure
    every metric at the looks the race measured each configuration at."""
    rule = _race_rule(data.race or {}, data.metric)
    plan = SeedPlan(rule.start, rule.max_seeds)
    # Every configuration of the index, finished or not: the race waits for all of them.
    keys = [baseline, *(k for k in dict.fromkeys(data.runs["config"]) if k != baseline)]
    arms = {key: _seed_order(data.runs, key, plan.max) for key in keys}
    # The evaluation the index names for each run (a race has one per run).
    eval_dirs = dict(zip(data.runs["run_id"], data.runs["eval_dir"], strict=True))
    tables = functools.cache(finished_per_image)

    def scores(metric: str) -> Callable[[str], np.ndarray | None]:
        def read(run_id: str) -> np.ndarray | None:
            table = tables(eval_dirs[run_id]) if eval_dirs.get(run_id) else None
            return None if table is None else table[metric].to_numpy()

        return read

    state = race(arms, baseline, scores(data.metric), plan, *race_rules(rule))
    looks = {
        m: measure_looks(arms, baseline, scores(m), plan, state, lambda b, c: (b, c))
        for m in METRIC_NAMES
    }
    judged = [(c, state.arms[c["config"]]) for _, c in others.iterrows()]
    family = [_Arm(c, {m: looks[m][c["config"]] for m in METRIC_NAMES}, s) for c, s in judged]
    waiting = sum(s.measured == 0 for _, s in judged)
    note = (
        f"{waiting} configuration(s) not judged yet: the race's first look needs {rule.start} "
        "finished seeds of each configuration and of the baseline"
        if waiting
        else ""
    )
    return _Family(
        [a for a in family if a.race and a.race.measured], rule.fractions(), rule.alpha, note
    )


def _race_rule(settings: Mapping[str, Any], metric: str) -> RaceRule:
    """The sweep index's `seeds: {start, max, level, spending, margin}` as a rule; ValueError
    naming the setting when the index holds something else."""
    try:
        spending = settings.get("spending", "bonferroni")
        if spending not in ("bonferroni", "obrien-fleming"):
            raise ValueError(f"spending {spending!r}")
        margin = settings.get("margin")
        return RaceRule(
            start=int(settings["start"]),
            max_seeds=int(settings["max"]),
            lower_is_better=LOWER_IS_BETTER[metric],
            level=float(settings.get("level", LEVEL)),
            spending=spending,
            margin=None if margin is None else float(margin),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"the sweep index's seeds: {dict(settings)} ({exc})") from exc


def _seed_order(runs: pd.DataFrame, config: str, most: int) -> list[str]:
    """A configuration's run ids by seed, padded to `most` (seeds the index does not list yet:
    the race has not asked for them, and they read as unfinished)."""
    part = runs[runs["config"] == config].sort_values("seed", kind="stable")
    ids = [str(r) for r in part["run_id"]]
    return ids + [f"{config}#not-listed-{k}" for k in range(len(ids), most)]


def _metric_rows(family: _Family, metric: str) -> list[dict[str, object]]:
    """Judge the family on one metric and write one row per configuration, at the look and the
    level its verdict rests on."""
    lower = LOWER_IS_BETTER[metric]
    looks = len(family.fractions)
    results: list[list[Comparison | None]] = [[None] * looks for _ in family.arms]
    p_values = np.full((len(family.arms), looks), np.nan)
    diffs = np.full_like(p_values, np.nan)
    for i, arm in enumerate(family.arms):
        for k, (ref, cand) in enumerate(arm.looks[metric]):
            try:
                results[i][k] = result = compare(ref, cand, lower_is_better=lower)
            except ValueError:
                continue  # no image scored in every run of both arms
            p_values[i, k], diffs[i, k] = result.p_value, result.diff
    verdicts = family_verdicts(
        p_values, diffs, family.fractions, family.alpha, lower_is_better=lower
    )
    rows = []
    for i, arm in enumerate(family.arms):
        tested = bool(verdicts.look[i] >= 0)
        measured = [k for k, r in enumerate(results[i]) if r is not None]
        if not measured:
            continue
        look = int(verdicts.look[i]) if tested else measured[-1]
        holm_level = float(verdicts.holm_level[i] if tested else verdicts.next_level[0])
        # Untested (1 seed): no verdict, so the interval is shown at the family's own level.
        level = 1 - holm_level * family.fractions[look] if tested else 1 - family.alpha
        rows.append(
            _row(arm, metric, arm.looks[metric][look], level, holm_level, family.alpha)
            | {
                "p_sequential": float(verdicts.p_sequential[i]),
                "p_adjusted": float(verdicts.p_adjusted[i]),
                "significant": bool(verdicts.claimed[i]),
            }
        )
    for row in rows:
        row["verdict"] = verdict(pd.Series(row))
    return rows


def _row(
    arm: _Arm, metric: str, pair: LookPair, level: float, holm_level: float, alpha: float
) -> dict[str, object]:
    ref, cand = pair
    result = compare(ref, cand, lower_is_better=LOWER_IS_BETTER[metric], level=level)
    kept = np.isfinite(ref).all(axis=0) & np.isfinite(cand).all(axis=0)
    race = arm.race
    return {
        "config": arm.config["config"],
        "name": arm.config["name"],
        "metric": metric,
        "n_images": result.n_images,
        "n_seeds": result.n_seeds,
        "n_seeds_baseline": result.n_seeds_baseline,
        "baseline": float(ref[:, kept].mean()),
        "value": float(cand[:, kept].mean()),
        "diff": result.diff,
        "ci_low": result.ci_low,
        "ci_high": result.ci_high,
        "level": result.level,
        "p_value": result.p_value,
        "alpha": alpha,
        "holm_level": holm_level,
        "p_improve": result.p_improve,
        "seed_sd": result.seed_sd,
        "seeds_needed": _needed(result, 1 - holm_level),
        "method": result.method,
        "improved": result.improved,
        "significant_unadjusted": bool(result.p_value < alpha),
        "seeds_run": race.seeds_run if race else None,
        "stop_reason": race.stop_reason if race else None,
    }


def _needed(result: Comparison, level: float) -> float:
    if not math.isfinite(result.seed_sd):
        return math.nan
    return float(seeds_needed(result.diff, result.seed_sd, level=level))


def family_seeds_needed(
    diff: float, seed_sd: float, comparisons: int, *, level: float = LEVEL, power: float = 0.8
) -> int:
    """Seeds per arm to resolve `diff` in a family of `comparisons` configurations judged with
    Holm at family-wise `level`: the first Holm step tests at (1 - level) / comparisons, and a
    difference that should be found whatever the others do has to pass it (`seeds_needed`)."""
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons}")
    return seeds_needed(diff, seed_sd, level=1 - (1 - level) / comparisons, power=power)


def verdict(row: pd.Series) -> str:
    """The words for one row of the table."""
    if min(row["n_seeds"], row["n_seeds_baseline"]) < 2:
        return ONE_SEED
    if not row["significant"]:
        return NO_DIFFERENCE
    return BETTER if row["improved"] else WORSE


def daggers(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """True where a row's value improves on the baseline but the report claims no difference
    (Holm-adjusted verdict, or a single seed).

    Args:
        rows: the ablation rows (a `config` column; references have none).
        table: `significance()`'s table.
    """
    marks = pd.DataFrame(False, index=rows.index, columns=list(METRIC_NAMES))
    if table.empty or "config" not in rows:
        return marks
    weak = table[table["improved"].astype(bool) & ~table["significant"].astype(bool)]
    for config, metric in zip(weak["config"], weak["metric"], strict=True):
        marks.loc[rows["config"] == config, metric] = True
    return marks
