"""Per-run cost accounting: the cost record of a tiny CPU run, and across a kill and resume."""

from __future__ import annotations

import json
import time

import pytest

from depthcore import cost, engine, store
from depthcore.config import load_config
from depthcore.errors import ConfigError


def _consistent(c: dict) -> None:
    parts = c["setup_s"] + c["train_s"] + c["eval_s"]
    assert 0 < parts <= c["wall_s"] + 1e-3
    assert c["samples_per_s"] > 0
    assert c["device_hours"] == pytest.approx(c["wall_s"] * c["share"] / 3600, abs=1e-6)


def test_a_tiny_run_records_a_consistent_cost(tiny_cfg, tmp_path) -> None:
    final = engine.train(tiny_cfg, tmp_path, progress=False, device_share=0.25)
    c = final["cost"]
    _consistent(c)
    assert c["device"].startswith("cpu:") and c["device_kind"] == "cpu"
    assert c["share"] == 0.25 and c["segments"] == 1 and c["lost_s"] == 0
    assert c["samples"] == 2 * tiny_cfg.optim.batch_size and c["peak_memory_mb"] > 0
    assert c["wall_s"] <= final["wall_time_s"] + c["setup_s"] + c["eval_s"] + 5
    assert store.read_cost(tmp_path)["device_hours"] == c["device_hours"]
    records = store.read_jsonl(tmp_path / store.METRICS_FILE)
    assert [r["epoch"] for r in records if r["type"] == "cost"] == [1]


def test_bad_device_share_is_refused_before_the_folder_is_touched(tiny_cfg, tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"device_share=0: must be a finite number > 0"):
        engine.train(tiny_cfg, tmp_path / "run", progress=False, device_share=0)
    assert not (tmp_path / "run").exists()


class _Stop(KeyboardInterrupt):
    pass


def test_cost_survives_an_interruption_and_a_kill(tiny_overrides, tmp_path) -> None:
    cfg = load_config(None, [*tiny_overrides, "train.epochs=2"])

    def stop_after_first_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            time.sleep(0.2)  # after the checkpoint: lost work
            raise _Stop

    with pytest.raises(_Stop):
        engine.train(cfg, tmp_path, report=stop_after_first_epoch, progress=False)
    first = store.read_cost(tmp_path)
    assert first["segments"] == 1 and first["lost_s"] >= 0.2
    # A killed segment: its process died without closing it (still "running" on disk).
    state = json.loads((tmp_path / store.COST_FILE).read_text())
    killed = {**state["log"][0], "end": "running", "started": 0.0, "last_seen": 100.0}
    killed["checkpoint_at"] = 60.0
    store.write_cost(tmp_path, {**state, "log": [killed, state["log"][0]]})
    final = engine.train(cfg, tmp_path, progress=False)
    c = final["cost"]
    _consistent(c)
    assert c["segments"] == 3
    log = store.read_cost(tmp_path)["log"]
    assert [s["end"] for s in log] == ["killed", "interrupted", "finished"]
    assert c["lost_s"] == pytest.approx(40.0 + first["lost_s"], abs=1e-3)
    walls = [s["last_seen"] - s["started"] for s in log]
    assert c["wall_s"] == pytest.approx(sum(walls), abs=1e-2) and c["wall_s"] > 100
    assert c["samples"] == sum(s["samples"] for s in log)


def test_summary_arithmetic() -> None:
    segs = [
        cost.Segment(0.0, 100.0, checkpoint_at=70.0, train_s=80.0, samples=800, end="failed"),
        cost.Segment(200.0, 250.0, setup_s=5.0, train_s=40.0, samples=400, end="finished"),
    ]
    c = cost.summarize("cuda", "NVIDIA H200", 0.5, segs)
    assert c["device"] == "cuda:NVIDIA H200" and c["wall_s"] == 150.0
    assert c["lost_s"] == 30.0 and c["samples_per_s"] == 10.0
    assert c["device_hours"] == pytest.approx(150 * 0.5 / 3600)
