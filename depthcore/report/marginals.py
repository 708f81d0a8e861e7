"""Edge-distribution (marginal) statistics per hyperparameter value, and parameter importance.

The unit is a configuration (its seeds averaged); baseline and reference rows are left out, as
they are not points of the swept grid. For every swept key and each of its values: n, mean, std
and median of every metric, the mean rank of its configurations (1 = best, ties averaged) and how
many of them are among the top-k configurations of that metric. `with_effects` adds what the
factor model (depthcore.report.effects) says of each value: its estimated marginal mean with an
interval, and whether the best value is shown better than the others.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.report.effects import marginal_means
from depthcore.report.loading import BASELINE

if TYPE_CHECKING:
    # Type-only: optuna stays a lazy import, needed only by the importance section.
    from optuna import Study
    from optuna.distributions import BaseDistribution

COLUMNS = (
    "parameter",
    "value",
    "metric",
    "n",
    "mean",
    "std",
    "median",
    "mean_rank",
    "top_k",
    "k",
    "best",
)


def grid_points(configs: pd.DataFrame) -> pd.DataFrame:
    """The configurations that are points of the swept grid (not the baseline)."""
    return configs[configs["role"] != BASELINE].reset_index(drop=True)


def default_top_k(n_configs: int) -> int:
    """A quarter of the configurations, at least one."""
    return max(1, math.ceil(n_configs / 4))


def metric_ranks(points: pd.DataFrame, method: str = "average") -> pd.DataFrame:
    """Per metric, each configuration's rank among all points (1 = best, direction-aware)."""
    ranks = pd.DataFrame(index=points.index)
    for metric in METRIC_NAMES:
        ranks[metric] = points[metric].rank(method=method, ascending=LOWER_IS_BETTER[metric])
    return ranks


def marginal_stats(
    configs: pd.DataFrame, params: tuple[str, ...], top_k: int | None = None
) -> pd.DataFrame:
    """Tidy long table with COLUMNS, ordered by parameter (sweep order), value, metric."""
    points = grid_points(configs)
    k = top_k or default_top_k(len(points))
    ranks = metric_ranks(points)
    in_top = metric_ranks(points, method="min") <= k
    frames = [_one_param(points, ranks, in_top, key, k) for key in params]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


def _one_param(
    points: pd.DataFrame, ranks: pd.DataFrame, in_top: pd.DataFrame, key: str, k: int
) -> pd.DataFrame:
    has = points[key].notna()
    if not has.any():
        return pd.DataFrame()
    values = points.loc[has, key]
    frames = []
    for metric in METRIC_NAMES:
        stats = points.loc[has, metric].groupby(values).agg(["count", "mean", "std", "median"])
        stats["mean_rank"] = ranks.loc[has, metric].groupby(values).mean()
        stats["top_k"] = in_top.loc[has, metric].groupby(values).sum().astype(int)
        stats = stats.rename(columns={"count": "n"}).reset_index(names="value")
        stats.insert(0, "parameter", key)
        stats.insert(2, "metric", metric)
        stats["k"] = k
        stats["best"] = _is_best(stats["mean"], metric)
        frames.append(stats)
    table = pd.concat(frames, ignore_index=True)
    order = {m: i for i, m in enumerate(METRIC_NAMES)}
    table["_m"] = table["metric"].map(order)
    return table.sort_values(["value", "_m"], kind="stable").drop(columns="_m")


def _is_best(means: pd.Series, metric: str) -> pd.Series:
    target = means.min() if LOWER_IS_BETTER[metric] else means.max()
    return means.eq(target) & means.notna()


# Columns `with_effects` adds: the factor model's per-value numbers (depthcore.report.effects).
EFFECT_COLUMNS = ("emm", "ci_low", "ci_high", "p_vs_best", "shown_worse", "best_supported")


