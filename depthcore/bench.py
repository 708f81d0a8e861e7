"""Benchmarks of the training step, the loss and the data path (runners/bench.py).

Every number is a median over timed repetitions after warm-up. The full step is data → forward →
loss → backward → optimiser, timed end to end (synchronised per step); the sustained rate runs
the same steps back to back with one synchronisation at the end, as the training loop does. The
breakdown times the same step with a synchronisation between phases. The *reference* path is
the straightforward Monodepth2 recipe: images decoded and resized for every sample (no frame
cache), identity reprojection recomputed at every scale, one pooling call per SSIM statistic,
one pose-network pass per frame pair, plain Adam, and on CPU the C allocator as it is. The
*fast* path switches all of these speed-ups on; `--ablate` times the main ones alone.
Every timed variant runs in a fresh process: process-wide state (the C allocator's settings,
compiled-code caches, the CUDA caching allocator) never carries over from one variant to the
next. With several rounds the variants alternate (A B A B ...) and the speed-up is the median
of the per-round ratios, so a slow spell of a shared machine does not favour one variant.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from depthcore.config import Config, config_from_dict, deep_merge, load_config
from depthcore.data import build_train_loader, resolve_data
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
    resolve_device,
    seed_everything,
)
from depthcore.errors import ConfigError
from depthcore.profiling import format_profile, profile_steps

PHASES = ("data", "depth_net", "pose_net", "warp_and_loss", "backward", "optimiser")
# A packed process's line when warmed up, and the parent's answer that starts its timed steps.
PACK_READY, PACK_GO = "READY", "GO"


@dataclass(frozen=True)
class Variant:
    """Which speed-ups are on."""

    name: str
    cache: bool = True
    fast: bool = True
    amp: bool = True  # bf16 autocast + channels_last; CUDA only
    graph: bool = True  # the step as one CUDA graph; CUDA only
    compile: str = "none"  # train.compile: none | loss | networks | all
    host_memory: str = "keep"  # train.host_memory: keep | system; CPU only
    pose_stream: bool = False  # train.pose_stream; CUDA only


REFERENCE = Variant(
    "reference", cache=False, fast=False, amp=False, graph=False, host_memory="system"
)
FAST = Variant("fast")


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
    round_samples_per_s: list[float] = field(default_factory=list)  # set by _merge_rounds
    step_times_s: list[float] = field(default_factory=list)


def bench_config(
    device: str, height: int, width: int, batch: int, overrides: Sequence[str] = ()
) -> Config:
    """The benchmark's engine config: synthetic KITTI-size drives, no pretrained download."""
    base = [
        "data.dataset=synthetic",
        f"data.height={height}",
        f"data.width={width}",
        f"optim.batch_size={batch}",
        f"train.device={device}",
        "model.pretrained=false",
        "optim.warmup_steps=0",
        "data.synthetic.drives=2",
        "data.synthetic.frames=60",
    ]
    return load_config(None, [*base, *overrides])


def _with(cfg: Config, **sections: dict[str, Any]) -> Config:
    return config_from_dict(deep_merge(cfg.to_dict(), sections))


def _variant_config(cfg: Config, variant: Variant) -> Config:
    train = {
        "amp": variant.amp,
        "cuda_graph": variant.graph,
        "compile": variant.compile,
        "loss_impl": "fast" if variant.fast else "reference",
        "host_memory": variant.host_memory,
        "pose_stream": variant.pose_stream,
    }
    return _with(cfg, data={"cache": variant.cache}, train=train)


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
    cfg = _variant_config(cfg, variant)
    _reset_peak(resolve_device(cfg.train.device))  # peak memory includes weights, graph pools
    rt, step, batches = _warm_step(cfg, warmup)
    with _Sampler(rt.device) as sampler:
        times = [_timed_step(step, rt.device, batches) for _ in range(steps)]
    util = None
    if rt.device.type == "cuda":
        window = sustained_steps(step, rt.device, batches, steps)
        sustained, util = steps * cfg.optim.batch_size / window.seconds, window.gpu_util
    else:  # CPU work is synchronous: the timed steps already ran back to back
        sustained = steps * cfg.optim.batch_size / sum(times)
    peak = _peak_memory_mb(rt.device, sampler.rss_mb)
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
    with _Sampler(device) as sampler:
        start, wall = time.perf_counter(), time.time()
        for _ in range(steps):
            step(next(batches))
        _sync(device)
        seconds = time.perf_counter() - start
    return Window(start=wall, end=wall + seconds, seconds=seconds, gpu_util=sampler.util)


