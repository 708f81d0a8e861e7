"""Windowed SSIM: the standard two-factor map (Monodepth2) and its L, C, S components.

Statistics are box-filter means over a `window`×`window` neighbourhood with reflection padding
(torch ReflectionPad2d, i.e. scipy `mode='mirror'`), so every map has the input's shape. All
five statistics come from one `avg_pool2d` call over a channel-stacked tensor, and everything is
computed in float32 (float64 stays float64) with autocast disabled: under bf16 autocast the
E[x²] − E[x]² cancellation would destroy the variances.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["local_statistics", "ssim_components", "ssim_map"]

# sqrt(var + eps) keeps the gradient finite on flat windows, where d sqrt(v)/dv is infinite.
SIGMA_EPS = 1e-8


def _upcast(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def local_statistics(
    x: Tensor, y: Tensor, window: int = 3, *, stacked: bool = True
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Box-filter means mu_x, mu_y, E[x²], E[y²], E[xy] from ONE pooling call.

    Args:
        x, y: (N, C, H, W) images (any leading batch, e.g. stacked comparisons).
        window: odd pooling window; reflection padding window // 2 keeps H×W.
        stacked: False pads and pools each statistic separately, as Monodepth2's SSIM module
            does (the benchmark's reference path); the values are the same.
    Returns:
        Five (N, C, H, W) tensors in float32 (float64 if the inputs are float64).
    """
    x, y = _upcast(x), _upcast(y)
    pad = window // 2
    terms = (x, y, x * x, y * y, x * y)
    if not stacked:
        return tuple(  # type: ignore[return-value]
            F.avg_pool2d(F.pad(t, [pad] * 4, mode="reflect"), window, stride=1) for t in terms
        )
    pooled = F.avg_pool2d(F.pad(torch.cat(terms, dim=1), [pad] * 4, mode="reflect"), window, 1)
    mu_x, mu_y, e_xx, e_yy, e_xy = pooled.chunk(5, dim=1)
    return mu_x, mu_y, e_xx, e_yy, e_xy


def ssim_map(
    x: Tensor,
    y: Tensor,
    window: int = 3,
    c1: float = 1e-4,
    c2: float = 9e-4,
    *,
    stacked: bool = True,
) -> Tensor:
    """Standard SSIM per pixel and channel (the two-factor form, C3 = C2/2), as Monodepth2.

    Args:
        x, y: (N, 3, H, W) images in [0, 1].
        window: odd box window (Monodepth2: 3). c1, c2: stabilising constants.
        stacked: one pooling call (fast) or one per statistic (reference); same values.
    Returns:
        (N, 3, H, W) SSIM in [-1, 1] (unclamped, exactly Monodepth2's formula).
    """
    with torch.autocast(x.device.type, enabled=False):
        mu_x, mu_y, e_xx, e_yy, e_xy = local_statistics(x, y, window, stacked=stacked)
        sigma_x = e_xx - mu_x * mu_x
        sigma_y = e_yy - mu_y * mu_y
        sigma_xy = e_xy - mu_x * mu_y
        num = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
        den = (mu_x * mu_x + mu_y * mu_y + c1) * (sigma_x + sigma_y + c2)
        return num / den


def ssim_components(
    x: Tensor,
    y: Tensor,
    window: int = 3,
    c1: float = 1e-4,
    c2: float = 9e-4,
    eps: float = SIGMA_EPS,
    *,
    stacked: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """Luminance L, contrast C and structure S per pixel and channel (C3 = C2/2).

    sigma = sqrt(clamp(var, 0) + eps), and the same eps enters C's denominator, so C <= 1
    (AM-GM) and values and gradients stay finite on constant images. L and C are clamped to
    [0, 1], S to [-1, 1]; with eps = 0, L·C·S equals `ssim_map` up to rounding.

    Args:
        x, y: (N, 3, H, W) images in [0, 1].
        window: odd box window. c1, c2: constants. eps: variance floor inside the sqrt.
        stacked: one pooling call (fast) or one per statistic (reference); same values.
    Returns:
        (L, C, S), each (N, 3, H, W) in float32 (float64 for float64 inputs).
    """
    c3 = c2 / 2
    with torch.autocast(x.device.type, enabled=False):
        mu_x, mu_y, e_xx, e_yy, e_xy = local_statistics(x, y, window, stacked=stacked)
        # float32 cancellation makes near-flat variances slightly negative: clamp before sqrt.
        var_x = (e_xx - mu_x * mu_x).clamp(min=0) + eps
        var_y = (e_yy - mu_y * mu_y).clamp(min=0) + eps
        cov = e_xy - mu_x * mu_y
        sigma_x, sigma_y = var_x.sqrt(), var_y.sqrt()
        lum = (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
        con = (2 * sigma_x * sigma_y + c2) / (var_x + var_y + c2)
        struct = (cov + c3) / (sigma_x * sigma_y + c3)
        return lum.clamp(0, 1), con.clamp(0, 1), struct.clamp(-1, 1)
