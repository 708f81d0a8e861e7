"""Read a sweep (results store) or an external CSV into one tidy runs table.

Every reader here tolerates half-written run folders: a corrupt or missing file becomes a status
and a message in the table, never an exception. Nothing here imports torch or Ray.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from depthcore import store
from depthcore.errors import ConfigError, DataError
from depthcore.metrics import METRIC_NAMES

BASELINE = "baseline"
# Keys that vary seeds, not configurations: runs differing only in these are repeats.
SEED_KEYS = ("train.seed", "seed")
# Columns of an imported CSV that are not hyperparameters.
CSV_RESERVED = ("seed", "label", "role")
# run_dir: the run folder (curves, cost); eval_dir: the folder of the evaluation the index names
# (final.json, per_image.csv, predictions.npz; the run folder itself in the earlier layout);
# epochs: the epochs the run trained (a stopped run's where it stopped), of epochs_total.
RUN_COLUMNS = (
    "trial_id", "run_id", "label", "role", "seed", "status", "message", "run_dir", "eval_id",
    "eval_dir", "epochs", "epochs_total",
)  # fmt: skip
RACE_COLUMNS = ("seeds_run", "stop_reason")  # adaptive seeds: the race's record per trial
DESIGNS = ("grid", "trials", "search")  # the sweep index's `design`


@dataclass(frozen=True)
class SweepData:
    """One sweep's runs, whatever their state, plus what the report needs to know about them.

    `runs` has one row per trial: RUN_COLUMNS, `config` (a key shared by a configuration's seeds),
    one column per hyperparameter in `params`, and the seven metrics (NaN unless finished).
    """

    name: str
    params: tuple[str, ...]
    runs: pd.DataFrame
    dataset: str | None
    metric: str
    source: str  # "results" or "csv"
    race: dict[str, Any] | None = None  # the index's `seeds: {start, max, ...}` when raced
    estimate: dict[str, Any] | None = None  # the index's cost estimate from the sweep's start
    evaluations: dict[str, Any] | None = None  # eval id -> its settings (the index's)
    labels: dict[str, str] = field(default_factory=dict)  # report.labels: key -> header
    columns: tuple[str, ...] | None = None  # report.columns: the table's keys, in order
    # How the trials were chosen: "grid", "trials" (listed), "search" (sampled; not a factorial
    # design); None for an imported CSV or an index written before the index recorded it.
    design: str | None = None
    # What the per-epoch evaluation scored ("val" or "test": the index's `objective`; None
    # before the index recorded it), and the scheduler that stopped trials early (its settings).
    objective: str | None = None
    scheduler: dict[str, Any] | None = None


# ----------------------------------------------------------------------------------------------
# Sweep indexes


def list_sweeps(results: Path) -> list[str]:
    """Names of the sweep indexes in `<results>/sweeps/*.yaml`, sorted."""
    folder = Path(results) / store.SWEEPS_DIR
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.name.startswith("."))


def select_sweeps(results: Path, wanted: list[str] | tuple[str, ...] | None) -> list[str]:
    """The sweeps to report: all of them, or `wanted` after checking each name exists."""
    if not Path(results).is_dir():
        raise DataError(
            f"{results}: no such results folder (give the folder runners/sweep.py wrote)"
        )
    known = list_sweeps(results)
    if not known:
        raise DataError(
            f"{results}: no sweep index in {Path(results) / store.SWEEPS_DIR}/*.yaml; run "
            "runners/sweep.py first, or use --import FILE.csv for results obtained elsewhere"
        )
    if not wanted:
        return known
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise ConfigError(f"unknown sweep {', '.join(unknown)}; known sweeps: {', '.join(known)}")
    return list(dict.fromkeys(wanted))


def load_sweep_results(results: Path, name: str) -> SweepData:
    """Read `<results>/sweeps/<name>.yaml` and the run folders it points to."""
    index = store.read_sweep_index(results, name)
    if index is None:
        raise DataError(
            f"{store.sweep_index_path(results, name)}: unreadable sweep index (not a YAML "
            "mapping); rerun the sweep"
        )
    trials = [t for t in index.get("trials") or [] if isinstance(t, dict)]
    params = _swept_keys(index, trials)
    rows = [_trial_row(Path(results), trial, params) for trial in trials]
    runs = _runs_frame(rows, params)
    metric = str(index.get("metric")) if index.get("metric") in METRIC_NAMES else METRIC_NAMES[0]
    race = index.get("seeds") if isinstance(index.get("seeds"), dict) else None
    evaluations = index.get("evaluations") if isinstance(index.get("evaluations"), dict) else None
    labels, columns = report_spec(index, params)
    return SweepData(
        str(index.get("name") or name),
        params,
        runs,
        _dataset(runs),
        metric,
        "results",
        race,
        index_estimate(index),
        evaluations,
        labels,
        columns,
        design=str(index["design"]) if index.get("design") in DESIGNS else None,
        objective=str(index["objective"]) if index.get("objective") in ("val", "test") else None,
        scheduler=index["scheduler"] if isinstance(index.get("scheduler"), dict) else None,
    )


def report_spec(
    index: dict[str, Any], params: tuple[str, ...]
) -> tuple[dict[str, str], tuple[str, ...] | None]:
    """The index's `report: {labels, columns}` (the sweep file's), for keys the sweep varies;
    anything else in it is ignored, as a reader of a foreign file should."""
    spec = index.get("report")
    spec = spec if isinstance(spec, dict) else {}
    raw = spec.get("labels")
    raw = raw if isinstance(raw, dict) else {}
    labels = {str(k): v for k, v in raw.items() if k in params and isinstance(v, str)}
    columns = spec.get("columns")
    if not isinstance(columns, list):
        return labels, None
    return labels, tuple(dict.fromkeys(str(c) for c in columns if c in params))


def index_estimate(index: dict[str, Any]) -> dict[str, Any] | None:
    """A sweep index's `estimate` (recorded at the sweep's start), when it holds a number."""
    estimate = index.get("estimate")
    if isinstance(estimate, dict) and finite_number(estimate.get("device_hours")) is not None:
        return estimate
    return None


def finite_number(value: Any) -> float | None:
    """A finite int or float as float (bools, strings and NaN are None)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _swept_keys(index: dict[str, Any], trials: list[dict[str, Any]]) -> tuple[str, ...]:
    """The index's `swept` list (keys whose values differ); without one, every key set."""
    keys = index.get("swept")
    if not isinstance(keys, list):
        keys = list(dict.fromkeys(k for t in trials for k in (t.get("params") or {})))
    return tuple(str(k) for k in keys if k not in SEED_KEYS)


