"""The results store: the on-disk contract between the engine, the sweep runner and the report.

Layout (everything under one results folder, default `results/`):

    runs/<run_id>/              run_id = Config.run_id(), a hash of the training config incl. seed
        config.yaml             the resolved Config of the training
        metrics.jsonl           one JSON object per line: {"type": "train"|"epoch"|"cost", ...}
        trained.json            the training's record (present <=> training finished)
        evals/<eval_id>/        one evaluation of the trained networks; eval_id = Config.eval_id()
            eval.yaml           its settings (the eval section and the identity hashed)
            final.json          its metrics (present <=> the evaluation finished)
            per_image.csv       per-image metrics: image, scale, abs_rel ... a3
            predictions.npz     a few test images and their predicted disparities (figures)
            error.json          why the evaluation failed (present <=> it failed)
        checkpoint/state.pt     the last checkpoint (resume; later evaluations load it)
        error.json              why the training failed (present <=> it failed)
        stopped.json            a sweep's scheduler stopped the training early (present <=> stopped;
                                removed when the run continues): epoch, last validation metrics
        faults.log              a sweep trial's failed attempts as Ray reported them (appended)
        lock                    held while a process trains or evaluates the run
        cost.json               what the run cost, per process segment (depthcore.cost)
        tb/<label>/             TensorBoard event files (depthcore.tensorboard writes them)
    sweeps/<name>.yaml          the sweep's trials in file order: trial id, run id, eval id, swept
                                values, status, the sweep file's report: labels and columns (and,
                                with adaptive seeds, each arm's seeds_run and stop_reason)
    sweeps/<name>@<id>.yaml     an index a re-evaluation replaced (id: the evaluation it named)
    sweeps/<name>.optuna.journal  an optuna sweep's study (optuna_journal_path)

Run folders of the earlier layout (before evaluations had ids: final.json, per_image.csv and
predictions.npz at the top, no trained.json) are still read: their final.json is the training's
record and the evaluation whose id their config.yaml gives (`find_evaluation`).

Every file is written atomically (temp file + rename), so a reader never sees half a file.
Each file has its writer and its reader here (config.yaml and final.json are written with
`write_text_atomic`/`write_json_atomic`); the engine, the sweep runner and the report use them
and never parse a result file themselves. Readers never raise on half-written or foreign files.
This module imports neither torch nor Ray: the report reads results with it alone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from depthcore.errors import DepthcoreError
from depthcore.metrics import METRIC_NAMES

if TYPE_CHECKING:
    import pandas as pd

RUNS_DIR = "runs"
SWEEPS_DIR = "sweeps"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
TRAINED_FILE = "trained.json"
EVALS_DIR = "evals"
EVAL_CONFIG_FILE = "eval.yaml"
PER_IMAGE_FILE = "per_image.csv"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
ERROR_FILE = "error.json"
STOPPED_FILE = "stopped.json"
FAULTS_FILE = "faults.log"
LOCK_FILE = "lock"

# predictions.npz: image_index (N,), rgb (N, H, W, 3) uint8, scales (S,), disp (N, S, h, w).
PREDICTION_ARRAYS = ("image_index", "rgb", "scales", "disp")

# "trained": the run is trained but lacks the evaluation a trial asks for (run_status);
# "stopped": a sweep's scheduler stopped its training early (stopped.json; --promote continues).
STATUSES = ("finished", "trained", "stopped", "failed", "running", "interrupted", "pending")

# A lock whose heartbeat is older than this is considered abandoned (its owner died).
LOCK_STALE_S = 300.0
LOCK_HEARTBEAT_S = 30.0
# A `lock.break` claim lasts microseconds; one this old was left by a process that died in it.
LOCK_BREAK_STALE_S = 10.0


class RunLockedError(DepthcoreError):
    """Another live process is training this run."""


# ----------------------------------------------------------------------------------------------
# Atomic writes


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates 0600 files; results must be as readable as any other file the user writes.
_FILE_MODE = 0o666 & ~_umask()


def _atomic_write(path: Path, write: Any, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(text), "w")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    _atomic_write(Path(path), lambda fh: fh.write(data), "wb")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_yaml_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def atomic_path(path: str | Path) -> contextlib.AbstractContextManager[Path]:
    """`with atomic_path(p) as tmp:` write to `tmp` with any library; it becomes `p` on success."""
    return _atomic_path(Path(path))


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:  # on disk before the rename makes it the result
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------------------------
# metrics.jsonl


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record as a single line (one write call, flushed and fsynced)."""
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read records; a torn last line (a crash mid-write) or a non-object line is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                records.append(obj)
    return records


