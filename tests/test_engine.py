"""The engine on tiny synthetic drives (CPU): contract files, resume, failures, schedule."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from depthcore import device, engine, store
from depthcore.config import load_config
from depthcore.errors import ConfigError, DataError, TrainingError
from depthcore.metrics import METRIC_NAMES


def test_learning_rate_schedule_paper_semantics() -> None:
    cfg = load_config(None, ["optim.warmup_steps=1000", "optim.lr_step_epochs=15"])
    lr = cfg.optim.lr
    assert engine.learning_rate(cfg, 0, 0) == pytest.approx(lr / 1000)
    assert engine.learning_rate(cfg, 499, 0) == pytest.approx(lr / 2)
    assert engine.learning_rate(cfg, 999, 0) == pytest.approx(lr)
    assert engine.learning_rate(cfg, 50_000, 14) == pytest.approx(lr)  # epochs 1..15 at 1e-4
    assert engine.learning_rate(cfg, 50_000, 15) == pytest.approx(lr * 0.1)  # epochs 16..20
    no_warmup = load_config(None, ["optim.warmup_steps=0"])
    assert engine.learning_rate(no_warmup, 0, 0) == pytest.approx(lr)


def test_cuda_request_without_gpu_is_a_config_error(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"train\.device: 'cuda' was requested"):
        device.resolve_device("cuda")
    assert device.resolve_device("auto").type == "cpu"


def test_run_writes_the_results_contract(tiny_overrides, tmp_path) -> None:
    cfg = load_config(
        None,
        [*tiny_overrides, "model.scales=[0,1,2,3,4]", "eval.scales=[0,2,4]", "train.log_every=1"],
    )
    final = engine.train(cfg, tmp_path, progress=False)
    assert store.run_status(tmp_path) == "finished"
    assert store.run_status(tmp_path, cfg.eval_id()) == "finished"
    trained = store.read_trained(tmp_path)
    assert trained["run_id"] == cfg.run_id() and trained["cost"] == final["cost"]
    folder = tmp_path / store.EVALS_DIR / cfg.eval_id()  # the evaluation's own folder
    assert not (tmp_path / store.FINAL_FILE).exists()
    on_disk = json.loads((folder / store.FINAL_FILE).read_text())
    assert on_disk == final and final["run_id"] == cfg.run_id()
    assert final["eval_id"] == cfg.eval_id() == store.read_eval_config(folder)["eval_id"]
    assert set(final["metrics_by_scale"]) == {"0", "2", "4"}
    assert final["metrics"] == final["metrics_by_scale"]["0"]
    assert list(final["metrics"]) == list(METRIC_NAMES)
    assert final["steps"] == 2 and final["epochs"] == 1 and final["device"] == "cpu"
    assert load_config(tmp_path / store.CONFIG_FILE) == cfg
    records = store.read_jsonl(tmp_path / store.METRICS_FILE)
    assert [r["type"] for r in records] == ["train", "train", "epoch", "cost"]
    assert "abs_rel" in records[-2] and np.isfinite(records[-2]["train_loss"])
    header, *rows = (folder / store.PER_IMAGE_FILE).read_text().splitlines()
    assert header.split(",") == ["image", "scale", *METRIC_NAMES]
    assert len(rows) == 3 * final["n_images"]
    preds = np.load(folder / store.PREDICTIONS_FILE)
    n = preds["rgb"].shape[0]
    assert preds["rgb"].shape == (n, 64, 192, 3) and preds["disp"].shape == (n, 3, 64, 192)
    assert list(preds["scales"]) == [0, 2, 4]
    assert store.has_checkpoint(tmp_path) and not (tmp_path / store.LOCK_FILE).exists()


def test_finished_run_is_not_trained_again(tiny_cfg, tmp_path, monkeypatch) -> None:
    final = engine.train(tiny_cfg, tmp_path, progress=False)

    def boom(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(engine, "_setup", boom)
    assert engine.train(tiny_cfg, tmp_path, progress=False) == final


def test_folder_of_another_run_is_refused(tiny_cfg, tiny_overrides, tmp_path) -> None:
    engine.train(tiny_cfg, tmp_path, progress=False)
    other = load_config(None, [*tiny_overrides, "loss.photometric=l1"])
    with pytest.raises(ConfigError, match="holds a different run"):  # not the other's result
        engine.train(other, tmp_path, progress=False)
    (tmp_path / store.TRAINED_FILE).unlink()
    with pytest.raises(ConfigError, match="holds a different run"):
        engine.train(other, tmp_path, progress=False)
    # Without a readable config.yaml the checkpoint tells; nothing is overwritten or recorded.
    (tmp_path / store.CONFIG_FILE).write_text("{broken")
    with pytest.raises(ConfigError, match=f"{store.CHECKPOINT_FILE} is run {tiny_cfg.run_id()}"):
        engine.train(other, tmp_path, progress=False)
    assert (tmp_path / store.CONFIG_FILE).read_text() == "{broken"
    assert not (tmp_path / store.ERROR_FILE).exists()


def test_a_folder_where_nothing_was_trained_can_be_reused(tiny_overrides, tmp_path) -> None:
    bad = load_config(None, [*tiny_overrides, "data.dataset=kitti", f"data.root={tmp_path / 'no'}"])
    with pytest.raises(DataError):
        engine.train(bad, tmp_path / "run", progress=False)
    good = load_config(None, [*tiny_overrides, "train.epochs=1", "eval.every_epoch=false"])
    final = engine.train(good, tmp_path / "run", progress=False)
    assert final["run_id"] == good.run_id()


@pytest.mark.slow
def test_damaged_checkpoint_names_itself_and_partial_files_are_removed(tiny_cfg, tmp_path) -> None:
    engine.train(tiny_cfg, tmp_path, progress=False)
    (tmp_path / store.TRAINED_FILE).unlink()
    ckpt = tmp_path / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    whole = ckpt.read_bytes()
    ckpt.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(TrainingError, match=f"{ckpt}: unreadable checkpoint"):
        engine.train(tiny_cfg, tmp_path, progress=False)
    ckpt.write_bytes(whole)
    partial = ckpt.with_name(".state.killed.pt")  # a writer killed mid-way
    partial.write_bytes(whole[:100])
    engine.train(tiny_cfg, tmp_path, progress=False)
    assert not partial.exists() and store.read_trained(tmp_path) is not None


@pytest.mark.slow
def test_an_epoch_line_survives_a_crash_right_after_its_checkpoint(
    tiny_overrides, tmp_path, monkeypatch
) -> None:
    cfg = load_config(None, [*tiny_overrides, "train.epochs=2"])
    real = engine.save_checkpoint

    def crash_after_first(run_dir, rt, optimizer, prog):
        out = real(run_dir, rt, optimizer, prog)
        if prog.epoch == 1:
            raise _Stop
        return out

    monkeypatch.setattr(engine, "save_checkpoint", crash_after_first)
    with pytest.raises(_Stop):
        engine.train(cfg, tmp_path, progress=False)
    monkeypatch.setattr(engine, "save_checkpoint", real)
    engine.train(cfg, tmp_path, progress=False)
    records = store.read_jsonl(tmp_path / store.METRICS_FILE)
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]


class _Stop(Exception):
    pass


def _weights(run_dir) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE, weights_only=False)
    return state["models"]


@pytest.mark.slow
def test_resume_after_interruption_is_bitwise_identical(tiny_overrides, tmp_path) -> None:
    overrides = [*tiny_overrides, "train.epochs=2", "data.augment=true"]
    cfg = load_config(None, overrides)
    straight = engine.train(cfg, tmp_path / "a", progress=False)

    def crash_after_first_epoch(record: dict) -> None:
        if record["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        engine.train(cfg, tmp_path / "b", report=crash_after_first_epoch, progress=False)
    assert store.run_status(tmp_path / "b") == "failed"  # recorded, and resumable
    resumed = engine.train(cfg, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["metrics"] == straight["metrics"] and resumed["steps"] == straight["steps"]
    epochs = [
        r["epoch"]
        for r in store.read_jsonl(tmp_path / "b" / store.METRICS_FILE)
        if r["type"] == "epoch"
    ]
    assert epochs == [1, 2]


def test_non_finite_loss_stops_with_step_and_terms(tiny_cfg, tmp_path, monkeypatch) -> None:
    real = engine.compute_losses
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        terms = real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            return type(terms)(**{**vars(terms), "total": terms.total * float("nan")})
        return terms

    monkeypatch.setattr(engine, "compute_losses", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 1: total=nan, photometric="):
        engine.train(tiny_cfg, tmp_path, progress=False)
    error = store.read_error(tmp_path)
    assert error["type"] == "TrainingError" and "step 1" in error["error"]
    assert store.run_status(tmp_path) == "failed"


def test_failed_graph_capture_names_the_settings_to_change(tiny_cfg, monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(engine, "GraphedStep", fail)
    rt = engine.build_runtime(tiny_cfg, torch.device("cpu"))
    for compiled, fix in [(False, "train.cuda_graph=false$"), (True, r"train.compile=none")]:
        graphed = dataclasses.replace(rt, graph=True, compiled_loss=compiled)
        step = engine.make_step(graphed, engine.make_optimizer(rt))
        with pytest.raises(
            TrainingError, match=r"CUDA graph failed: operation not permitted.*" + fix
        ):
            step({})


@pytest.mark.slow
def test_report_callback_gets_each_epoch(tiny_overrides, tmp_path) -> None:
    cfg = load_config(None, [*tiny_overrides, "train.epochs=2"])
    seen: list[dict] = []
    engine.train(cfg, tmp_path, report=seen.append, progress=False)
    assert [r["epoch"] for r in seen] == [1, 2]
    assert all("abs_rel" in r and r["checkpoint_dir"].endswith(store.CHECKPOINT_DIR) for r in seen)


@pytest.mark.slow
def test_train_runner_rejects_bad_config_with_exit_code_2(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "runners/train.py", "--set", "loss.w_c=-0.1", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "loss.w_c: must be >= 0, got -0.1" in proc.stderr
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())


@pytest.fixture
def both_cores():
    """This test runs alone in its process: let torch use both cores, then restore."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(threads, min(2, os.cpu_count() or 1)))
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.usefixtures("both_cores")
def test_short_cpu_training_learns_depth_on_synthetic_drives(tiny_overrides, tmp_path) -> None:
    """About a minute of training: the photometric loss falls and more pixels get their depth
    within 1.25x (a1) than with the untrained net.

    min_depth 0.01: the networks start at a depth scale near 1/100 of metric (pose outputs are
    x0.01), so Monodepth2's 0.1 would clamp everything nearer than ~10 m in so short a run.
    """
    from depthcore.data import build_test_loader, load_gt_depths, resolve_data
    from depthcore.evaluate import evaluate_model

    overrides = [o for o in tiny_overrides if not o.startswith(("train.", "eval.max", "optim.b"))]
    cfg = load_config(
        None,
        [
            *overrides,
            "data.synthetic.frames=60",
            "model.min_depth=0.01",
            "optim.batch_size=4",
            "optim.lr=2e-4",
            "train.device=cpu",
            "train.epochs=5",
            "train.log_every=5",
            "eval.max_images=16",
            "eval.every_epoch=false",
        ],
    )
    paths = resolve_data(cfg)
    device.seed_everything(cfg.train.seed)  # the same initial networks as the run below
    untrained = engine.build_runtime(cfg, torch.device("cpu")).models
    before = evaluate_model(
        untrained, build_test_loader(cfg, paths), load_gt_depths(paths.gt_path),
        model_cfg=cfg.model, eval_cfg=cfg.eval, scales=(0,), device=torch.device("cpu"),
    )[0].metrics_by_scale[0]  # fmt: skip

    after = engine.train(cfg, tmp_path, progress=False)["metrics"]
    losses = [
        r["loss"] for r in store.read_jsonl(tmp_path / store.METRICS_FILE) if r["type"] == "train"
    ]
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3])
    # a1 (median-scaled): 0.25 untrained, 0.35-0.41 after training with seeds 1-3 and 1234.
    # abs_rel and rmse_log are not asserted: this early they move either way from seed to seed
    # (one of them got worse in 2 of those 4 runs), and with float rounding alone.
    assert after["a1"] > before["a1"] + 0.05


