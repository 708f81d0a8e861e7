"""Sweep files: a validated model of the YAML and its pure expansion into trials (no Ray here).

A sweep file names a base engine config and what to vary on top of it:

    name: table2_grid
    base: base/paper_kitti.yaml            # a path (relative to this file), inline keys, or a list
    trials:                                # explicit rows first (label / role: baseline optional)
      - {label: baseline, role: baseline, loss.photometric: standard}
    grid:                                  # then the cartesian product, in the file's order
      loss.w_mae: [0.3, 0.4]
    seeds: [1234]                          # every trial once per seed (sets train.seed)
    # or adaptive seeds (racing): seeds: {start: 2, max: 6} (see depthcore/racing.py)
    report: {labels: {loss.w_mae: '$w_1$'}, columns: [loss.w_mae]}   # the report's table

`load_sweep` checks everything a run would trip over later (unknown keys, empty grids, values
the engine config rejects), naming the file, line and key; `expand` turns the sweep into a
deterministic list of `Trial`s, each holding a validated `Config` and its content-addressed run id.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from depthcore.config import Config, apply_overrides, config_from_dict, deep_merge, set_dotted
from depthcore.errors import ConfigError
from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.racing import SeedPlan
from depthcore.yamlio import (
    KeyPath,
    did_you_mean,
    format_loc,
    format_validation_error,
    line_of,
    parse_override,
    read_yaml,
    read_yaml_document,
)

__all__ = [
    "Range",
    "ReportSpec",
    "Resources",
    "Scheduler",
    "Search",
    "Sweep",
    "SweepFile",
    "Trial",
    "config_key_problem",
    "expand",
    "key_order",
    "load_sweep",
    "plan_lines",
    "run_groups",
    "rungs",
    "selection_line",
    "sweep_from_dict",
    "trial_from_params",
]

SEED_KEY = "train.seed"
TRIAL_META = ("label", "role")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class _Strict(BaseModel):
    # Same rules as the engine config: unknown keys are errors and "0.5" is not a float.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Resources(_Strict):
    """What one trial asks Ray for; fractional GPUs pack several trials on one device."""

    cpu: float = Field(1.0, gt=0, description="CPUs per trial")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; 0.5 = two trials per GPU")

    @field_validator("gpu")
    @classmethod
    def _whole_above_one(cls, value: float) -> float:
        if value > 1 and not float(value).is_integer():
            raise ValueError(f"must be a fraction <= 1 or a whole number, got {value}")
        return value


class Range(_Strict):
    """One search-space entry of `search: optuna`: exactly one of the three forms."""

    uniform: list[float] | None = Field(None, description="[low, high]")
    loguniform: list[float] | None = Field(None, description="[low, high], low > 0")
    choice: list[Any] | None = Field(None, description="categorical values")

    @model_validator(mode="after")
    def _exactly_one(self) -> Range:
        given = [k for k in ("uniform", "loguniform", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of uniform: [low, high], loguniform: [low, high], "
                f"choice: [a, b, ...]; got {given or 'none'}"
            )
        bounds = self.uniform if self.uniform is not None else self.loguniform
        if bounds is not None and (len(bounds) != 2 or not bounds[0] < bounds[1]):
            raise ValueError(f"needs [low, high] with low < high, got {bounds}")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {self.loguniform}")
        if self.choice is not None and not self.choice:
            raise ValueError("choice needs at least one value")
        return self

    def corners(self) -> list[Any]:
        """The values to validate against the engine config: both ends, or every choice."""
        if self.choice is not None:
            return list(self.choice)
        return list(self.uniform if self.uniform is not None else self.loguniform or [])

    def describe(self) -> str:
        if self.choice is not None:
            return f"choice({', '.join(_fmt(v) for v in self.choice)})"
        kind = "uniform" if self.uniform is not None else "loguniform"
        low, high = self.corners()
        return f"{kind}({_fmt(low)}, {_fmt(high)})"


class Search(_Strict):
    """`grid` (default) expands grid and trials; `optuna` samples `space` with TPE."""

    method: Literal["grid", "optuna"] = "grid"
    n_trials: int | None = Field(None, ge=1, description="optuna: number of sampled trials")
    seed: int = Field(1234, ge=0, description="optuna: TPE sampler seed")
    n_startup_trials: int = Field(10, ge=0, description="optuna: random trials before TPE")
    space: dict[str, Range] = Field(default_factory=dict, description="optuna: dotted key -> range")

    @model_validator(mode="after")
    def _fits_method(self) -> Search:
        if self.method == "optuna" and (self.n_trials is None or not self.space):
            raise ValueError("search: optuna needs n_trials and a non-empty space")
        if self.method == "grid" and (self.n_trials is not None or self.space):
            raise ValueError("n_trials and space belong to search: optuna; use grid: for a grid")
        return self


def _values_list(value: Any) -> Any:
    # The usual slip is a single value (`loss.w_c: 0.5`); say what a grid axis looks like.
    if not isinstance(value, list):
        raise ValueError(f"must be a list of values, e.g. [0.4, 0.5], got {value!r}")
    return value


class AdaptiveSeeds(_Strict):
    """`seeds: {start, max}`: race every trial against the baseline, one more seed per round.

    The race stops a trial when `depthcore.report.significance.race_rules` decides it; seeds are
    `first`, `first + 1`, ... (default `first`: the base config's train.seed), so a later sweep
    with a larger `max` continues with the same runs.
    """

    start: int = Field(2, ge=2, description="seeds every trial and the baseline run first")
    max: int = Field(ge=2, description="most seeds a trial gets")
    first: int | None = Field(None, ge=0, description="the first seed (default: train.seed)")
    level: float = Field(0.95, gt=0.5, lt=1, description="the whole race's confidence level")
    spending: Literal["bonferroni", "obrien-fleming"] = "obrien-fleming"
    margin: float | None = Field(
        None, gt=0, description="equivalence margin: stop as no difference"
    )

    @model_validator(mode="after")
    def _start_below_max(self) -> AdaptiveSeeds:
        if self.max < self.start:
            raise ValueError(f"seeds: max ({self.max}) must be >= start ({self.start})")
        return self

    @property
    def plan(self) -> SeedPlan:
        return SeedPlan(self.start, self.max)


class Scheduler(_Strict):
    """`scheduler:`: stop trials early on the per-epoch objective (docs/sweeps.md, "Early
    stopping"). ASHA (Ray Tune's ASHAScheduler, asynchronous successive halving): at each rung,
    epoch grace_epochs x reduction_factor^k (short of train.epochs), a trial whose value is not
    in the best 1/reduction_factor of those recorded at that rung so far stops."""

    type: Literal["asha"] = Field(description="asha: Ray Tune's ASHAScheduler")
    grace_epochs: int = Field(1, ge=1, description="epochs every trial trains before a stop")
    reduction_factor: float = Field(3, gt=1, description="rung spacing; 1/rf of trials go on")


class Budget(_Strict):
    """`budget:`: the most device-hours the sweep may spend (docs/sweeps.md, "Budget")."""

    device_hours: float = Field(gt=0, allow_inf_nan=False, description="GPU- or CPU-hours")


class ReportSpec(_Strict):
    """`report:`: how the report prints the sweep's ablation table (docs/sweeps.md)."""

    labels: dict[str, str] = Field(
        default_factory=dict,
        description="swept key -> column header; $...$ is LaTeX math, e.g. '$w_c$'",
    )
    columns: list[str] | None = Field(
        None, description="the swept keys to show, in this order (default: all, file order)"
    )

    @field_validator("columns")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            twice = next(k for k in value if value.count(k) > 1)
            raise ValueError(f"names {twice!r} twice; list each key once")
        return value


def _seeds_kind(value: Any) -> str:
    # Pick the one member a value is meant for, so errors name its keys (not both members').
    return "race" if isinstance(value, (dict, AdaptiveSeeds)) else "list"


class SweepFile(_Strict):
    """The keys of a sweep file (see the module docstring and docs/sweeps.md, its reference)."""

    name: str
    base: Any = Field(default_factory=dict, description="config path, inline keys, or a list")
    grid: dict[str, Annotated[list[Any], BeforeValidator(_values_list)]] = Field(
        default_factory=dict
    )
    trials: list[dict[str, Any]] = Field(default_factory=list)
    seeds: (
        Annotated[
            Annotated[list[int], Tag("list")] | Annotated[AdaptiveSeeds, Tag("race")],
            Discriminator(_seeds_kind),
        ]
        | None
    ) = None
    search: Search = Search()
    resources: Resources = Resources()
    max_concurrent: int | None = Field(None, ge=1)
    max_failures: int = Field(1, ge=0, description="retries of a failed trial (from checkpoint)")
    budget: Budget | None = None
    scheduler: Scheduler | None = None
    metric: str = "abs_rel"
    mode: Literal["min", "max"] | None = None
    report: ReportSpec = ReportSpec()

    @field_validator("name")
    @classmethod
    def _file_safe(cls, value: str) -> str:
        if not NAME_PATTERN.match(value):
            raise ValueError(
                f"must be a file-name-safe word (letters, digits, '_', '.', '-'), got {value!r}"
            )
        return value

    @field_validator("search", mode="before")
    @classmethod
    def _search_shorthand(cls, value: Any) -> Any:
        return {"method": value} if isinstance(value, str) else value

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(
        cls, value: list[int] | AdaptiveSeeds | None
    ) -> list[int] | AdaptiveSeeds | None:
        if not isinstance(value, list):
            return value
        if not value or len(set(value)) != len(value):
            raise ValueError(f"must be a non-empty list of distinct seeds, got {value}")
        if min(value) < 0:
            raise ValueError(f"seeds must be >= 0, got {value}")
        return value

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRIC_NAMES:
            raise ValueError(f"must be one of {', '.join(METRIC_NAMES)}, got {value!r}")
        return value

    @property
    def resolved_mode(self) -> Literal["min", "max"]:
        return self.mode or ("min" if LOWER_IS_BETTER[self.metric] else "max")

    @property
    def adaptive(self) -> AdaptiveSeeds | None:
        """The race's settings when `seeds: {start, max}`, else None."""
        return self.seeds if isinstance(self.seeds, AdaptiveSeeds) else None

    @property
    def selects(self) -> bool:
        """Whether the sweep selects trials while it runs (an optuna search, or a scheduler
        that stops trials): its per-epoch objective is the validation split by default."""
        return self.search.method == "optuna" or self.scheduler is not None


@dataclass(frozen=True)
class Sweep:
    """A loaded sweep: the validated file plus its resolved base config tree."""

    file: SweepFile
    base: dict[str, Any]  # the engine config tree after `base` and --set overrides
    path: Path | None
    cwd: Path  # relative data paths resolve against it
    lines: Mapping[KeyPath, int]

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def source(self) -> str:
        return str(self.path) if self.path else f"sweep {self.file.name!r}"

    def where(self, *loc: str | int) -> str:
        """'file line N: grid.loss.w_c' for error messages."""
        line = line_of(self.lines, loc)
        at = f" line {line}" if line else ""
        return f"{self.source}{at}: {format_loc(loc)}" if loc else f"{self.source}{at}"


@dataclass(frozen=True)
class Trial:
    """One expanded trial: a validated engine config and where its results live."""

    trial_id: str  # stable and human-readable, unique within the sweep
    run_id: str  # Config.run_id(): the run folder's name
    config: Config
    params: dict[str, Any]  # dotted key -> the value this trial sets (seed excluded)
    label: str | None
    role: str | None
    seed: int
    arm: str = ""  # the trial without its seed: what adaptive seeds race (the id's head)

    @property
    def eval_id(self) -> str:
        """Config.eval_id(): the evaluation of the run this trial asks for (evals/<eval id>)."""
        return self.config.eval_id()


# ----------------------------------------------------------------------------------------------
# Loading


def load_sweep(path: str | Path, overrides: Sequence[str] = ()) -> Sweep:
    """Read and validate a sweep file; `overrides` (`--set k=v`) change the base config.

    Every trial's config is built and validated here, so a sweep that loads will not fail on a
    config problem later. Raises ConfigError naming the file, line and key.
    """
    doc = read_yaml_document(path, kind="sweep", expected="a mapping with name, base, grid, ...")
    return sweep_from_dict(doc.data, path=Path(path), overrides=overrides, lines=doc.lines)


def sweep_from_dict(
    tree: Any,
    *,
    path: Path | None = None,
    overrides: Sequence[str] = (),
    lines: Mapping[KeyPath, int] | None = None,
    cwd: Path | None = None,
) -> Sweep:
    """Validate a sweep given as a dict (`path` only places relative base files and messages)."""
    source = str(path) if path else "sweep"
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: expected a mapping with name, base, grid, ... at the top")
    try:
        spec = SweepFile.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(exc, SweepFile, source=source, lines=lines)
        ) from None
    sweep = Sweep(spec, {}, path, (cwd or Path.cwd()).resolve(), dict(lines or {}))
    base = _select_on_validation(spec, _resolve_base(sweep, spec.base))
    _build(sweep, base, "base")
    _check_overrides(sweep, overrides)
    sweep = Sweep(spec, apply_overrides(base, overrides), path, sweep.cwd, sweep.lines)
    if overrides:
        _build(sweep, sweep.base, f"{sweep.source}: --set {' '.join(overrides)}")
    _validate_keys(sweep)
    _validate_axes(sweep)
    trials = expand(sweep)  # builds (and so validates) every trial's config
    _check_race_evaluations(sweep, trials)
    _check_scheduled_trials(sweep, trials)
    _check_report_columns(sweep, trials)
    _check_loss_plugins(sweep, trials)
    return sweep


def _select_on_validation(spec: SweepFile, base: dict[str, Any]) -> dict[str, Any]:
    """A sweep that selects (search: optuna, or a scheduler) scores its per-epoch objective on
    the validation frames unless its base sets eval.objective: choosing among many trials on
    the test images would make the chosen one's test numbers optimistic."""
    if not spec.selects or "objective" in (base.get("eval") or {}):
        return base
    return deep_merge(base, {"eval": {"objective": "val"}})


def _check_scheduled_trials(sweep: Sweep, trials: Sequence[Trial]) -> None:
    """A scheduler compares the trials' per-epoch objective at the same epochs of the same
    schedule: every trial needs a value every epoch, one length and one objective."""
    spec = sweep.file.scheduler
    if spec is None:
        return
    fixed = ("train.epochs", "eval.objective", "eval.every_epoch", "eval.val_images")
    for key in sweep.file.search.space:
        if key in fixed:
            raise ConfigError(
                f"{sweep.where('search', 'space', key)}: a scheduler compares trials at the "
                f"same epochs of one schedule on one objective; {key} cannot be searched with "
                "scheduler: (set it in base)"
            )
    configs = [t.config for t in trials] or [_build(sweep, sweep.base, "base")]
    every = next((c for c in configs if not c.eval.every_epoch), None)
    if every is not None:
        raise ConfigError(
            f"{sweep.where('scheduler')}: eval.every_epoch is false, so there is no per-epoch "
            "value to stop trials on; set eval.every_epoch: true (or remove scheduler:)"
        )
    for key, values in (
        ("train.epochs", {c.train.epochs for c in configs}),
        ("eval.objective", {c.eval.objective for c in configs}),
    ):
        if len(values) > 1:
            raise ConfigError(
                f"{sweep.where('scheduler')}: the trials set {key} to {sorted(values)}; a "
                f"scheduler compares trials at the same epochs of one schedule, so give {key} "
                "in base only"
            )
    epochs = configs[0].train.epochs
    if spec.grace_epochs >= epochs:
        raise ConfigError(
            f"{sweep.where('scheduler', 'grace_epochs')}: {spec.grace_epochs} is not below "
            f"train.epochs ({epochs}), so no trial could ever be stopped; lower it"
        )


def _check_report_columns(sweep: Sweep, trials: Sequence[Trial]) -> None:
    """A `report.columns` key must take two or more values over the trials (else the report,
    which shows the keys whose values differ, would silently leave it out)."""
    for i, key in enumerate(sweep.file.report.columns or []):
        values = {repr(_dotted(t.config.to_dict(), key)) for t in trials}
        if len(values) == 1:
            raise ConfigError(
                f"{sweep.where('report', 'columns', i)}: {key} is {values.pop()} in every trial, "
                "so it is no column of the table; leave it out (say it in the caption)"
            )


def _dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def _check_loss_plugins(sweep: Sweep, trials: Sequence[Trial]) -> None:
    """Import every loss plugin the sweep uses and run it on tiny images (depthcore.plugins),
    so a bad one stops the sweep here, before Ray starts, naming the plugin and the trial."""
    configs = [(t.trial_id, t.config) for t in trials]
    if sweep.file.search.method == "optuna":
        configs = [("the base config", _build(sweep, sweep.base, "base"))]
    checked: set[str] = set()
    for where, cfg in configs:
        if cfg.loss.photometric != "custom":
            continue
        # A CUDA graph is captured unless the config rules it out (the device is only known on
        # the worker: "auto" counts as CUDA).
        capture = cfg.train.cuda_graph and cfg.train.device != "cpu"
        capture = capture and cfg.train.loss_impl == "fast"
        key = repr((cfg.loss.identity(), cfg.loss.ssim_window, capture))
        if key in checked:
            continue
        checked.add(key)
        from depthcore.plugins import check_plugin

        try:
            check_plugin(cfg.loss, capture=capture)
        except ConfigError as exc:
            raise ConfigError(f"{sweep.source}: {where}: {exc}") from None


def _resolve_base(sweep: Sweep, base: Any) -> dict[str, Any]:
    parts = base if isinstance(base, list) else [base]
    tree: dict[str, Any] = {}
    for i, part in enumerate(parts):
        loc: KeyPath = ("base", i) if isinstance(base, list) else ("base",)
        if isinstance(part, str):
            tree = deep_merge(tree, _read_base_file(sweep, part, loc))
        elif isinstance(part, dict):
            tree = deep_merge(tree, _undot(part, sweep, loc))
        else:
            raise ConfigError(
                f"{sweep.where(*loc)}: expected a config file path or a mapping of config keys, "
                f"got {part!r}"
            )
    return tree


def _read_base_file(sweep: Sweep, name: str, loc: KeyPath) -> dict[str, Any]:
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = (sweep.path.parent if sweep.path else sweep.cwd) / path
    if not path.is_file():
        raise ConfigError(
            f"{sweep.where(*loc)}: base config {name!r} not found (looked for {path.resolve()}; "
            "paths are relative to the sweep file)"
        )
    return read_yaml(path)


def _undot(tree: Mapping[str, Any], sweep: Sweep, loc: KeyPath) -> dict[str, Any]:
    """Inline base keys may be nested sections or dotted keys (`loss.w_c: 0.5`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if not isinstance(key, str):
            raise ConfigError(f"{sweep.where(*loc)}: keys must be strings, got {key!r}")
        if "." in key:
            _require_config_key(sweep, key, (*loc, key))
            set_dotted(out, key, copy.deepcopy(value))
        else:
            out = deep_merge(out, {key: value})
    return out


def _check_overrides(sweep: Sweep, overrides: Sequence[str]) -> None:
    varied = {k for t in sweep.file.trials for k in t if k not in TRIAL_META} | set(sweep.file.grid)
    varied |= set(sweep.file.search.space)
    if sweep.file.seeds is not None:
        varied.add(SEED_KEY)
    for text in overrides:
        key, _ = parse_override(text)
        if key in varied:
            raise ConfigError(
                f"--set {text}: {sweep.source} varies {key} itself; change it in the sweep file "
                "(--set only changes the base config)"
            )


# ----------------------------------------------------------------------------------------------
# Key and value checks (before any expansion, so messages point at the file's line)


def _validate_keys(sweep: Sweep) -> None:
    spec = sweep.file
    _validate_race(sweep)
    for key in spec.grid:
        if "." not in key:
            raise ConfigError(
                f"{sweep.where('grid', key)}: grid keys are dotted config keys (section.key, "
                "e.g. loss.w_c); sweep settings go at the top level"
            )
        _require_config_key(sweep, key, ("grid", key))
        if key == SEED_KEY:
            raise ConfigError(f"{sweep.where('grid', key)}: use the sweep key seeds: [..] instead")
        if not spec.grid[key]:
            raise ConfigError(
                f"{sweep.where('grid', key)}: empty list; give at least one value or remove the key"
            )
    for key in spec.search.space:
        _require_config_key(sweep, key, ("search", "space", key))
    for i, entry in enumerate(spec.trials):
        _validate_trial_entry(sweep, i, entry)
    baselines = [i for i, entry in enumerate(spec.trials) if entry.get("role") == "baseline"]
    if len(baselines) > 1:
        raise ConfigError(
            f"{sweep.where('trials', baselines[1], 'role')}: a second baseline (the first is "
            f"trials item {baselines[0] + 1}); the report compares every row with one baseline"
        )
    _validate_scheduler(sweep)
    if spec.search.method == "optuna":
        _validate_optuna(sweep)
    elif not spec.trials and not spec.grid:
        raise ConfigError(
            f"{sweep.where('name')}: the sweep has no trials; add a grid: or trials: section "
            "(or search: optuna with a space:)"
        )
    _validate_report(sweep)


def _validate_report(sweep: Sweep) -> None:
    """`report:` labels and columns name keys the sweep varies (the table's columns)."""
    varied = key_order(sweep)
    named: list[tuple[str, str | int, str]] = [
        ("labels", key, key) for key in sweep.file.report.labels
    ]
    named += [("columns", i, key) for i, key in enumerate(sweep.file.report.columns or [])]
    for part, loc, key in named:
        if key in varied:
            continue
        problem = config_key_problem(key)
        why = problem or f"{key!r} is not a key this sweep varies"
        hint = "" if problem else did_you_mean(key, varied)
        raise ConfigError(
            f"{sweep.where('report', part, loc)}: {why}{hint}; the table's columns are the "
            f"keys set in trials:, grid: or search.space: ({', '.join(varied) or 'none'})"
        )


def key_order(sweep: Sweep) -> list[str]:
    """The dotted keys the sweep file sets, in its order: trials: entries (first seen), then
    grid:, then search.space: (the report's column order; the seed key is left out)."""
    spec = sweep.file
    keys = [k for entry in spec.trials for k in entry if k not in TRIAL_META]
    keys += [*spec.grid, *spec.search.space]
    return [k for k in dict.fromkeys(keys) if k != SEED_KEY]


def _validate_trial_entry(sweep: Sweep, i: int, entry: Mapping[str, Any]) -> None:
    for key, value in entry.items():
        if key == "label":
            if not isinstance(value, str) or not NAME_PATTERN.match(value) or "," in value:
                raise ConfigError(
                    f"{sweep.where('trials', i, key)}: must be a short name (letters, digits, "
                    f"'_', '.', '-'), got {value!r}"
                )
        elif key == "role":
            if value not in ("baseline", None):
                raise ConfigError(
                    f"{sweep.where('trials', i, key)}: must be 'baseline' or absent, got {value!r}"
                )
        elif "." not in key:
            hint = did_you_mean(key, TRIAL_META)
            raise ConfigError(
                f"{sweep.where('trials', i, key)}: unknown key{hint}; a trial holds dotted config "
                "keys (section.key, e.g. loss.w_c) plus optional label and role"
            )
        else:
            _require_config_key(sweep, key, ("trials", i, key))
            if key == SEED_KEY and sweep.file.seeds is not None:
                raise ConfigError(
                    f"{sweep.where('trials', i, key)}: the sweep's seeds: set train.seed; "
                    "remove one of the two"
                )


def _validate_race(sweep: Sweep) -> None:
    spec = sweep.file
    if spec.adaptive is None or spec.search.method == "optuna":
        return
    if not any(entry.get("role") == "baseline" for entry in spec.trials):
        raise ConfigError(
            f"{sweep.where('seeds')}: seeds: {{start, max}} races every trial against the "
            "baseline; mark one trials: entry with role: baseline"
        )


def _check_race_evaluations(sweep: Sweep, trials: Sequence[Trial]) -> None:
    """A race scores each run once: trials differing only in eval.* keys (one run, two
    evaluations) cannot be separate arms."""
    if sweep.file.adaptive is None:
        return
    evals: dict[str, Trial] = {}
    for trial in trials:
        other = evals.setdefault(trial.run_id, trial)
        if other.eval_id != trial.eval_id:
            raise ConfigError(
                f"{sweep.where('seeds')}: trials {other.trial_id} and {trial.trial_id} train the "
                "same run and differ only in eval.* keys; adaptive seeds race trainings, so give "
                "the eval keys in base (or race without them and re-evaluate afterwards)"
            )


def _validate_scheduler(sweep: Sweep) -> None:
    """Early stopping only where no design needs every trial to finish: a search, or listed
    trials with one seed each."""
    spec = sweep.file
    if spec.scheduler is None:
        return
    if spec.grid:
        raise ConfigError(
            f"{sweep.where('scheduler')}: a grid cannot be stopped early: a pruned grid is no "
            "longer a factorial design (the stopped points would be missing from it, and not at "
            "random), so its edge distribution and main-effect tests would be biased; remove "
            "scheduler: (or list the trials under trials:, or search with search: optuna)"
        )
    if spec.adaptive is not None:
        raise ConfigError(
            f"{sweep.where('scheduler')}: adaptive seeds race finished runs: a seed the "
            "scheduler stopped would leave its configuration's seeds to the lucky ones and the "
            "race's error rate would no longer hold; remove scheduler: or seeds: {start, max}"
        )
    if isinstance(spec.seeds, list) and len(spec.seeds) > 1:
        raise ConfigError(
            f"{sweep.where('scheduler')}: with {len(spec.seeds)} seeds per configuration the "
            "scheduler would stop a configuration's unlucky seeds and keep its lucky ones, so "
            "its finished seeds would overstate it; give one seed (seeds: [1234]) or remove "
            "scheduler:"
        )


def _validate_optuna(sweep: Sweep) -> None:
    spec = sweep.file
    if spec.grid or spec.trials:
        raise ConfigError(
            f"{sweep.where('search')}: search: optuna samples search.space; it cannot also run "
            "grid: or trials: (put those in a separate sweep file)"
        )
    if spec.adaptive is not None:
        raise ConfigError(
            f"{sweep.where('seeds')}: search: optuna cannot race seeds (seeds: {{start, max}}); "
            "give one seed, e.g. seeds: [1234]"
        )
    if isinstance(spec.seeds, list) and len(spec.seeds) > 1:
        raise ConfigError(
            f"{sweep.where('seeds')}: search: optuna takes a single seed (TPE sees one value "
            "per configuration); use one seed or a grid sweep"
        )


def _require_config_key(sweep: Sweep, key: str, loc: KeyPath) -> None:
    problem = config_key_problem(key)
    if problem:
        raise ConfigError(f"{sweep.where(*loc)}: {problem}")


def config_key_problem(key: str) -> str | None:
    """Why `key` is not a dotted engine-config key (with a suggestion), or None when it is.

    Below a free-form mapping (loss.custom.params) every key is allowed: the plugin's own check
    names one it does not take.
    """
    model: type[BaseModel] = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{key!r} is not a config key{_suggest(key)}"
        if i == len(parts) - 1:
            return None
        section = _section_model(field.annotation)
        if section is None and _is_mapping(field.annotation):
            return None
        if section is None:
            return f"{'.'.join(parts[: i + 1])} is a value, not a section; cannot set {key!r}"
        model = section
    return None


def _section_model(ann: Any) -> type[BaseModel] | None:
    """The config section a field holds: `Section` or `Section | None` (loss.custom)."""
    for candidate in (ann, *typing.get_args(ann)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_mapping(ann: Any) -> bool:
    return typing.get_origin(ann) is dict


def _config_keys(model: type[BaseModel] = Config, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _config_keys(ann, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _suggest(key: str) -> str:
    known = _config_keys()
    hint = did_you_mean(key, known)
    # A key in the wrong section (train.w_c) is close to no full key but ends like one.
    same_end = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    if not hint and same_end:
        hint = f" (did you mean {same_end[0]!r}?)"
    return hint or "; config keys look like loss.w_c, model.upsample, train.epochs"


def _validate_axes(sweep: Sweep) -> None:
    """Each grid value and search bound alone on top of the base, for messages with a line."""
    for key, values in sweep.file.grid.items():
        for i, value in enumerate(values):
            _build(sweep, _with(sweep.base, {key: value}), sweep.where("grid", key, i))
    for key, rng in sweep.file.search.space.items():
        for value in rng.corners():
            _build(sweep, _with(sweep.base, {key: value}), sweep.where("search", "space", key))
    space = sweep.file.search.space
    for pick in (0, -1):  # all lows together, then all highs
        ends = {k: r.corners()[pick] for k, r in space.items() if r.choice is None}
        if ends:
            _build(sweep, _with(sweep.base, ends), sweep.where("search", "space"))


def _build(sweep: Sweep, tree: dict[str, Any], where: str) -> Config:
    try:
        return config_from_dict(tree, base_dir=sweep.cwd)
    except ConfigError as exc:
        if where == "base":
            where = f"{sweep.where('base')} (base config)"
        raise ConfigError(f"{where}: {exc}") from None


def _with(tree: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(tree))
    for key, value in values.items():
        set_dotted(out, key, copy.deepcopy(value))
    return out


# ----------------------------------------------------------------------------------------------
# Expansion


def expand(sweep: Sweep) -> list[Trial]:
    """The sweep's trials in the file's order: `trials:` entries, then the grid, each x seeds.

    The grid runs through its axes as the file lists them (the first axis slowest, each axis's
    values in order), as the paper's tables list their rows. A grid trial's values (and so its
    id) are in sorted key order: reordering the file's axes changes neither ids nor run ids.
    `search: optuna` has no fixed trials (returns []).
    """
    spec = sweep.file
    if spec.search.method == "optuna":
        return []
    entries: list[tuple[dict[str, Any], str | None, str | None, str]] = []
    for i, entry in enumerate(spec.trials):
        params = {k: v for k, v in entry.items() if k not in TRIAL_META}
        entries.append((params, entry.get("label"), entry.get("role"), sweep.where("trials", i)))
    axes = list(spec.grid)
    combos = itertools.product(*(spec.grid[a] for a in axes)) if axes else []
    for combo in combos:
        values = dict(zip(axes, combo, strict=True))
        entries.append(({a: values[a] for a in sorted(axes)}, None, None, "grid"))
    names = _short_names([k for params, *_ in entries for k in params])
    seeds = seed_values(sweep)
    trials = [
        _make_trial(sweep, params, label, role, seed, names, where)
        for params, label, role, where in entries
        for seed in seeds
    ]
    _check_unique_ids(sweep, trials)
    return trials


def seed_values(sweep: Sweep) -> list[int | None]:
    """The seeds every trial runs under; adaptive seeds: all `max` the race may use, in order."""
    spec = sweep.file
    if spec.adaptive is not None:
        first = spec.adaptive.first
        if first is None:
            first = _build(sweep, sweep.base, "base").train.seed
        return [first + k for k in range(spec.adaptive.max)]
    return [*spec.seeds] if spec.seeds else [None]


def trial_from_params(sweep: Sweep, params: Mapping[str, Any]) -> Trial:
    """A trial for sampled values (search: optuna): base + params, at the sweep's seed."""
    seed = sweep.file.seeds[0] if isinstance(sweep.file.seeds, list) else None
    names = _short_names(list(sweep.file.search.space))
    where = f"{sweep.source}: sampled trial {dict(params)}"
    return _make_trial(sweep, dict(params), None, None, seed, names, where)


def _make_trial(
    sweep: Sweep,
    params: dict[str, Any],
    label: str | None,
    role: str | None,
    seed: int | None,
    names: Mapping[str, str],
    where: str,
) -> Trial:
    values = dict(params) if seed is None else {**params, SEED_KEY: seed}
    cfg = _build(sweep, _with(sweep.base, values), where)
    shown = {k: v for k, v in params.items() if k != SEED_KEY}
    head = label or ",".join(f"{names.get(k, k)}={_fmt(v)}" for k, v in shown.items())
    trial_id = f"{head},seed={cfg.train.seed}" if head else f"seed={cfg.train.seed}"
    arm = head or "(base config)"
    try:
        run_id = cfg.run_id()  # a loss plugin's source is hashed here (its error names it)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Trial(trial_id, run_id, cfg, shown, label, role, cfg.train.seed, arm)


def _short_names(keys: Iterable[str]) -> dict[str, str]:
    """loss.w_c -> w_c, unless two swept keys share the last part (then the full key)."""
    unique = list(dict.fromkeys(keys))
    last = [k.rsplit(".", 1)[-1] for k in unique]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(unique, last, strict=True)}


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "true" if value is True else "false" if value is False else "null"
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return "+".join(_fmt(v) for v in value)
    if isinstance(value, dict):
        return "{" + ";".join(f"{k}:{_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def _check_unique_ids(sweep: Sweep, trials: list[Trial]) -> None:
    seen: dict[str, int] = {}
    for i, trial in enumerate(trials):
        if trial.trial_id in seen:
            raise ConfigError(
                f"{sweep.source}: two trials have the id {trial.trial_id!r} (entries "
                f"{seen[trial.trial_id] + 1} and {i + 1}); give them distinct labels or values"
            )
        seen[trial.trial_id] = i


def run_groups(trials: Sequence[Trial]) -> dict[str, list[Trial]]:
    """Trials by run id, in first-seen order: trials sharing a run id train once."""
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(trial.run_id, []).append(trial)
    return groups


# ----------------------------------------------------------------------------------------------
# What --dry-run shows


def plan_lines(
    sweep: Sweep, trials: Sequence[Trial], statuses: Mapping[str, str] | None = None
) -> list[str]:
    """--dry-run: one line per trial (id, swept values, run, status), then 'N trials'.

    `statuses`: trial id -> status (depthcore.store.run_status with the trial's eval id)."""
    if sweep.file.search.method == "optuna":
        return _optuna_plan(sweep)
    first = {run_id: group[0].trial_id for run_id, group in run_groups(trials).items()}
    sure = first_runs(sweep, trials)
    width = max((len(t.trial_id) for t in trials), default=0)
    lines = []
    for trial in trials:
        values = " ".join(f"{k}={_fmt(v)}" for k, v in trial.params.items()) or "(base config)"
        notes = [f"run {trial.run_id}"]
        if trial.role:
            notes.append(trial.role)
        if statuses and trial.trial_id in statuses:
            status = statuses[trial.trial_id]
            notes.append("trained: evaluate only" if status == "trained" else status)
        if first[trial.run_id] != trial.trial_id:
            notes.append(f"same run as {first[trial.run_id]}")
        if trial.run_id not in sure:
            notes.append("only if the race needs it")
        lines.append(f"{trial.trial_id:<{width}}  {values}  [{', '.join(notes)}]")
    if len(first) != len(trials):
        lines.append(f"({len(first)} distinct runs: trials with the same config train once)")
    lines.append(f"{len(trials)} trials")
    if sweep.file.scheduler is not None and trials:
        lines.append(selection_line(sweep, trials[0].config))
    race = sweep.file.adaptive
    if race is not None:
        lines.append(
            f"adaptive seeds (start {race.start}, max {race.max}, against the baseline on "
            f"{sweep.file.metric}): at least {len(sure)} runs, at most {len(first)}"
        )
    return lines


def rungs(scheduler: Scheduler, epochs: int) -> list[int]:
    """The epochs at which ASHA judges a trial: grace x rf^k as Ray's ASHAScheduler lays its
    rungs out for max_t = epochs (a rung between two epochs is judged at the next one), short of
    the last epoch (a trial that trained every epoch only has its final evaluation left)."""
    grace, rf = scheduler.grace_epochs, scheduler.reduction_factor
    count = int(math.log(epochs / grace) / math.log(rf) + 1)
    found = sorted({math.ceil(grace * rf**k - 1e-9) for k in range(count)})
    return [epoch for epoch in found if epoch < epochs]


def selection_line(sweep: Sweep, base: Config) -> str:
    """What the sweep selects on and how it stops trials, for --dry-run and the runner."""
    spec = sweep.file
    ev = base.eval
    split = (
        f"validation ({ev.val_images} frames of val_files.txt at most, after every epoch)"
        if ev.objective == "val"
        else "the test split (its selected trials' test numbers are optimistic)"
    )
    line = f"objective: {spec.resolved_mode} {spec.metric} on {split}"
    if spec.scheduler is None:
        return line + "; no early stopping"
    at = ", ".join(str(e) for e in rungs(spec.scheduler, base.train.epochs)) or "none"
    return (
        f"{line}; early stopping: ASHA (grace_epochs {spec.scheduler.grace_epochs}, "
        f"reduction_factor {spec.scheduler.reduction_factor:g}) judges trials at epochs {at} "
        f"of {base.train.epochs}"
    )


def first_runs(sweep: Sweep, trials: Sequence[Trial]) -> set[str]:
    """Run ids every sweep trains: all of them, or with adaptive seeds each arm's first `start`."""
    race = sweep.file.adaptive
    if race is None:
        return {t.run_id for t in trials}
    seeds = seed_values(sweep)[: race.start]
    return {t.run_id for t in trials if t.seed in seeds}


def _optuna_plan(sweep: Sweep) -> list[str]:
    search = sweep.file.search
    lines = [
        f"optuna TPE (seed {search.seed}, {search.n_startup_trials} random startup trials), "
        f"{sweep.file.resolved_mode} {sweep.file.metric}:"
    ]
    lines += [f"  {key} ~ {rng.describe()}" for key, rng in search.space.items()]
    lines.append(f"{search.n_trials} trials")
    lines.append(selection_line(sweep, _build(sweep, sweep.base, "base")))
    return lines
