"""Benchmarks in fresh processes (`python -m depthcore.bench.worker SPEC`): process-wide state (the
C allocator's settings, compiled-code caches, the CUDA caching allocator) never carries over from
one variant to the next. Alternating rounds, and packed processes started together by a READY/GO
handshake on their stdin and stdout."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from depthcore.bench.variants import FAST, Setup, Variant

# A packed process's line when warmed up, and the parent's answer that starts its timed steps.
PACK_READY, PACK_GO = "READY", "GO"


def worker_spec(setup: Setup, variant: Variant, *, breakdown: bool, **extra: Any) -> str:
    """The worker's one argument: what to time, as JSON (`worker.run_spec` reads it)."""
    return json.dumps(
        {"setup": asdict(setup), "variant": asdict(variant), "breakdown": breakdown, **extra}
    )


def worker_command(setup: Setup, variant: Variant, *, breakdown: bool, **extra: Any) -> list[str]:
    spec = worker_spec(setup, variant, breakdown=breakdown, **extra)
    return [sys.executable, "-m", "depthcore.bench.worker", spec]


def step_in_process(
    setup: Setup, variant: Variant, *, breakdown: bool = True, **extra: Any
) -> dict[str, Any]:
    """`bench_step` of one variant in a fresh Python process (`profile_variant` with `extra`
    profile settings): its result as a dict, or {"variant", "error"} if it failed."""
    cmd = worker_command(setup, variant, breakdown=breakdown, **extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return step_output(variant, proc.returncode, proc.stdout, proc.stderr)


def profile_in_process(setup: Setup, rows: int, trace: Path | None) -> dict[str, Any]:
    """`profile_variant` of the fast path in a fresh Python process, or {"error"}."""
    trace_arg = None if trace is None else str(trace)
    return step_in_process(setup, FAST, breakdown=False, profile=rows, trace=trace_arg)


def step_output(variant: Variant, code: int, stdout: str, stderr: str) -> dict[str, Any]:
    """A worker's result: the JSON of its last stdout line, or {"variant", "error"} naming the
    last line of its stderr (where run_main puts the one-line error)."""
    lines = stdout.strip().splitlines()
    if code != 0 or not lines:
        tail = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
        return {"variant": variant.name, "error": f"benchmark process failed: {tail[0]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def bench_rounds(setup: Setup, variants: Sequence[Variant], *, rounds: int) -> list[dict[str, Any]]:
    """Each variant `rounds` times, alternating (A B A B ...), so that a slow spell of a shared
    machine hits every variant alike; each time in a fresh process (`step_in_process`).
    Samples/s is the median over all timed steps; the breakdown comes from the first round;
    peak memory is the largest of the rounds."""
    per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            per_variant[v.name].append(step_in_process(setup, v, breakdown=r == 0))
    return [_merge_rounds(per_variant[v.name], setup.batch) for v in variants]


def _merge_rounds(results: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    merged = dict(results[0])
    times = [t for r in results for t in r["step_times_s"]]
    step_s = statistics.median(times)
    utils = [r["gpu_util_percent"] for r in results if r["gpu_util_percent"] is not None]
    merged.update(
        samples_per_s=batch / step_s,
        step_ms=1e3 * step_s,
        peak_memory_mb=max(r["peak_memory_mb"] for r in results),
        gpu_util_percent=statistics.fmean(utils) if utils else None,
        sustained_samples_per_s=statistics.median(r["sustained_samples_per_s"] for r in results),
        round_samples_per_s=[r["samples_per_s"] for r in results],
    )
    del merged["step_times_s"]
    return merged


def speedup(reference: dict[str, Any], fast: dict[str, Any]) -> dict[str, float] | None:
    """fast / reference samples/s: the median of the per-round ratios, and their range."""
    if "error" in reference or "error" in fast:
        return None
    ratios = [
        f / r
        for r, f in zip(reference["round_samples_per_s"], fast["round_samples_per_s"], strict=True)
    ]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def bench_pack(setup: Setup, n: int) -> dict[str, Any]:
    """Run `n` fast-path benchmarks at once on the same device (fractional-GPU packing, as
    Ray's `resources: {gpu: 1/n}` would), each in its own process. All warm up first (setup,
    compilation and graph capture take different times), then start their timed steps together;
    combined samples/s = all samples / (last end - first start), and `overlap` is the share of
    that span during which all of them were timing (near 1: the sum is honest)."""
    cmd = worker_command(setup, FAST, breakdown=False, packed=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n))}
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(n)]
        procs = [
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=e, text=True, env=env
            )
            for e in errs
        ]
        ready = [wait_ready(p) for p in procs]
        for proc in procs:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # it died since; its error says why
                if all(ready):
                    proc.stdin.write(PACK_GO + "\n")
                proc.stdin.close()  # without GO a waiting process stops with an error
        outs = [_rest_of_output(p) for p in procs]
        results = []
        for proc, out, err in zip(procs, outs, errs, strict=True):
            err.seek(0)
            results.append(step_output(FAST, proc.returncode, out, err.read()))
    # The cause first: a process that never got ready, not the others it left waiting.
    by_cause = sorted(zip(ready, results, strict=True), key=lambda pair: pair[0])
    failed = [r["error"] for _, r in by_cause if "error" in r]
    if failed:
        return {"processes": n, "error": failed[0]}
    return combine_windows(results)


def wait_ready(proc: subprocess.Popen[str]) -> bool:
    """Read the process's output up to its READY line; False if it ended first."""
    assert proc.stdout is not None
    return any(line.strip() == PACK_READY for line in proc.stdout)


def _rest_of_output(proc: subprocess.Popen[str]) -> str:
    # Not communicate(): it would flush the stdin this function's caller has closed.
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait()
    return out


def combine_windows(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Packed processes' sustained windows -> each one's samples/s and the combined rate."""
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    common = min(r["end"] for r in results) - max(r["start"] for r in results)
    utils = [r["gpu_util"] for r in results if r["gpu_util"] is not None]
    return {
        "processes": len(results),
        "samples_per_s_each": [r["samples"] / r["seconds"] for r in results],
        "combined_samples_per_s": sum(r["samples"] for r in results) / span,
        "overlap": max(0.0, common) / span,
        "gpu_util_percent": statistics.fmean(utils) if utils else None,
    }
