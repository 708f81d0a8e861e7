"""Camera geometry for view synthesis, with Monodepth2's conventions.

Pixels are integer coordinates (x = column 0..W-1, y = row 0..H-1, no +0.5 offset); projected
coordinates are normalised by (W-1), (H-1) and sampled with `grid_sample(align_corners=True,
padding_mode="border")`. Warping always runs in float32 (float64 stays float64) with autocast
disabled: bf16 pixel coordinates near x = 600 are only good to a few pixels.
"""

from __future__ import annotations

import functools
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from depthcore.tensors import upcast

# scale_intrinsics hands back the type it was given, so callers keep tensor (or array) methods.
ArrayT = TypeVar("ArrayT", Tensor, np.ndarray)

__all__ = [
    "backproject",
    "disp_to_depth",
    "pixel_grid",
    "project",
    "scale_intrinsics",
    "transformation_from_parameters",
    "warp",
    "warp_many",
]

_PROJ_EPS = 1e-7
_AXIS_EPS = 1e-7


def disp_to_depth(disp: Tensor, min_depth: float, max_depth: float) -> tuple[Tensor, Tensor]:
    """Map a sigmoid output to (scaled disparity, depth), depth in [min_depth, max_depth].

    Args:
        disp: (B, 1, H, W) sigmoid disparity in [0, 1].
    Returns:
        scaled_disp in [1/max_depth, 1/min_depth] and depth = 1/scaled_disp, same shape.
    """
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return scaled, 1.0 / scaled


@functools.lru_cache(maxsize=32)
def pixel_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """Homogeneous integer pixel coordinates (3, H·W), row-major; cached, do not modify.

    Built outside inference mode so that a grid first made during evaluation can still be
    used by autograd afterwards.
    """
    with torch.inference_mode(False), torch.no_grad():
        ys, xs = torch.meshgrid(
            torch.arange(height, device=device, dtype=dtype),
            torch.arange(width, device=device, dtype=dtype),
            indexing="ij",
        )
        ones = torch.ones_like(xs)
        return torch.stack([xs, ys, ones]).reshape(3, height * width)


def backproject(depth: Tensor, inv_K: Tensor) -> Tensor:
    """Lift every pixel to a homogeneous 3D point in the camera frame.

    Args:
        depth: (B, 1, H, W). inv_K: (B, 4, 4) inverse intrinsics.
    Returns:
        (B, 4, H·W) points [X, Y, Z, 1].
    """
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, depth.device, depth.dtype)
    cam = (inv_K[:, :3, :3].to(depth.dtype) @ pix) * depth.reshape(b, 1, h * w)
    return torch.cat([cam, torch.ones_like(cam[:, :1])], dim=1)


def project(points: Tensor, K: Tensor, T: Tensor, height: int, width: int) -> Tensor:
    """Project 3D points with P = (K @ T)[:3] to a grid_sample grid (align_corners=True).

    Args:
        points: (..., 4, H·W) homogeneous points; K, T: (..., 4, 4), broadcastable to points.
    Returns:
        (N, H, W, 2) sampling grid in [-1, 1], N the flattened leading dims.
    """
    proj = (K @ T)[..., :3, :]
    cam = proj @ points
    xy = cam[..., :2, :] / (cam[..., 2:3, :] + _PROJ_EPS)
    xy = xy.reshape(-1, 2, height, width).permute(0, 2, 3, 1)
    # Python-scalar division (no host-to-device copy, so the step can be a CUDA graph).
    xy = torch.stack([xy[..., 0] / (width - 1), xy[..., 1] / (height - 1)], dim=-1)
    return (xy - 0.5) * 2


def warp_many(sources: Tensor, depth: Tensor, K: Tensor, inv_K: Tensor, T: Tensor) -> Tensor:
    """Warp N source stacks into the target view with one back-projection and one sample.

    Args:
        sources: (N, B, C, H, W) source images. depth: (B, 1, H, W) target depth.
        K, inv_K: (B, 4, 4) intrinsics at this resolution. T: (N, B, 4, 4) target→source.
    Returns:
        (N, B, C, H, W) warped sources, float32 (float64 for float64 inputs).
    """
    n, b, c, h, w = sources.shape
    with torch.autocast(depth.device.type, enabled=False):
        depth = upcast(depth)
        dtype = depth.dtype
        points = backproject(depth, inv_K.to(dtype))
        grid = project(points, K.to(dtype).unsqueeze(0), T.to(dtype), h, w)
        # A diverged network gives NaN coordinates, and torch's CPU grid_sample backward
        # segfaults on them; finite coordinates pass unchanged (the loss still stops the run).
        grid = torch.nan_to_num(grid, nan=0.0, posinf=2.0, neginf=-2.0)
        flat = upcast(sources).to(dtype).reshape(n * b, c, h, w)
        out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.reshape(n, b, c, h, w)


def warp(source: Tensor, depth: Tensor, K: Tensor, inv_K: Tensor, T: Tensor) -> Tensor:
    """Synthesise the target view from one source image (Monodepth2's generate_images_pred).

    Args:
        source: (B, C, H, W). depth: (B, 1, H, W). K, inv_K, T: (B, 4, 4), T target→source.
    Returns:
        (B, C, H, W) warped source.
    """
    return warp_many(source.unsqueeze(0), depth, K, inv_K, T.unsqueeze(0))[0]


def _rotation_from_axisangle(vec: Tensor) -> Tensor:
    """Rodrigues: (B, 3) axis-angle -> (B, 3, 3) rotation, angle = |v|."""
    angle = vec.norm(dim=1, keepdim=True)
    axis = vec / (angle + _AXIS_EPS)
    cos, sin = angle.cos().unsqueeze(-1), angle.sin().unsqueeze(-1)
    x, y, z = axis.unbind(dim=1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).reshape(-1, 3, 3)
    outer = axis.unsqueeze(2) * axis.unsqueeze(1)
    eye = torch.eye(3, device=vec.device, dtype=vec.dtype)
    return cos * eye + sin * skew + (1 - cos) * outer


def transformation_from_parameters(
    axisangle: Tensor, translation: Tensor, invert: bool = False
) -> Tensor:
    """4×4 rigid transform M = T·R (rotate, then translate); inverted: Rᵀ·T(−t).

    Args:
        axisangle, translation: (B, 1, 3) or (B, 3) pose-decoder outputs.
    Returns:
        (B, 4, 4) transform in float32 (float64 for float64 inputs), autocast disabled.
    """
    b = axisangle.shape[0]
    with torch.autocast(axisangle.device.type, enabled=False):
        rot = _rotation_from_axisangle(upcast(axisangle).reshape(b, 3))
        t = upcast(translation).reshape(b, 3, 1).to(rot.dtype)
        if invert:
            rot = rot.transpose(1, 2)
            t = -(rot @ t)
        top = torch.cat([rot, t], dim=2)
        # Built on the device (no host copy), so the step can be captured as a CUDA graph.
        bottom = torch.zeros_like(top[:, :1, :])
        bottom[..., 3] = 1.0
        return torch.cat([top, bottom], dim=1)


def scale_intrinsics(K_norm: ArrayT, height: int, width: int) -> ArrayT:
    """Pixel intrinsics from normalised ones: row 0 × width, row 1 × height (not W-1, H-1).

    Args:
        K_norm: (..., 4, 4) intrinsics normalised by image size (Monodepth2's KITTI K).
    Returns:
        A new array/tensor of the same type and shape.
    """
    K = K_norm.copy() if isinstance(K_norm, np.ndarray) else K_norm.clone()
    K[..., 0, :] *= width
    K[..., 1, :] *= height
    return K
