"""The frame cache: hits equal cold loads, touching a source invalidates its entry."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depthcore.config import load_config
from depthcore.data import build_train_loader, resolve_data
from depthcore.data import cache as cache_mod
from depthcore.data.cache import FrameCache, decode_resized, default_cache_dir
from depthcore.data.kitti import read_split


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "0000000000.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (75, 248, 3), dtype=np.uint8)).save(path)
    return path


def _count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = cache_mod.decode_resized

    def counting(path: Path, size: tuple[int, int]) -> np.ndarray:
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(cache_mod, "decode_resized", counting)
    return calls


def test_hit_equals_cold_load_without_decoding(image: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_decodes(monkeypatch)
    cache = FrameCache(tmp_path / "frames")
    cold = np.array(cache.load(image, (192, 64)))
    hit = cache.load(image, (192, 64))
    assert len(calls) == 1 and np.array_equal(hit, cold) and hit.dtype == np.uint8
    assert isinstance(hit, np.memmap)  # memory-mapped, not decoded
    assert np.array_equal(cold, decode_resized(image, (192, 64)))
    assert len(list((tmp_path / "frames").rglob("*.npy"))) == 1
    cache.load(image, (96, 32))  # another target size is another entry
    assert len(calls) == 2 and len(list((tmp_path / "frames").rglob("*.npy"))) == 2


def test_touching_the_source_invalidates(image: Path, tmp_path: Path, monkeypatch) -> None:
    calls = _count_decodes(monkeypatch)
    cache = FrameCache(tmp_path / "frames")
    before = np.array(cache.load(image, (192, 64)))
    stat = image.stat()
    Image.fromarray(np.zeros((75, 248, 3), np.uint8)).save(image)  # new content ...
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # ... and mtime
    after = cache.load(image, (192, 64))
    assert len(calls) == 2 and after.max() == 0 and before.max() > 0
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # a bare touch
    cache.load(image, (192, 64))
    assert len(calls) == 3


def test_damaged_entry_is_rebuilt(image: Path, tmp_path: Path) -> None:
    cache = FrameCache(tmp_path / "frames")
    good = np.array(cache.load(image, (192, 64)))
    entry = cache.entry(image, (192, 64))
    entry.write_bytes(b"garbage")
    assert np.array_equal(cache.load(image, (192, 64)), good)


def test_loader_batches_identical_with_and_without_cache(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    def first_batch(*extra: str) -> dict[str, torch.Tensor]:
        cfg = load_config(None, [*tiny_overrides, *extra])
        loader = build_train_loader(cfg, resolve_data(cfg))
        loader.sampler.set_epoch(3)
        return next(iter(loader))

    frames = f"data.cache_dir={tmp_path}"
    # The synthetic drives stay in the shared session cache: point data.root at them.
    root = resolve_data(load_config(None, tiny_overrides)).root
    cold = first_batch(frames, f"data.root={root}")
    hit = first_batch(frames, f"data.root={root}")
    off = first_batch(frames, f"data.root={root}", "data.cache=false")
    lines = read_split(resolve_data(load_config(None, tiny_overrides)).train_files)
    needed = {(lines[i].frame + f) for i in cold["index"].tolist() for f in (0, -1, 1)}
    assert len(list((tmp_path / "frames").rglob("*.npy"))) == len(needed)
    for key in cold:
        assert torch.equal(cold[key], hit[key]) and torch.equal(cold[key], off[key])


def test_cache_dir_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DEPTHSWEEP_CACHE", str(tmp_path / "env"))
    assert default_cache_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert default_cache_dir(None) == tmp_path / "env"
    monkeypatch.delenv("DEPTHSWEEP_CACHE")
    assert default_cache_dir(None) == Path.home() / ".cache" / "depthsweep"
