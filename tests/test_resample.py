"""Monodepth2's image pyramid: depthcore.resample against Pillow itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from depthcore.resample import lanczos_pyramid, lanczos_resize, lanczos_weights


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
