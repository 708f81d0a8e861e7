"""Monodepth2's networks (ResNet encoder, depth and pose decoders) and its model-folder format.

With `upsample="nearest"` and scales 0..3 the modules' `state_dict()` layouts are exactly those
of Monodepth2's `encoder.pth`, `depth.pth`, `pose_encoder.pth` and `pose.pth`, so released model
folders load unchanged. The paper's sub-pixel decoder adds a `subpixel.*` ModuleList beside the
unchanged `decoder.*` keys.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import Tensor, nn
from torchvision import models as tv_models

from depthcore.config import ModelConfig
from depthcore.errors import ConfigError, DataError
from depthcore.geometry import transformation_from_parameters
from depthcore.store import atomic_path
from depthcore.tensors import upcast

__all__ = [
    "DepthDecoder",
    "Models",
    "PoseDecoder",
    "ResnetEncoder",
    "batchnorm_groups",
    "build_models",
    "load_monodepth2",
    "predict_depth",
    "predict_poses",
    "save_monodepth2",
]

log = logging.getLogger(__name__)

UpsampleMode = Literal["nearest", "subpixel", "bilinear"]
NUM_CH_DEC = (16, 32, 64, 128, 256)
_RESNETS = {
    18: (tv_models.resnet18, tv_models.ResNet18_Weights.IMAGENET1K_V1),
    50: (tv_models.resnet50, tv_models.ResNet50_Weights.IMAGENET1K_V1),
}
_ENCODER_META = ("height", "width", "use_stereo")


# ----------------------------------------------------------------------------------------------
# Encoder


class _SplitBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training, can normalise `groups` batch chunks one after another.

    Lets several pose pairs share one batched convolution pass while keeping Monodepth2's
    per-pair batch statistics and running-stat updates exactly. Same keys as BatchNorm2d.
    """

    groups: int = 1

    def forward(self, x: Tensor) -> Tensor:
        if self.groups == 1 or not self.training:
            return super().forward(x)
        outs = [nn.BatchNorm2d.forward(self, chunk) for chunk in x.chunk(self.groups)]
        return torch.cat(outs, dim=0)


@contextlib.contextmanager
def batchnorm_groups(module: nn.Module, groups: int) -> Iterator[None]:
    """Within the block, training BatchNorm in `module` normalises `groups` batch chunks apart.

    Set outside the forward pass, so a compiled encoder sees a constant attribute.
    """
    bns = [m for m in module.modules() if isinstance(m, _SplitBatchNorm2d)]
    for bn in bns:
        bn.groups = groups
    try:
        yield
    finally:
        for bn in bns:
            bn.groups = 1


def _download_state_dict(weights: tv_models.WeightsEnum) -> dict[str, Tensor]:
    """ImageNet weights via torchvision (torch hub cache, downloaded when absent)."""
    return weights.get_state_dict(progress=False, check_hash=True)


def _imagenet_state_dict(num_layers: int) -> dict[str, Tensor]:
    weights = _RESNETS[num_layers][1]
    try:
        return _download_state_dict(weights)
    except Exception as exc:  # URLError, OSError, hash mismatch, corrupt file ...
        target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        raise ConfigError(
            f"model.pretrained: true needs the ImageNet ResNet-{num_layers} weights from "
            f"download.pytorch.org ({weights.url}), which could not be loaded: {exc}. "
            f"Download that file to {target} (the torch hub cache's checkpoints folder; "
            f"TORCH_HOME moves it), or set model.pretrained=false to train from scratch."
        ) from exc