def with_effects(marginals: pd.DataFrame, effects: pd.DataFrame) -> pd.DataFrame:
    """`marginals` with the factor model's estimated marginal means, their intervals, each
    value's Holm-adjusted p against the best value, and `best_supported` (the best value of a
    shown effect, shown better than every other value). Where the model gave estimates, `best`
    becomes its best value (the best mean in a full grid; in a partial grid the estimate corrects
    for which combinations were run); elsewhere it stays the best mean."""
    table = marginals.copy()
    for column in EFFECT_COLUMNS:
        table[column] = False if column in ("shown_worse", "best_supported") else math.nan
    levels = marginal_means(effects)
    if table.empty or levels.empty:
        return table
    supported = effects.set_index(["parameter", "metric"])["best_supported"].astype(bool)
    by_key = {_key(r.parameter, r.value, r.metric): r for r in levels.itertuples(index=False)}
    for i, row in table.iterrows():
        level = by_key.get(_key(row["parameter"], row["value"], row["metric"]))
        if level is None or pd.isna(level.emm):
            continue
        table.loc[i, ["emm", "ci_low", "ci_high", "p_vs_best"]] = [
            level.emm,
            level.ci_low,
            level.ci_high,
            level.p_vs_best,
        ]
        table.loc[i, "shown_worse"] = bool(level.shown_worse)
        table.loc[i, "best"] = bool(level.is_best)
        pair = (row["parameter"], row["metric"])
        table.loc[i, "best_supported"] = bool(level.is_best) and bool(supported.get(pair, False))
    return table


def _key(parameter: object, value: object, metric: object) -> tuple[str, str, str]:
    return str(parameter), _value_text(value), str(metric)


def best_values(marginals: pd.DataFrame) -> pd.DataFrame:
    """(parameter × metric) table of the best value(s), ties joined by ' / '; a best value the
    grid does not show better than every other one is marked "(estimate)"."""
    best = marginals[marginals["best"].astype(bool)]
    if best.empty:
        return pd.DataFrame()
    shown = best["best_supported"].astype(bool) if "best_supported" in best else False
    names = best["value"].map(_value_text)
    text = best.assign(value=names.where(shown, names + " (estimate)"))
    table = text.groupby(["parameter", "metric"], sort=False)["value"].agg(" / ".join)
    table = table.unstack("metric").reindex(columns=list(METRIC_NAMES))
    params = list(dict.fromkeys(marginals["parameter"]))
    return table.reindex(params)


def _value_text(value: object) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------
# Parameter importance (Optuna's PED-ANOVA: no scikit-learn)


def param_importance(configs: pd.DataFrame, params: tuple[str, ...]) -> tuple[pd.DataFrame, str]:
    """PED-ANOVA importance of each swept key, per metric, from an in-memory Optuna study.

    Returns a long table (metric, parameter, importance; normalised per metric) and, when
    nothing could be computed, why.
    """
    import optuna

    points = grid_points(configs)
    dists = {k: d for k in params if (d := _distribution(points[k])) is not None}
    if len(points) < 4 or not dists:
        why = "fewer than 4 configurations" if len(points) < 4 else "no key takes 2+ values"
        return pd.DataFrame(columns=["metric", "parameter", "importance"]), why
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rows = []
    for metric in METRIC_NAMES:
        study = _study(points, dists, metric)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PED-ANOVA warns on small grids; the note says so
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            scores = optuna.importance.get_param_importances(study, evaluator=evaluator)
        rows += [
            {"metric": metric, "parameter": k, "importance": float(scores.get(k, 0.0))}
            for k in dists
        ]
    return pd.DataFrame(rows), ""


def _distribution(column: pd.Series) -> BaseDistribution | None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    values = column.dropna()
    if values.nunique() < 2:
        return None
    if pd.api.types.is_numeric_dtype(column):
        return FloatDistribution(float(values.min()), float(values.max()))
    return CategoricalDistribution(sorted(values.astype(str).unique()))


def _study(points: pd.DataFrame, dists: dict[str, BaseDistribution], metric: str) -> Study:
    import optuna

    direction: Literal["minimize", "maximize"] = (
        "minimize" if LOWER_IS_BETTER[metric] else "maximize"
    )
    study = optuna.create_study(direction=direction)
    for _, row in points.iterrows():
        if not np.isfinite(row[metric]):
            continue
        present = {k: d for k, d in dists.items() if not pd.isna(row[k])}
        values = {k: _param_value(row[k]) for k in present}
        trial = optuna.trial.create_trial(
            value=float(row[metric]), params=values, distributions=present
        )
        study.add_trial(trial)
    return study


def _param_value(value: object) -> object:
    return float(value) if isinstance(value, (int, float, np.floating)) else str(value)
