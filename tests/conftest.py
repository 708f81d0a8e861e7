"""Shared fixtures: tiny CPU configs and the optional real KITTI frames."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Tests share 2 cores with each other's worker processes: one thread each keeps them predictable.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


@pytest.fixture(scope="session")
def realdata() -> Path:
    """../shared/realdata (20 real KITTI frames, calibration, 3 velodyne scans)."""
    if not REALDATA.is_dir():
        pytest.skip(f"real KITTI frames not available: {REALDATA} is absent")
    return REALDATA


@pytest.fixture(scope="session")
def synthetic_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache folder per test session, so tiny synthetic drives are generated once."""
    return tmp_path_factory.mktemp("depthsweep-cache")


TINY_OVERRIDES = (
    "data.dataset=synthetic",
    "data.height=64",
    "data.width=192",
    "data.num_workers=0",
    "data.synthetic.drives=2",
    "data.synthetic.frames=12",
    "data.synthetic.native_width=248",
    "data.synthetic.native_height=75",
    "model.pretrained=false",
    "optim.batch_size=2",
    "optim.warmup_steps=0",
    "train.epochs=1",
    "train.steps_per_epoch=2",
    "train.device=cpu",
    "eval.max_images=4",
    "eval.batch_size=4",
)


@pytest.fixture
def tiny_overrides(synthetic_cache: Path) -> list[str]:
    """`--set` overrides for a seconds-long CPU run on tiny synthetic drives."""
    return [*TINY_OVERRIDES, f"data.cache_dir={synthetic_cache}"]


@pytest.fixture
def tiny_cfg(tiny_overrides: list[str]):  # -> Config
    from depthcore.config import load_config

    return load_config(None, tiny_overrides)


@pytest.fixture(scope="module")
def ray_local(request: pytest.FixtureRequest) -> Iterator[Any]:
    """One local Ray (2 CPUs, with the dashboard) for the requesting test module, whose
    functions its workers unpickle by value (they cannot import tests/)."""
    import logging

    import ray
    from ray import cloudpickle

    from depthcore.tuning import RAY_ENV

    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    cloudpickle.register_pickle_by_value(request.module)
    ctx = ray.init(
        address="local",  # never join a cluster another test or `ray start` left behind
        num_cpus=2,
        include_dashboard=True,
        runtime_env={"env_vars": dict(RAY_ENV)},
        logging_level=logging.WARNING,
    )
    yield ctx
    ray.shutdown()
