"""KITTI reader, ground-truth export and bad-input messages (real frames from shared/realdata)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depthcore.config import load_config
from depthcore.data import build_test_loader, build_train_loader, load_gt_depths, resolve_data
from depthcore.data.cache import decode_resized
from depthcore.data.gt import export_gt, project_to_depth
from depthcore.data.kitti import MONODEPTH2_K, read_split
from depthcore.data.synthetic import write_calibration
from depthcore.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parent.parent
DRIVE = "2011_09_26/2011_09_26_drive_0060_sync"
VELO_FRAMES = (1, 10, 18)


def _write_split(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def kitti_tree(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KITTI raw tree of symlinks to the 20 real frames, 3 scans and the 2011_09_26 calib."""
    root = tmp_path_factory.mktemp("kitti")
    src = realdata / "udacity_sfnd_3d_object_tracking/images/KITTI/2011_09_26"
    calib = realdata / "kitti_raw_calib_2011_09_26/2011_09_26"
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        (root / "2011_09_26").mkdir(exist_ok=True)
        os.symlink(calib / name, root / "2011_09_26" / name)
    for stream in ("image_02", "velodyne_points"):
        dst = root / DRIVE / stream / "data"
        dst.mkdir(parents=True)
        for file in sorted((src / stream / "data").iterdir()):
            os.symlink(file, dst / file.name)
    _write_split(root / "splits/train_files.txt", [f"{DRIVE} {i} l" for i in range(1, 19)])
    _write_split(root / "splits/test_files.txt", [f"{DRIVE} {i:010d} l" for i in VELO_FRAMES])
    return root


def _kitti_cfg(root: Path, tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "data.dataset=kitti",
            f"data.root={root}",
            f"data.split_dir={root / 'splits'}",
            f"eval.split_dir={root / 'splits'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            "data.augment=false",
            "data.height=96",
            "data.width=320",
            *extra,
        ],
    )


# ----------------------------------------------------------------------------------------------
# Real KITTI frames


def test_real_samples_have_shapes_neighbours_and_k(kitti_tree: Path, tmp_path: Path) -> None:
    cfg = _kitti_cfg(kitti_tree, tmp_path)
    paths = resolve_data(cfg, require_gt=False)
    assert paths.img_ext == ".png"
    dataset = build_train_loader(cfg, paths).dataset
    assert len(dataset) == 18
    item = dataset[4]  # split line 5: frame 5, neighbours 4 and 6
    assert item["color"].shape == (3, 3, 96, 320) and item["color"].dtype == torch.uint8
    frames = kitti_tree / DRIVE / "image_02" / "data"
    for slot, frame in enumerate((5, 4, 6)):  # data.frame_ids = (0, -1, 1)
        expected = decode_resized(frames / f"{frame:010d}.png", (320, 96)).transpose(2, 0, 1)
        assert np.array_equal(item["color"][slot].numpy(), expected)
    k = item["K"].numpy()
    assert np.allclose(k, MONODEPTH2_K * np.array([[320], [96], [1], [1]]))
    assert np.allclose(item["inv_K"].numpy() @ k, np.eye(4), atol=1e-5)


def test_real_calib_intrinsics_from_p_rect(kitti_tree: Path, tmp_path: Path) -> None:
    cfg = _kitti_cfg(kitti_tree, tmp_path, "data.intrinsics=calib")
    dataset = build_train_loader(cfg, resolve_data(cfg, require_gt=False)).dataset
    k = dataset[0]["K"].numpy()
    # 2011_09_26 P_rect_02: fx = fy = 721.5377, cx = 609.5593, cy = 172.854 at 1242x375
    assert k[0, 0] == pytest.approx(721.5377 / 1242 * 320, rel=1e-5)
    assert k[1, 1] == pytest.approx(721.5377 / 375 * 96, rel=1e-5)
    assert k[0, 2] == pytest.approx(609.5593 / 1242 * 320, rel=1e-5)
    assert k[1, 2] == pytest.approx(172.854 / 375 * 96, rel=1e-5)


def test_real_test_loader_is_frame0_in_split_order(kitti_tree: Path, tmp_path: Path) -> None:
    cfg = _kitti_cfg(kitti_tree, tmp_path, "eval.max_images=2", "eval.batch_size=4")
    batches = list(build_test_loader(cfg, resolve_data(cfg, require_gt=False)))
    assert len(batches) == 1 and batches[0]["color"].shape == (2, 3, 96, 320)
    assert batches[0]["index"].tolist() == [0, 1]
    frame = kitti_tree / DRIVE / "image_02/data/0000000010.png"
    assert np.array_equal(
        batches[0]["color"][1].numpy(), decode_resized(frame, (320, 96)).transpose(2, 0, 1)
    )


