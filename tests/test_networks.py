"""Monodepth2 networks: output shapes, weight-file layouts (recipe §10), folder round trips,
the sub-pixel decoder's initial equivalence, batched pose prediction, pretrained-weight errors."""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torchvision import models as tv_models

import depthcore.networks as networks
from depthcore.config import ModelConfig
from depthcore.errors import ConfigError, DataError
from depthcore.geometry import transformation_from_parameters
from depthcore.networks import (
    DepthDecoder,
    Models,
    ResnetEncoder,
    build_models,
    load_monodepth2,
    predict_depth,
    predict_poses,
    save_monodepth2,
)

ENC18 = (64, 64, 128, 256, 512)
H, W = 64, 96

# Recipe §10: depth.pth keys decoder.K (K = 0..9 ConvBlocks, 10..13 heads) with these shapes.
DEPTH_PTH = {
    0: (256, 512), 1: (256, 512), 2: (128, 256), 3: (128, 256), 4: (64, 128),
    5: (64, 128), 6: (32, 64), 7: (32, 96), 8: (16, 32), 9: (16, 16),
}  # fmt: skip
HEADS = {10: 16, 11: 32, 12: 64, 13: 128}
POSE_PTH = {0: (256, 512, 1, 1), 1: (256, 256, 3, 3), 2: (256, 256, 3, 3), 3: (12, 256, 1, 1)}


def _features(b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, H >> (i + 1), W >> (i + 1), generator=g) for i, c in enumerate(ENC18)]


@pytest.fixture(scope="module")
def models() -> Models:
    torch.manual_seed(0)
    return build_models(ModelConfig(pretrained=False)).eval()


@pytest.mark.parametrize("upsample", ["nearest", "subpixel", "bilinear"])
@pytest.mark.parametrize("scales", [(0, 1, 2, 3), (0, 1, 2, 3, 4)])
def test_decoder_output_shapes(upsample: str, scales: tuple[int, ...]) -> None:
    out = DepthDecoder(ENC18, scales, upsample)(_features())
    assert sorted(out) == list(scales)
    for s, disp in out.items():
        assert disp.shape == (2, 1, H >> s, W >> s)
        assert disp.min() >= 0 and disp.max() <= 1


def test_depth_decoder_state_dict_is_monodepth2_layout() -> None:
    expected = {}
    for k, (cout, cin) in DEPTH_PTH.items():
        expected[f"decoder.{k}.conv.conv.weight"] = (cout, cin, 3, 3)
        expected[f"decoder.{k}.conv.conv.bias"] = (cout,)
    for k, cin in HEADS.items():
        expected[f"decoder.{k}.conv.weight"] = (1, cin, 3, 3)
        expected[f"decoder.{k}.conv.bias"] = (1,)
    state = DepthDecoder(ENC18).state_dict()
    assert {k: tuple(v.shape) for k, v in state.items()} == expected
    assert sum(p.numel() for p in DepthDecoder(ENC18).parameters()) == 3_152_724


def test_pose_and_encoder_state_dicts_are_monodepth2_layout(models: Models) -> None:
    pose = {k: tuple(v.shape) for k, v in models.pose.state_dict().items()}
    expected = {f"net.{i}.weight": s for i, s in POSE_PTH.items()}
    expected.update({f"net.{i}.bias": (s[0],) for i, s in POSE_PTH.items()})
    assert pose == expected
    enc, pose_enc = models.encoder.state_dict(), models.pose_encoder.state_dict()
    assert len(enc) == 122 and enc.keys() == pose_enc.keys()
    assert all(k.startswith("encoder.") for k in enc)
    assert enc["encoder.conv1.weight"].shape == (64, 3, 7, 7)
    assert pose_enc["encoder.conv1.weight"].shape == (64, 6, 7, 7)
    assert enc["encoder.fc.weight"].shape == (1000, 512)
    assert "encoder.layer1.0.conv1.weight" in enc


def test_subpixel_decoder_equals_nearest_at_init() -> None:
    torch.manual_seed(1)
    nearest = DepthDecoder(ENC18, (0, 1, 2, 3, 4), "nearest")
    subpixel = DepthDecoder(ENC18, (0, 1, 2, 3, 4), "subpixel")
    result = subpixel.load_state_dict(nearest.state_dict(), strict=False)
    assert all(k.startswith("subpixel.") for k in result.missing_keys)
    assert not result.unexpected_keys
    feats = _features(seed=1)
    a, b = nearest(feats), subpixel(feats)
    for s in a:
        torch.testing.assert_close(a[s], b[s], atol=1e-6, rtol=0)
    assert not torch.allclose(DepthDecoder(ENC18, upsample="bilinear")(feats)[0], a[0])


