"""The results store: atomic files, tolerant readers, the run lock, run status."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from depthcore import store


def test_atomic_write_leaves_no_partial_file(tmp_path) -> None:
    path = tmp_path / "final.json"

    class Boom:
        pass

    with pytest.raises(TypeError):
        store.write_json_atomic(path, {"bad": Boom()})
    assert not path.exists() and list(tmp_path.iterdir()) == []
    store.write_json_atomic(path, {"metrics": {"abs_rel": 0.1}})
    assert store.read_final(tmp_path)["metrics"]["abs_rel"] == 0.1


def test_readers_tolerate_half_written_files(tmp_path) -> None:
    (tmp_path / store.FINAL_FILE).write_text('{"metrics": {"abs_')
    (tmp_path / store.METRICS_FILE).write_text('{"step": 1}\n{"step": 2}\n{"ste')
    (tmp_path / store.CONFIG_FILE).write_text("loss: [unclosed\n")
    assert store.read_final(tmp_path) is None
    assert store.read_run_config(tmp_path) is None
    assert store.read_jsonl(tmp_path / store.METRICS_FILE) == [{"step": 1}, {"step": 2}]
    assert store.run_status(tmp_path) == "pending"


def test_truncate_metrics_drops_records_after_the_checkpoint(tmp_path) -> None:
    path = tmp_path / store.METRICS_FILE
    for step in (1, 2, 3, 4):
        store.append_jsonl(path, {"step": step})
    store.append_jsonl(path, {"step": None})  # damaged: not kept, and no crash
    store.truncate_metrics(path, 2)
    assert [r["step"] for r in store.read_jsonl(path)] == [1, 2]


def test_status_from_files(tmp_path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    assert store.run_status(run) == "pending"
    (run / store.CHECKPOINT_DIR).mkdir()
    (run / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE).write_bytes(b"x")
    assert store.run_status(run) == "interrupted"
    store.write_json_atomic(run / store.ERROR_FILE, {"error": "nan"})
    assert store.run_status(run) == "failed"
    with store.RunLock(run):
        assert store.run_status(run) == "running"
    store.write_json_atomic(run / store.FINAL_FILE, {"metrics": {}})
    assert store.run_status(run) == "finished"


def _try_lock(path: str, queue: mp.Queue) -> None:
    try:
        with store.RunLock(path):
            queue.put("acquired")
    except store.RunLockedError as exc:
        queue.put(f"locked: {exc}")


def test_lock_is_exclusive_across_processes(tmp_path) -> None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with store.RunLock(tmp_path):
        proc = ctx.Process(target=_try_lock, args=(str(tmp_path), queue))
        proc.start()
        proc.join(60)
        result = queue.get(timeout=5)
    assert result.startswith("locked:") and f"pid {os.getpid()}" in result
    assert not (tmp_path / store.LOCK_FILE).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path) -> None:
    # A pid that cannot be alive on this host: the lock is stale.
    dead = {"host": __import__("socket").gethostname(), "pid": 2**22 + 12345, "time": 0}
    (tmp_path / store.LOCK_FILE).write_text(json.dumps(dead))
    assert not store.lock_is_held(tmp_path)
    with store.RunLock(tmp_path):
        owner = json.loads((tmp_path / store.LOCK_FILE).read_text())
        assert owner["pid"] == os.getpid()


def _race_for_lock(path: str, barrier: Any, queue: mp.Queue) -> None:
    barrier.wait()
    try:
        with store.RunLock(path):
            queue.put("acquired")
            time.sleep(1.0)  # hold it while the others try
    except store.RunLockedError:
        queue.put("locked")


@pytest.mark.parametrize("stale", [False, True], ids=["free", "dead-owner"])
def test_processes_racing_for_a_lock_get_it_once(tmp_path, stale: bool) -> None:
    if stale:  # every racer finds the dead owner and tries to take the lock over
        dead = {"host": socket.gethostname(), "pid": 2**22 + 12345, "time": 0}
        (tmp_path / store.LOCK_FILE).write_text(json.dumps(dead))
    ctx = mp.get_context("spawn")
    n = 4
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [
        ctx.Process(target=_race_for_lock, args=(str(tmp_path), barrier, queue)) for _ in range(n)
    ]
    for proc in procs:
        proc.start()
    results = sorted(queue.get(timeout=60) for _ in range(n))
    for proc in procs:
        proc.join(60)
    assert results == ["acquired"] + ["locked"] * (n - 1)
    assert not (tmp_path / store.LOCK_FILE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temporary or break files left


def _age(path: Path, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(path, (old, old))


@pytest.mark.parametrize(
    "content",
    ["", "{not json", json.dumps({"host": socket.gethostname(), "pid": "abc"})],
    ids=["empty", "garbage", "bad-pid"],
)
def test_a_lock_without_a_usable_owner_is_held_until_stale(tmp_path, content: str) -> None:
    lock = tmp_path / store.LOCK_FILE
    lock.write_text(content)
    assert store.lock_is_held(tmp_path) and store.run_status(tmp_path) == "running"
    with pytest.raises(store.RunLockedError, match="if that process is gone, delete"):
        store.RunLock(tmp_path).acquire()
    _age(lock, store.LOCK_STALE_S + 1)
    assert not store.lock_is_held(tmp_path)
    with store.RunLock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_an_old_lock_with_our_own_pid_is_stale(tmp_path) -> None:
    # A container restarted with the same hostname and pid finds its predecessor's lock.
    lock = tmp_path / store.LOCK_FILE
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": 0}))
    assert store.lock_is_held(tmp_path)  # fresh: as if this process held it
    _age(lock, store.LOCK_STALE_S + 1)
    with store.RunLock(tmp_path):
        assert lock.exists()
    assert not lock.exists()


def test_lock_of_another_host_expires_with_its_heartbeat(tmp_path) -> None:
    other = {"host": "elsewhere", "pid": 1, "time": 0}
    lock = tmp_path / store.LOCK_FILE
    lock.write_text(json.dumps(other))
    assert store.lock_is_held(tmp_path)
    old = lock.stat().st_mtime - store.LOCK_STALE_S - 1
    os.utime(lock, (old, old))
    assert not store.lock_is_held(tmp_path)


def test_provenance_records_versions() -> None:
    prov = store.provenance()
    assert prov["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "numpy" in prov["versions"]


def test_atomic_files_get_the_usual_permissions(tmp_path) -> None:
    mask = os.umask(0o022)
    os.umask(mask)
    store.write_text_atomic(tmp_path / "a.txt", "x")
    with store.atomic_path(tmp_path / "b.bin") as tmp:
        tmp.write_bytes(b"x")
    expected = 0o666 & ~mask
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == expected


# ----------------------------------------------------------------------------------------------
# Round trips: every file the store owns reads back what was written


def test_config_metrics_and_final_round_trip(tmp_path) -> None:
    config = {"loss": {"photometric": "ssim_a", "w_c": 0.5}, "train": {"seed": 7}}
    store.write_yaml_atomic(tmp_path / store.CONFIG_FILE, config)
    assert store.read_run_config(tmp_path) == config
    records = [{"type": "train", "step": 1, "loss": 0.5}, {"type": "epoch", "step": 2}]
    for record in records:
        store.append_jsonl(tmp_path / store.METRICS_FILE, record)
    assert store.read_curves(tmp_path) == records
    final = {"run_id": "r1", "metrics": {"abs_rel": 0.12}, "metrics_by_scale": {"1": {"a1": 0.8}}}
    store.write_json_atomic(tmp_path / store.FINAL_FILE, final)
    assert store.read_final(tmp_path) == final
    assert store.read_scales(tmp_path)[1]["a1"] == 0.8


def test_per_image_round_trip(tmp_path) -> None:
    import numpy as np

    from depthcore.metrics import METRIC_NAMES

    values = np.arange(3 * len(METRIC_NAMES), dtype=np.float32).reshape(3, -1) / 7
    rows = [
        {"image": image, "scale": scale, **dict(zip(METRIC_NAMES, values[image], strict=True))}
        for image in range(3)
        for scale in (0, 1)
    ]
    store.write_per_image(tmp_path, rows)
    for scale in (0, 1):
        table = store.read_per_image(tmp_path, scale)
        assert table is not None and list(table.columns) == list(METRIC_NAMES)
        assert table.index.tolist() == [0, 1, 2]
        np.testing.assert_array_equal(table.to_numpy(), values.astype(float))
    assert store.read_per_image(tmp_path, scale=2) is None


def test_predictions_round_trip(tmp_path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {
        "image_index": np.array([4, 9]),
        "rgb": rng.integers(0, 256, (2, 6, 8, 3)).astype(np.uint8),
        "scales": np.array([0, 1]),
        "disp": rng.random((2, 2, 3, 4)).astype(np.float32),
    }
    store.write_predictions(tmp_path, **arrays)
    back = store.read_predictions(tmp_path)
    assert back is not None and sorted(back) == sorted(arrays)
    for key, value in arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_error_round_trip(tmp_path) -> None:
    store.write_error(tmp_path, kind="TrainingError", message="nan", step=12, traceback="tb")
    error = store.read_error(tmp_path)
    assert error is not None and error.pop("time")
    assert error == {"type": "TrainingError", "error": "nan", "step": 12, "traceback": "tb"}
    assert store.run_status(tmp_path) == "failed"


def test_sweep_index_round_trip(tmp_path) -> None:
    index = {
        "name": "s",
        "metric": "abs_rel",
        "swept": ["loss.w_c"],
        "trials": [{"trial_id": "t0", "run_id": "r0", "params": {"loss.w_c": 0.5}}],
    }
    path = store.write_sweep_index(tmp_path, "s", index)
    assert path == store.sweep_index_path(tmp_path, "s") and path.is_file()
    assert store.read_sweep_index(tmp_path, "s") == index
    assert store.read_sweep_index(tmp_path, "other") is None


def test_lock_round_trip(tmp_path) -> None:
    with store.RunLock(tmp_path):
        owner = store.read_json(tmp_path / store.LOCK_FILE)
        assert owner is not None
        assert (owner["host"], owner["pid"]) == (socket.gethostname(), os.getpid())
        assert store.lock_is_held(tmp_path)
    assert not store.lock_is_held(tmp_path) and not (tmp_path / store.LOCK_FILE).exists()


def test_tensorboard_links_name_runs_by_trial_id(tmp_path: Path) -> None:
    assert store.link_tensorboard(tmp_path, "sw", "a,seed=1", "r1") is None  # no events yet
    events = store.run_path(tmp_path, "r1") / "tb" / "a,seed=1"
    events.mkdir(parents=True)
    (events / "events.out.tfevents.1").write_bytes(b"x")
    link = store.link_tensorboard(tmp_path, "sw", "a,seed=1", "r1")
    assert link == tmp_path / "tensorboard" / "sw" / "a,seed=1"
    assert link.is_symlink() and not Path(os.readlink(link)).is_absolute()  # movable results
    assert (link / "events.out.tfevents.1").read_bytes() == b"x"
    assert store.link_tensorboard(tmp_path, "sw", "a,seed=1", "r1") == link  # idempotent
    other = store.run_path(tmp_path, "r2") / "tb" / "b"
    other.mkdir(parents=True)
    store.link_tensorboard(tmp_path, "sw", "a,seed=1", "r2")  # the trial's run changed
    assert link.resolve() == other.resolve()
    assert [p.name for p in link.parent.iterdir()] == ["a,seed=1"]  # no temporary left


# ----------------------------------------------------------------------------------------------
# Evaluations: runs/<id>/trained.json + evals/<eval id>/, and folders of the earlier layout


def _config(*overrides: str) -> Any:
    from depthcore.config import load_config

    return load_config(None, list(overrides))


def test_trained_run_and_its_evaluations_round_trip(tmp_path: Path) -> None:
    cfg = _config("eval.max_images=5")
    other = _config("eval.post_process=true")
    run = store.run_path(tmp_path, cfg.run_id())
    store.write_text_atomic(run / store.CONFIG_FILE, cfg.to_yaml())
    assert store.run_status(run, cfg.eval_id()) == "pending" and store.read_trained(run) is None
    trained = {"run_id": cfg.run_id(), "epochs": 2, "steps": 8, "seed": 1234}
    store.write_trained(run, trained)
    assert store.read_trained(run) == trained and store.run_status(run) == "finished"
    assert store.run_status(run, cfg.eval_id()) == "trained"  # trained, not evaluated this way
    folder = store.eval_path(run, cfg.eval_id())
    store.write_eval_config(folder, {"eval_id": cfg.eval_id(), "eval": {"max_images": 5}})
    store.write_json_atomic(folder / store.FINAL_FILE, {"run_id": cfg.run_id(), "metrics": {}})
    assert store.read_eval_config(folder)["eval"] == {"max_images": 5}
    assert store.find_evaluation(run, cfg.eval_id()) == folder
    assert store.read_evaluation(run, cfg.eval_id())["run_id"] == cfg.run_id()
    assert store.run_status(run, cfg.eval_id()) == "finished"
    assert store.find_evaluation(run, other.eval_id()) is None
    assert store.find_evaluation(run, None) is None  # no top-level (earlier layout) evaluation
    assert store.run_status(run, other.eval_id()) == "trained"
    assert store.error_path(run, other.eval_id()) == store.eval_path(run, other.eval_id()) / (
        store.ERROR_FILE
    )
    store.write_error(store.eval_path(run, other.eval_id()), kind="DataError", message="x", step=0)
    assert store.run_status(run, other.eval_id()) == "failed"
    assert store.run_status(run) == "finished"  # a failed evaluation is no failed training
    with store.RunLock(run):
        assert store.run_status(run, other.eval_id()) == "running"  # being evaluated


def test_an_untrained_run_has_the_trainings_status_and_error_file(tmp_path: Path) -> None:
    cfg = _config()
    run = tmp_path / "r"
    store.write_error(run, kind="TrainingError", message="nan", step=3)
    assert store.run_status(run, cfg.eval_id()) == "failed"
    assert store.error_path(run, cfg.eval_id()) == run / store.ERROR_FILE


def write_earlier_layout(run: Path, cfg: Any, run_id: str | None = None) -> None:
    """A run folder as the version before evaluation ids wrote it: config.yaml, final.json
    (metrics and the training's record, named by the legacy run id) and per_image.csv at the top,
    no trained.json, no evals/."""
    from depthcore.metrics import METRIC_NAMES

    store.write_text_atomic(run / store.CONFIG_FILE, cfg.to_yaml())
    metrics = dict.fromkeys(METRIC_NAMES, 0.5)
    final = {
        "run_id": run_id or cfg.legacy_run_id(),
        "metrics": metrics,
        "metrics_by_scale": {"0": metrics},
        "n_images": 2,
        "epochs": 2,
        "steps": 8,
        "seed": cfg.train.seed,
    }
    store.write_json_atomic(run / store.FINAL_FILE, final)
    rows = [{"image": i, "scale": 0, **metrics} for i in range(2)]
    store.write_per_image(run, rows)


def test_a_run_folder_of_the_earlier_layout_is_read(tmp_path: Path) -> None:
    cfg = _config("eval.max_images=5")
    run = tmp_path / "old"
    write_earlier_layout(run, cfg)
    assert store.read_trained(run)["epochs"] == 2 and store.run_status(run) == "finished"
    assert store.legacy_eval_id(run) == cfg.eval_id()
    # Its own evaluation (the one its config.yaml gives) is the top of the folder...
    assert store.find_evaluation(run, cfg.eval_id()) == run
    assert store.find_evaluation(run, None) == run  # an index of that version names none
    assert store.run_status(run, cfg.eval_id()) == "finished"
    assert store.read_per_image(store.find_evaluation(run, cfg.eval_id())) is not None
    # ...any other is still to be made, in evals/ like a new run's.
    other = _config("eval.max_images=6")
    assert store.find_evaluation(run, other.eval_id()) is None
    assert store.run_status(run, other.eval_id()) == "trained"
    store.write_json_atomic(
        store.eval_path(run, other.eval_id()) / store.FINAL_FILE, {"metrics": {}}
    )
    assert store.find_evaluation(run, other.eval_id()) == store.eval_path(run, other.eval_id())
    assert store.find_evaluation(run, cfg.eval_id()) == run


def test_a_final_json_of_another_recipe_is_no_evaluation(tmp_path: Path) -> None:
    cfg = _config()
    write_earlier_layout(tmp_path, cfg, run_id="0123456789abcdef")  # e.g. recipe 2's id
    assert store.legacy_eval_id(tmp_path) is None
    assert store.find_evaluation(tmp_path, cfg.eval_id()) is None
    (tmp_path / store.CONFIG_FILE).write_text("{broken")
    assert store.legacy_eval_id(tmp_path) is None
