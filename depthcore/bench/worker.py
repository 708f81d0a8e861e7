"""One timed job in a fresh process: python -m depthcore.bench.worker SPEC.

SPEC is the JSON that `processes.worker_spec` writes: the shared `Setup`, the `Variant`, and what
to do with it (a step benchmark, a packed run that says READY and waits for GO, or a profile).
The result is printed as one JSON line; an error as run_main's one line on stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from depthcore.bench.timing import bench_packed, guarded_step, profile_variant
from depthcore.bench.variants import Setup, Variant
from depthcore.errors import ConfigError


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The job `spec` describes, run in this process: its result as a dict."""
    setup = Setup(**{**spec["setup"], "overrides": tuple(spec["setup"]["overrides"])})
    variant, cfg = Variant(**spec["variant"]), setup.config()
    steps, warmup = setup.steps, setup.warmup
    if spec.get("packed"):
        return bench_packed(cfg, variant, steps=steps, warmup=warmup)
    rows, trace = spec.get("profile"), spec.get("trace")
    if rows:
        path = None if trace is None else Path(trace)
        return profile_variant(cfg, variant, steps=steps, warmup=warmup, rows=rows, trace=path)
    return guarded_step(cfg, variant, steps, warmup, breakdown=spec["breakdown"])


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        raise ConfigError("usage: python -m depthcore.bench.worker SPEC (one JSON argument)")
    print(json.dumps(run_spec(json.loads(args[0]))))
    return 0


if __name__ == "__main__":
    from depthcore.cli import run_main

    run_main(main)