def test_evaluation_streams_batches_and_keeps_only_the_first_predictions(tiny_overrides) -> None:
    """Metrics do not depend on the evaluation batch size; `keep` spans batches and holds the
    first images' predictions only, equal to an evaluation that keeps them all."""
    from depthcore.data import build_test_loader, load_gt_depths, resolve_data
    from depthcore.evaluate import evaluate_model

    cfg = load_config(None, [*tiny_overrides, "eval.max_images=7", "model.scales=[0,1]"])
    paths = resolve_data(cfg, train=False)
    models = engine.build_runtime(cfg, torch.device("cpu")).models
    gts = load_gt_depths(paths.gt_path)

    def run(batch_size: int, keep: int):
        c = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"batch_size": batch_size})})
        return evaluate_model(
            models, build_test_loader(c, paths), gts, model_cfg=c.model, eval_cfg=c.eval,
            scales=(0, 1), device=torch.device("cpu"), keep=keep,
        )  # fmt: skip

    whole, all_preds = run(batch_size=7, keep=7)
    streamed, kept = run(batch_size=2, keep=3)
    assert streamed.metrics_by_scale.keys() == {0, 1} and streamed.n_images == whole.n_images
    for s in (0, 1):
        for name, value in whole.metrics_by_scale[s].items():
            assert streamed.metrics_by_scale[s][name] == pytest.approx(value, rel=1e-6)
    assert [r["image"] for r in streamed.per_image] == [r["image"] for r in whole.per_image]
    assert kept.index == all_preds.index[:3] and len(kept.rgb) == 3
    for s in (0, 1):
        assert len(kept.disp[s]) == 3
        for a, b in zip(kept.disp[s], all_preds.disp[s], strict=False):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert models.training  # evaluation restores the training mode


