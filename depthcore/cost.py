"""What a run cost: wall time per phase, throughput, peak memory and device-hours.

A run is trained in one or more *segments* (one per process that trained it: the first one and
each resume). `CostMeter` times the current segment at the engine's phase boundaries and log
points and persists the run's cost (all segments) to `cost.json` in the run folder, so a killed
segment's time is known from its last "seen" time. Definitions (docs/compute.md):

- wall_s: sum over segments of (last seen - start); setup_s + train_s + eval_s <= wall_s.
- lost_s: in segments that ended early, the time after their last checkpoint (redone on resume);
  none in a segment a sweep's scheduler stopped (at a checkpoint, by design).
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from depthcore import store
from depthcore.errors import ConfigError

PHASES = ("setup", "train", "eval")
# How a segment ended; "running" in a file read back at resume means its process was killed.
ENDS = ("running", "finished", "stopped", "interrupted", "failed", "killed")


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
        """Work after the last checkpoint, redone on resume; none for a finished segment, nor
        for one a sweep's scheduler stopped (at a checkpoint, with nothing to redo)."""
        if self.end in ("running", "finished", "stopped"):
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


def summarize(kind: str, name: str, share: float, segments: list[Segment]) -> dict[str, Any]:
    """The run's cost over all its segments, as plain data (trained.json's `cost`)."""
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
        "device_hours": wall * share / 3600,
        "segments": len(segments),
    }


@dataclass
class CostMeter:
    """The current segment's clock, and the earlier segments read back from cost.json."""

    run_dir: Path
    run_id: str
    kind: str
    name: str
    share: float
    previous: list[Segment] = field(default_factory=list)
    current: Segment = field(default_factory=lambda: Segment(time.time(), time.time()))
    _open: tuple[str, float] | None = None  # the phase being timed and its perf_counter start

    @classmethod
    def start(
        cls, run_dir: Path, run_id: str, kind: str, name: str, share: float, *, setup_since: float
    ) -> CostMeter:
        """Begin a segment whose setup phase began at perf_counter() `setup_since`; earlier
        segments still marked running were killed (they ended when last seen). Segments of
        another run (a reused folder where nothing was trained) are not this run's cost."""
        state = store.read_cost(run_dir) or {}
        old = state.get("log", []) if state.get("run_id") == run_id else []
        previous = [_segment(s) for s in old]
        for seg in previous:
            if seg.end == "running":
                seg.end = "killed"
        started = time.time() - (time.perf_counter() - setup_since)
        meter = cls(Path(run_dir), run_id, kind, name, check_share(share), previous)
        meter.current = Segment(started, started)
        meter._open = ("setup", setup_since)
        meter.save()  # the segment exists on disk from its start
        return meter

    def phase(self, name: str | None) -> None:
        """End the phase being timed and start `name` (one of PHASES; None: untimed work)."""
        if self._open is not None:
            self._add(self._open[0], time.perf_counter() - self._open[1])
        self._open = (name, time.perf_counter()) if name is not None else None

    def _add(self, phase: str, seconds: float) -> None:
        attr = f"{phase}_s"
        setattr(self.current, attr, getattr(self.current, attr) + seconds)

    def seen(self, samples: int, peak_memory_mb: float) -> dict[str, Any]:
        """A log point: the segment is alive; persist so a kill loses only the time since.
        `samples`: trained in this segment so far. Returns the run's cost so far."""
        self.current.samples = samples
        self.current.peak_memory_mb = max(self.current.peak_memory_mb, peak_memory_mb)
        return self.save()

    def checkpointed(self) -> None:
        self.current.checkpoint_at = time.time()
        self.save()

    def close(self, end: str) -> dict[str, Any]:
        """End the segment (one of ENDS) and return the run's cost."""
        self.phase(None)
        self.current.end = end
        return self.save()

    def save(self) -> dict[str, Any]:
        """Persist every segment, the current one as of now (its open phase included)."""
        self.current.last_seen = time.time()
        now = replace(self.current)
        if self._open is not None:
            attr = f"{self._open[0]}_s"
            setattr(now, attr, getattr(now, attr) + time.perf_counter() - self._open[1])
        segments = [*self.previous, now]
        summary = summarize(self.kind, self.name, self.share, segments)
        log = [asdict(s) for s in segments]
        store.write_cost(self.run_dir, {**summary, "run_id": self.run_id, "log": log})
        return summary


def _segment(raw: Any) -> Segment:
    """A segment read back; unknown keys (a newer writer) are ignored."""
    known = {k: v for k, v in (raw if isinstance(raw, dict) else {}).items() if k in FIELDS}
    now = time.time()
    known.setdefault("started", now)
    known.setdefault("last_seen", known["started"])
    return Segment(**known)


FIELDS = tuple(Segment.__dataclass_fields__)
