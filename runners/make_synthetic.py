"""Render synthetic KITTI-format drives: python runners/make_synthetic.py --out DIR [options]

Writes <DIR>/2000_01_01/... (images, velodyne, exact depth, calibration), <DIR>/splits/ with
train/val/test_files.txt and gt_depths.npz. Use it as KITTI data:
  --set data.dataset=kitti data.root=DIR data.split_dir=DIR/splits eval.split_dir=DIR/splits
"""

from __future__ import annotations

import argparse
import json

from depthcore.cli import parse_size, run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, help="output folder (new or empty)")
    parser.add_argument(
        "--drives",
        type=int,
        default=4,
        help="drives; the last quarter (at least one) are test drives",
    )
    parser.add_argument("--frames", type=int, default=100, help="frames per drive (default 100)")
    parser.add_argument("--size", default="1242x375", help="WIDTHxHEIGHT (default 1242x375)")
    parser.add_argument("--seed", type=int, default=0, help="scene and trajectory seed")
    parser.add_argument("--stereo", action="store_true", help="also render image_03 (0.54 m)")
    parser.add_argument("--workers", type=int, help="render processes (default: by data size)")
    args = parser.parse_args()
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1 (leave it out to choose by data size)")
    width, height = parse_size(args.size)

    from depthcore.config import config_from_dict
    from depthcore.data.synthetic import ensure_synthetic, read_marker
    from depthcore.errors import ConfigError

    flags = {"drives": "--drives", "frames": "--frames", "native_width": "--size",
             "native_height": "--size", "seed": "--seed"}  # fmt: skip
    values = {"drives": args.drives, "frames": args.frames, "native_width": width,
              "native_height": height, "seed": args.seed}  # fmt: skip
    try:  # validated like any config, but the error names this runner's flag
        syn = config_from_dict({"data": {"synthetic": values}}).data.synthetic
    except ConfigError as exc:
        message = str(exc)
        for key, flag in flags.items():
            message = message.replace(f"data.synthetic.{key}:", f"{flag} ({key}):")
        raise ConfigError(message) from None
    root = ensure_synthetic(args.out, syn, stereo=args.stereo, workers=args.workers)
    print(json.dumps({"root": str(root), **(read_marker(root) or {})}, indent=1))
    return 0


if __name__ == "__main__":
    run_main(main)
