"""Build the report of one or more sweeps (or of an imported CSV) from result files alone.

Layout: <out>/<sweep>/{ablation.md,.tex,.csv,.html, effects.csv, marginals.csv, marginals.md,
importance.csv, significance.csv, significance.md, per_scale.csv, compute.csv, compute.md,
runs.csv, summary.json, figures/*.png|pdf, report.html}, <out>/compute.csv and <out>/index.html
(docs/report.md lists them). Outputs carry no timestamps, so building twice gives identical bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

import depthcore.report.compute as compute
import depthcore.report.figures as plots
import depthcore.report.tables as tables
import depthcore.report.views as views
from depthcore import store
from depthcore.errors import ConfigError
from depthcore.metrics import METRIC_NAMES
from depthcore.report.effects import LEVEL, effects_csv, sentences, sweep_effects
from depthcore.report.html import FigureRef, Section, Table, render_index, render_report
from depthcore.report.loading import (
    BASELINE,
    SweepData,
    load_csv,
    load_sweep_results,
    select_sweeps,
)
from depthcore.report.marginals import (
    best_values,
    grid_points,
    marginal_stats,
    param_importance,
    with_effects,
)
from depthcore.report.significance import SEEDS_LIMIT, daggers, significance

FORMATS = ("md", "tex", "csv", "html")
SUMMARY_FILE = "summary.json"


def build_report(
    results_dir: str | Path,
    sweeps: Iterable[str] | None = None,
    out: str | Path | None = None,
    formats: Iterable[str] = FORMATS,
    *,
    figures: bool = True,
) -> Path:
    """Report every sweep in `<results_dir>/sweeps/*.yaml` (or only `sweeps`); returns `out`.

    Args:
        results_dir: the results store (runs/ and sweeps/).
        sweeps: sweep names (index file stems); None: all of them.
        out: output folder; default `<results_dir>/report`.
        formats: ablation-table formats among md, tex, csv, html.
        figures: False skips the figures (tables only, much faster).

    Raises ConfigError (unknown sweep or format) and DataError (no results), both exit code 2.
    """
    results = Path(results_dir)
    wanted = check_formats(formats)
    names = select_sweeps(results, list(sweeps) if sweeps else None)
    out = Path(out) if out is not None else results / "report"
    for name in names:
        write_sweep_report(load_sweep_results(results, name), out / name, wanted, figures=figures)
    compute.write_total(out, results)
    write_index(out)
    return out


def import_csv(
    csv_path: str | Path,
    out: str | Path | None = None,
    *,
    name: str | None = None,
    dataset: str | None = "kitti",
    formats: Iterable[str] = FORMATS,
    figures: bool = True,
) -> Path:
    """Report results obtained elsewhere: one CSV row per run (see docs/report.md); returns `out`.

    Args:
        csv_path: columns named like sweep keys (e.g. loss.w_c), the 7 metrics, optional seed,
            label and role ('baseline' marks the baseline row).
        out: output folder; default `report/` beside the CSV.
        name: report name; default the CSV's file name without extension.
        dataset: 'kitti' adds Monodepth2's published row on top; anything else does not.
        formats, figures: as for `build_report`.
    """
    wanted = check_formats(formats)
    data = load_csv(Path(csv_path), name=name, dataset=dataset)
    out = Path(out) if out is not None else Path(csv_path).parent / "report"
    write_sweep_report(data, out / data.name, wanted, figures=figures)
    write_index(out)
    return out


def check_formats(formats: Iterable[str]) -> tuple[str, ...]:
    wanted = tuple(dict.fromkeys(f.strip().lower() for f in formats if f.strip()))
    unknown = [f for f in wanted if f not in FORMATS]
    if unknown or not wanted:
        raise ConfigError(
            f"unknown format {', '.join(unknown) or '(none)'}; use {','.join(FORMATS)}"
        )
    return wanted


# ----------------------------------------------------------------------------------------------
# One sweep


def write_sweep_report(
    data: SweepData,
    folder: Path,
    formats: tuple[str, ...],
    *,
    figures: bool = True,
) -> Path:
    """Write every table, figure and report.html of one sweep into `folder`."""
    configs = tables.aggregate_configs(data)
    sig, sig_note = significance(data, configs)
    rows = tables.ablation_rows(configs, data)
    dagger = daggers(rows, sig)
    marks = tables.table_marks(rows)
    sections = [_ablation(data, rows, marks, dagger, folder, formats)]
    sections.append(_significance(sig, sig_note, folder))
    effects = main_effects(data)
    sections.append(_marginals(data, configs, effects, folder))
    sections.append(_per_scale(data, configs, folder, figures))
    if figures:
        sections += _figures(data, configs, effects, folder)
    if data.source == "results":
        sections.append(compute.compute_section(data, folder))
    sections.append(_runs(data, folder))
    if figures:
        _remove_stale(folder / "figures", [ref for sec in sections for ref in sec.figures])
    summary = _summary(data, configs)
    store.write_json_atomic(folder / SUMMARY_FILE, {"name": data.name, "summary": summary})
    page = render_report(f"{data.name}: ablation report", summary, sections)
    store.write_text_atomic(folder / "report.html", page)
    return folder / "report.html"


def _summary(data: SweepData, configs: pd.DataFrame) -> list[str]:
    counts = data.runs["status"].value_counts()
    states = ", ".join(f"{counts[s]} {s}" for s in sorted(counts.index))
    source = "imported CSV" if data.source == "csv" else "results store"
    lines = [
        f"{len(data.runs)} runs ({states or 'none'}); {len(configs)} configurations "
        f"with results; source: {source}; dataset: {data.dataset or 'unknown'}."
    ]
    if data.params:
        lines.append(f"Swept: {', '.join(data.params)}. Primary metric: {data.metric}.")
    lines += selection_lines(data)
    lines += evaluation_lines(data)
    return lines


def selection_lines(data: SweepData) -> list[str]:
    """What the sweep selected on (a search or a scheduler; a per-epoch validation anywhere),
    and the trials its scheduler stopped. Nothing for a grid scored on the test split."""
    uses = ["learning curves"]
    uses += ["the search's choices"] if data.design == "search" else []
    uses += ["the scheduler's stops"] if data.scheduler is not None else []
    lines = []
    if data.objective == "val":
        lines.append(
            f"Per-epoch objective: {data.metric} on held-out validation frames of the training "
            f"split ({', '.join(uses)}); the tables show the test split, evaluated once at the "
            "end of each finished trial."
        )
    elif data.objective == "test" and len(uses) > 1:
        lines.append(
            f"Selection on the test split (eval.objective: test): the trials were chosen on "
            f"{data.metric} of the same test images the tables show, so the best rows' numbers "
            "are optimistic (the winner's curse); select on validation frames for unbiased ones."
        )
    if data.scheduler is not None:
        stopped = int((data.runs["status"] == "stopped").sum())
        spec = data.scheduler
        settings = ", ".join(
            f"{key} {value:g}" if isinstance(value, (int, float)) else f"{key} {value}"
            for key, value in spec.items()
            if key != "type"
        )
        lines.append(
            f"Early stopping: {str(spec.get('type')).upper()} ({settings}) stopped {stopped} of "
            f"{len(data.runs)} trials; they are listed with the epoch they reached under "
            "Unfinished runs and left out of the tables and verdicts."
        )
    return lines


def evaluation_lines(data: SweepData) -> list[str]:
    """How the sweep's trials were evaluated: one line per evaluation id the index names."""
    lines = []
    for eval_id, settings in (data.evaluations or {}).items():
        n = int((data.runs["eval_id"] == eval_id).sum())
        shown = describe_evaluation(settings) if isinstance(settings, dict) else "?"
        lines.append(f"Evaluation {eval_id} ({n} trials): {shown}.")
    return lines