class ResnetEncoder(nn.Module):
    """torchvision ResNet-18/50 returning 5 feature maps; input in [0, 1], normalised inside.

    Args:
        num_layers: 18 or 50.
        pretrained: load ImageNet weights (conv1 repeated over input images and divided by n).
        num_input_images: images stacked on channels (2 for the pose encoder).
    """

    def __init__(self, num_layers: int, pretrained: bool, num_input_images: int = 1) -> None:
        super().__init__()
        if num_layers not in _RESNETS:
            raise ConfigError(f"ResNet depth must be 18 or 50, got {num_layers}")
        self.encoder = _RESNETS[num_layers][0](weights=None, norm_layer=_SplitBatchNorm2d)
        if num_input_images > 1:
            conv1 = nn.Conv2d(3 * num_input_images, 64, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(conv1.weight, mode="fan_out", nonlinearity="relu")
            self.encoder.conv1 = conv1
        if pretrained:
            state = _imagenet_state_dict(num_layers)
            w = state["conv1.weight"]
            state["conv1.weight"] = torch.cat([w] * num_input_images, 1) / num_input_images
            self.encoder.load_state_dict(state)
        scale = 4 if num_layers > 34 else 1
        self.num_ch_enc: tuple[int, ...] = (64, 64 * scale, 128 * scale, 256 * scale, 512 * scale)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Features at H/2 … H/32.

        Args:
            x: (B, 3·n, H, W) in [0, 1].
        Returns:
            [f0 (64, H/2), f1 (H/4), f2 (H/8), f3 (H/16), f4 (H/32)].
        """
        enc = self.encoder
        f0 = enc.relu(enc.bn1(enc.conv1((x - 0.45) / 0.225)))
        f1 = enc.layer1(enc.maxpool(f0))
        f2 = enc.layer2(f1)
        f3 = enc.layer3(f2)
        f4 = enc.layer4(f3)
        return [f0, f1, f2, f3, f4]


# ----------------------------------------------------------------------------------------------
# Depth decoder


class Conv3x3(nn.Module):
    """Reflection-padded 3×3 convolution (keys `conv.weight`, `conv.bias`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 followed by ELU (keys `conv.conv.weight`, `conv.conv.bias`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv3x3(in_channels, out_channels)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.nonlin(self.conv(x))


class SubPixelUp(nn.Module):
    """×2 sub-pixel upsampling: 1×1 conv (C → 4C) + PixelShuffle(2).

    ICNR-initialised with an identity sub-kernel repeated per phase (`repeat_interleave`) and a
    zero bias, so at initialisation it equals nearest-neighbour upsampling exactly.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 4 * channels, 1)
        self.shuffle = nn.PixelShuffle(2)
        with torch.no_grad():
            sub = nn.init.dirac_(torch.empty(channels, channels, 1, 1))
            self.conv.weight.copy_(sub.repeat_interleave(4, dim=0))
            assert self.conv.bias is not None  # nn.Conv2d has a bias unless bias=False
            self.conv.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.conv(x))


def _check_scales(scales: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted(set(scales)))
    if not out or any(s < 0 or s > 4 for s in out) or len(out) != len(scales):
        raise ConfigError(f"model.scales must be distinct scales in 0..4, got {list(scales)}")
    return out


class DepthDecoder(nn.Module):
    """Monodepth2's depth decoder with sigmoid disparity heads at `scales` (4 = H/16).

    Args:
        num_ch_enc: encoder channels, e.g. (64, 64, 128, 256, 512).
        scales: output scales in 0..4. upsample: nearest (Monodepth2), subpixel (the paper's
            ICNR sub-pixel conv) or bilinear (align_corners=False).
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        scales: Sequence[int] = (0, 1, 2, 3),
        upsample: UpsampleMode = "nearest",
    ) -> None:
        super().__init__()
        if upsample not in ("nearest", "subpixel", "bilinear"):
            raise ConfigError(f"model.upsample must be nearest|subpixel|bilinear, got {upsample!r}")
        self.scales = _check_scales(scales)
        self.upsample = upsample
        layers: list[nn.Module] = []
        for i in range(4, -1, -1):  # insertion order = Monodepth2's decoder.K numbering
            in_first = num_ch_enc[-1] if i == 4 else NUM_CH_DEC[i + 1]
            layers.append(ConvBlock(in_first, NUM_CH_DEC[i]))
            skip = num_ch_enc[i - 1] if i > 0 else 0
            layers.append(ConvBlock(NUM_CH_DEC[i] + skip, NUM_CH_DEC[i]))
        layers += [Conv3x3(NUM_CH_DEC[s], 1) for s in self.scales]
        self.decoder = nn.ModuleList(layers)
        if upsample == "subpixel":
            self.subpixel = nn.ModuleList(SubPixelUp(NUM_CH_DEC[i]) for i in range(4, -1, -1))

    def _up(self, x: Tensor, stage: int) -> Tensor:
        if self.upsample == "subpixel":
            return self.subpixel[stage](x)
        if self.upsample == "bilinear":
            return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        return F.interpolate(x, scale_factor=2, mode="nearest")

    def forward(self, features: Sequence[Tensor]) -> dict[int, Tensor]:
        """Disparities per scale.

        Args:
            features: the encoder's 5 feature maps.
        Returns:
            scale s -> (B, 1, H/2^s, W/2^s) sigmoid disparity.
        """
        x, out = features[-1], {}
        for stage, i in enumerate(range(4, -1, -1)):
            x = self._up(self.decoder[2 * stage](x), stage)
            if i > 0:
                x = torch.cat([x, features[i - 1]], dim=1)
            x = self.decoder[2 * stage + 1](x)
            if i in self.scales:
                head = self.decoder[10 + self.scales.index(i)]
                out[i] = torch.sigmoid(float32_layer(head, x))
        return out


def float32_layer(layer: nn.Module, x: Tensor) -> Tensor:
    """`layer(x)` in float32, also under bf16 autocast: an output layer computed in bf16 (8
    significant bits) would round every disparity and pose parameter by up to 0.4 %."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(upcast(x))


# ----------------------------------------------------------------------------------------------
# Pose decoder and the model container


class PoseDecoder(nn.Module):
    """Monodepth2's pose decoder: squeeze 1×1 + ReLU, 3×3 + ReLU ×2, 1×1 → 6·F, mean, ×0.01.

    Args:
        num_ch_enc: encoder channels (the last one is squeezed to 256).
        num_input_features: feature sets concatenated after the squeeze.
        num_frames_to_predict_for: F transforms predicted per input.
    """

    def __init__(
        self,
        num_ch_enc: Sequence[int],
        num_input_features: int = 1,
        num_frames_to_predict_for: int = 2,
    ) -> None:
        super().__init__()
        self.num_frames = num_frames_to_predict_for
        self.net = nn.ModuleList(
            [
                nn.Conv2d(num_ch_enc[-1], 256, 1),
                nn.Conv2d(num_input_features * 256, 256, 3, stride=1, padding=1),
                nn.Conv2d(256, 256, 3, stride=1, padding=1),
                nn.Conv2d(256, 6 * num_frames_to_predict_for, 1),
            ]
        )

    def forward(self, input_features: Sequence[Sequence[Tensor]]) -> tuple[Tensor, Tensor]:
        """(axisangle, translation), each (B, F, 1, 3).

        Args:
            input_features: per input, the encoder's feature list (only the last map is used).
        """
        squeezed = [F.relu(self.net[0](feats[-1])) for feats in input_features]
        out = torch.cat(squeezed, dim=1)
        out = F.relu(self.net[1](out))
        out = F.relu(self.net[2](out))
        out = float32_layer(self.net[3], out)
        out = 0.01 * out.mean(dim=(2, 3)).reshape(-1, self.num_frames, 1, 6)
        return out[..., :3], out[..., 3:]


class Models(nn.Module):
    """The four Monodepth2 networks: `encoder`, `depth`, `pose_encoder`, `pose`."""

    def __init__(
        self,
        encoder: ResnetEncoder,
        depth: DepthDecoder,
        pose_encoder: ResnetEncoder,
        pose: PoseDecoder,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.depth = depth
        self.pose_encoder = pose_encoder
        self.pose = pose


def _num_layers(encoder: str) -> int:
    try:
        return {"resnet18": 18, "resnet50": 50}[encoder]
    except KeyError:
        raise ConfigError(f"model.encoder must be resnet18|resnet50, got {encoder!r}") from None


def build_models(model_cfg: ModelConfig) -> Models:
    """Depth encoder + decoder and a separate two-frame ResNet pose encoder + pose decoder."""
    layers = _num_layers(model_cfg.encoder)
    encoder = ResnetEncoder(layers, model_cfg.pretrained)
    depth = DepthDecoder(encoder.num_ch_enc, model_cfg.scales, model_cfg.upsample)
    return Models(encoder, depth, *_pose_nets(layers, model_cfg.pretrained))


def _pose_nets(layers: int, pretrained: bool) -> tuple[ResnetEncoder, PoseDecoder]:
    pose_encoder = ResnetEncoder(layers, pretrained, num_input_images=2)
    return pose_encoder, PoseDecoder(pose_encoder.num_ch_enc, 1, 2)


def predict_depth(models: Models, images: Tensor) -> dict[int, Tensor]:
    """Disparity per scale for (B, 3, H, W) images in [0, 1]."""
    return models.depth(models.encoder(images))


def predict_poses(
    models: Models, images_aug: Tensor, frame_ids: Sequence[int], *, batched: bool = True
) -> dict[int, Tensor]:
    """Target→source transforms from temporally ordered pairs, all pairs in one forward pass.

    BatchNorm statistics stay per pair (as Monodepth2's separate calls), so batching changes
    nothing but speed.

    Args:
        images_aug: (B, F, 3, H, W) augmented frames in `frame_ids` order (target first).
        frame_ids: e.g. (0, -1, 1).
        batched: False runs one pose-network pass per pair, as Monodepth2 (the benchmark's
            reference path); same result.
    Returns:
        source frame id -> (B, 4, 4) float32 transform.
    """
    b = images_aug.shape[0]
    target, sources = images_aug[:, 0], frame_ids[1:]
    pairs = []
    for k, f in enumerate(sources, start=1):
        src = images_aug[:, k]
        pairs.append(torch.cat([src, target] if f < 0 else [target, src], dim=1))
    if batched:
        with batchnorm_groups(models.pose_encoder, len(pairs)):
            feats = models.pose_encoder(torch.cat(pairs, dim=0))
        axisangle, translation = models.pose([feats])
    else:
        outs = [models.pose([models.pose_encoder(pair)]) for pair in pairs]
        axisangle = torch.cat([o[0] for o in outs])
        translation = torch.cat([o[1] for o in outs])
    out = {}
    for k, f in enumerate(sources):
        rows = slice(k * b, (k + 1) * b)
        out[f] = transformation_from_parameters(
            axisangle[rows, 0], translation[rows, 0], invert=f < 0
        )
    return out


# ----------------------------------------------------------------------------------------------
# Monodepth2 model folders


def _portable(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v.detach().cpu().contiguous() if isinstance(v, Tensor) else v for k, v in state.items()
    }


def save_monodepth2(models: Models, folder: str | Path, height: int, width: int) -> None:
    """Write encoder.pth (+ height, width, use_stereo), depth.pth, pose_encoder.pth, pose.pth.

    Non-nearest decoders also store `upsample` in depth.pth (Monodepth2 ignores extra keys).
    """
    folder = Path(folder)
    encoder = _portable(models.encoder.state_dict())
    encoder.update(height=int(height), width=int(width), use_stereo=False)
    depth = _portable(models.depth.state_dict())
    if models.depth.upsample != "nearest":
        depth["upsample"] = models.depth.upsample
    files = {
        "encoder": encoder,
        "depth": depth,
        "pose_encoder": _portable(models.pose_encoder.state_dict()),
        "pose": _portable(models.pose.state_dict()),
    }
    for name, state in files.items():
        with atomic_path(folder / f"{name}.pth") as tmp:
            torch.save(state, tmp)


def _read_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(f"{path}: missing; a Monodepth2 model folder needs this file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch state_dict ({exc})") from exc
    if not isinstance(state, dict):
        raise DataError(f"{path}: expected a state_dict (dict), got {type(state).__name__}")
    return state


def _infer_model_cfg(
    encoder: Mapping[str, Any], depth: Mapping[str, Any], path: Path
) -> ModelConfig:
    """Architecture from the weight shapes: bottleneck blocks => ResNet-50; heads => scales."""
    name: Literal["resnet18", "resnet50"] = (
        "resnet50" if "encoder.layer1.0.conv3.weight" in encoder else "resnet18"
    )
    # Heads are the only `decoder.K.conv.weight` keys (ConvBlocks nest one level deeper).
    head_channels = [
        int(v.shape[1])
        for k, v in depth.items()
        if k.startswith("decoder.") and k.endswith(".conv.weight") and k.count(".") == 3
    ]
    scale_of = {c: s for s, c in enumerate(NUM_CH_DEC)}
    scales = [scale_of.get(c, -1) for c in head_channels]
    upsample = depth.get("upsample", "nearest")
    try:
        return ModelConfig(encoder=name, pretrained=False, scales=tuple(scales), upsample=upsample)
    except ValidationError as exc:
        raise DataError(
            f"{path}: cannot infer the decoder (heads at scales {sorted(scales)}, "
            f"upsample {upsample!r}): {exc.errors()[0]['msg']}"
        ) from exc


def _load_into(module: nn.Module, state: Mapping[str, Any], path: Path, what: str) -> None:
    """Load `state` into `module` (built on the meta device: `assign` skips a wasted init)."""
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    try:
        result = module.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as exc:
        raise DataError(f"{path}: weights do not fit the {what}: {exc}") from exc
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise DataError(
            f"{path}: keys do not match the {what} (e.g. a ResNet-50 folder loaded as "
            f"resnet18?): missing {missing[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    for key in result.missing_keys:  # older files lack BatchNorm's counter: start it at 0
        owner, name = key.rsplit(".", 1)
        module.get_submodule(owner).register_buffer(name, torch.zeros((), dtype=torch.long))


def _describe(cfg: ModelConfig) -> str:
    return f"{cfg.encoder} model (scales {list(cfg.scales)}, upsample {cfg.upsample})"


def _resolution(encoder: Mapping[str, Any], path: Path) -> tuple[int, int]:
    if "height" not in encoder or "width" not in encoder:
        raise DataError(f"{path}: lacks the 'height'/'width' entries Monodepth2 saves")
    return int(encoder["height"]), int(encoder["width"])


def _load_pose(models: Models, folder: Path, cfg: ModelConfig, what: str) -> None:
    paths = [folder / "pose_encoder.pth", folder / "pose.pth"]
    if not any(p.is_file() for p in paths):
        log.info("%s has no pose networks; they are freshly initialised", folder)
        models.pose_encoder, models.pose = _pose_nets(_num_layers(cfg.encoder), False)
        return
    _load_into(models.pose_encoder, _read_state(paths[0]), paths[0], f"pose encoder of {what}")
    _load_into(models.pose, _read_state(paths[1]), paths[1], f"pose decoder of {what}")


def load_monodepth2(
    folder: str | Path, model_cfg: ModelConfig | None = None
) -> tuple[Models, int, int]:
    """Load a Monodepth2 model folder (released or saved by `save_monodepth2`).

    Args:
        folder: holds encoder.pth and depth.pth (pose_encoder.pth + pose.pth optional, both
            or neither). model_cfg: the expected architecture; None infers it from the weights.
    Returns:
        (models on CPU, training height, training width).
    """
    folder = Path(folder)
    enc_path, depth_path = folder / "encoder.pth", folder / "depth.pth"
    encoder, depth = _read_state(enc_path), _read_state(depth_path)
    height, width = _resolution(encoder, enc_path)
    cfg = _infer_model_cfg(encoder, depth, depth_path) if model_cfg is None else model_cfg
    saved_mode = depth.get("upsample")
    if saved_mode is not None and saved_mode != cfg.upsample:
        raise DataError(f"{depth_path}: saved with upsample={saved_mode}, not {cfg.upsample}")
    cfg = cfg.model_copy(update={"pretrained": False})
    with torch.device("meta"):  # shapes only; every tensor is assigned from the files
        models = build_models(cfg)
    what = _describe(cfg)
    _load_into(models.encoder, encoder, enc_path, f"depth encoder of the {what}")
    _load_into(models.depth, depth, depth_path, f"depth decoder of the {what}")
    _load_pose(models, folder, cfg, f"the {what}")
    return models, height, width