def _step_of(record: dict[str, Any]) -> float:
    """A record's step; a damaged one counts as after every checkpoint (dropped on resume)."""
    try:
        return int(record.get("step", 0))
    except (TypeError, ValueError):
        return float("inf")


def remove_partial_files(folder: str | Path) -> None:
    """Delete the temporary files of atomic writes that a killed process left in `folder`
    (their names start with a dot). Only for a run folder whose lock this process holds."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.iterdir():
            if path.name.startswith(".") and path.is_file():
                path.unlink(missing_ok=True)


def truncate_metrics(path: str | Path, max_step: int) -> None:
    """Drop records logged after `max_step` (a resumed run re-logs them from its checkpoint)."""
    path = Path(path)
    if not path.exists():
        return
    kept = [r for r in read_jsonl(path) if _step_of(r) <= max_step]
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept)
    write_text_atomic(path, text)


# ----------------------------------------------------------------------------------------------
# Reading a run folder (never raises on half-written or foreign files)


def runs_root(results: str | Path) -> Path:
    return Path(results) / RUNS_DIR


def run_path(results: str | Path, run_id: str) -> Path:
    return runs_root(results) / run_id


def read_json(path: str | Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_yaml_file(path: str | Path) -> dict[str, Any] | None:
    try:
        obj = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def read_final(run_dir: str | Path) -> dict[str, Any] | None:
    final = read_json(Path(run_dir) / FINAL_FILE)
    return final if final is not None and isinstance(final.get("metrics"), dict) else None


def read_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    return read_yaml_file(Path(run_dir) / CONFIG_FILE)


def read_error(run_dir: str | Path) -> dict[str, Any] | None:
    return read_json(Path(run_dir) / ERROR_FILE)


# ----------------------------------------------------------------------------------------------
# Training and evaluation records


def write_trained(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """trained.json: the training's record (run_id, epochs, steps, seed, device, provenance)."""
    write_json_atomic(Path(run_dir) / TRAINED_FILE, dict(record))


def read_trained(run_dir: str | Path) -> dict[str, Any] | None:
    """The training's record, None until the run finished training; for a run folder of the
    earlier layout, its top-level final.json (which holds the same keys)."""
    trained = read_json(Path(run_dir) / TRAINED_FILE)
    if trained is not None and trained.get("run_id"):
        return trained
    return read_final(run_dir)


def eval_path(run_dir: str | Path, eval_id: str) -> Path:
    """The folder of the run's evaluation `eval_id` (written or not)."""
    return Path(run_dir) / EVALS_DIR / eval_id


def find_evaluation(run_dir: str | Path, eval_id: str | None) -> Path | None:
    """The folder holding the finished evaluation `eval_id` of a run (its final.json,
    per_image.csv and predictions.npz are read from there), or None.

    A run folder of the earlier layout holds one evaluation at its top, the one its config.yaml
    gives. `eval_id` None (a sweep index of that version names none) means that one.
    """
    run_dir = Path(run_dir)
    if eval_id is not None and read_final(eval_path(run_dir, eval_id)) is not None:
        return eval_path(run_dir, eval_id)
    if read_final(run_dir) is None:
        return None
    return run_dir if eval_id is None or legacy_eval_id(run_dir) == eval_id else None


def read_evaluation(run_dir: str | Path, eval_id: str | None) -> dict[str, Any] | None:
    """The final.json of the run's evaluation `eval_id` (find_evaluation), or None."""
    folder = find_evaluation(run_dir, eval_id)
    return read_final(folder) if folder is not None else None


