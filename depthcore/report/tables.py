"""The ablation table in the paper's layout: swept hyperparameters, then the 7 metrics.

Reference rows come first (Monodepth2's published row for KITTI, then the baseline run). In each
metric column the best value is bold and the second best underlined (direction-aware, compared at
the printed precision, so printed ties are marked alike). With several seeds a cell reads
mean ± std and an `n` column appears; a dagger marks an improvement over the baseline that the
report does not claim (significance.py: no difference shown after Holm, or a single seed).
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Callable

import pandas as pd
from pandas.io.formats.style import Styler

from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.report.loading import BASELINE, SweepData

DIGITS = 3
HEADERS = {
    "abs_rel": "AbsRel",
    "sq_rel": "SqRel",
    "rmse": "RMS",
    "rmse_log": "RMSlog",
    "a1": "δ<1.25",
    "a2": "δ<1.25²",
    "a3": "δ<1.25³",
}
TEX_HEADERS = {
    "abs_rel": "AbsRel",
    "sq_rel": "SqRel",
    "rmse": "RMS",
    "rmse_log": "RMSlog",
    "a1": "$\\delta<1.25$",
    "a2": "$\\delta<1.25^2$",
    "a3": "$\\delta<1.25^3$",
}
MONODEPTH2_NAME = "Monodepth2 (Godard et al., ICCV 2019)"
MONODEPTH2 = dict(zip(METRIC_NAMES, (0.115, 0.903, 4.863, 0.193, 0.877, 0.959, 0.981), strict=True))
DAGGER = {"md": "†", "html": "†", "tex": "$^\\dagger$"}
PLUS_MINUS = {"md": " ± ", "html": " ± ", "tex": " $\\pm$ "}
EMPTY = {"md": "–", "html": "–", "tex": "--"}
LEGEND = (
    "Best value per metric in bold, second best underlined (↓ lower is better, ↑ higher is "
    "better; ties at the printed precision are marked alike; the published reference row is not "
    "ranked). "
    "Cells with n > 1 show mean ± std over n seeds. † marks an improvement over the baseline "
    "that the report does not claim: no difference shown by the seed-aware test (Welch t on "
    "seed means, Holm-adjusted over the configurations), or only 1 seed, which leaves training "
    "variance untested."
)
TEX_LEGEND = (
    "Best value per metric in bold, second best underlined; the published reference row is "
    "not ranked. "
    "With $n>1$ seeds: mean $\\pm$ std. $^\\dagger$: improvement over the baseline not "
    "claimed (no difference shown by a Welch t test on seed means, Holm-adjusted, "
    "or a single seed)."
)


def metric_header(metric: str, fmt: str = "md") -> str:
    """Column header with the direction arrow, e.g. 'AbsRel↓' (LaTeX: 'AbsRel$\\downarrow$')."""
    lower = LOWER_IS_BETTER[metric]
    if fmt != "tex":
        return HEADERS[metric] + ("↓" if lower else "↑")
    arrow = "\\downarrow" if lower else "\\uparrow"
    header = TEX_HEADERS[metric]
    return header[:-1] + arrow + "$" if header.endswith("$") else f"{header}${arrow}$"


def format_value(value: object) -> str:
    """A hyperparameter value as printed: 0.5, 3 (not 3.0), text as is, '' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, "g")
    return str(value)


def short_names(params: tuple[str, ...]) -> dict[str, str]:
    """Last dotted component of each key, unless two keys would then read the same."""
    last = [p.rsplit(".", 1)[-1] for p in params]
    return {p: (s if last.count(s) == 1 else p) for p, s in zip(params, last, strict=True)}


def config_name(row: pd.Series, params: tuple[str, ...]) -> str:
    """How a configuration is named in plots and lists: its label, or its swept values."""
    if isinstance(row.get("label"), str) and row["label"]:
        return row["label"]
    if row.get("role") == BASELINE:
        return "Baseline"
    short = short_names(params)
    parts = [f"{short[p]}={format_value(row[p])}" for p in params if format_value(row[p])]
    return ", ".join(parts) or "default"


# ----------------------------------------------------------------------------------------------
# Aggregation over seeds


