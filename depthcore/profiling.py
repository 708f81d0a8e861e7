"""Where a training step spends its time: torch.profiler over eager steps, by operator and by kind.

`runners/bench.py --profile` runs this on the fast path in a fresh process. Times are the
operators' self times (children excluded, so they add up): host time on CPU, kernel time on
CUDA. The step runs eagerly (a replayed CUDA graph hides its operators from the profiler), so on
CUDA the launch overhead that the graph removes is not in the kernel times either.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from depthcore.store import atomic_path

# First match wins; an operator matching none is element-wise or other small work.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("autograd bookkeeping", ("autograd::",)),  # e.g. evaluate_function: ConvolutionBackward0
    ("convolution backward", ("convolution_backward",)),
    ("convolution forward", ("convolution", "conv2d")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("warping (grid_sample)", ("grid_sampler",)),
    ("padding", ("pad",)),
    ("resizing", ("upsample", "interpolate")),
    ("matrix products", ("bmm", "mm", "matmul", "linalg")),
    ("optimiser", ("adam",)),
    ("copies and casts", ("copy_", "_to_copy", "contiguous", "clone")),
    ("data loading", ("dataloader",)),
)
OTHER = "element-wise and other"


def kind_of(op: str) -> str:
    """The kind of an operator name, e.g. 'aten::convolution_backward' -> 'convolution backward'."""
    name = op.lower()
    for kind, needles in KINDS:
        if any(n in name for n in needles):
            return kind
    return OTHER


def profile_steps(
    step: Callable[[], object],
    device: torch.device,
    *,
    steps: int,
    rows: int,
    trace: Path | None = None,
) -> dict[str, Any]:
    """Profile `steps` calls of `step` (already warmed up): the top `rows` operators and every
    kind, in ms per step and % of the profiled time.

    Args:
        step: one training step; synchronised here after each call.
        device: where the step runs; CUDA adds kernel times (and they rank the operators).
        trace: also write a Chrome trace there (chrome://tracing, Perfetto), atomically.
    """
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
            if cuda:
                torch.cuda.synchronize(device)
    if trace is not None:
        with atomic_path(trace) as tmp:
            prof.export_chrome_trace(str(tmp))
    ops = dict(_self_times(prof, cuda))
    return summarise(ops, steps=steps, rows=rows, clock="CUDA kernels" if cuda else "CPU")


def _self_times(prof: Any, cuda: bool) -> Iterator[tuple[str, tuple[float, int]]]:
    """(operator, (self time in µs, calls)) for every operator with time on the ranked clock."""
    for event in prof.key_averages():
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if us > 0:
            yield event.key, (float(us), int(event.count))


def summarise(
    ops: dict[str, tuple[float, int]], *, steps: int, rows: int, clock: str
) -> dict[str, Any]:
    """Per-step table of the top operators and of the kinds from (self µs, calls) per operator."""
    total_us = sum(us for us, _ in ops.values())
    total = total_us or 1.0  # shares of nothing are 0, not a division error
    ranked = sorted(ops.items(), key=lambda item: -item[1][0])
    kinds: dict[str, float] = defaultdict(float)
    for op, (us, _) in ops.items():
        kinds[kind_of(op)] += us
    return {
        "clock": clock,
        "steps": steps,
        "ms_per_step": total_us / 1e3 / steps,
        "operators": [
            {
                "name": op,
                "kind": kind_of(op),
                "calls_per_step": calls / steps,
                "ms_per_step": us / 1e3 / steps,
                "percent": 100 * us / total,
            }
            for op, (us, calls) in ranked[:rows]
        ],
        "kinds": [
            {"kind": kind, "ms_per_step": us / 1e3 / steps, "percent": 100 * us / total}
            for kind, us in sorted(kinds.items(), key=lambda item: -item[1])
        ],
    }


def format_profile(res: dict[str, Any]) -> str:
    """The profile as two text tables: kinds, then the top operators."""
    lines = [
        f"profile (fast path, eager, {res['steps']} steps, self time on {res['clock']}: "
        f"{res['ms_per_step']:.1f} ms/step)",
        f"  {'kind':<34}{'ms/step':>9}{'%':>7}",
    ]
    lines += [
        f"  {k['kind']:<34}{k['ms_per_step']:>9.1f}{k['percent']:>7.1f}" for k in res["kinds"]
    ]
    lines.append(f"  {'operator':<50}{'calls':>7}{'ms/step':>9}{'%':>7}")
    lines += [
        f"  {o['name'][:50]:<50}{o['calls_per_step']:>7.0f}{o['ms_per_step']:>9.1f}"
        f"{o['percent']:>7.1f}"
        for o in res["operators"]
    ]
    return "\n".join(lines)
