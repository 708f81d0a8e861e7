"""Eigen-protocol evaluation of a depth network on a test split, per decoder scale.

Disparity is predicted at network resolution (lower decoder scales upsampled to it first), resized
to each ground-truth map's native size, inverted to depth, then `metrics.eigen_image_errors`
applies the mask, Garg crop, per-image median scaling and clamp. Per-image metrics are kept:
the report's paired statistics need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depthcore.config import Config, EvalConfig, ModelConfig
from depthcore.errors import ConfigError
from depthcore.geometry import disp_to_depth
from depthcore.metrics import eigen_image_errors, mean_errors
from depthcore.networks import Models, predict_depth


@dataclass
class Predictions:
    """Scaled disparities (disp_to_depth's first output) at network resolution, per scale."""

    disp: dict[int, list[np.ndarray]]  # scale -> one (H, W) float32 array per image, in split order
    rgb: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 of the first images
    index: list[int] = field(default_factory=list)  # split line of each prediction


@dataclass
class Evaluation:
    """Mean metrics per scale, and the per-image rows behind them."""

    metrics_by_scale: dict[int, dict[str, float]]
    per_image: list[dict[str, float | int]]  # {"image", "scale", abs_rel ... a3}
    n_images: int


def post_process_disparity(disp: torch.Tensor, disp_flipped: torch.Tensor) -> torch.Tensor:
    """Monodepth2's flip post-processing: blend a prediction and its mirrored twin with ramps.

    Args:
        disp, disp_flipped: (B, 1, H, W); the second from the horizontally flipped input.
    """
    right = torch.flip(disp_flipped, dims=[3])
    mean = 0.5 * (disp + right)
    width = disp.shape[3]
    ramp = torch.linspace(0, 1, width, device=disp.device, dtype=disp.dtype).view(1, 1, 1, -1)
    left_mask = 1.0 - torch.clamp(20 * (ramp - 0.05), 0, 1)
    right_mask = torch.flip(left_mask, dims=[3])
    return right_mask * disp + left_mask * right + (1.0 - left_mask - right_mask) * mean


@torch.no_grad()
def predict(
    models: Models,
    batches: Iterable[dict[str, torch.Tensor]],
    *,
    model_cfg: ModelConfig,
    scales: Sequence[int],
    device: torch.device,
    post_process: bool = False,
    keep_rgb: int = 0,
) -> Predictions:
    """Run the depth network over test batches ({"color": uint8 (B,3,H,W), "index": (B,)}).

    Always in float32: the metrics must not depend on the training's speed switches (bf16
    autocast rounds every activation to 8 significant bits)."""
    was_training = models.training
    models.eval()
    out = Predictions(disp={s: [] for s in scales})
    for batch in batches:
        color = batch["color"].to(device, non_blocking=True)
        images = color.float().div_(255)
        disps = _predict_scaled(models, images, model_cfg, scales, post_process)
        for s in scales:
            out.disp[s].extend(d[0] for d in disps[s].float().cpu().numpy())
        for i, idx in enumerate(batch["index"].tolist()):
            out.index.append(int(idx))
            if len(out.rgb) < keep_rgb:
                out.rgb.append(color[i].permute(1, 2, 0).cpu().numpy())
    models.train(was_training)
    return out


def _predict_scaled(
    models: Models,
    images: torch.Tensor,
    model_cfg: ModelConfig,
    scales: Sequence[int],
    post_process: bool,
) -> dict[int, torch.Tensor]:
    inputs = torch.cat([images, torch.flip(images, dims=[3])]) if post_process else images
    raw = predict_depth(models, inputs)
    size = images.shape[-2:]
    out = {}
    for s in scales:
        disp = F.interpolate(raw[s].float(), size=size, mode="bilinear", align_corners=False)
        disp = disp_to_depth(disp, model_cfg.min_depth, model_cfg.max_depth)[0]
        if post_process:
            n = images.shape[0]
            disp = post_process_disparity(disp[:n], disp[n:])
        out[s] = disp
    return out


def evaluate_predictions(
    preds: Predictions, gts: Sequence[np.ndarray], eval_cfg: EvalConfig
) -> Evaluation:
    """Eigen-protocol metrics of every scale; images without valid ground truth are left out."""
    if not preds.index:
        raise ValueError("no predictions to evaluate")
    by_scale: dict[int, dict[str, float]] = {}
    rows: list[dict[str, float | int]] = []
    for s, disps in preds.disp.items():
        scale_rows = []
        for idx, disp in zip(preds.index, disps, strict=True):
            res = _image_errors(disp, gts[idx], eval_cfg)
            if res is not None:
                scale_rows.append({"image": idx, "scale": s, **res})
        by_scale[s] = mean_errors(scale_rows)
        rows.extend(scale_rows)
    n_images = len({row["image"] for row in rows})
    return Evaluation(metrics_by_scale=by_scale, per_image=rows, n_images=n_images)


def _image_errors(
    disp: np.ndarray, gt: np.ndarray, eval_cfg: EvalConfig
) -> dict[str, float] | None:
    # Resize the disparity (not the depth) to the ground truth's native size, then invert.
    resized = F.interpolate(
        torch.from_numpy(disp)[None, None], size=gt.shape, mode="bilinear", align_corners=False
    )[0, 0].numpy()
    res = eigen_image_errors(
        gt,
        1.0 / resized,
        min_depth=eval_cfg.min_depth,
        max_depth=eval_cfg.max_depth,
        garg_crop=eval_cfg.garg_crop,
        median_scaling=eval_cfg.median_scaling,
    )
    return None if res is None else res[0]


def evaluate_weights(
    weights: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    scales: Sequence[int] | None = None,
) -> tuple[Evaluation, Config]:
    """Evaluate a run folder or a Monodepth2 model folder on the configured test split."""
    from depthcore.data import build_test_loader, load_gt_depths, resolve_data
    from depthcore.engine import resolve_device
    from depthcore.weights import load_weights

    models, cfg = load_weights(weights, config=config, overrides=overrides)
    scales = tuple(sorted(scales)) if scales else cfg.eval.scales
    unknown = sorted(set(scales) - set(cfg.model.scales))
    if unknown:
        raise ConfigError(
            f"--scales {list(scales)}: the decoder outputs only scales {list(cfg.model.scales)}"
        )
    device = resolve_device(cfg.train.device)
    models.to(device)
    paths = resolve_data(cfg, train=False)
    preds = predict(
        models,
        build_test_loader(cfg, paths),
        model_cfg=cfg.model,
        scales=scales,
        device=device,
        post_process=cfg.eval.post_process,
    )
    return evaluate_predictions(preds, load_gt_depths(paths.gt_path), cfg.eval), cfg
