"""Which value of each hyperparameter is best, and does the grid show it? (docs/statistics.md)

The paper's conclusions from its "edge distribution" are marginal ones (w_c = 0.5, w_s = 0.7 are
best). A grid replicates every value of a parameter over the combinations of the others, so a
main effect can be shown even where no single row beats the baseline: each configuration's mean
(its seeds averaged) is modelled as

    y[config] = mu + sum over parameters p of effect_p[value of p in config] + r[config]

with every swept parameter a categorical factor (sum-to-zero coding) and the residual r holding
what the main effects do not: interactions and the seed noise of the configuration's mean. That
residual is the error term, as in a classical factorial design without replication; more seeds
shrink its seed part but never replace it, because interactions are configuration-level. Using
configuration means, unweighted, keeps uneven seed counts (racing) from biasing the estimates.

Per parameter: the type-II F test of its main effect (the model without it against the full
model), Holm-adjusted over the parameters of one call; its estimated marginal means (EMMs, the
model's mean at each value, the other parameters averaged with equal weights) with t intervals;
and whether the best value is shown better than every other value (t tests of the contrasts,
Holm-adjusted within the parameter). Fitting and tests are statsmodels'; nothing here is
hand-written linear algebra beyond the sum-to-zero design, which patsy codes.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.api as sm
from patsy.contrasts import Sum
from statsmodels.tools.sm_exceptions import SingularMatrixWarning

from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.report.significance import holm_steps

LEVEL = 0.95
# Relative tolerance of the rank and estimability checks (the design has entries 0, +-1).
_RANK_TOL = 1e-8

COLUMNS = (
    "parameter",
    "metric",
    "n_levels",
    "n_configs",
    "n_runs",
    "df",
    "df_resid",
    "F",
    "p_value",
    "p_holm",
    "significant",
    "best_value",
    "best_supported",
    "effect_range",
    "partial_eta2",
    "residual_sd",
    "seed_sd",
    "level",
    "note",
    "levels",
)
# One row per (parameter, value) of `marginal_means`.
LEVEL_COLUMNS = (
    "parameter",
    "metric",
    "value",
    "n_configs",
    "n_runs",
    "emm",
    "ci_low",
    "ci_high",
    "is_best",
    "p_vs_best",
    "shown_worse",
)

NOT_A_GRID = "not a grid (a search samples the space): no factor model; see the importance"


@dataclass(frozen=True)
class _Design:
    """Configuration means and the sum-coded main-effects design over the tested parameters."""

    configs: pd.DataFrame  # one row per configuration: params, y (mean), n (runs), seed_var
    params: tuple[str, ...]  # parameters with 2+ values, in the caller's order
    levels: dict[str, list[Any]]  # each parameter's values, sorted
    codes: dict[str, np.ndarray]  # each configuration's value index per parameter
    columns: dict[str, slice]  # each parameter's columns in X
    X: np.ndarray

    def emm_rows(self, key: str) -> np.ndarray:
        """(values, columns): the model rows whose predictions are the EMMs of `key`'s values:
        the intercept, the value's sum-to-zero code, zeros for the other parameters (their codes
        average to 0 over their values)."""
        rows = np.zeros((len(self.levels[key]), self.X.shape[1]))
        rows[:, 0] = 1.0
        rows[:, self.columns[key]] = _sum_coding(len(self.levels[key]))
        return rows


@dataclass(frozen=True)
class _Result:
    """One parameter's test (NaN where not estimable) and its per-value numbers."""

    df: float = math.nan
    F: float = math.nan
    p_value: float = math.nan
    partial_eta2: float = math.nan
    emm: np.ndarray | None = None
    ci: np.ndarray | None = None  # (values, 2)
    best: int | None = None
    p_vs_best: np.ndarray | None = None  # Holm-adjusted within the parameter; NaN for the best
    note: str = ""


