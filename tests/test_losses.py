"""Photometric variants against known limits and an independent Monodepth2 formula; the total
loss's fast path against the per-scale reference path; auto-masking and min reprojection."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter
from torch import nn

from depthcore.config import LossConfig
from depthcore.geometry import scale_intrinsics
from depthcore.losses import (
    LossTerms,
    combine_reprojection,
    compute_losses,
    normalise_disp,
    photometric_error,
    smoothness_loss,
)
from depthcore.resample import lanczos_pyramid
from depthcore.ssim import window_statistics

KINDS = ("standard", "ssim_m", "ssim_a", "l1")
H, W = 32, 48
FRAMES = (0, -1, 1)


def _images(
    b: int = 2, seed: int = 0, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, H, W, generator=g, dtype=dtype)
    y = (0.7 * x + 0.3 * torch.rand(b, 3, H, W, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def _monodepth2_reference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Monodepth2's compute_reprojection_loss, re-derived from the recipe (separate pads/pools)."""
    pad, pool = nn.ReflectionPad2d(1), nn.AvgPool2d(3, 1)
    x, y = pad(pred), pad(target)
    mu_x, mu_y = pool(x), pool(y)
    sigma_x = pool(x**2) - mu_x**2
    sigma_y = pool(y**2) - mu_y**2
    sigma_xy = pool(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + 1e-4) * (2 * sigma_xy + 9e-4)
    den = (mu_x**2 + mu_y**2 + 1e-4) * (sigma_x + sigma_y + 9e-4)
    ssim_loss = torch.clamp((1 - num / den) / 2, 0, 1).mean(1, True)
    l1 = (target - pred).abs().mean(1, True)
    return 0.85 * ssim_loss + 0.15 * l1


# ----------------------------------------------------------------------------------------------
# photometric_error


def test_standard_equals_monodepth2_formula() -> None:
    pred, target = _images(dtype=torch.float64)
    got = photometric_error(pred, target, LossConfig(photometric="standard"))
    assert got.shape == (2, 1, H, W)
    torch.testing.assert_close(got, _monodepth2_reference(pred, target), atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_identical_images_give_zero(kind: str) -> None:
    x, _ = _images()
    err = photometric_error(x, x.clone(), LossConfig(photometric=kind))
    # The sqrt eps leaves S = (v + C3)/(v + eps + C3) = 1 − O(2e-5) for the component forms.
    assert err.abs().max() < 5e-5


def _l1_and_grad(cfg: LossConfig) -> tuple[torch.Tensor, torch.Tensor]:
    pred, target = _images(seed=1)
    pred.requires_grad_(True)
    err = photometric_error(pred, target, cfg)
    (grad,) = torch.autograd.grad(err.sum(), pred)
    return err, grad


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(photometric="ssim_a", w_mae=1.0, w_l=0.0, w_c=0.0, w_s=0.0),
        LossConfig(photometric="ssim_m", ssim_weight=0.0, alpha=0.5, beta=2.0, gamma=0.3),
        LossConfig(photometric="standard", ssim_weight=0.0),
    ],
    ids=["ssim_a_mae_only", "ssim_m_w0", "standard_k0"],
)
def test_limits_equal_l1_values_and_gradients(cfg: LossConfig) -> None:
    err, grad = _l1_and_grad(cfg)
    ref_err, ref_grad = _l1_and_grad(LossConfig(photometric="l1"))
    pred, target = _images(seed=1)
    torch.testing.assert_close(ref_err, (pred - target).abs().mean(1, keepdim=True))
    torch.testing.assert_close(err, ref_err)
    torch.testing.assert_close(grad, ref_grad)


