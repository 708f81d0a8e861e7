"""Monodepth2's augmentation: horizontal flip and colour jitter, p = 0.5 each, one draw per sample.

The draws are a pure function of (train.seed, epoch, sample index), so they do not depend on
the number of DataLoader workers or on persistent workers. The flip is applied to the uint8
frames in the dataset; the jitter is applied on the device, batched, by `apply_jitter`, as
torchvision's ColorJitter applies it to Monodepth2's PIL images (brightness, contrast, saturation
in (0.8, 1.2), hue in (-0.1, 0.1), the four ops in a random order, 8-bit Pillow arithmetic) with
the same parameters for every frame of a sample.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

BRIGHTNESS = CONTRAST = SATURATION = (0.8, 1.2)
HUE = (-0.1, 0.1)
# Op indices in `jitter` / `jitter_order`, as torchvision's ColorJitter.get_params orders them.
OP_BRIGHTNESS, OP_CONTRAST, OP_SATURATION, OP_HUE = range(4)


@dataclass(frozen=True)
class Draw:
    """One sample's augmentation: flip, jitter on/off, the 4 jitter factors and their order."""

    flip: bool
    jitter: bool
    factors: np.ndarray  # (4,) float32 brightness, contrast, saturation, hue
    order: np.ndarray  # (4,) int64 permutation of 0..3

    @staticmethod
    def none() -> Draw:
        return Draw(False, False, np.array([1, 1, 1, 0], np.float32), np.arange(4, dtype=np.int64))


def draw_augment(seed: int, epoch: int, index: int) -> Draw:
    """The augmentation of sample `index` in `epoch`: the same on every machine and worker."""
    rng = np.random.default_rng([seed, epoch, index, 0x617567])  # "aug"
    flip, jitter = rng.random(2) > 0.5  # Monodepth2: random.random() > 0.5 each
    factors = np.array(
        [
            rng.uniform(*BRIGHTNESS),
            rng.uniform(*CONTRAST),
            rng.uniform(*SATURATION),
            rng.uniform(*HUE),
        ],
        dtype=np.float32,
    )
    return Draw(bool(flip), bool(jitter), factors, rng.permutation(4).astype(np.int64))


# ----------------------------------------------------------------------------------------------
# Monodepth2 jitters 8-bit PIL images: torchvision's ColorJitter on a PIL image calls Pillow's
# ImageEnhance (Brightness, Contrast, Color: Image.blend, which truncates to 8 bits after every
# op) and, for hue, Pillow's RGB <-> HSV conversions with an 8-bit hue. The ops below reproduce
# those on "levels" (float tensors holding the integers 0..255), including where Pillow computes
# in float32 and where in float64, so the result equals Pillow's pixel for pixel
# (tests/test_data_augment.py); a float-image jitter would differ by a level or two, mostly
# darker (truncation), after every op.


def _luma(levels: torch.Tensor) -> torch.Tensor:
    """Pillow's RGB -> L (ITU-R 601 in 16-bit fixed point), keeping a channel dim.

    Every product and partial sum is an integer below 2^24, so float32 holds them exactly."""
    r, g, b = levels.unbind(dim=-3)
    return torch.floor((r * 19595 + g * 38470 + b * 7471 + 32768) / 65536).unsqueeze(-3)


def _blend(degenerate: torch.Tensor, levels: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Pillow's Image.blend on 8-bit bands: degenerate + alpha (levels - degenerate) in float32,
    clipped to 0..255 and truncated."""
    return torch.floor((degenerate + alpha * (levels - degenerate)).clamp(0.0, 255.0))


def adjust_brightness(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """levels (..., 3, H, W); factor broadcastable to them (e.g. (B, 1, 1, 1, 1)): a blend
    with black."""
    return _blend(torch.zeros_like(levels), levels, factor)


def adjust_contrast(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """A blend with each frame's mean luma, rounded to a level (Pillow's ImageStat mean)."""
    return _blend(_mean_level(_luma(levels)), levels, factor)


def _mean_level(luma: torch.Tensor) -> torch.Tensor:
    """Each frame's mean luma rounded to a level, as Pillow's ImageStat (a float64 mean)."""
    n = luma.shape[-2] * luma.shape[-1]
    mean = torch.floor(luma.double().sum(dim=(-3, -2, -1), keepdim=True) / n + 0.5)
    return mean.to(luma.dtype)


def adjust_saturation(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """A blend with the luma image (Pillow's ImageEnhance.Color)."""
    return _blend(_luma(levels), levels, factor)


def _rgb_to_hsv(levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pillow's RGB -> HSV: 8-bit h, s, v (float tensors of integers, float64)."""
    f32 = levels.float()
    r, g, b = f32.unbind(dim=-3)
    maxc, minc = f32.amax(dim=-3), f32.amin(dim=-3)
    grey = maxc == minc
    span = torch.where(grey, 1.0, maxc - minc)
    sat = (maxc - minc) / torch.where(maxc == 0, 1.0, maxc)  # float32, as Pillow's floats
    rc, gc, bc = ((maxc - c) / span for c in (r, g, b))
    d = torch.float64  # Pillow's double literals promote these sums to double
    hue = torch.where(
        r == maxc,
        (bc - gc).to(d),
        torch.where(g == maxc, (2.0 + rc.to(d)) - bc.to(d), (4.0 + gc.to(d)) - rc.to(d)),
    ).float()
    hue = torch.fmod(hue.to(d) / 6.0 + 1.0, 1.0).float()
    h8 = torch.where(grey, 0.0, torch.trunc(hue.to(d) * 255.0).clamp(0, 255))
    s8 = torch.where(grey, 0.0, torch.trunc(sat.to(d) * 255.0).clamp(0, 255))
    return h8, s8, maxc.to(d)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    # C's round() on x >= 0 (torch.round rounds half to even).
    down = torch.floor(x)
    return down + (x - down >= 0.5).to(x.dtype)


# Per HSV sector 0..5, which of (v, p, q, t) is r, g and b.
_SECTOR_RGB = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])