def factor_effects(
    runs: pd.DataFrame,
    params: tuple[str, ...] | list[str],
    metric: str,
    *,
    lower_is_better: bool,
    level: float = LEVEL,
) -> pd.DataFrame:
    """Main effect of every swept parameter on `metric`, with its best value and whether the grid
    shows it (module docstring). Never raises for a design it cannot test: such rows carry NaN
    and say why in `note`.

    Args:
        runs: one row per trained run (the baseline and reference rows left out by the caller):
            columns `params` and `metric`; a configuration is a distinct tuple of `params`; runs
            with a NaN metric are left out.
        params: the swept parameters; those with a single value are skipped (no row).
        metric: the column to model.
        lower_is_better: direction of `metric` (which value is best).
        level: confidence level of the intervals; 1 - level is the family-wise error rate of the
            `significant` flags (Holm over the parameters) and of each parameter's `best_supported`.

    Returns COLUMNS, one row per tested parameter in `params` order. `levels` holds each row's
    per-value table (LEVEL_COLUMNS; `marginal_means` stacks them).
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    design = _design(runs, params, metric)
    if design is None or not design.params:
        return pd.DataFrame(columns=list(COLUMNS))
    results, residual = _analyse(design, lower_is_better, level)
    return _table(design, results, residual, metric, level)


def marginal_means(effects: pd.DataFrame) -> pd.DataFrame:
    """The per-value tables of `factor_effects` rows as one long table (LEVEL_COLUMNS)."""
    frames = [t for t in effects.get("levels", []) if isinstance(t, pd.DataFrame) and len(t)]
    if not frames:
        return pd.DataFrame(columns=list(LEVEL_COLUMNS))
    return pd.concat(frames, ignore_index=True)[list(LEVEL_COLUMNS)]


def not_a_grid(
    params: tuple[str, ...] | list[str], metric: str, level: float = LEVEL
) -> pd.DataFrame:
    """The rows of a search sweep: no test, the reason in `note`."""
    rows = [
        {"parameter": key, "metric": metric, "level": level, "note": NOT_A_GRID} for key in params
    ]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["significant"] = False
    table["best_supported"] = False
    return table


# ----------------------------------------------------------------------------------------------
# The design


def _design(runs: pd.DataFrame, params: tuple[str, ...] | list[str], metric: str) -> _Design | None:
    missing = [c for c in (*params, metric) if c not in runs.columns]
    if missing:
        raise ValueError(f"runs has no column(s) {missing}; columns: {list(runs.columns)}")
    y = pd.to_numeric(runs[metric], errors="coerce").to_numpy(float)
    done = runs[np.isfinite(y)]
    if done.empty or not params:
        return None
    # Each run's value index per parameter, then one configuration per distinct row of indices.
    found = {key: _sorted_levels(done[key]) for key in params}
    run_codes = np.column_stack([_codes(done[key], found[key]) for key in params])
    _, first, inverse, counts = np.unique(
        run_codes, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(first, kind="stable")  # configurations in the order the runs give them
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    config_of_run = rank[inverse.ravel()]
    y = pd.to_numeric(done[metric], errors="coerce").to_numpy(float)
    sums = np.bincount(config_of_run, weights=y)
    squares = np.bincount(config_of_run, weights=y**2)
    n = counts[order]
    configs = done[list(params)].iloc[first[order]].reset_index(drop=True)
    configs["y"] = sums / n
    with np.errstate(invalid="ignore", divide="ignore"):
        configs["seed_var"] = np.where(n > 1, (squares - sums**2 / n) / (n - 1), np.nan)
    configs["n"] = n
    levels: dict[str, list[Any]] = {}
    codes: dict[str, np.ndarray] = {}
    for j, key in enumerate(params):
        in_configs = np.unique(run_codes[first[order], j])
        if len(in_configs) > 1:
            levels[key] = found[key]
            codes[key] = run_codes[first[order], j]
    blocks, columns, start = [np.ones((len(configs), 1))], {}, 1
    for key in levels:
        blocks.append(_sum_coding(len(levels[key]))[codes[key]])
        columns[key] = slice(start, start + len(levels[key]) - 1)
        start += len(levels[key]) - 1
    return _Design(configs, tuple(levels), levels, codes, columns, np.hstack(blocks))


def _codes(column: pd.Series, levels: list[Any]) -> np.ndarray:
    index = {_level_key(v): i for i, v in enumerate(levels)}
    return np.array([index[_level_key(v)] for v in column], dtype=np.int64)


def _sum_coding(n_levels: int) -> np.ndarray:
    """(levels, levels - 1) sum-to-zero contrast matrix: the last level is minus the others."""
    return np.asarray(Sum().code_without_intercept(list(range(n_levels))).matrix, dtype=float)


def _level_key(value: Any) -> tuple[int, Any]:
    """A hashable, sortable key for a parameter value; numbers sort before text, and every
    missing value is one level ('unset': the key does not apply to that configuration)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, "")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return (0, float(value))
    return (1, str(value))


