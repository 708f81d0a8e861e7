"""What a sweep will cost before it trains, and what it has spent so far (docs/compute.md).

A run's cost is `setup + steps x seconds per step + evaluation passes x seconds per pass`, at
the rate of its *cost shape* (what changes the step time: image size, batch, encoder, decoder
upsampling, scales, frame ids, amp, compile, loss implementation, device kind). The rate comes,
in order, from finished runs of the same shape in the results store (their cost records), from
a calibration cached in results/calibration.json (`runners/sweep.py SWEEP --dry-run
--calibrate` times a few steps here with depthcore.bench), else it is unknown.

Spent cost is read from the run folders' cost records, so it survives restarts. This module
imports neither torch nor Ray (the runner estimates before either starts).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from depthcore import store
from depthcore.config import Config, config_from_dict
from depthcore.errors import ConfigError
from depthcore.sweep import Resources, Sweep, Trial, first_runs, run_groups

__all__ = [
    "CALIBRATION_FILE",
    "BudgetGate",
    "Rate",
    "SweepEstimate",
    "budget_gate",
    "calibrate",
    "check_budget",
    "cost_shape",
    "device_kind",
    "device_share",
    "estimate_lines",
    "estimate_sweep",
    "eval_passes",
    "index_record",
    "rates_from_runs",
    "read_calibration",
    "spent_device_hours",
    "train_steps",
]

CALIBRATION_FILE = "calibration.json"
CALIBRATE_STEPS, CALIBRATE_WARMUP = 8, 2
# Calibration times training steps only; one test image's forward pass costs about this
# fraction of one training sample's step (one depth pass, no pose net, no loss, no backward).
EVAL_IMAGE_FRACTION = 0.15
TIMINGS = ("step_s", "eval_s", "setup_s", "epoch_s")
SOURCES = ("finished runs", "calibration", "unknown")
Out = Callable[[str], None]


def device_share(resources: Resources, cpus: int | None = None) -> float:
    """The fraction of a device one trial holds: resources.gpu on a GPU, else its CPUs over
    the node's (`cpus`: default this machine's), as the cost records count it."""
    if resources.gpu > 0:
        return float(resources.gpu)
    return min(1.0, resources.cpu / (cpus or os.cpu_count() or 1))


def device_kind(cfg: Config, resources: Resources) -> str:
    """Where a trial trains: on CPU when it asks Ray for no GPU or sets train.device=cpu."""
    return "cpu" if cfg.train.device == "cpu" or resources.gpu == 0 else "cuda"


def cost_shape(cfg: Config, kind: str) -> dict[str, Any]:
    """What changes a training step's time; runs with equal shapes share a rate."""
    return {
        "size": f"{cfg.data.width}x{cfg.data.height}",
        "batch": cfg.optim.batch_size,
        "encoder": cfg.model.encoder,
        "upsample": cfg.model.upsample,
        "scales": list(cfg.model.scales),
        "frame_ids": list(cfg.data.frame_ids),
        "amp": cfg.train.amp,
        "compile": str(cfg.train.compile),
        "loss_impl": cfg.train.loss_impl,
        "device": kind,
    }