def legacy_eval_id(run_dir: str | Path) -> str | None:
    """The evaluation id of the final.json at the top of a run folder of the earlier layout:
    its config.yaml's; None when the config no longer validates or the final.json belongs to
    another run (or an older recipe)."""
    from depthcore.config import config_from_dict  # pydantic only (no torch), and only here

    tree, final = read_run_config(run_dir), read_final(run_dir)
    if tree is None or final is None:
        return None
    try:
        cfg = config_from_dict(tree)
    except DepthcoreError:
        return None
    if final.get("run_id") not in (cfg.run_id(), cfg.legacy_run_id()):
        return None
    return cfg.eval_id()


def write_eval_config(folder: str | Path, settings: Mapping[str, Any]) -> None:
    """eval.yaml: the evaluation's settings (eval_id, identity, the resolved eval section)."""
    write_yaml_atomic(Path(folder) / EVAL_CONFIG_FILE, dict(settings))


def read_eval_config(folder: str | Path) -> dict[str, Any] | None:
    return read_yaml_file(Path(folder) / EVAL_CONFIG_FILE)


def write_error(
    run_dir: str | Path, *, kind: str, message: str, step: int | None, traceback: str = ""
) -> None:
    """error.json: why the run failed (`kind` is the exception's class name)."""
    write_json_atomic(
        Path(run_dir) / ERROR_FILE,
        {"error": message, "type": kind, "traceback": traceback, "step": step, "time": now()},
    )


def write_stopped(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """stopped.json: a sweep's scheduler stopped the run after epoch `record["epoch"]` (of
    `record["epochs"]`), with its last validation metrics; written by the sweep's driver while
    the trial's worker waits at that epoch's checkpoint, before it is told to stop."""
    write_json_atomic(Path(run_dir) / STOPPED_FILE, dict(record))


def read_stopped(run_dir: str | Path) -> dict[str, Any] | None:
    """The stop record, None when the run was not stopped (or the record is unreadable)."""
    record = read_json(Path(run_dir) / STOPPED_FILE)
    ok = record is not None and isinstance(record.get("epoch"), int)
    return record if ok else None


def stopped_by(run_dir: str | Path, sweep: str | None) -> bool:
    """Whether the scheduler of sweep `sweep` stopped the run (not trained since): that sweep
    leaves it as it is until `--promote`; any other sweep continues it."""
    record = read_stopped(run_dir)
    if record is None or sweep is None or read_trained(run_dir) is not None:
        return False
    return record.get("sweep") == sweep


def clear_stopped(run_dir: str | Path) -> None:
    """The run continues (a promotion, or a sweep that needs it trained): no longer stopped.
    Only by a process that holds the run's lock."""
    (Path(run_dir) / STOPPED_FILE).unlink(missing_ok=True)


def append_fault(run_dir: str | Path, header: str, text: str) -> Path:
    """Append one failed attempt (a header line, then Ray's error in full) to faults.log, a log
    for people (appended like metrics.jsonl; nothing reads it back). Returns its path."""
    path = Path(run_dir) / FAULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"--- {now()}: {header}\n{text.rstrip()}\n\n")
    return path


def now() -> str:
    """The current UTC time as recorded in result files."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_curves(run_dir: str | Path) -> list[dict[str, Any]]:
    """metrics.jsonl records (a torn last line is skipped)."""
    if not run_dir:
        return []
    return read_jsonl(Path(run_dir) / METRICS_FILE)


def read_scales(folder: str | Path) -> dict[int, dict[str, float]]:
    """An evaluation's final.json metrics_by_scale as {scale: {metric: value}}; empty when
    absent. `folder`: the evaluation's (find_evaluation)."""
    final = read_final(folder) if folder else None
    by_scale = (final or {}).get("metrics_by_scale")
    if not isinstance(by_scale, dict):
        return {}
    out = {}
    for scale, metrics in by_scale.items():
        if isinstance(metrics, dict) and str(scale).isdigit():
            out[int(scale)] = {m: as_float(metrics.get(m)) for m in METRIC_NAMES}
    return dict(sorted(out.items()))


