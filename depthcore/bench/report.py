"""The benchmark's result (`suite.run`) as human-readable tables."""

from __future__ import annotations

from typing import Any

from depthcore.bench.timing import PHASES
from depthcore.profiling import format_profile


def format_report(res: dict[str, Any]) -> str:
    """Human-readable tables of `run`'s result."""
    width, height = res["size"]
    lines = [f"device {res['device_name']}, {width}x{height}, batch {res['batch']}"]
    lines += _step_table(res["steps"])
    ok = [s for s in res["steps"] if "error" not in s]
    if res.get("rounds", 1) > 1:
        lines.append(f"per round (samples/s, {res['rounds']} rounds alternating the variants):")
        for s in ok:
            lines.append(f"  {s['variant']:<28} " + " ".join(
                f"{v:.2f}" for v in s["round_samples_per_s"]
            ))  # fmt: skip
    lines.append("breakdown (ms, synchronised, eager): " + " | ".join(PHASES))
    for s in ok:
        parts = " | ".join(f"{s['breakdown_ms'][p]:.1f}" for p in PHASES)
        lines.append(f"  {s['variant']:<28} {parts}")
    lines += _speedup_lines(res)
    lines += _loss_and_data_lines(res)
    lines += _pack_and_profile_lines(res)
    return "\n".join(lines)


def _step_table(steps: list[dict[str, Any]]) -> list[str]:
    lines = [
        f"{'full step':<30}{'samples/s':>10}{'ms/step':>9}{'sustained':>10}{'peak MB':>9}"
        f"{'GPU %':>7}"
    ]
    for s in steps:
        if "error" in s:
            lines.append(f"{s['variant']:<30}failed: {s['error']}")
            continue
        util = "-" if s["gpu_util_percent"] is None else f"{s['gpu_util_percent']:.0f}"
        lines.append(
            f"{s['variant']:<30}{s['samples_per_s']:>10.1f}{s['step_ms']:>9.1f}"
            f"{s['sustained_samples_per_s']:>10.1f}{s['peak_memory_mb']:>9.0f}{util:>7}"
        )
    lines.append(
        "  (median of synchronised steps; sustained: samples/s of steps run back to back, as in"
        " training; GPU %: during those)"
    )
    return lines


def _speedup_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    speedups = res.get("speedups") or {"fast": res.get("step_speedup")}
    for name, up in speedups.items():
        if not up:
            continue
        line = f"{name} / reference full step: {up['median']:.2f}x"
        if res.get("rounds", 1) > 1:
            line += f" (median of {res['rounds']} rounds, range {up['min']:.2f}-{up['max']:.2f})"
        lines.append(line)
    return lines


def _loss_and_data_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    if "loss_samples_per_s" in res:
        loss = res["loss_samples_per_s"]
        lines.append(
            f"loss alone ({res['loss']}): reference {loss['reference']:.1f}, fast "
            f"{loss['fast']:.1f} samples/s ({loss['fast'] / loss['reference']:.2f}x)"
        )
        if "fast+compiled" in loss:
            lines.append(
                f"loss alone, compiled: {loss['fast+compiled']:.1f} samples/s "
                f"({loss['fast+compiled'] / loss['reference']:.2f}x)"
            )
    if "data_samples_per_s" in res:
        data = res["data_samples_per_s"]
        lines.append(
            f"data path alone: decode+resize {data['decode']:.1f}, cache {data['cache']:.1f} "
            f"samples/s ({data['speedup']:.1f}x)"
        )
    return lines


def _pack_and_profile_lines(res: dict[str, Any]) -> list[str]:
    lines = []
    if "pack" in res and "error" in res["pack"]:
        lines.append(f"{res['pack']['processes']} packed processes: failed: {res['pack']['error']}")
    elif "pack" in res:
        pack = res["pack"]
        each = ", ".join(f"{v:.1f}" for v in pack["samples_per_s_each"])
        util = pack["gpu_util_percent"]
        lines.append(
            f"{pack['processes']} packed processes (sustained, started together): {each} -> "
            f"{pack['combined_samples_per_s']:.1f} samples/s combined, timed windows overlap "
            f"{100 * pack['overlap']:.0f} %" + ("" if util is None else f", GPU {util:.0f} %")
        )
    if "profile" in res and "error" in res["profile"]:
        lines.append(f"profile: failed: {res['profile']['error']}")
    elif "profile" in res:
        lines.append(format_profile(res["profile"]))
    return lines
