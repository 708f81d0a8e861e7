"""Benchmark the training step, the loss and the data path.

  python runners/bench.py [--device cpu|cuda] [--size 640x192] [--batch B] [--steps N] [--json]
                          [--rounds R] [--ablate] [--compile [loss|networks|all]] [--pack N]
                          [--profile [ROWS]] [--trace PATH] [--set k=v ...]

Prints median samples/s of the full step (reference vs fast path) with a per-phase breakdown,
the sustained rate of steps run back to back, peak memory (and GPU utilisation on CUDA), the
loss alone, and the data path with and without the frame cache. Each variant runs in a fresh
process. --rounds R alternates the variants R times and reports the median per-round speed-up
with its range; --pack N runs N benchmarks sharing the device, their timed steps started
together, and reports their combined rate; --profile adds where the step's time goes.
Sizes are WIDTHxHEIGHT, as Monodepth2's 640x192. Exit code 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from depthcore.cli import add_set_option, parse_size, run_main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="runners/bench.py", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", default="640x192", help="WIDTHxHEIGHT (default 640x192)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the step variants, alternating (A B A B)"
    )
    parser.add_argument("--data-batches", type=int, default=20)
    parser.add_argument("--ablate", action="store_true", help="also time each speed-up alone")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="loss",
        choices=("loss", "networks", "all"),
        help="also time the fast path with train.compile=WHAT (default: loss)",
    )
    parser.add_argument("--pack", type=int, default=1, help="N processes sharing the device")
    parser.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=25,
        metavar="ROWS",
        help="also profile the fast path (eager): time by kind and the top ROWS operators (25)",
    )
    parser.add_argument(
        "--trace", type=Path, metavar="PATH", help="with --profile: write a Chrome trace there"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set_option(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    width, height = parse_size(args.size)

    from depthcore.bench import BenchOptions, Setup, format_report, run

    setup = Setup(
        device=args.device,
        width=width,
        height=height,
        batch=args.batch,
        steps=args.steps,
        warmup=args.warmup,
        overrides=tuple(args.overrides),
    )
    options = BenchOptions(
        setup=setup,
        rounds=args.rounds,
        data_batches=args.data_batches,
        ablate=args.ablate,
        compile=args.compile,
        pack=args.pack,
        profile=args.profile,
        trace=args.trace,
    )
    res = run(options)
    print(json.dumps(res) if args.json else format_report(res))
    return 0


if __name__ == "__main__":
    run_main(main)
