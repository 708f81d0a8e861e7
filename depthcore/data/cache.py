"""Decoded, resized frames cached as uint8 .npy files, memory-mapped on reads.

Monodepth2 decodes a 1242x375 PNG/JPEG and Lanczos-resizes it for every frame of every sample in
every epoch, which is what makes its training CPU-bound. Here the first load of a (file, size)
pair writes `<cache_dir>/frames/<ab>/<key>.npy` (atomically) and later loads, in any epoch,
worker or trial on the machine, read that array instead. The key hashes the absolute path, the
target size, the file's mtime and size and the resampling method, so editing or touching a
source image invalidates its entry.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

from depthcore.errors import DataError
from depthcore.store import atomic_path

_RESAMPLE = "lanczos-v1"  # bump when the decode/resize recipe changes


def default_cache_dir(configured: str | None) -> Path:
    """data.cache_dir, else $DEPTHSWEEP_CACHE, else ~/.cache/depthsweep."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("DEPTHSWEEP_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "depthsweep"


def decode_resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode an image as RGB and resize it to size = (width, height) with PIL Lanczos.

    Monodepth2 resizes with Image.ANTIALIAS, Pillow's old name for LANCZOS. Returns (H, W, 3)
    uint8. An unreadable file is a DataError naming it.
    """
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != size:
                rgb = rgb.resize(size, Image.Resampling.LANCZOS)
            return np.asarray(rgb, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image not found") from None
    except (OSError, ValueError, SyntaxError) as exc:  # PIL's "cannot identify", truncated, ...
        raise DataError(f"{path}: cannot read image ({exc}); re-extract or re-convert it") from None


class FrameCache:
    """`load(path, size)`: (H, W, 3) uint8; root=None disables caching (decode every time)."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = Path(root) if root is not None else None

    def key(self, path: Path, size: tuple[int, int]) -> str:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError(f"{path}: image not found") from None
        ident = (
            f"{Path(path).resolve()}|{size[0]}x{size[1]}|{st.st_mtime_ns}|{st.st_size}|{_RESAMPLE}"
        )
        return hashlib.sha1(ident.encode()).hexdigest()

    def entry(self, path: Path, size: tuple[int, int]) -> Path | None:
        """Where the cached array of (path, size) lives (None when caching is off)."""
        if self.root is None:
            return None
        key = self.key(path, size)
        return self.root / key[:2] / f"{key}.npy"

    def load(self, path: Path, size: tuple[int, int]) -> np.ndarray:
        entry = self.entry(path, size)
        if entry is None:
            return decode_resized(path, size)
        cached = _read_entry(entry, size)
        if cached is not None:
            return cached
        frame = decode_resized(path, size)
        with atomic_path(entry) as tmp, open(tmp, "wb") as fh:
            np.save(fh, frame)
        return frame


def _read_entry(entry: Path, size: tuple[int, int]) -> np.ndarray | None:
    try:
        frame = np.load(entry, mmap_mode="r")
    except (FileNotFoundError, ValueError, OSError):
        return None  # absent, or damaged: decode again and overwrite
    if frame.shape != (size[1], size[0], 3) or frame.dtype != np.uint8:
        return None
    return frame
