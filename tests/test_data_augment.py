"""Augmentation: Monodepth2's colour jitter (torchvision on PIL images, pixel for pixel),
per-sample draws independent of workers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from depthcore.config import load_config
from depthcore.data import build_train_loader, resolve_data
from depthcore.data.augment import apply_jitter, apply_jitter_masked, draw_augment
from depthcore.data.kitti import MONODEPTH2_K, scaled_intrinsics

# What Monodepth2's loader calls: torchvision's ColorJitter ops on a PIL image (Pillow inside).
PIL_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)


def _images(b: int = 4, f: int = 3) -> torch.Tensor:
    """8-bit frames divided by 255, as the loader makes them, with grey, saturated and black
    pixels (edge cases of the HSV conversion)."""
    gen = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (b, f, 3, 12, 20), generator=gen)
    levels[0, :, :, :4, :4] = 128  # grey pixels (undefined hue)
    levels[1, :, 0, :3] = 255  # saturated red rows
    levels[-1, :, :, -2:] = 0  # black rows
    return levels.float() / 255


def _pil_jitter(frame: torch.Tensor, ops: list[int], factors: torch.Tensor) -> torch.Tensor:
    image = Image.fromarray(torch.round(frame * 255).byte().permute(1, 2, 0).numpy())
    for op in ops:
        image = PIL_OPS[op](image, float(factors[op]))
    return torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255


def test_apply_jitter_equals_torchvision_on_pil_images() -> None:
    images = _images()
    jitter = torch.tensor(
        [
            [1.1, 0.9, 1.15, 0.07],
            [0.85, 1.2, 0.8, -0.1],
            [1.0, 1.0, 1.0, 0.0],
            [1.19, 0.81, 0.95, 0.03],
        ]
    )
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
    do = torch.tensor([True, True, False, True])
    out = apply_jitter(images, jitter, order, do)
    for b in range(4):
        for f in range(3):
            ops = order[b].tolist() if do[b] else []
            assert torch.equal(out[b, f], _pil_jitter(images[b, f], ops, jitter[b])), (b, f)
    assert torch.equal(out[2], images[2])  # do_jitter False: untouched


def test_sync_free_jitter_equals_the_indexed_one() -> None:
    # Every one of the 24 op orders, factors over and beyond Monodepth2's ranges, some samples off.
    b = 48
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (b, 2, 3, 10, 14), generator=gen).float() / 255
    jitter = torch.stack(
        [torch.empty(b).uniform_(0.0, 2.5, generator=gen) for _ in range(3)]
        + [torch.empty(b).uniform_(-0.5, 0.5, generator=gen)],
        dim=1,
    )
    orders = list(itertools.permutations(range(4)))
    order = torch.tensor([orders[i % 24] for i in range(b)])
    do = torch.rand(b, generator=gen) < 0.8
    assert torch.equal(
        apply_jitter_masked(images, jitter, order, do), apply_jitter(images, jitter, order, do)
    )


@pytest.mark.parametrize("op", range(4))
@pytest.mark.parametrize("seed", range(3))
def test_each_op_equals_pillow_over_its_whole_range(op: int, seed: int) -> None:
    """Factors well outside Monodepth2's ranges too: clipping, truncation and hue wrap-around."""
    gen = torch.Generator().manual_seed(seed)
    images = (torch.randint(0, 256, (6, 1, 3, 16, 24), generator=gen).float()) / 255
    if op == 3:
        factors = torch.empty(6).uniform_(-0.5, 0.5, generator=gen)
    else:
        factors = torch.empty(6).uniform_(0.0, 3.0, generator=gen)
    jitter = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(6, 1)
    jitter[:, op] = factors
    order = torch.tensor([[op, *[o for o in range(4) if o != op]]]).repeat(6, 1)
    out = apply_jitter(images, jitter, order, torch.ones(6, dtype=torch.bool))
    for b in range(6):  # all four ops, as ColorJitter: even hue 0 is an HSV round trip
        assert torch.equal(out[b, 0], _pil_jitter(images[b, 0], order[b].tolist(), jitter[b])), b


