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


def test_each_accuracy_uses_its_own_threshold() -> None:
    """Ratios just below and above 1.25, 1.25² and 1.25³ (both directions, pred above and below
    gt): each threshold splits them differently, so a2 or a3 computed with another power fails.
    (The hand test's ratios 2.0 and 1.25 agree under 1.25² and 1.25³.)"""
    ratios = np.array([1.25, 1.25**2, 1.25**3])[:, None] * np.array([1 - 1e-3, 1 + 1e-3])
    ratios = ratios.ravel()  # 1.25-, 1.25+, 1.5625-, 1.5625+, 1.953-, 1.953+
    gt = np.full(2 * ratios.size, 10.0)
    pred = np.concatenate([gt[: ratios.size] * ratios, gt[ratios.size :] / ratios])
    err = depth_errors(gt, pred)
    assert (err["a1"], err["a2"], err["a3"]) == (1 / 6, 3 / 6, 5 / 6)


def test_median_scaling_uses_medians_not_means() -> None:
    """Skewed ground truth, where its median (15 m) and mean (27.5 m) differ, against a constant
    prediction: the scale is median(gt) / median(pred) = 5."""
    gt = np.zeros((375, 1242))
    rows = slice(200, 300)
    gt[rows, 100:500] = 10.0  # half of the valid pixels
    gt[rows, 500:700] = 20.0  # a quarter
    gt[rows, 700:900] = 70.0  # a quarter
    pred = np.full_like(gt, 3.0)
    err, ratio = eigen_image_errors(gt, pred)
    assert ratio == pytest.approx(5.0)
    scaled = 15.0
    want = (0.5 * abs(10 - scaled) / 10 + 0.25 * abs(20 - scaled) / 20) + 0.25 * abs(
        70 - scaled
    ) / 70
    assert err["abs_rel"] == pytest.approx(want)
