"""A sweep joining a running two-node Ray cluster (`--address auto`), trials on both nodes."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
import ray
from ray import cloudpickle
from ray.cluster_utils import Cluster

from depthcore import store
from depthcore.sweep import expand, sweep_from_dict
from depthcore.tuning import run_sweep


def node_train(
    cfg: Any, run_dir: str | Path, *, report: Any = None, progress: bool = True, barrier: str = ""
) -> dict[str, Any]:
    """Records the node it ran on; waits until both trials run, so they must be on two nodes
    (each node has one CPU and each trial asks for one)."""
    run_dir = Path(run_dir)
    with store.RunLock(run_dir):
        Path(barrier, cfg.run_id()).write_text("started")
        deadline = time.time() + 60
        while len(list(Path(barrier).iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        final = {
            "run_id": cfg.run_id(),
            "metrics": {"abs_rel": cfg.loss.w_c},
            "node_id": ray.get_runtime_context().get_node_id(),
        }
        store.write_json_atomic(run_dir / store.FINAL_FILE, final)
        return final


@pytest.fixture
def two_node_cluster():
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_sweep_spreads_trials_over_a_two_node_cluster(
    two_node_cluster: Cluster, tmp_path: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    sweep = sweep_from_dict(
        {
            "name": "cluster",
            "base": {"loss": {"photometric": "ssim_a"}, "model": {"pretrained": False}},
            "grid": {"loss.w_c": [0.4, 0.6]},
            "resources": {"cpu": 1},
        }
    )

    def train(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        return node_train(cfg, run_dir, barrier=str(barrier), **kw)

    outcome = run_sweep(sweep, tmp_path / "results", train_fn=train, address="auto")
    assert outcome.exit_code == 0
    nodes = {
        store.read_final(store.run_path(tmp_path / "results", t.run_id))["node_id"]
        for t in expand(sweep)
    }
    cluster = two_node_cluster
    assert nodes == {cluster.head_node.node_id, *(n.node_id for n in cluster.worker_nodes)}
    assert not ray.is_initialized()  # run_sweep left the cluster it joined


@pytest.mark.slow
def test_local_sweep_ignores_a_cluster_address_left_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ray start` and test clusters leave /tmp/ray/ray_current_cluster behind; ray.init()
    without an address would join (or fail on) it. Without --address a sweep runs locally."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray._private.services, "find_bootstrap_address", lambda _: "127.0.0.1:9")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    sweep = sweep_from_dict(
        {
            "name": "local",
            "base": {"loss": {"photometric": "ssim_a"}, "model": {"pretrained": False}},
            "grid": {"loss.w_c": [0.4]},
            "resources": {"cpu": 1},
        }
    )
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    (barrier / "other").write_text("one trial is enough")

    def train(cfg: Any, run_dir: Any, **kw: Any) -> dict[str, Any]:
        return node_train(cfg, run_dir, barrier=str(barrier), **kw)

    outcome = run_sweep(sweep, tmp_path / "results", train_fn=train, dashboard=False)
    assert outcome.exit_code == 0
    assert not ray.is_initialized()
