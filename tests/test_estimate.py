"""The sweep estimate (depthcore.estimate) against measured costs of tiny CPU runs.

The estimate predicts a run's wall seconds (setup + training + evaluation); the measurement is
the same quantity from the run's cost record (cost.json wall_s), as the report counts it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_runner import run_sweep_runner

from depthcore import store
from depthcore.config import load_config
from depthcore.errors import ConfigError
from depthcore.estimate import (
    CALIBRATION_FILE,
    Rate,
    concurrency,
    cost_shape,
    device_share,
    estimate_lines,
    estimate_sweep,
    eval_passes,
    index_record,
    rates_from_runs,
    read_calibration,
    shape_key,
    train_steps,
)
from depthcore.sweep import Sweep, expand, sweep_from_dict

RUNNER = Path(__file__).resolve().parent.parent / "runners" / "sweep.py"

# Enough steps that training, not process start-up, dominates a run.
LONGER = ("train.epochs=2", "train.steps_per_epoch=4")


def tiny_sweep(overrides: list[str], seeds: list[int], folder: Path) -> Sweep:
    """The sweep, also written to folder/sweep.yaml for the runner."""
    base = load_config(None, [*overrides, *LONGER]).to_dict()
    tree = {"name": "est", "base": base, "trials": [{"label": "tiny"}], "seeds": seeds}
    tree["resources"] = {"cpu": 1}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(tree))
    return sweep_from_dict(tree, path=path)


def runner(sweep: Sweep, results: Path, *args: str) -> None:
    """runners/sweep.py in a fresh process, as each trial of a sweep trains in its own (the
    first run in a process also pays for imports: timing both in pytest would not compare)."""
    command = [sys.executable, str(RUNNER), str(sweep.path), "--results", str(results), *args]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def prepared(overrides: list[str]) -> None:
    """Synthetic drives generated before anything is timed (the first run would otherwise
    pay for them, which no other run of the shape does)."""
    from depthcore.data import resolve_data

    resolve_data(load_config(None, [*overrides, *LONGER]))


def measured_wall(results: Path, run_id: str) -> float:
    cost = store.read_cost(store.run_path(results, run_id))
    assert cost is not None
    return float(cost["wall_s"])


def quiet(line: str) -> None:
    pass


def test_train_steps_and_eval_passes_follow_the_config(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, [*tiny_overrides, *LONGER])
    # 2 drives, 12 frames: one test drive; 10 inner frames, a tenth kept for validation.
    assert train_steps(cfg) == 2 * min(4, 9 // 2)
    assert eval_passes(cfg) == 3
    longer = load_config(None, [*tiny_overrides, "train.epochs=3", "eval.every_epoch=false"])
    assert eval_passes(longer) == 1
    uncapped = load_config(None, [*tiny_overrides, "train.steps_per_epoch=100"])
    assert train_steps(uncapped) == 9 // 2  # the split's full batches


def test_cost_shape_separates_what_changes_step_time(tiny_overrides: list[str]) -> None:
    cfg = load_config(None, tiny_overrides)
    same = load_config(None, [*tiny_overrides, "loss.w_c=0.7", "train.seed=3"])
    wider = load_config(None, [*tiny_overrides, "data.width=256"])
    key = shape_key(cost_shape(cfg, "cpu"))
    assert shape_key(cost_shape(same, "cpu")) == key
    assert shape_key(cost_shape(wider, "cpu")) != key
    assert shape_key(cost_shape(cfg, "cuda")) != key


@pytest.mark.slow
def test_estimate_from_finished_runs_within_20_percent(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    prepared(tiny_overrides)
    sweep = tiny_sweep(tiny_overrides, [1, 2, 3], tmp_path)
    first, second, third = expand(sweep)
    assert estimate_sweep(sweep, [second], tmp_path, out=quiet).runs[0].source == "unknown"
    runner(sweep, tmp_path, "--only", first.trial_id)
    assert len(rates_from_runs(tmp_path)) == 1

    est = estimate_sweep(sweep, [first, second], tmp_path, out=quiet)
    by_run = {r.run_id: r for r in est.runs}
    assert by_run[first.run_id].status == "finished" and by_run[first.run_id].hours == 0.0
    predicted = by_run[second.run_id]
    assert predicted.source == "finished runs" and predicted.wall_s is not None
    assert est.device_hours == pytest.approx(predicted.wall_s * est.share / 3600)

    runner(sweep, tmp_path, "--only", second.trial_id)
    actual = measured_wall(tmp_path, second.run_id)
    print(f"finished runs: estimate {predicted.wall_s:.2f} s, measured {actual:.2f} s")
    if predicted.wall_s != pytest.approx(actual, rel=0.20):
        # Runs of ~10 s move by 20% when the machine is busy: one more run of the shape, now
        # estimated from the median of two, must then be within 20%.
        again = estimate_sweep(sweep, [third], tmp_path, out=quiet).runs[0]
        runner(sweep, tmp_path, "--only", third.trial_id)
        actual = measured_wall(tmp_path, third.run_id)
        print(f"again: estimate {again.wall_s:.2f} s, measured {actual:.2f} s")
        assert again.wall_s == pytest.approx(actual, rel=0.20)


@pytest.mark.slow
def test_estimate_from_calibration_within_35_percent(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    prepared(tiny_overrides)
    sweep = tiny_sweep(tiny_overrides, [5], tmp_path)
    (trial,) = expand(sweep)
    lines: list[str] = []
    est = estimate_sweep(sweep, [trial], tmp_path, calibrate_here=True, out=lines.append)
    assert any("calibrated" in line for line in lines)  # it says so
    assert len(read_calibration(tmp_path)) == 1  # and caches the figure under results/
    assert estimate_sweep(sweep, [trial], tmp_path, out=quiet).runs[0].source == "calibration"
    predicted = est.runs[0]
    assert predicted.source == "calibration" and predicted.wall_s is not None

    runner(sweep, tmp_path, "--only", trial.trial_id)
    actual = measured_wall(tmp_path, trial.run_id)
    print(f"calibration: estimate {predicted.wall_s:.2f} s, measured {actual:.2f} s")
    assert predicted.wall_s == pytest.approx(actual, rel=0.35)
    # A finished run of the shape now takes over from the calibration.
    again: Any = estimate_sweep(sweep, [trial], tmp_path, out=quiet)
    assert again.runs[0].status == "finished"


# ----------------------------------------------------------------------------------------------
# What the dry run says (no training: rates come from a cached calibration or fake run records)


def calibrated(results: Path, cfg: Any, kind: str, step_s: float) -> None:
    """A cached calibration of `cfg`'s shape, as --calibrate writes it."""
    path = results / CALIBRATION_FILE
    cached = store.read_json(path) or {}
    rate = Rate(step_s=step_s, eval_s=0.0, setup_s=0.0, source="calibration")
    cached[shape_key(cost_shape(cfg, kind))] = {
        k: v for k, v in asdict(rate).items() if k != "source"
    }
    store.write_json_atomic(path, cached)


