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
from depthcore.sweep import Resources, Sweep, Trial, first_runs, run_groups, seed_values

__all__ = [
    "CALIBRATION_FILE",
    "BudgetGate",
    "Rate",
    "SweepEstimate",
    "budget_gate",
    "calibrate",
    "check_budget",
    "concurrency",
    "concurrency_limit",
    "cost_shape",
    "device_kind",
    "device_share",
    "estimate_lines",
    "estimate_sweep",
    "eval_passes",
    "index_record",
    "needed_budget",
    "race_rounds",
    "rates_from_runs",
    "read_calibration",
    "run_work",
    "spent_device_hours",
    "suggested_budget",
    "train_steps",
]

CALIBRATION_FILE = "calibration.json"
CALIBRATE_STEPS, CALIBRATE_WARMUP = 8, 2
# Calibration times training steps only; one test image's forward pass costs about this
# fraction of one training sample's step (one depth pass, no pose net, no loss, no backward).
EVAL_IMAGE_FRACTION = 0.15
TIMINGS = ("step_s", "eval_s", "setup_s", "epoch_s")
SOURCES = ("finished runs", "calibration", "unknown")
# Run statuses with nothing left to spend: finished, or stopped early by the sweep's own
# scheduler (left as it is until --promote).
DONE = ("finished", "stopped")
Out = Callable[[str], None]
Work = tuple[int, float, int]  # a run's training steps, evaluation passes, epochs


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


def validation_images(cfg: Config) -> int | None:
    """eval.objective=val: the validation frames of a pass, at most (eval.val_images, or the
    split's val_files.txt when shorter)."""
    if cfg.data.dataset == "kitti":
        count = _lines(_split_dir(cfg, "eigen_zhou") / "val_files.txt")
    else:
        from depthcore.data.synthetic import split_sizes

        count = split_sizes(cfg.data.synthetic)["val"]
    return None if count is None else min(count, cfg.eval.val_images)


def eval_passes(cfg: Config) -> float:
    """Evaluations, in passes over the test split: one per epoch with eval.every_epoch, plus
    the final one; with eval.objective=val the per-epoch passes score the validation frames,
    each the fraction validation frames / test images of a test pass."""
    per_epoch: float = cfg.train.epochs if cfg.eval.every_epoch else 0
    if cfg.eval.objective == "val":
        val, test = validation_images(cfg), test_images(cfg)
        if val is not None and test:
            per_epoch *= val / test
    return per_epoch + 1


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
    share: float = 1.0  # the device share it was measured at (a calibration runs alone: 1)

    def run_seconds(self, cfg: Config, done_steps: int = 0) -> float | None:
        """Seconds to train `cfg`'s run from `done_steps` on (0: the whole run)."""
        work = run_work(cfg)
        return None if work is None else self.seconds(work, done_steps)

    def seconds(self, work: Work, done_steps: int = 0) -> float:
        """Seconds for a run of `work` (steps, evaluation passes, epochs) from `done_steps` on."""
        steps, passes, epochs = work
        remaining = max(0, steps - done_steps)
        left = remaining / steps if steps else 0.0
        per_epoch = passes * self.eval_s + epochs * self.epoch_s
        return self.setup_s + remaining * self.step_s + per_epoch * left


def run_work(cfg: Config) -> Work | None:
    """(training steps, evaluation passes, epochs) of `cfg`'s run; None when the steps are
    unknown (a KITTI split file that is not there)."""
    steps = train_steps(cfg)
    return None if steps is None else (steps, eval_passes(cfg), cfg.train.epochs)


def _run_rate(run_dir: Path) -> tuple[str, dict[str, float], str, float] | None:
    """(shape key, its timings, device, share) of one finished run, from config.yaml and
    cost.json."""
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
    share = float(cost.get("share") or 1.0)
    return shape_key(cost_shape(cfg, kind)), timings, str(cost.get("device") or kind), share


def rates_from_runs(
    results: str | Path, *, share: float | None = None, run_ids: Iterable[str] | None = None
) -> dict[str, Rate]:
    """Median timings of the finished runs of each cost shape in the results store (`run_ids`:
    only those runs). With `share`, runs that held that share of their device are preferred:
    packed trials train slower than one alone, and their records measure by how much."""
    found: dict[str, list[tuple[dict[str, float], str, float]]] = {}
    dirs = store.list_runs(results) if run_ids is None else [
        store.run_path(results, r) for r in run_ids
    ]  # fmt: skip
    for run_dir in dirs:
        rate = _run_rate(run_dir)
        if rate is not None:
            found.setdefault(rate[0], []).append(rate[1:])
    rates = {}
    for key, runs in found.items():
        if share is not None:
            runs = [r for r in runs if same_share(r[2], share)] or runs
        rates[key] = Rate(
            **{k: statistics.median(t[k] for t, _, _ in runs) for k in TIMINGS},
            source="finished runs",
            device=runs[-1][1],
            runs=len(runs),
            share=statistics.median(r[2] for r in runs),
        )
    return rates