def as_float(value: Any) -> float:
    """A finite float, or NaN for anything else (None, bools, text, inf)."""
    if isinstance(value, bool) or value is None:
        return math.nan
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def write_per_image(folder: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """An evaluation's per_image.csv: one row per image and scale (`image`, `scale` and every
    metric)."""
    import pandas as pd  # here, not at the top: the engine and the data code need no pandas

    table = pd.DataFrame(list(rows), columns=["image", "scale", *METRIC_NAMES])
    table = table.astype({"image": str, "scale": str, **dict.fromkeys(METRIC_NAMES, float)})
    write_text_atomic(Path(folder) / PER_IMAGE_FILE, table.to_csv(index=False, na_rep="nan"))


def read_per_image(folder: str | Path, scale: int = 0) -> pd.DataFrame | None:
    """An evaluation's per-image metrics of one scale, indexed by image; None when absent or
    unreadable. `folder`: the evaluation's (find_evaluation)."""
    import pandas as pd

    try:
        table = pd.read_csv(Path(folder) / PER_IMAGE_FILE)
    except (OSError, ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None
    if not {"image", "scale", *METRIC_NAMES} <= set(table.columns):
        return None
    table = table.apply(pd.to_numeric, errors="coerce").dropna(subset=["image", "scale"])
    table = table[table["scale"] == scale].dropna(subset=list(METRIC_NAMES))
    if table.empty:
        return None
    table["image"] = table["image"].astype(int)
    return table.groupby("image")[list(METRIC_NAMES)].mean()


def write_predictions(
    folder: str | Path,
    *,
    image_index: np.ndarray,
    rgb: np.ndarray,
    scales: np.ndarray,
    disp: np.ndarray,
) -> None:
    """predictions.npz (shapes: PREDICTION_ARRAYS), compressed, in the dtypes readers expect."""
    with atomic_path(Path(folder) / PREDICTIONS_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            image_index=np.asarray(image_index, dtype=np.int64),
            rgb=np.asarray(rgb).astype(np.uint8),
            scales=np.asarray(scales, dtype=np.int64),
            disp=np.asarray(disp).astype(np.float32),
        )


def read_predictions(folder: str | Path) -> dict[str, np.ndarray] | None:
    """An evaluation's predictions.npz as arrays, checked for the contract's shapes; None when
    unusable."""
    try:
        with np.load(Path(folder) / PREDICTIONS_FILE, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in PREDICTION_ARRAYS}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    n = arrays["image_index"].shape[0]
    rgb, disp = arrays["rgb"], arrays["disp"]
    ok = rgb.ndim == 4 and rgb.shape[0] == n and rgb.shape[-1] == 3 and disp.ndim == 4
    ok = ok and disp.shape[:2] == (n, arrays["scales"].shape[0])
    return arrays if ok and n > 0 else None


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()


def run_status(run_dir: str | Path, eval_id: str | None = None) -> str:
    """One of STATUSES, from the files alone: the training's status ("finished": trained), or,
    with `eval_id`, a trial's: "finished" only once that evaluation is recorded; a trained run
    without it is "running" while the run's lock is held (being evaluated), "failed" when its
    evaluation failed, else "trained" (to evaluate). A run a scheduler stopped is "stopped"
    from the moment the record is written (its worker may still be letting go of the lock)
    until a process continuing it removes the record."""
    run_dir = Path(run_dir)
    trained = read_trained(run_dir) is not None
    if trained and eval_id is not None:
        if find_evaluation(run_dir, eval_id) is not None:
            return "finished"
        if lock_is_held(run_dir):
            return "running"
        if (eval_path(run_dir, eval_id) / ERROR_FILE).exists():
            return "failed"
        return "trained"
    if trained:
        return "finished"
    if read_stopped(run_dir) is not None:
        return "stopped"
    if lock_is_held(run_dir):
        return "running"
    if (run_dir / ERROR_FILE).exists():
        return "failed"
    if has_checkpoint(run_dir):
        return "interrupted"
    return "pending"


def error_path(run_dir: str | Path, eval_id: str | None = None) -> Path:
    """Where the failure of a trial is recorded: its evaluation's error.json once the run is
    trained (with `eval_id`), else the training's."""
    run_dir = Path(run_dir)
    if eval_id is not None and read_trained(run_dir) is not None:
        return eval_path(run_dir, eval_id) / ERROR_FILE
    return run_dir / ERROR_FILE


def list_runs(results: str | Path) -> list[Path]:
    root = runs_root(results)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


# ----------------------------------------------------------------------------------------------
# The sweep index: sweeps/<name>.yaml (schema: docs/results.md, "Results layout")


def sweep_index_path(results: str | Path, name: str) -> Path:
    return Path(results) / SWEEPS_DIR / f"{name}.yaml"


def optuna_journal_path(results: str | Path, name: str) -> Path:
    """An optuna sweep's study (optuna's JournalFileBackend writes it), beside its index."""
    return Path(results) / SWEEPS_DIR / f"{name}.optuna.journal"


def write_sweep_index(results: str | Path, name: str, index: Mapping[str, Any]) -> Path:
    """Write (replace) the sweep's index; returns its path."""
    path = sweep_index_path(results, name)
    write_yaml_atomic(path, dict(index))
    return path


def read_sweep_index(results: str | Path, name: str) -> dict[str, Any] | None:
    """The sweep's index; None when absent or not a YAML mapping."""
    return read_yaml_file(sweep_index_path(results, name))


def remove_sweep_index(results: str | Path, name: str) -> None:
    """Delete a sweep's index (a kept copy the current index supersedes); absent is fine."""
    sweep_index_path(results, name).unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Claiming a run: a lock file with an owner and a heartbeat, safe across nodes on shared storage


def _lock_owner() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


def _lock_state(lock: Path) -> tuple[bool, dict[str, Any] | None]:
    """(held, owner) of a lock file. One without a readable owner (a claim being written by a
    filesystem without hard links, or a damaged file) counts as held until it goes stale."""
    try:
        age = time.time() - lock.stat().st_mtime
    except FileNotFoundError:
        return False, None
    owner = read_json(lock)
    if owner is None:
        return age < LOCK_STALE_S, None
    return _owner_alive(owner, age), owner


def _owner_alive(owner: dict[str, Any], age: float) -> bool:
    try:
        pid = int(owner.get("pid"))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        pid = None
    if owner.get("host") != socket.gethostname() or pid is None:
        return age < LOCK_STALE_S
    if pid == os.getpid():
        # Ours while our heartbeat keeps it fresh; older, a previous process with our pid left it
        # (a restarted container).
        return age < LOCK_STALE_S
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return age < LOCK_STALE_S * 10


def lock_is_held(run_dir: str | Path) -> bool:
    return _lock_state(Path(run_dir) / LOCK_FILE)[0]


class RunLock:
    """Exclusive claim on a run folder; a heartbeat thread keeps it fresh while held.

    `with RunLock(run_dir):` raises RunLockedError when a live process holds it. A lock left by a
    dead process (same host: pid gone; other host: heartbeat older than LOCK_STALE_S) is taken over.
    The lock file appears with its owner already in it (hard-linked from a written temporary
    file), and a stale one is removed only under a second, short-lived claim (`lock.break`), so
    processes starting together, or together finding a dead owner, never both get the run.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(50):
            if self._create():
                self._thread = threading.Thread(target=self._heartbeat, daemon=True)
                self._thread.start()
                return
            held, owner = _lock_state(self.path)
            if held:
                who = f"{owner.get('host')} pid {owner.get('pid')}" if owner else "another process"
                raise RunLockedError(
                    f"{self.path.parent}: run is being trained by {who}; if that process is "
                    f"gone, delete {self.path}"
                )
            self._break_stale()
        raise RunLockedError(f"{self.path}: could not claim the run lock")

    def _create(self) -> bool:
        fd, tmp = tempfile.mkstemp(prefix=f".{LOCK_FILE}.", dir=self.path.parent)
        try:
            os.fchmod(fd, _FILE_MODE)  # readable by whoever reads the results, like the old lock
            with os.fdopen(fd, "w") as fh:
                json.dump(_lock_owner(), fh)
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                return False
            except OSError:  # no hard links here: create, then fill (briefly empty, see above)
                return self._create_exclusive()
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def _create_exclusive(self) -> bool:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(_lock_owner(), fh)
        return True

    def _break_stale(self) -> None:
        """Remove the lock if it is still stale, holding `lock.break` meanwhile: between one
        process's check and its unlink, no other process can remove a lock just claimed."""
        breaker = self.path.with_name(f"{LOCK_FILE}.break")
        try:
            os.close(os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - breaker.stat().st_mtime > LOCK_BREAK_STALE_S:
                    breaker.unlink()  # its process died within the check
            time.sleep(0.01 + 0.04 * random.random())
            return
        try:
            if not _lock_state(self.path)[0]:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            breaker.unlink()

    def _heartbeat(self) -> None:
        while not self._stop.wait(LOCK_HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        owner = read_json(self.path) or {}
        if owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# ----------------------------------------------------------------------------------------------
# Provenance recorded in trained.json and final.json


def git_commit(repo: str | Path | None = None) -> str | None:
    """The HEAD commit of the checkout holding depthcore (with '+dirty' if modified), or None."""
    repo = Path(repo) if repo else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions(names: tuple[str, ...] = ()) -> dict[str, str]:
    import platform
    from importlib import metadata

    names = names or ("depthsweep", "torch", "torchvision", "numpy", "pillow", "ray", "optuna")
    versions = {"python": platform.python_version()}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def provenance() -> dict[str, Any]:
    return {
        "git_commit": git_commit(),
        "versions": package_versions(),
        "host": socket.gethostname(),
    }


# ----------------------------------------------------------------------------------------------
# What a run cost (depthcore/cost.py computes it; docs/compute.md defines it)

# runs/<run_id>/cost.json: the cost summary (device, share, wall_s, setup_s, train_s, eval_s,
# lost_s, samples, samples_per_s, peak_memory_mb, device_hours, segments) plus `log`, one entry
# per training segment; rewritten at every log point, so it is current while a run trains.
COST_FILE = "cost.json"


def write_cost(run_dir: str | Path, cost: dict[str, Any]) -> None:
    write_json_atomic(Path(run_dir) / COST_FILE, cost)


def read_cost(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's cost so far (plain data, see COST_FILE), or None when none was recorded.

    Falls back to trained.json's `cost` (final.json's in the earlier layout) when cost.json is
    missing or damaged.
    """
    cost = read_json(Path(run_dir) / COST_FILE)
    if cost is None:
        cost = (read_trained(run_dir) or {}).get("cost")
    return cost if isinstance(cost, dict) and "device_hours" in cost else None


# ----------------------------------------------------------------------------------------------
# results/tensorboard/<sweep>/<trial id>: TensorBoard's view of a sweep, named by trial ids

TENSORBOARD_DIR = "tensorboard"


def link_tensorboard(results: str | Path, sweep: str, trial_id: str, run_id: str) -> Path | None:
    """Point results/tensorboard/<sweep>/<trial id> at the run's events folder (a relative
    symlink), so `tensorboard --logdir results/tensorboard` names runs `<sweep>/<trial id>`
    instead of by their hashes. None (nothing linked) while the run has written no events."""
    from depthcore.tensorboard import TB_DIR, label_folder

    events = run_path(results, run_id) / TB_DIR
    folders = sorted(p for p in events.iterdir() if p.is_dir()) if events.is_dir() else []
    if not folders:
        return None
    link = (
        Path(results)
        / TENSORBOARD_DIR
        / label_folder(sweep, sweep)
        / label_folder(trial_id, run_id)
    )
    target = os.path.relpath(folders[0] if len(folders) == 1 else events, link.parent)
    if link.is_symlink() and os.readlink(link) == target:
        return link
    link.parent.mkdir(parents=True, exist_ok=True)
    temporary = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, link)  # atomic: a reader sees the old link or the new one
    return link
