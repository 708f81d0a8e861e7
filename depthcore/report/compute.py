"""The report's Compute section: device-hours per configuration, per sweep and in total.

Costs come from each run folder's cost record (store.read_cost; definitions: docs/compute.md),
the sweep's estimate from its index (`estimate: {device_hours, runs, ...}`, written at the
sweep's start). A run folder shared by several trials or sweeps is counted once per total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import depthcore.report.tables as tables
import depthcore.report.views as views
from depthcore import store
from depthcore.report.html import Section, Table
from depthcore.report.loading import (
    SweepData,
    finite_number,
    index_estimate,
    list_sweeps,
    load_sweep_results,
)

COST_KEYS = ("device", "share", "wall_s", "lost_s", "samples_per_s", "device_hours")
COLUMNS = (
    "level", "name", "runs", "costed", "devices", "wall_h", "lost_h", "device_hours",
    "estimate_runs", "estimate_device_hours", "epochs", "epochs_full", "saved_device_hours",
)  # fmt: skip
NOTE = (
    "Device-hours = wall time x the share of the device a run held (resources.gpu, or CPU cores "
    "over the machine's); wall time includes data generation, evaluation and time lost to "
    "interruptions (work after the last checkpoint). Runs without a cost record (trained before "
    "it existed, or not started) count as not costed."
)


def read_estimate(results: str | Path, sweep: str) -> dict[str, Any] | None:
    """The estimate recorded in the sweep index at its start, or None."""
    return index_estimate(store.read_sweep_index(results, sweep) or {})


def run_costs(data: SweepData) -> pd.DataFrame:
    """One row per distinct run folder: its configuration's name and its cost (NaN if none)."""
    rows = []
    for _, run in data.runs.drop_duplicates("run_id").iterrows():
        found = store.read_cost(run["run_dir"]) if run["run_dir"] else None
        cost = found or {}
        rows.append(
            {
                "config": run["config"],
                "name": tables.config_name(run, data.params),
                "run_id": run["run_id"],
                "costed": found is not None,
                **{k: cost.get(k, math.nan) for k in COST_KEYS},
            }
        )
    return pd.DataFrame(rows, columns=["config", "name", "run_id", "costed", *COST_KEYS])


def compute_table(
    data: SweepData, costs: pd.DataFrame, estimate: dict[str, Any] | None
) -> pd.DataFrame:
    """Configuration rows (sweep order), then the sweep's row with its estimate."""
    rows = [
        _row("configuration", group["name"].iloc[0], group)
        for _, group in costs.groupby("config", sort=False)
    ]
    sweep = _row("sweep", data.name, costs)
    if estimate is not None:
        sweep["estimate_runs"] = finite_number(estimate.get("runs"))
        sweep["estimate_device_hours"] = finite_number(estimate.get("device_hours"))
    saving = early_stopping(data, costs)
    if saving is not None:
        sweep["epochs"], sweep["epochs_full"] = saving.trained, saving.full
        sweep["saved_device_hours"] = saving.saved_hours
    return pd.DataFrame([*rows, sweep], columns=list(COLUMNS))


@dataclass(frozen=True)
class Saving:
    """What early stopping saved over the runs that finished or were stopped: the epochs they
    trained against the epochs they would have trained to full length, and an estimate of the
    device-hours of the epochs not trained."""

    trained: float
    full: float
    stopped: int  # runs stopped early
    saved_hours: float  # NaN when no run has a cost per epoch
    per_epoch: float  # device-hours per epoch the estimate used
    rate_from: str  # "finished runs" or "stopped runs"

    def line(self) -> str:
        text = (
            f"Early stopping: {self.trained:.0f} of {self.full:.0f} epochs trained "
            f"({self.trained / self.full:.0%}) by the runs that finished or were stopped; the "
            f"{self.stopped} stopped early would have trained {self.full - self.trained:.0f} more"
        )
        if math.isnan(self.saved_hours):
            return text + " (no cost record to price them)."
        return text + (
            f": about {self.saved_hours:.3g} device-hours saved (at {self.per_epoch:.3g} "
            f"device-hours per epoch, the median of the {self.rate_from})."
        )


