"""What a run cost: wall time per phase, throughput, peak memory and device-hours.

A run is trained in one or more *segments* (one per process that trained it: the first one and
each resume). `CostMeter` times the current segment at the engine's phase boundaries and log
points and persists the run's cost (all segments) to `cost.json` in the run folder, so a killed
segment's time is known from its last "seen" time. Definitions (docs/compute.md):

- wall_s: sum over segments of (last seen - start); setup_s + train_s + eval_s <= wall_s.
- lost_s: in segments that ended early, the time after their last checkpoint (redone on resume).
- share: the fraction of the device the run held (Ray's resources.gpu, or CPU cores / machine).
- device_hours = wall_s x share / 3600.

This module imports neither torch nor Ray (the report and the sweep runner read costs).
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from depthcore import store
from depthcore.errors import ConfigError

PHASES = ("setup", "train", "eval")
# How a segment ended; "running" in a file read back at resume means its process was killed.
ENDS = ("running", "finished", "interrupted", "failed", "killed")


@dataclass
class Segment:
    """One process's share of a run. Times are Unix seconds; durations seconds."""

    started: float
    last_seen: float
    checkpoint_at: float | None = None  # when this segment last wrote a checkpoint
    setup_s: float = 0.0
    train_s: float = 0.0
    eval_s: float = 0.0
    samples: int = 0
    peak_memory_mb: float = 0.0
    end: str = "running"

    @property
    def wall_s(self) -> float:
        return max(0.0, self.last_seen - self.started)

    @property
    def lost_s(self) -> float:
        """Work after the last checkpoint, redone on resume; none for a finished segment."""
        if self.end in ("running", "finished"):
            return 0.0
        since = self.checkpoint_at if self.checkpoint_at is not None else self.started
        return max(0.0, self.last_seen - since)


def device_label(kind: str, name: str) -> str:
    """`cuda:NVIDIA H200`, `cpu:2 cores`."""
    return f"{kind}:{name}"


def cpu_name() -> str:
    return f"{os.cpu_count() or 1} cores"


def default_share(kind: str, threads: int) -> float:
    """A whole GPU, or the cores the process computes with over the machine's cores."""
    if kind != "cpu":
        return 1.0
    return min(1.0, max(1, threads) / (os.cpu_count() or 1))


def check_share(share: float) -> float:
    if not (isinstance(share, (int, float)) and math.isfinite(share) and share > 0):
        raise ConfigError(
            f"device_share={share!r}: must be a finite number > 0 (the fraction of the device "
            "the run holds, e.g. Ray's resources.gpu=0.5); pass None for the default"
        )
    return float(share)


def host_peak_memory_mb() -> float:
    """The process's peak resident memory (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def summarize(
    kind: str, name: str, share: float, segments: list[Segment]
) -> dict[str, Any]:
    """The run's cost over all its segments, as plain data (final.json's `cost`)."""
    total = {p: sum(getattr(s, f"{p}_s") for s in segments) for p in PHASES}
    wall = sum(s.wall_s for s in segments)
    samples = sum(s.samples for s in segments)
    return {
        "device": device_label(kind, name),
        "device_kind": kind,
        "device_name": name,
        "share": share,
        "wall_s": round(wall, 3),
        **{f"{p}_s": round(v, 3) for p, v in total.items()},
        "lost_s": round(sum(s.lost_s for s in segments), 3),
        "samples": samples,
        "samples_per_s": round(samples / total["train"], 3) if total["train"] > 0 else None,
        "peak_memory_mb": round(max((s.peak_memory_mb for s in segments), default=0.0), 1),
        "device_hours": round(wall * share / 3600, 6),
        "segments": len(segments),
    }


@dataclass
class CostMeter:
    """The current segment's clock, and the earlier segments read back from cost.json."""

    run_dir: Path
    kind: str
    name: str
    share: float
    previous: list[Segment] = field(default_factory=list)
    current: Segment = field(default_factory=lambda: Segment(time.time(), time.time()))

    @classmethod
    def start(cls, run_dir: Path, kind: str, name: str, share: float) -> CostMeter:
        """Begin a segment; earlier ones still marked running were killed (ended when last seen)."""
        previous = [_segment(s) for s in (store.read_cost(run_dir) or {}).get("log", [])]
        for seg in previous:
            if seg.end == "running":
                seg.end = "killed"
        return cls(Path(run_dir), kind, name, check_share(share), previous)

    def add(self, phase: str, seconds: float) -> None:
        attr = f"{phase}_s"
        setattr(self.current, attr, getattr(self.current, attr) + seconds)

    def seen(self, samples: int, peak_memory_mb: float) -> None:
        """A log point: the segment is alive; persist so a kill loses only the time since."""
        self.current.samples = samples
        self.current.peak_memory_mb = max(self.current.peak_memory_mb, peak_memory_mb)
        self.save()

    def checkpointed(self) -> None:
        self.current.checkpoint_at = time.time()
        self.save()

    def close(self, end: str) -> dict[str, Any]:
        self.current.end = end
        return self.save()

    def summary(self) -> dict[str, Any]:
        return summarize(self.kind, self.name, self.share, [*self.previous, self.current])

    def save(self) -> dict[str, Any]:
        self.current.last_seen = time.time()
        summary = self.summary()
        log = [asdict(s) for s in (*self.previous, self.current)]
        store.write_cost(self.run_dir, {**summary, "log": log})
        return summary


def _segment(raw: Any) -> Segment:
    """A segment read back; unknown keys (a newer writer) are ignored."""
    known = {k: v for k, v in (raw if isinstance(raw, dict) else {}).items() if k in FIELDS}
    now = time.time()
    known.setdefault("started", now)
    known.setdefault("last_seen", known["started"])
    return Segment(**known)


FIELDS = tuple(Segment.__dataclass_fields__)
