"""Monodepth2's image pyramid: depthcore.resample against Pillow itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from depthcore.resample import lanczos_pyramid, lanczos_resize, lanczos_weights, linear_resize


def _pillow_8bit_chain(rgb: np.ndarray, levels: int) -> list[np.ndarray]:
    """Monodepth2's loader: scale i is scale i-1 resized with Image.ANTIALIAS (LANCZOS)."""
    h, w = rgb.shape[:2]
    image, out = Image.fromarray(rgb), [rgb]
    for i in range(1, levels):
        image = image.resize((w // 2**i, h // 2**i), Image.Resampling.LANCZOS)
        out.append(np.asarray(image))
    return out


def _smooth_rgb(h: int, w: int, seed: int) -> np.ndarray:
    # Edges and gradients as well as noise: clipping and rounding both matter.
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:h, 0:w]
    ramp = (xs / w)[..., None] * np.array([255.0, 120.0, 30.0])
    steps = np.where((xs // 7 + ys // 5) % 2 == 0, 250.0, 5.0)[..., None]
    noise = rng.normal(0, 25, (h, w, 3))
    return np.clip(0.5 * ramp + 0.4 * steps + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("shape", "size"),
    [((192, 640), (96, 320)), ((375, 1242), (192, 640)), ((7, 9), (3, 4)), ((10, 12), (20, 15))],
)
def test_float_resize_matches_pillow_float_mode(shape: tuple, size: tuple) -> None:
    x = np.random.default_rng(0).random(shape).astype(np.float32)
    expected = np.asarray(Image.fromarray(x, mode="F").resize(size[::-1], Image.Resampling.LANCZOS))
    got = lanczos_resize(torch.from_numpy(x).double(), size).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize(
    ("h", "w", "kind"), [(192, 640, "scene"), (64, 96, "noise"), (40, 72, "scene")]
)
def test_uint8_pyramid_equals_pillow_pixel_for_pixel(h: int, w: int, kind: str) -> None:
    rng = np.random.default_rng(h)
    rgb = _smooth_rgb(h, w, h) if kind == "scene" else rng.integers(0, 256, (h, w, 3), np.uint8)
    expected = _pillow_8bit_chain(rgb, 4)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    pyramid = lanczos_pyramid(image, 4)
    assert [p.shape[-2:] for p in pyramid] == [e.shape[:2] for e in expected]
    for level, (got, want) in enumerate(zip(pyramid, expected, strict=True)):
        assert got.dtype == torch.float32
        levels = torch.round(got[0].permute(1, 2, 0) * 255).numpy().astype(np.int64)
        mismatch = np.abs(levels - want.astype(np.int64))
        assert mismatch.max() == 0, f"level {level}: {int((mismatch > 0).sum())} pixels differ"


def test_lanczos_differs_from_bilinear_where_it_should() -> None:
    # Guard against a silent fallback: on a checkerboard antialiased bilinear and Lanczos disagree.
    rgb = _smooth_rgb(64, 96, 3)
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    lanczos = lanczos_resize(image, (32, 48), uint8=True)
    bilinear = torch.nn.functional.interpolate(
        image, size=(32, 48), mode="bilinear", antialias=True, align_corners=False
    )
    assert (lanczos - bilinear).abs().max().item() > 2 / 255


def test_weights_are_normalised_banded_and_mirror_symmetric() -> None:
    w = lanczos_weights(640, 320)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert np.count_nonzero(w[160]) == 12  # support 3 stretched by the factor 2, both sides
    # Flipping before or after resizing is the same (Monodepth2 flips the native image).
    for n_in, n_out in ((1242, 640), (375, 192), (192, 96)):
        w = lanczos_weights(n_in, n_out)
        np.testing.assert_allclose(w, w[::-1, ::-1], atol=1e-12)


def test_same_size_is_identity_and_bad_sizes_fail() -> None:
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(lanczos_resize(x, (8, 8)), x)
    with pytest.raises(ValueError, match="positive"):
        lanczos_weights(8, 0)


# OpenCV 5.0.0's `cv2.resize(x, (13, 9))` (INTER_LINEAR) of `_cv2_input()`: enlarging 5x8 to
# 9x13 takes every tap and both clamped edges in both directions. OpenCV is not a dependency;
# these values were printed by it once.
_CV2_9x13 = [
    [0.05, 0.17692307, 0.36153847, 0.54615384, 0.7307692, 0.9153846, 0.55, 0.18461539,
     0.36923075, 0.5538461, 0.73846155, 0.92307687, 1.05],
    [0.28333333, 0.41025642, 0.58076924, 0.5397436, 0.5974359, 0.78205127, 0.6, 0.37564105,
     0.33461538, 0.4205128, 0.6051282, 0.78974354, 0.9166666],
    [0.6722222, 0.79914534, 0.9461538, 0.5290598, 0.37521368, 0.55982906, 0.6833334, 0.6940171,
     0.2769231, 0.19829059, 0.38290596, 0.56752133, 0.6944444],
    [0.57222223, 0.6991453, 0.8602564, 0.6688034, 0.5102564, 0.3940171, 0.5222223, 0.6363248,
     0.4448718, 0.46495727, 0.6495726, 0.5521367, 0.4722222],
    [0.35, 0.47692308, 0.6615384, 0.84615386, 0.7346154, 0.24230774, 0.3, 0.4846154,
     0.66923076, 0.85384613, 1.0384614, 0.5884615, 0.25],
    [0.73888886, 0.60726494, 0.4393162, 0.62393165, 0.6769231, 0.5606838, 0.38333336, 0.26239315,
     0.44700852, 0.6316239, 0.81623924, 0.7188034, 0.6388889],
    [1.0055555, 0.7188034, 0.3346154, 0.4440171, 0.5863248, 0.7709402, 0.4666667, 0.16239317,
     0.34700853, 0.48931623, 0.5987179, 0.77863246, 0.90555555],
    [0.7833333, 0.7551282, 0.70000005, 0.43333334, 0.36410254, 0.5487179, 0.55, 0.55128205,
     0.73589736, 0.6666666, 0.4, 0.55641025, 0.68333334],
    [0.65, 0.77692306, 0.91923076, 0.4269231, 0.23076923, 0.4153846, 0.6, 0.7846154,
     0.9692307, 0.7730769, 0.28076926, 0.42307693, 0.55],
]  # fmt: skip
# `cv2.resize(row, (1242, 3))[1, _WIDE_COLUMNS]` of `_cv2_row()`: KITTI's width, where a
# source coordinate computed in float32 (torch's bilinear) shifts the weights by up to 6e-5.
_WIDE_COLUMNS = [0, 97, 194, 291, 388, 485, 582, 679, 776, 873, 970, 1067, 1164, 1241]
_CV2_WIDE = [0.05, 0.53541064, 0.58841383, 0.9024557, 0.5163285, 0.52053946, 0.8345813,
             0.49724638, 0.45266503, 0.76670694, 0.4781643, 0.3847907, 0.6988325, 0.14]  # fmt: skip


def _cv2_input() -> np.ndarray:
    return ((np.arange(5)[:, None] * 7 + np.arange(8)[None] * 3) % 11 / 10 + 0.05).astype(
        np.float32
    )


def _cv2_row() -> np.ndarray:
    return ((np.arange(640) * 37 % 101) / 100 + 0.05).astype(np.float32)[None].repeat(2, 0)


def _torch_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    t = torch.from_numpy(x)[None, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[
        0, 0
    ].numpy()


def test_linear_resize_equals_opencv_where_torch_bilinear_does_not() -> None:
    small = linear_resize(_cv2_input(), 9, 13)
    assert small.dtype == np.float32 and small.shape == (9, 13)
    np.testing.assert_allclose(small, _CV2_9x13, rtol=0, atol=1.5e-7)
    wide = linear_resize(_cv2_row(), 3, 1242)
    np.testing.assert_allclose(wide[1, _WIDE_COLUMNS], _CV2_WIDE, rtol=0, atol=1.5e-7)
    # The check can tell the two apart: torch's bilinear misses OpenCV at KITTI's width.
    torch_wide = _torch_bilinear(_cv2_row(), 3, 1242)[1, _WIDE_COLUMNS]
    assert np.abs(torch_wide - np.asarray(_CV2_WIDE)).max() > 1e-5


def test_linear_resize_limits() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.01, 0.3, (12, 40)).astype(np.float32)
    np.testing.assert_array_equal(linear_resize(x, 12, 40), x)  # same size: every weight 0 or 1
    flat = np.full((6, 20), 0.3, np.float32)
    np.testing.assert_array_equal(linear_resize(flat, 23, 77), np.full((23, 77), 0.3, np.float32))
    # Half-pixel-centred bilinear: torch agrees up to its float32 coordinates.
    np.testing.assert_allclose(linear_resize(x, 37, 125), _torch_bilinear(x, 37, 125), atol=1e-5)
    with pytest.raises(ValueError, match="2-D"):
        linear_resize(x[None], 5, 5)
