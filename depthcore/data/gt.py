"""Ground-truth depth: Monodepth2's Eigen export from velodyne scans, the improved (annotated)
depth PNGs, and the gt_depths.npz file that evaluation reads.

Velodyne export follows Monodepth2's `generate_depth_map` (for the Eigen split: cam 2,
vel_depth=True): P_rect . R_rect_00 . [R|T]_velo_to_cam, keep scan points with velodyne x >= 0,
u, v = round(.) - 1, keep points inside the native S_rect_02 image, nearest point per pixel,
negatives to 0. One deliberate difference: Monodepth2 finds pixels hit by several points with
`sub2ind = row * (W - 1) + col - 1`, which is not a unique index (the last column of row r and
the first column of row r + 1 share a key), so in those two columns it can keep a point's depth
at the wrong pixel. We take the true per-pixel minimum. Only columns 0 and W - 1 can differ,
and both lie outside the Garg crop, so Eigen metrics are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from depthcore.data.kitti import (
    CAM_TO_CAM,
    VELO_TO_CAM,
    SplitLine,
    calib_dir,
    check_split,
    improved_gt_path,
    read_calib_file,
    read_split,
    velodyne_path,
)
from depthcore.errors import DataError
from depthcore.store import atomic_path

GtSource = Literal["velodyne", "improved"]


def velo_to_image(calib_path: Path, cam: int) -> tuple[np.ndarray, tuple[int, int]]:
    """P_velo2im (3, 4) = P_rect_0{cam} . R_rect_00 . velo_to_cam, and the native (H, W)."""
    cam_calib = read_calib_file(calib_path / CAM_TO_CAM)
    velo_calib = read_calib_file(calib_path / VELO_TO_CAM)
    for key, calib, size, name in (
        ("R", velo_calib, 9, VELO_TO_CAM),
        ("T", velo_calib, 3, VELO_TO_CAM),
        ("R_rect_00", cam_calib, 9, CAM_TO_CAM),
        (f"P_rect_0{cam}", cam_calib, 12, CAM_TO_CAM),
        ("S_rect_02", cam_calib, 2, CAM_TO_CAM),
    ):
        if key not in calib or calib[key].size != size:
            raise DataError(f"{calib_path / name}: missing or malformed {key}")
    velo2cam = np.eye(4)
    velo2cam[:3, :3] = velo_calib["R"].reshape(3, 3)
    velo2cam[:3, 3] = velo_calib["T"]
    rect = np.eye(4)
    rect[:3, :3] = cam_calib["R_rect_00"].reshape(3, 3)
    p_rect = cam_calib[f"P_rect_0{cam}"].reshape(3, 4)
    width, height = cam_calib["S_rect_02"].astype(np.int64)  # Monodepth2: always S_rect_02
    return p_rect @ rect @ velo2cam, (int(height), int(width))


def read_velodyne(path: Path) -> np.ndarray:
    """A KITTI scan: float32 little-endian rows x, y, z, reflectance -> (N, 4)."""
    try:
        data = np.fromfile(path, dtype="<f4")
    except OSError as exc:
        raise DataError(f"{path}: cannot read the velodyne scan ({exc})") from None
    if data.size % 4:
        raise DataError(f"{path}: {data.size * 4} bytes is not a whole number of 16-byte points")
    return data.reshape(-1, 4)


def project_to_depth(
    points: np.ndarray, p_velo2im: np.ndarray, shape: tuple[int, int], vel_depth: bool = True
) -> np.ndarray:
    """Sparse depth map (H, W) float32 from velodyne points (N, >= 3), 0 where no point.

    vel_depth: store the velodyne x (forward range) as Monodepth2's Eigen export does, which
    is about the camera z + 0.27 m; else the projected camera depth.
    """
    velo = np.ones((len(points), 4))
    velo[:, :3] = points[:, :3]
    velo = velo[velo[:, 0] >= 0]
    proj = velo @ p_velo2im.T
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(proj[:, 0] / proj[:, 2]) - 1  # "-1" matches the KITTI MATLAB devkit
        v = np.round(proj[:, 1] / proj[:, 2]) - 1
    depth = velo[:, 0] if vel_depth else proj[:, 2]
    height, width = shape
    keep = (u >= 0) & (v >= 0) & (u < width) & (v < height)
    out = np.full(shape, np.inf)
    np.minimum.at(out, (v[keep].astype(np.int64), u[keep].astype(np.int64)), depth[keep])
    out[~np.isfinite(out)] = 0
    out[out < 0] = 0
    return out.astype(np.float32)


def generate_depth_map(
    calib_path: Path, velo_file: Path, cam: int = 2, vel_depth: bool = True
) -> np.ndarray:
    """Monodepth2's generate_depth_map: the velodyne scan as a native-size depth map."""
    p_velo2im, shape = velo_to_image(calib_path, cam)
    return project_to_depth(read_velodyne(velo_file), p_velo2im, shape, vel_depth)


