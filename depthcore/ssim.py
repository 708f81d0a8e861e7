"""Windowed SSIM: the standard two-factor map (Monodepth2) and its L, C, S components.

Statistics are box-filter means over a `window`×`window` neighbourhood with reflection padding
(torch ReflectionPad2d, i.e. scipy `mode='mirror'`), so every map has the input's shape. All
five statistics come from one box-filter pass over a channel-stacked tensor (`box_filter`); a
target compared with many images has its own two pooled once (`window_statistics`). And
everything is computed in float32 (float64 stays float64) with autocast disabled: under bf16
autocast the E[x²] − E[x]² cancellation would destroy the variances. `stacked=False` is
Monodepth2's way (one avg_pool2d per statistic), kept as the benchmark's reference.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from depthcore.tensors import autocast_off, upcast

__all__ = ["box_filter", "local_statistics", "ssim_components", "ssim_map", "window_statistics"]

# sqrt(var + eps) keeps the gradient finite on flat windows, where d sqrt(v)/dv is infinite.
SIGMA_EPS = 1e-8


def window_statistics(y: Tensor, window: int = 3) -> tuple[Tensor, Tensor]:
    """Box-filter means mu_y and E[y²] of a fixed image, e.g. the loss's target.

    Computed once, they serve every comparison against that image (`y_stats` below): in
    Monodepth2's loss the target is compared with every warped source at every scale.

    Args:
        y: (..., C, H, W) images. window: odd pooling window.
    Returns:
        (mu_y, E[y²]), each shaped like y, float32 (float64 stays float64).
    """
    y = upcast(y)
    mu, e_sq = _pool(torch.cat([y, y * y], dim=-3), window).chunk(2, dim=-3)
    return mu, e_sq


def local_statistics(
    x: Tensor,
    y: Tensor,
    window: int = 3,
    *,
    stacked: bool = True,
    y_stats: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Box-filter means mu_x, mu_y, E[x²], E[y²], E[xy] from ONE pooling call.

    Args:
        x, y: (..., C, H, W) images; y broadcastable to x (e.g. one target for a stack of
            warped sources, x (N, B, C, H, W) and y (B, C, H, W)).
        window: odd pooling window; reflection padding window // 2 keeps H×W.
        stacked: False pads and pools each statistic separately, as Monodepth2's SSIM module
            does (the benchmark's reference path); the values are the same.
        y_stats: `window_statistics(y, window)` computed beforehand; then only x's statistics
            and E[xy] are pooled here, and mu_y, E[y²] keep y's (smaller) shape.
    Returns:
        Five tensors in float32 (float64 if the inputs are float64), each shaped like x
        (mu_y and E[y²] like y when `y_stats` is given).
    """
    x, y = upcast(x), upcast(y)
    if y_stats is not None:
        mu_x, e_xx, e_xy = _pool(torch.cat([x, x * x, x * y], dim=-3), window).chunk(3, dim=-3)
        return mu_x, upcast(y_stats[0]), e_xx, upcast(y_stats[1]), e_xy
    x, y = torch.broadcast_tensors(x, y)
    pad = window // 2
    if not stacked:  # Monodepth2's SSIM module: pad x and y, then one pooling call each
        xp, yp = F.pad(x, [pad] * 4, mode="reflect"), F.pad(y, [pad] * 4, mode="reflect")
        padded = (xp, yp, xp * xp, yp * yp, xp * yp)
        return tuple(F.avg_pool2d(t, window, stride=1) for t in padded)  # type: ignore[return-value]
    if x.requires_grad == y.requires_grad:
        pooled = _pool(torch.cat([x, y, x * x, y * y, x * y], dim=-3), window)
        mu_x, mu_y, e_xx, e_yy, e_xy = pooled.chunk(5, dim=-3)
        return mu_x, mu_y, e_xx, e_yy, e_xy
    # One image is a constant (the loss's target): pool its statistics in a pass of their own,
    # so the backward pass filters 3 of the 5 statistics instead of all of them.
    a, b = (x, y) if x.requires_grad else (y, x)
    mu_a, e_aa, e_xy = _pool(torch.cat([a, a * a, x * y], dim=-3), window).chunk(3, dim=-3)
    mu_b, e_bb = window_statistics(b, window)
    if x.requires_grad:
        return mu_a, mu_b, e_aa, e_bb, e_xy
    return mu_b, mu_a, e_bb, e_aa, e_xy


def _pool(stack: Tensor, window: int) -> Tensor:
    """Reflection-padded box mean of (..., C, H, W), any number of leading dims."""
    pad = window // 2
    flat = stack.reshape(-1, *stack.shape[-3:])
    pooled = box_filter(F.pad(flat, [pad] * 4, mode="reflect"), window)
    return pooled.view(stack.shape)


