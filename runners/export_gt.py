"""Export ground-truth depth for a split, like Monodepth2's export_gt_depth.py:

  python runners/export_gt.py --data-root ROOT --split-file test_files.txt --out gt_depths.npz

--source velodyne (default, the Eigen protocol): the velodyne scans projected into camera 2 at
native resolution, velodyne-x depth, nearest point per pixel. --source improved: the KITTI depth
benchmark's proj_depth/groundtruth PNGs / 256 (Monodepth2's eigen_benchmark split).
A split file that does not exist is looked up among the bundled splits (e.g. eigen/test_files.txt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from depthcore.cli import run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-root", required=True, help="KITTI raw root (date folders)")
    parser.add_argument("--split-file", required=True, help="split file, e.g. test_files.txt")
    parser.add_argument("--out", required=True, help="output .npz (written atomically)")
    parser.add_argument("--source", choices=("velodyne", "improved"), default="velodyne")
    parser.add_argument(
        "--camera-depth", action="store_true", help="camera z instead of velodyne x (velodyne)"
    )
    args = parser.parse_args()

    from depthcore.data.gt import export_gt
    from depthcore.data.kitti import BUNDLED_SPLITS

    split = Path(args.split_file)
    if not split.is_file() and (BUNDLED_SPLITS / split).is_file():
        split = BUNDLED_SPLITS / split
    n = export_gt(
        args.data_root, split, args.out, source=args.source, vel_depth=not args.camera_depth
    )
    print(f"wrote {n} depth maps ({args.source}) for {split} to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
