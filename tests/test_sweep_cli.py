"""runners/sweep.py as a user runs it: --dry-run, and bad sweep files rejected before Ray."""

from __future__ import annotations

from pathlib import Path

import pytest
from sweep_runner import REPO
from sweep_runner import run_sweep_runner as run_runner


@pytest.mark.parametrize(
    ("name", "count"), [("table1_ssim_m", 10), ("table2_grid", 55), ("table2_paper", 22)]
)
def test_dry_run_lists_every_trial(tmp_path: Path, name: str, count: int) -> None:
    # From another directory, without KITTI: the plan and the estimate are printed, then the
    # pre-flight says a real start would stop at the data (exit 2, as the real start would).
    missing = tmp_path / "no_kitti"
    proc = run_runner(
        str(REPO / "sweeps" / f"{name}.yaml"),
        *("--dry-run", "--results", str(tmp_path), "--set", f"data.root={missing}"),
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    lines = lines[: lines.index(f"{count} trials") + 1]  # the estimate follows (estimate.py)
    assert len(lines) == count + 1
    assert all("seed=1234" in line and "pending" in line for line in lines[:-1])
    assert f"{count} runs, 0 finished; {count} to train: cost unknown" in proc.stdout
    assert "0 GPU-h" not in proc.stdout and "0 GPUs" not in proc.stdout
    assert "  data: FAILED" in proc.stdout
    assert f"data: data.root {missing}: not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "RAY_IMPORTED=False" in proc.stderr  # a dry run never touches Ray
    assert not (tmp_path / "sweeps").exists()  # nor writes results


def test_dry_run_of_a_sweep_that_can_start_exits_0(tmp_path: Path) -> None:
    proc = run_runner("sweeps/smoke.yaml", "--dry-run", "--results", str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for check in ("sweep name: ok", "resources: ok", "data: ok", "budget: ok: none set"):
        assert check in proc.stdout
    assert not (tmp_path / "sweeps").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: bad\ngrid:\n  loss.w_c: [0.5]\nmax_concurent: 2\n", "line 4: max_concurent"),
        ("name: bad\ngrid:\n  loss.w_c: []\n", "line 3: grid.loss.w_c: empty list"),
        ("name: bad\ngrid:\n  loss.ssim_wieght: [0.5]\n", "did you mean 'loss.ssim_weight'"),
        ("name: bad\ngrid:\n  loss.w_l: [0.4, -0.5]\n", "loss.w_l: must be >= 0, got -0.5"),
        (
            "name: bad\ngrid:\n  loss.w_c: [0.4, 0.5]\nscheduler: {type: asha}\n",
            "line 4: scheduler: a grid cannot be stopped early",
        ),
    ],
)
def test_invalid_sweep_exits_2_before_ray(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    proc = run_runner(str(path), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"error: {path}")
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "RAY_IMPORTED=False" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_bad_set_override_exits_2(tmp_path: Path) -> None:
    proc = run_runner("sweeps/smoke.yaml", "--set", "loss.w_c=-1", "--results", str(tmp_path))
    assert proc.returncode == 2
    assert "loss.w_c: must be >= 0, got -1" in proc.stderr
    assert "RAY_IMPORTED=False" in proc.stderr


@pytest.mark.slow
def test_a_failed_data_check_leaves_no_index(tmp_path: Path) -> None:
    sweep = tmp_path / "kitti.yaml"
    root = tmp_path / "kitti_raw"  # a folder without the split's frames
    root.mkdir()
    sweep.write_text(
        "name: kitti\n"
        f"base: {{data: {{dataset: kitti, root: {root}}}, model: {{pretrained: false}}}}\n"
        "trials: [{label: a}]\nresources: {cpu: 1}\n"
    )
    results = tmp_path / "results"
    proc = run_runner(str(sweep), "--results", str(results), "--no-dashboard")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "train_files.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (results / "sweeps").exists() and not (results / "runs").exists()