def _np_lum_con_ssim(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    def box(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=(1, 1, 3, 3), mode="mirror")  # spatial axes only

    mx, my = box(x), box(y)
    vx, vy, cxy = box(x * x) - mx**2, box(y * y) - my**2, box(x * y) - mx * my
    lum = (2 * mx * my + 1e-4) / (mx**2 + my**2 + 1e-4)
    con = (2 * np.sqrt(vx * vy) + 9e-4) / (vx + vy + 9e-4)
    ssim = lum * (2 * cxy + 9e-4) / (vx + vy + 9e-4)
    return lum, con, ssim


def test_ssim_m_unit_exponents_decompose_per_ssim_notes() -> None:
    """α=β=γ=1: 1 − L·C·(1+S)/2 = (1 − SSIM)/2 + (1 − L·C)/2, mixed (1−w)·L1 + w·(...)."""
    pred, target = _images(seed=2, dtype=torch.float64)
    w = 0.85
    got = photometric_error(pred, target, LossConfig(photometric="ssim_m", ssim_weight=w))
    x, y = pred.numpy(), target.numpy()
    lum, con, ssim = _np_lum_con_ssim(x, y)
    per_channel = (1 - w) * np.abs(x - y) + w * ((1 - ssim) / 2 + (1 - lum * con) / 2)
    np.testing.assert_allclose(got.numpy(), per_channel.mean(1, keepdims=True), atol=1e-5)


def test_ssim_a_matches_component_formula() -> None:
    pred, target = _images(seed=3, dtype=torch.float64)
    cfg = LossConfig(photometric="ssim_a", w_mae=0.4, w_l=0.5, w_c=0.5, w_s=0.7)
    got = photometric_error(pred, target, cfg)
    x, y = pred.numpy(), target.numpy()
    lum, con, ssim = _np_lum_con_ssim(x, y)
    struct = ssim / (lum * con)
    ref = 0.4 * np.abs(x - y) + 0.5 * (1 - lum) + 0.5 * (1 - con) + 0.7 * (1 - struct) / 2
    np.testing.assert_allclose(got.numpy(), ref.mean(1, keepdims=True), atol=1e-5)


def _flat_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 12, 16), 0.7123)
    near = flat + 1e-3 * torch.randn(flat.shape, generator=g)
    near2 = flat + 1e-3 * torch.randn(flat.shape, generator=g)
    return [(flat, flat.clone()), (flat, torch.full_like(flat, 0.2)), (near, flat), (near, near2)]


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(photometric="standard"),
        LossConfig(photometric="ssim_a"),
        LossConfig(photometric="ssim_m"),
        LossConfig(photometric="ssim_m", alpha=0.5, beta=0.3, gamma=1.7),
        LossConfig(photometric="ssim_m", alpha=0.0, beta=2.0, gamma=3.0),
        LossConfig(photometric="l1"),
    ],
    ids=["standard", "ssim_a", "ssim_m", "ssim_m_frac", "ssim_m_int", "l1"],
)
def test_gradients_finite_on_constant_and_near_constant_images(cfg: LossConfig) -> None:
    for pred, target in _flat_cases():
        pred = pred.clone().requires_grad_(True)
        err = photometric_error(pred, target, cfg)
        (grad,) = torch.autograd.grad(err.mean(), pred)
        assert torch.isfinite(err).all() and torch.isfinite(grad).all()


def test_photometric_error_is_float32_under_autocast_and_accepts_channels_last() -> None:
    pred, target = _images(seed=4)
    cfg = LossConfig(photometric="ssim_a")
    ref = photometric_error(pred, target, cfg)
    cl = [t.contiguous(memory_format=torch.channels_last) for t in (pred, target)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = photometric_error(cl[0].bfloat16(), cl[1].bfloat16(), cfg)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=0.02, rtol=0)  # inputs rounded to bf16 only
    torch.testing.assert_close(photometric_error(*cl, cfg), ref)


@pytest.mark.parametrize("kind", KINDS)
def test_stacked_comparisons_with_target_statistics_equal_one_call_each(kind: str) -> None:
    """The fast path's call: N warped sources (N, B, 3, H, W) against one (B, 3, H, W) target
    whose SSIM statistics were pooled once."""
    cfg = LossConfig(photometric=kind)
    gen = torch.Generator().manual_seed(6)
    pred = torch.rand(3, 2, 3, H, W, generator=gen, dtype=torch.float64, requires_grad=True)
    target = torch.rand(2, 3, H, W, generator=gen, dtype=torch.float64)
    stats = window_statistics(target, cfg.ssim_window)
    stacked = photometric_error(pred, target, cfg, target_stats=stats)
    looped = torch.stack([photometric_error(pred[i], target, cfg) for i in range(3)])
    assert stacked.shape == (3, 2, 1, H, W)
    torch.testing.assert_close(stacked, looped)
    g1, g2 = (torch.autograd.grad(e.sum(), pred)[0] for e in (stacked, looped))
    torch.testing.assert_close(g1, g2)


