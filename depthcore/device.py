"""Devices and seeds: which torch device a config asks for, how final.json names it, and
seeding every random generator a run uses.

Kept apart from the engine so that evaluation, prediction and the benchmarks use the same rules
without importing the training loop.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from depthcore.cost import cpu_name
from depthcore.errors import ConfigError

__all__ = ["describe_device", "kind_and_name", "resolve_device", "seed_everything"]


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when available; asking for CUDA without one is a config error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "train.device: 'cuda' was requested but torch.cuda.is_available() is False "
            "(no GPU, or a CPU-only torch build); use train.device=auto or cpu"
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    """The device as final.json records it (a GPU with its model name)."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return str(device)


def kind_and_name(device: torch.device) -> tuple[str, str]:
    """('cuda', 'NVIDIA H200') or ('cpu', '2 cores'): how cost records name a device."""
    if device.type == "cuda":
        return "cuda", torch.cuda.get_device_name(device)
    return device.type, cpu_name()


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators (torch seeds every GPU too)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
