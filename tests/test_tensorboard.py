"""TensorBoard events in the run folder, read back with tensorboard's own EventAccumulator."""

from __future__ import annotations

import pytest

from depthcore import engine
from depthcore.config import load_config
from depthcore.tensorboard import TB_DIR, label_folder

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def _load(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"images": 0})
    acc.Reload()
    return acc


def test_a_run_writes_scalars_images_and_config_under_its_label(
    tiny_overrides, tmp_path, monkeypatch
) -> None:
    cfg = load_config(None, [*tiny_overrides, "train.epochs=2", "train.log_every=1"])
    real = engine.save_checkpoint

    def crash_at_second(run_dir, rt, optimizer, prog):
        if prog.epoch == 2:  # steps 3, 4 and epoch 2 are logged, then redone on resume
            raise KeyboardInterrupt
        return real(run_dir, rt, optimizer, prog)

    monkeypatch.setattr(engine, "save_checkpoint", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        engine.train(cfg, tmp_path, progress=False, label="w/c 0.5")
    monkeypatch.setattr(engine, "save_checkpoint", real)
    engine.train(cfg, tmp_path, progress=False, label="w/c 0.5")
    folders = list((tmp_path / TB_DIR).iterdir())
    assert [f.name for f in folders] == [label_folder("w/c 0.5", cfg.run_id())] == ["w_c_0.5"]
    acc = _load(folders[0])
    tags = acc.Tags()
    for tag in ("train/loss", "train/lr", "train/epoch_loss", "test/abs_rel", "test/a1"):
        assert tag in tags["scalars"], tag
    # The redone steps are purged (purge_step): each step once: 1, 2 (epoch 1), 3, 4 (epoch 2).
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [e.step for e in acc.Scalars("test/abs_rel")] == [2, 4]
    images = [t for t in tags["images"] if t.startswith("disparity/")]
    assert images and [e.step for e in acc.Images(images[0])] == [2, 4]
    assert _purge_steps(folders[0]) == [3]  # the resume told TensorBoard, not only its reader
    assert "config/text_summary" in tags["tensors"]
    text = acc.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert "photometric" in text and len(acc.Tensors("config/text_summary")) == 1


def _purge_steps(folder) -> list[int]:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.compat.proto.event_pb2 import SessionLog

    return [
        event.step
        for path in sorted(folder.glob("events.out.tfevents.*"))
        for event in EventFileLoader(str(path)).Load()
        if event.HasField("session_log") and event.session_log.status == SessionLog.START
    ]


def test_label_folder_is_path_safe_and_falls_back_to_the_run_id() -> None:
    assert label_folder("../a b", "abc") == "a_b"
    assert label_folder(None, "abc") == label_folder("//", "abc") == "abc"
