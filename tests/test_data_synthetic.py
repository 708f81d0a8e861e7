"""Synthetic KITTI-format drives: consistent geometry, learnable appearance, safe generation."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from depthcore.config import SyntheticConfig, load_config
from depthcore.data import load_gt_depths, render, resolve_data, scene
from depthcore.data.gt import generate_depth_map, read_improved_gt
from depthcore.data.kitti import (
    MONODEPTH2_K,
    calib_dir,
    calib_intrinsics,
    image_path,
    improved_gt_path,
    read_calib_file,
    read_split,
    velodyne_path,
)
from depthcore.data.synthetic import ensure_synthetic, make_synthetic, read_poses
from depthcore.errors import DataError

REPO = Path(__file__).resolve().parent.parent
SMALL = SyntheticConfig(drives=2, frames=5, native_width=124, native_height=38, seed=3)


@pytest.fixture
def tiny_root(tiny_cfg) -> Path:
    return resolve_data(tiny_cfg).root


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_resolve_data_generates_fast_then_reuses(tiny_overrides: list[str], tmp_path: Path) -> None:
    cfg = load_config(None, [*tiny_overrides, f"data.cache_dir={tmp_path}"])
    start = time.perf_counter()
    paths = resolve_data(cfg)
    first = time.perf_counter() - start
    start = time.perf_counter()
    assert resolve_data(cfg) == paths
    assert first < 8.0 and time.perf_counter() - start < 0.5  # typically ~1.5 s, then a stat
    assert paths.root.parent == tmp_path / "synthetic" and paths.img_ext == ".jpg"
    train, val = read_split(paths.train_files), read_split(paths.val_files)
    test = read_split(paths.test_files)
    # drive 9001 trains (frames 1..10: each needs frames -1 and +1), drive 9002 tests
    assert sorted(line.frame for line in train + val) == list(range(1, 11))
    assert {line.folder[-9:-5] for line in train + val} == {"9001"}
    assert [line.frame for line in test] == list(range(1, 11))
    gts = load_gt_depths(paths.gt_path)
    assert len(gts) == 10 and gts[0].shape == (75, 248)
    sky = np.mean([(g == 0).mean() for g in gts])
    assert 0.01 < sky < 0.4  # a sky region without ground truth, but mostly scene
    assert max(g.max() for g in gts) > 80.0  # the street extends past the 80 m evaluation cap


def test_generation_is_deterministic_whatever_the_workers(tmp_path: Path) -> None:
    make_synthetic(tmp_path / "a", SMALL, workers=1)
    make_synthetic(tmp_path / "b", SMALL, workers=2)
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    marker_a, marker_b = json.loads(a.pop("synthetic.json")), json.loads(b.pop("synthetic.json"))
    assert a == b
    assert marker_a["hash"] == marker_b["hash"]


def test_calibration_matches_the_renderer(tiny_root: Path) -> None:
    date = tiny_root / "2000_01_01"
    assert np.allclose(calib_intrinsics(date / "calib_cam_to_cam.txt", 2), MONODEPTH2_K)
    calib = read_calib_file(date / "calib_cam_to_cam.txt")
    p2, p3 = calib["P_rect_02"].reshape(3, 4), calib["P_rect_03"].reshape(3, 4)
    assert (p3[0, 3] - p2[0, 3]) / -p2[0, 0] == pytest.approx(0.54)  # stereo baseline
    assert list(calib["S_rect_02"]) == [248, 75]
    velo = read_calib_file(date / "calib_velo_to_cam.txt")
    assert np.allclose(velo["R"].reshape(3, 3) @ [1, 0, 0], [0, 0, 1])  # velodyne x -> camera z


def _smooth(depth: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is valid and varies by < 5% (away from edges)."""
    pad = np.pad(depth, 1, mode="edge")
    h, w = depth.shape
    win = np.stack([pad[i : i + h, j : j + w] for i in range(3) for j in range(3)])
    return (win.min(0) > 0) & (win.max(0) - win.min(0) < 0.05 * win.max(0))


