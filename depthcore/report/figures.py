"""Figures as PNG + PDF, byte-identical across runs (matplotlib's Agg and PDF renderers).

Figure 1's SSIM surfaces, learning curves, marginal plots, depth predictions (Figures 3-4) and
the per-scale comparison (Table 4).

Figures are built on `matplotlib.figure.Figure` (no pyplot state) and saved with fixed metadata.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from depthcore import store
from depthcore.metrics import METRIC_NAMES, is_finite_number
from depthcore.report.tables import metric_header

if TYPE_CHECKING:
    # Type-only, so a matplotlib older than this alias (the floor is 3.8) still imports us.
    from matplotlib.typing import RcKeyType

FORMATS = ("png", "pdf")
DPI = 110
# Keyed by matplotlib's own rc-key Literal, so mypy rejects a misspelt key.
RC: dict[RcKeyType, Any] = {
    "svg.hashsalt": "depthsweep",
    "pdf.compression": 6,
    "font.size": 8,
    "axes.titlesize": 8,
    "legend.fontsize": 6,
    "image.cmap": "magma",
}
METADATA = {
    "png": {"Software": None},
    "pdf": {"Creator": None, "Producer": None, "CreationDate": None, "ModDate": None},
    "svg": {"Date": None, "Creator": None},
}
CURVE_METRICS = ("abs_rel", "rmse", "a1")


def render(fig: Figure) -> dict[str, bytes]:
    """The figure as PNG and PDF bytes, with fixed metadata (no dates, no versions)."""
    rendered = {}
    with matplotlib.rc_context(RC):
        for ext in FORMATS:
            buffer = io.BytesIO()
            fig.savefig(buffer, format=ext, dpi=DPI, metadata=METADATA[ext])
            rendered[ext] = buffer.getvalue()
            # The first save placed the axes; keep them, as re-solving the layout costs more
            # than drawing.
            fig.set_layout_engine("none")
    return rendered


def save_figure(fig: Figure | dict[str, bytes], folder: Path, stem: str) -> list[Path]:
    """Write `<stem>.png` and `<stem>.pdf` atomically; returns the paths."""
    rendered = fig if isinstance(fig, dict) else render(fig)
    paths = []
    for ext, data in rendered.items():
        path = Path(folder) / f"{stem}.{ext}"
        store.write_bytes_atomic(path, data)
        paths.append(path)
    return paths


def _figure(width: float, height: float) -> Figure:
    with matplotlib.rc_context(RC):
        return Figure(figsize=(width, height), layout="constrained")


# ----------------------------------------------------------------------------------------------
# Figure 1 (analytic)


def ssim_surfaces(
    exponents: Sequence[tuple[float, float]] = ((1, 1), (2, 2), (3, 3)),
    weights: tuple[float, float] = (0.5, 0.5),
    resolution: int = 25,
) -> Figure:
    """The paper's Figure 1: SSIM_m = 1 - x^a ((1+y)/2)^b per exponent pair, and SSIM_a.

    x stands for the luminance-contrast part in [0, 1] and y for structure in [-1, 1];
    SSIM_a = w_x (1 - x) + w_y (1 - (1+y)/2) is a plane (equal gradient everywhere).
    """
    x, y = np.meshgrid(np.linspace(0, 1, resolution), np.linspace(-1, 1, resolution))
    surfaces = [(f"SSIM_m, a={a:g}, b={b:g}", 1 - x**a * ((1 + y) / 2) ** b) for a, b in exponents]
    wx, wy = weights
    surfaces.append((f"SSIM_a, w={wx:g}, {wy:g}", wx * (1 - x) + wy * (1 - (1 + y) / 2)))
    with matplotlib.rc_context(RC):
        fig = _figure(2.6 * len(surfaces), 2.8)
        for i, (title, z) in enumerate(surfaces):
            ax = fig.add_subplot(1, len(surfaces), i + 1, projection="3d")
            ax.plot_surface(x, y, z, cmap="magma", linewidth=0, antialiased=False)
            ax.set(title=f"({chr(97 + i)}) {title}", xlabel="x (L·C)", ylabel="y (S)")
            ax.view_init(elev=25, azim=-60)
            ax.set_zlim(0, 1)
    return fig


@functools.lru_cache(maxsize=4)
def ssim_surfaces_rendered() -> dict[str, bytes]:
    """Figure 1 with the default exponents, rendered once per process (it is analytic)."""
    return render(ssim_surfaces())


# ----------------------------------------------------------------------------------------------
# Learning curves (metrics.jsonl)


Curve = tuple[str, list[dict[str, Any]]]  # (configuration name, metrics.jsonl records)
STOPPED_COLOUR = "0.6"


def learning_curves(curves: list[Curve], stopped: Sequence[Curve] = ()) -> Figure | None:
    """Train loss per step and the per-epoch metrics, one line per run, coloured by config:
    the validation frames' metrics where a run recorded them (eval.objective: val), else the
    test split's (dashed when a sweep has both).

    Args:
        curves: (configuration name, metrics.jsonl records) per run, in sweep order.
        stopped: the same for runs a scheduler stopped early: grey, a cross where each
            stopped, one legend entry for all.
    """
    curves = [(name, recs) for name, recs in curves if recs]
    stopped = [(name, recs) for name, recs in stopped if recs]
    if not curves and not stopped:
        return None
    names = list(dict.fromkeys(name for name, _ in curves))
    kinds = {_epoch_kind(recs) for _, recs in [*curves, *stopped]}
    title = {"val": "validation", "epoch": "test"}.get(kinds.pop()) if len(kinds) == 1 else None
    title = title or "validation / test (dashed)"
    with matplotlib.rc_context(RC):
        fig = _figure(3.0 * (1 + len(CURVE_METRICS)) + 1.6, 2.6)
        axes = fig.subplots(1, 1 + len(CURVE_METRICS))
        palette = "tab10" if len(names) <= 10 else "tab20"
        colours = matplotlib.colormaps[palette]
        for _, records in stopped:
            _run_curves(axes, records, STOPPED_COLOUR, stopped=True)
        for name, records in curves:
            _run_curves(axes, records, colours(names.index(name) % colours.N))
        axes[0].set(title="train loss", xlabel="step")
        for ax, metric in zip(axes[1:], CURVE_METRICS, strict=True):
            ax.set(title=f"{title} {metric_header(metric)}", xlabel="epoch")
        handles = [axes[0].plot([], [], color=colours(i % colours.N))[0] for i in range(len(names))]
        if stopped:
            handles.append(axes[0].plot([], [], color=STOPPED_COLOUR, marker="x")[0])
            names.append(f"stopped early ({len(stopped)})")
        fig.legend(handles, names, loc="outside right upper")
    return fig


def _epoch_kind(records: list[dict[str, Any]]) -> str:
    """Where a run's per-epoch metrics are: "val" records, or the "epoch" records (test)."""
    return "val" if any(r.get("type") == "val" for r in records) else "epoch"


