"""The seven metrics and the Eigen protocol, on hand-computed arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from depthcore.metrics import (
    METRIC_NAMES,
    depth_errors,
    eigen_image_errors,
    garg_crop_mask,
    mean_errors,
)


def test_depth_errors_by_hand() -> None:
    gt = np.array([2.0, 4.0])
    pred = np.array([1.0, 5.0])
    err = depth_errors(gt, pred)
    assert err["abs_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert err["sq_rel"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    assert err["rmse"] == pytest.approx(1.0)
    assert err["rmse_log"] == pytest.approx(math.sqrt((math.log(2) ** 2 + math.log(1.25) ** 2) / 2))
    # max(gt/pred, pred/gt) = 2 and 1.25: none below 1.25; only 1.25 below 1.25² and 1.25³
    assert (err["a1"], err["a2"], err["a3"]) == (0.0, 0.5, 0.5)
    assert list(err) == list(METRIC_NAMES)


def test_perfect_prediction() -> None:
    gt = np.linspace(1, 80, 50)
    err = depth_errors(gt, gt.copy())
    assert err["abs_rel"] == err["rmse"] == err["rmse_log"] == 0.0
    assert err["a1"] == err["a2"] == err["a3"] == 1.0


def test_garg_crop_matches_monodepth2_at_kitti_size() -> None:
    mask = garg_crop_mask(375, 1242)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (153, 371, 44, 1197)


def test_eigen_protocol_median_scaling_mask_and_clamp() -> None:
    gt = np.zeros((375, 1242), dtype=np.float32)
    gt[200:300, 100:1000] = 10.0
    gt[200:210, 100:1000] = 90.0  # beyond 80 m: masked out
    gt[10:20, 100:200] = 5.0  # outside the crop: masked out
    pred = np.full_like(gt, 2.5)  # right up to scale
    err, ratio = eigen_image_errors(gt, pred)
    assert ratio == pytest.approx(4.0)
    assert err["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    unscaled, ratio1 = eigen_image_errors(gt, pred, median_scaling=False)
    assert ratio1 == 1.0 and unscaled["abs_rel"] == pytest.approx(0.75)
    assert eigen_image_errors(np.zeros((10, 10)), np.ones((10, 10))) is None


def test_predictions_are_clamped_to_the_cap() -> None:
    gt = np.zeros((100, 100))
    gt[60:90, 10:90] = 50.0
    pred = np.full_like(gt, 1000.0)
    err, _ = eigen_image_errors(gt, pred, median_scaling=False)
    assert err["abs_rel"] == pytest.approx(30 / 50)  # clamped to 80 m


def test_mean_over_images_not_pixels() -> None:
    rows = [dict.fromkeys(METRIC_NAMES, 1.0), dict.fromkeys(METRIC_NAMES, 3.0)]
    assert mean_errors(rows)["abs_rel"] == 2.0
    with pytest.raises(ValueError, match="no image"):
        mean_errors([])