def _trial_row(results: Path, trial: dict[str, Any], params: tuple[str, ...]) -> dict[str, Any]:
    run_id = str(trial.get("run_id") or "")
    run_dir = store.run_path(results, run_id) if run_id else None
    # An index of the earlier layout names no evaluation: the run's own (top-level) one.
    eval_id = str(trial["eval_id"]) if trial.get("eval_id") else None
    folder = store.find_evaluation(run_dir, eval_id) if run_dir else None
    final = store.read_final(folder) if folder is not None else None
    status, message = _status(run_dir, eval_id, final)
    values = trial.get("params") or {}
    row: dict[str, Any] = {
        "trial_id": str(trial.get("trial_id") or run_id),
        "run_id": run_id,
        "label": trial.get("label"),
        "role": trial.get("role"),
        "seed": _seed(trial, final),
        "status": status,
        "message": message,
        "run_dir": str(run_dir) if run_dir else "",
        "eval_id": eval_id,
        "eval_dir": str(folder) if folder is not None else "",
        **_epochs(run_dir),
    }
    row.update({key: trial.get(key) for key in RACE_COLUMNS if key in trial})
    row.update({key: values.get(key) for key in params})
    metrics = final["metrics"] if final else {}
    row.update({m: store.as_float(metrics.get(m)) for m in METRIC_NAMES})
    return row


