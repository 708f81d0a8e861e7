"""Tensor helpers shared by the SSIM, geometry and loss modules."""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor


def upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 → float32; other dtypes unchanged (losses, warping and output layers
    run in fp32)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def autocast_off(device_type: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast disabled for `device_type`. Meta tensors (shapes without data, which the loss
    plugin check runs on, depthcore.plugins) have no autocast to disable."""
    if device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type, enabled=False)
