"""SSIM map and L/C/S components against independent scipy / scikit-image references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter
from skimage.metrics import structural_similarity

from depthcore.ssim import (
    box_filter,
    local_statistics,
    ssim_components,
    ssim_map,
    window_statistics,
)

C1, C2 = 1e-4, 9e-4


def _pair(seed: int = 0, shape: tuple[int, ...] = (2, 3, 32, 48)) -> tuple[np.ndarray, np.ndarray]:
    """A correlated image pair in [0, 1] (float64), so S spans a useful range."""
    rng = np.random.default_rng(seed)
    x = rng.random(shape)
    y = np.clip(0.6 * x + 0.4 * rng.random(shape), 0, 1)
    return x, y


def _ref_stats(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Box-filter statistics of one (H, W) channel; scipy 'mirror' == torch ReflectionPad2d."""

    def box(a: np.ndarray) -> np.ndarray:
        return uniform_filter(a, size=size, mode="mirror")

    mx, my = box(x), box(y)
    return mx, my, box(x * x) - mx * mx, box(y * y) - my * my, box(x * y) - mx * my


def _ref_components(x: np.ndarray, y: np.ndarray, size: int) -> tuple[np.ndarray, ...]:
    """Textbook l, c, s (Wang et al. 2004) with C3 = C2/2, no eps."""
    mx, my, vx, vy, cxy = _ref_stats(x, y, size)
    sx, sy = np.sqrt(np.maximum(vx, 0)), np.sqrt(np.maximum(vy, 0))
    lum = (2 * mx * my + C1) / (mx**2 + my**2 + C1)
    con = (2 * sx * sy + C2) / (vx + vy + C2)
    struct = (cxy + C2 / 2) / (sx * sy + C2 / 2)
    return lum, con, struct


def _channels(a: np.ndarray) -> list[tuple[int, int]]:
    return [(b, c) for b in range(a.shape[0]) for c in range(a.shape[1])]


@pytest.mark.parametrize("window", [3, 5, 7])
def test_components_match_scipy_reference(window: int) -> None:
    x, y = _pair()
    got = ssim_components(torch.from_numpy(x), torch.from_numpy(y), window, C1, C2, eps=0.0)
    for b, c in _channels(x):
        ref = _ref_components(x[b, c], y[b, c], window)
        for name, g, r in zip("LCS", got, ref, strict=True):
            np.testing.assert_allclose(g[b, c].numpy(), r, atol=1e-10, err_msg=name)


def test_default_eps_changes_components_negligibly_on_textured_images() -> None:
    x, y = _pair(1)
    exact = ssim_components(torch.from_numpy(x), torch.from_numpy(y), eps=0.0)
    safe = ssim_components(torch.from_numpy(x), torch.from_numpy(y))
    for e, s in zip(exact, safe, strict=True):
        assert (e - s).abs().max() < 1e-4


@pytest.mark.parametrize("window", [3, 7])
def test_product_of_components_is_two_factor_ssim(window: int) -> None:
    x, y = (torch.from_numpy(a) for a in _pair(2))
    lum, con, struct = ssim_components(x, y, window, eps=0.0)
    torch.testing.assert_close(lum * con * struct, ssim_map(x, y, window), atol=1e-10, rtol=0)


def test_ssim_map_matches_skimage_in_the_interior() -> None:
    x, y = _pair(3)
    got = ssim_map(torch.from_numpy(x), torch.from_numpy(y), 3, C1, C2).numpy()
    for b, c in _channels(x):
        _, ref = structural_similarity(
            x[b, c],
            y[b, c],
            win_size=3,
            gaussian_weights=False,
            use_sample_covariance=False,
            data_range=1.0,
            full=True,
        )
        np.testing.assert_allclose(got[b, c, 1:-1, 1:-1], ref[1:-1, 1:-1], atol=1e-10)


def test_stacked_comparisons_equal_separate_calls() -> None:
    x, y = (torch.from_numpy(a).float() for a in _pair(4, (6, 3, 16, 24)))
    stacked = ssim_components(x, y)
    for chunk in range(3):
        rows = slice(2 * chunk, 2 * chunk + 2)
        for s, part in zip(stacked, ssim_components(x[rows], y[rows]), strict=True):
            torch.testing.assert_close(s[rows], part)
    torch.testing.assert_close(ssim_map(x, y)[2:4], ssim_map(x[2:4], y[2:4]))


def _extreme_inputs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    rand = torch.rand(2, 3, 16, 24, generator=g)
    flat = torch.full_like(rand, 0.7123)
    near = flat + 1e-3 * torch.randn(rand.shape, generator=g)
    return [(rand, 1 - rand), (rand, flat), (flat, flat), (near, flat), (near, near.flip(-1))]


@pytest.mark.parametrize("case", range(5))
def test_component_ranges_and_finiteness_float32(case: int) -> None:
    x, y = _extreme_inputs()[case]
    lum, con, struct = ssim_components(x, y)
    for t in (lum, con):
        assert torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1
    assert torch.isfinite(struct).all() and struct.min() >= -1 and struct.max() <= 1


def test_affine_positive_slope_gives_structure_one() -> None:
    x = torch.from_numpy(_pair(5)[0])
    struct = ssim_components(x, 0.1 + 0.5 * x)[2]
    assert (struct - 1).abs().max() < 1e-5


