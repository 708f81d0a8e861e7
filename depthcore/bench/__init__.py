"""Benchmarks of the training step, the loss and the data path (runners/bench.py).

Every number is a median over timed repetitions after warm-up. The full step is data → forward →
loss → backward → optimiser, timed end to end (synchronised per step); the sustained rate runs
the same steps back to back with one synchronisation at the end, as the training loop does. The
breakdown times the same step with a synchronisation between phases. The *reference* path is
the straightforward Monodepth2 recipe: images decoded and resized for every sample (no frame
cache), identity reprojection recomputed at every scale, one pooling call per SSIM statistic,
one pose-network pass per frame pair, plain Adam, and on CPU the C allocator as it is. The
*fast* path switches all of these speed-ups on; `--ablate` times the main ones alone.
Every timed variant runs in a fresh process: process-wide state (the C allocator's settings,
compiled-code caches, the CUDA caching allocator) never carries over from one variant to the
next. With several rounds the variants alternate (A B A B ...) and the speed-up is the median
of the per-round ratios, so a slow spell of a shared machine does not favour one variant.

Modules, one job each: `variants` (what runs: `Variant`, `Setup`, `BenchOptions`, the config),
`timing` (timing in one process), `sampling` (utilisation and memory during a timed block),
`processes` (fresh processes, rounds, packed runs with the READY/GO handshake), `worker` (the
fresh process's entry point), `suite` (the whole benchmark) and `report` (its tables).
"""

from __future__ import annotations

from depthcore.bench.processes import (
    PACK_GO,
    PACK_READY,
    bench_pack,
    bench_rounds,
    combine_windows,
    speedup,
    step_in_process,
    step_output,
    wait_ready,
)
from depthcore.bench.report import format_report
from depthcore.bench.suite import run
from depthcore.bench.timing import (
    PHASES,
    StepResult,
    Window,
    bench_data,
    bench_loss,
    bench_step,
    sustained_steps,
)
from depthcore.bench.variants import (
    FAST,
    REFERENCE,
    BenchOptions,
    Setup,
    Variant,
    bench_config,
    step_variants,
)

__all__ = [
    "FAST",
    "PACK_GO",
    "PACK_READY",
    "PHASES",
    "REFERENCE",
    "BenchOptions",
    "Setup",
    "StepResult",
    "Variant",
    "Window",
    "bench_config",
    "bench_data",
    "bench_loss",
    "bench_pack",
    "bench_rounds",
    "bench_step",
    "combine_windows",
    "format_report",
    "run",
    "speedup",
    "step_in_process",
    "step_output",
    "step_variants",
    "sustained_steps",
    "wait_ready",
]
