"""Synthetic drives in the KITTI raw layout, so every consumer runs the real KITTI code path.

    <root>/2000_01_01/calib_cam_to_cam.txt, calib_velo_to_cam.txt, calib_imu_to_velo.txt
    <root>/2000_01_01/2000_01_01_drive_9001_sync/
        image_02/data/%010d.jpg (+ image_03 with stereo)    JPEG q92 4:2:0, like Monodepth2's data
        velodyne_points/data/%010d.bin                      64 beams, +2..-24.9 deg, front +-50 deg
        proj_depth/groundtruth/image_02/%010d.png           exact z-buffer depth x 256 (uint16)
        poses.txt                                           camera-to-world 3x4 per frame
    <root>/splits/{train,val,test}_files.txt, gt_depths.npz (test split, from the exact depth)
    <root>/synthetic.json                                   written last: the dataset is complete

P_rect_02 is Monodepth2's constant K at the rendered size (fx = 0.58 W, fy = 1.92 H, cx = W/2,
cy = H/2), so the default intrinsics are exact; R_rect_00 is the identity and camera 2 is the
rectified reference. The date 2000_01_01 and drives 9001+ do not exist in KITTI.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from depthcore.config import SyntheticConfig
from depthcore.data import render, scene
from depthcore.data.gt import export_gt
from depthcore.data.kitti import write_split
from depthcore.errors import DataError
from depthcore.store import write_json_atomic

GENERATOR_VERSION = 3
DATE = "2000_01_01"
FIRST_DRIVE = 9001
STEREO_BASELINE = 0.54
MARKER = "synthetic.json"
SPLIT_DIR = "splits"
_FRAMES_PER_JOB = 25

# The texture bank of the dataset being generated; forked workers inherit it.
_BANK: scene.TextureBank | None = None


@dataclass(frozen=True)
class _Job:
    root: Path
    drive: int  # 0-based
    frames: range
    n_frames: int
    size: tuple[int, int]
    seed: int
    stereo: bool


def drive_folder(drive: int) -> str:
    """Split-file folder of 0-based synthetic drive `drive`."""
    return f"{DATE}/{DATE}_drive_{FIRST_DRIVE + drive:04d}_sync"


def intrinsics(size: tuple[int, int]) -> np.ndarray:
    """3x3 K of the rendered camera: Monodepth2's normalised K at (width, height)."""
    width, height = size
    return np.array([[0.58 * width, 0, width / 2], [0, 1.92 * height, height / 2], [0, 0, 1]])


def synthetic_hash(syn: SyntheticConfig, stereo: bool = False) -> str:
    """Content hash of what the generator would write (config, stereo, generator version)."""
    blob = {"version": GENERATOR_VERSION, "stereo": stereo, **syn.model_dump()}
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# Calibration files


def _fmt(values: npt.ArrayLike) -> str:
    return " ".join(f"{v:.6e}" for v in np.asarray(values, dtype=np.float64).ravel())


def _cam_to_cam(size: tuple[int, int]) -> str:
    k = intrinsics(size)
    lines = ["calib_time: 01-Jan-2000 00:00:00", "corner_dist: 9.950000e-02"]
    for cam in range(4):
        tx = -STEREO_BASELINE if cam in (1, 3) else 0.0  # cameras 1 and 3 sit 0.54 m right
        p_rect = np.hstack([k, [[k[0, 0] * tx], [0], [0]]])
        lines += [
            f"S_{cam:02d}: {_fmt(size)}",
            f"K_{cam:02d}: {_fmt(k)}",
            f"D_{cam:02d}: {_fmt(np.zeros(5))}",
            f"R_{cam:02d}: {_fmt(np.eye(3))}",
            f"T_{cam:02d}: {_fmt([tx, 0, 0])}",
            f"S_rect_{cam:02d}: {_fmt(size)}",
            f"R_rect_{cam:02d}: {_fmt(np.eye(3))}",
            f"P_rect_{cam:02d}: {_fmt(p_rect)}",
        ]
    return "\n".join(lines) + "\n"


