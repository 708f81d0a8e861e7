"""Printed forms of the secondary tables (marginals, importance, significance, runs, scales).

Each view is a DataFrame of display strings; markdown and HTML are rendered from it by pandas.
"""

from __future__ import annotations

import math

import pandas as pd

import depthcore.report.tables as tables
from depthcore.metrics import METRIC_NAMES
from depthcore.report.marginals import grid_points
from depthcore.report.significance import SEEDS_LIMIT


def marginal_view(
    marginals: pd.DataFrame, key: str, primary: str, level: float = 0.95
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per value of `key`: n, mean ± std per metric, mean rank, top-k count, and the factor
    model's estimated marginal mean of the primary metric with its interval and its Holm p
    against the best value. Marks: 'best' (bold) where the best value is shown better than every
    other, 'estimate' (italic) where it is the best by point estimate only."""
    part = marginals[marginals["parameter"] == key]
    values = list(dict.fromkeys(part["value"]))
    by = part.set_index(["value", "metric"])
    cells = pd.DataFrame({"value": [tables.format_value(v) for v in values]})
    cells["n"] = [str(int(by.loc[(v, primary), "n"])) for v in values]
    marks = pd.DataFrame("", index=cells.index, columns=list(METRIC_NAMES), dtype=object)
    for metric in METRIC_NAMES:
        cells[metric] = [_mean_std(by.loc[(v, metric)]) for v in values]
        marks[metric] = [_best_mark(by.loc[(v, metric)]) for v in values]
    ranks = part.groupby("value", sort=False)["mean_rank"].mean()
    cells["mean rank (all metrics)"] = [f"{ranks[v]:.2f}" for v in values]
    k = int(part["k"].iloc[0]) if len(part) else 0
    cells[f"in top-{k} ({primary})"] = [str(int(by.loc[(v, primary), "top_k"])) for v in values]
    if "emm" in part and part["emm"].notna().any():
        header = f"{primary}: estimated mean [{level:.0%} CI]"
        cells[header] = [_emm(by.loc[(v, primary)]) for v in values]
        cells["vs best: p (Holm)"] = [_vs_best(by.loc[(v, primary)]) for v in values]
    return cells, marks


def _best_mark(stats: pd.Series) -> str:
    if not stats["best"]:
        return ""
    return "best" if bool(stats.get("best_supported", False)) else "estimate"


def _emm(stats: pd.Series) -> str:
    digits = tables.DIGITS + 1
    if pd.isna(stats["emm"]):
        return "–"
    return (
        f"{stats['emm']:.{digits}f} [{stats['ci_low']:.{digits}f}, {stats['ci_high']:.{digits}f}]"
    )


def _vs_best(stats: pd.Series) -> str:
    if stats["best"]:
        return "best"
    if pd.isna(stats["p_vs_best"]):
        return "–"
    shown = " (shown worse)" if stats["shown_worse"] else ""
    return f"{stats['p_vs_best']:.3g}{shown}"


def _mean_std(stats: pd.Series) -> str:
    # One digit more than the ablation table: means of several configurations differ finer.
    digits = tables.DIGITS + 1
    if pd.isna(stats["mean"]):
        return "–"
    if pd.isna(stats["std"]):
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"


def best_view(best: pd.DataFrame) -> pd.DataFrame:
    """Best value per hyperparameter (rows) and metric (columns, with arrows)."""
    if best.empty:
        return best
    view = best.fillna("").reset_index()
    return view.set_axis(["parameter", *(tables.metric_header(m) for m in METRIC_NAMES)], axis=1)


def importance_view(importance: pd.DataFrame, params: tuple[str, ...]) -> pd.DataFrame:
    """PED-ANOVA importance, parameter × metric, 3 decimals."""
    if importance.empty:
        return importance
    table = importance.pivot(index="parameter", columns="metric", values="importance")
    table = table.reindex(index=[p for p in params if p in table.index], columns=list(METRIC_NAMES))
    view = table.map(lambda v: f"{v:.3f}").reset_index()
    return view.set_axis(["parameter", *(tables.metric_header(m) for m in METRIC_NAMES)], axis=1)


def significance_view(table: pd.DataFrame) -> pd.DataFrame:
    """Difference to the baseline with its interval, the level it was judged at, the adjusted p
    and the verdict, per configuration and metric.

    The racing columns (seeds run, stop reason) appear only when the sweep recorded them.
    """
    if table.empty:
        return table
    pairs = zip(table["ci_low"], table["ci_high"], strict=True)
    seeds = zip(table["n_seeds"], table["n_seeds_baseline"], strict=True)
    view = pd.DataFrame({"configuration": table["name"]})
    view["metric"] = table["metric"].map(tables.metric_header)
    view["baseline"] = table["baseline"].map(lambda v: f"{v:.4f}")
    view["value"] = table["value"].map(lambda v: f"{v:.4f}")
    view["difference"] = table["diff"].map(lambda v: f"{v:+.4f}")
    view["interval"] = [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in pairs]
    view["level"] = table["level"].map(percent)
    view["images"] = table["n_images"].astype(str)
    view["seeds"] = [f"{a} vs {b}" for a, b in seeds]
    view["P(seed better)"] = table["p_improve"].map(lambda v: f"{v:.2f}")
    view["p"] = table["p_value"].map(_p)
    view[adjusted_p_header(table)] = table["p_adjusted"].map(_p)
    view["seeds to resolve"] = table["seeds_needed"].map(_count)
    for key, header in (("seeds_run", "seeds run"), ("stop_reason", "stopped")):
        if key in table and table[key].notna().any():
            view[header] = table[key].map(lambda v: "" if pd.isna(v) else str(v))
    view["verdict"] = [
        f"{v} †" if improved and not sig else v
        for v, improved, sig in zip(
            table["verdict"], table["improved"], table["significant"], strict=True
        )
    ]
    return view


def adjusted_p_header(table: pd.DataFrame) -> str:
    """The adjusted p column's header, with the threshold a claim needs."""
    alphas = sorted(set(table["alpha"].astype(float)))
    return f"adjusted p (claim if ≤ {' / '.join(f'{a:g}' for a in alphas)})"


def percent(level: float) -> str:
    """A confidence level in percent with the digits that tell it from 100% (99.907%)."""
    if pd.isna(level):
        return "–"
    error = 100 * (1 - float(level))
    digits = max(0, 1 - math.floor(math.log10(error))) if error > 0 else 0
    text = f"{100 * float(level):.{digits}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


def _p(value: float) -> str:
    return "–" if pd.isna(value) else f"{value:.3g}"


def _count(value: float) -> str:
    if pd.isna(value):
        return "–"
    return f"≥{int(value)}" if int(value) >= SEEDS_LIMIT else str(int(value))


def runs_view(runs: pd.DataFrame, params: tuple[str, ...], finished: bool = False) -> pd.DataFrame:
    """Trials with status and message; only the unfinished ones unless `finished`."""
    part = runs if finished else runs[runs["status"] != "finished"]
    return pd.DataFrame(
        {
            "trial": part["trial_id"],
            "run": part["run_id"],
            "evaluation": part["eval_id"].fillna(""),
            "configuration": [tables.config_name(row, params) for _, row in part.iterrows()],
            "seed": part["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))),
            "status": part["status"],
            "epochs": [_epochs(row) for _, row in part.iterrows()],
            "message": part["message"].fillna(""),
        }
    )


def _epochs(row: pd.Series) -> str:
    """'3/9': the epochs a run trained of its schedule ('' when unknown, e.g. a CSV row)."""
    done, total = row.get("epochs"), row.get("epochs_total")
    if pd.isna(done):
        return ""
    return f"{int(done)}/{int(total)}" if pd.notna(total) else f"{int(done)}"


def scales_view(per_scale: pd.DataFrame) -> pd.DataFrame:
    """Table 4 layout: configuration, resolution, then the metrics (mean over seeds)."""
    if per_scale.empty:
        return per_scale
    view = pd.DataFrame(
        {
            "configuration": per_scale["name"],
            "resolution": per_scale["scale"].map(lambda s: f"1/{2**s}" if s else "1"),
            "n": per_scale["n"].astype(str),
        }
    )
    for metric in METRIC_NAMES:
        view[tables.metric_header(metric)] = per_scale[metric].map(
            lambda v: f"{v:.{tables.DIGITS}f}"
        )
    return view


def plain_html(view: pd.DataFrame, table_id: str) -> str:
    """A display frame as an HTML table with a stable id (pandas' own renderer)."""
    return view.to_html(index=False, table_id=table_id, classes="report", border=0, escape=True)


def plain_markdown(view: pd.DataFrame) -> str:
    return view.to_markdown(index=False, disable_numparse=True) + "\n" if len(view) else "(none)\n"


def top_points(configs: pd.DataFrame, metric: str, count: int) -> pd.DataFrame:
    """The best `count` grid points by `metric` (ties in sweep order)."""
    points = grid_points(configs)
    lower = dict(tables.LOWER_IS_BETTER)[metric]
    return points.sort_values(metric, ascending=lower, kind="stable").head(count)


def effects_view(effects: pd.DataFrame) -> pd.DataFrame:
    """Parameter × metric: whether a main effect is shown (Holm-adjusted p) and the best value,
    "shown best" only where it beats every other value."""
    if effects.empty:
        return pd.DataFrame()
    table = effects.set_index(["parameter", "metric"])
    params = list(dict.fromkeys(effects["parameter"]))
    metrics = [m for m in METRIC_NAMES if m in set(effects["metric"])]
    rows = [[_effect_cell(table.loc[(p, m)]) for m in metrics] for p in params]
    headers = [tables.metric_header(m) for m in metrics]
    return pd.DataFrame(rows, columns=headers).assign(parameter=params)[["parameter", *headers]]


def _effect_cell(row: pd.Series) -> str:
    if pd.isna(row["p_value"]):
        return "not tested"
    value = tables.format_value(row["best_value"])
    if not row["significant"]:
        return f"none (p {row['p_holm']:.2g}); {value} best estimate"
    best = f"{value} shown best" if row["best_supported"] else f"{value} best estimate"
    return f"effect (p {row['p_holm']:.2g}); {best}"
