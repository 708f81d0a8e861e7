"""Timing inside one process: the full training step (synchronised, sustained, per phase), the
loss alone and the data path alone. Every number is a median over timed repetitions after
warm-up."""

from __future__ import annotations

import itertools
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from depthcore.bench.processes import PACK_GO, PACK_READY
from depthcore.bench.sampling import Sampler, peak_memory_mb, reset_peak
from depthcore.bench.variants import Variant, variant_config, with_sections
from depthcore.config import Config
from depthcore.data import build_train_loader, resolve_data
from depthcore.device import resolve_device, seed_everything
from depthcore.engine import (
    Runtime,
    StepFn,
    batch_to_device,
    build_runtime,
    depth_forward,
    loss_forward,
    make_optimizer,
    make_step,
    pose_forward,
    prepare_images,
)
from depthcore.profiling import profile_steps

PHASES = ("data", "depth_net", "pose_net", "warp_and_loss", "backward", "optimiser")


@dataclass
class StepResult:
    variant: str
    samples_per_s: float  # median over all timed steps of all rounds
    step_ms: float
    breakdown_ms: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float = 0.0
    gpu_util_percent: float | None = None  # CUDA: during the sustained steps
    # Steps back to back without a synchronisation between them, as a training run loops (on
    # CUDA the host queues the next step while the GPU runs this one): samples / elapsed.
    sustained_samples_per_s: float = 0.0
    round_samples_per_s: list[float] = field(default_factory=list)  # set by processes._merge_rounds
    step_times_s: list[float] = field(default_factory=list)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _endless(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        loader.sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def _warm_step(
    cfg: Config, warmup: int, *, eager: bool = False
) -> tuple[Runtime, StepFn, Iterator[dict[str, torch.Tensor]]]:
    """The runtime, its training step (eager: without the CUDA graph) and an endless batch
    iterator, after `warmup` steps."""
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    torch.backends.cudnn.benchmark = True
    rt = build_runtime(cfg, device)
    if eager:
        rt = replace(rt, graph=False)
    step = make_step(rt, make_optimizer(rt))  # fused Adam eagerly, capturable in a graph
    batches = _endless(build_train_loader(cfg, resolve_data(cfg)))
    for _ in range(warmup):
        _timed_step(step, rt.device, batches)
    return rt, step, batches


def _timed_phases(
    rt: Runtime, opt: torch.optim.Optimizer, batches: Iterator[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """One step with a synchronisation after every phase: seconds per phase."""
    marks = [time.perf_counter()]

    def mark() -> None:
        _sync(rt.device)
        marks.append(time.perf_counter())

    batch = batch_to_device(next(batches), rt.device)
    mark()
    images, images_aug = prepare_images(rt, batch)
    disps = depth_forward(rt, images_aug)
    mark()
    poses = pose_forward(rt, images_aug)
    mark()
    terms = loss_forward(rt, batch, images, disps, poses)
    mark()
    opt.zero_grad(set_to_none=True)
    terms.total.backward()
    mark()
    opt.step()
    mark()
    return dict(zip(PHASES, (b - a for a, b in itertools.pairwise(marks)), strict=True))


def _timed_step(
    step: StepFn, device: torch.device, batches: Iterator[dict[str, torch.Tensor]]
) -> float:
    start = time.perf_counter()
    step(next(batches))
    _sync(device)
    return time.perf_counter() - start


def bench_step(
    cfg: Config, variant: Variant, *, steps: int, warmup: int, breakdown: bool = True
) -> StepResult:
    """Median samples/s of the full training step, with a per-phase breakdown.

    The breakdown runs the same settings eagerly (a graphed step has no phases to time).
    """
    cfg = variant_config(cfg, variant)
    reset_peak(resolve_device(cfg.train.device))  # peak memory includes weights, graph pools
    rt, step, batches = _warm_step(cfg, warmup)
    with Sampler(rt.device) as sampler:
        times = [_timed_step(step, rt.device, batches) for _ in range(steps)]
    util = None
    if rt.device.type == "cuda":
        window = sustained_steps(step, rt.device, batches, steps)
        sustained, util = steps * cfg.optim.batch_size / window.seconds, window.gpu_util
    else:  # CPU work is synchronous: the timed steps already ran back to back
        sustained = steps * cfg.optim.batch_size / sum(times)
    peak = peak_memory_mb(rt.device, sampler.rss_mb)
    phases: list[dict[str, float]] = []
    if breakdown:
        eager_rt = replace(rt, graph=False)
        eager_opt = make_optimizer(eager_rt)  # fused Adam on the fast path, as the step
        phases = [_timed_phases(eager_rt, eager_opt, batches) for _ in range(max(3, steps // 2))]
    step_s = statistics.median(times)
    return StepResult(
        variant=variant.name,
        samples_per_s=cfg.optim.batch_size / step_s,
        step_ms=1e3 * step_s,
        breakdown_ms={p: 1e3 * statistics.median(ph[p] for ph in phases) for p in PHASES}
        if phases
        else {},
        peak_memory_mb=peak,
        gpu_util_percent=util,
        sustained_samples_per_s=sustained,
        step_times_s=times,
    )


@dataclass(frozen=True)
class Window:
    """A block of steps run back to back: wall-clock start and end (time.time(), comparable
    between processes of one machine), its length and the GPU utilisation during it."""

    start: float
    end: float
    seconds: float
    gpu_util: float | None


def sustained_steps(
    step: StepFn, device: torch.device, batches: Iterator[dict[str, torch.Tensor]], steps: int
) -> Window:
    """`steps` steps with one synchronisation at the end, as the training loop runs them."""
    _sync(device)
    with Sampler(device) as sampler:
        start, wall = time.perf_counter(), time.time()
        for _ in range(steps):
            step(next(batches))
        _sync(device)
        seconds = time.perf_counter() - start
    return Window(start=wall, end=wall + seconds, seconds=seconds, gpu_util=sampler.util)


def bench_packed(cfg: Config, variant: Variant, *, steps: int, warmup: int) -> dict[str, Any]:
    """One of `bench_pack`'s processes: warm up, say READY, wait for GO on stdin, then time
    `steps` sustained steps, so that the packed processes' timed windows coincide."""
    cfg = variant_config(cfg, variant)
    rt, step, batches = _warm_step(cfg, warmup)
    print(PACK_READY, flush=True)
    if sys.stdin.readline().strip() != PACK_GO:
        raise RuntimeError("packed benchmark: the parent process did not say GO")
    window = sustained_steps(step, rt.device, batches, steps)
    return {
        "variant": variant.name,
        "samples": steps * cfg.optim.batch_size,
        **asdict(window),
    }


def profile_variant(
    cfg: Config, variant: Variant, *, steps: int, warmup: int, rows: int, trace: Path | None
) -> dict[str, Any]:
    """`profiling.profile_steps` over eager steps of `variant` (a CUDA graph hides operators)."""
    rt, step, batches = _warm_step(variant_config(cfg, variant), warmup, eager=True)
    return profile_steps(
        lambda: step(next(batches)), rt.device, steps=steps, rows=rows, trace=trace
    )


def guarded_step(
    cfg: Config, variant: Variant, steps: int, warmup: int, *, breakdown: bool
) -> dict[str, Any]:
    # One failing variant (e.g. out of memory) must not lose the others' numbers.
    try:
        res = bench_step(cfg, variant, steps=steps, warmup=warmup, breakdown=breakdown)
        return asdict(res)
    except Exception as exc:
        return {"variant": variant.name, "error": f"{type(exc).__name__}: {exc}"}


def bench_loss(
    cfg: Config, *, fast: bool, steps: int, warmup: int, compiled: bool = False
) -> float:
    """Samples/s of the multi-scale photometric loss alone (forward + backward), random inputs."""
    from depthcore.geometry import scale_intrinsics
    from depthcore.losses import compute_losses

    device = resolve_device(cfg.train.device)
    b, h, w = cfg.optim.batch_size, cfg.data.height, cfg.data.width
    gen = torch.Generator(device="cpu").manual_seed(0)
    images = torch.rand(b, len(cfg.data.frame_ids), 3, h, w, generator=gen).to(device)
    k = scale_intrinsics(torch.tensor(_MONODEPTH2_K), h, w).expand(b, 4, 4).to(device)
    poses = {f: torch.eye(4, device=device).expand(b, 4, 4).clone() for f in cfg.data.frame_ids[1:]}
    for pose in poses.values():
        pose[:, 0, 3] = 0.05
    disps = {
        s: torch.rand(b, 1, h >> s, w >> s, generator=gen).to(device).requires_grad_()
        for s in cfg.model.scales
    }

    def once() -> float:
        start = time.perf_counter()
        terms = compute_losses(
            disps, images, poses, k, torch.linalg.inv(k),
            frame_ids=cfg.data.frame_ids, loss=cfg.loss, min_depth=cfg.model.min_depth,
            max_depth=cfg.model.max_depth, identity_once=fast, compiled=compiled,
        )  # fmt: skip
        terms.total.backward()
        _sync(device)
        return time.perf_counter() - start

    for _ in range(warmup):
        once()
    return b / statistics.median(once() for _ in range(steps))


_MONODEPTH2_K = [[0.58, 0, 0.5, 0], [0, 1.92, 0.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]]


def bench_data(cfg: Config, *, cache: bool, batches: int) -> float:
    """Samples/s of the training loader alone (read, decode/resize or cache hit, augment draws).

    With the cache, one pass warms it first; without it, every frame is decoded and resized.
    """
    cfg = with_sections(cfg, data={"cache": cache})
    loader = build_train_loader(cfg, resolve_data(cfg))
    if cache:
        for _ in loader:
            pass
    it = _endless(loader)
    next(it)  # workers up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * cfg.optim.batch_size / (time.perf_counter() - start)