def aggregate_configs(data: SweepData) -> pd.DataFrame:
    """One row per configuration with a finished run: n, mean and std (over seeds) per metric.

    Baseline configurations come first, then the others in the sweep's order.
    """
    columns = ["config", "label", "role", *data.params]
    done = data.runs[
        (data.runs["status"] == "finished") & data.runs[list(METRIC_NAMES)].notna().any(axis=1)
    ]
    if done.empty:
        empty = pd.DataFrame(columns=[*columns, "name", "n", *METRIC_NAMES])
        return empty.assign(**{f"{m}_std": [] for m in METRIC_NAMES})
    groups = done.groupby("config", sort=False)
    table = groups[columns[1:]].first().reset_index()
    table["n"] = groups.size().to_numpy()
    means = groups[list(METRIC_NAMES)].mean().to_numpy()
    stds = groups[list(METRIC_NAMES)].std(ddof=1).to_numpy()
    for j, metric in enumerate(METRIC_NAMES):
        table[metric] = means[:, j]
        table[f"{metric}_std"] = stds[:, j]
    table.insert(3, "name", [config_name(row, data.params) for _, row in table.iterrows()])
    order = table["role"].eq(BASELINE).map({True: 0, False: 1}).to_numpy()
    return table.iloc[pd.Series(order).argsort(kind="stable").to_numpy()].reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Best / second best


def rank_marks(values: pd.DataFrame, digits: int = DIGITS) -> pd.DataFrame:
    """'best' / 'second' / '' per cell, per metric column, compared at `digits` decimals.

    Args:
        values: (rows, metrics) numbers; columns named after METRIC_NAMES.
    """
    marks = pd.DataFrame("", index=values.index, columns=values.columns, dtype=object)
    for metric in values.columns:
        printed = values[metric].map(lambda v: float(f"{v:.{digits}f}"))
        key = printed if LOWER_IS_BETTER[metric] else -printed
        ranks = key.rank(method="dense")
        marks.loc[ranks == 1, metric] = "best"
        marks.loc[ranks == 2, metric] = "second"
    return marks


# ----------------------------------------------------------------------------------------------
# The table as data: rows, cell texts, marks


def ablation_rows(configs: pd.DataFrame, data: SweepData) -> pd.DataFrame:
    """The rows in print order: references on top, then configurations; `reference` flags them."""
    rows = configs.assign(reference=False)
    rows["method"] = [_method(row) for _, row in rows.iterrows()]
    if data.dataset == "kitti":
        ref = {"method": MONODEPTH2_NAME, "reference": True, "n": 1, **MONODEPTH2}
        rows = (
            pd.concat([pd.DataFrame([ref]), rows], ignore_index=True)
            if len(rows)
            else pd.DataFrame([ref])
        )
    return rows.reset_index(drop=True)


def table_params(
    configs: pd.DataFrame, params: tuple[str, ...], columns: tuple[str, ...] | None = None
) -> tuple[tuple[str, ...], dict[str, object]]:
    """The swept keys the ablation table shows, in order, and the constant ones it leaves out.

    `columns` (the sweep file's `report.columns`) picks and orders them; otherwise every key some
    configuration sets (`shown_params`), less the keys with one value on every configuration but
    the baseline (Table 1's `loss.photometric: ssim_m`), which a caption note says instead.
    """
    if columns is not None:
        return tuple(k for k in columns if k in params), {}
    shown = shown_params(configs, params)
    constant = constant_params(configs, shown)
    return tuple(k for k in shown if k not in constant), constant


def constant_params(configs: pd.DataFrame, keys: tuple[str, ...]) -> dict[str, object]:
    """Keys set to one and the same value on every configuration but the baseline (2 or more)."""
    points = configs[configs["role"] != BASELINE]
    if len(points) < 2:
        return {}
    return {
        key: points[key].iloc[0]
        for key in keys
        if points[key].notna().all() and points[key].nunique() == 1
    }


def constant_note(constant: dict[str, object], labels: dict[str, str], fmt: str = "md") -> str:
    """'All configurations but the baseline have loss.photometric = ssim_m.' (or '')."""
    if not constant:
        return ""
    parts = [f"{header_label(k, labels, fmt)} = {_text(format_value(v), fmt)}" for k, v in
             constant.items()]  # fmt: skip
    return f"Every configuration but the baseline has {', '.join(parts)}."


def _text(text: str, fmt: str) -> str:
    return tex_escape(text) if fmt == "tex" else text


def header_label(key: str, labels: dict[str, str], fmt: str) -> str:
    """A swept key's column header: its label (report.labels) or the key itself.

    LaTeX: a label's `$...$` parts are math and stay as written, the rest is escaped, and so is a
    raw key; HTML: math delimiters dropped and Greek letter commands as letters (\\alpha -> α);
    markdown: the label as written (GitHub renders $...$).
    """
    label = labels.get(key)
    if fmt == "tex":
        return tex_label(label) if label else tex_escape(key)
    if fmt == "html":
        return plain_label(label) if label else key
    return label or key