def describe_evaluation(settings: dict) -> str:
    """An evaluation's settings (Config.eval_identity) in words."""
    scales = ", ".join(str(s) for s in settings.get("scales") or [])
    images = settings.get("max_images")
    parts = [
        f"scale{'s' if len(settings.get('scales') or []) > 1 else ''} {scales}",
        "post-processed" if settings.get("post_process") else "no post-processing",
        f"first {images} test images" if images else "all test images",
        f"depth {settings.get('min_depth')} to {settings.get('max_depth')} m",
        "median scaling" if settings.get("median_scaling") else "no median scaling",
        "Garg crop" if settings.get("garg_crop") else "no Garg crop",
    ]
    for key, name in (("split_dir", "split"), ("gt_path", "ground truth")):
        if settings.get(key):
            parts.append(f"{name} {settings[key]}")
    return ", ".join(parts)


def _ablation(
    data: SweepData,
    rows: pd.DataFrame,
    marks: pd.DataFrame,
    dagger: pd.DataFrame,
    folder: Path,
    formats: tuple[str, ...],
) -> Section:
    shown, constant = tables.table_params(rows[~rows["reference"]], data.params, data.columns)
    cells = {fmt: tables.ablation_cells(rows, shown, fmt, dagger) for fmt in ("md", "tex", "html")}
    labels = data.labels
    html = tables.to_html_table(cells["html"], marks, labels=labels)
    notes = [tables.constant_note(constant, labels, fmt) for fmt in ("md", "tex", "html")]
    html_notes = [notes[2]] if notes[2] else []
    if "md" in formats:
        table = tables.to_markdown(cells["md"], marks, left=1 + len(shown), labels=labels)
        text = f"# {data.name}: ablation\n\n{table}\n{tables.LEGEND}\n"
        text += f"{notes[0]}\n" if notes[0] else ""
        store.write_text_atomic(folder / "ablation.md", text + _unfinished_note(data))
    if "tex" in formats:
        caption = " ".join(filter(None, [_caption_stub(data), notes[1], tables.TEX_LEGEND]))
        top = int(rows["reference"].sum() + (rows["role"] == BASELINE).sum())
        latex = tables.to_latex(cells["tex"], marks, caption, labels, f"tab:{data.name}", top)
        store.write_text_atomic(folder / "ablation.tex", TEX_HEADER + latex)
    if "csv" in formats:
        frame = tables.to_csv_frame(rows, marks, dagger, data.params)
        store.write_text_atomic(folder / "ablation.csv", frame.to_csv(index=False))
    if "html" in formats:
        page = render_report(
            f"{data.name}: ablation",
            [],
            [
                Section(
                    "ablation", "Ablation", [Table(html, legend=tables.LEGEND)], notes=html_notes
                )
            ],
        )
        store.write_text_atomic(folder / "ablation.html", page)
    empty = [] if len(rows) else ["No finished run yet."]
    return Section(
        "ablation", "Ablation table", [Table(html, legend=tables.LEGEND)], notes=empty + html_notes
    )


