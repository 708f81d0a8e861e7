"""Import structure: what a module pulls in. Checked in subprocesses, so that what other tests
imported into this process cannot hide an import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# run_one on a one-trial sweep with a stand-in engine that only writes final.json.
RUN_ONE = """
import sys
from pathlib import Path

from depthcore import store
from depthcore.sweep import sweep_from_dict
from depthcore.trials import run_one


def train(cfg, run_dir, **kw):
    final = {"run_id": cfg.run_id(), "metrics": {"abs_rel": 0.1}, "epochs": 1}
    store.write_json_atomic(Path(run_dir) / store.FINAL_FILE, final)
    return final


sweep = sweep_from_dict({"name": "noray", "trials": [{"label": "a"}]})
outcome = run_one(sweep, "a", sys.argv[1], train_fn=train, out=lambda line: None)
assert outcome.exit_code == 0, outcome
print("RAY_IMPORTED=%s" % ("ray" in sys.modules))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_trials_and_run_one_do_not_import_ray(tmp_path: Path) -> None:
    proc = _python("-c", RUN_ONE, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "RAY_IMPORTED=False" in proc.stdout
    assert (tmp_path / "sweeps" / "noray.yaml").is_file()


def test_sweep_runner_only_does_not_import_ray(tmp_path: Path) -> None:
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('RAY_IMPORTED=%s' % ('ray' in sys.modules)))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    runner = str(REPO / "runners" / "sweep.py")
    args = ("sweeps/smoke.yaml", "--only", "no-such-trial", "--results", str(tmp_path))
    proc = _python("-c", probe, runner, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no such trial" in proc.stderr  # it got as far as looking the trial up
    assert "RAY_IMPORTED=False" in proc.stdout