def write_calibration(date_dir: Path, size: tuple[int, int]) -> None:
    """KITTI calibration files consistent with the renderer (see the module docstring)."""
    date_dir.mkdir(parents=True, exist_ok=True)
    (date_dir / "calib_cam_to_cam.txt").write_text(_cam_to_cam(size))
    velo = [
        "calib_time: 01-Jan-2000 00:00:00",
        f"R: {_fmt(render.VELO_TO_CAM_R)}",
        f"T: {_fmt(render.VELO_TO_CAM_T)}",
        "delta_f: 0.000000e+00 0.000000e+00",
        "delta_c: 0.000000e+00 0.000000e+00",
    ]
    (date_dir / "calib_velo_to_cam.txt").write_text("\n".join(velo) + "\n")
    imu = ["calib_time: 01-Jan-2000 00:00:00", f"R: {_fmt(np.eye(3))}", f"T: {_fmt(np.zeros(3))}"]
    (date_dir / "calib_imu_to_velo.txt").write_text("\n".join(imu) + "\n")


# ----------------------------------------------------------------------------------------------
# Rendering one chunk of a drive (runs in a worker process for large datasets)


def png16_bytes(depth: np.ndarray) -> bytes:
    """A 16-bit greyscale PNG (filter 'Up', zlib level 1): ~20x faster than PIL's encoder."""
    height, width = depth.shape
    raw = depth.astype(">u2").view(np.uint8).reshape(height, 2 * width)
    rows = np.empty((height, 2 * width + 1), np.uint8)
    rows[:, 0] = 2  # 'Up' filter; row 0 has an implicit zero row above it
    rows[0, 1:] = raw[0]
    rows[1:, 1:] = raw[1:] - raw[:-1]

    def chunk(tag: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(tag + body)
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)
    body = zlib.compress(rows.tobytes(), 1)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