def test_jitter_on_levels_differs_from_float_jitter() -> None:
    # Guard against a silent float fallback: Pillow truncates, so brightness x1.1 of level 1
    # stays 1 (1.1 -> 1), where a float jitter would give 1.1/255.
    images = torch.full((1, 1, 3, 2, 2), 1 / 255)
    jitter = torch.tensor([[1.1, 1.0, 1.0, 0.0]])
    out = apply_jitter(images, jitter, torch.arange(4)[None], torch.tensor([True]))
    assert torch.equal(out, images)


def test_all_frames_of_a_sample_share_the_draw() -> None:
    images = _images(3, 1).repeat(1, 3, 1, 1, 1)  # three identical frames per sample
    draws = [draw_augment(7, 0, i) for i in range(3)]
    jitter = torch.from_numpy(np.stack([d.factors for d in draws]))
    order = torch.from_numpy(np.stack([d.order for d in draws]))
    out = apply_jitter(images, jitter, order, torch.ones(3, dtype=torch.bool))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])
    assert not torch.equal(out[0, 0], images[0, 0])


def test_draws_follow_monodepth2_distribution() -> None:
    draws = [draw_augment(1, 2, i) for i in range(2000)]
    assert 0.45 < np.mean([d.flip for d in draws]) < 0.55
    assert 0.45 < np.mean([d.jitter for d in draws]) < 0.55
    factors = np.stack([d.factors for d in draws])
    assert factors[:, :3].min() >= 0.8 and factors[:, :3].max() <= 1.2
    assert factors[:, 3].min() >= -0.1 and factors[:, 3].max() <= 0.1
    assert all(sorted(d.order.tolist()) == [0, 1, 2, 3] for d in draws)
    assert len({tuple(d.order.tolist()) for d in draws}) == 24
    again, next_epoch = draw_augment(1, 2, 5), draw_augment(1, 3, 5)  # a pure function
    assert np.array_equal(again.factors, draws[5].factors) and again.flip == draws[5].flip
    assert not np.array_equal(next_epoch.factors, draws[5].factors)


def _epochs(cfg, epochs: tuple[int, ...]) -> list[list[dict[str, torch.Tensor]]]:
    loader = build_train_loader(cfg, resolve_data(cfg))
    out = []
    for epoch in epochs:
        loader.sampler.set_epoch(epoch)
        out.append(list(loader))
    return out


def test_draws_do_not_depend_on_workers(tiny_overrides: list[str]) -> None:
    serial = _epochs(load_config(None, tiny_overrides), (0, 1))
    workers = _epochs(load_config(None, [*tiny_overrides, "data.num_workers=2"]), (0, 1))
    for a_epoch, b_epoch in zip(serial, workers, strict=True):  # persistent workers, 2 epochs
        assert len(a_epoch) == len(b_epoch) == 4  # 9 lines, batch 2, drop_last
        for a, b in zip(a_epoch, b_epoch, strict=True):
            for key in a:
                assert torch.equal(a[key], b[key]), key
    first, second = (torch.cat([b["index"] for b in epoch]) for epoch in serial)
    assert not torch.equal(first, second)  # a new permutation each epoch


def test_flip_mirrors_frames_and_k(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, tiny_overrides)
    dataset = build_train_loader(cfg, resolve_data(cfg)).dataset
    epoch, index = next(
        (e, i)
        for e in range(5)
        for i in range(len(dataset))
        if draw_augment(cfg.train.seed, e, i).flip
    )
    item = dataset[(epoch, index)]
    assert item["do_flip"]
    assert torch.equal(item["color"], torch.from_numpy(dataset.frames(index)).flip(-1))
    unflipped = scaled_intrinsics(MONODEPTH2_K, 192, 64, flip=False)
    assert torch.equal(item["K"], torch.from_numpy(unflipped))  # Monodepth2's K is not adjusted
    k = scaled_intrinsics(
        np.array([[0.5, 0, 0.4, 0], [0, 1.5, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), 192, 64, True
    )
    assert k[0, 2] == pytest.approx(192 - 1 - 0.4 * 192)  # calib K: cx' = W - 1 - cx


def test_val_loader_is_in_order_and_not_augmented(tiny_cfg) -> None:
    from depthcore.data import build_val_loader

    batches = list(build_val_loader(tiny_cfg, resolve_data(tiny_cfg)))
    assert torch.cat([b["index"] for b in batches]).tolist() == [0]  # 1 val line, no drop_last
    assert not any(b["do_flip"].any() or b["do_jitter"].any() for b in batches)
