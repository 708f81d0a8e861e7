"""Data: KITTI raw reader, Monodepth2 splits, synthetic KITTI-format drives, ground truth,
the frame cache and the train/test loaders.

Public names load lazily, so `depthcore.data.gt` or the synthetic generator do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DataPaths": "depthcore.data.dataset",
    "resolve_data": "depthcore.data.dataset",
    "build_train_loader": "depthcore.data.dataset",
    "build_val_loader": "depthcore.data.dataset",
    "build_test_loader": "depthcore.data.dataset",
    "build_frames_loader": "depthcore.data.dataset",
    "prepare_validation": "depthcore.data.validation",
    "load_gt_depths": "depthcore.data.gt",
    "export_gt": "depthcore.data.gt",
    "make_synthetic": "depthcore.data.synthetic",
    "ensure_synthetic": "depthcore.data.synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'depthcore.data' has no attribute {name!r}")
