"""Predict depth for images: python runners/predict.py --weights DIR IMAGE... --out DIR

Writes <stem>_disp.npy (scaled disparity at network resolution, as Monodepth2's test_simple)
and <stem>_disp.png (magma colour map at the image's size) for each image.
"""

from __future__ import annotations

import argparse

from depthcore.cli import add_set_option, run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="run folder or Monodepth2 model folder")
    parser.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    add_set_option(parser)
    args = parser.parse_args()

    from depthcore.device import resolve_device
    from depthcore.predict import predict_files
    from depthcore.weights import load_weights

    models, cfg = load_weights(args.weights, overrides=args.overrides)
    models.to(resolve_device(args.device))
    written = predict_files(models, args.images, args.out, cfg_model=cfg.model, cfg_data=cfg.data)
    print(f"wrote {len(written)} files to {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
