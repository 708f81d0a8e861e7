"""Train one model: python runners/train.py CONFIG.yaml [--set k=v ...] [--out DIR]

Without --out the run goes to results/runs/<run id>; a folder holding a checkpoint resumes, and a
trained run with other eval.* keys is only evaluated (into <run>/evals/<eval id>/).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from depthcore.cli import add_set_option, format_metrics, run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("config", nargs="?", help="engine config YAML (default: built-in defaults)")
    parser.add_argument("--out", help="run folder (default: results/runs/<run id>)")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    add_set_option(parser)
    args = parser.parse_args()

    from depthcore import store
    from depthcore.config import load_config
    from depthcore.engine import train

    cfg = load_config(args.config, args.overrides)
    run_dir = Path(args.out) if args.out else store.run_path(args.results, cfg.run_id())
    print(f"run {cfg.run_id()} -> {run_dir}")
    if store.read_trained(run_dir) is not None:
        print(f"trained already: evaluation {cfg.eval_id()} only (no training)")
    final = train(cfg, run_dir, progress=True)
    print(format_metrics(final["metrics_by_scale"]))
    print(json.dumps({k: final[k] for k in ("n_images", "epochs", "steps", "wall_time_s")}))
    return 0


if __name__ == "__main__":
    run_main(main)
