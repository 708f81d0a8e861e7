"""Where the data is (`resolve_data`) and the loaders the engine trains and evaluates with.

Batches: the train loader yields "color" uint8 (B, F, 3, H, W) in
data.frame_ids order (already flipped when the sample flips), "K"/"inv_K" float32 (B, 4, 4) at
network resolution, "jitter" (B, 4), "jitter_order" (B, 4), "do_jitter" (B,), "do_flip" (B,) and
"index" (B,); the test loader yields "color" uint8 (B, 3, H, W) and "index".
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from depthcore.config import Config
from depthcore.data import kitti, synthetic
from depthcore.data.augment import Draw, draw_augment
from depthcore.data.cache import FrameCache, default_cache_dir
from depthcore.errors import ConfigError, DataError

BUNDLED_SPLITS = kitti.BUNDLED_SPLITS
TRAIN_FILE, VAL_FILE, TEST_FILE, GT_FILE = (
    "train_files.txt",
    "val_files.txt",
    "test_files.txt",
    "gt_depths.npz",
)


@dataclass(frozen=True)
class DataPaths:
    """The resolved, checked inputs of a run."""

    dataset: str
    root: Path
    train_files: Path
    val_files: Path | None  # None when the split folder has no val_files.txt
    test_files: Path
    gt_path: Path | None  # None only when resolve_data(require_gt=False) found none
    img_ext: str
    frame_cache: Path | None  # <cache_dir>/frames, None when data.cache is false


# ----------------------------------------------------------------------------------------------
# resolve_data


def _data_root(cfg: Config, cache_dir: Path) -> Path:
    data = cfg.data
    if data.dataset == "kitti":
        if data.root is None:
            raise ConfigError(
                "data.root: required for data.dataset=kitti; set data.root=/path/to/kitti_data "
                "(the folder holding the 2011_09_26/ ... date folders)"
            )
        root = Path(data.root)
        if not root.is_dir():
            raise DataError(
                f"data.root {root}: not a folder (expected the KITTI raw tree, with the "
                "2011_09_26/ ... date folders); set data.root, e.g. --set data.root=/data/kitti_raw"
            )
        return root
    if data.root is not None:
        root = Path(data.root)
        if synthetic.read_marker(root) is not None:
            _check_synthetic_matches(root, cfg)
            return root
        return synthetic.ensure_synthetic(root, data.synthetic)
    target = cache_dir / "synthetic" / synthetic.synthetic_hash(data.synthetic)
    return synthetic.ensure_synthetic(target, data.synthetic)


def _check_synthetic_matches(root: Path, cfg: Config) -> None:
    marker = synthetic.read_marker(root) or {}
    wanted = cfg.data.synthetic.model_dump()
    if (
        marker.get("config") == wanted
        and marker.get("generator_version") == synthetic.GENERATOR_VERSION
    ):
        return
    have = marker.get("config") or {}
    sets = " ".join(f"data.synthetic.{k}={v}" for k, v in sorted(have.items()))
    raise DataError(
        f"data.root {root} holds synthetic drives made with {have} (generator version "
        f"{marker.get('generator_version')}), but the config asks for {wanted}; pass {sets}, "
        f"or use data.dataset=kitti data.root={root} data.split_dir={root / 'splits'} "
        f"eval.split_dir={root / 'splits'}, or point data.root elsewhere"
    )


def _split_dirs(cfg: Config, root: Path) -> tuple[Path, Path]:
    """(train/val split folder, test split folder)."""
    if cfg.data.dataset == "synthetic":
        default_train = default_eval = synthetic.split_dir(root)
    else:
        default_train, default_eval = BUNDLED_SPLITS / "eigen_zhou", BUNDLED_SPLITS / "eigen"
    train = Path(cfg.data.split_dir) if cfg.data.split_dir else default_train
    test = Path(cfg.eval.split_dir) if cfg.eval.split_dir else default_eval
    return train, test


def _gt_candidates(cfg: Config, root: Path, eval_dir: Path) -> list[Path]:
    if cfg.eval.gt_path:
        return [Path(cfg.eval.gt_path)]
    out = [eval_dir / GT_FILE]
    if cfg.data.dataset == "kitti":
        out.append(root / f"gt_depths_{eval_dir.name}.npz")
    return out


def resolve_gt(cfg: Config, root: Path, eval_dir: Path, test_files: Path) -> Path:
    """The gt_depths.npz of the test split: eval.gt_path, beside the split, or in data.root."""
    candidates = _gt_candidates(cfg, root, eval_dir)
    for path in candidates:
        if path.is_file():
            return path
    # The bundled split folder lives in the package: suggest writing into data.root instead.
    writable = (
        candidates[-1]
        if eval_dir.resolve() == (BUNDLED_SPLITS / eval_dir.name).resolve()
        else candidates[0]
    )
    looked = "\n  ".join(str(p) for p in candidates)
    raise DataError(
        f"no ground truth for the test split {test_files}; looked for:\n  {looked}\n"
        "Export it from the velodyne scans (Monodepth2's export_gt_depth.py) with:\n"
        f"  python runners/export_gt.py --data-root {root} --split-file {test_files} "
        f"--out {writable}\n"
        "(add --source improved to read proj_depth/groundtruth for the eigen_benchmark split), "
        "or set eval.gt_path"
    )


def _check_splits(
    cfg: Config, root: Path, train_files: Path | None, val_files: Path, test_files: Path
) -> str:
    """Check the splits that will be read; returns the image extension in use."""
    test_lines = kitti.read_split(test_files)
    train_lines = kitti.read_split(train_files) if train_files is not None else []
    ext: str = cfg.data.img_ext  # "auto" is replaced by the detected extension below
    if ext == "auto":
        ext = kitti.detect_img_ext(root, (train_lines or test_lines)[0])
    needs = ("calib",) if cfg.data.intrinsics == "calib" else ()
    if train_files is not None:
        kitti.check_split(train_lines, root, ext, cfg.data.frame_ids, needs)
        if val_files.is_file():
            kitti.check_split(kitti.read_split(val_files), root, ext, cfg.data.frame_ids, needs)
    kitti.check_split(test_lines, root, ext, (0,))
    return ext


def resolve_data(cfg: Config, *, train: bool = True, require_gt: bool = True) -> DataPaths:
    """Find (generating synthetic drives if needed) and check the data of a run.

    Checks, at os.stat level, that every frame (and neighbour), and the calibration when
    data.intrinsics=calib, of the train and val splits (when `train`) and of the test split
    exists, and with eval.objective=val what the validation frames' ground truth is made from;
    a DataError names each missing file with the split line (file:line) needing it.
    """
    cache_dir = default_cache_dir(cfg.data.cache_dir)
    root = _data_root(cfg, cache_dir)
    split_dir, eval_dir = _split_dirs(cfg, root)
    train_files, val_files, test_files = (
        split_dir / TRAIN_FILE,
        split_dir / VAL_FILE,
        eval_dir / TEST_FILE,
    )
    ext = _check_splits(cfg, root, train_files if train else None, val_files, test_files)
    if require_gt:
        gt_path: Path | None = resolve_gt(cfg, root, eval_dir, test_files)
    else:
        gt_path = next((p for p in _gt_candidates(cfg, root, eval_dir) if p.is_file()), None)
    paths = DataPaths(
        dataset=cfg.data.dataset,
        root=root,
        train_files=train_files,
        val_files=val_files if val_files.is_file() else None,
        test_files=test_files,
        gt_path=gt_path,
        img_ext=ext,
        frame_cache=cache_dir / "frames" if cfg.data.cache else None,
    )
    if train and cfg.eval.objective == "val":
        from depthcore.data.validation import check_validation

        check_validation(cfg, paths)
    return paths


# ----------------------------------------------------------------------------------------------
# Dataset and sampler


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (epoch, index): a permutation that is a pure function of (seed, epoch).

    The epoch travels inside the indices because persistent workers keep their own copy of
    the dataset and never see attribute changes made in the main process.
    """

    def __init__(self, n: int, seed: int, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch, 0x70657270]).permutation(self.n)
        else:
            order = np.arange(self.n)
        return iter([(self.epoch, int(i)) for i in order])

    def __len__(self) -> int:
        return self.n


