"""KITTI raw layout: Monodepth2 split files, file paths, calibration, intrinsics, split checks.

Layout (Monodepth2's `kitti_data/`):
    <root>/<date>/calib_cam_to_cam.txt, calib_velo_to_cam.txt
    <root>/<date>/<date>_drive_<nnnn>_sync/image_0{2,3}/data/<%010d>.{png,jpg}
    <root>/<date>/<date>_drive_<nnnn>_sync/velodyne_points/data/<%010d>.bin
    <root>/<date>/<date>_drive_<nnnn>_sync/proj_depth/groundtruth/image_0{2,3}/<%010d>.png
Split line: `<date>/<date>_drive_<nnnn>_sync <frame> <l|r>` (side l = image_02, r = image_03).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depthcore.errors import DataError

BUNDLED_SPLITS = Path(__file__).resolve().parent.parent / "splits"  # Monodepth2's split files
SIDE_TO_CAM = {"l": 2, "r": 3, "2": 2, "3": 3}
IMAGE_EXTS = (".jpg", ".png")  # Monodepth2's default is .jpg (PNGs converted with ImageMagick)
# Monodepth2's normalised intrinsics for every KITTI date (full_res_shape 1242x375).
MONODEPTH2_K = np.array(
    [[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32
)
CAM_TO_CAM = "calib_cam_to_cam.txt"
VELO_TO_CAM = "calib_velo_to_cam.txt"
_SPLIT_FORMAT = "'<date>/<date>_drive_<nnnn>_sync <frame> <l|r>'"
_MAX_LISTED = 5


@dataclass(frozen=True)
class SplitLine:
    """One line of a split file, with where it came from (for error messages)."""

    folder: str  # "<date>/<date>_drive_<nnnn>_sync"
    frame: int
    side: str  # "l" or "r"
    source: str  # the split file
    lineno: int

    @property
    def where(self) -> str:
        return f"{self.source}:{self.lineno}"

    @property
    def date(self) -> str:
        return self.folder.split("/")[0]

    @property
    def cam(self) -> int:
        return SIDE_TO_CAM[self.side]


# ----------------------------------------------------------------------------------------------
# Split files


def parse_split_line(text: str, source: str | Path, lineno: int) -> SplitLine:
    """Parse `<date>/<drive>_sync <frame> <side>`; a malformed line is a DataError at file:line."""
    where = f"{source}:{lineno}"
    parts = text.split()
    if len(parts) != 3:
        raise DataError(f"{where}: expected {_SPLIT_FORMAT}, got {text.strip()!r}")
    folder, frame, side = parts
    try:
        index = int(frame)
    except ValueError:
        raise DataError(
            f"{where}: frame {frame!r} is not an integer (line {text.strip()!r})"
        ) from None
    if index < 0:
        raise DataError(f"{where}: frame {index} is negative (line {text.strip()!r})")
    if side not in SIDE_TO_CAM:
        raise DataError(f"{where}: side {side!r} must be l or r (or 2 / 3) (line {text.strip()!r})")
    if "/" not in folder.strip("/"):
        raise DataError(f"{where}: folder {folder!r} must be <date>/<date>_drive_<nnnn>_sync")
    side = "l" if SIDE_TO_CAM[side] == 2 else "r"
    return SplitLine(folder.strip("/"), index, side, str(source), lineno)


def read_split(path: str | Path) -> list[SplitLine]:
    """All lines of a split file (blank lines skipped); missing or empty files are DataErrors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the split file ({exc})") from None
    lines = [
        parse_split_line(raw, path, i) for i, raw in enumerate(text.splitlines(), 1) if raw.strip()
    ]
    if not lines:
        raise DataError(f"{path}: the split file is empty; expected lines like {_SPLIT_FORMAT}")
    return lines


def write_split(path: Path, lines: Iterable[tuple[str, int, str]]) -> None:
    """Write (folder, frame, side) lines in Monodepth2's format, atomically."""
    from depthcore.store import write_text_atomic

    write_text_atomic(path, "".join(f"{folder} {frame} {side}\n" for folder, frame, side in lines))


# ----------------------------------------------------------------------------------------------
# Paths


def image_path(root: Path, line: SplitLine, ext: str, offset: int = 0) -> Path:
    """Frame `line.frame + offset` of the line's camera."""
    name = f"{line.frame + offset:010d}{ext}"
    return root / line.folder / f"image_0{line.cam}" / "data" / name


def velodyne_path(root: Path, line: SplitLine) -> Path:
    return root / line.folder / "velodyne_points" / "data" / f"{line.frame:010d}.bin"


def improved_gt_path(root: Path, line: SplitLine) -> Path:
    """The KITTI depth benchmark's annotated depth (uint16 PNG, metres x 256)."""
    folder = root / line.folder / "proj_depth" / "groundtruth" / f"image_0{line.cam}"
    return folder / f"{line.frame:010d}.png"


def calib_dir(root: Path, line: SplitLine) -> Path:
    return root / line.date