def _sorted_levels(column: pd.Series) -> list[Any]:
    first: dict[tuple[int, Any], Any] = {}
    for value in column:
        first.setdefault(_level_key(value), value)
    return [first[k] for k in sorted(first)]


def _rank(X: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(X, tol=_RANK_TOL * max(X.shape)))


# ----------------------------------------------------------------------------------------------
# The model


def _analyse(
    design: _Design, lower_is_better: bool, level: float
) -> tuple[dict[str, _Result], tuple[float, float]]:
    """Fit the main-effects model once; test each parameter against the model without it.
    Returns the results and the residual's (sd, degrees of freedom)."""
    rank = _rank(design.X)
    df_resid = len(design.configs) - rank
    if df_resid <= 0:
        why = (
            f"no residual degree of freedom: {len(design.configs)} configurations for a model "
            f"of rank {rank}; the error term is between configurations, so more seeds do not "
            "help: add configurations (a grid)"
        )
        return {key: _Result(note=why) for key in design.params}, (math.nan, 0.0)
    y = design.configs["y"].to_numpy(float)
    fit = _ols(y, design.X)
    # Rows of X span the estimable functions: L is estimable where L pinv(X) X = L.
    projector = np.linalg.pinv(design.X) @ design.X
    results = {
        key: _one_parameter(design, fit, y, key, rank, projector, lower_is_better, level)
        for key in design.params
    }
    return results, (math.sqrt(float(fit.scale)), float(fit.df_resid))


def _ols(y: np.ndarray, X: np.ndarray) -> Any:
    # A rank-deficient design (confounded parameters) is expected here and handled by the rank
    # and estimability checks; statsmodels' pinv fit is what those checks assume.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularMatrixWarning)
        return sm.OLS(y, X).fit()


def _one_parameter(
    design: _Design,
    fit: Any,
    y: np.ndarray,
    key: str,
    rank: int,
    projector: np.ndarray,
    lower_is_better: bool,
    level: float,
) -> _Result:
    others = np.delete(design.X, np.r_[design.columns[key]], axis=1)
    df = rank - _rank(others)
    if df == 0:
        return _Result(
            note="not estimable: its values never change with the other parameters held fixed "
            "(confounded with them in this design)"
        )
    reduced = _ols(y, others)
    f_value, p_value, _ = fit.compare_f_test(reduced)
    ss_effect = float(reduced.ssr - fit.ssr)
    total = ss_effect + float(fit.ssr)
    note = ""
    if df < len(design.levels[key]) - 1:
        note = f"partly confounded: {df} of {len(design.levels[key]) - 1} contrasts testable"
    rows = design.emm_rows(key)
    estimable = np.all(np.isclose(rows @ projector, rows, atol=1e-8), axis=1)
    emm = np.full(len(rows), math.nan)
    ci = np.full((len(rows), 2), math.nan)
    if estimable.any():
        test = fit.t_test(rows[estimable])
        emm[estimable] = np.asarray(test.effect, dtype=float)
        ci[estimable] = np.asarray(test.conf_int(alpha=1 - level), dtype=float)
    result = _Result(
        df=float(df),
        F=float(f_value),
        p_value=float(p_value),
        partial_eta2=ss_effect / total if total > 0 else 0.0,
        emm=emm,
        ci=ci,
        note=note,
    )
    if estimable.sum() < 2:
        return result
    best = int(np.nanargmin(emm) if lower_is_better else np.nanargmax(emm))
    return replace(result, best=best, p_vs_best=_against_best(fit, rows, estimable, best))