# ablation.tex's first lines: what a paper's preamble needs for it.
TEX_HEADER = "% depthsweep ablation table; needs \\usepackage{booktabs} in the preamble\n"


def _caption_stub(data: SweepData) -> str:
    """The caption's first sentence, for the author to rewrite: the sweep and the data."""
    on = {"kitti": " on KITTI (Eigen split)", "synthetic": " on synthetic data"}.get(
        data.dataset or "", ""
    )
    return f"Ablation study {tables.tex_escape(data.name)}{on}."


def _unfinished_note(data: SweepData) -> str:
    left = data.runs[data.runs["status"] != "finished"]
    if left.empty:
        return ""
    return f"\n{len(left)} run(s) without results are listed in runs.csv and report.html.\n"


def _significance(sig: pd.DataFrame, note: str, folder: Path) -> Section:
    store.write_text_atomic(folder / "significance.csv", sig.to_csv(index=False))
    section = Section("significance", "Difference to the baseline (seeds and images)")
    md = ["# Difference to the baseline\n"]
    if note:  # why nothing was tested, or which configurations the rows leave out
        section.notes.append(note)
        md.append(note + "\n")
    if not sig.empty:
        view = views.significance_view(sig)
        section.tables.append(Table(views.plain_html(view, "significance"), legend=SIG_LEGEND))
        reading = how_to_read(sig)
        section.notes += reading
        md += ["## How to read it\n", *(f"- {line}" for line in reading), ""]
        md += [views.plain_markdown(view), SIG_LEGEND + "\n"]
    store.write_text_atomic(folder / "significance.md", "\n".join(md))
    return section