def test_affine_anchors_for_contrast_and_structure() -> None:
    """y = a + k·x: C = (2|k|σ²+C2)/((1+k²)σ²+C2), S = (kσ²+C3)/(|k|σ²+C3) (ssim_notes §2)."""
    x = _pair(6)[0]
    k = -0.5
    _, con, struct = ssim_components(torch.from_numpy(x), torch.from_numpy(0.9 + k * x), eps=0)
    for b, c in _channels(x):
        var = _ref_stats(x[b, c], x[b, c], 3)[2]
        c_ref = (2 * abs(k) * var + C2) / ((1 + k * k) * var + C2)
        s_ref = (k * var + C2 / 2) / (abs(k) * var + C2 / 2)
        np.testing.assert_allclose(con[b, c].numpy(), c_ref, atol=1e-9)
        np.testing.assert_allclose(struct[b, c].numpy(), s_ref, atol=1e-9)
    assert struct.median() < -0.9  # anti-correlated: close to -1 where x is textured


def test_flat_against_textured_anchor() -> None:
    """Flat x: σx = σxy = 0, so S = 1 and C = C2/(σy²+C2); the default eps biases this a little."""
    y = _pair(7)[1]
    x = np.full_like(y, 0.5)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    _, con, struct = ssim_components(tx, ty, eps=0.0)
    _, con_eps, struct_eps = ssim_components(tx, ty)
    for b, c in _channels(x):
        var_y = np.maximum(_ref_stats(y[b, c], y[b, c], 3)[3], 0)
        np.testing.assert_allclose(con[b, c].numpy(), C2 / (var_y + C2), rtol=1e-9)
        sigma_eps = np.sqrt(var_y + 1e-8) * 1e-4  # sqrt(eps_x) · sqrt(var_y + eps)
        c_eps = (2 * sigma_eps + C2) / (var_y + 2e-8 + C2)
        np.testing.assert_allclose(con_eps[b, c].numpy(), c_eps, rtol=1e-6)
        np.testing.assert_allclose(
            struct_eps[b, c].numpy(), (C2 / 2) / (sigma_eps + C2 / 2), rtol=1e-6
        )
    np.testing.assert_allclose(struct.numpy(), 1.0, atol=1e-9)
    assert struct_eps.min() > 0.9


def test_constant_images_have_finite_gradients() -> None:
    for x_val, y_val in ((0.7123, 0.7123), (0.3, 0.8)):
        x = torch.full((1, 3, 8, 8), x_val, requires_grad=True)
        y = torch.full((1, 3, 8, 8), y_val)
        lum, con, struct = ssim_components(x, y)
        (lum + con + struct).sum().backward()
        assert torch.isfinite(x.grad).all()


def test_float32_under_bf16_autocast() -> None:
    x, y = (torch.from_numpy(a).float() for a in _pair(8, (1, 3, 16, 16)))
    xb, yb = x.bfloat16(), y.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        comps = ssim_components(xb, yb)
        smap = ssim_map(xb, yb)
    ref = ssim_components(xb.float(), yb.float())
    assert all(c.dtype == torch.float32 for c in comps) and smap.dtype == torch.float32
    for c, r in zip(comps, ref, strict=True):
        torch.testing.assert_close(c, r)
    torch.testing.assert_close(smap, ssim_map(xb.float(), yb.float()))


def test_channels_last_input() -> None:
    x, y = (torch.from_numpy(a).float() for a in _pair(9))
    xc, yc = (t.contiguous(memory_format=torch.channels_last) for t in (x, y))
    torch.testing.assert_close(ssim_map(xc, yc), ssim_map(x, y))
    for a, b in zip(ssim_components(xc, yc), ssim_components(x, y), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("window", [1, 3, 5])
def test_box_filter_equals_avg_pool_with_gradients(window: int) -> None:
    x = torch.rand(2, 3, 9 + window - 1, 11 + window - 1, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(box_filter(x, window), F.avg_pool2d(x, window, stride=1))
    assert torch.autograd.gradcheck(lambda t: box_filter(t, window), (x,))


def test_reference_pooling_and_gradient_split_give_the_same_statistics() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64)
    y = torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64)
    joint = local_statistics(x, y)
    for stats in (
        local_statistics(x, y, stacked=False),
        local_statistics(x.requires_grad_(), y),  # y constant: pooled in a pass of its own
        local_statistics(x.detach(), y.requires_grad_()),
    ):
        for a, b in zip(stats, joint, strict=True):
            torch.testing.assert_close(a.detach(), b)
    pred = torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    grads = []
    for stacked in (True, False):
        (g,) = torch.autograd.grad(ssim_map(pred, y.detach(), stacked=stacked).sum(), pred)
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1])


def test_target_statistics_pooled_once_serve_a_stack_of_comparisons() -> None:
    """y_stats with x (N, B, C, H, W) against y (B, C, H, W): the same SSIM maps and
    gradients as comparing each of the N images with y on its own."""
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(3, 2, 3, 10, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 3, 10, 12, generator=gen, dtype=torch.float64)
    stats = window_statistics(y, 5)
    assert all(s.shape == y.shape for s in stats)

    def maps(fn, xs: torch.Tensor, **kw) -> torch.Tensor:  # (maps, N, B, C, H, W)
        out = fn(xs, y, 5, **kw)
        return torch.stack(out) if isinstance(out, tuple) else out.unsqueeze(0)

    for fn in (ssim_map, ssim_components):
        stacked = maps(fn, x, y_stats=stats)
        looped = torch.stack([maps(fn, x[i]) for i in range(3)], dim=1)
        torch.testing.assert_close(stacked, looped)
        (g1,) = torch.autograd.grad(stacked.square().sum(), x)
        (g2,) = torch.autograd.grad(looped.square().sum(), x)
        torch.testing.assert_close(g1, g2)