def test_real_velodyne_ground_truth_is_plausible(kitti_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt_depths.npz"
    assert export_gt(kitti_tree, kitti_tree / "splits/test_files.txt", out) == 3
    gts = load_gt_depths(out)
    assert len(gts) == 3
    for gt in gts:
        assert gt.shape == (375, 1242) and gt.dtype == np.float32
        valid = gt[gt > 0]
        assert valid.size > 5000  # KITTI: ~15k projected points per frame
        assert np.percentile(valid, 2) > 2.0 and np.percentile(valid, 98) < 85.0
        assert 4.0 < np.median(valid) < 40.0
        assert (gt[: int(0.25 * 375)] > 0).mean() < 0.01  # no returns above the scan's +2 deg


def test_real_gt_is_found_beside_the_split_or_in_root(kitti_tree: Path, tmp_path: Path) -> None:
    cfg = _kitti_cfg(kitti_tree, tmp_path)
    gt = kitti_tree / "gt_depths_splits.npz"  # <data.root>/gt_depths_<split folder name>.npz
    export_gt(kitti_tree, kitti_tree / "splits/test_files.txt", gt)
    try:
        assert resolve_data(cfg).gt_path == gt
    finally:
        gt.unlink()


# ----------------------------------------------------------------------------------------------
# Projection details (independent references)


def test_projection_rounds_minus_one_and_keeps_nearest_point_per_pixel() -> None:
    # A camera looking down velodyne +x: u = 100 * (-y / x) + 50, v = 100 * (-z / x) + 20.
    p = np.array([[50.0, -100.0, 0, 0], [20.0, 0, -100.0, 0], [1.0, 0, 0, 0]])
    points = np.array(
        [
            [10.0, -0.04, 0.0, 0],  # u = 50.4 -> round 50 -> col 49, v = 20 -> row 19
            [12.0, -0.048, 0.0, 0],  # same pixel, farther: dropped
            [8.0, -0.052, 0.0, 0],  # u = 50.65 -> col 50
            [-5.0, 0.0, 0.0, 0],  # behind (velodyne x < 0): dropped
        ]
    )
    depth = project_to_depth(points, p, (40, 100), vel_depth=True)
    assert depth[19, 49] == pytest.approx(10.0) and depth[19, 50] == pytest.approx(8.0)
    assert np.count_nonzero(depth) == 2


def test_projection_unique_minimum_beats_monodepth2_sub2ind_collision() -> None:
    # Monodepth2's key row*(W-1)+col-1 makes (r, W-1) and (r+1, 0) collide; each must keep its own.
    width, height = 10, 5
    p = np.array(
        [[0.0, -1.0, 0, 1.0], [0.0, 0, -1.0, 1.0], [0.0, 0, 0, 1.0]]
    )  # u = 1 - y, v = 1 - z
    points = np.array([[7.0, 1 - (width - 1 + 1), 1 - (2 + 1), 0], [3.0, 1 - 1, 1 - (3 + 1), 0]])
    depth = project_to_depth(points, p, (height, width), vel_depth=True)
    assert depth[2, width - 1] == pytest.approx(7.0) and depth[3, 0] == pytest.approx(3.0)


def test_load_gt_depths_reads_monodepth2_style_files(tmp_path: Path) -> None:
    maps = [np.full((4, 6), 2.0, np.float32), np.full((4, 6), 3.0, np.float32)]
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = maps[0], np.zeros((5, 7), np.float32)
    np.savez_compressed(tmp_path / "ragged.npz", data=ragged)
    np.savez_compressed(tmp_path / "dense.npz", data=np.stack(maps))  # equal shapes, no objects
    assert [g.shape for g in load_gt_depths(tmp_path / "ragged.npz")] == [(4, 6), (5, 7)]
    assert [float(g[0, 0]) for g in load_gt_depths(tmp_path / "dense.npz")] == [2.0, 3.0]
    split = tmp_path / "test_files.txt"
    split.write_text("2011_09_26/2011_09_26_drive_0002_sync 69 l\n" * 3)
    with pytest.raises(DataError, match=r"holds 2 depth maps, but the test split .* has 3 lines"):
        load_gt_depths(tmp_path / "dense.npz", split)
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes((tmp_path / "ragged.npz").read_bytes()[:-40])
    with pytest.raises(DataError, match=f"{damaged}: not a readable gt_depths.npz"):
        load_gt_depths(damaged)


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    """6 frames of random 64x32 PNGs, calibration, and train/test splits (frames 1..4)."""
    root = tmp_path / "tree"
    folder = "2000_01_01/2000_01_01_drive_9001_sync"
    data = root / folder / "image_02" / "data"
    data.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 64, 3), dtype=np.uint8)).save(
            data / f"{i:010d}.png"
        )
    write_calibration(root / "2000_01_01", (64, 32))
    _write_split(root / "splits/train_files.txt", [f"{folder} {i} l" for i in range(1, 5)])
    _write_split(root / "splits/test_files.txt", [f"{folder} {i} l" for i in range(1, 5)])
    return root


def _small_cfg(root: Path, *extra: str):
    return _kitti_cfg(root, root.parent, "data.height=64", "data.width=128", *extra)


