"""What a timed block used besides time: GPU utilisation, the resident set, peak memory."""

from __future__ import annotations

import contextlib
import os
import resource
import statistics
import subprocess
import threading
from collections.abc import Callable

import torch


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device, sampled_rss_mb: float | None) -> float:
    """CUDA: peak allocated by this variant. CPU: the largest resident set sampled during its
    timed steps (the process's lifetime maximum would also count the data set-up)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sampled_rss_mb is not None:
        return sampled_rss_mb
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Sampler:
    """Every 100 ms during a block: GPU utilisation (%, NVML or nvidia-smi) on CUDA, the
    resident set size on CPU. `util` is the mean utilisation, `rss_mb` the largest RSS."""

    def __init__(self, device: torch.device) -> None:
        self.util: float | None = None
        self.rss_mb: float | None = None
        self._utils: list[float] = []
        self._rss: list[float] = []
        self._stop = threading.Event()
        self._read = _nvml_reader(device) if device.type == "cuda" else None
        self._rss_ok = device.type == "cpu" and os.path.exists("/proc/self/statm")
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        if self._read is not None:
            with contextlib.suppress(Exception):
                self._utils.append(self._read())
        if self._rss_ok:
            self._rss.append(_rss_mb())

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.util = statistics.fmean(self._utils) if self._utils else None
        self.rss_mb = max(self._rss) if self._rss else None


def _nvml_reader(device: torch.device) -> Callable[[], float] | None:
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no NVML bindings: fall back to the CLI
        query = [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        return lambda: float(
            subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
        )
