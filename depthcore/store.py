"""The results store: the on-disk contract between the engine, the sweep runner and the report.

Layout (everything under one results folder, default `results/`):

    runs/<run_id>/              run_id = Config.run_id(), a hash of the resolved config incl. seed
        config.yaml             the resolved Config
        metrics.jsonl           one JSON object per line: {"type": "train"|"epoch", ...}
        final.json              final evaluation (present <=> the run finished)
        per_image.csv           per-image metrics: image, scale, abs_rel ... a3
        predictions.npz         a few test images and their predicted disparities (figures)
        checkpoint/state.pt     the last checkpoint (resume)
        error.json              why the run failed (present <=> it failed)
        lock                    held while a process trains the run
    sweeps/<name>.yaml          the sweep's trials: trial id, run id, swept values, status

Every file is written atomically (temp file + rename), so a reader never sees half a file.
This module imports neither torch nor Ray: the report reads results with it alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from depthcore.errors import DepthcoreError

RUNS_DIR = "runs"
SWEEPS_DIR = "sweeps"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
FINAL_FILE = "final.json"
PER_IMAGE_FILE = "per_image.csv"
PREDICTIONS_FILE = "predictions.npz"
CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "state.pt"
ERROR_FILE = "error.json"
LOCK_FILE = "lock"

STATUSES = ("finished", "failed", "running", "interrupted", "pending")

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


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()


def run_status(run_dir: str | Path) -> str:
    """One of STATUSES, from the files alone."""
    run_dir = Path(run_dir)
    if read_final(run_dir) is not None:
        return "finished"
    if lock_is_held(run_dir):
        return "running"
    if (run_dir / ERROR_FILE).exists():
        return "failed"
    if has_checkpoint(run_dir):
        return "interrupted"
    return "pending"


def list_runs(results: str | Path) -> list[Path]:
    root = runs_root(results)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


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
# Provenance recorded in final.json


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

    Falls back to final.json's `cost` when cost.json is missing or damaged.
    """
    cost = read_json(Path(run_dir) / COST_FILE)
    if cost is None:
        cost = (read_final(run_dir) or {}).get("cost")
    return cost if isinstance(cost, dict) and "device_hours" in cost else None
