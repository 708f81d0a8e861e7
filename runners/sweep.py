"""Run a sweep file on Ray Tune: python runners/sweep.py SWEEP.yaml [--set k=v ...] [--dry-run]

Re-running the same command resumes: finished runs are skipped (in every sweep that shares them),
interrupted ones continue from their checkpoints; trained runs asked for another evaluation
(other eval.* keys) are evaluated without training. Results: RESULTS/runs/<run id>/ and
RESULTS/sweeps/<name>.yaml. Exit code 0 when every run finished, 1 if any failed or is unfinished,
2 where the pre-flight stops it before anything is written: a bad sweep file, missing KITTI data,
a budget the estimate exceeds, a sweep name another sweep file uses, resources this machine lacks
(--dry-run prints every check, and exits 2 where a real start would stop). A sweep with a
scheduler stops trials early; --promote TRIAL... (or --promote top:K) trains stopped trials to
full length from their checkpoints. Reference: docs/sweeps.md, "Sweep-file reference",
"Pre-flight" and "Early stopping".
"""

from __future__ import annotations

import argparse
import sys

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
    parser.add_argument(
        "--promote",
        nargs="+",
        metavar="TRIAL",
        help="train these trials the scheduler stopped early to full length (ids, or top:K)",
    )
    parser.add_argument("--address", help="join a Ray cluster (auto, HOST:6379); default: local")
    parser.add_argument("--max-concurrent", type=int, help="override the sweep's max_concurrent")
    parser.add_argument("--no-dashboard", action="store_true", help="local Ray without dashboard")
    parser.add_argument("--storage", help="Ray's storage_path (default: RESULTS/ray)")
    parser.add_argument(
        "--calibrate", action="store_true", help="time run shapes of unknown cost here first"
    )
    parser.add_argument("--budget", type=float, metavar="H", help="override budget.device_hours")
    parser.add_argument(
        "--gpus", type=int, metavar="N", help="use at most N GPUs at once (default: here)"
    )
    parser.add_argument(
        "--cpus", type=int, metavar="N", help="use at most N CPUs at once (default: here)"
    )
    args = parser.parse_args()
    if args.max_concurrent is not None and args.max_concurrent < 1:
        parser.error("--max-concurrent must be >= 1")
    if args.only is not None and not args.only.strip():
        parser.error("--only needs a trial id, label, run id or unique id prefix")
    if args.only is not None and args.dry_run:
        parser.error("--only and --dry-run do not combine: --dry-run lists every trial")
    if args.calibrate and args.only is not None:
        parser.error("--calibrate estimates a whole sweep; --only trains one trial")
    if args.budget is not None and not args.budget > 0:
        parser.error("--budget must be a number of device-hours > 0, e.g. --budget 80")
    if any(n is not None and n < 1 for n in (args.gpus, args.cpus)):
        parser.error("--gpus and --cpus must be >= 1")
    if args.promote is not None:
        clash = [f for f, on in (("--only", args.only), ("--calibrate", args.calibrate),
                                 ("--budget", args.budget is not None)) if on]  # fmt: skip
        if clash:
            parser.error(f"--promote trains the stopped trials it names; drop {clash[0]}")
        return promote(args)

    from depthcore.preflight import Options, preflight
    from depthcore.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)  # every error here comes before Ray starts
    opts = Options(
        results=args.results,
        dry_run=args.dry_run,
        calibrate=args.calibrate,
        budget=args.budget,
        cpus=args.cpus,
        gpus=args.gpus,
        max_concurrent=args.max_concurrent,
        address=args.address,
        only=args.only,
        command=tuple(sys.argv),
    )
    start = preflight(sweep, opts)  # the estimate and checks; nothing written yet
    if args.dry_run:
        return 0

    if args.only is not None:
        from depthcore.trials import run_one  # no Ray: breakpoints and plain tracebacks work

        return run_one(sweep, args.only, args.results).exit_code

    from depthcore import tuning  # the only module that imports Ray

    return tuning.run_sweep(
        sweep,
        args.results,
        address=args.address,
        max_concurrent=start.max_concurrent,
        dashboard=not args.no_dashboard,
        storage=args.storage,
        budget=start.gate,
        estimate=start.estimate,
        command=opts.command,
    ).exit_code


def promote(args: argparse.Namespace) -> int:
    """--promote: the stopped trials named (exit 2 for one that is unknown or not stopped),
    then (unless --dry-run) trained to full length on Ray."""
    from depthcore.stopping import select_promotions
    from depthcore.sweep import load_sweep

    sweep = load_sweep(args.sweep, args.overrides)
    chosen = select_promotions(sweep, args.results, args.promote)
    if args.dry_run:
        print(f"{sweep.name}: --promote would train {len(chosen)} stopped trials to full length:")
        for promotion in chosen:
            print(promotion.line())
        return 0

    from depthcore import tuning

    return tuning.promote_trials(
        sweep,
        args.results,
        args.promote,
        address=args.address,
        max_concurrent=args.max_concurrent,
        dashboard=not args.no_dashboard,
        storage=args.storage,
        command=tuple(sys.argv),
    ).exit_code


if __name__ == "__main__":
    run_main(main)