def _to_uint8(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(rgb.shape, dtype=np.float32)  # a little sensor noise (1 level)
    return np.clip(rgb * 255.0 + noise + 0.5, 0, 255).astype(np.uint8)


def _frame_paths(drive_dir: Path, frame: int) -> dict[str, Path]:
    name = f"{frame:010d}"
    return {
        "image_02": drive_dir / "image_02" / "data" / f"{name}.jpg",
        "image_03": drive_dir / "image_03" / "data" / f"{name}.jpg",
        "depth_02": drive_dir / "proj_depth" / "groundtruth" / "image_02" / f"{name}.png",
        "depth_03": drive_dir / "proj_depth" / "groundtruth" / "image_03" / f"{name}.png",
        "velodyne": drive_dir / "velodyne_points" / "data" / f"{name}.bin",
    }


def _write_view(paths: dict[str, Path], cam: str, rgb: np.ndarray, depth: np.ndarray) -> None:
    Image.fromarray(rgb).save(paths[f"image_{cam}"], quality=92, subsampling=2)
    depth_u16 = np.where(depth < 255.99, np.round(depth * 256), 0).astype(np.uint16)
    paths[f"depth_{cam}"].write_bytes(png16_bytes(depth_u16))


def _drive_world(job: _Job) -> tuple[scene.Scene, scene.Trajectory]:
    rng = np.random.default_rng([job.seed, FIRST_DRIVE + job.drive])
    street = scene.make_scene(rng, 1.3 * job.n_frames)
    return street, scene.make_trajectory(rng, job.n_frames)


def _render_job(job: _Job) -> float:
    """Render and write frames `job.frames` of one drive; returns the seconds spent."""
    start = time.perf_counter()
    assert _BANK is not None
    street, path = _drive_world(job)
    k = intrinsics(job.size)
    lidar = render.lidar_dirs(max(0.18, float(np.degrees(1.0 / k[0, 0]))))
    drive_dir = job.root / drive_folder(job.drive)
    for i in job.frames:
        paths = _frame_paths(drive_dir, i)
        rot, centre = path.rotation[i], path.centre[i]
        views = [("02", centre)]
        if job.stereo:
            views.append(("03", centre + rot @ np.array([STEREO_BASELINE, 0.0, 0.0])))
        for cam, origin in views:
            rgb, depth = render.render_camera(street, _BANK, rot, origin, k, job.size)
            noise = np.random.default_rng([job.seed, FIRST_DRIVE + job.drive, i, int(cam)])
            _write_view(paths, cam, _to_uint8(rgb, noise), depth)
        render.scan(street, rot, centre, lidar).tofile(paths["velodyne"])
    return time.perf_counter() - start


def _prepare_drive(root: Path, job: _Job) -> None:
    """Folders, poses.txt and timestamps.txt of one drive (cheap, done in the parent)."""
    drive_dir = root / drive_folder(job.drive)
    streams = ["image_02", "velodyne_points"] + (["image_03"] if job.stereo else [])
    depth = ["image_02"] + (["image_03"] if job.stereo else [])
    for stream in streams:
        (drive_dir / stream / "data").mkdir(parents=True, exist_ok=True)
        stamps = [
            f"2000-01-01 00:{i // 600:02d}:{i % 600 / 10:012.9f}" for i in range(job.n_frames)
        ]
        (drive_dir / stream / "timestamps.txt").write_text("\n".join(stamps) + "\n")
    for cam in depth:
        (drive_dir / "proj_depth" / "groundtruth" / cam).mkdir(parents=True, exist_ok=True)
    _, path = _drive_world(job)
    poses = [_fmt(path.pose(i)[:3]) for i in range(job.n_frames)]
    (drive_dir / "poses.txt").write_text("\n".join(poses) + "\n")


def read_poses(drive_dir: Path) -> np.ndarray:
    """(M, 4, 4) camera-to-world poses of image_02 from a synthetic drive's poses.txt."""
    rows = np.loadtxt(drive_dir / "poses.txt", ndmin=2).reshape(-1, 3, 4)
    last = np.broadcast_to(np.array([0, 0, 0, 1.0]), (len(rows), 1, 4))
    return np.concatenate([rows, last], axis=1)


# ----------------------------------------------------------------------------------------------
# The whole dataset


def _jobs(root: Path, syn: SyntheticConfig, stereo: bool) -> list[_Job]:
    size = (syn.native_width, syn.native_height)
    return [
        _Job(
            root,
            d,
            range(s, min(s + _FRAMES_PER_JOB, syn.frames)),
            syn.frames,
            size,
            syn.seed,
            stereo,
        )
        for d in range(syn.drives)
        for s in range(0, syn.frames, _FRAMES_PER_JOB)
    ]


def _run_jobs(jobs: list[_Job], workers: int) -> list[float]:
    if workers <= 1 or len(jobs) == 1 or "fork" not in multiprocessing.get_all_start_methods():
        return [_render_job(job) for job in jobs]
    # fork: workers inherit the texture bank instead of rebuilding it
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(_render_job, jobs))


