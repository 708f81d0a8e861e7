"""Error types. Each names what is wrong and how to fix it; runners map them to exit codes."""

from __future__ import annotations


class DepthcoreError(Exception):
    """Base class for errors a user can act on (as opposed to bugs)."""

    exit_code = 1


class ConfigError(DepthcoreError, ValueError):
    """A config or sweep file, or a command-line override, is invalid (exit code 2)."""

    exit_code = 2


class DataError(DepthcoreError):
    """Input data is missing or malformed: a frame, a calibration or split file (exit code 2)."""

    exit_code = 2


class TrainingError(DepthcoreError):
    """Training cannot go on, e.g. a non-finite loss; the run folder records the details."""

    exit_code = 1
