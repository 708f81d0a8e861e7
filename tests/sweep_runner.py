"""Test helper (not a test module): runners/sweep.py in a fresh process that reports, on exit,
whether it ever imported Ray (`RAY_IMPORTED=True|False` on stderr)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "runners" / "sweep.py"
# Runs the runner as __main__ and reports, on exit, whether the process ever imported Ray.
PROBE = (
    "import atexit, runpy, sys\n"
    "atexit.register(lambda: print('RAY_IMPORTED=%s' % ('ray' in sys.modules), file=sys.stderr))\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_sweep_runner(
    *args: str, cwd: Path = REPO, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(RUNNER), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