def _status(
    run_dir: Path | None, eval_id: str | None, final: dict[str, Any] | None
) -> tuple[str, str]:
    """The trial's status from its files (finished: its evaluation is recorded), and why it is
    not finished."""
    if final is not None:
        return "finished", ""
    if run_dir is None or not run_dir.is_dir():
        return "missing", "no run folder"
    status = store.run_status(run_dir, eval_id)
    error_file = store.error_path(run_dir, eval_id)
    error = store.read_error(error_file.parent)
    if error is not None:
        return status, f"{error.get('type') or 'Error'}: {error.get('error') or ''}".strip()
    for folder in (error_file.parent, run_dir):
        if (folder / store.FINAL_FILE).exists() and store.read_final(folder) is None:
            return status, f"{store.FINAL_FILE} unreadable (corrupt or half-written)"
    if status == "trained":
        return status, "trained, not evaluated this way yet: rerun the sweep to evaluate it"
    if status == "stopped":
        return status, stopped_message(store.read_stopped(run_dir) or {})
    return status, ""


def stopped_message(record: dict[str, Any]) -> str:
    """Why a stopped trial has no row in the tables, and how to train it on."""
    value = finite_number(record.get("value"))
    split = "val " if record.get("objective") == "val" else ""
    shown = f" ({split}{record.get('metric')} {value:.4f})" if value is not None else ""
    return (
        f"stopped early by the scheduler at epoch {record.get('epoch')} of "
        f"{record.get('epochs')}{shown}: not in the tables or verdicts; runners/sweep.py "
        "--promote trains it to the end"
    )


def _epochs(run_dir: Path | None) -> dict[str, float]:
    """Epochs the run trained (trained.json's; a stopped run's stop epoch; else the epochs its
    metrics.jsonl logged) and its config's train.epochs; NaN when unknown."""
    if run_dir is None or not run_dir.is_dir():
        return {"epochs": math.nan, "epochs_total": math.nan}
    train = (store.read_run_config(run_dir) or {}).get("train")
    total = finite_number(train.get("epochs")) if isinstance(train, dict) else None
    trained, stopped = store.read_trained(run_dir), store.read_stopped(run_dir)
    if trained is not None:
        done = finite_number(trained.get("epochs"))
    elif stopped is not None:
        done = float(stopped["epoch"])
    else:
        logged = [r.get("epoch") for r in store.read_curves(run_dir) if r.get("type") == "epoch"]
        done = float(max((e for e in logged if isinstance(e, int)), default=0))
    nan = math.nan
    return {
        "epochs": nan if done is None else done,
        "epochs_total": nan if total is None else total,
    }


def _seed(trial: dict[str, Any], final: dict[str, Any] | None) -> float:
    for value in (trial.get("seed"), (final or {}).get("seed")):
        number = store.as_float(value)
        if not math.isnan(number):
            return number
    return math.nan


def _dataset(runs: pd.DataFrame) -> str | None:
    """The dataset of the finished runs (from their config.yaml), or None when they disagree."""
    names = set()
    for run_dir in runs.loc[runs["status"] == "finished", "run_dir"]:
        config = store.read_run_config(run_dir) or {}
        names.add(str((config.get("data") or {}).get("dataset")))
    return names.pop() if len(names) == 1 else None


# ----------------------------------------------------------------------------------------------
# The runs table


def _runs_frame(rows: list[dict[str, Any]], params: tuple[str, ...]) -> pd.DataFrame:
    columns = [*RUN_COLUMNS, *params, *METRIC_NAMES]
    if any(key in row for row in rows for key in RACE_COLUMNS):
        columns[len(RUN_COLUMNS) : len(RUN_COLUMNS)] = RACE_COLUMNS
    runs = pd.DataFrame(rows, columns=columns)
    for key in params:
        runs[key] = normalise_values(runs[key])
    runs["seed"] = runs["seed"].astype(float)
    for metric in METRIC_NAMES:
        runs[metric] = runs[metric].astype(float)
    runs.insert(len(RUN_COLUMNS), "config", _config_keys(runs, params))
    return runs


def normalise_values(column: pd.Series) -> pd.Series:
    """Numbers become floats, anything else its text (lists as JSON); missing stays missing."""
    values = [v for v in column if not _missing(v)]
    if values and all(_is_number(v) for v in values):
        return pd.Series([store.as_float(v) for v in column], index=column.index, dtype=float)
    text = [None if _missing(v) else _text(v) for v in column]
    return pd.Series(text, index=column.index, dtype=object)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _config_keys(runs: pd.DataFrame, params: tuple[str, ...]) -> list[str]:
    """A key shared by the seeds of one configuration: role, label and swept values."""
    keys = []
    for _, row in runs.iterrows():
        values = [None if _missing(row[k]) else row[k] for k in params]
        label = None if _missing(row["label"]) else str(row["label"])
        role = None if _missing(row["role"]) else str(row["role"])
        keys.append(json.dumps([role, label, values]))
    return keys


