"""eval.objective: val: which frames are validated, their ground truth, the engine's per-epoch
validation records, and a stopped run continued exactly (the real engine, tiny, on CPU)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from depthcore import store
from depthcore.config import load_config
from depthcore.data import resolve_data
from depthcore.data.gt import export_gt, load_gt_depths
from depthcore.data.kitti import BUNDLED_SPLITS, SplitLine, read_split, write_split
from depthcore.data.validation import prepare_validation, select_lines, validation_lines
from depthcore.errors import DataError

DRIVE = "2011_09_26/2011_09_26_drive_0060_sync"


def test_validation_frames_never_overlap_the_training_lines() -> None:
    train = read_split(BUNDLED_SPLITS / "eigen_zhou" / "train_files.txt")
    val = read_split(BUNDLED_SPLITS / "eigen_zhou" / "val_files.txt")
    chosen = select_lines(val, train, 200)
    assert len(chosen) == 200 and len({(v.folder, v.frame, v.side) for v in chosen}) == 200
    trained = {(t.folder, t.frame) for t in train}
    assert not [v for v in chosen if (v.folder, v.frame) in trained]  # neither camera
    assert all(v.source.endswith("val_files.txt") for v in chosen)
    # Spread over the file: 24 of the 27 drives that have free frames, both cameras.
    assert len({v.folder for v in chosen}) == 24 and {v.side for v in chosen} == {"l", "r"}
    # Fewer free frames than asked: all of them; the same call, the same frames.
    assert len(select_lines(val, train, 10_000)) == 474
    assert select_lines(val, train, 200) == chosen


def test_the_other_camera_of_a_training_frame_is_no_validation_frame() -> None:
    def line(frame: int, side: str) -> SplitLine:
        return SplitLine("d/d_drive_0001_sync", frame, side, "x", frame)

    train = [line(1, "l"), line(2, "r")]
    val = [line(1, "r"), line(2, "l"), line(3, "l"), line(4, "r"), line(5, "l")]
    assert [v.frame for v in select_lines(val, train, 2)] == [3, 4]  # evenly over 3, 4, 5
    assert select_lines(val[:2], train, 2) == []


@pytest.fixture(scope="module")
def kitti_tree(realdata: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 20 real frames and 3 scans as a KITTI tree: training lines 2..17, validation lines
    1, 5, 10, 18 (5 is a training frame: left out), test lines 1, 10, 18."""
    root = tmp_path_factory.mktemp("kitti-val")
    src = realdata / "udacity_sfnd_3d_object_tracking/images/KITTI/2011_09_26"
    calib = realdata / "kitti_raw_calib_2011_09_26/2011_09_26"
    (root / "2011_09_26").mkdir()
    for name in ("calib_cam_to_cam.txt", "calib_velo_to_cam.txt", "calib_imu_to_velo.txt"):
        os.symlink(calib / name, root / "2011_09_26" / name)
    for stream in ("image_02", "velodyne_points"):
        (root / DRIVE / stream / "data").mkdir(parents=True)
        for file in sorted((src / stream / "data").iterdir()):
            os.symlink(file, root / DRIVE / stream / "data" / file.name)
    splits = root / "splits"
    write_split(splits / "train_files.txt", [(DRIVE, i, "l") for i in range(2, 18) if i != 10])
    write_split(splits / "val_files.txt", [(DRIVE, i, "l") for i in (1, 5, 10, 18)])
    write_split(splits / "test_files.txt", [(DRIVE, i, "l") for i in (1, 10, 18)])
    return root


@pytest.mark.realdata
def test_validation_ground_truth_is_the_test_split_export_of_the_same_frames(
    kitti_tree: Path, tmp_path: Path
) -> None:
    cfg = load_config(
        None,
        [
            "data.dataset=kitti",
            f"data.root={kitti_tree}",
            f"data.split_dir={kitti_tree / 'splits'}",
            f"eval.split_dir={kitti_tree / 'splits'}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "eval.objective=val",
        ],
    )
    paths = resolve_data(cfg, require_gt=False)  # checks the validation frames' scans
    assert [line.frame for line in validation_lines(cfg, paths)] == [1, 10, 18]
    found = prepare_validation(cfg, paths)
    assert found.source == "velodyne"
    # The code path of runners/export_gt.py on a split file of the same lines.
    reference = tmp_path / "reference.npz"
    write_split(tmp_path / "same.txt", [(DRIVE, i, "l") for i in (1, 10, 18)])
    assert export_gt(kitti_tree, tmp_path / "same.txt", reference) == 3
    ours, theirs = load_gt_depths(found.gt_path), load_gt_depths(reference)
    assert len(ours) == 3 and all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))
    assert all(int((m > 0).sum()) > 5000 for m in ours)  # real scans, not empty maps
    made = found.gt_path.stat().st_mtime_ns
    again = prepare_validation(cfg, paths)  # made once, then read from the cache
    assert again.gt_path == found.gt_path and found.gt_path.stat().st_mtime_ns == made
    # A missing scan is named before any work, with the split line that needs it.
    scan = kitti_tree / DRIVE / "velodyne_points/data/0000000010.bin"
    target = scan.readlink()
    scan.unlink()
    try:
        with pytest.raises(DataError, match=r"val_files.txt:3: missing velodyne scan"):
            resolve_data(cfg, require_gt=False)
    finally:
        os.symlink(target, scan)