def _run_curves(
    axes: Any, records: list[dict[str, Any]], colour: Any, stopped: bool = False
) -> None:
    kind = _epoch_kind(records)
    style = "--" if kind == "epoch" else "-"
    _curve(axes[0], records, "train", "step", "loss", colour)
    for ax, metric in zip(axes[1:], CURVE_METRICS, strict=True):
        _curve(ax, records, kind, "epoch", metric, colour, style, end="x" if stopped else None)


def _curve(
    ax: Any,
    records: list[dict[str, Any]],
    kind: str,
    x: str,
    y: str,
    colour: Any,
    style: str = "-",
    end: str | None = None,
) -> None:
    points = [(r.get(x), r.get(y)) for r in records if r.get("type") == kind]
    points = [
        (float(a), float(b)) for a, b in points if is_finite_number(a) and is_finite_number(b)
    ]
    if points:
        xs, ys = zip(*sorted(points), strict=True)
        marker = None if kind == "train" else "."
        ax.plot(xs, ys, color=colour, linewidth=0.8, linestyle=style, marker=marker)
        if end is not None:
            ax.plot(xs[-1:], ys[-1:], color=colour, marker=end, linestyle="none")


# ----------------------------------------------------------------------------------------------
# Marginals


def marginal_plots(marginals: pd.DataFrame, points: pd.DataFrame, primary: str) -> Figure | None:
    """One column of panels per hyperparameter. Top: the primary metric per value: the
    configurations as dots and the factor model's estimated marginal mean with its interval
    (mean ± std where the model gave no estimate); the best value starred, filled where it is
    shown better than every other value, hollow where it is the best estimate only. Bottom: mean
    rank per value for every metric (1 = best), the edge distribution of all metrics at a glance.
    """
    params = list(dict.fromkeys(marginals["parameter"]))
    if not params:
        return None
    with matplotlib.rc_context(RC):
        fig = _figure(2.4 * len(params) + 1.2, 4.4)
        axes = fig.subplots(2, len(params), squeeze=False)
        for j, key in enumerate(params):
            _marginal_panel(axes[0, j], marginals, points, key, primary)
            _rank_panel(axes[1, j], marginals, key)
            axes[0, j].set_title(key)
            axes[1, j].set_xlabel(key)
        axes[0, 0].set_ylabel(metric_header(primary))
        axes[1, 0].set_ylabel("mean rank (1 = best)")
        handles, labels = axes[1, 0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right lower")
    return fig


def _marginal_panel(
    ax: Any, marginals: pd.DataFrame, points: pd.DataFrame, key: str, metric: str
) -> None:
    stats = marginals[(marginals["parameter"] == key) & (marginals["metric"] == metric)]
    labels = [_tick(v) for v in stats["value"]]
    position = {label: i for i, label in enumerate(labels)}
    has = points[key].notna()
    xs = [position.get(_tick(v), np.nan) for v in points.loc[has, key]]
    ax.scatter(xs, points.loc[has, metric], s=6, color="0.6", zorder=1)
    centre, low, high = _interval(stats)
    ax.errorbar(
        range(len(labels)),
        centre,
        yerr=np.vstack([centre - low, high - centre]),
        color="C0",
        marker="o",
        markersize=3,
        linewidth=1,
        capsize=2,
        zorder=2,
    )
    best = stats["best"].to_numpy(dtype=bool)
    shown = best & stats.get("best_supported", pd.Series(False, index=stats.index)).to_numpy(bool)
    for mask, face in ((shown, "C3"), (best & ~shown, "white")):
        at = np.flatnonzero(mask)
        ax.scatter(at, centre[at], marker="*", s=60, facecolors=face, edgecolors="C3", zorder=3)
    ax.set_xticks(range(len(labels)), labels)


def _interval(stats: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The estimated marginal means and their interval where the model gave them, else the
    mean ± std of the configurations with that value."""
    if "emm" in stats and stats["emm"].notna().all():
        return (
            stats["emm"].to_numpy(float),
            stats["ci_low"].to_numpy(float),
            stats["ci_high"].to_numpy(float),
        )
    mean = stats["mean"].to_numpy(float)
    spread = stats["std"].fillna(0).to_numpy(float)
    return mean, mean - spread, mean + spread


def _rank_panel(ax: Any, marginals: pd.DataFrame, key: str) -> None:
    for k, metric in enumerate(METRIC_NAMES):
        stats = marginals[(marginals["parameter"] == key) & (marginals["metric"] == metric)]
        ax.plot(
            range(len(stats)),
            stats["mean_rank"],
            marker="o",
            markersize=2,
            linewidth=0.8,
            color=f"C{k}",
            label=metric_header(metric),
        )
        ax.set_xticks(range(len(stats)), [_tick(v) for v in stats["value"]])
    ax.invert_yaxis()


def _tick(value: object) -> str:
    return format(value, "g") if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------------------------
# Depth predictions (Figures 3-4)


def _colourise(disp: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Disparity and its colour range: min to the 95th percentile, as Monodepth2 shows it."""
    disp = np.nan_to_num(disp.astype(np.float64), nan=0.0)
    vmin, vmax = float(disp.min()), float(np.percentile(disp, 95))
    if vmax <= vmin:
        vmax = max(float(disp.max()), vmin + 1e-6)
    return disp, vmin, vmax


def predictions_grid(
    runs: list[tuple[str, dict[str, np.ndarray]]], max_images: int = 4
) -> Figure | None:
    """Rows: test images common to all runs; columns: RGB, then each run's scale-0 disparity."""
    common = (
        sorted(set.intersection(*(set(p["image_index"].tolist()) for _, p in runs))) if runs else []
    )
    images = common[:max_images]
    if not images:
        return None
    with matplotlib.rc_context(RC):
        fig = _figure(2.4 * (1 + len(runs)), 0.9 * len(images) + 0.5)
        axes = fig.subplots(len(images), 1 + len(runs), squeeze=False)
        for i, image in enumerate(images):
            first = runs[0][1]
            axes[i, 0].imshow(first["rgb"][_row(first, image)])
            for j, (_, pred) in enumerate(runs, start=1):
                disp, vmin, vmax = _colourise(pred["disp"][_row(pred, image), 0])
                axes[i, j].imshow(disp, cmap="magma", vmin=vmin, vmax=vmax)
            axes[i, 0].set_ylabel(f"image {image}")
        for j, title in enumerate(["input", *(name for name, _ in runs)]):
            axes[0, j].set_title(title)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def predictions_by_scale(runs: list[tuple[str, dict[str, np.ndarray]]]) -> Figure | None:
    """Rows: chosen runs; columns: each evaluated decoder scale, on their first common image."""
    runs = [(name, p) for name, p in runs if p["scales"].shape[0] > 1]
    common = (
        sorted(set.intersection(*(set(p["image_index"].tolist()) for _, p in runs))) if runs else []
    )
    if not common:
        return None
    n_scales = max(p["scales"].shape[0] for _, p in runs)
    with matplotlib.rc_context(RC):
        fig = _figure(2.4 * n_scales, 0.9 * len(runs) + 0.5)
        axes = fig.subplots(len(runs), n_scales, squeeze=False)
        for i, (name, pred) in enumerate(runs):
            row = _row(pred, common[0])
            for j, scale in enumerate(pred["scales"].tolist()):
                disp, vmin, vmax = _colourise(pred["disp"][row, j])
                axes[i, j].imshow(disp, cmap="magma", vmin=vmin, vmax=vmax)
                axes[i, j].set_title(f"{name}: scale {scale} (1/{2**scale})")
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
    return fig


def _row(pred: dict[str, np.ndarray], image: int) -> int:
    return int(np.flatnonzero(pred["image_index"] == image)[0])


# ----------------------------------------------------------------------------------------------
# Per-scale comparison (Table 4)


def per_scale_plot(table: pd.DataFrame) -> Figure | None:
    """Each metric against the evaluated decoder scale, one line per configuration."""
    if table.empty:
        return None
    names = list(dict.fromkeys(table["name"]))
    with matplotlib.rc_context(RC):
        fig = _figure(2.2 * 4 + 1.6, 2.2 * 2)
        axes = fig.subplots(2, 4).flat
        for ax, metric in zip(axes, METRIC_NAMES, strict=False):
            for k, name in enumerate(names):
                part = table[table["name"] == name].sort_values("scale")
                ax.plot(
                    part["scale"],
                    part[metric],
                    marker="o",
                    markersize=3,
                    color=f"C{k % 10}",
                    label=name,
                )
            scales = sorted(table["scale"].unique())
            ax.set_xticks(scales, [f"1/{2**s}" if s else "1" for s in scales])
            ax.set(title=metric_header(metric), xlabel="resolution")
        axes[7].set_axis_off()
        handles, labels = fig.axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper")
    return fig