def bench_packed(cfg: Config, variant: Variant, *, steps: int, warmup: int) -> dict[str, Any]:
    """One of `bench_pack`'s processes: warm up, say READY, wait for GO on stdin, then time
    `steps` sustained steps, so that the packed processes' timed windows coincide."""
    cfg = _variant_config(cfg, variant)
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
    rt, step, batches = _warm_step(_variant_config(cfg, variant), warmup, eager=True)
    return profile_steps(
        lambda: step(next(batches)), rt.device, steps=steps, rows=rows, trace=trace
    )


def bench_rounds(
    step_argv: Sequence[str], variants: Sequence[Variant], *, rounds: int, batch: int
) -> list[dict[str, Any]]:
    """Each variant `rounds` times, alternating (A B A B ...), so that a slow spell of a shared
    machine hits every variant alike; each time in a fresh process (`step_in_process`).
    Samples/s is the median over all timed steps; the breakdown comes from the first round;
    peak memory is the largest of the rounds."""
    per_variant: dict[str, list[dict[str, Any]]] = {v.name: [] for v in variants}
    for r in range(rounds):
        for v in variants:
            per_variant[v.name].append(step_in_process(step_argv, v, breakdown=r == 0))
    return [_merge_rounds(per_variant[v.name], batch) for v in variants]


def _step_command(
    step_argv: Sequence[str], variant: Variant, breakdown: bool, **extra: Any
) -> list[str]:
    spec = json.dumps({**asdict(variant), "breakdown": breakdown, **extra})
    return [sys.executable, "-m", "depthcore.bench", *step_argv, "--variant", spec, "--json"]


def step_in_process(
    step_argv: Sequence[str], variant: Variant, *, breakdown: bool = True, **extra: Any
) -> dict[str, Any]:
    """`bench_step` of one variant in a fresh Python process (`profile_variant` with `extra`
    profile settings): its result as a dict, or {"variant", "error"} if it failed."""
    cmd = _step_command(step_argv, variant, breakdown, **extra)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return _step_output(variant, proc.returncode, proc.stdout, proc.stderr)


def profile_in_process(step_argv: Sequence[str], rows: int, trace: Path | None) -> dict[str, Any]:
    """`profile_variant` of the fast path in a fresh Python process, or {"error"}."""
    trace_arg = None if trace is None else str(trace)
    return step_in_process(step_argv, FAST, breakdown=False, profile=rows, trace=trace_arg)


def _step_output(variant: Variant, code: int, stdout: str, stderr: str) -> dict[str, Any]:
    lines = stdout.strip().splitlines()
    if code != 0 or not lines:
        tail = stderr.strip().splitlines()[-1:] or [f"exit code {code}"]
        return {"variant": variant.name, "error": f"benchmark process failed: {tail[0]}"}
    return json.loads(lines[-1])