# ----------------------------------------------------------------------------------------------
# The engine


@pytest.fixture(scope="module")
def val_overrides(synthetic_cache: Path) -> list[str]:
    from conftest import TINY_OVERRIDES

    # 3 drives: 18 training frames, 2 validation frames (split_sizes), 10 test frames.
    more = ["data.synthetic.drives=3", "train.epochs=2", "eval.objective=val"]
    return [*TINY_OVERRIDES, f"data.cache_dir={synthetic_cache}", *more]


@pytest.fixture(scope="module")
def uninterrupted(val_overrides: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from depthcore.engine import train

    run_dir = tmp_path_factory.mktemp("clean") / "run"
    train(load_config(None, val_overrides), run_dir, progress=False)
    return run_dir


@pytest.mark.slow
def test_objective_val_records_validation_every_epoch_and_tests_at_the_end(
    uninterrupted: Path, val_overrides: list[str], tmp_path: Path
) -> None:
    from depthcore.engine import train

    cfg = load_config(None, val_overrides)
    records = store.read_curves(uninterrupted)
    val = [r for r in records if r["type"] == "val"]
    assert [r["epoch"] for r in val] == [1, 2] and all(r["n_images"] == 2 for r in val)
    epochs = [r for r in records if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2] and not any("abs_rel" in r for r in epochs)
    final = store.read_evaluation(uninterrupted, cfg.eval_id())
    assert final is not None and final["n_images"] == 4  # the test split, at the end
    # The validation pass changes no training: the same networks as objective test, whose
    # run (another run id) logs test metrics every epoch instead.
    test_cfg = load_config(None, [*val_overrides, "eval.objective=test"])
    assert test_cfg.run_id() != cfg.run_id() and test_cfg.eval_id() == cfg.eval_id()
    other = train(test_cfg, tmp_path / "test", progress=False)
    assert other["metrics_by_scale"] == final["metrics_by_scale"]
    assert all("abs_rel" in r for r in store.read_curves(tmp_path / "test") if r["type"] == "epoch")


@pytest.mark.slow
def test_a_stopped_run_continued_ends_bit_for_bit_as_an_uninterrupted_one(
    uninterrupted: Path, val_overrides: list[str], tmp_path: Path
) -> None:
    from depthcore.engine import train
    from depthcore.stopping import stop_record
    from depthcore.sweep import expand, sweep_from_dict

    sweep = sweep_from_dict(
        {"name": "s", "base": {}, "trials": [{}], "scheduler": {"type": "asha"}},
        overrides=val_overrides,
    )
    (trial,) = expand(sweep)
    run_dir = tmp_path / "run"

    def scheduler_stops_after_epoch_1(record: dict[str, Any]) -> None:
        # What the sweep's driver does when ASHA stops the trial: record the stop while the
        # trial waits in its report, then Ray ends the trial's thread with SystemExit.
        result = {**record, "objective": record["val_abs_rel"]}
        store.write_stopped(run_dir, stop_record(sweep, trial, result))
        sys.exit(0)

    with pytest.raises(SystemExit):
        train(trial.config, run_dir, report=scheduler_stops_after_epoch_1, progress=False)
    assert store.run_status(run_dir, trial.eval_id) == "stopped"
    assert store.read_stopped(run_dir)["epoch"] == 1
    cost = store.read_cost(run_dir)
    assert cost["log"][0]["end"] == "stopped" and cost["lost_s"] == 0

    final = train(trial.config, run_dir, progress=False)  # what --promote does on a worker
    clean = store.read_evaluation(uninterrupted, trial.eval_id)
    assert final["metrics_by_scale"] == clean["metrics_by_scale"]
    assert final["steps"] == clean["steps"] == 4
    assert store.read_stopped(run_dir) is None and store.run_status(run_dir) == "finished"
    records = store.read_curves(run_dir)
    for kind in ("epoch", "val"):
        assert [r["epoch"] for r in records if r["type"] == kind] == [1, 2]
    # No epoch trained twice: the second segment trained epoch 2's samples only.
    segments = store.read_cost(run_dir)["log"]
    assert [s["samples"] for s in segments] == [4, 4] and segments[1]["end"] == "finished"
    assert [r for r in records if r["type"] == "val"] == [
        r for r in store.read_curves(uninterrupted) if r["type"] == "val"
    ]


def test_objective_val_without_validation_frames_is_a_data_error(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    cfg = load_config(None, tiny_overrides)
    paths = resolve_data(cfg)
    split = tmp_path / "split"
    split.mkdir()
    (split / "train_files.txt").write_text(paths.train_files.read_text())
    val_cfg = load_config(None, [*tiny_overrides, f"data.split_dir={split}", "eval.objective=val"])
    with pytest.raises(DataError, match=r"eval.objective=val: .* has no val_files.txt"):
        resolve_data(val_cfg)
