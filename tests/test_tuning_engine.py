"""The real engine through a Ray that run_sweep starts itself: a killed trial resumes exactly."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from ray import cloudpickle

from depthcore import store
from depthcore.engine import train
from depthcore.sweep import expand, load_sweep, sweep_from_dict
from depthcore.trials import execute_trial
from depthcore.tuning import run_sweep

SMOKE = Path(__file__).resolve().parent.parent / "sweeps" / "smoke.yaml"
CONTRACT = ("config.yaml", "metrics.jsonl", "trained.json")
EVAL_CONTRACT = ("eval.yaml", "final.json", "per_image.csv", "predictions.npz")


def engine_killed_once(cfg: Any, run_dir: Any, *, report: Any = None, **kw: Any) -> dict:
    """The engine, but the ssim_a trial dies once right after its first epoch's checkpoint."""
    marker = Path(run_dir) / "fault-injected"

    def report_then_die(record: dict) -> None:
        report(record)
        if record["epoch"] == 1 and not marker.exists():
            marker.write_text("x")
            raise RuntimeError("injected fault after the first epoch's checkpoint")

    faulty = cfg.loss.photometric == "ssim_a" and report is not None
    return train(cfg, run_dir, report=report_then_die if faulty else report, **kw)


@pytest.mark.slow
def test_engine_trial_killed_after_a_checkpoint_resumes_exactly(
    synthetic_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    smoke = load_sweep(SMOKE, [f"data.cache_dir={synthetic_cache}"])  # the tiny CPU base
    fast = ["train.steps_per_epoch=1", "eval.max_images=2"]
    sweep = sweep_from_dict(
        {
            "name": "engine",
            "base": smoke.base,
            "trials": [{"label": "a", "loss.photometric": "ssim_a"}],
        },
        overrides=fast,
    )
    (trial,) = expand(sweep)
    results = tmp_path / "results"
    outcome = run_sweep(sweep, results, train_fn=engine_killed_once, dashboard=False)
    out = capsys.readouterr().out
    assert outcome.exit_code == 0, out
    assert "retry   a,seed=1234" in out
    run_dir = store.run_path(results, trial.run_id)
    assert all((run_dir / name).is_file() for name in CONTRACT)
    evaluation = store.eval_path(run_dir, trial.eval_id)
    assert all((evaluation / name).is_file() for name in EVAL_CONTRACT)
    assert store.has_checkpoint(run_dir) and not (run_dir / store.ERROR_FILE).exists()
    records = store.read_jsonl(run_dir / store.METRICS_FILE)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]  # epoch 1 logged once
    # The retried run ends exactly where an uninterrupted one does.
    clean = execute_trial(trial, tmp_path / "clean", train)
    resumed = store.read_evaluation(run_dir, trial.eval_id)
    assert resumed["metrics_by_scale"] == clean["metrics_by_scale"]
    assert resumed["steps"] == clean["steps"] == 2

    again = run_sweep(sweep, results, train_fn=engine_killed_once, dashboard=False)
    assert again.exit_code == 0 and again.trained == 0
