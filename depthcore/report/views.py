"""Printed forms of the secondary tables (marginals, importance, significance, runs, scales).

Each view is a DataFrame of display strings; markdown and HTML are rendered from it by pandas.
"""

from __future__ import annotations

import pandas as pd

import depthcore.report.tables as tables
from depthcore.metrics import METRIC_NAMES
from depthcore.report.marginals import grid_points
from depthcore.report.significance import SEEDS_LIMIT


def marginal_view(
    marginals: pd.DataFrame, key: str, primary: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per value of `key`: n, mean ± std per metric (best value bold), mean rank, top-k count."""
    part = marginals[marginals["parameter"] == key]
    values = list(dict.fromkeys(part["value"]))
    by = part.set_index(["value", "metric"])
    cells = pd.DataFrame({"value": [tables.format_value(v) for v in values]})
    cells["n"] = [str(int(by.loc[(v, primary), "n"])) for v in values]
    marks = pd.DataFrame("", index=cells.index, columns=list(METRIC_NAMES), dtype=object)
    for metric in METRIC_NAMES:
        cells[metric] = [_mean_std(by.loc[(v, metric)]) for v in values]
        marks[metric] = ["best" if by.loc[(v, metric), "best"] else "" for v in values]
    ranks = part.groupby("value", sort=False)["mean_rank"].mean()
    cells["mean rank (all metrics)"] = [f"{ranks[v]:.2f}" for v in values]
    k = int(part["k"].iloc[0]) if len(part) else 0
    cells[f"in top-{k} ({primary})"] = [str(int(by.loc[(v, primary), "top_k"])) for v in values]
    return cells, marks


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
    """Difference to the baseline with its 95% interval and verdict, per configuration and metric.

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
    view["95% CI"] = [f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in pairs]
    view["images"] = table["n_images"].astype(str)
    view["seeds"] = [f"{a} vs {b}" for a, b in seeds]
    view["P(seed better)"] = table["p_improve"].map(lambda v: f"{v:.2f}")
    view["p (Holm over configs)"] = table["p_value"].map(
        lambda v: "–" if pd.isna(v) else f"{v:.3g}"
    )
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
            "message": part["message"].fillna(""),
        }
    )


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
