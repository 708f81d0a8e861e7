"""Atomic writers: a write that fails half-way leaves the old file whole and no temporary behind.

The disk "fills" half-way through the new content (RLIMIT_FSIZE, so the write itself fails with
EFBIG after part of the bytes are out), over a file that already holds a result. A plain
`open(path, "w")` would have truncated that result before the failure.
"""

from __future__ import annotations

import contextlib
import errno
import resource
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from depthcore import store

OLD = '{"metrics": {"abs_rel": 0.1}}\n'
LIMIT = 4096  # bytes any file may reach while the disk is "full"
BIG = 16 * LIMIT


@contextlib.contextmanager
def disk_full_after(limit: int) -> Iterator[None]:
    """Writes past `limit` bytes of any file fail with EFBIG (the signal is ignored, not fatal)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def write_text(path: Path) -> None:
    store.write_text_atomic(path, "x" * BIG)


def write_bytes(path: Path) -> None:
    store.write_bytes_atomic(path, b"x" * BIG)


def write_json(path: Path) -> None:
    store.write_json_atomic(path, {"per_image": list(range(BIG // 4))})


def write_through_atomic_path(path: Path) -> None:
    with store.atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(b"x" * BIG)


WRITERS = [write_text, write_bytes, write_json, write_through_atomic_path]


@pytest.mark.parametrize("write", WRITERS, ids=lambda w: w.__name__)
def test_a_write_failing_half_way_keeps_the_old_file(
    write: Callable[[Path], None], tmp_path: Path
) -> None:
    path = tmp_path / store.FINAL_FILE
    path.write_text(OLD)
    with disk_full_after(LIMIT), pytest.raises(OSError) as failure:
        write(path)
    assert failure.value.errno == errno.EFBIG  # it failed in the write, not before
    assert path.read_text() == OLD
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


@pytest.mark.parametrize("write", WRITERS, ids=lambda w: w.__name__)
def test_the_same_write_replaces_the_file_when_the_disk_has_room(
    write: Callable[[Path], None], tmp_path: Path
) -> None:
    path = tmp_path / store.FINAL_FILE
    path.write_text(OLD)
    write(path)
    assert path.stat().st_size >= BIG
    assert list(tmp_path.iterdir()) == [path]


def test_a_failure_inside_atomic_path_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / store.PREDICTIONS_FILE
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), store.atomic_path(path) as tmp:
        tmp.write_bytes(b"half of the new")
        raise RuntimeError("the writing library failed")
    assert path.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [path]
