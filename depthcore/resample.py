"""Pillow's Lanczos resampling as two matrix products, for Monodepth2's image pyramid, and
OpenCV's bilinear resize, for its evaluation.

Monodepth2 builds the images its smoothness term sees at scale s by resizing the 8-bit image of
scale s-1 with `Image.ANTIALIAS` (Pillow's LANCZOS: a windowed sinc with support 3, stretched by
the reduction factor, normalised per output pixel). The weights follow Pillow's
`precompute_coeffs`; in 8-bit mode they are also rounded to Pillow's 22-bit fixed point and each
pass (horizontal, then vertical) is rounded and clipped to 0..255 as Pillow does, computed in
float64 so that every sum is exact: the pyramid equals Pillow's pixel for pixel
(tests/test_resample.py). Float mode matches Pillow's "F" mode.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import Tensor

LANCZOS_SUPPORT = 3.0
_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit resampling (32 - 8 - 2)


def _lanczos(x: np.ndarray) -> np.ndarray:
    return np.where(np.abs(x) < LANCZOS_SUPPORT, np.sinc(x) * np.sinc(x / LANCZOS_SUPPORT), 0.0)


def lanczos_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) float64 matrix of Pillow's LANCZOS resize along one axis."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = LANCZOS_SUPPORT * filterscale
    weights = np.zeros((n_out, n_in))
    for out in range(n_out):
        center = (out + 0.5) * scale
        # int() truncates toward zero, as Pillow's C cast does.
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        k = _lanczos((np.arange(lo, hi) - center + 0.5) / filterscale)
        total = k.sum()
        weights[out, lo:hi] = k / total if total != 0 else k
    return weights


def _fixed_point(weights: np.ndarray) -> np.ndarray:
    # Pillow rounds each coefficient half away from zero to a multiple of 2^-22.
    k = weights * 2**_PRECISION_BITS
    return np.where(k < 0, np.trunc(k - 0.5), np.trunc(k + 0.5)) / 2**_PRECISION_BITS


@functools.lru_cache(maxsize=64)
def _weights(
    n_in: int, n_out: int, device: torch.device, dtype: torch.dtype, fixed_point: bool
) -> Tensor:
    # Cached on the device: a CUDA graph captures the step after warm-up steps that built these,
    # and a host-to-device copy cannot be captured.
    weights = lanczos_weights(n_in, n_out)
    if fixed_point:
        weights = _fixed_point(weights)
    with torch.inference_mode(False), torch.no_grad():
        return torch.as_tensor(weights, dtype=dtype, device=device)


def lanczos_resize(images: Tensor, size: tuple[int, int], *, uint8: bool = False) -> Tensor:
    """Resize (..., H, W) float images to size = (h, w) as Pillow's LANCZOS does.

    uint8: the images are 8-bit images divided by 255 (as ToTensor makes them); resize them as
    Pillow resizes the 8-bit image (fixed-point weights, each pass rounded and clipped), and
    return the result divided by 255 in the input's dtype. Otherwise Pillow's float mode.
    """
    if not uint8:
        return _separable(images, size, images.dtype, fixed_point=False, quantise=False)
    levels = torch.round(images.double() * 255)
    out = _separable(levels, size, torch.float64, fixed_point=True, quantise=True)
    return (out / 255).to(images.dtype)


def _separable(
    x: Tensor, size: tuple[int, int], dtype: torch.dtype, *, fixed_point: bool, quantise: bool
) -> Tensor:
    h, w = size
    if w != x.shape[-1]:
        x = x @ _weights(x.shape[-1], w, x.device, dtype, fixed_point).T
        x = _round_clip(x) if quantise else x
    if h != x.shape[-2]:
        x = _weights(x.shape[-2], h, x.device, dtype, fixed_point) @ x
        x = _round_clip(x) if quantise else x
    return x


def _round_clip(x: Tensor) -> Tensor:
    # Pillow adds half a unit before the shift: round half up, then clip to 0..255.
    return torch.floor(x + 0.5).clamp_(0, 255)


def lanczos_pyramid(image: Tensor, levels: int, *, uint8: bool = True) -> list[Tensor]:
    """[image, image/2, ..., image/2^(levels-1)]: each level resized from the one before
    (Monodepth2's chain) to (H // 2^i, W // 2^i)."""
    h, w = image.shape[-2:]
    pyramid = [image]
    for i in range(1, levels):
        pyramid.append(lanczos_resize(pyramid[-1], (h // 2**i, w // 2**i), uint8=uint8))
    return pyramid


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps along one axis: first source index, float32 weights of the
    two taps. The source coordinate is computed in float64 and only the weights are rounded to
    float32 (torch's bilinear computes the coordinate in float32, its weights are off by up to
    ~6e-5 at KITTI widths)."""
    coord = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    first = np.floor(coord).astype(np.int64)
    frac = coord - first
    w1 = frac.astype(np.float32)
    return first, (np.float32(1) - w1), w1


def linear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`cv2.resize(image, (width, height))` (INTER_LINEAR) of a float32 (H, W) map.

    Monodepth2's evaluation resizes each predicted disparity to its ground truth's size this
    way. Half-pixel centres, edge taps clamped, horizontal pass first, each pass rounded to
    float32: within 1e-6 relative of OpenCV 5.0 at the Eigen ground-truth sizes, where torch's
    bilinear is up to 7e-4 off (tests/test_resample.py holds OpenCV's output for two cases).
    """
    src = np.asarray(image, dtype=np.float32)
    if src.ndim != 2 or height < 1 or width < 1:
        raise ValueError(f"expected a 2-D map and a positive size: {src.shape} -> {height}x{width}")
    h_in, w_in = src.shape
    x0, a0, a1 = _linear_taps(w_in, width)
    # Columns left of the first centre or right of the last take the edge pixel itself.
    edge = (x0 < 0) | (x0 >= w_in - 1)
    x0 = np.clip(x0, 0, w_in - 1)
    a0, a1 = np.where(edge, np.float32(1), a0), np.where(edge, np.float32(0), a1)
    x1 = np.minimum(x0 + 1, w_in - 1)
    rows = (src[:, x0] * a0.astype(np.float64) + src[:, x1] * a1.astype(np.float64)).astype(
        np.float32
    )
    y0, b0, b1 = _linear_taps(h_in, height)
    top, bottom = rows[np.clip(y0, 0, h_in - 1)], rows[np.clip(y0 + 1, 0, h_in - 1)]
    out = top * b0[:, None].astype(np.float64) + bottom * b1[:, None].astype(np.float64)
    return out.astype(np.float32)