def test_encoder_normalises_input_inside() -> None:
    torch.manual_seed(2)
    enc = ResnetEncoder(18, pretrained=False).eval()
    x = torch.rand(1, 3, H, W)
    net = enc.encoder
    f0 = torch.relu(net.bn1(net.conv1((x - 0.45) / 0.225)))
    feats = enc(x)
    torch.testing.assert_close(feats[0], f0)
    assert [f.shape[1] for f in feats] == list(enc.num_ch_enc) == list(ENC18)
    assert [f.shape[-1] for f in feats] == [W >> i for i in range(1, 6)]


def test_pretrained_multi_image_conv1_is_repeated_and_divided(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = tv_models.resnet18().state_dict()
    monkeypatch.setattr(networks, "_download_state_dict", lambda weights: dict(fake))
    enc = ResnetEncoder(18, pretrained=True, num_input_images=2)
    w = fake["conv1.weight"]
    torch.testing.assert_close(enc.encoder.conv1.weight, torch.cat([w, w], 1) / 2)
    torch.testing.assert_close(enc.encoder.layer3[0].conv1.weight, fake["layer3.0.conv1.weight"])


def test_offline_pretrained_error_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(weights: object) -> dict:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(networks, "_download_state_dict", offline)
    with pytest.raises(ConfigError) as info:
        build_models(ModelConfig(pretrained=True))
    msg = str(info.value)
    for needle in (
        "model.pretrained",
        "download.pytorch.org",
        "checkpoints",
        "model.pretrained=false",
    ):
        assert needle in msg
    assert "resnet18-f37072fd.pth" in msg and "name resolution" in msg


def _pose_pairs_separately(models: Models, images: torch.Tensor) -> dict[int, torch.Tensor]:
    """Monodepth2's loop: one pose-encoder call per source, pairs in temporal order."""
    out = {}
    for k, f in ((1, -1), (2, 1)):
        pair = [images[:, k], images[:, 0]] if f < 0 else [images[:, 0], images[:, k]]
        aa, t = models.pose([models.pose_encoder(torch.cat(pair, 1))])
        out[f] = transformation_from_parameters(aa[:, 0], t[:, 0], invert=f < 0)
    return out


@pytest.mark.parametrize("train", [False, True])
def test_batched_pose_prediction_equals_separate_calls(models: Models, train: bool) -> None:
    images = torch.rand(2, 3, 3, H, W, generator=torch.Generator().manual_seed(3))
    bn = models.pose_encoder.encoder.bn1
    state = {k: v.clone() for k, v in models.pose_encoder.state_dict().items()}
    models.pose_encoder.train(train)
    try:
        with torch.no_grad():
            batched = predict_poses(models, images, (0, -1, 1))
            stats_batched = (bn.running_mean.clone(), bn.num_batches_tracked.clone())
            models.pose_encoder.load_state_dict(state)
            separate = _pose_pairs_separately(models, images)
            stats_separate = (bn.running_mean.clone(), bn.num_batches_tracked.clone())
    finally:
        models.pose_encoder.load_state_dict(state)
        models.pose_encoder.eval()
    for f in (-1, 1):
        assert batched[f].shape == (2, 4, 4)
        torch.testing.assert_close(batched[f], separate[f], atol=1e-6, rtol=1e-5)
    if train:  # the same per-pair BatchNorm updates, in the same order
        torch.testing.assert_close(stats_batched[0], stats_separate[0])
        assert stats_batched[1].item() == stats_separate[1].item() == 2
        assert not torch.allclose(stats_batched[0], bn.running_mean)  # it did update


def test_negative_frames_get_the_inverted_transform(models: Models) -> None:
    images = torch.rand(1, 3, 3, H, W, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        poses = predict_poses(models, images, (0, -1, 1))
        aa, t = models.pose([models.pose_encoder(torch.cat([images[:, 1], images[:, 0]], 1))])
    forward = transformation_from_parameters(aa[:, 0], t[:, 0])
    torch.testing.assert_close(poses[-1] @ forward, torch.eye(4).unsqueeze(0), atol=1e-6, rtol=0)


def test_channels_last_matches_contiguous(models: Models) -> None:
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = predict_depth(models, x)
        models.to(memory_format=torch.channels_last)
        try:
            out = predict_depth(models, x.contiguous(memory_format=torch.channels_last))
            poses = predict_poses(models, torch.rand(2, 3, 3, H, W), (0, -1, 1))
        finally:
            models.to(memory_format=torch.contiguous_format)
    for s in ref:
        torch.testing.assert_close(out[s], ref[s], atol=1e-5, rtol=1e-4)
    assert all(torch.isfinite(p).all() for p in poses.values())


@pytest.fixture(scope="module")
def folder(models: Models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mono_64x96")
    save_monodepth2(models, path, 64, 96)
    return path


def _copy(src: Path, dst: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        os.link(src / name, dst / name)
    return dst


def test_save_and_load_round_trip(models: Models, folder: Path) -> None:
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["depth.pth", "encoder.pth", "pose.pth", "pose_encoder.pth"]
    enc = torch.load(folder / "encoder.pth", weights_only=True)
    assert (enc["height"], enc["width"], enc["use_stereo"]) == (64, 96, False)
    assert len([v for v in enc.values() if isinstance(v, torch.Tensor)]) == 122
    loaded, height, width = load_monodepth2(folder)
    assert (height, width) == (64, 96)
    x = torch.rand(1, 3, 3, H, W, generator=torch.Generator().manual_seed(6))
    loaded.eval()
    with torch.no_grad():
        for s, disp in predict_depth(models, x[:, 0]).items():
            torch.testing.assert_close(predict_depth(loaded, x[:, 0])[s], disp)
        a, b = predict_poses(models, x, (0, -1, 1)), predict_poses(loaded, x, (0, -1, 1))
    torch.testing.assert_close(a[1], b[1])


def test_subpixel_round_trip_infers_the_decoder(models: Models, tmp_path: Path) -> None:
    torch.manual_seed(7)
    depth = DepthDecoder(ENC18, (0, 1, 2, 3, 4), "subpixel")
    with torch.no_grad():
        depth.subpixel[2].conv.weight.mul_(0.5)  # no longer the ICNR initial value
    save_monodepth2(
        Models(models.encoder, depth, models.pose_encoder, models.pose), tmp_path, 64, 96
    )
    loaded, _, _ = load_monodepth2(tmp_path)
    assert loaded.depth.upsample == "subpixel" and loaded.depth.scales == (0, 1, 2, 3, 4)
    torch.testing.assert_close(loaded.depth.state_dict(), depth.state_dict())
    with pytest.raises(DataError, match="upsample"):
        load_monodepth2(tmp_path, ModelConfig(pretrained=False, scales=(0, 1, 2, 3, 4)))


def test_depth_only_folder_loads_and_missing_files_are_named(
    models: Models, folder: Path, tmp_path: Path
) -> None:
    _copy(folder, tmp_path, ("encoder.pth", "depth.pth", "pose_encoder.pth"))
    with pytest.raises(DataError, match=r"pose\.pth"):
        load_monodepth2(tmp_path)
    (tmp_path / "pose_encoder.pth").unlink()
    loaded, _, _ = load_monodepth2(tmp_path)
    torch.testing.assert_close(loaded.depth.state_dict(), models.depth.state_dict())
    assert loaded.pose_encoder.encoder.conv1.weight.shape == (64, 6, 7, 7)  # fresh, not meta
    assert not any(t.is_meta for t in loaded.state_dict().values())
    (tmp_path / "depth.pth").unlink()
    with pytest.raises(DataError, match=r"depth\.pth"):
        load_monodepth2(tmp_path)


def test_resnet50_folder_into_resnet18_model_is_a_clear_error(folder: Path, tmp_path: Path) -> None:
    with torch.device("meta"):  # shapes only: no 25M-parameter initialisation
        shapes = {f"encoder.{k}": v.shape for k, v in tv_models.resnet50().state_dict().items()}
    # Stride-0 expanded zeros keep the file tiny; only keys and shapes matter here.
    encoder = {k: torch.zeros(()).expand(s) for k, s in shapes.items()}
    torch.save(encoder | {"height": 64, "width": 96}, tmp_path / "encoder.pth")
    _copy(folder, tmp_path, ("depth.pth",))
    with pytest.raises(DataError, match=r"encoder\.pth.*resnet18"):
        load_monodepth2(tmp_path, ModelConfig(pretrained=False))


def test_output_layers_run_in_float32_under_bf16_autocast(models: Models) -> None:
    """The disparity heads and the pose decoder's last layer must not round to bf16."""
    seen: dict[str, torch.dtype] = {}
    heads = {f"depth head {k}": models.depth.decoder[k] for k in HEADS}
    layers = {**heads, "pose output": models.pose.net[3], "pose squeeze": models.pose.net[0]}

    def record(name: str) -> Callable[..., None]:
        return lambda _module, _inputs, out: seen.__setitem__(name, out.dtype)

    hooks = [layer.register_forward_hook(record(name)) for name, layer in layers.items()]
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(6))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            disps = predict_depth(models, x)
            poses = predict_poses(models, torch.rand(2, 3, 3, H, W), (0, -1, 1))
    finally:
        for hook in hooks:
            hook.remove()
    assert seen.pop("pose squeeze") == torch.bfloat16  # autocast is on for the layers before
    assert seen == dict.fromkeys(layers.keys() - {"pose squeeze"}, torch.float32)
    for disp in disps.values():
        assert disp.dtype == torch.float32
        # A bf16-rounded disparity would survive a round trip through bf16 unchanged.
        assert (disp != disp.to(torch.bfloat16).float()).float().mean() > 0.9
    assert all(p.dtype == torch.float32 for p in poses.values())
