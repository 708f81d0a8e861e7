"""Eigen-protocol evaluation of a depth network on a test split, per decoder scale.

Disparity is predicted at network resolution (lower decoder scales upsampled to it first),
resized to each ground-truth map's native size as Monodepth2's cv2.resize does, inverted to
depth, then `metrics.eigen_image_errors` applies the mask, Garg crop, per-image median scaling
and clamp. Per-image metrics are kept: the report's paired statistics need them.

An evaluation is recorded in its own folder (`record_evaluation`): for a run folder,
runs/<run id>/evals/<eval id>/ (`Config.eval_id`), so one trained run can be evaluated in as many
ways as needed (`evaluate_run`) without training again.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from depthcore import store
from depthcore.config import Config, EvalConfig, ModelConfig
from depthcore.device import describe_device, resolve_device
from depthcore.errors import ConfigError, DataError
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


@dataclass
class Recorded:
    """What `evaluate_weights` did: the evaluation, its config, and where its records went."""

    evaluation: Evaluation
    cfg: Config
    folder: Path | None  # the records' folder; None: printed only (`note` says why)
    note: str = ""


def evaluate_weights(
    weights: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    scales: Sequence[int] | None = None,
    out: str | Path | None = None,
) -> Recorded:
    """Evaluate a run folder or a Monodepth2 model folder on the configured test split and
    record it (`record_evaluation`): into `out` when given, else, for a trained run folder, into
    its evals/<eval id>/ (under the run's lock), where sweeps and the report find it.

    `scales` replaces eval.scales. A Monodepth2 folder, or a run that has not finished
    training, gets records only with `out`. Records in a run folder need the run's own training
    config (only eval.* and speed keys may differ), else ConfigError.
    """
    from depthcore.weights import load_weights

    path = Path(weights)
    trained = store.read_trained(path) if store.has_checkpoint(path) else None
    into_run = out is None and trained is not None
    with store.RunLock(path) if into_run else contextlib.nullcontext():
        models, cfg = load_weights(path, config=config, overrides=overrides)
        cfg = _with_scales(cfg, scales)
        if into_run:
            _check_run_config(cfg, path, trained or {})
        device = resolve_device(cfg.train.device)
        started = time.perf_counter()
        evaluation, preds = evaluate_on_test_split(models, cfg, cfg.eval.scales, device)
        if out is None and not into_run:
            return Recorded(evaluation, cfg, None, _no_records(path))
        info = {k: (trained or {})[k] for k in TRAINING_KEYS if k in (trained or {})}
        info |= {"weights": str(path.resolve()), "device": describe_device(device)}
        info["eval_s"] = round(time.perf_counter() - started, 3)
        folder = Path(out) if out is not None else store.eval_path(path, cfg.eval_id())
        record_evaluation(folder, cfg, evaluation, preds, info)
    return Recorded(evaluation, cfg, folder)


def _with_scales(cfg: Config, scales: Sequence[int] | None) -> Config:
    if not scales:
        return cfg
    unknown = sorted(set(scales) - set(cfg.model.scales))
    if unknown:
        raise ConfigError(
            f"--scales {list(scales)}: the decoder outputs only scales {list(cfg.model.scales)}"
        )
    tree = cfg.to_dict()
    tree["eval"]["scales"] = sorted(set(scales))
    return Config.model_validate(tree)


def _check_run_config(cfg: Config, run_dir: Path, trained: Mapping[str, Any]) -> None:
    """The config must be the run's, but for eval.* keys: its run id is the one of the run's
    config.yaml (or, that unreadable, the one trained.json records)."""
    from depthcore.config import config_from_dict

    run_id = trained.get("run_id")
    with contextlib.suppress(ConfigError, TypeError):
        run_id = config_from_dict(store.read_run_config(run_dir) or {}).run_id()
    if run_id not in (cfg.run_id(), cfg.legacy_run_id()):
        raise ConfigError(
            f"{run_dir}: the config given changes training keys (it is run {cfg.run_id()}, the "
            f"folder holds run {run_id}); only eval.* keys may differ for an evaluation recorded "
            "in the run folder: drop the other --set keys, or write the records elsewhere "
            "with --out DIR"
        )


def _no_records(path: Path) -> str:
    if store.has_checkpoint(path):
        return (
            f"{path} has not finished training (no {store.TRAINED_FILE}): its evaluation is not "
            "recorded there; --out DIR records it elsewhere"
        )
    return "a Monodepth2 model folder: --out DIR records the evaluation (per_image.csv, ...)"


def evaluate_on_test_split(
    models: Models, cfg: Config, scales: Sequence[int], device: torch.device
) -> tuple[Evaluation, Predictions]:
    """`evaluate_model` over `cfg`'s test split and ground truth (checked first)."""
    from depthcore.data import build_test_loader, load_gt_depths, resolve_data

    paths = resolve_data(cfg, train=False)
    gts = load_gt_depths(paths.gt_path, paths.test_files)
    models.to(device)
    return evaluate_model(
        models,
        build_test_loader(cfg, paths),
        gts,
        model_cfg=cfg.model,
        eval_cfg=cfg.eval,
        scales=scales,
        device=device,
        keep=cfg.eval.save_predictions,
    )


# What an evaluation's final.json repeats from the training's record (trained.json).
TRAINING_KEYS = ("run_id", "epochs", "steps", "wall_time_s", "seed")


def evaluate_run(cfg: Config, run_dir: str | Path) -> dict[str, Any]:
    """Evaluate a trained run's networks (its checkpoint) as `cfg.eval` says, without training,
    and record it in runs/<run id>/evals/<eval id>/; returns its final.json.

    `cfg` is a config of this run (any eval keys); the caller holds the run's lock.
    """
    from depthcore.weights import load_run_networks

    run_dir = Path(run_dir)
    trained = store.read_trained(run_dir) or {}
    ckpt = run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    if not ckpt.is_file():
        raise DataError(
            f"{run_dir}: trained, but {ckpt} is gone: an evaluation needs the trained networks "
            "(keep checkpoint/ of runs you may evaluate again); train the run anew in another "
            "folder to evaluate it"
        )
    models = load_run_networks(ckpt, cfg)
    device = resolve_device(cfg.train.device)
    started = time.perf_counter()
    evaluation, preds = evaluate_on_test_split(models, cfg, cfg.eval.scales, device)
    info = {k: trained[k] for k in TRAINING_KEYS if k in trained}
    info |= {"device": describe_device(device), "eval_s": round(time.perf_counter() - started, 3)}
    return record_evaluation(store.eval_path(run_dir, cfg.eval_id()), cfg, evaluation, preds, info)


def record_evaluation(
    folder: str | Path,
    cfg: Config,
    evaluation: Evaluation,
    preds: Predictions,
    info: Mapping[str, Any],
) -> dict[str, Any]:
    """Write an evaluation's records into `folder`: eval.yaml, per_image.csv, predictions.npz
    (the first `eval.save_predictions` images) and final.json last, so that final.json present
    means the evaluation is complete. `info` (run id, training summary, device, ...) goes into
    final.json. Returns final.json's dict."""
    folder = Path(folder)
    (folder / store.ERROR_FILE).unlink(missing_ok=True)
    store.write_eval_config(folder, eval_settings(cfg))
    store.write_per_image(folder, evaluation.per_image)
    write_kept_predictions(folder, preds, cfg.eval.save_predictions)
    final = {
        **info,
        "eval_id": cfg.eval_id(),
        "metrics": evaluation.metrics_by_scale[min(evaluation.metrics_by_scale)],
        "metrics_by_scale": {str(s): m for s, m in evaluation.metrics_by_scale.items()},
        "n_images": evaluation.n_images,
        "finished_at": store.now(),
        **store.provenance(),
    }
    store.write_json_atomic(folder / store.FINAL_FILE, final)
    return final


def eval_settings(cfg: Config) -> dict[str, Any]:
    """eval.yaml: the evaluation's id, the identity it hashes and the resolved eval section."""
    eval_keys = cfg.to_dict()["eval"]
    return {"eval_id": cfg.eval_id(), "identity": cfg.eval_identity(), "eval": eval_keys}


def write_kept_predictions(folder: Path, preds: Predictions, keep: int) -> None:
    """predictions.npz of the kept images (none kept: an older file is removed, not left)."""
    if keep == 0 or not preds.rgb:
        (folder / store.PREDICTIONS_FILE).unlink(missing_ok=True)
        return
    n = len(preds.rgb)
    scales = sorted(preds.disp)
    store.write_predictions(
        folder,
        image_index=np.asarray(preds.index[:n]),
        rgb=np.stack(preds.rgb),
        scales=np.asarray(scales),
        disp=np.stack([np.stack([preds.disp[s][i] for s in scales]) for i in range(n)]),
    )
