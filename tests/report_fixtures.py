"""Hand-made results folders for the report tests, written per the results contract.

A helper module, not a test module (pytest does not collect it); the report tests import it from
tests/, which pytest's default import mode puts on sys.path. Its own test is
tests/test_report_fixtures.py.

`write_sweep(results, name, trials)` writes run folders (config.yaml, metrics.jsonl, final.json,
per_image.csv, predictions.npz, error.json) and the sweep index, with known numbers: in the
earlier layout (evaluation at the top of the run folder, no eval_id in the index), or, with
`eval_id`, in evals/<eval_id>/ beside trained.json (the index naming it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from depthcore import store
from depthcore.metrics import METRIC_NAMES


@dataclass
class Trial:
    """One trial of a hand-made sweep. `per_image` is (N, 7) in METRIC_NAMES order; the final
    metrics are its column means unless `metrics` is given."""

    params: dict[str, Any]
    seed: int = 0
    role: str | None = None
    label: str | None = None
    metrics: dict[str, float] | None = None
    per_image: np.ndarray | None = None
    state: str = "finished"  # finished | failed | missing | corrupt | pending
    scales: tuple[int, ...] = (0,)
    predictions: bool = False
    epochs: int = 2
    extra: dict[str, Any] = field(default_factory=dict)

    def run_id(self) -> str:
        blob = json.dumps([self.params, self.seed, self.role, self.label], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def final_metrics(self) -> dict[str, float]:
        if self.metrics is not None:
            return dict(self.metrics)
        assert self.per_image is not None, "give metrics or per_image"
        return dict(zip(METRIC_NAMES, self.per_image.mean(axis=0).tolist(), strict=True))


def write_sweep(
    results: Path,
    name: str,
    trials: list[Trial],
    *,
    dataset: str = "synthetic",
    eval_id: str | None = None,
) -> Path:
    """Write every trial's run folder and `<results>/sweeps/<name>.yaml`; returns the index.
    `eval_id`: the evaluation's folder and the index's eval_id (default: the earlier layout)."""
    swept = list(dict.fromkeys(k for t in trials for k in t.params))
    rows = []
    for i, trial in enumerate(trials):
        if trial.state != "missing":
            write_run(store.run_path(results, trial.run_id()), trial, dataset, eval_id)
        rows.append(
            {
                "trial_id": f"t{i:03d}",
                "run_id": trial.run_id(),
                **({"eval_id": eval_id} if eval_id else {}),
                "label": trial.label,
                "role": trial.role,
                "params": trial.params,
                "seed": trial.seed,
                "status": "finished" if trial.state == "finished" else "pending",
            }
        )
    index = {
        "name": name,
        "sweep_file": f"sweeps/{name}.yaml",
        "updated": "2026-01-01T00:00:00",
        "metric": "abs_rel",
        "mode": "min",
        "swept": swept,
        "trials": rows,
    }
    return store.write_sweep_index(results, name, index)


def write_run(run_dir: Path, trial: Trial, dataset: str, eval_id: str | None = None) -> None:
    config = {"data": {"dataset": dataset}, "train": {"seed": trial.seed}, "loss": {}}
    for key, value in trial.params.items():
        section, leaf = key.split(".", 1)
        config.setdefault(section, {})[leaf] = value
    store.write_yaml_atomic(run_dir / store.CONFIG_FILE, config)
    _write_curves(run_dir, trial)
    if trial.state == "pending":
        return
    if trial.state == "failed":
        store.write_json_atomic(
            run_dir / store.ERROR_FILE,
            {
                "error": "loss is NaN at step 7",
                "type": "TrainingError",
                "traceback": "...",
                "step": 7,
                "time": "2026-01-01T00:00:00",
            },
        )
        return
    folder = run_dir
    if eval_id is not None:
        store.write_trained(run_dir, {"run_id": trial.run_id(), "seed": trial.seed})
        folder = store.eval_path(run_dir, eval_id)
    _write_final(folder, trial)
    if trial.per_image is not None:
        _write_per_image(folder, trial)
    if trial.predictions:
        _write_predictions(folder, trial)
    if trial.state == "corrupt":  # a crash mid-write: torn files everywhere
        (folder / store.FINAL_FILE).write_text('{"run_id": "x", "metrics": {"abs_')
        with open(run_dir / store.METRICS_FILE, "a") as fh:
            fh.write('{"type": "epoch", "epoch": 3, "abs_re')
        text = (folder / store.PER_IMAGE_FILE).read_text() if trial.per_image is not None else ""
        (folder / store.PER_IMAGE_FILE).write_text(text[: len(text) // 2])


def _write_curves(run_dir: Path, trial: Trial) -> None:
    path = run_dir / store.METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    final = trial.final_metrics() if (trial.metrics or trial.per_image is not None) else {}
    for epoch in range(1, trial.epochs + 1):
        for step in range((epoch - 1) * 4 + 1, epoch * 4 + 1, 2):
            loss = 0.2 / step + trial.seed * 1e-3
            store.append_jsonl(
                path,
                {
                    "type": "train",
                    "epoch": epoch,
                    "step": step,
                    "loss": loss,
                    "lr": 1e-4,
                    "time_s": step * 0.1,
                },
            )
        worse = 1.0 + 0.1 * (trial.epochs - epoch)
        record = {m: v * worse for m, v in final.items()}
        store.append_jsonl(
            path,
            {
                "type": "epoch",
                "epoch": epoch,
                "step": epoch * 4,
                "train_loss": 0.1,
                "lr": 1e-4,
                "time_s": 1.0,
                **record,
            },
        )


def _write_final(run_dir: Path, trial: Trial) -> None:
    metrics = trial.final_metrics()
    by_scale = {str(s): {m: v * (1 + 0.05 * s) for m, v in metrics.items()} for s in trial.scales}
    n = 0 if trial.per_image is None else len(trial.per_image)
    store.write_json_atomic(
        run_dir / store.FINAL_FILE,
        {
            "run_id": trial.run_id(),
            "metrics": metrics,
            "metrics_by_scale": by_scale,
            "n_images": n,
            "epochs": trial.epochs,
            "steps": trial.epochs * 4,
            "wall_time_s": 1.0,
            "device": "cpu",
            "seed": trial.seed,
            "git_commit": None,
            "versions": {},
            "host": "test",
            "finished_at": "2026-01-01T00:00:00",
        },
    )


def _write_per_image(run_dir: Path, trial: Trial) -> None:
    assert trial.per_image is not None
    frames = []
    for scale in trial.scales:
        frame = pd.DataFrame(trial.per_image * (1 + 0.05 * scale), columns=list(METRIC_NAMES))
        frame.insert(0, "scale", scale)
        frame.insert(0, "image", np.arange(len(frame)))
        frames.append(frame)
    store.write_text_atomic(run_dir / store.PER_IMAGE_FILE, pd.concat(frames).to_csv(index=False))


def _write_predictions(run_dir: Path, trial: Trial, n: int = 3, h: int = 8, w: int = 16) -> None:
    rng = np.random.default_rng(trial.seed + 7)
    scales = np.array(trial.scales, dtype=np.int64)
    rows = np.linspace(0.01, 0.3, h, dtype=np.float32)[None, None, :, None]
    disp = np.broadcast_to(rows, (n, len(scales), h, w)).copy()
    disp += rng.uniform(0, 0.01, disp.shape).astype(np.float32)
    with store.atomic_path(run_dir / store.PREDICTIONS_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            image_index=np.arange(n, dtype=np.int64),
            scales=scales,
            disp=disp,
            rgb=rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8),
        )


def per_image(base: np.ndarray, shift: float, noise: float, seed: int) -> np.ndarray:
    """Per-image metrics `base` moved by `shift` toward better (errors down, accuracies up)."""
    rng = np.random.default_rng(seed)
    sign = np.array([-1, -1, -1, -1, 1, 1, 1], dtype=float)
    out = base * (1 + sign * shift) + rng.normal(0, noise, base.shape) * base
    out[:, 4:] = np.clip(out[:, 4:], 0, 1)
    return out


def base_images(n: int = 40, seed: int = 0) -> np.ndarray:
    """(n, 7) plausible per-image metrics."""
    rng = np.random.default_rng(seed)
    centre = np.array([0.12, 0.9, 4.8, 0.19, 0.87, 0.95, 0.97])
    spread = np.array([0.03, 0.3, 1.0, 0.04, 0.05, 0.02, 0.01])
    out = centre + rng.normal(0, 1, (n, 7)) * spread
    out[:, :4] = np.abs(out[:, :4])
    out[:, 4:] = np.clip(out[:, 4:], 0, 1)
    return out


def metrics(*values: float) -> dict[str, float]:
    """The seven metrics in the paper's order, as a dict."""
    return dict(zip(METRIC_NAMES, values, strict=True))
