"""Where a loss plugin's module is, and the hash of its file: what the run id needs.

`depthcore.config` asks this module for `source_sha256(fn, path)`; it finds the module's file
without running the module (its parent packages run) and imports neither torch nor the config.
Importing, calling and checking plugins: depthcore/plugins.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import re
import sys
from pathlib import Path

from depthcore.errors import ConfigError

__all__ = ["FN_PATTERN", "HASH_DIGITS", "add_path", "file_sha", "plugin_name", "source_sha256"]

FN_PATTERN = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
# Hex digits of the source hash kept in the run identity, as many as a run id has.
HASH_DIGITS = 16


def plugin_name(fn: str) -> str:
    return f"loss plugin {fn!r}"


# ----------------------------------------------------------------------------------------------
# Finding the module and hashing its file (no import of the module itself)


def add_path(path: str | None) -> None:
    """Put `path` (loss.custom.path) first on sys.path, once."""
    if path and path not in sys.path:
        sys.path.insert(0, path)
        importlib.invalidate_caches()


def source_file(fn: str, path: str | None) -> Path:
    """The file of the plugin's module, found without running it (its parent packages run)."""
    module = fn.partition(":")[0]
    add_path(path)
    try:
        spec = importlib.util.find_spec(module)
    except ModuleNotFoundError:  # its package is missing
        spec = None
    except Exception as exc:  # a parent package failed to import, or is no package
        raise ConfigError(f"{plugin_name(fn)}: cannot look up module {module!r}: {exc}") from None
    if spec is None:
        raise ConfigError(f"{plugin_name(fn)}: no module {module!r}; {_path_fix(fn, path)}")
    if not spec.origin or not Path(spec.origin).is_file():
        raise ConfigError(
            f"{plugin_name(fn)}: {module!r} is a folder without a Python file; name the "
            "module that defines the function (package.module:function)"
        )
    return Path(spec.origin)


def _path_fix(fn: str, path: str | None) -> str:
    module = fn.partition(":")[0]
    top = module.split(".")[0]
    with contextlib.suppress(Exception):
        found = importlib.util.find_spec(top) if top != module else None
        if found is not None and found.submodule_search_locations:
            where = ", ".join(found.submodule_search_locations)
            return f"package {top!r} is {where}, which has no {module.partition('.')[2]!r}"
    if path:
        return f"loss.custom.path is {path}, which holds no {top}/ or {top}.py"
    return (
        f"set loss.custom.path to the folder that holds {top}/ or {top}.py (relative paths "
        "resolve against the current directory), or install the package"
    )


def source_sha256(fn: str, path: str | None) -> str:
    """The first HASH_DIGITS hex digits of the SHA-256 of the plugin module's file."""
    sha = file_sha(str(source_file(fn, path)))
    assert sha is not None  # source_file checked that it is a file
    return sha


def file_sha(path: str | None) -> str | None:
    """The hash as above of the file at `path`, or None when there is no such file."""
    if not path or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:HASH_DIGITS]