def gpu_overrides(tiny_overrides: list[str]) -> list[str]:
    """The tiny config, trained where Ray puts it (a GPU sweep's device kind is cuda)."""
    return [o for o in tiny_overrides if not o.startswith("train.device")]


def a_sweep(overrides: list[str], **keys: Any) -> Sweep:
    tree = {"name": "est", "base": load_config(None, overrides).to_dict(), **keys}
    tree.setdefault("trials", [{"label": "tiny"}])
    return sweep_from_dict(tree)


def test_unknown_cost_is_never_printed_as_zero(tiny_overrides: list[str], tmp_path: Path) -> None:
    sweep = a_sweep(
        tiny_overrides, trials=[{"label": "small"}, {"label": "wide", "data.width": 256}]
    )
    trials = expand(sweep)
    est = estimate_sweep(sweep, trials, tmp_path, out=quiet)
    text = "\n".join(estimate_lines(est, "cpu"))
    assert "2 to train: cost unknown (2 runs of unknown cost)" in text
    assert "wall time: unknown" in text
    assert not re.search(r"(?<![\d.])0 CPU-h|about 0 ", text), text
    assert est.device_hours is None and est.total_device_hours is None
    assert index_record(est)["device_hours"] is None  # the report shows no estimate, not 0

    calibrated(tmp_path, trials[0].config, "cpu", step_s=1.0)
    est = estimate_sweep(sweep, trials, tmp_path, out=quiet)
    text = "\n".join(estimate_lines(est, "cpu"))
    known = est.runs[0].hours
    assert known is not None and known > 0 and est.runs[1].hours is None
    assert f"2 to train: {known:.2g} CPU-h for 1 runs + 1 runs of unknown cost" in text
    assert "wall time: at least" in text  # the unknown run's time is not in it
    assert est.device_hours is None and index_record(est)["remaining_device_hours"] is None