class FramesDataset(Dataset):
    """Split lines of a KITTI-layout tree as network-resolution uint8 frames (+ K, augment)."""

    def __init__(
        self,
        lines: Sequence[kitti.SplitLine],
        paths: DataPaths,
        cfg: Config,
        *,
        frame_ids: Sequence[int],
        augment: bool,
        test: bool = False,
    ) -> None:
        self.lines = list(lines)
        self.root, self.ext = paths.root, paths.img_ext
        self.size = (cfg.data.width, cfg.data.height)
        self.frame_ids = tuple(frame_ids)
        self.augment, self.test, self.seed = augment, test, cfg.train.seed
        self.cache = FrameCache(paths.frame_cache)
        self.calib = cfg.data.intrinsics == "calib"
        self.k_norm = _intrinsics(self.lines, self.root) if self.calib and not test else {}

    def __len__(self) -> int:
        return len(self.lines)

    def frames(self, index: int, flip: bool = False) -> np.ndarray:
        """(F, 3, H, W) uint8 frames of line `index` in frame_ids order."""
        line = self.lines[index]
        stack = np.stack(
            [
                self.cache.load(kitti.image_path(self.root, line, self.ext, f), self.size)
                for f in self.frame_ids
            ]
        )
        if flip:
            stack = stack[:, :, ::-1]
        return np.ascontiguousarray(stack.transpose(0, 3, 1, 2))

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if self.test:
            return {"color": torch.from_numpy(self.frames(index)[0]), "index": index}
        draw = draw_augment(self.seed, epoch, index) if self.augment else Draw.none()
        line = self.lines[index]
        k_norm = self.k_norm.get((line.date, line.cam), kitti.MONODEPTH2_K)
        k = kitti.scaled_intrinsics(k_norm, *self.size, flip=draw.flip and self.calib)
        return {
            "color": torch.from_numpy(self.frames(index, draw.flip)),
            "K": torch.from_numpy(k),
            "inv_K": torch.from_numpy(np.linalg.pinv(k).astype(np.float32)),
            "jitter": torch.from_numpy(draw.factors),
            "jitter_order": torch.from_numpy(draw.order),
            "do_jitter": draw.jitter,
            "do_flip": draw.flip,
            "index": index,
        }


