"""The validation frames of `eval.objective: val`: a fixed subset of the training split's
`val_files.txt`, scored with the Eigen protocol after every epoch (docs/faithfulness.md).

Which frames: those of val_files.txt whose time instant (drive folder, frame) is no training
line's, for either camera, so that no validation image, nor its stereo twin, is ever trained
on; of these, `eval.val_images` spread evenly over the file (all of them when fewer). KITTI's
eigen_zhou has 4424 validation lines, 474 of them at instants no training line uses (in 27
of its 31 drives); the default 200 frames come from 24 drives, both cameras. Their neighbouring
frames are training frames (Zhou's split draws frames at random from the same drives):
validation ranks the configurations of a search on frames the networks never saw, not on new
drives as the test split does.

Ground truth: made once per data root and subset with `depthcore.data.gt.export_gt`, the code
path of runners/export_gt.py for the test split (KITTI: the velodyne scans, Monodepth2's Eigen
export; synthetic drives: their exact depth, as their test split's), and cached under
`<cache dir>/validation/<key>/` (`data.cache_dir`, `$DEPTHSWEEP_CACHE` or
~/.cache/depthsweep) next to the subset's split file. The recipe that picks frames and makes
ground truth is `depthcore.config.VALIDATION_RECIPE_VERSION`, part of the run id.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from depthcore.config import VALIDATION_RECIPE_VERSION, Config
from depthcore.data.cache import default_cache_dir
from depthcore.data.gt import GtSource, export_gt
from depthcore.data.kitti import SplitLine, check_split, read_split, write_split
from depthcore.errors import DataError

VALIDATION_DIR = "validation"
SPLIT_FILE = "val_files.txt"
GT_FILE = "gt_depths.npz"


class DataPaths(Protocol):
    """What validation reads of depthcore.data.dataset.DataPaths (which imports this module)."""

    @property
    def root(self) -> Path: ...
    @property
    def train_files(self) -> Path: ...
    @property
    def val_files(self) -> Path | None: ...
    @property
    def img_ext(self) -> str: ...


@dataclass(frozen=True)
class ValidationSet:
    """The validation frames of a run and where their cached split file and ground truth are."""

    lines: list[SplitLine]
    split_file: Path  # the chosen lines, in Monodepth2's split format
    gt_path: Path  # their gt_depths.npz, one map per line
    source: GtSource


def select_lines(
    val_lines: Sequence[SplitLine], train_lines: Sequence[SplitLine], count: int
) -> list[SplitLine]:
    """`count` lines of `val_lines` spread evenly over the file, leaving out every line whose
    (drive, frame) a training line uses with either camera; all the others when fewer."""
    trained = {(line.folder, line.frame) for line in train_lines}
    free = [line for line in val_lines if (line.folder, line.frame) not in trained]
    if len(free) <= count:
        return free
    return [free[i * len(free) // count] for i in range(count)]


def gt_source(cfg: Config) -> GtSource:
    """KITTI's validation ground truth is its velodyne scans (as the Eigen test split's);
    synthetic drives have their exact depth."""
    return "velodyne" if cfg.data.dataset == "kitti" else "improved"


def validation_lines(cfg: Config, paths: DataPaths) -> list[SplitLine]:
    """The run's validation frames (a DataError when the split folder has no val_files.txt or
    no frame is left)."""
    if paths.val_files is None:
        raise DataError(
            f"eval.objective=val: {paths.train_files.parent} has no {SPLIT_FILE}, the frames it "
            "validates on; add one (Monodepth2's format) or set eval.objective=test"
        )
    lines = select_lines(
        read_split(paths.val_files), read_split(paths.train_files), cfg.eval.val_images
    )
    if not lines:
        raise DataError(
            f"{paths.val_files}: every validation frame is also a training frame "
            f"({paths.train_files}); eval.objective=val needs frames the training never sees"
        )
    return lines


def check_validation(cfg: Config, paths: DataPaths) -> None:
    """Before any work: every chosen frame and what its ground truth is made from exists."""
    lines = validation_lines(cfg, paths)
    check_split(lines, paths.root, paths.img_ext, (0,), needs=(gt_source(cfg),))


def prepare_validation(cfg: Config, paths: DataPaths) -> ValidationSet:
    """The validation frames with their ground truth, exported on first use and cached
    (concurrent trials wait for the first one's export, then read it)."""
    from depthcore.data.synthetic import file_lock

    lines = validation_lines(cfg, paths)
    source = gt_source(cfg)
    folder = cache_folder(cfg, paths.root, lines, source)
    split_file, gt_path = folder / SPLIT_FILE, folder / GT_FILE
    with file_lock(folder.parent / f".{folder.name}.lock"):
        if not _readable(gt_path, split_file, len(lines)):
            check_split(lines, paths.root, paths.img_ext, (0,), needs=(source,))
            write_split(split_file, [(line.folder, line.frame, line.side) for line in lines])
            export_gt(paths.root, split_file, gt_path, source=source)
    return ValidationSet(lines, split_file, gt_path, source)


def cache_folder(cfg: Config, root: Path, lines: Sequence[SplitLine], source: str) -> Path:
    """<cache dir>/validation/<key>: the key hashes the data root, the lines and the source."""
    blob = json.dumps(
        {
            "root": str(Path(root).resolve()),
            "lines": [f"{line.folder} {line.frame} {line.side}" for line in lines],
            "source": source,
            "recipe": VALIDATION_RECIPE_VERSION,
        },
        sort_keys=True,
    )
    key = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return default_cache_dir(cfg.data.cache_dir) / VALIDATION_DIR / key


def _readable(gt_path: Path, split_file: Path, count: int) -> bool:
    """Made before (both are written atomically, the ground truth last); the engine's
    load_gt_depths counts the maps against the lines."""
    return gt_path.is_file() and split_file.is_file() and len(read_split(split_file)) == count