def same_share(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0.01)


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
    round: int = 0  # adaptive seeds: the race round that trains it (0: the first)
    shape: str = ""  # its cost shape's key
    work: Work | None = None  # steps, evaluation passes, epochs (None: unknown)
    solo: bool = False  # a packed trial priced at the speed of trials that ran alone


@dataclass
class SweepEstimate:
    runs: list[RunEstimate]
    share: float  # of a device per trial, as the cost records will count it (this machine's)
    slots: int | None  # trials at once on the resources counted (None: no device for them)
    where: str  # e.g. "16 trials at once on 8 GPUs", or why no trial can run
    fewest: int  # runs every sweep trains (adaptive seeds: each arm's first seeds)
    unknown_shapes: list[dict[str, Any]] = field(default_factory=list)
    gpu: float = 0.0  # resources.gpu (packing: below 1)
    calibrate_hint: str = "add --calibrate to time a few steps here"

    @property
    def remaining(self) -> list[RunEstimate]:
        return [r for r in self.runs if r.status not in DONE]

    @property
    def known(self) -> bool:
        return all(r.hours is not None for r in self.remaining)

    @property
    def known_hours(self) -> float:
        """Device-hours still to spend by the runs whose cost is known."""
        return sum(r.hours for r in self.remaining if r.hours is not None)

    @property
    def device_hours(self) -> float | None:
        """Device-hours still to spend; None when any run's cost is unknown."""
        return self.known_hours if self.known else None

    @property
    def total_device_hours(self) -> float | None:
        """All the sweep's runs, finished ones included; None when any run's cost is unknown."""
        if any(r.wall_s is None for r in self.runs):
            return None
        return sum((r.wall_s or 0.0) * self.share / 3600 for r in self.runs)

    @property
    def source(self) -> str:
        sources = {r.source for r in self.remaining} or {r.source for r in self.runs}
        return next((s for s in reversed(SOURCES) if s in sources), "finished runs")

    @property
    def rounds(self) -> int:
        """Rounds that train runs one after another (a race's; 1 without adaptive seeds)."""
        return len({r.round for r in self.remaining}) or 1

    def wall_hours(self) -> float:
        """Wall hours of the remaining runs of known cost on `slots` trials at once: per round,
        the longer of its longest run and its runs' total over the slots; rounds one after
        another (a race decides its next round from the last one's results)."""
        total = 0.0
        for k in sorted({r.round for r in self.remaining}):
            walls = [
                r.hours / self.share for r in self.remaining if r.round == k and r.hours is not None
            ]
            if walls:
                total += max(max(walls), sum(walls) / max(1, self.slots or 1))
        return total


def estimate_sweep(
    sweep: Sweep,
    trials: Sequence[Trial],
    results: str | Path,
    *,
    cpus: int | None = None,
    gpus: int | None = None,
    max_concurrent: int | None = None,
    calibrate_here: bool = False,
    out: Out = print,
) -> SweepEstimate:
    """Each distinct run's remaining device-hours at its shape's rate (see the module doc).

    The device-hours count each trial's share of a device of this machine, as the cost records
    will (`cpus`/`gpus` only set how many trials run at once, so the wall time); a packed GPU
    share is priced from finished runs packed alike when there are any.
    """
    resources = sweep.file.resources
    share = device_share(resources)
    rates = {**read_calibration(results), **rates_from_runs(results, share=share)}
    groups = run_groups(trials)
    if calibrate_here:
        _calibrate_missing(sweep, groups, rates, results, out)
    rounds = race_rounds(sweep, trials)
    runs: list[RunEstimate] = []
    unknown: dict[str, dict[str, Any]] = {}
    for run_id, group in groups.items():
        cfg = group[0].config
        kind = device_kind(cfg, resources)
        key = shape_key(cost_shape(cfg, kind))
        run_dir = store.run_path(results, run_id)
        status = store.run_status(run_dir)
        if status == "stopped" and not store.stopped_by(run_dir, sweep.name):
            status = "interrupted"  # stopped by another sweep: this one trains it on
        rate = rates.get(key)
        if rate is None and status not in DONE:
            unknown.setdefault(key, cost_shape(cfg, kind))
        run = _run_estimate(group[0], status, rate, run_dir, share)
        run.round, run.shape, run.work = rounds.get(run_id, 0), key, run_work(cfg)
        run.solo = rate is not None and resources.gpu < 1 and not same_share(rate.share, share)
        runs.append(run)
    mc = max_concurrent or sweep.file.max_concurrent
    slots, where = concurrency(resources, mc, cpus=cpus, gpus=gpus)
    fewest = len(first_runs(sweep, trials))
    hint = _calibrate_hint(resources, gpus)
    return SweepEstimate(
        runs, share, slots, where, fewest, list(unknown.values()), resources.gpu, hint
    )


