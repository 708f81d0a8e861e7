"""Seed-aware verdicts: A/A false claims, power, racing, Holm, seeds needed, edge cases (numpy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthcore.report.significance import (
    IMAGES_ONLY,
    RACE_MAX,
    RACE_NO_DIFFERENCE,
    RACE_OPEN,
    compare,
    holm,
    look_levels,
    race_decision,
    race_level,
    seeds_needed,
)

# (seed sd s, seed x image noise e, images): e up to 20 s, so the image term matters too.
SETTINGS = ((1.0, 1.0, 200), (1.0, 5.0, 400), (0.2, 4.0, 100), (1.0, 20.0, 400))


def _arms(
    rng: np.random.Generator, pairs: int, seeds: int, s: float, e: float, images: int, delta: float
) -> np.ndarray:
    """metric[pair, arm, seed, image] = difficulty (shared) + delta (arm 1) + seed + noise."""
    difficulty = rng.gamma(2.0, 1.0, (pairs, 1, 1, images))
    seed = rng.normal(0, s, (pairs, 2, seeds, 1))
    noise = rng.normal(0, e, (pairs, 2, seeds, images))
    shift = np.array([0.0, delta])[None, :, None, None]
    return difficulty + shift + seed + noise


def _claims(values: np.ndarray) -> float:
    return float(np.mean([compare(v[0], v[1], lower_is_better=True).significant for v in values]))


@pytest.mark.parametrize("seeds", [2, 3, 5])
@pytest.mark.parametrize(("s", "e", "images"), SETTINGS)
def test_aa_pairs_claim_a_difference_at_most_6_percent(
    seeds: int, s: float, e: float, images: int
) -> None:
    rng = np.random.default_rng(seeds * 1000 + int(e * 10))
    rate = _claims(_arms(rng, 1000, seeds, s, e, images, 0.0))
    assert rate <= 0.06, rate


@pytest.mark.parametrize(("s", "e", "images"), SETTINGS[:2])
def test_a_true_difference_of_two_seed_sds_is_found_with_5_seeds(
    s: float, e: float, images: int
) -> None:
    rng = np.random.default_rng(7)
    assert _claims(_arms(rng, 1000, 5, s, e, images, -2 * s)) >= 0.70


def test_image_only_procedure_would_fail_the_aa_test() -> None:
    """The old verdict (images only) is what the seed-aware one replaces: the simulation bites."""
    rng = np.random.default_rng(3)
    values = _arms(rng, 200, 3, 1.0, 1.0, 200, 0.0)
    diffs = values[:, 1].mean(axis=1) - values[:, 0].mean(axis=1)
    se = diffs.std(axis=1, ddof=1) / math.sqrt(diffs.shape[1])
    assert np.mean(np.abs(diffs.mean(axis=1)) > 1.97 * se) > 0.5


def _race(values: np.ndarray, start: int, max_seeds: int, **kw: object) -> tuple[str, int]:
    """Adds one seed per arm per round while open; returns the outcome and the seeds used."""
    for n in range(start, max_seeds + 1):
        outcome = race_decision(
            values[0, :n], values[1, :n], start=start, max_seeds=max_seeds,
            lower_is_better=True, **kw,
        )  # fmt: skip
        if outcome != RACE_OPEN:
            return outcome, n
    raise AssertionError("the race must decide by max seeds")


@pytest.mark.parametrize(
    ("spending", "s", "e", "images"),
    [
        ("bonferroni", 1.0, 1.0, 200),
        ("bonferroni", 0.2, 4.0, 100),
        ("obrien-fleming", 1.0, 5.0, 100),
    ],
)
def test_racing_keeps_aa_false_claims_at_most_6_percent(
    spending: str, s: float, e: float, images: int
) -> None:
    rng = np.random.default_rng(11)
    values = _arms(rng, 1000, 6, s, e, images, 0.0)
    outcomes = [_race(v, 2, 6, spending=spending)[0] for v in values]
    claims = np.mean([o in ("better", "worse") for o in outcomes])
    assert claims <= 0.06, claims
    assert RACE_NO_DIFFERENCE in outcomes and RACE_MAX in outcomes  # both stop reasons occur


def test_racing_power_and_seeds_saved() -> None:
    """Measured with 1000 pairs (s=e=1, 200 images), start=2, max=6: power for a 2 s difference
    0.61 with Bonferroni spending (0.72 with O'Brien-Fleming), against 0.75 for a fixed 5 seeds
    and 0.39 for a fixed 3; A/A false claims 2.5% (3.0%), and A/A trials use 4.0 (4.4) seeds on
    average, most of them stopped for futility before max."""
    rng = np.random.default_rng(12)
    values = _arms(rng, 400, 6, 1.0, 1.0, 200, -2.0)
    outcomes = [_race(v, 2, 6)[0] for v in values]
    power = np.mean([o == "better" for o in outcomes])
    assert 0.45 <= power <= 0.9, power
    assert "worse" not in outcomes


def test_look_levels_sum_to_the_error_rate_and_race_level_uses_them() -> None:
    for spending in ("bonferroni", "obrien-fleming"):
        alphas = look_levels(2, 6, 0.95, spending)  # type: ignore[arg-type]
        assert len(alphas) == 5 and alphas.sum() == pytest.approx(0.05)
        assert (alphas > 0).all()
    assert race_level(6, 2, 6) == pytest.approx(0.99)
    assert race_level(3, 3, 3) == pytest.approx(0.95)  # one look: no adjustment
    with pytest.raises(ValueError, match="outside"):
        race_level(7, 2, 6)


def test_one_seed_against_one_seed_is_never_significant() -> None:
    base = np.array([[0.1, 0.2, 0.3, 0.4]])
    result = compare(base, base - 1.0, lower_is_better=True)
    assert not result.significant and result.method == IMAGES_ONLY
    assert result.diff == pytest.approx(-1.0) and math.isnan(result.p_value)
    assert result.p_improve == 1.0
    assert not compare(np.vstack([base, base + 0.01]), base - 1, lower_is_better=True).significant


def test_holm_matches_a_hand_computation() -> None:
    p = [0.01, 0.04, 0.03, 0.005, float("nan")]
    # Sorted: 0.005 <= .05/4 yes; 0.01 <= .05/3 yes; 0.03 <= .05/2 no -> stop; 0.04 kept.
    assert holm(p, 0.05).tolist() == [True, False, False, True, False]
    assert holm([0.02, 0.02], 0.05).tolist() == [True, True]  # 0.02 <= .025, then <= .05
    assert holm([0.03, 0.04], 0.05).tolist() == [False, False]  # first fails: nothing after


def test_welch_matches_scipy_and_p_improve_counts_ties() -> None:
    from scipy import stats

    rng = np.random.default_rng(5)
    base, cand = rng.normal(0, 1, (3, 50)), rng.normal(0.5, 1, (4, 50)) + rng.normal(0, 1, (4, 1))
    result = compare(base, cand, lower_is_better=False)
    want = stats.ttest_ind(cand.mean(axis=1), base.mean(axis=1), equal_var=False)
    assert result.p_value == pytest.approx(want.pvalue)
    assert result.ci_low < result.diff < result.ci_high
    tied = compare(np.array([[1.0], [2.0]]), np.array([[2.0], [3.0]]), lower_is_better=True)
    assert tied.p_improve == pytest.approx(0.125)  # (0 wins + 1 tie / 2) out of 4 pairs


def test_edge_cases_shapes_nans_and_zero_spread() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(2, 4\)"):
        compare(np.zeros((2, 3)), np.zeros((2, 4)), lower_is_better=True)
    base = np.array([[1.0, np.nan, 3.0], [1.0, 2.0, 3.0]])
    result = compare(base, base + 1, lower_is_better=True)
    assert result.n_dropped == 1 and result.n_images == 2
    assert result.diff == pytest.approx(1.0)
    assert result.significant and result.ci_low == result.ci_high  # no spread: exact difference
    assert not compare(base, base, lower_is_better=True).significant


def test_seeds_needed() -> None:
    # Normal approximation 2 (1.96 + 0.84)^2 = 15.7 -> 16; t at df ~ 30 adds one more.
    assert seeds_needed(1.0, 1.0, level=0.95) == 17
    assert seeds_needed(0.5, 1.0) > seeds_needed(1.0, 1.0) > seeds_needed(2.0, 1.0) >= 2
    assert seeds_needed(0.0, 1.0, limit=99) == 99
    with pytest.raises(ValueError, match="seed_sd"):
        seeds_needed(1.0, float("nan"))