def how_to_read(sig: pd.DataFrame) -> list[str]:
    """Plain sentences for the significance section: seeds per row, what the interval covers, at
    which level each row was judged and why, and how many seeds the rows would need."""
    seeds = sorted(set(zip(sig["n_seeds"], sig["n_seeds_baseline"], strict=True)))
    counts = ", ".join(f"{a} vs {b}" for a, b in seeds)
    alpha = float(sig["alpha"].iloc[0])
    family = sig.groupby("metric")["p_sequential"].count().max()
    raced = "stop_reason" in sig and sig["stop_reason"].notna().any()
    judged = (
        f"Per metric the {family} tested configurations are one family: a difference is claimed "
        f"where the adjusted p (Holm over the configurations) is at most {alpha:g}, so the "
        f"chance of any false claim per metric stays at most {alpha:g}. 'level' is the level "
        f"the row was judged at, 1 - {alpha:g}/k at Holm's step with k configurations left"
        f"{' times its look share' if raced else ''}; the interval is at that level and "
        "excludes 0 exactly where a difference is claimed ('p' is the row's own test; a "
        "lone 95% test is significance.csv's significant_unadjusted)."
        if family
        else f"No row has 2+ seeds on both sides: nothing is tested, 'level' is {1 - alpha:g}."
    )
    lines = [
        f"Seeds per row (configuration vs baseline): {counts}. A row with 1 seed on either side "
        "cannot test training variance and never claims a difference.",
        "The interval of a row with 2+ seeds per side covers seed (training) and test-image "
        "variance: each run is averaged over the images both sides scored, and a Welch t "
        "interval is put on the difference of the seed means. 1-seed rows show an interval "
        "over test images only.",
        judged,
    ]
    if raced:
        lines.append(
            "Raced sweep: each row uses the seeds of the look its verdict rests on (the race's "
            "own seeds, the baseline's included), and its p-value enters Holm divided by that "
            "look's share of the error rate (the smallest over the looks). On the sweep's "
            "metric the verdicts are the race's decisions ('stopped'): the report replays the "
            "race from the run folders with the same rule."
        )
    needed = sig.loc[~sig["significant"].astype(bool), "seeds_needed"].dropna()
    if len(needed):
        lines.append(
            "'seeds to resolve': seeds per side a test with fixed seeds at the row's Holm level "
            f"(1 - {alpha:g}/k) needs to detect a difference of the row's size with 80% power, "
            "from the measured seed spread; rows without a claim need "
            f"{int(needed.min())} to {int(needed.max())}"
            f"{'' if needed.max() < SEEDS_LIMIT else ' or more'}."
        )
    else:
        lines.append(
            "'seeds to resolve' (from the measured seed spread) needs 2+ seeds on one side."
        )
    return lines


def _marginals(
    data: SweepData, configs: pd.DataFrame, effects: pd.DataFrame, folder: Path
) -> Section:
    store.write_text_atomic(folder / "effects.csv", effects_csv(effects).to_csv(index=False))
    marg = with_effects(marginal_stats(configs, data.params), effects)
    store.write_text_atomic(folder / "marginals.csv", marg.to_csv(index=False))
    importance, why = param_importance(configs, data.params)
    store.write_text_atomic(folder / "importance.csv", importance.to_csv(index=False))
    section = Section("marginals", "Edge distribution (marginal statistics per hyperparameter)")
    lead = effect_lead(effects, data.metric)
    section.notes += [*lead, EFFECTS_NOTE, MARGINALS_NOTE]
    md = [f"# {data.name}: edge distribution\n", "## Main effects\n"]
    md += [*(f"- {line}" for line in lead), "", EFFECTS_NOTE + "\n"]
    view = views.effects_view(effects)
    if len(view):
        _add_table(section, md, view, "effects", EFFECTS_CAPTION)
    md.append(MARGINALS_NOTE + "\n")
    level = float(effects["level"].iloc[0]) if len(effects) else LEVEL
    for key in dict.fromkeys(marg["parameter"]):
        cells, marks = views.marginal_view(marg, key, data.metric, level)
        md += [f"## {key}\n", tables.to_markdown(cells, marks)]
        uuid = f"marginals-{_slug(key)}"
        html = tables.to_html_table(cells, marks, uuid=uuid, css_class="marginals")
        section.tables.append(Table(html, caption=key))
    if marg.empty:
        section.notes.append("No swept hyperparameter with finished grid points.")
    best = views.best_view(best_values(marg))
    _add_table(section, md, best, "best-values", BEST_CAPTION)
    if why:
        section.notes.append(f"Parameter importance not computed: {why}.")
        md += [f"## {IMPORTANCE_CAPTION}\n", f"Not computed: {why}.\n"]
    else:
        view = views.importance_view(importance, data.params)
        _add_table(section, md, view, "importance", IMPORTANCE_CAPTION)
    store.write_text_atomic(folder / "marginals.md", "\n".join(md))
    return section


