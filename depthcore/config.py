"""The typed, frozen configuration tree of one training run.

One `Config` (sections data, model, loss, optim, train, eval) is validated at the boundary:
`load_config(path, overrides)` reads YAML, applies `dotted.key=value` overrides and raises a
`ConfigError` naming the dotted key, the bad value and what is allowed. Nothing downstream sees
a raw dict. Defaults are the paper's settings (batch 8, 1000-step warm-up, seed 1234, 640x192).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from depthcore.errors import ConfigError
from depthcore.plugin_source import FN_PATTERN, source_sha256
from depthcore.yamlio import dump_yaml, format_validation_error, parse_override, read_yaml

__all__ = [
    "Config",
    "CustomLoss",
    "DataConfig",
    "EvalConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "SyntheticConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "load_config",
]

PhotometricKind = Literal["standard", "ssim_m", "ssim_a", "l1", "custom"]
# YAML gives lists; strict mode would refuse them for a tuple field.
IntTuple = Annotated[
    tuple[int, ...], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)
]


class _Section(BaseModel):
    # strict: YAML "0.5" (a string) is not silently a float; ints are still accepted for floats.
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, validate_default=True, allow_inf_nan=False
    )


def _check_multiple_of_32(value: int) -> int:
    if value % 32:
        raise ValueError(f"must be a multiple of 32, got {value}")
    if value < 64:  # the encoder's 1/32 features must be 2+ pixels for the decoder's padding
        raise ValueError(f"must be at least 64, got {value}")
    return value


class SyntheticConfig(_Section):
    """The built-in synthetic KITTI-format drives (generated on first use into the cache)."""

    drives: int = Field(4, ge=2, description="number of drives; the last one is the test drive")
    frames: int = Field(100, ge=5, description="frames per drive")
    native_width: int = Field(1242, ge=32, description="rendered image width (KITTI: 1242)")
    native_height: int = Field(375, ge=32, description="rendered image height (KITTI: 375)")
    seed: int = Field(0, ge=0, description="scene and trajectory seed")


class DataConfig(_Section):
    """Where frames come from and how they are prepared."""

    dataset: Literal["synthetic", "kitti"] = "synthetic"
    root: str | None = Field(None, description="KITTI raw root; synthetic: output folder")
    split_dir: str | None = Field(None, description="folder with train_files.txt, val_files.txt")
    height: int = 192
    width: int = 640
    img_ext: Literal["auto", ".png", ".jpg"] = "auto"
    intrinsics: Literal["monodepth2", "calib"] = "monodepth2"
    frame_ids: IntTuple = (0, -1, 1)
    augment: bool = Field(True, description="colour jitter and horizontal flip, p = 0.5 each")
    num_workers: int | Literal["auto"] = "auto"
    cache: bool = Field(True, description="memory-mapped cache of decoded, resized frames")
    cache_dir: str | None = Field(
        None, description="default: $DEPTHSWEEP_CACHE or ~/.cache/depthsweep"
    )
    synthetic: SyntheticConfig = SyntheticConfig()

    _mult32_h = field_validator("height")(_check_multiple_of_32)
    _mult32_w = field_validator("width")(_check_multiple_of_32)

    @field_validator("frame_ids")
    @classmethod
    def _check_frame_ids(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) < 2 or value[0] != 0 or len(set(value)) != len(value):
            raise ValueError(
                f"must start with 0 and list distinct source frames, got {list(value)}"
            )
        return value

    @field_validator("num_workers")
    @classmethod
    def _check_workers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 0:
            raise ValueError(f"must be >= 0 or 'auto', got {value}")
        return value


class ModelConfig(_Section):
    """Monodepth2 networks; `upsample` and `scales` are the paper's decoder variants."""

    encoder: Literal["resnet18", "resnet50"] = "resnet18"
    pretrained: bool = Field(True, description="ImageNet weights (downloaded by torchvision)")
    scales: IntTuple = (0, 1, 2, 3)
    upsample: Literal["nearest", "subpixel", "bilinear"] = "nearest"
    min_depth: float = Field(0.1, gt=0)
    max_depth: float = Field(100.0, gt=0)

    @field_validator("scales")
    @classmethod
    def _check_scales(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or 0 not in value or any(s < 0 or s > 4 for s in value):
            raise ValueError(f"must include 0 and lie in 0..4, got {list(value)}")
        if len(set(value)) != len(value):
            raise ValueError(f"must not repeat a scale, got {list(value)}")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _check_depth_range(self) -> ModelConfig:
        if self.max_depth <= self.min_depth:
            raise ValueError(
                f"max_depth ({self.max_depth}) must be greater than min_depth ({self.min_depth})"
            )
        return self


class CustomLoss(_Section):
    """`loss.photometric: custom`: a photometric error of your own (docs/losses.md, plugins)."""

    fn: str = Field(description='"package.module:function" returning the per-pixel error')
    params: dict[str, Any] = Field(
        default_factory=dict, description="the function's own keyword arguments"
    )
    path: str | None = Field(
        None, description="folder put first on sys.path to import fn (not in the run id)"
    )
    # The module file's hash, computed once (the run id needs it) and pickled with the config,
    # so a Ray worker trains the source the driver hashed.
    _source: str | None = PrivateAttr(None)

    @field_validator("fn")
    @classmethod
    def _module_colon_function(cls, value: str) -> str:
        if not FN_PATTERN.match(value):
            raise ValueError(
                f'must be "package.module:function", e.g. "examples.gradient_ssim:gradient_ssim", '
                f"got {value!r}"
            )
        return value

    def __eq__(self, other: object) -> bool:
        # Fields only: whether the source hash was computed yet does not make two configs differ.
        return isinstance(other, CustomLoss) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # params is a dict

    def source_sha256(self) -> str:
        """The hash of the plugin module's file (ConfigError naming the plugin if not found)."""
        if self._source is None:
            self._source = source_sha256(self.fn, self.path)
        return self._source

    def identity(self) -> dict[str, Any]:
        """fn, params and the source hash: an edited plugin file never reuses a run."""
        return {"fn": self.fn, "params": self.params, "source_sha256": self.source_sha256()}


class LossConfig(_Section):
    """The photometric loss and its regularisers. Every swept weight is a field here."""

    photometric: PhotometricKind = "standard"
    ssim_weight: float = Field(0.85, ge=0, le=1, description="kappa (standard) or w (ssim_m)")
    alpha: float = Field(1.0, ge=0, description="ssim_m exponent of luminance L")
    beta: float = Field(1.0, ge=0, description="ssim_m exponent of contrast C")
    gamma: float = Field(1.0, ge=0, description="ssim_m exponent of structure (1+S)/2")
    w_mae: float = Field(0.4, ge=0, description="ssim_a weight of |I - I'|")
    w_l: float = Field(0.5, ge=0, description="ssim_a weight of 1 - L")
    w_c: float = Field(0.5, ge=0, description="ssim_a weight of 1 - C")
    w_s: float = Field(0.7, ge=0, description="ssim_a weight of 1 - (1+S)/2")
    ssim_window: int = Field(3, ge=3, description="odd pooling window of every SSIM variant")
    c1: float = Field(1e-4, gt=0)
    c2: float = Field(9e-4, gt=0)
    smoothness: float = Field(1e-3, ge=0, description="edge-aware smoothness weight (/2^scale)")
    automask: bool = Field(True, description="Monodepth2 auto-masking with identity reprojection")
    min_reprojection: bool = Field(True, description="per-pixel min over sources (else mean)")
    custom: CustomLoss | None = Field(
        None, description="photometric: custom: the plugin {fn, params, path} (docs/losses.md)"
    )

    @field_validator("ssim_window")
    @classmethod
    def _odd_window(cls, value: int) -> int:
        if value % 2 == 0:
            raise ValueError(f"must be odd, got {value}")
        return value

    @model_validator(mode="after")
    def _custom_named(self) -> LossConfig:
        if self.photometric == "custom" and self.custom is None:
            raise ValueError(
                'photometric: custom needs loss.custom: {fn: "package.module:function", '
                "params: {...}} (docs/losses.md)"
            )
        return self

    def relevant_keys(self) -> tuple[str, ...]:
        """The fields that affect the loss for this `photometric` kind (the run identity)."""
        common = ("photometric", "smoothness", "automask", "min_reprojection")
        ssim = ("ssim_window", "c1", "c2")
        by_kind = {
            "standard": ("ssim_weight", *ssim),
            "ssim_m": ("ssim_weight", "alpha", "beta", "gamma", *ssim),
            "ssim_a": ("w_mae", "w_l", "w_c", "w_s", *ssim),
            "l1": (),
            "custom": (*ssim, "custom"),
        }
        return common + by_kind[self.photometric]

    def identity(self) -> dict[str, Any]:
        """The relevant keys' values; a plugin counts by fn, params and its file's hash."""
        dump = self.model_dump(mode="json")
        d = {k: dump[k] for k in self.relevant_keys()}
        if self.custom is not None and "custom" in d:
            d["custom"] = self.custom.identity()
        return d


class OptimConfig(_Section):
    """Adam with linear warm-up, then a step decay at the end of epoch `lr_step_epochs`."""

    lr: float = Field(1e-4, gt=0)
    batch_size: int = Field(8, ge=1, description="paper 8, Monodepth2 12")
    warmup_steps: int = Field(1000, ge=0, description="linear warm-up (paper 1000, Monodepth2 0)")
    lr_step_epochs: int = Field(15, ge=1, description="LR x lr_gamma after this many epochs")
    lr_gamma: float = Field(0.1, gt=0, le=1)


def _compile_choice(value: Any) -> Any:
    # Older configs wrote `compile: true` for the networks.
    if isinstance(value, bool):
        return "networks" if value else "none"
    return value


class TrainConfig(_Section):
    """Schedule length, seed, device and speed switches."""

    epochs: int = Field(20, ge=1)
    steps_per_epoch: int | None = Field(None, ge=1, description="cap steps per epoch (quick runs)")
    seed: int = Field(1234, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(
        True,
        description="CUDA only: bf16 autocast + channels_last (output layers, losses, eval fp32)",
    )
    compile: Annotated[
        Literal["none", "loss", "networks", "all"],
        BeforeValidator(_compile_choice),
    ] = Field(
        "none",
        description="torch.compile the photometric loss, the networks, or both (true = networks)",
    )
    cuda_graph: bool = Field(
        True, description="CUDA + fast path: replay the whole step as one captured CUDA graph"
    )
    pose_stream: bool = Field(
        False,
        description="CUDA + fast path: run the pose network on a second CUDA stream, concurrently "
        "with the depth network (forward and backward; same result)",
    )
    deterministic: bool = Field(False, description="cudnn.deterministic (slower on CUDA)")
    host_memory: Literal["keep", "system"] = Field(
        "keep",
        description="CPU device: keep freed tensor memory mapped for the next step (glibc "
        "mallopt; saves re-faulting it every step) or leave the C allocator as it is",
    )
    loss_impl: Literal["fast", "reference"] = Field(
        "fast",
        description="fast: identity reprojection once per batch, stacked SSIM pooling, one "
        "pose-net pass; reference: Monodepth2's per-scale, per-source calls (same result)",
    )
    log_every: int = Field(50, ge=1, description="steps between train-loss lines in metrics.jsonl")


class EvalConfig(_Section):
    """The Eigen protocol: Garg crop, 1e-3..80 m, per-image median scaling."""

    split_dir: str | None = Field(
        None, description="folder with test_files.txt (and gt_depths.npz)"
    )
    gt_path: str | None = Field(None, description="gt_depths.npz; default: found beside the split")
    scales: IntTuple = Field((0,), description="decoder scales to evaluate (Table 4)")
    batch_size: int = Field(16, ge=1)
    min_depth: float = Field(1e-3, gt=0)
    max_depth: float = Field(80.0, gt=0)
    median_scaling: bool = True
    garg_crop: bool = True
    post_process: bool = Field(False, description="Monodepth2 flip post-processing")
    every_epoch: bool = Field(True, description="evaluate after every epoch (learning curves)")
    max_images: int | None = Field(None, ge=1, description="evaluate only the first N images")
    save_predictions: int = Field(4, ge=0, description="test disparities kept for figures")
    objective: Literal["test", "val"] = Field(
        "test",
        description="what the per-epoch evaluation (learning curves, a sweep's selection and "
        "early stopping) scores: the test split, or held-out validation frames of the training "
        "split (docs/faithfulness.md)",
    )
    val_images: int = Field(
        200, ge=1, description="objective val: validation frames scored after every epoch"
    )

    @field_validator("scales")
    @classmethod
    def _check_scales(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(s < 0 or s > 4 for s in value) or len(set(value)) != len(value):
            raise ValueError(f"must be distinct scales in 0..4, got {list(value)}")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _check_depth_range(self) -> EvalConfig:
        if self.max_depth <= self.min_depth:
            raise ValueError(
                f"max_depth ({self.max_depth}) must be greater than min_depth ({self.min_depth}): "
                "no ground truth would count"
            )
        return self


class Config(_Section):
    """A whole training run. Frozen: derive variants with `apply_overrides`."""

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()

    @model_validator(mode="after")
    def _check_eval_scales(self) -> Config:
        missing = sorted(set(self.eval.scales) - set(self.model.scales))
        if missing:
            raise ValueError(
                f"eval.scales {list(self.eval.scales)} includes {missing}, which the decoder does "
                f"not output; add them to model.scales (now {list(self.model.scales)})"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict (tuples become lists)."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def identity(self) -> dict[str, Any]:
        """What makes two runs the same experiment: the training, never the evaluation.

        Drops the `eval` section (an evaluation has its own id, `eval_id`), loss weights that the
        chosen `photometric` kind ignores (so the baseline shared by Tables 1-4 is one run), keys
        that only change speed or logging, and data locations (only a split folder's name counts,
        so the same study on another machine has the same ids); adds the training recipe's
        version (`RECIPE_VERSION`).
        """
        d = self._training_identity()
        d["recipe"] = RECIPE_VERSION
        if self.eval.objective == "val":
            d["validation"] = self.validation_identity()
        return d

    def validation_identity(self) -> dict[str, Any]:
        """What the per-epoch validation records of `eval.objective: val` depend on: the frame
        count, the Eigen protocol's keys and the validation recipe (`VALIDATION_RECIPE_VERSION`,
        which fixes how the frames are chosen and their ground truth made). Part of the run id
        (and only with objective val, so runs scored on the test split keep their ids): those
        records decide early stopping, so a stopped run is only ever continued under the same
        validation, and its curve is never a mix of two."""
        ev = self.eval
        return {
            "images": ev.val_images,
            "min_depth": ev.min_depth,
            "max_depth": ev.max_depth,
            "median_scaling": ev.median_scaling,
            "garg_crop": ev.garg_crop,
            "post_process": ev.post_process,
            "recipe": VALIDATION_RECIPE_VERSION,
        }

    def run_id(self) -> str:
        """Content hash of `identity()`: the run folder's name in the results store."""
        return _hash(self.identity())

    def eval_identity(self) -> dict[str, Any]:
        """What makes two evaluations of one trained run the same: the `eval` keys that change
        its metrics (the test split and ground truth by name, scales, depth cap, median scaling,
        crop, post-processing, image count) and the evaluation recipe (`EVAL_RECIPE_VERSION`).
        Independent of the run: a sweep asks every run for the same evaluation id."""
        d = self.to_dict()["eval"]
        for key in _EVAL_NON_IDENTITY_KEYS:
            d.pop(key)
        for key in ("split_dir", "gt_path"):
            d[key] = self._location(d, "eval", key)
        d["recipe"] = EVAL_RECIPE_VERSION
        return d

    def eval_id(self) -> str:
        """Content hash of `eval_identity()`: the evaluation's folder, runs/<run id>/evals/<id>."""
        return _hash(self.eval_identity())

    def legacy_run_id(self) -> str:
        """The id this config's run had before evaluations got their own ids (recipe 3, with
        the eval keys in the run id): how folders written by that version are recognised."""
        d = self._training_identity()
        ev = self.to_dict()["eval"]
        for key in ("batch_size", "every_epoch", "save_predictions", *_VALIDATION_KEYS):
            ev.pop(key)
        for key in ("split_dir", "gt_path"):
            ev[key] = self._location(ev, "eval", key)
        return _hash({**d, "eval": ev, "recipe": _LEGACY_RECIPE_VERSION})

    def _training_identity(self) -> dict[str, Any]:
        d = self.to_dict()
        d.pop("eval")
        d["loss"] = self.loss.identity()
        for section, key in _NON_IDENTITY_KEYS:
            d[section].pop(key, None)
        d["data"]["split_dir"] = self._location(d["data"], "data", "split_dir")
        if self.data.dataset == "kitti":
            d["data"].pop("synthetic")
        return d

    def _location(self, section: dict[str, Any], name: str, key: str) -> str | None:
        """A data location as identities count it: a folder's or file's name; for KITTI, what
        None means (the bundled Monodepth2 split), so explicit and implicit agree."""
        if section[key] is not None:
            return Path(section[key]).name
        if self.data.dataset == "kitti":
            return _KITTI_DEFAULT_SPLITS.get((name, key))
        return None


def _hash(identity: dict[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# The training recipe's version, part of every run id. Raise it whenever a change alters what a
# run trains for the same config (not only how fast), so that results of an older recipe are
# never taken for the current one. 2: Pillow-exact colour jitter and smoothness pyramid.
# 3: the evaluation resizes disparities with OpenCV's bilinear arithmetic (metrics move ~1e-6;
# evaluations were part of the run then).
RECIPE_VERSION = 3
# The evaluation recipe's version, part of every evaluation id: raise it whenever a change alters
# what an evaluation computes for the same trained networks and eval keys (1: the evaluation of
# recipe 3, now with its own id).
EVAL_RECIPE_VERSION = 1
# The validation recipe's version, part of the run id of every run with eval.objective: val:
# raise it whenever a change alters which frames are validated or their ground truth
# (depthcore/data/validation.py), so stopped runs are never continued under another validation.
VALIDATION_RECIPE_VERSION = 1
# The recipe of the results whose run ids still hashed the eval keys (Config.legacy_run_id).
_LEGACY_RECIPE_VERSION = 3

# Keys that only change speed or logging: no part of the run id.
_NON_IDENTITY_KEYS = (
    ("data", "root"),
    ("data", "num_workers"),
    ("data", "cache"),
    ("data", "cache_dir"),
    ("train", "device"),
    ("train", "compile"),
    ("train", "cuda_graph"),
    ("train", "pose_stream"),
    ("train", "loss_impl"),
    ("train", "host_memory"),
    ("train", "log_every"),
)
# The per-epoch objective's keys: part of the run id with objective val (validation_identity),
# never of an evaluation's, which scores the test split whatever they say.
_VALIDATION_KEYS = ("objective", "val_images")
# eval keys that change no metric of an evaluation (every_epoch: the learning curves, a record
# of training): no part of the evaluation id.
_EVAL_NON_IDENTITY_KEYS = ("batch_size", "every_epoch", "save_predictions", *_VALIDATION_KEYS)

# What `None` means for KITTI (the bundled Monodepth2 splits), so explicit and implicit agree.
_KITTI_DEFAULT_SPLITS = {("data", "split_dir"): "eigen_zhou", ("eval", "split_dir"): "eigen"}

_PATH_KEYS = (
    ("data", "root"),
    ("data", "split_dir"),
    ("data", "cache_dir"),
    ("eval", "split_dir"),
    ("eval", "gt_path"),
    ("loss", "custom", "path"),
)


# ----------------------------------------------------------------------------------------------
# Overrides, loading and validation


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set `tree[a][b][c] = value` for key 'a.b.c', creating sections as needed."""
    parts = key.split(".")
    node = tree
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            prefix = ".".join(parts[: i + 1])
            raise ConfigError(f"{key}: {prefix} is a value, not a section; cannot set {key}")
        node = child
    node[parts[-1]] = value


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; `update` wins. Neither input is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _absolutize_paths(tree: dict[str, Any], base_dir: Path) -> None:
    for *sections, key in _PATH_KEYS:
        node: Any = tree
        for section in sections:
            node = node.get(section) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(key), str):
            path = Path(node[key]).expanduser()
            node[key] = str(path if path.is_absolute() else (base_dir / path).resolve())


def config_from_dict(
    tree: Mapping[str, Any], *, source: str = "", base_dir: Path | None = None
) -> Config:
    """Validate a nested dict into a `Config`; relative paths resolve against `base_dir` (cwd)."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{source or 'config'}: expected a mapping of sections, got {tree!r}")
    data = copy.deepcopy(dict(tree))
    _absolutize_paths(data, base_dir or Path.cwd())
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, Config, source=source)) from None


def apply_overrides(tree: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of `tree` with each `dotted.key=value` applied in order."""
    out = copy.deepcopy(dict(tree))
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(out, key, value)
    return out


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Load a config file (or the defaults when `path` is None) and apply `--set` overrides.

    Relative data paths resolve against the current directory (run from the repository root),
    and are stored absolute in the resolved config.
    """
    tree: dict[str, Any] = read_yaml(path) if path is not None else {}
    tree = apply_overrides(tree, overrides)
    source = str(path) if path is not None else ""
    return config_from_dict(tree, source=source, base_dir=Path.cwd())
