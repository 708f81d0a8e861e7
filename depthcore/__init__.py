"""depthcore: a Monodepth2-faithful depth-training engine with the SSIM variants of
"Toward Better SSIM Loss for Unsupervised Monocular Depth Estimation".

Public names load lazily, so `import depthcore` (and the report) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "depthcore.config",
    "LossConfig": "depthcore.config",
    "load_config": "depthcore.config",
    "ssim_components": "depthcore.ssim",
    "photometric_error": "depthcore.losses",
    "depth_errors": "depthcore.metrics",
    "train": "depthcore.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'depthcore' has no attribute {name!r}")
