"""Is a configuration's difference to the baseline real? Paired bootstrap over test images.

Per-image metrics (per_image.csv, scale 0) are averaged over a configuration's seeds per image,
paired with the baseline's by image, and the mean difference is resampled over images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from depthcore import store
from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.report.loading import BASELINE, SweepData

N_BOOT = 2000
LEVEL = 0.95
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
    "improved",
    "significant",
)


def paired_bootstrap(
    diffs: np.ndarray, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean paired difference and its percentile bootstrap interval, per column.

    Args:
        diffs: (N,) or (N, M) per-image differences (configuration - baseline), N >= 2.

    Returns (mean, low, high), each (M,) (or scalars' 0-d arrays for 1-D input).
    """
    diffs = np.asarray(diffs, dtype=np.float64)
    flat = diffs.reshape(diffs.shape[0], -1)
    n = flat.shape[0]
    rng = np.random.default_rng(seed)
    # Multinomial counts are resampling with replacement, without an (n_boot, N, M) array.
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)
    boot = counts @ flat / n
    low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2], axis=0)
    shape = diffs.shape[1:]
    return flat.mean(axis=0).reshape(shape), low.reshape(shape), high.reshape(shape)


def config_per_image(runs: pd.DataFrame) -> tuple[pd.DataFrame | None, int]:
    """Per-image metrics averaged over the finished seeds of one configuration, and how many."""
    tables = [
        store.read_per_image(d) for d in runs.loc[runs["status"] == "finished", "run_dir"] if d
    ]
    tables = [t for t in tables if t is not None]
    if not tables:
        return None, 0
    return pd.concat(tables).groupby(level=0).mean(), len(tables)


def significance(
    data: SweepData, configs: pd.DataFrame, *, n_boot: int = N_BOOT
) -> tuple[pd.DataFrame, str]:
    """One row per (configuration, metric) against the first baseline configuration.

    Returns the table (COLUMNS) and, when nothing could be tested, why.
    """
    empty = pd.DataFrame(columns=list(COLUMNS))
    if data.source != "results":
        return empty, "no per-image results (imported CSV): significance not computed"
    baselines = configs.loc[configs["role"] == BASELINE, "config"]
    if baselines.empty:
        return empty, "no baseline run (role 'baseline' in the sweep index) has finished"
    base, n_base = config_per_image(data.runs[data.runs["config"] == baselines.iloc[0]])
    if base is None:
        return empty, "the baseline has no readable per_image.csv (scale 0)"
    rows = []
    for _, config in configs[configs["config"] != baselines.iloc[0]].iterrows():
        table, n_seeds = config_per_image(data.runs[data.runs["config"] == config["config"]])
        if table is not None:
            rows += _compare(config, table, n_seeds, base, n_base, n_boot)
    if not rows:
        return empty, "no configuration other than the baseline has readable per-image metrics"
    return pd.DataFrame(rows, columns=list(COLUMNS)), ""


def _compare(
    config: pd.Series,
    table: pd.DataFrame,
    n_seeds: int,
    base: pd.DataFrame,
    n_base: int,
    n_boot: int,
) -> list[dict[str, object]]:
    images = table.index.intersection(base.index)
    if len(images) < 2:
        return []
    metrics = list(METRIC_NAMES)
    diffs = table.loc[images, metrics].to_numpy() - base.loc[images, metrics].to_numpy()
    mean, low, high = paired_bootstrap(diffs, n_boot=n_boot)
    rows = []
    for j, metric in enumerate(metrics):
        better = mean[j] < 0 if LOWER_IS_BETTER[metric] else mean[j] > 0
        rows.append(
            {
                "config": config["config"],
                "name": config["name"],
                "metric": metric,
                "n_images": len(images),
                "n_seeds": n_seeds,
                "n_seeds_baseline": n_base,
                "baseline": float(base.loc[images, metric].mean()),
                "value": float(table.loc[images, metric].mean()),
                "diff": float(mean[j]),
                "ci_low": float(low[j]),
                "ci_high": float(high[j]),
                "improved": bool(better),
                "significant": bool(low[j] > 0 or high[j] < 0),
            }
        )
    return rows


def daggers(rows: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """True where a row's value improves on the baseline but not significantly.

    Args:
        rows: the ablation rows (a `config` column; references have none).
        table: `significance()`'s table.
    """
    marks = pd.DataFrame(False, index=rows.index, columns=list(METRIC_NAMES))
    if table.empty or "config" not in rows:
        return marks
    weak = table[table["improved"] & ~table["significant"]]
    for config, metric in zip(weak["config"], weak["metric"], strict=True):
        marks.loc[rows["config"] == config, metric] = True
    return marks