def shape_key(shape: Mapping[str, Any]) -> str:
    return json.dumps(dict(shape), sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Steps and evaluation passes of a run


def _lines(path: Path) -> int | None:
    try:
        return sum(1 for line in path.read_text().splitlines() if line.strip())
    except OSError:
        return None


def _split_dir(cfg: Config, name: str) -> Path:
    from depthcore.data.kitti import BUNDLED_SPLITS

    return Path(cfg.data.split_dir) if cfg.data.split_dir else BUNDLED_SPLITS / name


def train_samples(cfg: Config) -> int | None:
    """Training samples: the split file's lines (KITTI), or the synthetic drives' layout."""
    if cfg.data.dataset == "kitti":
        return _lines(_split_dir(cfg, "eigen_zhou") / "train_files.txt")
    from depthcore.data.synthetic import split_sizes  # numpy only, no torch

    return split_sizes(cfg.data.synthetic)["train"]


def test_images(cfg: Config) -> int | None:
    if cfg.data.dataset == "kitti":
        eval_dir = Path(cfg.eval.split_dir) if cfg.eval.split_dir else _split_dir(cfg, "eigen")
        count = _lines(eval_dir / "test_files.txt")
    else:
        from depthcore.data.synthetic import split_sizes

        count = split_sizes(cfg.data.synthetic)["test"]
    if count is None:
        return None
    return min(count, cfg.eval.max_images) if cfg.eval.max_images else count


def train_steps(cfg: Config) -> int | None:
    """epochs x steps per epoch (train.steps_per_epoch caps the split's full batches)."""
    samples = train_samples(cfg)
    if samples is None:
        return cfg.train.epochs * cfg.train.steps_per_epoch if cfg.train.steps_per_epoch else None
    per_epoch = samples // cfg.optim.batch_size
    if cfg.train.steps_per_epoch is not None:
        per_epoch = min(per_epoch, cfg.train.steps_per_epoch)
    return cfg.train.epochs * per_epoch


def eval_passes(cfg: Config) -> int:
    """Evaluations of the test split: one per epoch with eval.every_epoch, plus the final one."""
    return (cfg.train.epochs if cfg.eval.every_epoch else 0) + 1


# ----------------------------------------------------------------------------------------------
# Rates: seconds per step, per evaluation pass, and setup


@dataclass(frozen=True)
class Rate:
    """A cost shape's measured speed; `source` is one of SOURCES."""

    step_s: float
    eval_s: float  # one evaluation pass over the test split
    setup_s: float  # per segment: data, models, restoring
    source: str
    epoch_s: float = 0.0  # untimed work per epoch: the checkpoint, logs, events
    device: str = ""
    runs: int = 0  # finished runs it comes from

    def run_seconds(self, cfg: Config, done_steps: int = 0) -> float | None:
        """Seconds to train `cfg`'s run from `done_steps` on (0: the whole run)."""
        steps = train_steps(cfg)
        if steps is None:
            return None
        remaining = max(0, steps - done_steps)
        left = remaining / steps if steps else 0.0
        per_epoch = eval_passes(cfg) * self.eval_s + cfg.train.epochs * self.epoch_s
        return self.setup_s + remaining * self.step_s + per_epoch * left


def _run_rate(run_dir: Path) -> tuple[str, dict[str, float], str] | None:
    """(shape key, its timings, device) of one finished run, from config.yaml and cost.json."""
    cost, tree = store.read_cost(run_dir), store.read_run_config(run_dir)
    if store.read_trained(run_dir) is None or cost is None or tree is None:
        return None
    try:
        cfg = config_from_dict(tree)
    except ConfigError:
        return None  # an older config schema: its shape is unknown
    samples, train_s = cost.get("samples") or 0, cost.get("train_s") or 0.0
    if samples <= 0 or train_s <= 0:
        return None
    eval_s, setup_s = cost.get("eval_s") or 0.0, cost.get("setup_s") or 0.0
    untimed = (cost.get("wall_s") or 0.0) - setup_s - train_s - eval_s
    timings = {
        "step_s": train_s * cfg.optim.batch_size / samples,
        "eval_s": eval_s / eval_passes(cfg),
        "setup_s": setup_s / max(1, cost.get("segments") or 1),
        "epoch_s": max(0.0, untimed) / cfg.train.epochs,
    }
    kind = str(cost.get("device_kind") or "cpu")
    return shape_key(cost_shape(cfg, kind)), timings, str(cost.get("device") or kind)


def rates_from_runs(results: str | Path) -> dict[str, Rate]:
    """Median timings of the finished runs of each cost shape in the results store."""
    found: dict[str, list[tuple[dict[str, float], str]]] = {}
    for run_dir in store.list_runs(results):
        rate = _run_rate(run_dir)
        if rate is not None:
            found.setdefault(rate[0], []).append((rate[1], rate[2]))
    return {
        key: Rate(
            **{k: statistics.median(t[k] for t, _ in runs) for k in TIMINGS},
            source="finished runs",
            device=runs[-1][1],
            runs=len(runs),
        )
        for key, runs in found.items()
    }


def read_calibration(results: str | Path) -> dict[str, Rate]:
    raw = store.read_json(Path(results) / CALIBRATION_FILE) or {}
    rates = {}
    for key, value in raw.items():
        try:
            rates[key] = Rate(**{**value, "source": "calibration"})
        except TypeError:
            continue  # a newer writer's entry
    return rates


def calibrate(
    cfg: Config, kind: str, results: str | Path, out: Out, *, threads: int | None = None
) -> Rate:
    """Time a few training steps of `cfg`'s shape here (depthcore.bench) and cache the rate
    in results/calibration.json. `threads`: CPU threads, as many as a trial holds (Ray gives a
    trial with resources.cpu N that many), so the step timed is as fast as a trial's."""
    import torch

    from depthcore.bench import Variant, bench_step  # torch: only when calibrating

    train = cfg.train
    variant = Variant(
        "calibration",
        cache=cfg.data.cache,
        fast=train.loss_impl == "fast",
        amp=train.amp,
        graph=train.cuda_graph,
        compile=str(train.compile),
        host_memory=train.host_memory,
        pose_stream=train.pose_stream,
    )  # fmt: skip: the trial's own settings, so the step timed is the step it will train
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        started = time.perf_counter()
        result = bench_step(
            cfg, variant, steps=CALIBRATE_STEPS, warmup=CALIBRATE_WARMUP, breakdown=False
        )
        wall = time.perf_counter() - started
    finally:
        torch.set_num_threads(before)
    step_s = cfg.optim.batch_size / result.sustained_samples_per_s
    images = test_images(cfg) or 0
    rate = Rate(
        step_s=step_s,
        eval_s=images * EVAL_IMAGE_FRACTION * step_s / cfg.optim.batch_size,
        setup_s=max(0.0, wall - (CALIBRATE_STEPS + CALIBRATE_WARMUP) * step_s),
        source="calibration",
        device=_device_label(kind),
        epoch_s=_checkpoint_seconds(cfg, Path(results)),
    )
    path = Path(results) / CALIBRATION_FILE
    cached = store.read_json(path) or {}
    cached[shape_key(cost_shape(cfg, kind))] = {
        k: v for k, v in asdict(rate).items() if k != "source"
    }
    store.write_json_atomic(path, cached)
    out(f"calibrated {cfg.data.width}x{cfg.data.height} batch {cfg.optim.batch_size} on "
        f"{rate.device}: {step_s:.3g} s/step (cached in {path})")  # fmt: skip
    return rate


def _checkpoint_seconds(cfg: Config, results: Path) -> float:
    """Seconds to write a checkpoint of `cfg`'s networks with Adam's two moments (the work
    every epoch does outside the timed phases)."""
    import torch

    from depthcore.engine import build_runtime

    state = build_runtime(cfg, torch.device("cpu")).models.state_dict()
    moments = [{k: v.clone() for k, v in state.items()} for _ in range(2)]
    path = results / ".calibration-checkpoint.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with store.atomic_path(path) as tmp:
        torch.save({"models": state, "moments": moments}, tmp)
    seconds = time.perf_counter() - started
    path.unlink(missing_ok=True)
    return seconds


def _device_label(kind: str) -> str:
    import torch

    from depthcore.cost import device_label
    from depthcore.device import kind_and_name

    return device_label(*kind_and_name(torch.device(kind)))


# ----------------------------------------------------------------------------------------------
# The sweep's estimate


@dataclass
class RunEstimate:
    trial_id: str
    run_id: str
    status: str
    hours: float | None  # device-hours still to spend (None: unknown)
    wall_s: float | None  # the whole run's wall seconds at its rate
    source: str


@dataclass
class SweepEstimate:
    runs: list[RunEstimate]
    share: float
    slots: int  # trials at once on the resources counted
    where: str  # e.g. "with resources.gpu 0.5 on 8 GPUs"
    fewest: int  # runs every sweep trains (adaptive seeds: each arm's first seeds)
    unknown_shapes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def remaining(self) -> list[RunEstimate]:
        return [r for r in self.runs if r.status != "finished"]

    @property
    def known(self) -> bool:
        return all(r.hours is not None for r in self.remaining)

    @property
    def device_hours(self) -> float:
        """Device-hours still to spend (unknown runs count 0)."""
        return sum(r.hours or 0.0 for r in self.remaining)

    @property
    def total_device_hours(self) -> float:
        return sum((r.wall_s or 0.0) * self.share / 3600 for r in self.runs)

    @property
    def source(self) -> str:
        sources = {r.source for r in self.remaining} or {r.source for r in self.runs}
        return next((s for s in reversed(SOURCES) if s in sources), "finished runs")

    def wall_hours(self) -> float:
        walls = [r.hours / self.share for r in self.remaining if r.hours is not None]
        if not walls:
            return 0.0
        return max(max(walls), sum(walls) / max(1, self.slots))


def estimate_sweep(
    sweep: Sweep,
    trials: Sequence[Trial],
    results: str | Path,
    *,
    cpus: int | None = None,
    gpus: int | None = None,
    calibrate_here: bool = False,
    out: Out = print,
) -> SweepEstimate:
    """Each distinct run's remaining device-hours at its shape's rate (see the module doc)."""
    resources = sweep.file.resources
    share = device_share(resources, cpus)
    rates = {**read_calibration(results), **rates_from_runs(results)}
    runs: list[RunEstimate] = []
    unknown: dict[str, dict[str, Any]] = {}
    for run_id, group in run_groups(trials).items():
        cfg = group[0].config
        kind = device_kind(cfg, resources)
        key = shape_key(cost_shape(cfg, kind))
        run_dir = store.run_path(results, run_id)
        status = store.run_status(run_dir)
        if key not in rates and calibrate_here and status != "finished":
            threads = max(1, int(resources.cpu)) if kind == "cpu" else None
            rates[key] = calibrate(cfg, kind, results, out, threads=threads)
        rate = rates.get(key)
        if rate is None and status != "finished":
            unknown.setdefault(key, cost_shape(cfg, kind))
        runs.append(_run_estimate(group[0], status, rate, run_dir, share))
    slots, where = _slots(sweep, resources, cpus, gpus)
    fewest = len(first_runs(sweep, trials))
    return SweepEstimate(runs, share, slots, where, fewest, list(unknown.values()))


def _run_estimate(
    trial: Trial, status: str, rate: Rate | None, run_dir: Path, share: float
) -> RunEstimate:
    source = rate.source if rate is not None else "unknown"
    if status == "finished" or rate is None:
        whole = rate.run_seconds(trial.config) if rate is not None else None
        hours = 0.0 if status == "finished" else None
        return RunEstimate(trial.trial_id, trial.run_id, status, hours, whole, source)
    done = ((store.read_cost(run_dir) or {}).get("samples") or 0) // trial.config.optim.batch_size
    left = rate.run_seconds(trial.config, done)
    whole = rate.run_seconds(trial.config)
    hours = left * share / 3600 if left is not None else None
    return RunEstimate(trial.trial_id, trial.run_id, status, hours, whole, source)


def _slots(
    sweep: Sweep, resources: Resources, cpus: int | None, gpus: int | None
) -> tuple[int, str]:
    """Trials at once: the devices counted (flags, else this machine's) over each trial's ask,
    capped by max_concurrent."""
    if resources.gpu > 0:
        count = gpus if gpus is not None else _local_gpus()
        slots = int(count / resources.gpu) if count else 1
        where = f"with resources.gpu {resources.gpu:g} on {count} GPU{'s' * (count != 1)}"
    else:
        count = cpus or len(os.sched_getaffinity(0))
        slots = int(count / resources.cpu)
        where = f"with resources.cpu {resources.cpu:g} on {count} CPU{'s' * (count != 1)}"
    if sweep.file.max_concurrent:
        slots = min(slots, sweep.file.max_concurrent)
    return max(1, slots), where


def _local_gpus() -> int:
    import torch  # only for a GPU sweep estimated without --gpus

    return torch.cuda.device_count()


def _hours(value: float) -> str:
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def estimate_lines(est: SweepEstimate, kind: str, *, per_run: bool = True) -> list[str]:
    """--dry-run's estimate: per run, then the total (`66 GPU-h; ... about 4.2 h`)."""
    unit = "GPU-h" if kind == "cuda" else "CPU-h"
    lines = ["estimate (device-hours still to spend, per run):"] if per_run else []
    width = max((len(r.trial_id) for r in est.runs), default=0)
    for r in est.runs if per_run else []:
        cost = "unknown" if r.hours is None else f"{_hours(r.hours)} {unit}"
        lines.append(f"  {r.trial_id:<{width}}  {r.status:<11} {cost}  ({r.source})")
    todo = len(est.remaining)
    total = f"{_hours(est.device_hours)} {unit}"
    unknown = sum(r.hours is None for r in est.remaining)
    if unknown:
        total += f" + {unknown} runs of unknown cost"
    line = f"{len(est.runs)} runs, {len(est.runs) - todo} finished; {todo} to train: {total}"
    if todo:
        line += f"; {est.where} about {_hours(est.wall_hours())} h"
    lines.append(line)
    if est.fewest < len(est.runs):
        lines.append(
            f"adaptive seeds: at least {est.fewest} runs, at most {len(est.runs)}; the "
            f"estimate above is for all {len(est.runs)} (the most)"
        )
    for shape in est.unknown_shapes:
        lines.append(
            f"unknown cost for {_describe(shape)}: no finished run of this shape; add "
            "--calibrate to time a few steps here"
        )
    return lines


def _describe(shape: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in shape.items())


def _fmt(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def index_record(est: SweepEstimate) -> dict[str, Any]:
    """The sweep index's `estimate` (the report's Compute section reads it)."""
    return {
        "device_hours": round(est.total_device_hours, 6),
        "remaining_device_hours": round(est.device_hours, 6),
        "runs": len(est.runs),
        "source": est.source,
        "created": store.now(),
    }


# ----------------------------------------------------------------------------------------------
# Spent cost and the budget


def spent_device_hours(results: str | Path, run_ids: Iterable[str]) -> float:
    """Device-hours the runs' cost records hold (a running run: what it spent so far)."""
    return sum(_spent(store.run_path(results, r)) for r in set(run_ids))


def _spent(run_dir: Path) -> float:
    return float((store.read_cost(run_dir) or {}).get("device_hours") or 0.0)


def check_budget(est: SweepEstimate, budget: float, results: str | Path, flag: str) -> None:
    """Refuse (ConfigError, exit 2) a sweep whose spent + remaining estimate exceeds `budget`."""
    spent = spent_device_hours(results, (r.run_id for r in est.runs))
    if not est.known:
        raise ConfigError(
            f"budget {budget:g} device-hours: the cost of {len(est.unknown_shapes)} run shape(s) "
            "is unknown (no finished run of that shape); run the sweep with --dry-run "
            "--calibrate first to time a few steps here"
        )
    need = spent + est.device_hours
    if need > budget:
        raise ConfigError(
            f"budget {budget:g} device-hours ({flag}): {_hours(spent)} spent + "
            f"{_hours(est.device_hours)} estimated for {len(est.remaining)} runs to train = "
            f"{_hours(need)}; raise it (e.g. --budget {math.ceil(need * 1.2 * 100) / 100:g}) or "
            "shrink the sweep"
        )


@dataclass(frozen=True)
class BudgetGate:
    """Whether another trial may start: spent + running cost, read from the run folders, is
    below the budget. Plain data: it travels to Ray workers with the trials."""

    device_hours: float
    results: str
    run_hours: Mapping[str, float]  # run id -> its whole estimated device-hours

    def allows(self) -> bool:
        return self.committed() < self.device_hours

    def committed(self) -> float:
        total = 0.0
        for run_id, estimate in self.run_hours.items():
            run_dir = store.run_path(self.results, run_id)
            spent = _spent(run_dir)
            running = store.run_status(run_dir) == "running"
            total += max(spent, estimate) if running else spent
        return total


def budget_gate(est: SweepEstimate, budget: float, results: str | Path) -> BudgetGate:
    hours = {r.run_id: (r.wall_s or 0.0) * est.share / 3600 for r in est.runs}
    return BudgetGate(float(budget), str(Path(results).resolve()), hours)


def record_estimate(
    sweep: Sweep, trials: Sequence[Trial], results: str | Path, est: SweepEstimate
) -> None:
    """Write the estimate into the sweep index at the sweep's start; a rerun of the same trials
    keeps the first one, so the report compares the cost with what was expected up front."""
    from depthcore.trials import SweepIndex

    index = SweepIndex(sweep, Path(results).resolve(), trials)
    old = index.estimate if isinstance(index.estimate, dict) else {}
    if old.get("runs") != len(est.runs) or old.get("source") == "unknown":
        index.estimate = index_record(est)
    index.write()