def _default_workers(syn: SyntheticConfig) -> int:
    pixels = syn.drives * syn.frames * syn.native_width * syn.native_height
    if pixels < 20_000_000:  # small datasets: process start-up would cost more than it saves
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def split_sizes(syn: SyntheticConfig, stereo: bool = False) -> dict[str, int]:
    """Frames per split that `_write_splits` writes: the last quarter of the drives (at least
    one) are test drives (side l); the others' frames are shuffled into train and val, a tenth
    (at least one) for val. Every frame but a drive's first and last has both neighbours."""
    n_test = max(1, syn.drives // 4)
    inner = syn.frames - 2
    n_train = (syn.drives - n_test) * inner * (2 if stereo else 1)
    n_val = max(1, n_train // 10)
    return {"train": n_train - n_val, "val": n_val, "test": n_test * inner, "test_drives": n_test}


def _write_splits(root: Path, syn: SyntheticConfig, stereo: bool) -> dict[str, Any]:
    """Train/val from all but the last drive(s); test = the last drive(s), side l, in order."""
    sizes = split_sizes(syn, stereo)
    n_test = sizes["test_drives"]
    inner = range(1, syn.frames - 1)  # frames whose -1 / +1 neighbours exist
    sides = ("l", "r") if stereo else ("l",)
    train = [
        (drive_folder(d), f, s) for d in range(syn.drives - n_test) for f in inner for s in sides
    ]
    order = np.random.default_rng([syn.seed, 1]).permutation(len(train))
    train = [train[i] for i in order]
    n_val = sizes["val"]
    test = [
        (drive_folder(d), f, "l") for d in range(syn.drives - n_test, syn.drives) for f in inner
    ]
    split_dir = root / SPLIT_DIR
    write_split(split_dir / "train_files.txt", train[n_val:])
    write_split(split_dir / "val_files.txt", train[:n_val])
    write_split(split_dir / "test_files.txt", test)
    export_gt(root, split_dir / "test_files.txt", split_dir / "gt_depths.npz", source="improved")
    assert (len(train) - n_val, len(test)) == (sizes["train"], sizes["test"])  # split_sizes' rule
    return sizes


def make_synthetic(
    out: str | Path, syn: SyntheticConfig, *, stereo: bool = False, workers: int | None = None
) -> dict[str, Any]:
    """Render a synthetic dataset into the empty or new folder `out`; returns a summary.

    Deterministic per `syn` (seed included) whatever `workers` is. Use `ensure_synthetic` to
    generate concurrency-safely into a cache.
    """
    global _BANK
    start = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    size = (syn.native_width, syn.native_height)
    write_calibration(root / DATE, size)
    jobs = _jobs(root, syn, stereo)
    for job in jobs:
        if job.frames.start == 0:
            _prepare_drive(root, job)
    _BANK = scene.make_textures(syn.seed, scene.texture_size(syn.native_width))
    try:
        seconds = _run_jobs(jobs, workers if workers is not None else _default_workers(syn))
    finally:
        _BANK = None
    counts = _write_splits(root, syn, stereo)
    summary = {
        "generator_version": GENERATOR_VERSION,
        "hash": synthetic_hash(syn, stereo),
        "config": syn.model_dump(),
        "stereo": stereo,
        "drives": [drive_folder(d) for d in range(syn.drives)],
        "splits": counts,
        "render_seconds": round(sum(seconds), 3),
        "wall_seconds": round(time.perf_counter() - start, 3),
    }
    write_json_atomic(root / MARKER, summary)
    return summary


# ----------------------------------------------------------------------------------------------
# Generate-once into a cache or data.root, safe when several processes start at once


def read_marker(root: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return marker if isinstance(marker, dict) else None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive flock (waits for other generators on this machine); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename below still keeps results consistent
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _check_existing(root: Path, expected: str) -> bool:
    """True when `root` holds this dataset; DataError when it holds something else."""
    marker = read_marker(root)
    if marker is not None and marker.get("hash") == expected:
        return True
    if marker is not None:
        raise DataError(
            f"{root} holds a synthetic dataset generated with other settings "
            f"({marker.get('config')}, stereo={marker.get('stereo')}); delete it or point "
            "data.root elsewhere"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(
            f"{root} exists and is not a (complete) synthetic dataset; refusing to write into "
            "it. Delete it, or point data.root at an empty or new folder"
        )
    return False


def ensure_synthetic(
    root: str | Path, syn: SyntheticConfig, *, stereo: bool = False, workers: int | None = None
) -> Path:
    """Generate the dataset into `root` unless it is already there (then this is a stat).

    Generation runs in a temporary sibling folder that is renamed into place, under a file
    lock, so concurrent callers (Ray trials starting together) wait and then reuse it.
    """
    root = Path(root)
    expected = synthetic_hash(syn, stereo)
    if _check_existing(root, expected):
        return root
    with file_lock(root.parent / f".{root.name}.lock"):
        if _check_existing(root, expected):
            return root
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
        try:
            make_synthetic(tmp, syn, stereo=stereo, workers=workers)
            if root.exists():
                root.rmdir()  # empty (checked above)
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return root


def split_dir(root: Path) -> Path:
    return root / SPLIT_DIR
