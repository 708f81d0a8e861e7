"""The Garg crop at the ground-truth sizes KITTI really has.

Its rows are fractions of the height, truncated to int (monodepth2's evaluate_depth.py). At 375
rows a rounded fraction (0.41 for 0.40810811) gives the same rows, but at 374 and 376 it does not,
so the crop is checked at every KITTI size below against the fractions written out here.
"""

from __future__ import annotations

import numpy as np
import pytest

from depthcore.metrics import eigen_image_errors, garg_crop_mask

GARG_FRACTIONS = (0.40810811, 0.99189189, 0.03594771, 0.96405229)  # top, bottom, left, right

# Ground-truth (height, width) of the KITTI drives in the Eigen test split.
KITTI_GT_SIZES = [(375, 1242), (376, 1241), (370, 1224), (370, 1226), (374, 1238)]


def expected_crop(height: int, width: int) -> tuple[int, int, int, int]:
    top, bottom, left, right = GARG_FRACTIONS
    return int(top * height), int(bottom * height), int(left * width), int(right * width)


@pytest.mark.parametrize(("height", "width"), KITTI_GT_SIZES)
def test_crop_rows_and_cols_follow_garg_at_kitti_sizes(height: int, width: int) -> None:
    mask = garg_crop_mask(height, width)
    top, bottom, left, right = expected_crop(height, width)
    assert mask.shape == (height, width)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (top, bottom, left, right)
    assert mask.sum() == (bottom - top) * (right - left)  # one full rectangle, no holes


def test_eigen_errors_leave_out_the_row_above_the_crop() -> None:
    height, width = 376, 1241  # top row 153 under Garg's fraction (154 with 0.41)
    top, _, left, right = expected_crop(height, width)
    gt = np.zeros((height, width), dtype=np.float32)
    gt[top : top + 2, left:right] = 10.0
    pred = np.full_like(gt, 10.0)
    pred[top] = 20.0  # wrong only on the crop's first row, which must be counted
    assert abs_rel(gt, pred) == pytest.approx(0.5)
    gt[top - 1, left:right] = 10.0  # just above the crop: must stay out
    pred[top - 1] = 1000.0
    assert abs_rel(gt, pred) == pytest.approx(0.5)


def abs_rel(gt: np.ndarray, pred: np.ndarray) -> float:
    result = eigen_image_errors(gt, pred, median_scaling=False)
    assert result is not None, "no valid pixel"
    return result[0]["abs_rel"]
