"""The seven depth metrics of the Eigen protocol, one implementation each, named as in the paper.

`depth_errors(gt, pred)` takes the masked 1-D depths of one image; `eigen_image_errors` applies the
protocol (mask, Garg crop, median scaling, clamp) to one full-size ground-truth map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TypeGuard

import numpy as np

# (name, lower_is_better), in the order of every table.
METRICS: tuple[tuple[str, bool], ...] = (
    ("abs_rel", True),
    ("sq_rel", True),
    ("rmse", True),
    ("rmse_log", True),
    ("a1", False),
    ("a2", False),
    ("a3", False),
)
METRIC_NAMES: tuple[str, ...] = tuple(name for name, _ in METRICS)
LOWER_IS_BETTER: dict[str, bool] = dict(METRICS)


def is_finite_number(value: object) -> TypeGuard[int | float]:
    """A finite real number, not a bool: a metric value read from a record that can be shown,
    ranked or plotted (JSON gives NaN, null and strings too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def depth_errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """abs_rel, sq_rel, rmse, rmse_log, a1, a2, a3 between matched positive depths.

    Args:
        gt: (N,) ground-truth depths in metres, all > 0.
        pred: (N,) predicted depths in metres, all > 0.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.size == 0:
        raise ValueError(f"need equal, non-empty shapes, got {gt.shape} and {pred.shape}")
    thresh = np.maximum(gt / pred, pred / gt)
    diff = gt - pred
    return {
        "abs_rel": float(np.mean(np.abs(diff) / gt)),
        "sq_rel": float(np.mean(diff**2 / gt)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25**2)),
        "a3": float(np.mean(thresh < 1.25**3)),
    }


def garg_crop_mask(height: int, width: int) -> np.ndarray:
    """The Garg/Eigen crop as a boolean (H, W) mask (rows 153:371, cols 44:1197 at 375x1242)."""
    crop = np.array(
        [0.40810811 * height, 0.99189189 * height, 0.03594771 * width, 0.96405229 * width]
    ).astype(np.int32)
    mask = np.zeros((height, width), dtype=bool)
    mask[crop[0] : crop[1], crop[2] : crop[3]] = True
    return mask


def eigen_image_errors(
    gt_depth: np.ndarray,
    pred_depth: np.ndarray,
    *,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    garg_crop: bool = True,
    median_scaling: bool = True,
) -> tuple[dict[str, float], float] | None:
    """Errors of one image under the Eigen protocol, and the median-scaling ratio used.

    Args:
        gt_depth: (H, W) ground truth at native resolution, 0 where invalid.
        pred_depth: (H, W) predicted depth already resized to the ground truth's size.

    Returns None when no pixel is valid (the image is left out of the average).
    """
    if gt_depth.shape != pred_depth.shape:
        raise ValueError(f"gt {gt_depth.shape} and prediction {pred_depth.shape} differ in size")
    mask = (gt_depth > min_depth) & (gt_depth < max_depth)
    if garg_crop:
        mask &= garg_crop_mask(*gt_depth.shape)
    if not mask.any():
        return None
    gt = gt_depth[mask].astype(np.float64)
    pred = pred_depth[mask].astype(np.float64)
    ratio = float(np.median(gt) / np.median(pred)) if median_scaling else 1.0
    pred = np.clip(pred * ratio, min_depth, max_depth)
    return depth_errors(gt, pred), ratio


def mean_errors(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Average per-image metrics (the Eigen protocol averages over images, not pixels)."""
    rows = list(per_image)
    if not rows:
        raise ValueError("no image had valid ground truth")
    return {name: float(np.mean([row[name] for row in rows])) for name in METRIC_NAMES}