def tex_label(text: str) -> str:
    """LaTeX for a label: text between unescaped `$` pairs is math (verbatim), the rest escaped."""
    parts = re.split(r"(?<!\\)\$", text)
    if len(parts) % 2 == 0:  # an unpaired $: all text
        return tex_escape(text)
    return "".join(f"${p}$" if i % 2 else tex_escape(p) for i, p in enumerate(parts))


def plain_label(text: str) -> str:
    """A label without LaTeX markup: $ dropped, \\alpha -> α (unicodedata's Greek names)."""
    parts = re.split(r"(?<!\\)\$", text)
    if len(parts) % 2 == 0:
        return text
    return "".join(_plain_math(p) if i % 2 else p for i, p in enumerate(parts))


def _plain_math(math_text: str) -> str:
    def letter(match: re.Match[str]) -> str:
        name = match.group(1)
        case = "CAPITAL" if name[0].isupper() else "SMALL"
        try:
            return unicodedata.lookup(f"GREEK {case} LETTER {name.upper()}")
        except KeyError:
            return match.group(0)

    return re.sub(r"\\([A-Za-z]+)", letter, math_text).replace("{", "").replace("}", "")


def shown_params(configs: pd.DataFrame, params: tuple[str, ...]) -> tuple[str, ...]:
    """Swept keys that some non-baseline configuration sets (a key only the baseline sets, such
    as `loss.photometric: standard`, is said by its 'Baseline' label, as in the paper)."""
    points = configs[configs["role"] != BASELINE]
    if points.empty:
        return params
    return tuple(p for p in params if points[p].notna().any())


def _method(row: pd.Series) -> str:
    if isinstance(row.get("label"), str) and row["label"]:
        return row["label"]
    return "Baseline" if row.get("role") == BASELINE else ""


def ablation_cells(
    rows: pd.DataFrame, params: tuple[str, ...], fmt: str, daggers: pd.DataFrame
) -> pd.DataFrame:
    """Printed text of every cell (no bold/underline yet) for fmt in md, tex, html."""
    multi = bool(len(rows)) and rows["n"].max() > 1
    cells = pd.DataFrame({"Method": rows["method"].fillna("")})
    for key in params:
        cells[key] = rows[key].map(format_value)
    if multi:
        cells["n"] = [
            str(int(n)) if not r else "" for n, r in zip(rows["n"], rows["reference"], strict=True)
        ]
    for metric in METRIC_NAMES:
        cells[metric] = [
            _cell(rows, i, metric, fmt, bool(daggers.at[i, metric])) for i in rows.index
        ]
    return cells


def _cell(rows: pd.DataFrame, i: int, metric: str, fmt: str, dagger: bool) -> str:
    mean = rows.at[i, metric]
    if pd.isna(mean):
        return EMPTY[fmt]
    text = f"{mean:.{DIGITS}f}"
    std = rows.at[i, f"{metric}_std"]
    if rows.at[i, "n"] > 1 and not pd.isna(std):
        text += f"{PLUS_MINUS[fmt]}{std:.{DIGITS}f}"
    return text + (DAGGER[fmt] if dagger else "")


def table_marks(rows: pd.DataFrame) -> pd.DataFrame:
    """Marks for every row; reference rows are never ranked."""
    marks = pd.DataFrame("", index=rows.index, columns=list(METRIC_NAMES), dtype=object)
    ranked = rows.index[~rows["reference"].astype(bool)]
    if len(ranked):
        marks.loc[ranked] = rank_marks(rows.loc[ranked, list(METRIC_NAMES)].astype(float))
    return marks


# ----------------------------------------------------------------------------------------------
# Rendering


def to_markdown(
    cells: pd.DataFrame,
    marks: pd.DataFrame,
    left: int = 1,
    labels: dict[str, str] | None = None,
) -> str:
    """Pipe table; bold as **x**, underline as <ins>x</ins>, italic as *x* (GitHub renders all).

    Args:
        left: how many leading (text) columns are left-aligned; the rest are right-aligned.
        labels: column headers for swept keys (`header_label`).
    """
    wrap = {"best": "**{}**", "second": "<ins>{}</ins>", "estimate": "*{}*", "": "{}"}
    shown = cells.copy()
    for metric in METRIC_NAMES:
        shown[metric] = [
            wrap[m].format(t) for t, m in zip(cells[metric], marks[metric], strict=True)
        ]
    shown.columns = _headers(cells, "md", labels)
    return (
        shown.to_markdown(index=False, disable_numparse=True, colalign=_align(cells, left)) + "\n"
    )


