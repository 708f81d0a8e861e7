"""Load trained networks from a run folder (ours) or a Monodepth2 model folder (theirs)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from depthcore import store
from depthcore.config import Config, apply_overrides, config_from_dict, deep_merge
from depthcore.errors import DataError
from depthcore.networks import Models, build_models, load_monodepth2
from depthcore.yamlio import read_yaml


def _base_tree(config: str | Path | None, weights: Path, run_folder: bool) -> dict:
    if config is not None:
        return read_yaml(config)
    saved = store.read_run_config(weights)
    if saved is None and run_folder:
        raise DataError(
            f"{weights / store.CONFIG_FILE}: missing or unreadable, so the networks' settings "
            "are unknown; pass the run's config with --config"
        )
    return saved if saved is not None else {}


def load_run_networks(ckpt: Path, cfg: Config) -> Models:
    """The networks of a run's checkpoint, built as `cfg.model` says (on the CPU)."""
    models = build_models(cfg.model.model_copy(update={"pretrained": False}))
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        models.load_state_dict(state["models"])
    except Exception as exc:  # truncated file, not a checkpoint, other networks
        detail = str(exc).splitlines()[0][:200]
        raise DataError(
            f"{ckpt}: cannot load the networks ({type(exc).__name__}: {detail}); the file is "
            "damaged or was trained with other model.* settings than the config's"
        ) from None
    return models


def load_weights(
    weights: str | Path,
    *,
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: torch.device | str = "cpu",
) -> tuple[Models, Config]:
    """Networks and their config from `weights`: a run folder (config.yaml + checkpoint/state.pt)
    or a Monodepth2 folder (encoder.pth, depth.pth, ...; its height/width set data.height/width).

    `config` replaces the run folder's config.yaml; `overrides` apply last.
    """
    path = Path(weights)
    ckpt = path / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    tree = apply_overrides(_base_tree(config, path, ckpt.is_file()), overrides)
    if ckpt.is_file():
        cfg = config_from_dict(tree, source=str(path / store.CONFIG_FILE))
        models = load_run_networks(ckpt, cfg)
    elif (path / "encoder.pth").is_file():
        cfg = config_from_dict(tree)
        models, height, width = load_monodepth2(path, cfg.model)
        cfg = config_from_dict(
            deep_merge(cfg.to_dict(), {"data": {"height": height, "width": width}})
        )
    else:
        raise DataError(
            f"{path}: not a model folder; expected a run folder ({store.CHECKPOINT_DIR}/"
            f"{store.CHECKPOINT_FILE} + {store.CONFIG_FILE}) or a Monodepth2 folder (encoder.pth, "
            "depth.pth)"
        )
    return models.to(device).eval(), cfg