@functools.lru_cache(maxsize=8)
def _sector_table(device: torch.device) -> torch.Tensor:
    # Cached per device: a host-to-device copy inside the step would break CUDA-graph capture.
    return _SECTOR_RGB.to(device)


def _hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Pillow's HSV -> RGB on 8-bit h, s, v (float64): levels (..., 3, H, W) in float64."""
    h6 = h * 6.0 / 255.0
    sector = torch.floor(h6)
    f = (h6 - sector).float().double()  # stored in a C float
    fs = (s / 255.0).float().double()
    p = _round_half_away(v * (1.0 - fs)).clamp(0, 255)
    q = _round_half_away(v * (1.0 - fs * f)).clamp(0, 255)
    t = _round_half_away(v * (1.0 - fs * (1.0 - f))).clamp(0, 255)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = _sector_table(h.device)[:, torch.remainder(sector, 6).long()]  # (3, ..., H, W)
    rgb = vpqt.gather(-3, select.movedim(0, -3))
    return torch.where((s == 0).unsqueeze(-3), v.unsqueeze(-3), rgb)


def adjust_hue(levels: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Shift the 8-bit hue by trunc(factor * 255) levels, wrapping (torchvision's PIL path)."""
    h, s, v = _rgb_to_hsv(levels)
    shift = torch.trunc(factor.squeeze(-3).double() * 255.0)
    h = torch.remainder(h + shift, 256.0)
    return _hsv_to_rgb(h, s, v).to(levels.dtype)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def to_levels(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images made from 8-bit ones -> their levels 0..255 (float32)."""
    return torch.round(images.float() * 255.0)


def apply_jitter(
    images: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor, do: torch.Tensor
) -> torch.Tensor:
    """Colour-jitter a batch as Monodepth2 does (Pillow, 8 bits); every frame of a sample gets
    the same factors and order.

    Args:
        images: (B, F, 3, H, W) float32 in [0, 1], 8-bit images divided by 255, on any device.
        jitter: (B, 4) brightness, contrast, saturation, hue factors.
        order: (B, 4) int64 permutation of 0..3: the ops in the order they are applied.
        do: (B,) bool: samples without jitter are returned unchanged.
    Returns a new tensor (the input is not modified), again 8-bit images divided by 255. On a
    GPU the work is done without host synchronisation (`apply_jitter_masked`), so the step can
    be captured as a CUDA graph.
    """
    if images.device.type != "cpu":
        return apply_jitter_masked(images, jitter, order, do)
    out = to_levels(images)
    jitter, order, do = _factors(jitter, order, do, images.device)
    for step in range(4):
        for op in range(4):
            idx = torch.nonzero(do & (order[:, step] == op)).squeeze(1)
            if idx.numel():
                factor = jitter[idx, op].view(-1, *([1] * (images.dim() - 1)))
                out[idx] = _OPS[op](out[idx], factor)
    return out / 255.0


def apply_jitter_masked(
    images: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor, do: torch.Tensor
) -> torch.Tensor:
    """`apply_jitter` without data-dependent indexing: every op runs on the whole batch.

    The three blends differ only in what they blend with (black, the mean luma, the luma
    image), so one blend per position applies each sample's op, with weight 1 (exactly the
    identity on levels) where a sample does nothing there. Hue, the costly op, runs once: first
    the blends ordered before each sample's hue, then hue for every sample, then the blends
    after it. Same result as the indexed version, bit for bit.
    """
    shape = (-1, *([1] * (images.dim() - 1)))
    jitter, order, do = _factors(jitter, order, do, images.device)
    hue_at = (order == OP_HUE).long().argmax(dim=1, keepdim=True)  # (B, 1)
    position = torch.arange(4, device=images.device).view(1, 4)
    before, after = do[:, None] & (position < hue_at), do[:, None] & (position > hue_at)
    out = to_levels(images)
    for k in range(3):  # hue is at position 1..3 when a blend precedes it
        out = _blend_op(out, order[:, k], jitter, before[:, k], shape)
    out = torch.where(do.view(shape), adjust_hue(out, jitter[:, OP_HUE].view(shape)), out)
    for k in range(1, 4):
        out = _blend_op(out, order[:, k], jitter, after[:, k], shape)
    return out / 255.0


def _blend_op(
    levels: torch.Tensor,
    op: torch.Tensor,
    jitter: torch.Tensor,
    active: torch.Tensor,
    shape: tuple[int, ...],
) -> torch.Tensor:
    """Each sample's blend op (`op`: brightness, contrast or saturation); identity where not
    `active`. The same arithmetic as adjust_brightness, _contrast and _saturation."""
    luma = _luma(levels)
    other = torch.where((op == OP_CONTRAST).view(shape), _mean_level(luma), 0.0)
    degenerate = torch.where((op == OP_SATURATION).view(shape), luma, other)
    factor = jitter.gather(1, op[:, None]).view(shape)
    return _blend(degenerate, levels, torch.where(active.view(shape), factor, 1.0))


def _factors(
    jitter: torch.Tensor, order: torch.Tensor, do: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # float32: Pillow's blend takes its factor as a C float.
    return jitter.to(device, torch.float32), order.to(device), do.to(device).bool()