def early_stopping(data: SweepData, costs: pd.DataFrame) -> Saving | None:
    """The sweep's saving from its scheduler (None when no trial of it was stopped and it has
    no scheduler). The price of an epoch is the median device-hours per epoch trained of the
    finished runs (of the stopped ones when none finished); it includes each run's setup and
    evaluations, so it slightly overstates what an epoch costs."""
    runs = data.runs.drop_duplicates("run_id")
    done = runs[runs["status"].isin(["finished", "stopped"])].dropna(
        subset=["epochs", "epochs_total"]
    )
    stopped = done[done["status"] == "stopped"]
    if (data.scheduler is None and stopped.empty) or done.empty:
        return None
    priced = done.merge(costs[["run_id", "device_hours"]], on="run_id")
    priced = priced[priced["epochs"] > 0].dropna(subset=["device_hours"])
    rate_from = "finished runs" if (priced["status"] == "finished").any() else "stopped runs"
    if rate_from == "finished runs":
        priced = priced[priced["status"] == "finished"]
    per_epoch = (priced["device_hours"] / priced["epochs"]).median() if len(priced) else math.nan
    left = float((stopped["epochs_total"] - stopped["epochs"]).sum())
    return Saving(
        trained=float(done["epochs"].sum()),
        full=float(done["epochs_total"].sum()),
        stopped=len(stopped),
        saved_hours=left * per_epoch,
        per_epoch=per_epoch,
        rate_from=rate_from,
    )


def _row(level: str, name: str, costs: pd.DataFrame) -> dict[str, Any]:
    costed = costs[costs["costed"].astype(bool)]
    return {
        "level": level,
        "name": name,
        "runs": len(costs),
        "costed": len(costed),
        "devices": ", ".join(sorted(costed["device"].dropna().astype(str).unique())),
        "wall_h": costed["wall_s"].sum() / 3600,
        "lost_h": costed["lost_s"].sum() / 3600,
        "device_hours": costed["device_hours"].sum(),
    }


def compute_section(data: SweepData, folder: Path) -> Section:
    """Write compute.csv and compute.md into `folder`; the section for report.html."""
    estimate = data.estimate
    costs = run_costs(data)
    table = compute_table(data, costs, estimate)
    store.write_text_atomic(folder / "compute.csv", table.to_csv(index=False))
    view = _view(table)
    lines = [_summary(table.iloc[-1])]
    saving = early_stopping(data, costs)
    if saving is not None:
        lines.append(saving.line())
    told = "\n\n".join(lines)
    md = f"# {data.name}: compute\n\n{told}\n\n{views.plain_markdown(view)}\n{NOTE}\n"
    store.write_text_atomic(folder / "compute.md", md)
    section = Section("compute", "Compute", notes=lines)
    section.tables.append(Table(views.plain_html(view, "compute"), legend=NOTE))
    return section


def _summary(sweep: pd.Series) -> str:
    text = (
        f"{sweep['device_hours']:.3g} device-hours for {sweep['costed']} of {sweep['runs']} "
        f"runs ({sweep['devices'] or 'no device recorded'})"
    )
    if pd.notna(sweep["estimate_device_hours"]):
        text += (
            f"; estimated at the sweep's start: {sweep['estimate_device_hours']:.3g} "
            f"device-hours for {sweep['estimate_runs']:.0f} runs"
        )
    return text + "."


def _view(table: pd.DataFrame) -> pd.DataFrame:
    view = table.copy()
    for col in ("wall_h", "lost_h", "device_hours", "estimate_device_hours", "saved_device_hours"):
        view[col] = view[col].map(lambda v: "" if pd.isna(v) else f"{v:.4g}")
    for col in ("estimate_runs", "epochs", "epochs_full"):
        view[col] = view[col].map(lambda v: "" if pd.isna(v) else f"{v:.0f}")
    if table[["epochs", "epochs_full", "saved_device_hours"]].isna().all().all():
        view = view.drop(columns=["epochs", "epochs_full", "saved_device_hours"])
    return view


def write_total(out: Path, results: Path) -> Path:
    """<out>/compute.csv: a row per sweep reported in `out` (like the index, whichever build
    wrote it) and a total over distinct run folders."""
    known = set(list_sweeps(results))
    names = sorted(p.parent.name for p in Path(out).glob("*/compute.csv"))
    per_sweep = [load_sweep_results(results, n) for n in names if n in known]
    costs = [(data.name, run_costs(data)) for data in per_sweep]
    rows = [_row("sweep", name, frame) for name, frame in costs]
    every = [frame for _, frame in costs if not frame.empty]
    union = pd.concat(every).drop_duplicates("run_id") if every else run_costs_empty()
    rows.append(_row("total", "all sweeps", union))
    path = Path(out) / "compute.csv"
    store.write_text_atomic(path, pd.DataFrame(rows, columns=list(COLUMNS)).to_csv(index=False))
    return path


def run_costs_empty() -> pd.DataFrame:
    return pd.DataFrame(columns=["config", "name", "run_id", "costed", *COST_KEYS])
