"""Evaluate a run folder or a Monodepth2 model folder with the Eigen protocol.

  python runners/evaluate.py --weights DIR [--config CFG.yaml] [--set k=v ...] [--scales 0 1 2 3]
                             [--out DIR] [--json FILE]

A trained run folder gets the evaluation recorded in DIR/evals/<eval id>/ (final.json,
per_image.csv, predictions.npz, eval.yaml), where a sweep asking for the same eval.* keys finds it
and the report reads it. --out DIR records it in DIR instead (the only place for a Monodepth2
folder's or an unfinished run's records). A Monodepth2 folder (encoder.pth, depth.pth, ...) needs
the data keys, e.g.
  --set data.dataset=kitti --set data.root=kitti_data
"""

from __future__ import annotations

import argparse
import json

from depthcore.cli import add_set_option, format_metrics, run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--weights", required=True, help="run folder or Monodepth2 model folder")
    parser.add_argument("--config", help="config YAML (default: the run folder's config.yaml)")
    parser.add_argument(
        "--scales", type=int, nargs="+", help="decoder scales (default: eval.scales)"
    )
    parser.add_argument(
        "--out", help="record the evaluation here (default: a trained run's evals/<eval id>/)"
    )
    parser.add_argument("--json", help="also write the metrics per scale to this JSON file")
    add_set_option(parser)
    args = parser.parse_args()

    from depthcore import store
    from depthcore.evaluate import evaluate_weights

    done = evaluate_weights(
        args.weights,
        config=args.config,
        overrides=args.overrides,
        scales=args.scales,
        out=args.out,
    )
    result = done.evaluation
    by_scale = {str(s): m for s, m in result.metrics_by_scale.items()}
    print(f"{result.n_images} images")
    print(format_metrics(by_scale))
    if done.folder is not None:
        print(f"evaluation {done.cfg.eval_id()} recorded in {done.folder}")
    else:
        print(f"not recorded: {done.note}")
    if args.json:
        store.write_json_atomic(
            args.json, {"n_images": result.n_images, "metrics_by_scale": by_scale}
        )
        print(json.dumps({"written": args.json}))
    return 0


if __name__ == "__main__":
    run_main(main)