def _merge_rounds(results: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    failed = [r for r in results if "error" in r]
    if failed:
        return failed[0]
    merged = dict(results[0])
    times = [t for r in results for t in r["step_times_s"]]
    step_s = statistics.median(times)
    utils = [r["gpu_util_percent"] for r in results if r["gpu_util_percent"] is not None]
    merged.update(
        samples_per_s=batch / step_s,
        step_ms=1e3 * step_s,
        peak_memory_mb=max(r["peak_memory_mb"] for r in results),
        gpu_util_percent=statistics.fmean(utils) if utils else None,
        sustained_samples_per_s=statistics.median(r["sustained_samples_per_s"] for r in results),
        round_samples_per_s=[r["samples_per_s"] for r in results],
    )
    del merged["step_times_s"]
    return merged


def speedup(reference: dict[str, Any], fast: dict[str, Any]) -> dict[str, float] | None:
    """fast / reference samples/s: the median of the per-round ratios, and their range."""
    if "error" in reference or "error" in fast:
        return None
    ratios = [
        f / r
        for r, f in zip(reference["round_samples_per_s"], fast["round_samples_per_s"], strict=True)
    ]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def _guarded_step(
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
    cfg = _with(cfg, data={"cache": cache})
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


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory_mb(device: torch.device, sampled_rss_mb: float | None) -> float:
    """CUDA: peak allocated by this variant. CPU: the largest resident set sampled during its
    timed steps (the process's lifetime maximum would also count the data set-up)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if sampled_rss_mb is not None:
        return sampled_rss_mb
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_mb() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _Sampler:
    """Every 100 ms during a block: GPU utilisation (%, NVML or nvidia-smi) on CUDA, the
    resident set size on CPU. `util` is the mean utilisation, `rss_mb` the largest RSS."""

    def __init__(self, device: torch.device) -> None:
        self.util: float | None = None
        self.rss_mb: float | None = None
        self._utils: list[float] = []
        self._rss: list[float] = []
        self._stop = threading.Event()
        self._read = _nvml_reader(device) if device.type == "cuda" else None
        self._rss_ok = device.type == "cpu" and os.path.exists("/proc/self/statm")
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        if self._read is not None:
            with contextlib.suppress(Exception):
                self._utils.append(self._read())
        if self._rss_ok:
            self._rss.append(_rss_mb())

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def __enter__(self) -> _Sampler:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.util = statistics.fmean(self._utils) if self._utils else None
        self.rss_mb = max(self._rss) if self._rss else None


def _nvml_reader(device: torch.device) -> Callable[[], float] | None:
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
    except Exception:  # no NVML bindings: fall back to the CLI
        query = [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        return lambda: float(
            subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
        )


def bench_pack(step_argv: Sequence[str], n: int) -> dict[str, Any]:
    """Run `n` fast-path benchmarks at once on the same device (fractional-GPU packing, as
    Ray's `resources: {gpu: 1/n}` would), each in its own process. All warm up first (setup,
    compilation and graph capture take different times), then start their timed steps together;
    combined samples/s = all samples / (last end - first start), and `overlap` is the share of
    that span during which all of them were timing (near 1: the sum is honest)."""
    cmd = _step_command(step_argv, FAST, breakdown=False, packed=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 2) // n))}
    with contextlib.ExitStack() as stack:
        errs = [stack.enter_context(tempfile.TemporaryFile("w+")) for _ in range(n)]
        procs = [
            subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=e, text=True, env=env
            )
            for e in errs
        ]
        ready = [_wait_ready(p) for p in procs]
        for proc in procs:
            assert proc.stdin is not None
            with contextlib.suppress(BrokenPipeError):  # it died since; its error says why
                if all(ready):
                    proc.stdin.write(PACK_GO + "\n")
                proc.stdin.close()  # without GO a waiting process stops with an error
        outs = [_rest_of_output(p) for p in procs]
        results = []
        for proc, out, err in zip(procs, outs, errs, strict=True):
            err.seek(0)
            results.append(_step_output(FAST, proc.returncode, out, err.read()))
    # The cause first: a process that never got ready, not the others it left waiting.
    by_cause = sorted(zip(ready, results, strict=True), key=lambda pair: pair[0])
    failed = [r["error"] for _, r in by_cause if "error" in r]
    if failed:
        return {"processes": n, "error": failed[0]}
    return combine_windows(results)


def _wait_ready(proc: subprocess.Popen[str]) -> bool:
    """Read the process's output up to its READY line; False if it ended first."""
    assert proc.stdout is not None
    return any(line.strip() == PACK_READY for line in proc.stdout)


def _rest_of_output(proc: subprocess.Popen[str]) -> str:
    # Not communicate(): it would flush the stdin this function's caller has closed.
    assert proc.stdout is not None
    out = proc.stdout.read()
    proc.wait()
    return out


def combine_windows(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Packed processes' sustained windows -> each one's samples/s and the combined rate."""
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    common = min(r["end"] for r in results) - max(r["start"] for r in results)
    utils = [r["gpu_util"] for r in results if r["gpu_util"] is not None]
    return {
        "processes": len(results),
        "samples_per_s_each": [r["samples"] / r["seconds"] for r in results],
        "combined_samples_per_s": sum(r["samples"] for r in results) / span,
        "overlap": max(0.0, common) / span,
        "gpu_util_percent": statistics.fmean(utils) if utils else None,
    }


def parse_size(text: str) -> tuple[int, int]:
    """'192x640' -> (height, width)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 192x640") from None
    return h, w


def run(options: dict[str, Any]) -> dict[str, Any]:
    """Everything runners/bench.py prints, as one dict."""
    h, w = parse_size(options["size"])
    cfg = bench_config(options["device"], h, w, options["batch"], options.get("overrides", ()))
    steps, warmup, rounds = options["steps"], options["warmup"], options.get("rounds", 1)
    if rounds < 1 or steps < 1:
        raise ConfigError(f"--rounds and --steps must be >= 1, got {rounds} and {steps}")
    for flag, least in (("warmup", 0), ("data_batches", 1), ("pack", 1)):
        if options.get(flag, least) < least:
            raise ConfigError(f"--{flag.replace('_', '-')} must be >= {least}, got {options[flag]}")
    rows = options.get("profile")
    if rows is not None and rows < 1:
        raise ConfigError(f"--profile ROWS must be >= 1, got {rows}")
    if options.get("trace") is not None and rows is None:
        raise ConfigError("--trace PATH writes the profile's trace: add --profile")
    variants = [REFERENCE, FAST]
    if options.get("ablate"):
        variants += [
            Variant("fast-no-cache", cache=False),
            Variant("fast-reference-loss-and-pose", fast=False),
        ]
        if options["device"] == "cuda":
            variants += [Variant("fast-no-graph", graph=False), Variant("fast-fp32", amp=False)]
        else:
            variants.append(Variant("fast-system-malloc", host_memory="system"))
    if options.get("compile"):
        variants.append(Variant(f"fast+compile={options['compile']}", compile=options["compile"]))
    if options["device"] == "cuda":  # off by default until a GPU measurement shows its gain
        variants.append(Variant("fast+pose-stream", pose_stream=True))
    out: dict[str, Any] = {
        "device": options["device"],
        "device_name": _device_name(cfg),
        "size": [h, w],
        "batch": cfg.optim.batch_size,
        "loss": cfg.loss.photometric,
        "rounds": rounds,
        "steps": bench_rounds(options["argv"], variants, rounds=rounds, batch=cfg.optim.batch_size),
    }
    ref = out["steps"][0]
    out["step_speedup"] = speedup(ref, out["steps"][1])
    out["speedups"] = {s["variant"]: speedup(ref, s) for s in out["steps"][1:]}
    out["loss_samples_per_s"] = {
        "reference": bench_loss(cfg, fast=False, steps=steps, warmup=warmup),
        "fast": bench_loss(cfg, fast=True, steps=steps, warmup=warmup),
    }
    if options.get("compile") in ("loss", "all"):
        out["loss_samples_per_s"]["fast+compiled"] = bench_loss(
            cfg, fast=True, steps=steps, warmup=warmup, compiled=True
        )
    data_batches = options.get("data_batches", 20)
    cached = bench_data(cfg, cache=True, batches=data_batches)
    decoded = bench_data(cfg, cache=False, batches=data_batches)
    out["data_samples_per_s"] = {"cache": cached, "decode": decoded, "speedup": cached / decoded}
    if options.get("pack", 1) > 1:
        out["pack"] = bench_pack(options["argv"], options["pack"])
    if rows is not None:
        out["profile"] = profile_in_process(options["argv"], rows, options.get("trace"))
    return out


def _device_name(cfg: Config) -> str:
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def format_report(res: dict[str, Any]) -> str:
    """Human-readable tables of `run`'s result."""
    lines = [
        f"device {res['device_name']}, {res['size'][0]}x{res['size'][1]}, batch {res['batch']}"
    ]
    lines.append(
        f"{'full step':<30}{'samples/s':>10}{'ms/step':>9}{'sustained':>10}{'peak MB':>9}"
        f"{'GPU %':>7}"
    )
    ok = [s for s in res["steps"] if "error" not in s]
    for s in res["steps"]:
        if "error" in s:
            lines.append(f"{s['variant']:<30}failed: {s['error']}")
            continue
        util = "-" if s["gpu_util_percent"] is None else f"{s['gpu_util_percent']:.0f}"
        lines.append(
            f"{s['variant']:<30}{s['samples_per_s']:>10.1f}{s['step_ms']:>9.1f}"
            f"{s['sustained_samples_per_s']:>10.1f}{s['peak_memory_mb']:>9.0f}{util:>7}"
        )
    lines.append(
        "  (median of synchronised steps; sustained: samples/s of steps run back to back, as in"
        " training; GPU %: during those)"
    )
    if res.get("rounds", 1) > 1:
        lines.append(f"per round (samples/s, {res['rounds']} rounds alternating the variants):")
        for s in ok:
            lines.append(f"  {s['variant']:<28} " + " ".join(
                f"{v:.2f}" for v in s["round_samples_per_s"]
            ))  # fmt: skip
    lines.append("breakdown (ms, synchronised, eager): " + " | ".join(PHASES))
    for s in ok:
        parts = " | ".join(f"{s['breakdown_ms'][p]:.1f}" for p in PHASES)
        lines.append(f"  {s['variant']:<28} {parts}")
    speedups = res.get("speedups") or {"fast": res.get("step_speedup")}
    for name, up in speedups.items():
        if not up:
            continue
        line = f"{name} / reference full step: {up['median']:.2f}x"
        if res.get("rounds", 1) > 1:
            line += f" (median of {res['rounds']} rounds, range {up['min']:.2f}-{up['max']:.2f})"
        lines.append(line)
    if "loss_samples_per_s" in res:
        loss = res["loss_samples_per_s"]
        lines.append(
            f"loss alone ({res['loss']}): reference {loss['reference']:.1f}, fast "
            f"{loss['fast']:.1f} samples/s ({loss['fast'] / loss['reference']:.2f}x)"
        )
        if "fast+compiled" in loss:
            lines.append(
                f"loss alone, compiled: {loss['fast+compiled']:.1f} samples/s "
                f"({loss['fast+compiled'] / loss['reference']:.2f}x)"
            )
    if "data_samples_per_s" in res:
        data = res["data_samples_per_s"]
        lines.append(
            f"data path alone: decode+resize {data['decode']:.1f}, cache {data['cache']:.1f} "
            f"samples/s ({data['speedup']:.1f}x)"
        )
    if "pack" in res and "error" in res["pack"]:
        lines.append(f"{res['pack']['processes']} packed processes: failed: {res['pack']['error']}")
    elif "pack" in res:
        pack = res["pack"]
        each = ", ".join(f"{v:.1f}" for v in pack["samples_per_s_each"])
        util = pack["gpu_util_percent"]
        lines.append(
            f"{pack['processes']} packed processes (sustained, started together): {each} -> "
            f"{pack['combined_samples_per_s']:.1f} samples/s combined, timed windows overlap "
            f"{100 * pack['overlap']:.0f} %" + ("" if util is None else f", GPU {util:.0f} %")
        )
    if "profile" in res and "error" in res["profile"]:
        lines.append(f"profile: failed: {res['profile']['error']}")
    elif "profile" in res:
        lines.append(format_profile(res["profile"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from depthcore.cli import add_set_option

    parser = argparse.ArgumentParser(prog="runners/bench.py", description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", default="192x640", help="HEIGHTxWIDTH (default 192x640)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the step variants, alternating (A B A B)"
    )
    parser.add_argument("--data-batches", type=int, default=20)
    parser.add_argument("--ablate", action="store_true", help="also time each speed-up alone")
    parser.add_argument(
        "--compile",
        nargs="?",
        const="loss",
        choices=("loss", "networks", "all"),
        help="also time the fast path with train.compile=WHAT (default: loss)",
    )
    parser.add_argument("--pack", type=int, default=1, help="N processes sharing the device")
    parser.add_argument(
        "--profile",
        nargs="?",
        type=int,
        const=25,
        metavar="ROWS",
        help="also profile the fast path (eager): time by kind and the top ROWS operators (25)",
    )
    parser.add_argument(
        "--trace", type=Path, metavar="PATH", help="with --profile: write a Chrome trace there"
    )
    # One variant's step benchmark, in the fresh process that step_in_process starts.
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_set_option(parser)
    args = parser.parse_args(argv)
    if args.variant:
        print(json.dumps(_one_variant(args)))
        return 0
    res = run({**vars(args), "argv": _step_argv(args)})
    print(json.dumps(res) if args.json else format_report(res))
    return 0


def _one_variant(args: Any) -> dict[str, Any]:
    spec = json.loads(args.variant)
    breakdown = spec.pop("breakdown")
    rows, trace = spec.pop("profile", None), spec.pop("trace", None)
    packed = spec.pop("packed", False)
    h, w = parse_size(args.size)
    cfg = bench_config(args.device, h, w, args.batch, args.overrides)
    if packed:
        return bench_packed(cfg, Variant(**spec), steps=args.steps, warmup=args.warmup)
    if rows:
        path = None if trace is None else Path(trace)
        return profile_variant(
            cfg, Variant(**spec), steps=args.steps, warmup=args.warmup, rows=rows, trace=path
        )
    return _guarded_step(cfg, Variant(**spec), args.steps, args.warmup, breakdown=breakdown)


def _step_argv(args: Any) -> list[str]:
    """The arguments of one step benchmark process: same device, size, batch, steps, settings."""
    out = [f"--device={args.device}", f"--size={args.size}", f"--batch={args.batch}"]
    out += [f"--steps={args.steps}", f"--warmup={args.warmup}"]
    return out + [f"--set={kv}" for kv in args.overrides]


if __name__ == "__main__":
    from depthcore.cli import run_main

    run_main(main)
