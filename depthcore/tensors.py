"""Tensor helpers shared by the SSIM, geometry and loss modules."""

from __future__ import annotations

import torch
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 → float32; other dtypes unchanged (losses, warping and output layers
    run in fp32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