def _against_best(fit: Any, rows: np.ndarray, estimable: np.ndarray, best: int) -> np.ndarray:
    """Holm-adjusted p of each value's difference to the best value (two-sided t tests over
    the other estimable values; NaN for the best and for values without an estimate)."""
    others = np.flatnonzero(estimable & (np.arange(len(rows)) != best))
    p_adjusted = np.full(len(rows), math.nan)
    test = fit.t_test(rows[best] - rows[others])
    p_adjusted[others] = holm_adjusted(np.asarray(test.pvalue, dtype=float).ravel())
    return p_adjusted


# ----------------------------------------------------------------------------------------------
# Tables


def _table(
    design: _Design,
    results: dict[str, _Result],
    residual: tuple[float, float],
    metric: str,
    level: float,
) -> pd.DataFrame:
    """COLUMNS per parameter: Holm over the parameters; `best_supported` needs the effect shown
    and the best value shown better than every other value."""
    p_values = np.array([results[k].p_value for k in design.params])
    p_holm = np.full(len(p_values), math.nan)
    tested = np.isfinite(p_values)
    if tested.any():
        p_holm[tested] = holm_adjusted(p_values[tested])
    seed_sd = _seed_sd(design.configs)
    rows = []
    for key, adjusted in zip(design.params, p_holm, strict=True):
        result = results[key]
        levels = _levels(design, key, metric, result, level)
        significant = bool(adjusted <= 1 - level)
        is_best = levels["is_best"].to_numpy(bool)
        shown = levels["shown_worse"].to_numpy(bool)[~is_best]
        best = [v for v, b in zip(design.levels[key], is_best, strict=True) if b]
        rows.append(
            {
                "parameter": key,
                "metric": metric,
                "n_levels": len(design.levels[key]),
                "n_configs": len(design.configs),
                "n_runs": int(design.configs["n"].sum()),
                "df": result.df,
                "df_resid": residual[1],
                "F": result.F,
                "p_value": result.p_value,
                "p_holm": adjusted,
                "significant": significant,
                "best_value": best[0] if best else None,
                "best_supported": significant and len(shown) > 0 and bool(shown.all()),
                "effect_range": _range(result.emm),
                "partial_eta2": result.partial_eta2,
                "residual_sd": residual[0],
                "seed_sd": seed_sd,
                "level": level,
                "note": result.note,
                "levels": levels,
            }
        )
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _levels(design: _Design, key: str, metric: str, result: _Result, level: float) -> pd.DataFrame:
    n_levels = len(design.levels[key])
    codes = design.codes[key]
    runs = design.configs["n"].to_numpy()
    emm = result.emm if result.emm is not None else np.full(n_levels, math.nan)
    ci = result.ci if result.ci is not None else np.full((n_levels, 2), math.nan)
    p_best = result.p_vs_best if result.p_vs_best is not None else np.full(n_levels, math.nan)
    is_best = np.arange(n_levels) == (result.best if result.best is not None else -1)
    # The best is the best estimate, so a rejected contrast is in its favour (a tie is not).
    shown = (p_best <= 1 - level) & (emm != emm[result.best or 0])
    return pd.DataFrame(
        {
            "parameter": key,
            "metric": metric,
            "value": design.levels[key],
            "n_configs": np.bincount(codes, minlength=n_levels),
            "n_runs": np.bincount(codes, weights=runs, minlength=n_levels).astype(int),
            "emm": emm,
            "ci_low": ci[:, 0],
            "ci_high": ci[:, 1],
            "is_best": is_best,
            "p_vs_best": p_best,
            "shown_worse": shown & ~is_best,
        },
        columns=list(LEVEL_COLUMNS),
    )


def _range(emm: np.ndarray | None) -> float:
    if emm is None or np.isfinite(emm).sum() < 2:
        return math.nan
    return float(np.nanmax(emm) - np.nanmin(emm))


def _seed_sd(configs: pd.DataFrame) -> float:
    """Pooled sd of runs around their configuration's mean (NaN without a repeated seed)."""
    repeated = configs[configs["n"] > 1]
    dof = float((repeated["n"] - 1).sum())
    if dof == 0:
        return math.nan
    return math.sqrt(float((repeated["seed_var"] * (repeated["n"] - 1)).sum()) / dof)