def test_a_race_wall_time_counts_its_rounds_one_after_another(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    arms = [
        {"label": "base", "role": "baseline", "loss.photometric": "standard"},
        {"label": "b", "loss.photometric": "ssim_a"},
        {"label": "c", "loss.photometric": "l1"},
    ]
    race = a_sweep(tiny_overrides, trials=arms, seeds={"start": 2, "max": 4})
    trials = expand(race)
    calibrated(tmp_path, trials[0].config, "cpu", step_s=900.0)  # 0.5 h per run at 2 steps
    est = estimate_sweep(race, trials, tmp_path, cpus=100, out=quiet)
    run_wall = est.runs[0].hours / est.share  # hours of one run (all have one shape)
    assert run_wall == pytest.approx(0.5)
    assert sorted({r.round for r in est.runs}) == [0, 1, 2] and est.rounds == 3
    # 100 CPUs hold every run of a round at once: each round takes one run's time.
    assert est.wall_hours() == pytest.approx(3 * run_wall)
    text = "\n".join(estimate_lines(est, "cpu"))
    assert "wall time: about 1.5 h, 100 trials at once on 100 CPUs" in text
    assert "over at most 3 race rounds run one after another" in text
    # The same 12 runs without a race: one round.
    plain = a_sweep(tiny_overrides, trials=arms, seeds=[1, 2, 3, 4])
    flat = estimate_sweep(plain, expand(plain), tmp_path, cpus=100, out=quiet)
    assert flat.rounds == 1 and flat.wall_hours() == pytest.approx(run_wall)


def test_cpus_change_the_wall_time_not_the_device_hours(
    tiny_overrides: list[str], tmp_path: Path
) -> None:
    sweep = a_sweep(tiny_overrides, seeds=[1, 2, 3, 4, 5, 6])
    trials = expand(sweep)
    calibrated(tmp_path, trials[0].config, "cpu", step_s=60.0)
    here = estimate_sweep(sweep, trials, tmp_path, out=quiet)
    six = estimate_sweep(sweep, trials, tmp_path, cpus=6, out=quiet)
    assert six.device_hours == pytest.approx(here.device_hours)  # what cost records will say
    assert six.share == here.share == device_share(sweep.file.resources)
    assert six.slots == 6 and here.slots == device_share(sweep.file.resources) ** -1
    assert six.wall_hours() < here.wall_hours()
    # A GPU sweep: --cpus limits it too (4 CPUs per trial on 8 CPUs: 2 at once on 8 GPUs).
    gpu = a_sweep(gpu_overrides(tiny_overrides), resources={"cpu": 4, "gpu": 1})
    assert concurrency(gpu.file.resources, gpus=8, cpus=8) == (
        2, "2 trials at once on 8 GPUs and 8 CPUs"
    )  # fmt: skip
    assert concurrency(gpu.file.resources, gpus=8)[0] == 8  # the CPUs of the GPU machine


def test_no_gpu_here_is_said_in_words(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import depthcore.estimate as estimate

    monkeypatch.setattr(estimate, "_local_gpus", lambda: 0)
    sweep = a_sweep(gpu_overrides(tiny_overrides), resources={"cpu": 1, "gpu": 1})
    trials = expand(sweep)
    calibrated(tmp_path, trials[0].config, "cuda", step_s=1.0)
    text = "\n".join(estimate_lines(estimate_sweep(sweep, trials, tmp_path, out=quiet), "cuda"))
    assert "wall time: no GPU on this machine; add --gpus N for the wall time on N GPUs" in text
    assert "0 GPU" not in text
    on_4 = estimate_sweep(sweep, trials, tmp_path, gpus=4, out=quiet)
    assert on_4.slots == 4 and on_4.where == "4 trials at once on 4 GPUs"


def test_a_packed_share_is_not_assumed_free(tiny_overrides: list[str], tmp_path: Path) -> None:
    overrides = gpu_overrides(tiny_overrides)
    sweep = a_sweep(overrides, seeds=[1, 2], resources={"cpu": 1, "gpu": 0.5})
    first, second = expand(sweep)
    calibrated(tmp_path, first.config, "cuda", step_s=18.0)  # timed alone
    est = estimate_sweep(sweep, [first, second], tmp_path, gpus=1, out=quiet)
    assert all(r.solo for r in est.runs)
    text = "\n".join(estimate_lines(est, "cuda"))
    assert "assume a packed trial trains at solo speed" in text and "lower bounds" in text
    # A finished run packed alike measures the packed speed: 3x slower than alone here.
    fake_finished(tmp_path, first, train_s=3 * 18.0 * 2, share=0.5)
    est = estimate_sweep(sweep, [first, second], tmp_path, gpus=1, out=quiet)
    packed = est.runs[1]
    assert packed.source == "finished runs" and not packed.solo
    assert packed.wall_s == pytest.approx(3 * 18.0 * 2)
    assert packed.hours == pytest.approx(3 * 18.0 * 2 * 0.5 / 3600)
    assert "solo speed" not in "\n".join(estimate_lines(est, "cuda"))


def fake_finished(results: Path, trial: Any, *, train_s: float, share: float) -> None:
    """A finished run's files as the engine leaves them, with a cost record of `train_s`."""
    run_dir = store.run_path(results, trial.run_id)
    run_dir.mkdir(parents=True)
    cfg = trial.config
    store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
    steps = train_steps(cfg)
    assert steps is not None
    cost = {"device_kind": "cuda", "device": "cuda:test", "share": share, "segments": 1}
    cost.update(samples=steps * cfg.optim.batch_size, train_s=train_s, wall_s=train_s)
    cost.update(setup_s=0.0, eval_s=0.0, device_hours=train_s * share / 3600)
    store.write_cost(run_dir, cost)
    store.write_json_atomic(run_dir / store.FINAL_FILE, {"metrics": {}, "cost": cost})


def test_calibrate_refuses_a_gpu_sweep_here_before_timing_anything(
    tiny_overrides: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import depthcore.estimate as estimate

    def must_not_time(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("timed a step for a device that is not here")

    monkeypatch.setattr(estimate, "_cuda_here", lambda: False)
    monkeypatch.setattr(estimate, "calibrate", must_not_time)
    sweep = a_sweep(gpu_overrides(tiny_overrides), resources={"cpu": 1, "gpu": 1})
    with pytest.raises(ConfigError, match=r"--calibrate: .*trains on a GPU .*has none"):
        estimate_sweep(sweep, expand(sweep), tmp_path, calibrate_here=True, out=quiet)
    assert not (tmp_path / CALIBRATION_FILE).exists()


def test_calibrate_of_a_paper_sweep_without_a_gpu_exits_2(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --calibrate would time it (nothing to refuse)")
    proc = run_sweep_runner(
        "sweeps/table2_paper.yaml", "--dry-run", "--calibrate", "--results", str(tmp_path)
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: --calibrate: sweeps/table2_paper.yaml")
    assert "this machine has none" in proc.stderr and "Traceback" not in proc.stderr
    assert "calibrated" not in proc.stdout and not (tmp_path / CALIBRATION_FILE).exists()
