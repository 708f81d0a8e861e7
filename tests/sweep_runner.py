"""Test helper (not a test module): runners/sweep.py in a fresh process that reports, on exit,
whether it ever imported Ray (`RAY_IMPORTED=True|False` on stderr), and a stand-in engine for
fault-injection sweeps on a real local Ray.

`run_sweep_runner(..., stand_in=True)` runs the real runner (pre-flight, Ray, progress lines,
summary) with `stand_in_train` in place of the engine. The stand-in keeps the engine's file
contract (RunLock, config.yaml, cost.json, per_image.csv, final.json, error.json) and takes its
faults from RESULTS/stand_in.json, {run id: {"kill": n, "fail": true, "sleep": s, "shift": x,
"stream": k}}: the first n attempts kill their Ray worker process (as the OOM killer would),
`fail` raises a TrainingError after recording it, `shift` moves the per-image abs_rel (a race's
effect) and `stream` picks the seed noise (configurations with equal streams are identical).

`curve_train` is a stand-in with known learning curves for early stopping (a scheduler's
rungs can be worked out by hand from CURVES): the engine's contract for a trained run
(trained.json, evals/<eval id>/final.json), "val" records, a checkpoint per epoch and resume.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from depthcore import store
from depthcore.errors import TrainingError
from depthcore.metrics import METRIC_NAMES

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "runners" / "sweep.py"
STAND_IN_FILE = "stand_in.json"
ATTEMPTS_FILE = "attempts.jsonl"
SIM_TRAIN_S = 36.0  # the training seconds every stand-in run records in its cost
N_IMAGES = 30
STAND_IN_ENV = "DEPTHSWEEP_TEST_STAND_IN"

# Runs the runner as __main__ and reports, on exit, whether the process ever imported Ray.
# With STAND_IN_ENV set, the engine is swapped for stand_in_train (pickled by value for Ray's
# workers, which cannot import tests/).
PROBE = (
    "import atexit, os, runpy, sys\n"
    "atexit.register(lambda: print('RAY_IMPORTED=%s' % ('ray' in sys.modules), file=sys.stderr))\n"
    f"if os.environ.get({STAND_IN_ENV!r}):\n"
    f"    sys.path.insert(0, {str(REPO / 'tests')!r})\n"
    "    import sweep_runner, depthcore.trials\n"
    "    from ray import cloudpickle\n"
    "    cloudpickle.register_pickle_by_value(sweep_runner)\n"
    "    depthcore.trials.engine_train = lambda: sweep_runner.stand_in_train\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run_sweep_runner(
    *args: str, cwd: Path = REPO, timeout: float = 60, stand_in: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, STAND_IN_ENV: "1"} if stand_in else None
    return subprocess.run(
        [sys.executable, "-c", PROBE, str(RUNNER), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def stand_in_train(
    cfg: Any,
    run_dir: str | Path,
    *,
    report: Any = None,
    progress: bool = False,
    device_share: float | None = None,
) -> dict[str, Any]:
    """A run that takes `sleep` seconds (default 1) and records SIM_TRAIN_S of training at
    `device_share` (as the engine would), unless its plan says to die or fail first."""
    from depthcore.estimate import train_steps

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = (store.read_json(run_dir.parent.parent / STAND_IN_FILE) or {}).get(cfg.run_id(), {})
    with store.RunLock(run_dir):
        final = store.read_final(run_dir)
        if final is not None:
            return final
        (run_dir / store.ERROR_FILE).unlink(missing_ok=True)
        attempt = len(store.read_jsonl(run_dir / ATTEMPTS_FILE))
        workers = cfg.data.num_workers  # as the trial resolved 'auto'
        store.append_jsonl(
            run_dir / ATTEMPTS_FILE, {"start": time.time(), "pid": os.getpid(), "workers": workers}
        )
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        if attempt < plan.get("kill", 0):
            time.sleep(0.3)
            os._exit(1)  # the worker process dies: no error.json, no traceback of ours
        time.sleep(plan.get("sleep", 1.0))
        if plan.get("fail"):
            store.write_error(run_dir, kind="TrainingError", message="non-finite loss", step=1)
            raise TrainingError("non-finite loss")
        share = device_share or 1.0
        steps = train_steps(cfg) or 1
        cost = {
            "run_id": cfg.run_id(),
            "device": "cpu:stand-in",
            "device_kind": "cpu",
            "share": share,
            "wall_s": SIM_TRAIN_S,
            "setup_s": 0.0,
            "train_s": SIM_TRAIN_S,
            "eval_s": 0.0,
            "samples": steps * cfg.optim.batch_size,
            "segments": 1,
            "device_hours": SIM_TRAIN_S * share / 3600,
        }
        store.write_cost(run_dir, cost)
        difficulty = np.random.default_rng(0).uniform(0.1, 0.3, N_IMAGES)
        noise = np.random.default_rng([cfg.train.seed, plan.get("stream", 0)])
        value = difficulty + plan.get("shift", 0.0) + noise.normal(0, 0.003)
        value = value + noise.normal(0, 0.002, N_IMAGES)
        rows = [
            {"image": i, "scale": 0, **dict.fromkeys(METRIC_NAMES, v)} for i, v in enumerate(value)
        ]
        store.write_per_image(run_dir, rows)
        metrics = dict.fromkeys(METRIC_NAMES, float(value.mean()))
        final = {"run_id": cfg.run_id(), "metrics": metrics, "epochs": 1, "cost": cost}
        store.write_json_atomic(run_dir / store.FINAL_FILE, final)
        return final


# loss.w_c -> the validation abs_rel after epoch 1 and after epoch 3 (lower is better).
CURVES = {
    0.1: (0.50, 0.40),
    0.2: (0.60, 0.55),
    0.3: (0.45, 0.47),
    0.4: (0.40, 0.30),
    0.5: (0.55, 0.50),
}


def val_curve(w_c: float, epoch: int) -> float:
    """A known learning curve: CURVES at epochs 1 and 3, their mean at 2, then a slow descent;
    a w_c not in CURVES (an optuna sample) gets w_c + 0.2 / epoch."""
    if round(w_c, 6) not in CURVES:
        return w_c + 0.2 / epoch
    first, third = CURVES[round(w_c, 6)]
    return {1: first, 2: (first + third) / 2}.get(epoch, third - 0.01 * (epoch - 3))


def curve_train(
    cfg: Any, run_dir: str | Path, *, report: Any = None, progress: bool = True
) -> dict[str, Any]:
    """The engine's contract (RunLock, config.yaml, metrics.jsonl with "val" records, a
    checkpoint per epoch and resume from it, stopped.json cleared when a stopped run goes on,
    trained.json then evals/<eval id>/final.json) over a known validation curve. The final
    metric chains every epoch's state, so a skipped or repeated epoch changes it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.RunLock(run_dir):
        found = store.read_evaluation(run_dir, cfg.eval_id())
        if found is not None:
            return found
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        ckpt = run_dir / store.CHECKPOINT_DIR
        state = store.read_json(ckpt / store.CHECKPOINT_FILE) or {"epoch": 0, "x": 1.0}
        store.append_jsonl(run_dir / ATTEMPTS_FILE, {"start_epoch": state["epoch"]})
        store.clear_stopped(run_dir)
        for epoch in range(state["epoch"] + 1, cfg.train.epochs + 1):
            value = val_curve(cfg.loss.w_c, epoch)
            state = {"epoch": epoch, "x": 0.9 * state["x"] + value}
            line = {"type": "epoch", "epoch": epoch, "step": epoch, "train_loss": 1.0}
            store.append_jsonl(run_dir / store.METRICS_FILE, line)
            val = dict.fromkeys(METRIC_NAMES, value)
            store.append_jsonl(
                run_dir / store.METRICS_FILE, {"type": "val", "epoch": epoch, "step": epoch, **val}
            )
            store.write_json_atomic(ckpt / store.CHECKPOINT_FILE, state)
            if report is not None:  # a scheduler's stop raises SystemExit here
                validated = {f"val_{k}": v for k, v in val.items()}
                report({**line, **validated, "checkpoint_dir": str(ckpt)})
        store.write_trained(run_dir, {"run_id": cfg.run_id(), "epochs": cfg.train.epochs})
        final = {"run_id": cfg.run_id(), "eval_id": cfg.eval_id(), "epochs": cfg.train.epochs}
        final["metrics"] = dict.fromkeys(METRIC_NAMES, state["x"] / 10)
        store.write_json_atomic(store.eval_path(run_dir, cfg.eval_id()) / store.FINAL_FILE, final)
        return final


def attempts(results: Path, run_id: str) -> list[dict[str, Any]]:
    return store.read_jsonl(store.run_path(results, run_id) / ATTEMPTS_FILE)