def to_latex(
    cells: pd.DataFrame,
    marks: pd.DataFrame,
    caption: str,
    labels: dict[str, str] | None = None,
    label: str | None = None,
    top: int = 0,
) -> str:
    """A booktabs table (\\toprule/\\midrule/\\bottomrule, no vertical rules) in a table
    float with a caption (and `\\label{label}`); needs `\\usepackage{booktabs}`.

    Cell text and raw keys are escaped; a label's `$...$` is math (`tex_label`). The method
    column is left-aligned, hyperparameters centred, numbers right-aligned; a \\midrule
    follows the first `top` rows (the references and the baseline) when more rows follow.
    """
    css = {
        "best": "textbf: --rwrap;",
        "second": "underline: --rwrap;",
        "estimate": "textit: --rwrap;",
        "": "",
    }
    styler = _styler(cells, marks, css, "ablation", _headers(cells, "tex", labels))
    text_columns = [
        h for c, h in zip(cells.columns, styler.columns, strict=True) if c not in METRIC_NAMES
    ]
    styler = styler.format(escape="latex", subset=text_columns)
    align = {"Method": "l", "n": "r", **dict.fromkeys(METRIC_NAMES, "r")}
    fmt = "".join(align.get(str(c), "c") for c in cells.columns)
    latex = styler.to_latex(
        hrules=True, column_format=fmt, caption=caption, label=label, position_float="centering"
    )
    return _midrule_after(latex, top) if 0 < top < len(cells) else latex


def _midrule_after(latex: str, rows: int) -> str:
    """Insert a \\midrule after the first `rows` body rows (one line each, as Styler writes)."""
    lines = latex.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("\\midrule"))
    at = start + 1 + rows
    return "".join([*lines[:at], "\\midrule\n", *lines[at:]])


def to_html_table(
    cells: pd.DataFrame,
    marks: pd.DataFrame,
    uuid: str = "ablation",
    css_class: str = "ablation",
    labels: dict[str, str] | None = None,
) -> str:
    """An HTML <table id="T_<uuid>"> (with its <style>) marking cells by CSS; fixed ids."""
    css = {
        "best": "font-weight: bold;",
        "second": "text-decoration: underline;",
        "estimate": "font-style: italic;",
        "": "",
    }
    styler = _styler(cells, marks, css, uuid, _headers(cells, "html", labels))
    return styler.set_table_attributes(f'class="{css_class}"').to_html()


def _styler(
    cells: pd.DataFrame, marks: pd.DataFrame, css: dict[str, str], uuid: str, headers: list[str]
) -> Styler:
    shown = cells.set_axis(headers, axis=1)
    styles = pd.DataFrame("", index=shown.index, columns=shown.columns, dtype=object)
    for metric, header in zip(cells.columns, headers, strict=True):
        if metric in METRIC_NAMES:
            styles[header] = marks[metric].map(css)
    styler = shown.style.hide(axis="index").set_uuid(uuid)
    return styler.apply(lambda _: styles, axis=None)


def _headers(cells: pd.DataFrame, fmt: str, labels: dict[str, str] | None = None) -> list[str]:
    def header(column: str) -> str:
        return metric_header(column, fmt) if column in METRIC_NAMES else label(column)

    label: Callable[[str], str] = functools.partial(header_label, labels=labels or {}, fmt=fmt)
    return [header(str(c)) for c in cells.columns]


def _align(cells: pd.DataFrame, left: int) -> tuple[str, ...]:
    return tuple("left" if i < left else "right" for i in range(len(cells.columns)))


def tex_escape(text: str) -> str:
    """Escape LaTeX's special characters in plain text (headers, labels)."""
    table = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(table.get(ch, ch) for ch in text)


def to_csv_frame(
    rows: pd.DataFrame, marks: pd.DataFrame, daggers: pd.DataFrame, params: tuple[str, ...]
) -> pd.DataFrame:
    """Numbers behind the table: per metric its mean, std, mark and not-significant flag (the
    dagger: an improvement the report does not claim)."""
    out = pd.DataFrame({"method": rows["method"].fillna(""), "reference": rows["reference"]})
    out["role"] = rows["role"]
    for key in params:
        out[key] = rows[key]
    out["n"] = rows["n"].astype(int)
    for metric in METRIC_NAMES:
        out[metric] = rows[metric]
        out[f"{metric}_std"] = rows[f"{metric}_std"]
        out[f"{metric}_mark"] = marks[metric]
        out[f"{metric}_not_significant"] = daggers[metric].astype(bool)
    return out
