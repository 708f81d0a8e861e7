"""Eigen-protocol evaluation of a depth network on a test split, per decoder scale.

Disparity is predicted at network resolution (lower decoder scales upsampled to it first),
resized to each ground-truth map's native size as Monodepth2's cv2.resize does, inverted to
depth, then `metrics.eigen_image_errors` applies the mask, Garg crop, per-image median scaling
and clamp. Per-image metrics are kept: the report's paired statistics need them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from depthcore.config import Config, EvalConfig, ModelConfig
from depthcore.device import resolve_device
from depthcore.errors import ConfigError
from depthcore.geometry import disp_to_depth
from depthcore.metrics import eigen_image_errors, mean_errors
from depthcore.networks import Models, predict_depth
from depthcore.resample import linear_resize


@dataclass
class Predictions:
    """The first test images and their scaled disparities (disp_to_depth's first output) at
    network resolution, per scale: what a run keeps for figures."""

    disp: dict[int, list[np.ndarray]]  # scale -> one (H, W) float32 array per kept image
    rgb: list[np.ndarray] = field(default_factory=list)  # (H, W, 3) uint8 of the kept images
    index: list[int] = field(default_factory=list)  # split line of each kept image


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
def evaluate_model(
    models: Models,
    batches: Iterable[dict[str, torch.Tensor]],
    gts: Sequence[np.ndarray],
    *,
    model_cfg: ModelConfig,
    eval_cfg: EvalConfig,
    scales: Sequence[int],
    device: torch.device,
    keep: int = 0,
) -> tuple[Evaluation, Predictions]:
    """Run the depth network over test batches ({"color": uint8 (B,3,H,W), "index": (B,)}) and
    evaluate each batch as it comes, so that only the first `keep` predictions are held (every
    prediction of the 697 Eigen images at four scales would be 1.4 GB).

    Always in float32: the metrics must not depend on the training's speed switches (bf16
    autocast rounds every activation to 8 significant bits). Images without valid ground truth
    are left out of the metrics.
    """
    was_training = models.training
    models.eval()
    kept = Predictions(disp={s: [] for s in scales})
    rows: dict[int, list[dict[str, float | int]]] = {s: [] for s in scales}
    seen = 0
    try:
        for batch in batches:
            color = batch["color"].to(device, non_blocking=True)
            images = color.float().div_(255)
            disps = _predict_scaled(models, images, model_cfg, scales, eval_cfg.post_process)
            index = [int(i) for i in batch["index"].tolist()]
            seen += len(index)
            room = keep - len(kept.index)
            for s in scales:
                disp_s = disps[s][:, 0].float().cpu().numpy()
                rows[s].extend(_scale_rows(disp_s, index, s, gts, eval_cfg))
                kept.disp[s].extend(disp_s[:room].copy())  # a copy: not the whole batch
            kept.index.extend(index[:room])
            kept.rgb.extend(c.permute(1, 2, 0).cpu().numpy() for c in color[:room])
    finally:
        models.train(was_training)
    if not seen:
        raise ValueError("no test images to evaluate")
    return _summarise(rows), kept


def _scale_rows(
    disps: np.ndarray,
    index: Sequence[int],
    scale: int,
    gts: Sequence[np.ndarray],
    eval_cfg: EvalConfig,
) -> list[dict[str, float | int]]:
    out: list[dict[str, float | int]] = []
    for idx, disp in zip(index, disps, strict=True):
        res = _image_errors(disp, gts[idx], eval_cfg)
        if res is not None:
            out.append({"image": idx, "scale": scale, **res})
    return out


def _summarise(rows: dict[int, list[dict[str, float | int]]]) -> Evaluation:
    per_image = [row for s in sorted(rows) for row in rows[s]]
    return Evaluation(
        metrics_by_scale={s: mean_errors(scale_rows) for s, scale_rows in rows.items()},
        per_image=per_image,
        n_images=len({row["image"] for row in per_image}),
    )


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


def _image_errors(
    disp: np.ndarray, gt: np.ndarray, eval_cfg: EvalConfig
) -> dict[str, float] | None:
    # Resize the disparity (not the depth) to the ground truth's native size, then invert.
    resized = linear_resize(disp, *gt.shape)
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
    evaluation, _ = evaluate_model(
        models,
        build_test_loader(cfg, paths),
        load_gt_depths(paths.gt_path, paths.test_files),
        model_cfg=cfg.model,
        eval_cfg=cfg.eval,
        scales=scales,
        device=device,
    )
    return evaluation, cfg