def main_effects(data: SweepData) -> pd.DataFrame:
    """The factor model of every metric over the sweep's finished runs, baseline left out."""
    runs = data.runs[(data.runs["status"] == "finished") & (data.runs["role"] != BASELINE)]
    return sweep_effects(runs, data.params, search=data.design == "search")


def effect_lead(effects: pd.DataFrame, primary: str) -> list[str]:
    """The sentences that lead the edge distribution: one per parameter, or one for the whole
    design when no parameter could be tested for the same reason."""
    if effects.empty:
        return ["Main effects: no swept hyperparameter takes two values among the finished runs."]
    notes = set(effects.loc[effects["p_value"].isna(), "note"])
    if effects["p_value"].isna().all() and len(notes) == 1:
        return [f"Main effects not tested: {notes.pop()}."]
    return sentences(effects, primary)


def _add_table(section: Section, md: list[str], view: pd.DataFrame, uid: str, caption: str) -> None:
    md += [f"## {caption}\n", views.plain_markdown(view)]
    section.tables.append(Table(views.plain_html(view, uid), caption=caption))


BEST_CAPTION = (
    "Best value per hyperparameter and metric ((estimate): not shown better than every other value)"
)
EFFECTS_CAPTION = "Main effects per metric (Holm-adjusted p over the parameters; best value)"
EFFECTS_NOTE = (
    "Main effects: each configuration's mean over its seeds is modelled as the sum of one effect "
    "per swept hyperparameter (categorical); the residual (interactions and seed noise) is the "
    "error term, so one seed per configuration can show a main effect that no single row shows. "
    "Type-II F test per parameter, Holm over the parameters per metric; 'shown best' needs the "
    "best value's estimated mean to beat every other value's (t tests, Holm within the "
    "parameter). effects.csv has every number; docs/statistics.md the model and its limits."
)
IMPORTANCE_CAPTION = "Parameter importance (Optuna PED-ANOVA, normalised per metric)"
SIG_LEGEND = (
    "Per-image metrics (scale 0) of each run, paired by image with the baseline; difference of "
    "the configuration's and the baseline's means with its interval at the row's level (Welch t "
    "on seed means; images only with 1 seed). Level: where the row was judged, 1 - alpha/k at "
    "Holm's step with k configurations left (for a raced sweep times the share of its look). "
    "P(seed better): chance a random seed of the configuration beats a random seed of the "
    "baseline. p: the row's own test; adjusted p: Holm over the configurations (and the race's "
    "looks), a difference is claimed where it is at most the threshold in its header. † marks "
    "an improvement that is not claimed."
)
MARGINALS_NOTE = (
    "Unit: one configuration (seeds averaged); the baseline is left out. Cells: mean ± std over "
    "the configurations with that value; bold: the best value of a metric, shown better than "
    "every other value; italic: the best by point estimate only. Mean rank: 1 = best "
    "(ties averaged). Top-k: how many of the value's configurations rank among the best k "
    "(k = a quarter of the configurations). Medians and per-metric ranks: marginals.csv."
)


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in text)


# ----------------------------------------------------------------------------------------------
# Per-scale comparison (Table 4)