def test_velodyne_ground_truth_matches_exact_depth(tiny_root: Path) -> None:
    for line in read_split(tiny_root / "splits/test_files.txt")[:3]:
        exact = read_improved_gt(improved_gt_path(tiny_root, line))
        shifted = np.zeros_like(exact)
        shifted[:-1, :-1] = exact[
            1:, 1:
        ]  # export stores a point projecting to (u, v) at (u-1, v-1)
        for vel_depth, offset in ((False, 0.0), (True, 0.27)):  # velodyne x = camera z + 0.27 m
            gt = generate_depth_map(
                calib_dir(tiny_root, line), velodyne_path(tiny_root, line), 2, vel_depth
            )
            both = (gt > 0) & _smooth(shifted) & (shifted < 80)
            assert both.sum() > 1000
            diff = gt[both] - shifted[both]
            assert np.median(diff) == pytest.approx(offset, abs=0.02)
            assert np.percentile(np.abs(diff - offset) / shifted[both], 90) < 0.05


def _load(root: Path, line, offset: int) -> torch.Tensor:
    with Image.open(image_path(root, line, ".jpg", offset)) as img:
        return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def _warp(src: torch.Tensor, depth: torch.Tensor, k: torch.Tensor, t_src_tgt: torch.Tensor):
    """Inverse-warp `src` into the target view; returns the image and a valid mask."""
    h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )
    pix = torch.stack([u, v, torch.ones_like(u)]).reshape(3, -1)
    cam = torch.linalg.inv(k) @ pix * depth.reshape(1, -1).double()
    p = t_src_tgt[:3, :3] @ cam + t_src_tgt[:3, 3:]
    uv = k @ p
    uv = uv[:2] / uv[2:].clamp(min=1e-6)
    grid = torch.stack([uv[0] / (w - 1) * 2 - 1, uv[1] / (h - 1) * 2 - 1], -1).reshape(1, h, w, 2)
    warped = F.grid_sample(src[None], grid.float(), align_corners=True)[0]
    valid = (depth > 0) & (grid[0].abs() < 1).all(-1) & (p[2].reshape(h, w) > 0)
    return warped, valid


def test_true_depth_and_pose_explain_the_motion(tiny_root: Path) -> None:
    """Evidence the scene is learnable: warping t+-1 into t with the true depth and pose
    removes most of the photometric error, and the images have texture almost everywhere."""
    line = read_split(tiny_root / "splits/test_files.txt")[4]
    poses = read_poses(tiny_root / line.folder)
    k = torch.from_numpy(
        read_calib_file(calib_dir(tiny_root, line) / "calib_cam_to_cam.txt")["P_rect_02"].reshape(
            3, 4
        )[:, :3]
    )
    target = _load(tiny_root, line, 0)
    depth = torch.from_numpy(read_improved_gt(improved_gt_path(tiny_root, line)))
    for offset in (-1, 1):
        t_src_tgt = torch.from_numpy(np.linalg.inv(poses[line.frame + offset]) @ poses[line.frame])
        source = _load(tiny_root, line, offset)
        warped, valid = _warp(source, depth, k, t_src_tgt)
        err_warp = (warped - target).abs().mean(0)[valid].mean()
        err_identity = (source - target).abs().mean(0)[valid].mean()
        assert valid.float().mean() > 0.5 and err_identity > 0.02
        assert err_warp < 0.6 * err_identity
    grey = target.mean(0).unfold(0, 6, 6).unfold(1, 6, 6)  # 6x6 blocks
    flat = grey.std(dim=(-1, -2)) < 1.0 / 255
    has_depth = (
        depth[: grey.shape[0] * 6, : grey.shape[1] * 6]
        .unfold(0, 6, 6)
        .unfold(1, 6, 6)
        .amin((-1, -2))
        > 0
    )
    assert flat[has_depth].float().mean() < 0.05  # no large textureless surfaces