def test_missing_neighbour_names_file_and_split_line(small_tree: Path) -> None:
    (small_tree / "2000_01_01/2000_01_01_drive_9001_sync/image_02/data/0000000005.png").unlink()
    with pytest.raises(DataError) as err:
        resolve_data(_small_cfg(small_tree), require_gt=False)
    msg = str(err.value)
    assert f"{small_tree / 'splits/train_files.txt'}:4: missing neighbour frame +1" in msg
    assert "0000000005.png" in msg


def test_missing_frame_of_test_split(small_tree: Path) -> None:
    (small_tree / "2000_01_01/2000_01_01_drive_9001_sync/image_02/data/0000000002.png").unlink()
    with pytest.raises(DataError, match=r"train_files.txt:1: missing neighbour frame \+1 "):
        resolve_data(_small_cfg(small_tree), require_gt=False)
    with pytest.raises(DataError, match=r"test_files.txt:2: missing frame .*0000000002.png"):
        resolve_data(_small_cfg(small_tree), train=False, require_gt=False)


def test_missing_calibration_when_calib_intrinsics(small_tree: Path) -> None:
    (small_tree / "2000_01_01/calib_cam_to_cam.txt").unlink()
    resolve_data(_small_cfg(small_tree), require_gt=False)  # Monodepth2's K needs no calibration
    with pytest.raises(
        DataError, match=r"train_files.txt:1: missing camera calibration .*calib_cam_to_cam.txt"
    ):
        resolve_data(_small_cfg(small_tree, "data.intrinsics=calib"), require_gt=False)


def test_empty_split(small_tree: Path) -> None:
    (small_tree / "splits/train_files.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"train_files\.txt: the split file is empty"):
        resolve_data(_small_cfg(small_tree), require_gt=False)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("2000_01_01/2000_01_01_drive_9001_sync 2 x", r":3: side 'x' must be l or r"),
        ("2000_01_01/2000_01_01_drive_9001_sync two l", r":3: frame 'two' is not an integer"),
        ("2000_01_01/2000_01_01_drive_9001_sync -2 l", r":3: frame -2 is negative"),
        ("2000_01_01/2000_01_01_drive_9001_sync 2", r":3: expected '<date>/"),
    ],
)
def test_bad_split_line_names_its_line(small_tree: Path, line: str, pattern: str) -> None:
    lines = (small_tree / "splits/train_files.txt").read_text().splitlines()
    lines[2] = line
    _write_split(small_tree / "splits/train_files.txt", lines)
    with pytest.raises(DataError, match="train_files.txt" + pattern):
        resolve_data(_small_cfg(small_tree), require_gt=False)


def test_unreadable_image_names_the_file(small_tree: Path) -> None:
    bad = small_tree / "2000_01_01/2000_01_01_drive_9001_sync/image_02/data/0000000002.png"
    bad.write_bytes(b"not a png")
    cfg = _small_cfg(small_tree)
    dataset = build_train_loader(cfg, resolve_data(cfg, require_gt=False)).dataset  # stat-level
    with pytest.raises(DataError, match=f"{bad}: cannot read image"):
        dataset[0]


def test_missing_ground_truth_gives_export_command(small_tree: Path) -> None:
    with pytest.raises(DataError) as err:
        resolve_data(_small_cfg(small_tree))
    msg = str(err.value)
    assert (
        str(small_tree / "splits/gt_depths.npz") in msg
        and str(small_tree / "gt_depths_splits.npz") in msg
    )
    assert f"python runners/export_gt.py --data-root {small_tree} --split-file " in msg


def test_kitti_without_root_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.root: required for data\.dataset=kitti"):
        resolve_data(load_config(None, ["data.dataset=kitti", f"data.cache_dir={tmp_path}"]))


def test_export_gt_missing_velodyne_names_line(small_tree: Path) -> None:
    with pytest.raises(DataError, match=r"test_files.txt:1: missing velodyne"):
        export_gt(small_tree, small_tree / "splits/test_files.txt", small_tree / "gt.npz")
    assert not (small_tree / "gt.npz").exists()


def test_bundled_splits_parse() -> None:
    from depthcore.data.kitti import BUNDLED_SPLITS

    assert len(read_split(BUNDLED_SPLITS / "eigen/test_files.txt")) == 697
    lines = read_split(BUNDLED_SPLITS / "eigen_zhou/val_files.txt")
    assert len(lines) == 4424 and {line.side for line in lines} == {"l", "r"}


# ----------------------------------------------------------------------------------------------
# The runner


def _export_gt(tree: Path, out: Path) -> subprocess.CompletedProcess[str]:
    split = tree / "splits/test_files.txt"
    return subprocess.run(
        [sys.executable, str(REPO / "runners/export_gt.py"), "--data-root", str(tree),
         "--split-file", str(split), "--out", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip


def test_export_gt_runner(kitti_tree: Path, small_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "gt.npz"
    ok = _export_gt(kitti_tree, out)
    assert ok.returncode == 0, ok.stderr
    assert len(load_gt_depths(out)) == 3
    bad = _export_gt(small_tree, out)
    assert bad.returncode == 2 and "test_files.txt:1: missing velodyne" in bad.stderr
