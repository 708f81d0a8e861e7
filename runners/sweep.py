"""Run a sweep file on Ray Tune: python runners/sweep.py SWEEP.yaml [--set k=v ...] [--dry-run]

Re-running the same command resumes: finished runs are skipped (in every sweep that shares them),
interrupted ones continue from their checkpoints. Results: RESULTS/runs/<run id>/ and
RESULTS/sweeps/<name>.yaml. Exit code 0 when every run finished, 1 if any failed, 2 for a bad
sweep file or missing KITTI data (checked before Ray starts on a local machine). Reference:
docs/sweeps.md, "Sweep-file reference".
"""

from __future__ import annotations

import argparse

from depthcore.cli import add_set_option, run_main


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("sweep", help="sweep file, e.g. sweeps/table1_ssim_m.yaml")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    add_set_option(parser)
    parser.add_argument("--dry-run", action="store_true", help="list the trials, train nothing")
    parser.add_argument("--only", metavar="TRIAL", help="train one trial in this process, no Ray")
    parser.add_argument("--address", help="join a Ray cluster (auto, HOST:6379); default: local")
    parser.add_argument("--max-concurrent", type=int, help="override the sweep's max_concurrent")
    parser.add_argument("--no-dashboard", action="store_true", help="local Ray without dashboard")
    parser.add_argument("--storage", help="Ray's storage_path (default: RESULTS/ray)")
    args = parser.parse_args()
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    if args.only is not None and not args.only.strip():
        parser.error("--only needs a trial id, label, run id or unique id prefix")
    if args.only is not None and args.dry_run:
        parser.error("--only and --dry-run do not combine: --dry-run lists every trial")

    from depthcore import store
    from depthcore.sweep import expand, load_sweep, plan_lines

    sweep = load_sweep(args.sweep, args.overrides)  # every error here comes before Ray starts
    if args.dry_run:
        trials = expand(sweep)
        runs = {t.run_id: store.run_status(store.run_path(args.results, t.run_id)) for t in trials}
        print("\n".join(plan_lines(sweep, trials, runs)))
        return 0

    if args.only is not None:
        from depthcore.trials import run_one  # no Ray: breakpoints and plain tracebacks work

        return run_one(sweep, args.only, args.results).exit_code

    from depthcore import tuning  # the only module that imports Ray

    return tuning.run_sweep(
        sweep,
        args.results,
        address=args.address,
        max_concurrent=args.max_concurrent,
        dashboard=not args.no_dashboard,
        storage=args.storage,
    ).exit_code


if __name__ == "__main__":
    run_main(main)