def read_improved_gt(path: Path) -> np.ndarray:
    """A KITTI depth-benchmark PNG (uint16, depth x 256, 0 = invalid) in metres, float32."""
    try:
        with Image.open(path) as img:
            raw = np.asarray(img)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the depth PNG ({exc})") from None
    if raw.ndim != 2:
        raise DataError(f"{path}: expected a single-channel 16-bit depth PNG, got {raw.shape}")
    return raw.astype(np.float32) / 256.0


def gt_for_line(
    root: Path, line: SplitLine, source: GtSource, vel_depth: bool = True
) -> np.ndarray:
    """The ground-truth map of one split line."""
    if source == "improved":
        return read_improved_gt(improved_gt_path(root, line))
    return generate_depth_map(calib_dir(root, line), velodyne_path(root, line), line.cam, vel_depth)


def export_gt(
    data_root: str | Path,
    split_file: str | Path,
    out: str | Path,
    *,
    source: GtSource = "velodyne",
    vel_depth: bool = True,
) -> int:
    """Write gt_depths.npz for every line of a split (Monodepth2's export_gt_depth.py).

    Every needed file is checked first (DataError naming file:line); returns the map count.
    """
    if source not in ("velodyne", "improved"):
        raise DataError(f"unknown ground-truth source {source!r}; use velodyne or improved")
    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"{root}: data root not found (expected the KITTI raw tree)")
    lines = read_split(split_file)
    check_split(lines, root, ext="", offsets=(), needs=(source,))
    maps = [gt_for_line(root, line, source, vel_depth) for line in lines]
    save_gt_depths(out, maps)
    return len(maps)


def save_gt_depths(path: str | Path, maps: Sequence[np.ndarray]) -> None:
    """np.savez_compressed(path, data=<object array of float32 maps>), written atomically."""
    data = np.empty(len(maps), dtype=object)  # np.array(list) would stack equal shapes
    for i, depth in enumerate(maps):
        data[i] = np.asarray(depth, dtype=np.float32)
    # A file object: given a path, savez would append ".npz" to the temporary name.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, data=data)


def load_gt_depths(
    path: str | Path | None, test_files: str | Path | None = None
) -> list[np.ndarray]:
    """The maps of a gt_depths.npz (Monodepth2's format; object arrays need allow_pickle); with
    `test_files`, there must be one map per line of that split."""
    if path is None:
        raise DataError("no ground truth: gt_depths.npz was not found (see resolve_data)")
    path = Path(path)
    try:
        with np.load(path, allow_pickle=True, fix_imports=True, encoding="latin1") as npz:
            data = npz["data"]
        maps = [np.asarray(depth, dtype=np.float32) for depth in data]
    except FileNotFoundError:
        raise DataError(f"{path}: ground-truth file not found") from None
    except Exception as exc:  # damaged zip or pickle: numpy and pickle raise many kinds
        raise DataError(
            f"{path}: not a readable gt_depths.npz with a 'data' array ({type(exc).__name__}: "
            f"{exc}); export it again with runners/export_gt.py"
        ) from None
    if test_files is not None:
        lines = len(read_split(test_files))
        if len(maps) != lines:
            raise DataError(
                f"{path}: holds {len(maps)} depth maps, but the test split {test_files} has "
                f"{lines} lines; export the ground truth of this split with runners/export_gt.py"
            )
    return maps
