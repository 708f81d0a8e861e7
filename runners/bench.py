"""Benchmark the training step, the loss and the data path.

  python runners/bench.py [--device cpu|cuda] [--size 192x640] [--batch B] [--steps N] [--json]
                          [--rounds R] [--ablate] [--compile [loss|networks|all]] [--pack N]
                          [--profile [ROWS]] [--trace PATH] [--set k=v ...]

Prints median samples/s of the full step (reference vs fast path) with a per-phase breakdown,
the sustained rate of steps run back to back, peak memory (and GPU utilisation on CUDA), the
loss alone, and the data path with and without the frame cache. Each variant runs in a fresh
process. --rounds R alternates the variants R times and reports the median per-round speed-up
with its range; --pack N runs N benchmarks sharing the device, their timed steps started
together, and reports their combined rate; --profile adds where the step's time goes.
"""

from __future__ import annotations

from depthcore.bench import main
from depthcore.cli import run_main

if __name__ == "__main__":
    run_main(main)
