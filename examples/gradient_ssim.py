"""A loss plugin: Monodepth2's photometric error with gradient-based SSIM (G-SSIM).

G-SSIM (Chen, Yang and Xie, "Gradient-based structural similarity for image quality
assessment", ICIP 2006) keeps SSIM's luminance term L on the images and takes the contrast and
structure terms C, S from their Sobel gradient maps, where edges, the cue a depth network needs,
dominate:

    G-SSIM = L(I, I') · C(G, G') · S(G, G'),   G = |∂x I| + |∂y I| (Sobel, /4)
    error  = weight · clamp((1 − G-SSIM) / 2, 0, 1) + (1 − weight) · |I − I'|

Used as `loss.photometric: custom` with `loss.custom: {fn: "examples.gradient_ssim:gradient_ssim",
params: {weight: 0.85}, path: .}` (run from the repository root); examples/gradient_ssim.yaml
races it against the Monodepth2 baseline. Capturable in a CUDA graph: slicing and pointwise ops
only, no host syncs and no tensors made from host data.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from depthcore.ssim import ssim_components


def sobel_magnitude(image: Tensor) -> Tensor:
    """|∂x I| + |∂y I| with 3x3 Sobel kernels (replicate padding, /4 so each is in [-1, 1]),
    per channel. The L1 magnitude, as Chen et al. use: sqrt(gx² + gy²) has an infinite slope at
    0, which flat image regions reach. Slices, not a convolution: no kernel tensor to create."""
    flat = image.reshape(-1, *image.shape[-3:])  # replicate padding wants (N, C, H, W)
    p = F.pad(flat, [1, 1, 1, 1], mode="replicate")
    down = p[..., :-2, :] + 2 * p[..., 1:-1, :] + p[..., 2:, :]  # [1, 2, 1] down each column
    across = p[..., :, :-2] + 2 * p[..., :, 1:-1] + p[..., :, 2:]  # [1, 2, 1] along each row
    gx = (down[..., :, 2:] - down[..., :, :-2]) / 4
    gy = (across[..., 2:, :] - across[..., :-2, :]) / 4
    return (gx.abs() + gy.abs()).reshape(image.shape)


def gradient_ssim(
    pred: Tensor,
    target: Tensor,
    *,
    components: tuple[Tensor, Tensor, Tensor],
    l1: Tensor,
    window: int,
    c1: float,
    c2: float,
    weight: float = 0.85,
) -> Tensor:
    """The per-pixel, per-channel error (shaped like pred); `components`, `l1`, `window`, `c1`
    and `c2` are filled in by the loss, `weight` comes from loss.custom.params.

    Args:
        pred: (..., 3, H, W) warped (or un-warped, for auto-masking) source images in [0, 1].
        target: the target images, broadcastable to pred (e.g. (B, 3, H, W)).
        components: SSIM's (L, C, S) of pred against target, per channel.
        l1: |target − pred| per channel.
        window, c1, c2: the SSIM window and constants (loss.ssim_window, loss.c1, loss.c2).
        weight: the G-SSIM share (Monodepth2's κ = 0.85 for SSIM).
    """
    lum = components[0]
    _, con, struct = ssim_components(sobel_magnitude(pred), sobel_magnitude(target), window, c1, c2)
    g_ssim = lum * con * struct
    return weight * ((1 - g_ssim) / 2).clamp(0, 1) + (1 - weight) * l1