def detect_img_ext(root: Path, line: SplitLine) -> str:
    """The extension of the line's frame on disk (.jpg preferred when both exist)."""
    for ext in IMAGE_EXTS:
        if image_path(root, line, ext).is_file():
            return ext
    folder = image_path(root, line, "").parent
    raise DataError(
        f"{line.where}: needs frame {line.frame:010d} in {folder}, but neither "
        f"{' nor '.join(IMAGE_EXTS)} exists there; check data.root ({root}) or set data.img_ext"
    )


# ----------------------------------------------------------------------------------------------
# Calibration and intrinsics


def read_calib_file(path: Path) -> dict[str, np.ndarray]:
    """`key: v1 v2 ...` lines; split on the first ':' only and keep the all-float values."""
    if not path.is_file():
        raise DataError(f"{path}: calibration file not found")
    out: dict[str, np.ndarray] = {}
    for raw in path.read_text().splitlines():
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        try:
            out[key.strip()] = np.array([float(v) for v in value.split()], dtype=np.float64)
        except ValueError:
            continue  # calib_time and other non-numeric entries
    return out


def _require(calib: dict[str, np.ndarray], key: str, size: int, path: Path) -> np.ndarray:
    value = calib.get(key)
    if value is None or value.size != size:
        raise DataError(f"{path}: missing or malformed {key} (expected {size} numbers)")
    return value


def calib_intrinsics(calib_path: Path, cam: int) -> np.ndarray:
    """Normalised 4x4 K of camera `cam` (2 or 3): P_rect_0{cam} divided by S_rect_0{cam} (W, H)."""
    calib = read_calib_file(calib_path)
    p_rect = _require(calib, f"P_rect_0{cam}", 12, calib_path).reshape(3, 4)
    size = calib.get(f"S_rect_0{cam}", calib.get("S_rect_02"))
    if size is None or size.size != 2:
        raise DataError(f"{calib_path}: missing or malformed S_rect_0{cam} (expected 2 numbers)")
    k = np.eye(4, dtype=np.float32)
    k[0, :3] = p_rect[0, :3] / size[0]
    k[1, :3] = p_rect[1, :3] / size[1]
    return k


def scaled_intrinsics(k_norm: np.ndarray, width: int, height: int, flip: bool) -> np.ndarray:
    """K (4x4) in pixels at (width, height), as Monodepth2 scales it (row 0 x W, row 1 x H).

    A flipped image needs cx' = W - 1 - cx (0-based pixel centres); pass flip=False for
    Monodepth2's constant K, which it treats as centred (cx = W/2) and never adjusts.
    """
    k = k_norm.astype(np.float32).copy()
    k[0, :] *= width
    k[1, :] *= height
    if flip:
        k[0, 2] = width - 1 - k[0, 2]
    return k


# ----------------------------------------------------------------------------------------------
# Split checks (os-level: directory listings, no decoding)


class _Listing:
    """Cached directory listings, so a 40k-line split costs one listdir per folder."""

    def __init__(self) -> None:
        self._dirs: dict[Path, frozenset[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._dirs:
            try:
                self._dirs[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._dirs[folder] = frozenset()
        return path.name in self._dirs[folder]


def _line_needs(
    root: Path, line: SplitLine, ext: str, offsets: Sequence[int], needs: Sequence[str]
) -> list[tuple[Path, str]]:
    out = []
    for offset in offsets:
        what = "frame" if offset == 0 else f"neighbour frame {offset:+d}"
        if line.frame + offset < 0:
            out.append(
                (image_path(root, line, ext, 0).parent / f"<frame {line.frame + offset}>", what)
            )
        else:
            out.append((image_path(root, line, ext, offset), what))
    for need in needs:
        if need == "calib":
            out.append((calib_dir(root, line) / CAM_TO_CAM, "camera calibration"))
        elif need == "velodyne":
            out.append((calib_dir(root, line) / CAM_TO_CAM, "camera calibration"))
            out.append((calib_dir(root, line) / VELO_TO_CAM, "velodyne calibration"))
            out.append((velodyne_path(root, line), "velodyne scan"))
        elif need == "improved":
            out.append((improved_gt_path(root, line), "improved ground truth"))
    return out


def check_split(
    lines: Sequence[SplitLine],
    root: Path,
    ext: str,
    offsets: Sequence[int] = (0,),
    needs: Sequence[str] = (),
) -> None:
    """Raise a DataError naming each missing file and the split line (file:line) that needs it.

    Args:
        offsets: frame offsets each line loads (data.frame_ids; (0,) for the test split).
        needs: extra files per line: "calib", "velodyne" (scan + both calibrations), "improved".
    """
    listing = _Listing()
    problems = []
    for line in lines:
        for path, what in _line_needs(root, line, ext, offsets, needs):
            if not listing.exists(path):
                problems.append(f"{line.where}: missing {what} {path}")
                break  # one problem per line keeps the message short
    if problems:
        raise DataError(_missing_message(problems, len(lines), root, ext))


def _missing_message(problems: list[str], total: int, root: Path, ext: str) -> str:
    shown = "\n  ".join(problems[:_MAX_LISTED])
    more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
    head = f"{len(problems)} of {total} split lines need files that do not exist:\n  "
    hint = (
        f"\nCheck data.root ({root}) and data.img_ext ({ext}); neighbours come from "
        "data.frame_ids, so a split must not list the first or last frame of a drive."
    )
    return head + shown + more + hint