def test_culled_ray_casting_equals_brute_force() -> None:
    rng = np.random.default_rng([5, 9001])
    street, path = scene.make_scene(rng, 20.0), scene.make_trajectory(rng, 20)
    size = (160, 48)
    k = np.array([[0.58 * 160, 0, 80], [0, 1.92 * 48, 24], [0, 0, 1]])
    for i in (0, 12):
        rot, centre = path.rotation[i], path.centre[i]
        dirs = render.camera_rays(rot, k, size)
        rects, side, t_near = render.camera_rects(street.boxes, rot, centre, k, size)
        fast = render.cast(street, centre, dirs, rects, side, render.FAR_CLIP, t_near)
        faces, _ = render.facing_faces(street.boxes, centre)
        everything = np.where(faces[..., None], np.array([0, size[1], 0, size[0]]), 0)
        slow = render.cast(street, centre, dirs, everything, side, render.FAR_CLIP)
        assert np.array_equal(fast.t, slow.t) and np.array_equal(fast.box, slow.box)
        lidar = render.lidar_dirs(0.5)
        rot_wl, origin = rot @ render.VELO_TO_CAM_R, centre + rot @ render.VELO_TO_CAM_T
        ldirs = np.einsum("ij,jba->iba", rot_wl, lidar).astype(np.float32)
        rects, side, t_near = render.lidar_rects(street.boxes, rot_wl, origin, lidar)
        fast = render.cast(street, origin, ldirs, rects, side, render.LIDAR_RANGE, t_near)
        faces, _ = render.facing_faces(street.boxes, origin)
        everything = np.where(faces[..., None], np.array([0, lidar.shape[1], 0, lidar.shape[2]]), 0)
        slow = render.cast(street, origin, ldirs, everything, side, render.LIDAR_RANGE)
        assert np.array_equal(fast.t, slow.t) and np.isfinite(fast.t).mean() > 0.3


def _ensure(root: str) -> None:
    ensure_synthetic(root, SMALL)


def test_concurrent_generation_is_safe(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "synthetic" / "x"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ensure, args=(str(target),)) for _ in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    assert [proc.exitcode for proc in procs] == [0, 0]
    leftovers = [
        p.name for p in target.parent.iterdir() if p.name != "x" and not p.name.endswith(".lock")
    ]
    assert leftovers == []
    assert (target / "splits" / "gt_depths.npz").is_file()


def test_foreign_or_mismatched_root_is_refused(
    tiny_overrides: list[str], tiny_root: Path, tmp_path: Path
) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="refusing to write into it"):
        resolve_data(load_config(None, [*tiny_overrides, f"data.root={foreign}"]))
    assert (foreign / "notes.txt").read_text() == "keep me"
    other = [*tiny_overrides, f"data.root={tiny_root}", "data.synthetic.frames=13"]
    with pytest.raises(DataError, match=r"data\.synthetic\.frames=12"):  # what it was made with
        resolve_data(load_config(None, other))


def test_make_synthetic_runner(tmp_path: Path) -> None:
    script = [sys.executable, str(REPO / "runners/make_synthetic.py"), "--out", str(tmp_path / "d")]
    args = ["--drives", "2", "--frames", "5", "--size", "96x32", "--seed", "1"]
    ok = subprocess.run([*script, *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["splits"]["test"] == 3
    with pytest.raises(DataError, match="generated with other settings"):  # what the runner reports
        ensure_synthetic(tmp_path / "d", SMALL)
    size = subprocess.run(
        [*script, "--size", "96by32"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert size.returncode == 2 and "WIDTHxHEIGHT" in size.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drives", "1"], "error: --drives (drives): must be >= 2, got 1"),
        (["--workers", "0"], "--workers must be >= 1"),
    ],
)
def test_make_synthetic_runner_names_its_own_flags(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "drives"
    cmd = [sys.executable, "runners/make_synthetic.py", "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert not out.exists()
