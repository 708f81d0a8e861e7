"""What every runner shares: exit codes for user errors, `--set` and the `--size` parser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from depthcore.errors import ConfigError, DepthcoreError


def add_set_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set loss.w_c=0.5 (repeatable; values are YAML)",
    )


def parse_size(text: str, flag: str = "--size") -> tuple[int, int]:
    """'640x192' -> (width, height), in the paper's and Monodepth2's order.

    KITTI-like inputs are wider than tall, so a first number smaller than the second is the old
    HEIGHTxWIDTH order (runners/bench.py used it): refused, naming the corrected flag.
    """
    first, sep, second = text.strip().lower().partition("x")
    if not (sep and first.isdecimal() and second.isdecimal() and int(first) and int(second)):
        raise ConfigError(f"{flag} {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 640x192")
    width, height = int(first), int(second)
    if width < height:
        raise ConfigError(
            f"{flag} {text}: sizes are WIDTHxHEIGHT, as Monodepth2's 640x192; "
            f"did you mean {flag} {height}x{width}?"
        )
    return width, height


def run_main(main: Callable[[], int | None]) -> None:
    """Run a runner's main: user errors print one clear message and exit with their code (2 for
    config/data errors); Ctrl-C exits 130 without a traceback."""
    try:
        code = main()
    except DepthcoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        # An output path naming a file where a folder belongs, or the reverse.
        print(f"error: {exc}; choose another path", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def format_metrics(metrics_by_scale: dict[str, dict[str, float]]) -> str:
    """A small plain-text table: one row per scale, the seven metrics in paper order."""
    from depthcore.metrics import METRIC_NAMES

    head = f"{'scale':>5} " + " ".join(f"{m:>9}" for m in METRIC_NAMES)
    rows = [
        f"{scale:>5} " + " ".join(f"{values[m]:9.4f}" for m in METRIC_NAMES)
        for scale, values in sorted(metrics_by_scale.items(), key=lambda kv: int(kv[0]))
    ]
    return "\n".join([head, *rows])
