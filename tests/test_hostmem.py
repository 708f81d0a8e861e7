"""depthcore.hostmem: freed tensor memory stays mapped, so the next step's tensors cost no page
faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# A fresh process: the setting is process-wide and cannot be undone. Each "step" holds tensors
# of 4 to 64 MiB together, as a training step's activations, then frees them; 64 MiB is above
# glibc's largest automatic mmap threshold, so without the setting each is mapped anew.
SIZES = [2**20, 4 * 2**20, 10 * 2**20, 16 * 2**20, 3 * 2**20]  # float32 elements
PROBE = f"""
import resource, torch
from depthcore.hostmem import keep_freed_memory

SIZES = {SIZES}

def step_faults(n=5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        held = [torch.ones(s) for s in SIZES]
        del held
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

step_faults(2)
system = step_faults()
applied = keep_freed_memory()
step_faults(2)  # the first steps after the change map the heap once
print(applied, system, step_faults())
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt thresholds are glibc's")
def test_keep_freed_memory_removes_the_page_faults_of_the_next_steps() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    applied, system, kept = proc.stdout.split()
    assert applied == "True"
    pages_per_step = 4 * sum(SIZES) // 4096
    assert int(system) > 2 * pages_per_step, system  # most tensors mapped and faulted anew
    assert int(kept) < pages_per_step // 10, (system, kept)
