"""Warping, poses and intrinsics against analytic scenes and scipy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates
from scipy.spatial.transform import Rotation

from depthcore.geometry import (
    disp_to_depth,
    pixel_grid,
    scale_intrinsics,
    transformation_from_parameters,
    warp,
    warp_many,
)

H, W = 32, 48
KITTI_K = np.array(
    [[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32
)


def _intrinsics(b: int = 2, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    K = torch.from_numpy(scale_intrinsics(KITTI_K, H, W)).to(dtype).expand(b, 4, 4)
    return K, torch.linalg.inv(K)


def _translation(t: tuple[float, float, float], b: int = 2) -> torch.Tensor:
    T = torch.eye(4, dtype=torch.float64).repeat(b, 1, 1)
    T[:, :3, 3] = torch.tensor(t, dtype=torch.float64)
    return T


def _texture(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 3, H, W, generator=torch.Generator().manual_seed(seed)).double()


def test_scale_intrinsics_matches_monodepth2_numbers() -> None:
    K = scale_intrinsics(torch.from_numpy(KITTI_K), 192, 640)
    assert K[0, 0] == pytest.approx(371.2) and K[1, 1] == pytest.approx(368.64)
    assert K[0, 2] == pytest.approx(320) and K[1, 2] == pytest.approx(96)
    assert isinstance(scale_intrinsics(KITTI_K, 64, 192), np.ndarray)
    assert KITTI_K[0, 0] == pytest.approx(0.58)  # input untouched


def test_disp_to_depth_range() -> None:
    disp = torch.cat([torch.zeros(1), torch.ones(1), torch.rand(100)])
    scaled, depth = disp_to_depth(disp, 0.1, 100.0)
    assert scaled.min() == pytest.approx(0.01) and scaled.max() == pytest.approx(10.0)
    assert depth.min() == pytest.approx(0.1) and depth.max() == pytest.approx(100.0)
    torch.testing.assert_close(depth, 1 / scaled)


def test_identity_pose_reproduces_source() -> None:
    src = _texture()
    K, inv_K = _intrinsics()
    depth = 1 + 10 * torch.rand(2, 1, H, W, dtype=torch.float64)
    out = warp(src, depth, K, inv_K, _translation((0, 0, 0)))
    # Monodepth2's xy / (z + 1e-7) shifts a pixel by up to x·1e-7/z: a few 1e-6 px here.
    torch.testing.assert_close(out, src, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shift_px", [2.0, 1.37])
def test_lateral_motion_over_a_fronto_parallel_plane(shift_px: float) -> None:
    """Plane at depth D, camera moved by tx: target pixel u sees source pixel u + fx·tx/D."""
    src = _texture()
    K, inv_K = _intrinsics()
    depth_value = 5.0
    tx = shift_px * depth_value / K[0, 0, 0].item()
    depth = torch.full((2, 1, H, W), depth_value, dtype=torch.float64)
    out = warp(src, depth, K, inv_K, _translation((tx, 0, 0)))
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    coords = [rows, cols + shift_px]  # scipy 'nearest' = grid_sample border padding
    for b in range(2):
        for c in range(3):
            ref = map_coordinates(src[b, c].numpy(), coords, order=1, mode="nearest")
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=1e-4)


def test_forward_motion_scales_about_the_principal_point() -> None:
    """Moving tz toward a plane at depth D maps u to cx + (u − cx)·D/(D − tz)."""
    src = _texture(seed=1)
    K, inv_K = _intrinsics()
    d, tz = 6.0, 1.5
    depth = torch.full((2, 1, H, W), d, dtype=torch.float64)
    out = warp(src, depth, K, inv_K, _translation((0, 0, -tz)))
    cx, cy = K[0, 0, 2].item(), K[0, 1, 2].item()
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    coords = [cy + (rows - cy) * d / (d - tz), cx + (cols - cx) * d / (d - tz)]
    ref = map_coordinates(src[0, 1].numpy(), coords, order=1, mode="nearest")
    np.testing.assert_allclose(out[0, 1].numpy(), ref, atol=1e-4)


def test_warp_many_equals_separate_warps() -> None:
    srcs = torch.stack([_texture(seed=s) for s in range(3)])
    K, inv_K = _intrinsics()
    depth = 2 + torch.rand(2, 1, H, W, dtype=torch.float64)
    Ts = torch.stack([_translation((0.1 * i, 0.05, -0.2 * i)) for i in range(3)])
    many = warp_many(srcs, depth, K, inv_K, Ts)
    for i in range(3):
        torch.testing.assert_close(many[i], warp(srcs[i], depth, K, inv_K, Ts[i]))


def test_warp_is_float32_under_bf16_autocast() -> None:
    src = _texture().float()
    K, inv_K = _intrinsics(dtype=torch.float32)
    depth = 2 + torch.rand(2, 1, H, W)
    T = _translation((0.3, 0.0, 0.1)).float()
    ref = warp(src, depth, K, inv_K, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = warp(src, depth, K, inv_K, T)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref)


def test_rotation_matches_scipy_rodrigues_and_inverse() -> None:
    g = torch.Generator().manual_seed(0)
    aa = 0.5 * torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    t = torch.randn(4, 1, 3, generator=g, dtype=torch.float64)
    M = transformation_from_parameters(aa, t)
    ref = Rotation.from_rotvec(aa[:, 0].numpy()).as_matrix()
    np.testing.assert_allclose(M[:, :3, :3].numpy(), ref, atol=1e-6)
    torch.testing.assert_close(M[:, :3, 3], t[:, 0])  # T·R: translation applied after rotation
    inv = transformation_from_parameters(aa, t, invert=True)
    eye = torch.eye(4, dtype=torch.float64).expand(4, 4, 4)
    # The axis is v / (|v| + 1e-7) (Monodepth2), so R is orthonormal only to ~1e-7.
    torch.testing.assert_close(inv @ M, eye, atol=1e-6, rtol=0)
    torch.testing.assert_close(M @ inv, eye, atol=1e-6, rtol=0)


def test_pixel_grid_is_cached_and_usable_after_inference_mode() -> None:
    with torch.inference_mode():
        grid = pixel_grid(5, 7, torch.device("cpu"), torch.float32)
    assert pixel_grid(5, 7, torch.device("cpu"), torch.float32) is grid
    assert grid[0, :7].tolist() == list(range(7)) and grid[1, ::7].tolist() == list(range(5))
    depth = torch.ones(1, 1, 5, 7, requires_grad=True)
    K = torch.eye(4).unsqueeze(0)
    warp(torch.rand(1, 3, 5, 7), depth, K, K, _translation((0.1, 0, 0), 1).float()).sum().backward()
    assert depth.grad is not None


def test_a_diverged_depth_warps_without_crashing() -> None:
    # torch's CPU grid_sample backward segfaults on NaN coordinates (a diverged network).
    src = torch.stack([_texture(seed=1)])
    K, inv_K = _intrinsics(b=2, dtype=torch.float32)
    depth = 2 + torch.rand(2, 1, H, W)
    depth[:, :, :4, :5] = float("nan")
    depth.requires_grad_(True)
    out = warp_many(src.float(), depth, K, inv_K, _translation((0.1, 0.0, 0.0))[None].float())
    out.sum().backward()
    finite = torch.ones_like(depth, dtype=torch.bool)
    finite[:, :, :4, :5] = False
    assert torch.isfinite(depth.grad[finite]).all()
