"""Is a configuration's difference to the baseline real? Seed-aware verdicts (docs/statistics.md).

A per-image metric of run (arm a, seed s) on image i is modelled as
m[a, s, i] = mu_i + delta_a + u[a, s] + e[a, s, i]: image difficulty (shared, cancels because the
arms are paired by image), the configuration's effect, a run-level seed effect and a residual.
`compare` averages each run over the shared images and puts a Welch t interval on the difference
of the arm means of those seed-level means, so the interval covers seed and test-image variance.
With fewer than 2 seeds in an arm the training variance cannot be estimated: the interval is the
image-only one and no difference is ever claimed.

The racing functions (`look_levels`, `race_level`, `race_decision`) are pure: the sweep runner
feeds them the per-image metrics after each round of seeds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import pandas as pd
from scipy import stats

from depthcore import store
from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
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
    diff = float(means_c.mean() - means_b.mean())
    var_b = means_b.var(ddof=1) / len(means_b)
    var_c = means_c.var(ddof=1) / len(means_c)
    se = math.sqrt(var_b + var_c)
    if se == 0:
        # Identical seeds within each arm (training ignores the seed): the difference is exact.
        return diff, diff, float(diff == 0), 0.0, math.inf, ZERO_SPREAD
    df = (var_b + var_c) ** 2 / (var_b**2 / (len(means_b) - 1) + var_c**2 / (len(means_c) - 1))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    p_value = float(2 * stats.t.sf(abs(diff) / se, df))
    return diff - half, diff + half, p_value, se, float(df), WELCH


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
    p = np.asarray(p_values, dtype=np.float64).ravel()
    tested = np.flatnonzero(np.isfinite(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    limits = alpha / (len(order) - np.arange(len(order)))
    passed = p[order] <= limits
    # Step-down: everything after the first failure is kept, whatever its p-value.
    count = len(order) if passed.all() else int(np.argmin(passed))
    rejected = np.zeros(len(p), dtype=bool)
    rejected[order[:count]] = True
    return rejected


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


def race_level(
    n_seeds: int,
    start: int,
    max_seeds: int,
    level: float = LEVEL,
    spending: Spending = "bonferroni",
) -> float:
    """The confidence level of the look a raced trial with `n_seeds` seeds is at: the report's
    verdict on that trial must use it, or the last look would be tested at the unadjusted level."""
    if not start <= n_seeds <= max_seeds:
        raise ValueError(f"{n_seeds} seeds is outside the race's looks {start}..{max_seeds}")
    return float(1 - look_levels(start, max_seeds, level, spending)[n_seeds - start])


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
    """Where a raced trial stands after a round: decided, or open for one more seed.

    The look is the candidate's seed count (start..max_seeds); the baseline may have more seeds.
    Rules, in order:
    1. better / worse: `compare` at `race_level` of this look excludes 0.
    2. at max_seeds: "no difference shown (max seeds)".
    3. no difference (futility), either of:
       - `margin` given and the look's interval lies inside (-margin, +margin);
       - even an optimistic projection cannot reach the last look's boundary: the difference moved
         to the far end of its 80% interval (t quantile 0.9 at this look's df, away from 0), with
         the standard error shrunk to max_seeds seeds per arm, gives |t| below the last look's
         critical t.
    4. otherwise "open".
    Stopping for no difference removes later chances to claim, so it only lowers the error rate.
    """
    n_seeds = len(np.asarray(candidate))
    look_level = race_level(n_seeds, start, max_seeds, level, spending)
    result = compare(baseline, candidate, lower_is_better=lower_is_better, level=look_level)
    if result.significant:
        return RACE_BETTER if result.improved else RACE_WORSE
    if n_seeds >= max_seeds:
        return RACE_MAX
    if margin is not None and -margin < result.ci_low and result.ci_high < margin:
        return RACE_NO_DIFFERENCE
    if _futile(result, n_seeds, max_seeds, level, start, spending):
        return RACE_NO_DIFFERENCE
    return RACE_OPEN


def _futile(
    result: Comparison, n_seeds: int, max_seeds: int, level: float, start: int, spending: Spending
) -> bool:
    if result.method != WELCH:
        return False
    n_base = max(result.n_seeds_baseline, max_seeds)
    # Optimistic: the standard error shrinks as much as the faster-shrinking arm's term would.
    shrink = math.sqrt(min(n_seeds / max_seeds, result.n_seeds_baseline / n_base))
    final_df = 2 * max_seeds - 2
    final_level = race_level(max_seeds, start, max_seeds, level, spending)
    critical = float(stats.t.ppf((1 + final_level) / 2, final_df))
    optimistic = abs(result.diff) + float(stats.t.ppf(FUTILITY_QUANTILE, result.df)) * result.se
    return optimistic / (result.se * shrink) < critical


# ----------------------------------------------------------------------------------------------
# The report's table


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


def significance(data: SweepData, configs: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per (configuration, metric) against the first baseline configuration.

    `significant` is the Holm-adjusted verdict across the sweep's configurations per metric.
    Returns the table (COLUMNS) and, when nothing could be tested, why.
    """
    empty = pd.DataFrame(columns=list(COLUMNS))
    if data.source != "results":
        return empty, "no per-image results (imported CSV): significance not computed"
    baselines = configs.loc[configs["role"] == BASELINE, "config"]
    if baselines.empty:
        return empty, "no baseline run (role 'baseline' in the sweep index) has finished"
    base, base_images = run_matrix(data.runs[data.runs["config"] == baselines.iloc[0]])
    if not base:
        return empty, "the baseline has no readable per_image.csv (scale 0)"
    rows = []
    for _, config in configs[configs["config"] != baselines.iloc[0]].iterrows():
        runs = data.runs[data.runs["config"] == config["config"]]
        table, images = run_matrix(runs)
        if table:
            rows += _rows(config, runs, table, images, base, base_images, data.race)
    if not rows:
        return empty, "no configuration other than the baseline has readable per-image metrics"
    return adjust(pd.DataFrame(rows, columns=list(COLUMNS))), ""


def _rows(
    config: pd.Series,
    runs: pd.DataFrame,
    table: dict[str, np.ndarray],
    images: pd.Index,
    base: dict[str, np.ndarray],
    base_images: pd.Index,
    race_settings: dict[str, Any] | None = None,
) -> list[dict[str, object]]:
    shared = images.intersection(base_images)
    if len(shared) < 2:
        return []
    mine, theirs = images.get_indexer(shared), base_images.get_indexer(shared)
    race = _race_info(runs)
    rows = []
    for metric in METRIC_NAMES:
        cand, ref = table[metric][:, mine], base[metric][:, theirs]
        level = _row_level(len(cand), race_settings)
        try:
            result = compare(ref, cand, lower_is_better=LOWER_IS_BETTER[metric], level=level)
        except ValueError:
            continue  # no image scored in every run of both arms
        kept = np.isfinite(ref).all(axis=0) & np.isfinite(cand).all(axis=0)
        rows.append(
            {
                "config": config["config"],
                "name": config["name"],
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
                "p_improve": result.p_improve,
                "seed_sd": result.seed_sd,
                "seeds_needed": _needed(result),
                "method": result.method,
                "improved": result.improved,
                "significant_unadjusted": result.significant,
                **race,
            }
        )
    return rows


def _row_level(n_seeds: int, race_settings: dict[str, Any] | None) -> float:
    """A raced trial is judged at its last look's level (the race spent the error rate over its
    looks: judging it at 95% again would add a look); other trials at LEVEL."""
    if not race_settings:
        return LEVEL
    start, most = int(race_settings["start"]), int(race_settings["max"])
    level = float(race_settings.get("level", LEVEL))
    spending = race_settings.get("spending", "bonferroni")
    return race_level(min(max(n_seeds, start), most), start, most, level, spending)


def _needed(result: Comparison) -> float:
    if not math.isfinite(result.seed_sd):
        return math.nan
    return float(seeds_needed(result.diff, result.seed_sd, level=result.level))


def _race_info(runs: pd.DataFrame) -> dict[str, object]:
    """seeds_run / stop_reason from the sweep index when the racing recorded them (else empty)."""
    info: dict[str, object] = {}
    for key in ("seeds_run", "stop_reason"):
        values = runs[key].dropna() if key in runs else pd.Series(dtype=object)
        info[key] = values.iloc[-1] if len(values) else None
    return info


def adjust(table: pd.DataFrame, level: float = LEVEL) -> pd.DataFrame:
    """Holm across configurations per metric; `significant` and `verdict` follow the adjusted
    result, and a single-seed row never claims a difference."""
    table = table.copy()
    table["significant"] = False
    # A row tested at a stricter level (a raced trial's last look) enters Holm with its p-value
    # scaled by the same factor, so with one configuration Holm reproduces its own test.
    scale = (1 - level) / (1 - table["level"].astype(float))
    p_values = (table["p_value"].astype(float) * scale).clip(upper=1.0)
    for _, part in table.groupby("metric", sort=False):
        table.loc[part.index, "significant"] = holm(p_values[part.index].to_numpy(float), 1 - level)
    table["significant"] = table["significant"].astype(bool)
    table["verdict"] = [verdict(row) for _, row in table.iterrows()]
    return table


def verdict(row: pd.Series) -> str:
    """The words for one row of the table (after `adjust`)."""
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