def race_rounds(sweep: Sweep, trials: Sequence[Trial]) -> dict[str, int]:
    """Run id -> the race round that trains it at the most (adaptive seeds): round 0 trains
    every arm's first `start` seeds, round k each arm's seed start + k. {} without a race."""
    race = sweep.file.adaptive
    if race is None:
        return {}
    seeds = seed_values(sweep)
    return {t.run_id: max(0, seeds.index(t.seed) - race.start + 1) for t in trials}


def _calibrate_missing(
    sweep: Sweep,
    groups: Mapping[str, Sequence[Trial]],
    rates: dict[str, Rate],
    results: str | Path,
    out: Out,
) -> None:
    """--calibrate: time each shape of unknown cost here, once the device each needs is known
    to be here (nothing is timed otherwise)."""
    resources = sweep.file.resources
    todo: dict[str, tuple[Config, str]] = {}
    for run_id, group in groups.items():
        cfg = group[0].config
        kind = device_kind(cfg, resources)
        key = shape_key(cost_shape(cfg, kind))
        finished = store.run_status(store.run_path(results, run_id)) == "finished"
        if key not in rates and not finished:
            todo.setdefault(key, (cfg, kind))
    if any(kind == "cuda" for _, kind in todo.values()) and not _cuda_here():
        raise ConfigError(
            f"--calibrate: {sweep.where('resources')}: the sweep trains on a GPU (gpu "
            f"{resources.gpu:g} per trial) and this machine has none (torch finds no CUDA "
            "device), so there is nothing here to time. Calibrate on a machine with the GPU the "
            f"sweep will use (the timings are cached in {Path(results) / CALIBRATION_FILE}, "
            "which travels with the results folder), or leave out --calibrate"
        )
    threads = max(1, int(resources.cpu))
    for key, (cfg, kind) in todo.items():
        rates[key] = calibrate(cfg, kind, results, out, threads=threads if kind == "cpu" else None)


def _cuda_here() -> bool:
    import torch  # only when calibrating or counting GPUs

    return bool(torch.cuda.is_available())


def _calibrate_hint(resources: Resources, gpus: int | None) -> str:
    if resources.gpu > 0 and gpus is None and _local_gpus() == 0:
        return "add --calibrate on a machine with the GPU the sweep will use (this one has none)"
    return "add --calibrate to time a few steps here"


def _run_estimate(
    trial: Trial, status: str, rate: Rate | None, run_dir: Path, share: float
) -> RunEstimate:
    source = rate.source if rate is not None else "unknown"
    if status in DONE or rate is None:
        whole = rate.run_seconds(trial.config) if rate is not None else None
        hours = 0.0 if status in DONE else None
        return RunEstimate(trial.trial_id, trial.run_id, status, hours, whole, source)
    done = ((store.read_cost(run_dir) or {}).get("samples") or 0) // trial.config.optim.batch_size
    left = rate.run_seconds(trial.config, done)
    whole = rate.run_seconds(trial.config)
    hours = left * share / 3600 if left is not None else None
    return RunEstimate(trial.trial_id, trial.run_id, status, hours, whole, source)


