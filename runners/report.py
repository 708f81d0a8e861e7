"""Report sweeps from a results folder, or results obtained elsewhere from a CSV.

python runners/report.py results/ [--sweep NAME ...] [--out DIR] [--format md,tex,csv,html]
python runners/report.py --import FILE.csv [--out DIR] [--dataset kitti|synthetic|other]
"""

from __future__ import annotations

import argparse

from depthcore.cli import run_main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("results", nargs="?", help="results folder (runs/ and sweeps/)")
    parser.add_argument("--import", dest="csv", metavar="FILE.csv", help="report an external CSV")
    parser.add_argument(
        "--sweep", nargs="+", metavar="NAME", help="sweeps to report (default: all)"
    )
    parser.add_argument(
        "--out", help="output folder (default: <results>/report, or beside the CSV)"
    )
    parser.add_argument("--format", default="md,tex,csv,html", help="ablation table formats")
    parser.add_argument(
        "--dataset",
        default="kitti",
        choices=("kitti", "synthetic", "other"),
        help="--import: the data the CSV's numbers come from; kitti adds Monodepth2's row",
    )
    parser.add_argument("--no-figures", action="store_true", help="tables only (fast)")
    args = parser.parse_args(argv)
    if (args.results is None) == (args.csv is None):
        parser.error("give either a results folder or --import FILE.csv")
    if args.csv and args.sweep:
        parser.error("--sweep selects sweeps of a results folder; it does not apply to --import")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from depthcore.report import build_report, import_csv

    formats, figs = args.format.split(","), not args.no_figures
    if args.csv:
        out = import_csv(args.csv, args.out, dataset=args.dataset, formats=formats, figures=figs)
    else:
        out = build_report(args.results, args.sweep, args.out, formats, figures=figs)
    print(f"report: {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_main(main)
