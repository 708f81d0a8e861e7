"""Monodepth2's augmentation: horizontal flip and colour jitter, p = 0.5 each, one draw per sample.

The draws are a pure function of (train.seed, epoch, sample index), so they do not depend on
the number of DataLoader workers or on persistent workers. The flip is applied to the uint8
frames in the dataset; the jitter is applied on the device, batched, by `apply_jitter`, with
torchvision's ColorJitter semantics (brightness, contrast, saturation in (0.8, 1.2), hue in
(-0.1, 0.1), the four ops in a random order) and the same parameters for every frame of a sample.
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
# torchvision.transforms.v2.functional adjust_* on float images, with per-sample factors


def _grayscale(img: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (torchvision's weights), keeping a channel dim: (..., 1, H, W)."""
    r, g, b = img.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)


def _blend(img: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    return (ratio * img + (1.0 - ratio) * other).clamp(0.0, 1.0)


def adjust_brightness(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """img (..., 3, H, W) in [0, 1]; factor broadcastable to img (e.g. (B, 1, 1, 1, 1))."""
    return (img * factor).clamp(0.0, 1.0)


def adjust_contrast(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the mean grey level of each image (each frame separately)."""
    mean = _grayscale(img).mean(dim=(-3, -2, -1), keepdim=True)
    return _blend(img, mean, factor)


def adjust_saturation(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return _blend(img, _grayscale(img), factor)


def _rgb_to_hsv(img: torch.Tensor) -> torch.Tensor:
    r, g, b = img.unbind(dim=-3)
    maxc, _ = img.max(dim=-3)
    minc, _ = img.min(dim=-3)
    delta = maxc - minc
    grey = delta == 0
    sat = delta / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    span = torch.where(grey, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / span, (maxc - g) / span, (maxc - b) / span
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(grey, torch.zeros_like(hue), hue)
    hue = torch.remainder(hue / 6.0 + 1.0, 1.0)
    return torch.stack((hue, sat, maxc), dim=-3)


# Per HSV sector 0..5, which of (v, p, q, t) is r, g and b.
_SECTOR_RGB = torch.tensor([[0, 2, 1, 1, 3, 0], [3, 0, 0, 2, 1, 1], [1, 1, 3, 0, 0, 2]])


@functools.lru_cache(maxsize=8)
def _sector_table(device: torch.device) -> torch.Tensor:
    # Cached per device: a host-to-device copy inside the step would break CUDA-graph capture.
    return _SECTOR_RGB.to(device)


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    h, s, v = hsv.unbind(dim=-3)
    h6 = h * 6.0
    sector = torch.floor(h6)
    f = h6 - sector
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    vpqt = torch.stack((v, p, q, t), dim=-3)
    select = _sector_table(hsv.device)[:, torch.remainder(sector, 6).long()]  # (3, ..., H, W)
    return vpqt.gather(-3, select.movedim(0, -3))


def adjust_hue(img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by `factor` turns (in [-0.5, 0.5]) in HSV space."""
    hsv = _rgb_to_hsv(img)
    h, s, v = hsv.unbind(dim=-3)
    h = torch.remainder(h + factor.squeeze(-3), 1.0)
    return _hsv_to_rgb(torch.stack((h, s, v), dim=-3))


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def apply_jitter(
    images: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor, do: torch.Tensor
) -> torch.Tensor:
    """Colour-jitter a batch; every frame of a sample gets the same factors and order.

    Args:
        images: (B, F, 3, H, W) float in [0, 1], on any device.
        jitter: (B, 4) brightness, contrast, saturation, hue factors.
        order: (B, 4) int64 permutation of 0..3: the ops in the order they are applied.
        do: (B,) bool: samples without jitter are returned unchanged.
    Returns a new tensor (the input is not modified). On a GPU the work is done without host
    synchronisation (`apply_jitter_masked`), so the step can be captured as a CUDA graph.
    """
    if images.device.type != "cpu":
        return apply_jitter_masked(images, jitter, order, do)
    out = images.clone()
    jitter = jitter.to(device=images.device, dtype=images.dtype)
    order = order.to(images.device)
    do = do.to(images.device).bool()
    for step in range(4):
        for op in range(4):
            idx = torch.nonzero(do & (order[:, step] == op)).squeeze(1)
            if idx.numel():
                factor = jitter[idx, op].view(-1, *([1] * (images.dim() - 1)))
                out[idx] = _OPS[op](out[idx], factor)
    return out


def apply_jitter_masked(
    images: torch.Tensor, jitter: torch.Tensor, order: torch.Tensor, do: torch.Tensor
) -> torch.Tensor:
    """`apply_jitter` without data-dependent indexing: every op runs on the whole batch.

    Brightness, contrast and saturation with factor 1 are exactly the identity on [0, 1]
    images, so unselected samples get factor 1; the hue op is selected with `torch.where`.
    Same result as the indexed version, bit for bit.
    """
    shape = (-1, *([1] * (images.dim() - 1)))
    jitter = jitter.to(device=images.device, dtype=images.dtype)
    order = order.to(images.device)
    do = do.to(images.device).bool()
    out = images
    for step in range(4):
        for op in range(4):
            selected = (do & (order[:, step] == op)).view(shape)
            if op < 3:
                factor = torch.where(selected, jitter[:, op].view(shape), 1.0)
                out = _OPS[op](out, factor)
            else:
                out = torch.where(selected, adjust_hue(out, jitter[:, op].view(shape)), out)
    return out if out is not images else images.clone()