def holm_adjusted(p_values: np.ndarray | list[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (reject where adjusted <= alpha): the Holm of the
    pairwise verdicts (`significance.holm_steps`), which the tests compare with statsmodels'
    `multipletests(method="holm")` (that one calls gc.collect() on every call, 80 ms in a
    process holding torch, too slow for a report of 7 metrics or a 1000-grid simulation)."""
    return holm_steps(np.asarray(p_values, dtype=np.float64), alpha=0.05)[1]


# ----------------------------------------------------------------------------------------------
# A sweep: every metric, and the sentences that lead the report's edge distribution


def sweep_effects(
    runs: pd.DataFrame,
    params: tuple[str, ...] | list[str],
    *,
    search: bool = False,
    level: float = LEVEL,
) -> pd.DataFrame:
    """`factor_effects` for each of the seven metrics, stacked (Holm is per metric).

    Args:
        runs: the sweep's finished runs without the baseline (columns `params` and the metrics).
        params: the swept parameters.
        search: the sweep sampled a space (search: optuna), so there is no factor model.
    """
    frames = []
    for metric in METRIC_NAMES:
        if search:
            frames.append(not_a_grid(params, metric, level))
            continue
        lower = LOWER_IS_BETTER[metric]
        frames.append(factor_effects(runs, params, metric, lower_is_better=lower, level=level))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMNS))
    return pd.concat(frames, ignore_index=True)


def sentences(effects: pd.DataFrame, primary: str) -> list[str]:
    """One sentence per parameter in words: the primary metric's verdict, its best value and what
    it is shown better than, then the other metrics where an effect is shown."""
    lines = []
    for key in dict.fromkeys(effects["parameter"]):
        mine = effects[effects["parameter"] == key]
        row = mine[mine["metric"] == primary]
        if row.empty:
            continue
        others = mine[(mine["metric"] != primary) & mine["significant"].astype(bool)]
        also = f" Also shown on {', '.join(others['metric'])}." if len(others) else ""
        lines.append(f"{key}: {_sentence(row.iloc[0])}{also}")
    return lines


def _sentence(row: pd.Series) -> str:
    metric = row["metric"]
    if pd.isna(row["p_value"]):
        return f"not tested on {metric}: {row['note']}."
    f_test = f"F({row['df']:g}, {row['df_resid']:g}) = {row['F']:.2f}"
    test = f"p = {_p(row['p_value'])}, Holm {_p(row['p_holm'])}, {f_test}"
    best = _value_text(row["best_value"])
    if not row["significant"]:
        return f"no effect shown on {metric} ({test}); {best} best by point estimate only."
    levels = row["levels"]
    others = levels[~levels["is_best"].astype(bool) & levels["emm"].notna()]
    shown = [_value_text(v) for v in others.loc[others["shown_worse"].astype(bool), "value"]]
    open_ = [_value_text(v) for v in others.loc[~others["shown_worse"].astype(bool), "value"]]
    parts = [f"effect shown on {metric} ({test}); {best} best"]
    if shown:
        parts.append(f"shown better than {', '.join(shown)}")
    if open_:
        parts.append(f"not shown better than {', '.join(open_)}")
    return ", ".join(parts) + "."


def _p(value: float) -> str:
    return "< 0.0001" if value < 1e-4 else f"{value:.2g}" if value < 0.01 else f"{value:.3f}"


def _value_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "unset"
    return format(value, "g") if isinstance(value, (float, np.floating)) else str(value)


# The columns of effects.csv: the issue's contract first, then the numbers behind it.
CSV_COLUMNS = (
    "parameter",
    "metric",
    "p_value",
    "significant",
    "best_value",
    "best_supported",
    "p_holm",
    "F",
    "df",
    "df_resid",
    "effect_range",
    "partial_eta2",
    "residual_sd",
    "seed_sd",
    "n_levels",
    "n_configs",
    "n_runs",
    "level",
    "note",
)


def effects_csv(effects: pd.DataFrame) -> pd.DataFrame:
    """`sweep_effects` as written to effects.csv (the per-value numbers go to marginals.csv)."""
    return effects.reindex(columns=list(CSV_COLUMNS))
