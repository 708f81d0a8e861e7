"""TensorBoard event files in each run's own folder: `runs/<run_id>/tb/<label>/`.

TensorBoard names a run by its events folder's path relative to `--logdir`, so with
`tensorboard --logdir results/runs` a run shows as `<run_id>/tb/<label>`; a sweep also links
each trial as results/tensorboard/<sweep>/<trial id> (`store.link_tensorboard`), so
`tensorboard --logdir results/tensorboard` names runs by trial alone. The engine writes
only at its log points and epoch ends; SummaryWriter queues events to a background thread.
A resumed run purges the events its killed segment wrote after the checkpoint (purge_step).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

TB_DIR = "tb"
# Predicted disparities written per evaluated epoch (the first test images).
IMAGES = 3


def label_folder(label: str | None, run_id: str) -> str:
    """A folder name for TensorBoard's run list: the label, made path-safe; else the run id."""
    text = re.sub(r"[^\w.=,+-]+", "_", label or "").strip("._")
    return text or run_id


def events_dir(run_dir: Path, label: str | None, run_id: str) -> Path:
    return Path(run_dir) / TB_DIR / label_folder(label, run_id)


class RunBoard:
    """One run's SummaryWriter. `step` is the optimiser step everywhere (so resumes line up)."""

    def __init__(self, folder: Path, resume_step: int, config_text: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        if resume_step == 0 and folder.exists():
            # Nothing was checkpointed: the killed segment's events are all redone.
            shutil.rmtree(folder)
        purge = resume_step + 1 if resume_step > 0 else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        if resume_step == 0:
            self.writer.add_text("config", _as_code(config_text), 0)

    def train(self, step: int, terms: np.ndarray, lr: float) -> None:
        """The last logged loss terms (total, photometric, smoothness) and the learning rate."""
        for name, value in zip(("loss", "photometric", "smoothness"), terms, strict=True):
            self.writer.add_scalar(f"train/{name}", float(value), step)
        self.writer.add_scalar("train/lr", lr, step)

    def epoch(
        self, step: int, record: dict[str, Any], metrics: dict[str, float], split: str = "test"
    ) -> None:
        """The epoch's train loss and the per-epoch evaluation's metrics, under `split` (test,
        or val with eval.objective=val)."""
        self.writer.add_scalar("train/epoch_loss", record["train_loss"], step)
        for name, value in metrics.items():
            self.writer.add_scalar(f"{split}/{name}", value, step)

    def disparities(
        self, step: int, disps: list[np.ndarray], index: list[int], split: str = "test"
    ) -> None:
        for disp, i in zip(disps[:IMAGES], index, strict=False):
            image = _normalised(disp)
            self.writer.add_image(f"disparity/{split}_{i}", image, step, dataformats="HW")

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _normalised(disp: np.ndarray) -> np.ndarray:
    """[0, 1], capped at the 95th percentile like the report's figures (outliers wash out)."""
    top = float(np.percentile(disp, 95)) or 1.0
    return np.clip(disp / top, 0.0, 1.0).astype(np.float32)


def _as_code(text: str) -> str:
    # TensorBoard renders text as markdown; indented lines keep the YAML's layout.
    return "\n".join("    " + line for line in text.splitlines())