def ssim_map(
    x: Tensor,
    y: Tensor,
    window: int = 3,
    c1: float = 1e-4,
    c2: float = 9e-4,
    *,
    stacked: bool = True,
    y_stats: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Standard SSIM per pixel and channel (the two-factor form, C3 = C2/2), as Monodepth2.

    Args:
        x, y: (..., 3, H, W) images in [0, 1], y broadcastable to x.
        window: odd box window (Monodepth2: 3). c1, c2: stabilising constants.
        stacked: one pooling call (fast) or one per statistic (reference); same values.
        y_stats: `window_statistics(y, window)`, when y is compared with many images.
    Returns:
        SSIM shaped like x, in [-1, 1] (unclamped, exactly Monodepth2's formula).
    """
    with autocast_off(x.device.type):
        stats = local_statistics(x, y, window, stacked=stacked, y_stats=y_stats)
        mu_x, mu_y, e_xx, e_yy, e_xy = stats
        # Each product once: these are full-size maps, and every op costs memory bandwidth.
        # Terms of y alone are grouped so that they keep y's (possibly smaller) shape.
        mxx, myy, mxy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        num = (2 * mxy + c1) * (2 * (e_xy - mxy) + c2)
        den = (mxx + (myy + c1)) * ((e_xx - mxx) + (e_yy - myy + c2))
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
    y_stats: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Luminance L, contrast C and structure S per pixel and channel (C3 = C2/2).

    sigma = sqrt(clamp(var, 0) + eps), and the same eps enters C's denominator, so C <= 1
    (AM-GM) and values and gradients stay finite on constant images. L and C are clamped to
    [0, 1], S to [-1, 1]; with eps = 0, L·C·S equals `ssim_map` up to rounding.

    Args:
        x, y: (..., 3, H, W) images in [0, 1], y broadcastable to x.
        window: odd box window. c1, c2: constants. eps: variance floor inside the sqrt.
        stacked: one pooling call (fast) or one per statistic (reference); same values.
        y_stats: `window_statistics(y, window)`, when y is compared with many images.
    Returns:
        (L, C, S), each shaped like x, in float32 (float64 for float64 inputs).
    """
    c3 = c2 / 2
    with autocast_off(x.device.type):
        stats = local_statistics(x, y, window, stacked=stacked, y_stats=y_stats)
        mu_x, mu_y, e_xx, e_yy, e_xy = stats
        # float32 cancellation makes near-flat variances slightly negative: clamp before sqrt.
        mxx, myy, mxy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
        var_x = (e_xx - mxx).clamp(min=0) + eps
        var_y = (e_yy - myy).clamp(min=0) + eps
        sigma_xy = (var_x * var_y).sqrt()  # sigma_x * sigma_y in one root
        lum = (2 * mxy + c1) / (mxx + (myy + c1))
        con = (2 * sigma_xy + c2) / (var_x + (var_y + c2))
        struct = (e_xy - mxy + c3) / (sigma_xy + c3)
        return lum.clamp(0, 1), con.clamp(0, 1), struct.clamp(-1, 1)


def box_filter(x: Tensor, window: int) -> Tensor:
    """Mean over `window`×`window` neighbourhoods without padding: `avg_pool2d(x, window, 1)`.

    On CPU it is computed separably as sums of shifted slices, with a hand-written backward
    (the adjoint box sum over the zero-padded gradient): the same values up to float rounding,
    and about three times as fast as avg_pool2d's direct loops, forward plus backward. On a GPU
    avg_pool2d's single pass moves less memory, so it is used there.

    Args:
        x: (N, C, H + window - 1, W + window - 1), already padded.
    Returns:
        (N, C, H, W).
    """
    if x.device.type != "cpu":
        return F.avg_pool2d(x, window, stride=1)
    return _BoxSum.apply(x, window) * (1.0 / (window * window))


def _box_sum(x: Tensor, window: int) -> Tensor:
    if window == 1:
        return x.clone()
    # The first add of each pass allocates its output: no separate copy pass.
    h, w = x.shape[-2] - window + 1, x.shape[-1] - window + 1
    rows = x[..., :, 0:w] + x[..., :, 1 : 1 + w]
    for i in range(2, window):
        rows += x[..., :, i : i + w]
    out = rows[..., 0:h, :] + rows[..., 1 : 1 + h, :]
    for i in range(2, window):
        out += rows[..., i : i + h, :]
    return out


class _BoxSum(torch.autograd.Function):
    """Valid-mode window sum; its adjoint is the full-mode window sum of the gradient."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, window: int) -> Tensor:
        ctx.window = window
        return _box_sum(x, window)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        k = ctx.window
        return _box_sum(F.pad(grad, [k - 1] * 4), k), None