def _intrinsics(lines: Sequence[kitti.SplitLine], root: Path) -> dict[tuple[str, int], np.ndarray]:
    """Normalised K per (date, camera) from calib_cam_to_cam.txt (data.intrinsics=calib)."""
    out = {}
    for line in lines:
        if (line.date, line.cam) not in out:
            path = kitti.calib_dir(root, line) / kitti.CAM_TO_CAM
            if not path.is_file():
                raise DataError(f"{line.where}: missing camera calibration {path}")
            out[(line.date, line.cam)] = kitti.calib_intrinsics(path, line.cam)
    return out


# ----------------------------------------------------------------------------------------------
# Loaders


def resolve_workers(value: int | str) -> int:
    """data.num_workers: 'auto' -> min(8, the CPUs this process may use - 1) (0 on a single
    core). A sweep trial resolves 'auto' within its resources.cpu before it gets here
    (depthcore.trials.with_trial_cpus)."""
    if value == "auto":
        return max(0, min(8, len(os.sched_getaffinity(0)) - 1))
    return int(value)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # decoding is single-threaded; avoid oversubscribing the cores


def _loader(dataset: Dataset, cfg: Config, batch_size: int, **kwargs: Any) -> DataLoader:
    workers = resolve_workers(cfg.data.num_workers)
    pin = cfg.train.device != "cpu" and torch.cuda.is_available()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
        # The loader's own generator: starting worker iterators must not draw from the global
        # torch RNG, or a resumed run's noise draws would differ from an uninterrupted one's.
        generator=torch.Generator().manual_seed(cfg.train.seed),
        **kwargs,
    )


def build_train_loader(cfg: Config, paths: DataPaths) -> DataLoader:
    """Shuffled, augmented training batches; call `loader.sampler.set_epoch(e)` every epoch."""
    lines = kitti.read_split(paths.train_files)
    dataset = FramesDataset(
        lines, paths, cfg, frame_ids=cfg.data.frame_ids, augment=cfg.data.augment
    )
    sampler = EpochSampler(len(lines), cfg.train.seed)
    return _loader(dataset, cfg, cfg.optim.batch_size, sampler=sampler, drop_last=True)


def build_val_loader(cfg: Config, paths: DataPaths) -> DataLoader | None:
    """Validation batches in split order, no augmentation (None without val_files.txt)."""
    if paths.val_files is None:
        return None
    lines = kitti.read_split(paths.val_files)
    dataset = FramesDataset(lines, paths, cfg, frame_ids=cfg.data.frame_ids, augment=False)
    sampler = EpochSampler(len(lines), cfg.train.seed, shuffle=False)
    return _loader(dataset, cfg, cfg.optim.batch_size, sampler=sampler, drop_last=False)


def build_test_loader(cfg: Config, paths: DataPaths) -> DataLoader:
    """Frame 0 of each test line in split order (the first eval.max_images), no augmentation."""
    lines = kitti.read_split(paths.test_files)[: cfg.eval.max_images]
    return build_frames_loader(cfg, paths, lines)


def build_frames_loader(
    cfg: Config, paths: DataPaths, lines: Sequence[kitti.SplitLine]
) -> DataLoader:
    """Frame 0 of each line in order, no augmentation, as the test split is evaluated (the
    validation frames of eval.objective=val: depthcore.data.validation)."""
    dataset = FramesDataset(lines, paths, cfg, frame_ids=(0,), augment=False, test=True)
    return _loader(dataset, cfg, cfg.eval.batch_size, shuffle=False, drop_last=False)