def concurrency(
    resources: Resources,
    max_concurrent: int | None = None,
    *,
    cpus: int | None = None,
    gpus: int | None = None,
) -> tuple[int | None, str]:
    """(trials at once, where): the devices counted over each trial's ask, capped by
    max_concurrent. GPUs: `gpus`, else this machine's; CPUs: `cpus`, else this machine's unless
    `gpus` names GPUs elsewhere. None (and why, in words) when no trial fits."""
    counted = []
    slots: int | None = None
    if resources.gpu > 0:
        n_gpus = gpus if gpus is not None else _local_gpus()
        if n_gpus == 0:
            return None, "no GPU on this machine; add --gpus N for the wall time on N GPUs"
        slots = int(n_gpus // resources.gpu)
        counted.append(_count(n_gpus, "GPU", gpus is None))
        if slots == 0:
            return None, f"no trial fits on {counted[0]} (gpu {resources.gpu:g} per trial)"
    elsewhere = gpus is not None and resources.gpu > 0  # GPUs of another machine: its CPUs too
    n_cpus = cpus if cpus is not None else (None if elsewhere else _local_cpus())
    if n_cpus is not None:
        by_cpu = int(n_cpus // resources.cpu)
        counted.append(_count(n_cpus, "CPU", cpus is None))
        if by_cpu == 0:
            return None, f"no trial fits on {counted[-1]} (cpu {resources.cpu:g} per trial)"
        slots = by_cpu if slots is None else min(slots, by_cpu)
    assert slots is not None  # a CPU count is always given or local without --gpus
    where = " and ".join(counted)
    if max_concurrent and max_concurrent < slots:
        slots, where = max_concurrent, f"{where}, max_concurrent {max_concurrent}"
    return slots, f"{slots} trial{'s' * (slots != 1)} at once on {where}"


def concurrency_limit(
    resources: Resources, *, cpus: int | None = None, gpus: int | None = None
) -> int | None:
    """The most trials at once that --cpus N / --gpus N allow (None: no such flag)."""
    limits = []
    if cpus is not None:
        limits.append(max(1, int(cpus // resources.cpu)))
    if gpus is not None and resources.gpu > 0:
        limits.append(max(1, int(gpus // resources.gpu)))
    return min(limits) if limits else None


def _count(n: int, unit: str, here: bool) -> str:
    return f"{n} {unit}{'s' * (n != 1)}" + (" (this machine)" if here else "")


def _local_gpus() -> int:
    import torch  # only for a GPU sweep estimated without --gpus

    return torch.cuda.device_count()


def _local_cpus() -> int:
    return len(os.sched_getaffinity(0))


def _hours(value: float) -> str:
    return f"{value:.3g}" if value >= 0.01 else f"{value:.2g}"


def estimate_lines(est: SweepEstimate, kind: str, *, per_run: bool = True) -> list[str]:
    """--dry-run's estimate: per run, then the total (`66 GPU-h; ...`) and the wall time.
    An unknown cost is said to be unknown, never counted as 0."""
    unit = "GPU-h" if kind == "cuda" else "CPU-h"
    lines = ["estimate (device-hours still to spend, per run):"] if per_run else []
    width = max((len(r.trial_id) for r in est.runs), default=0)
    for r in est.runs if per_run else []:
        cost = "unknown" if r.hours is None else f"{_hours(r.hours)} {unit}"
        lines.append(f"  {r.trial_id:<{width}}  {r.status:<11} {cost}  ({r.source})")
    todo = len(est.remaining)
    line = f"{len(est.runs)} runs, {len(est.runs) - todo} finished; {todo} to train"
    if todo:
        line += f": {_total(est, unit)}"
    lines.append(line)
    if todo:
        lines.append(_wall_line(est))
    if est.fewest < len(est.runs):
        lines.append(
            f"adaptive seeds: at least {est.fewest} runs, at most {len(est.runs)}; the "
            f"estimate above is for all {len(est.runs)} (the most)"
        )
    solo = sum(r.solo for r in est.remaining)
    if solo and kind == "cuda":
        lines.append(
            f"packing: resources.gpu {est.gpu:g} puts {1 / est.gpu:g} trials on a GPU, but the "
            f"rate of {solo} run{'s' * (solo != 1)} comes from trials that ran alone (a "
            "calibration or finished runs at another share), so these figures assume a packed "
            "trial trains at solo speed; packed trials are slower, so the cost and wall time "
            "above are lower bounds until a run of this shape has finished packed alike"
        )
    for shape in est.unknown_shapes:
        lines.append(
            f"unknown cost for {_describe(shape)}: no finished run of this shape and no "
            f"calibration; {est.calibrate_hint}"
        )
    return lines


def _total(est: SweepEstimate, unit: str) -> str:
    todo = len(est.remaining)
    unknown = sum(r.hours is None for r in est.remaining)
    if unknown == todo:
        return f"cost unknown ({todo} run{'s' * (todo != 1)} of unknown cost)"
    known = f"{_hours(est.known_hours)} {unit}"
    if not unknown:
        return known
    return f"{known} for {todo - unknown} runs + {unknown} runs of unknown cost"


def _wall_line(est: SweepEstimate) -> str:
    if est.slots is None:
        return f"wall time: {est.where}"
    unknown = sum(r.hours is None for r in est.remaining)
    if unknown == len(est.remaining):
        return f"wall time: unknown; {est.where}"
    about = "at least" if unknown else "about"
    line = f"wall time: {about} {_duration(est.wall_hours())}, {est.where}"
    if est.rounds > 1:
        line += f", over at most {est.rounds} race rounds run one after another"
    return line


def _duration(hours: float) -> str:
    return f"{_hours(hours)} h" if hours >= 1 else f"{_hours(hours * 60)} min"


def _describe(shape: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={_fmt(v)}" for k, v in shape.items())


def _fmt(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def index_record(est: SweepEstimate) -> dict[str, Any]:
    """The sweep index's `estimate` (the report's Compute section reads it); an unknown cost is
    recorded as null, never as 0."""
    total, remaining = est.total_device_hours, est.device_hours
    return {
        "device_hours": None if total is None else round(total, 6),
        "remaining_device_hours": None if remaining is None else round(remaining, 6),
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


def needed_budget(est: SweepEstimate, results: str | Path) -> tuple[float, float] | None:
    """(spent, spent + the estimate of the unfinished runs), or None when a cost is unknown."""
    if est.device_hours is None:
        return None
    spent = spent_device_hours(results, (r.run_id for r in est.runs))
    return spent, spent + est.device_hours


def suggested_budget(need: float) -> float:
    """A budget with room for the estimate's error (20%), rounded up to 0.01 device-hours."""
    return math.ceil(need * 1.2 * 100) / 100


def check_budget(est: SweepEstimate, budget: float, results: str | Path, flag: str) -> None:
    """Refuse (ConfigError, exit 2) a sweep whose spent + remaining estimate exceeds `budget`."""
    needed = needed_budget(est, results)
    if needed is None:
        raise ConfigError(
            f"budget {budget:g} device-hours: the cost of {len(est.unknown_shapes)} run shape(s) "
            f"is unknown (no finished run of that shape, no calibration); {est.calibrate_hint}"
        )
    spent, need = needed
    if need > budget:
        raise ConfigError(
            f"budget {budget:g} device-hours ({flag}): {_hours(spent)} spent + "
            f"{_hours(need - spent)} estimated for {len(est.remaining)} runs to train = "
            f"{_hours(need)}; raise it (e.g. --budget {suggested_budget(need):g}) or "
            "shrink the sweep"
        )


@dataclass(frozen=True)
class BudgetGate:
    """Whether another run may start: spent + running cost + its own, read from the run
    folders, fits in the budget. A run is priced at the measured rate of its shape once a run of
    the sweep with that shape has finished, else at the sweep's starting estimate. Plain data:
    it travels to Ray workers with the trials."""

    device_hours: float
    results: str
    run_hours: Mapping[str, float]  # run id -> its whole estimated device-hours at the start
    work: Mapping[str, tuple[str, Work]] = field(default_factory=dict)  # run id -> shape, work
    share: float = 1.0  # of a device per trial, as the cost records count it

    def allows(self, run_id: str | None = None) -> bool:
        """May `run_id` start (its remaining cost fits too)? Without a run: is budget left?"""
        prices = self.prices()
        committed = self.committed(prices)
        if run_id is None:
            return committed < self.device_hours
        own = max(0.0, prices.get(run_id, 0.0) - _spent(store.run_path(self.results, run_id)))
        return committed + own <= self.device_hours

    def prices(self) -> dict[str, float]:
        """Each run's whole device-hours: at its shape's measured rate (the sweep's finished
        runs), else the starting estimate."""
        prices = dict(self.run_hours)
        if not self.work:
            return prices
        rates = rates_from_runs(self.results, share=self.share, run_ids=self.run_hours)
        for run_id, (shape, work) in self.work.items():
            rate = rates.get(shape)
            if rate is not None:
                prices[run_id] = rate.seconds(work) * self.share / 3600
        return prices

    def committed(self, prices: Mapping[str, float] | None = None) -> float:
        """Spent by the sweep's runs, a running run counted at its price until it spent more."""
        prices = self.prices() if prices is None else prices
        total = 0.0
        for run_id in self.run_hours:
            run_dir = store.run_path(self.results, run_id)
            spent = _spent(run_dir)
            running = store.run_status(run_dir) == "running"
            total += max(spent, prices.get(run_id, 0.0)) if running else spent
        return total


def budget_gate(est: SweepEstimate, budget: float, results: str | Path) -> BudgetGate:
    hours = {r.run_id: (r.wall_s or 0.0) * est.share / 3600 for r in est.runs}
    work = {r.run_id: (r.shape, r.work) for r in est.runs if r.work is not None}
    return BudgetGate(float(budget), str(Path(results).resolve()), hours, work, est.share)