# ----------------------------------------------------------------------------------------------
# External CSV (published numbers)


def load_csv(path: Path, *, name: str | None = None, dataset: str | None = "kitti") -> SweepData:
    """Read one row per run: hyperparameter columns, the 7 metrics, optional seed, label, role.

    Raises DataError naming the file, column and row of the first problem.
    """
    path = Path(path)
    table = _read_csv_text(path)
    missing = [m for m in METRIC_NAMES if m not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing metric column(s) {', '.join(missing)}; found columns "
            f"{', '.join(map(str, table.columns))}; a CSV needs {', '.join(METRIC_NAMES)}"
        )
    _check_csv_columns(path, [str(c) for c in table.columns])
    params = tuple(str(c) for c in table.columns if c not in (*METRIC_NAMES, *CSV_RESERVED))
    rows = [_csv_row(path, table, i, params) for i in range(len(table))]
    baselines = [i + 2 for i, row in enumerate(rows) if row["role"] == BASELINE]
    if len(baselines) > 1:
        raise DataError(
            f"{path}: rows {baselines[0]} and {baselines[1]} are both role=baseline; mark one"
        )
    runs = _runs_frame(rows, params)
    return SweepData(name or _safe_name(path.stem), params, runs, dataset, METRIC_NAMES[0], "csv")


def _read_csv_text(path: Path) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise DataError(f"{path}: no such CSV file") from None
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    if table.empty:
        raise DataError(f"{path}: no rows; write one row per run below the header")
    return table.map(str.strip)


# Columns the report itself keeps per run: a CSV column of that name would collide.
_CSV_INTERNAL = (
    "trial_id", "run_id", "status", "message", "run_dir", "eval_id", "eval_dir", "config",
    "epochs", "epochs_total",
)  # fmt: skip


def _check_csv_columns(path: Path, columns: list[str]) -> None:
    for column in columns:
        if column in _CSV_INTERNAL:
            raise DataError(
                f"{path}: column {column!r} is a name the report uses itself; rename it"
            )
        base, dot, suffix = column.rpartition(".")
        if dot and suffix.isdigit() and base in columns:  # pandas' name for a repeated header
            raise DataError(f"{path}: column {base!r} appears twice in the header")


def _csv_row(path: Path, table: pd.DataFrame, i: int, params: tuple[str, ...]) -> dict[str, Any]:
    raw = table.iloc[i]
    line = i + 2  # 1-based, after the header line
    role = raw.get("role", "") or None
    if role not in (None, BASELINE):
        raise DataError(f"{path}: column role, row {line}: {role!r}; use 'baseline' or leave empty")
    row: dict[str, Any] = {
        "trial_id": f"row{line}",
        "run_id": "",
        "label": raw.get("label", "") or None,
        "role": role,
        "seed": _csv_number(path, "seed", line, raw.get("seed", ""), required=False),
        "status": "finished",
        "message": "",
        "run_dir": "",
        "eval_id": None,
        "eval_dir": "",
        "epochs": math.nan,
        "epochs_total": math.nan,
    }
    row.update({k: _csv_param(raw[k]) for k in params})
    row.update({m: _csv_number(path, m, line, raw[m], required=True) for m in METRIC_NAMES})
    for m in METRIC_NAMES:
        fraction = m in ("a1", "a2", "a3")
        if row[m] < 0 or (fraction and row[m] > 1):
            hint = " (a fraction: write 0.869, not 86.9)" if fraction else ""
            raise DataError(f"{path}: column {m}, row {line}: {row[m]:g} is out of range{hint}")
    return row


def _csv_number(path: Path, column: str, line: int, text: str, *, required: bool) -> float:
    if text == "" and not required:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        what = "empty" if text == "" else f"{text!r} is not a number"
        raise DataError(f"{path}: column {column}, row {line}: {what}")
    return value


def _csv_param(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def _safe_name(stem: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "imported"