# ----------------------------------------------------------------------------------------------
# smoothness


def test_smoothness_analytic_ramp_with_edge() -> None:
    """d = column index: |∂x d| = 1, |∂y d| = 0; an image edge of height m weights one column
    difference by exp(−m), so the loss is ((W − 2) + exp(−m)) / (W − 1)."""
    disp = torch.arange(W, dtype=torch.float64).expand(1, 1, H, W)
    image = torch.zeros(1, 3, H, W, dtype=torch.float64)
    image[..., W // 2 :] = 0.6
    got = smoothness_loss(disp, image)
    assert got.item() == pytest.approx(((W - 2) + np.exp(-0.6)) / (W - 1))
    assert smoothness_loss(torch.ones(1, 1, H, W), torch.rand(1, 3, H, W)).item() == 0


def test_normalise_disp_has_unit_mean_per_image() -> None:
    scale = torch.tensor([1.0, 5.0, 0.1], dtype=torch.float64).view(3, 1, 1, 1)
    disp = torch.rand(3, 1, 8, 8, dtype=torch.float64) * scale
    means = normalise_disp(disp).mean(dim=(1, 2, 3))
    torch.testing.assert_close(means, torch.ones(3).double(), rtol=1e-5, atol=0)  # +1e-7 eps


# ----------------------------------------------------------------------------------------------
# combine_reprojection


def test_min_versus_average_reprojection_without_automask() -> None:
    g = torch.Generator().manual_seed(0)
    reproj = torch.rand(2, 2, 4, 5, generator=g)
    min_cfg = LossConfig(automask=False)
    avg_cfg = LossConfig(automask=False, min_reprojection=False)
    got_min, mask = combine_reprojection(reproj, None, None, min_cfg)
    got_avg, _ = combine_reprojection(reproj, None, None, avg_cfg)
    assert got_min.item() == pytest.approx(torch.minimum(reproj[:, 0], reproj[:, 1]).mean().item())
    assert got_avg.item() == pytest.approx(reproj.mean().item())
    assert mask.item() == 1.0


def test_automask_selection_min_and_average_modes() -> None:
    # (B=1, S=2, H=2, W=1): row k holds source k's error at pixels 0 and 1.
    reproj = torch.tensor([[0.1, 0.9], [0.70001, 0.9]]).view(1, 2, 2, 1)
    identity = torch.tensor([[0.5, 0.5], [0.3, 0.3]]).view(1, 2, 2, 1)
    loss_min, frac_min = combine_reprojection(reproj, identity, None, LossConfig())
    assert loss_min.item() == pytest.approx((0.1 + 0.3) / 2)
    assert frac_min.item() == pytest.approx(0.5)  # reprojection wins at pixel 0 only
    avg = LossConfig(min_reprojection=False)
    # Group means: identity 0.4 | 0.4, reprojection 0.400005 | 0.9: the identity wins both.
    loss_avg, frac_avg = combine_reprojection(reproj, identity, None, avg)
    assert loss_avg.item() == pytest.approx(0.4) and frac_avg.item() == 0.0
    noise = torch.ones(1, 1, 2, 1)  # +1e-5 on the identity mean: pixel 0 flips to reprojection
    loss_tie, frac_tie = combine_reprojection(reproj, identity, noise, avg)
    assert frac_tie.item() == pytest.approx(0.5)
    assert loss_tie.item() == pytest.approx((0.400005 + 0.40001) / 2, abs=1e-7)


# ----------------------------------------------------------------------------------------------
# compute_losses


def _intrinsics(b: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.tensor([[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    K = scale_intrinsics(k.to(dtype), H, W).expand(b, 4, 4)
    return K, torch.linalg.inv(K)


def _pose(tx: float, tz: float, b: int, dtype: torch.dtype) -> torch.Tensor:
    T = torch.eye(4, dtype=dtype).repeat(b, 1, 1)
    T[:, 0, 3], T[:, 2, 3] = tx, tz
    return T


def _random_batch(
    dtype: torch.dtype = torch.float64, scales: tuple[int, ...] = (0, 1, 2, 3)
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    b = 2
    disps = {
        s: torch.sigmoid(torch.randn(b, 1, H >> s, W >> s, generator=g, dtype=dtype))
        .detach()
        .requires_grad_(True)
        for s in scales
    }
    images = torch.rand(b, 3, 3, H, W, generator=g, dtype=dtype)
    poses = {-1: _pose(-0.05, -0.3, b, dtype), 1: _pose(0.05, 0.3, b, dtype)}
    K, inv_K = _intrinsics(b, dtype)
    return {"disps": disps, "images": images, "poses": poses, "K": K, "inv_K": inv_K}


def _run(
    batch: dict[str, Any],
    cfg: LossConfig,
    identity_once: bool,
    seed: int = 7,
    compiled: bool = False,
) -> tuple[LossTerms, tuple[torch.Tensor, ...]]:
    terms = compute_losses(
        batch["disps"], batch["images"], batch["poses"], batch["K"], batch["inv_K"],
        frame_ids=FRAMES, loss=cfg, min_depth=0.1, max_depth=100.0,
        identity_once=identity_once, generator=torch.Generator().manual_seed(seed),
        compiled=compiled,
    )  # fmt: skip
    grads = torch.autograd.grad(terms.total, list(batch["disps"].values()))
    return terms, grads


@pytest.mark.parametrize(
    "cfg",
    [
        LossConfig(),
        LossConfig(photometric="ssim_a", min_reprojection=False),
        LossConfig(photometric="ssim_m", alpha=2.0, automask=False),
    ],
    ids=["standard", "ssim_a_avg", "ssim_m_nomask"],
)
def test_fast_path_equals_reference_path(cfg: LossConfig) -> None:
    batch = _random_batch()
    fast, fast_grads = _run(batch, cfg, identity_once=True)
    ref, ref_grads = _run(batch, cfg, identity_once=False)
    torch.testing.assert_close(fast.total, ref.total, atol=1e-12, rtol=0)
    for s in fast.per_scale:
        torch.testing.assert_close(fast.per_scale[s], ref.per_scale[s], atol=1e-12, rtol=0)
    torch.testing.assert_close(fast.automask, ref.automask)
    for a, b in zip(fast_grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.slow
def test_compiled_photometric_error_gives_the_eager_loss_and_gradients() -> None:
    """train.compile=loss: torch.compile of the photometric error (about 30 s to compile)."""
    batch = _random_batch(torch.float32)
    cfg = LossConfig(photometric="ssim_a", w_c=0.4)
    eager, eager_grads = _run(batch, cfg, identity_once=True)
    compiled, compiled_grads = _run(batch, cfg, identity_once=True, compiled=True)
    torch.testing.assert_close(compiled.total, eager.total, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(compiled.automask, eager.automask)
    for a, b in zip(compiled_grads, eager_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_total_is_mean_over_scales_of_photometric_plus_weighted_smoothness() -> None:
    batch = _random_batch()
    terms, _ = _run(batch, LossConfig(), identity_once=True)
    no_smooth, _ = _run(batch, LossConfig(smoothness=0.0), identity_once=True)
    torch.testing.assert_close(terms.total, terms.photometric + terms.smoothness)
    torch.testing.assert_close(terms.total, sum(terms.per_scale.values()) / 4)
    assert no_smooth.smoothness.item() == 0.0  # weight 0: the pyramid is not even built
    torch.testing.assert_close(no_smooth.photometric, terms.photometric)
    # Monodepth2's smoothness images: the chained 8-bit Lanczos pyramid (tests/test_resample.py).
    pyramid = lanczos_pyramid(batch["images"][:, 0], 4)
    expected = 0.0
    for s, disp in batch["disps"].items():
        expected += 1e-3 * smoothness_loss(normalise_disp(disp), pyramid[s]) / 2**s / 4
    assert (terms.total - no_smooth.total).item() == pytest.approx(expected.item(), rel=1e-5)
    # A box-filtered stand-in gives a different smoothness term: the pyramid is really used.
    boxed = sum(
        1e-3
        * smoothness_loss(
            normalise_disp(disp), F.interpolate(pyramid[0], disp.shape[-2:], mode="area")
        )
        / 2**s
        / 4
        for s, disp in batch["disps"].items()
    )
    assert (terms.total - no_smooth.total).item() != pytest.approx(boxed.item(), rel=1e-3)


def _plane_disp(depth: float, dtype: torch.dtype = torch.float64) -> dict[int, torch.Tensor]:
    disp = (1 / depth - 0.01) / (10 - 0.01)  # inverse of disp_to_depth(·, 0.1, 100)
    return {s: torch.full((2, 1, H >> s, W >> s), disp, dtype=dtype) for s in range(4)}


def test_automask_static_camera_identity_wins() -> None:
    """All frames identical (a stopped car) while the pose says the camera moved."""
    frame = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    images = frame.unsqueeze(1).repeat(1, 3, 1, 1, 1)
    K, inv_K = _intrinsics(2, torch.float64)
    poses = {-1: _pose(-0.2, 0.0, 2, torch.float64), 1: _pose(0.2, 0.0, 2, torch.float64)}
    terms = compute_losses(
        _plane_disp(5.0), images, poses, K, inv_K,
        frame_ids=FRAMES, loss=LossConfig(), min_depth=0.1, max_depth=100.0,
    )  # fmt: skip
    assert terms.automask.item() < 0.05
    assert abs(terms.photometric.item()) < 1e-4  # identity error 0 (+ tiny noise) is the minimum


def test_automask_consistent_motion_reprojection_wins() -> None:
    """A fronto-parallel plane at 5 m and lateral motion: sources are exact 2-px shifts."""
    g = torch.Generator().manual_seed(2)
    wide = torch.rand(2, 3, H, W + 8, generator=g, dtype=torch.float64)
    K, inv_K = _intrinsics(2, torch.float64)
    tx = 2.0 * 5.0 / K[0, 0, 0].item()  # fx·tx/D = 2 px
    target = wide[..., 4 : 4 + W]
    # warped_f(u) = source_f(u ± 2 px) must equal target(u) = wide(u + 4)
    images = torch.stack([target, wide[..., 6 : 6 + W], wide[..., 2 : 2 + W]], dim=1)
    poses = {-1: _pose(-tx, 0.0, 2, torch.float64), 1: _pose(tx, 0.0, 2, torch.float64)}
    terms = compute_losses(
        _plane_disp(5.0), images, poses, K, inv_K,
        frame_ids=FRAMES, loss=LossConfig(), min_depth=0.1, max_depth=100.0,
    )  # fmt: skip
    assert terms.automask.item() > 0.9
    off = compute_losses(
        _plane_disp(5.0), images, poses, K, inv_K,
        frame_ids=FRAMES, loss=LossConfig(automask=False), min_depth=0.1, max_depth=100.0,
    )  # fmt: skip
    assert off.automask.item() == 1.0
    assert off.photometric.item() < 0.01  # the per-pixel min over sources fits the scene


def test_min_reprojection_not_above_average_reprojection() -> None:
    batch = _random_batch()
    with torch.no_grad():
        mins = compute_losses(
            batch["disps"], batch["images"], batch["poses"], batch["K"], batch["inv_K"],
            frame_ids=FRAMES, loss=LossConfig(automask=False), min_depth=0.1, max_depth=100.0,
        )  # fmt: skip
        avg_cfg = LossConfig(automask=False, min_reprojection=False)
        avgs = compute_losses(
            batch["disps"], batch["images"], batch["poses"], batch["K"], batch["inv_K"],
            frame_ids=FRAMES, loss=avg_cfg, min_depth=0.1, max_depth=100.0,
        )  # fmt: skip
    assert mins.photometric.item() < avgs.photometric.item()


def test_compute_losses_float32_under_autocast() -> None:
    batch = _random_batch(torch.float32)
    ref, _ = _run(batch, LossConfig(), identity_once=True)
    bf16 = {s: d.bfloat16() for s, d in batch["disps"].items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = compute_losses(
            bf16, batch["images"], batch["poses"], batch["K"], batch["inv_K"],
            frame_ids=FRAMES, loss=LossConfig(), min_depth=0.1, max_depth=100.0,
            generator=torch.Generator().manual_seed(7),
        )  # fmt: skip
    assert terms.total.dtype == torch.float32 and torch.isfinite(terms.total)
    assert terms.total.item() == pytest.approx(ref.total.item(), rel=0.02)
