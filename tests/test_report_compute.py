"""The report's Compute section: device-hours per configuration, per sweep and in total."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import Trial, write_sweep

from depthcore import store
from depthcore.metrics import METRIC_NAMES
from depthcore.report import build_report


def _cost(wall_s: float, share: float, device: str = "cuda:NVIDIA H200") -> dict:
    return {
        "device": device, "share": share, "wall_s": wall_s, "lost_s": 10.0,
        "samples_per_s": 100.0, "device_hours": wall_s * share / 3600,
    }  # fmt: skip


def _trial(w: float, seed: int, **kw: object) -> Trial:
    metrics = dict(zip(METRIC_NAMES, np.linspace(0.1, 0.9, 7).tolist(), strict=True))
    return Trial({"loss.w_c": w}, seed=seed, metrics=metrics, **kw)


@pytest.fixture
def results(tmp_path: Path) -> Path:
    a = [_trial(0.5, 0, label="half"), _trial(0.5, 1, label="half"), _trial(1.0, 0)]
    a.append(_trial(2.0, 0, state="pending"))  # no cost record
    write_sweep(tmp_path, "alpha", a)
    index = store.read_yaml_file(tmp_path / "sweeps" / "alpha.yaml")
    index["estimate"] = {"device_hours": 2.5, "runs": 4}
    store.write_yaml_atomic(tmp_path / "sweeps" / "alpha.yaml", index)
    write_sweep(tmp_path, "beta", [a[2]])  # the same run folder in a second sweep
    walls = [(a[0], 3600.0, 0.5), (a[1], 7200.0, 0.5), (a[2], 1800.0, 1.0)]
    for trial, wall, share in walls:
        store.write_cost(store.run_path(tmp_path, trial.run_id()), _cost(wall, share))
    return tmp_path


def test_compute_csv_per_configuration_sweep_and_total(results: Path) -> None:
    out = build_report(results, figures=False)
    table = pd.read_csv(out / "alpha" / "compute.csv")
    configs = table[table["level"] == "configuration"].set_index("name")
    assert configs.loc["half", "device_hours"] == pytest.approx(1.5)  # 0.5 + 1.0
    assert configs.loc["half", "runs"] == 2 and configs.loc["half", "costed"] == 2
    sweep = table[table["level"] == "sweep"].iloc[0]
    assert sweep["device_hours"] == pytest.approx(2.0) and sweep["runs"] == 4
    assert sweep["costed"] == 3 and sweep["devices"] == "cuda:NVIDIA H200"
    assert sweep["wall_h"] == pytest.approx(3.5) and sweep["lost_h"] == pytest.approx(30 / 3600)
    assert sweep["estimate_device_hours"] == 2.5 and sweep["estimate_runs"] == 4
    total = pd.read_csv(out / "compute.csv").set_index("name")
    assert total.loc["beta", "device_hours"] == pytest.approx(0.5)
    assert total.loc["all sweeps", "device_hours"] == pytest.approx(2.0)  # shared run once
    assert total.loc["all sweeps", "level"] == "total"
    page = (out / "alpha" / "report.html").read_text()
    assert 'id="compute"' in page and "estimated at the sweep&#39;s start: 2.5" in page
    md = (out / "alpha" / "compute.md").read_text()
    assert "2 device-hours for 3 of 4 runs (cuda:NVIDIA H200)" in md


def test_final_json_cost_is_read_when_cost_json_is_gone(results: Path) -> None:
    run_dir = store.run_path(results, _trial(1.0, 0).run_id())
    final = store.read_final(run_dir)
    store.write_json_atomic(run_dir / store.FINAL_FILE, {**final, "cost": _cost(360.0, 1.0)})
    (run_dir / store.COST_FILE).write_text("{torn")
    out = build_report(results, ["beta"], figures=False)
    sweep = pd.read_csv(out / "beta" / "compute.csv").iloc[-1]
    assert sweep["device_hours"] == pytest.approx(0.1) and pd.isna(sweep["estimate_runs"])