def per_scale_table(data: SweepData, configs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the evaluations' metrics_by_scale, for configurations with 2+ scales."""
    rows = []
    for _, config in configs.iterrows():
        runs = data.runs[
            (data.runs["config"] == config["config"]) & (data.runs["status"] == "finished")
        ]
        by_run = [store.read_scales(d) for d in runs["eval_dir"] if d]
        scales = sorted({s for r in by_run for s in r})
        if len(scales) < 2:
            continue
        for scale in scales:
            values = pd.DataFrame([r[scale] for r in by_run if scale in r])
            rows.append(
                {
                    "config": config["config"],
                    "name": config["name"],
                    "scale": scale,
                    "n": len(values),
                    **values.mean().to_dict(),
                }
            )
    return pd.DataFrame(rows, columns=["config", "name", "scale", "n", *METRIC_NAMES])


# Configurations in the per-scale table and plot (a legend of 55 lines reads as none).
PER_SCALE_SHOWN = 8


def shown_per_scale(
    table: pd.DataFrame, configs: pd.DataFrame, metric: str, limit: int = PER_SCALE_SHOWN
) -> tuple[pd.DataFrame, str | None]:
    """The per-scale rows to display and a note: all of them, or, past `limit` configurations,
    the baseline and the best configurations by `metric` (their final, scale-0 value)."""
    names = list(dict.fromkeys(table["config"]))
    if len(names) <= limit:
        return table, None
    keep, which = baseline_and_best(configs, names, metric, limit)
    note = (
        f"{len(names)} configurations were evaluated at several scales; shown are {which}. "
        "per_scale.csv has them all."
    )
    return table[table["config"].isin(keep)], note


def baseline_and_best(
    configs: pd.DataFrame, names: list[str], metric: str, limit: int
) -> tuple[set[str], str]:
    """Of the configurations `names` (config keys), the baseline and the best by `metric`, at
    most `limit` in all, and how a note says so ('the baseline and the 7 best by abs_rel')."""
    candidates = configs[configs["config"].isin(names)]
    baseline = candidates[candidates["role"] == BASELINE].head(1)
    best = views.top_points(candidates, metric, limit - len(baseline))
    which = f"{'the baseline and ' if len(baseline) else ''}the {len(best)} best by {metric}"
    return set(baseline["config"]) | set(best["config"]), which


def _per_scale(data: SweepData, configs: pd.DataFrame, folder: Path, plot: bool) -> Section:
    table = per_scale_table(data, configs)
    store.write_text_atomic(folder / "per_scale.csv", table.to_csv(index=False))
    section = Section("per-scale", "Per-scale comparison (Table 4)")
    table, note = shown_per_scale(table, configs, data.metric)
    if note:
        section.notes.append(note)
    if not table.empty:
        view = views.scales_view(table)
        section.tables.append(Table(views.plain_html(view, "per-scale")))
    fig = plots.per_scale_plot(table) if plot else None
    if fig is not None:
        section.figures.append(
            _save(fig, folder, "per_scale", "Metrics per evaluated decoder scale")
        )
    return section


# ----------------------------------------------------------------------------------------------
# Figures


def _save(fig: plots.Figure | dict[str, bytes], folder: Path, stem: str, caption: str) -> FigureRef:
    plots.save_figure(fig, folder / "figures", stem)
    return FigureRef(stem, caption, folder / "figures" / f"{stem}.png")


def _figures(
    data: SweepData, configs: pd.DataFrame, effects: pd.DataFrame, folder: Path
) -> list[Section]:
    """Learning curves, marginal plots, predictions and Figure 1."""
    curves = Section("curves", "Learning curves")
    preds = Section("predictions", "Depth predictions (Figures 3-4)")
    marg = Section("marginal-plots", "Marginal plots")
    analytic = Section("ssim", "SSIM surfaces (Figure 1)")
    fig, note = _learning_curves(data, configs)
    if fig is not None:
        caption = (
            "Train loss and per-epoch metrics (validation frames where a run recorded them, "
            "else the test split) of " + ("every run" if note is None else "runs")
        )
        if (data.runs["status"] == "stopped").any():
            caption += "; grey: runs stopped early, a cross where each stopped"
        curves.figures.append(_save(fig, folder, "learning_curves", caption))
    if note is not None:
        curves.notes.append(note)
    marginals = with_effects(marginal_stats(configs, data.params), effects)
    fig = plots.marginal_plots(marginals, grid_points(configs), data.metric)
    if fig is not None:
        marg.figures.append(_save(fig, folder, "marginals", MARGINAL_PLOT_CAPTION))
    chosen = _chosen_predictions(data, configs)
    for stem, make, caption in PREDICTION_FIGURES:
        fig = make(chosen)
        if fig is not None:
            preds.figures.append(_save(fig, folder, stem, caption))
    analytic.figures.append(
        _save(plots.ssim_surfaces_rendered(), folder, "ssim_surfaces", FIG1_CAPTION)
    )
    return [marg, curves, preds, analytic]


MARGINAL_PLOT_CAPTION = (
    "Per hyperparameter: the primary metric per value (configurations grey; blue: the factor "
    "model's estimated mean with its 95% interval, or mean ± std where the model could not be "
    "fitted; star: the best value, filled where shown better than every other value, hollow "
    "where best by point estimate only) and the mean rank of each value for every metric "
    "(1 = best)."
)
FIG1_CAPTION = (
    "SSIM_m = 1 - x^a ((1+y)/2)^b for (a, b) = (1, 1), (2, 2), (3, 3), and SSIM_a = "
    "0.5 (1 - x) + 0.5 (1 - (1+y)/2); x: luminance-contrast part in [0, 1], y: structure "
    "in [-1, 1]."
)
PREDICTION_FIGURES = (
    (
        "predictions",
        plots.predictions_grid,
        "Scale-0 disparity (magma, capped at the 95th percentile) on the same test images",
    ),
    (
        "predictions_scales",
        plots.predictions_by_scale,
        "Disparity of each evaluated decoder scale, first common test image",
    ),
)


# Configurations in the learning curves: past this, the baseline and the best (as per scale).
CURVES_SHOWN = PER_SCALE_SHOWN


def _learning_curves(
    data: SweepData, configs: pd.DataFrame
) -> tuple[plots.Figure | None, str | None]:
    """Every run's curves, or past CURVES_SHOWN configurations, the baseline's and the best
    configurations' (a legend of 55 lines in reused colours reads as none), and a note."""
    curves = _curves(data, data.runs["status"] != "stopped")
    stopped = [
        (name, records) for _, name, records in _curves(data, data.runs["status"] == "stopped")
    ]
    keys = list(dict.fromkeys(key for key, _, _ in curves))
    note = None
    if len(keys) > CURVES_SHOWN:
        keep, which = baseline_and_best(configs, keys, data.metric, CURVES_SHOWN)
        curves = [c for c in curves if c[0] in keep]
        note = (
            f"{len(keys)} configurations have learning curves; shown are {which} (finished "
            "runs)" + (", and every run stopped early" if stopped else "") + ". Each run's "
            "metrics.jsonl has its curves."
        )  # fmt: skip
    shown = [(name, records) for _, name, records in curves]
    return plots.learning_curves(shown, stopped), note


def _curves(data: SweepData, which: pd.Series) -> list[tuple[str, str, list[dict[str, object]]]]:
    """(config key, configuration name, metrics.jsonl records) of the runs `which` selects
    that logged any."""
    out = []
    for _, row in data.runs[which].iterrows():
        records = store.read_curves(row["run_dir"]) if row["run_dir"] else []
        if records:
            out.append((row["config"], tables.config_name(row, data.params), records))
    return out


def _chosen_predictions(data: SweepData, configs: pd.DataFrame) -> list[tuple[str, dict]]:
    """The baseline and the two best grid points by the primary metric, where predictions exist."""
    chosen = pd.concat(
        [configs[configs["role"] == BASELINE].head(1), views.top_points(configs, data.metric, 2)]
    )
    picked = []
    for _, config in chosen.iterrows():
        runs = data.runs[
            (data.runs["config"] == config["config"]) & (data.runs["status"] == "finished")
        ]
        for folder in runs["eval_dir"]:
            pred = store.read_predictions(folder) if folder else None
            if pred is not None:
                picked.append((config["name"], pred))
                break
    return picked


def _remove_stale(folder: Path, kept: list[FigureRef]) -> None:
    """Drop figure files a previous build wrote that this build did not (a run was removed)."""
    names = {f"{ref.stem}.{ext}" for ref in kept for ext in plots.FORMATS}
    for path in sorted(folder.glob("*")):
        if path.suffix in (".png", ".pdf") and path.name not in names:
            path.unlink()


# ----------------------------------------------------------------------------------------------
# Runs, index


def _runs(data: SweepData, folder: Path) -> Section:
    table = views.runs_view(data.runs, data.params, finished=True)
    store.write_text_atomic(folder / "runs.csv", table.to_csv(index=False))
    left = views.runs_view(data.runs, data.params)
    section = Section("runs", "Unfinished runs (missing, failed, stopped early)")
    if left.empty:
        section.notes.append("Every run of the sweep has finished.")
    else:
        section.tables.append(Table(views.plain_html(left, "unfinished-runs")))
    return section


def write_index(out: Path) -> Path:
    """<out>/index.html linking every <out>/<sweep>/report.html (sorted by folder name)."""
    entries = []
    for page in sorted(Path(out).glob("*/report.html")):
        info = store.read_json(page.parent / SUMMARY_FILE) or {}
        summary = " ".join(info.get("summary") or [])
        entries.append(
            {
                "name": page.parent.name,
                "href": f"{page.parent.name}/report.html",
                "summary": summary,
            }
        )
    store.write_text_atomic(Path(out) / "index.html", render_index(entries))
    return Path(out) / "index.html"