def test_pose_stream_is_a_cuda_switch(tiny_overrides) -> None:
    # On the CPU there are no streams: the setting is ignored, as train.amp is.
    cfg = load_config(None, [*tiny_overrides, "train.pose_stream=true"])
    assert engine.build_runtime(cfg, torch.device("cpu")).pose_stream is None


def test_load_weights_of_a_run_folder_and_its_errors(tiny_cfg, tmp_path) -> None:
    from depthcore.errors import DataError
    from depthcore.weights import load_weights

    run = tmp_path / "run"
    engine.train(tiny_cfg, run, progress=False)
    models, cfg = load_weights(run)
    assert cfg.run_id() == tiny_cfg.run_id()
    saved = _weights(run)
    assert all(torch.equal(v, saved[k]) for k, v in models.state_dict().items())
    with pytest.raises(DataError, match=r"other model\.\* settings"):  # a different decoder
        load_weights(run, overrides=["model.upsample=subpixel"])
    (run / store.CONFIG_FILE).rename(tmp_path / "config.yaml")
    with pytest.raises(DataError, match="pass the run's config with --config"):
        load_weights(run)
    assert load_weights(run, config=tmp_path / "config.yaml")[1].run_id() == tiny_cfg.run_id()
    ckpt = run / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    with pytest.raises(DataError, match=f"{ckpt}: cannot load the networks"):
        load_weights(run, config=tmp_path / "config.yaml")


def test_predict_files_checks_every_image_before_writing(tiny_cfg, tmp_path) -> None:
    from PIL import Image

    from depthcore.errors import DataError
    from depthcore.networks import build_models
    from depthcore.predict import predict_files

    models = build_models(tiny_cfg.model)
    rng = np.random.default_rng(0)
    good = tmp_path / "a" / "frame.png"
    good.parent.mkdir()
    Image.fromarray(rng.integers(0, 255, (75, 248, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    twin = tmp_path / "b" / "frame.jpg"
    twin.parent.mkdir()
    Image.open(good).save(twin)
    opts = {"cfg_model": tiny_cfg.model, "cfg_data": tiny_cfg.data}
    with pytest.raises(DataError, match=f"{bad}: cannot read image"):
        predict_files(models, [good, bad], tmp_path / "out", **opts)
    with pytest.raises(DataError, match="same name frame"):
        predict_files(models, [good, twin], tmp_path / "out", **opts)
    assert not (tmp_path / "out").exists()
    written = predict_files(models, [good], tmp_path / "out", **opts)
    assert [p.name for p in written] == ["frame_disp.npy", "frame_disp.png"]
    assert np.load(written[0]).shape == (1, 1, 64, 192)
