"""The training engine: one Monodepth2 run from a `Config` to a finished run folder.

`train(cfg, run_dir)` reads as: set up (seed, data, networks, optimiser, resume) → for each epoch
(train steps → evaluate: the test split, or the validation frames with eval.objective=val →
checkpoint → report) → trained.json → final evaluation of the test split into evals/<eval id>/.
A training step is forward (depth + pose) → losses (fp32) → backward → Adam. A trained run is
never trained again: `train` with other eval keys only evaluates it. A run a sweep's scheduler
stopped (stopped.json) goes on from its checkpoint. The engine never imports Ray: it reports
each epoch through a plain callback, which a scheduler's stop interrupts with SystemExit.
"""

from __future__ import annotations

import contextlib
import random
import time
import traceback
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from depthcore import store
from depthcore.config import Config
from depthcore.cost import (
    CostMeter,
    check_share,
    default_share,
    host_peak_memory_mb,
)
from depthcore.cudagraph import GraphedStep, set_learning_rate
from depthcore.data import (
    DataPaths,
    build_frames_loader,
    build_test_loader,
    build_train_loader,
    load_gt_depths,
    prepare_validation,
    resolve_data,
)
from depthcore.data.augment import apply_jitter
from depthcore.device import describe_device, kind_and_name, resolve_device, seed_everything
from depthcore.errors import ConfigError, TrainingError
from depthcore.evaluate import (
    Evaluation,
    Predictions,
    evaluate_model,
    evaluate_run,
    record_evaluation,
)
from depthcore.hostmem import keep_freed_memory
from depthcore.losses import LossTerms, compute_losses
from depthcore.networks import Models, build_models, predict_depth, predict_poses
from depthcore.plugins import check_plugin
from depthcore.tensorboard import IMAGES, RunBoard, events_dir

ReportFn = Callable[[dict[str, Any]], None]


# ----------------------------------------------------------------------------------------------
# The learning-rate schedule


def learning_rate(cfg: Config, step: int, epoch: int) -> float:
    """Linear warm-up over `optim.warmup_steps`, then x`lr_gamma` from epoch `lr_step_epochs`.

    `epoch` counts from 0; the decay applies from the epoch after `lr_step_epochs` completed
    epochs (the paper's 15 + 5), i.e. the scheduler steps at the end of an epoch.
    """
    opt = cfg.optim
    warm = min(1.0, (step + 1) / opt.warmup_steps) if opt.warmup_steps else 1.0
    decay = opt.lr_gamma ** (epoch // opt.lr_step_epochs)
    return opt.lr * warm * decay


# ----------------------------------------------------------------------------------------------
# One training step


@dataclass
class Runtime:
    """What a step needs besides the batch: networks, device, precision and implementation."""

    cfg: Config
    models: Models
    device: torch.device
    amp: bool  # bf16 autocast + channels_last (CUDA only)
    fast: bool = True  # identity reprojection once per batch, stacked pooling, batched pose net
    graph: bool = False  # replay the step as a captured CUDA graph (CUDA + fast path)
    compiled_loss: bool = False  # the photometric error through torch.compile (fast path)
    pose_stream: Any = None  # a torch.cuda.Stream for the pose network (train.pose_stream)

    @property
    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        # No weight-cast cache: it is not allowed inside a captured CUDA graph, and each
        # weight is used once per forward pass anyway.
        return torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.amp, cache_enabled=False
        )


def batch_to_device(
    batch: dict[str, torch.Tensor], device: torch.device
) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def prepare_images(
    rt: Runtime, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, augmented) float frames (B, F, 3, H, W); the losses see raw, the networks augmented."""
    images = batch["color"].float().div_(255)
    if not rt.cfg.data.augment:
        return images, images
    jittered = apply_jitter(images, batch["jitter"], batch["jitter_order"], batch["do_jitter"])
    return images, jittered


def depth_forward(rt: Runtime, images_aug: torch.Tensor) -> dict[int, torch.Tensor]:
    target = images_aug[:, 0]
    if rt.amp:
        target = target.contiguous(memory_format=torch.channels_last)
    with rt.autocast:
        return predict_depth(rt.models, target)


def pose_forward(rt: Runtime, images_aug: torch.Tensor) -> dict[int, torch.Tensor]:
    with rt.autocast:
        return predict_poses(rt.models, images_aug, rt.cfg.data.frame_ids, batched=rt.fast)


def loss_forward(
    rt: Runtime,
    batch: dict[str, torch.Tensor],
    images: torch.Tensor,
    disps: dict[int, torch.Tensor],
    poses: dict[int, torch.Tensor],
) -> LossTerms:
    """Warping and losses in fp32, outside autocast."""
    cfg = rt.cfg
    with torch.autocast(rt.device.type, enabled=False):
        return compute_losses(
            {s: d.float() for s, d in disps.items()},
            images,
            poses,
            batch["K"],
            batch["inv_K"],
            frame_ids=cfg.data.frame_ids,
            loss=cfg.loss,
            min_depth=cfg.model.min_depth,
            max_depth=cfg.model.max_depth,
            identity_once=rt.fast,
            compiled=rt.compiled_loss and rt.fast,
        )


def forward_losses(rt: Runtime, batch: dict[str, torch.Tensor]) -> LossTerms:
    """Depth and pose forward passes on augmented frames, then the losses on raw frames."""
    images, images_aug = prepare_images(rt, batch)
    if rt.pose_stream is not None:
        disps, poses = concurrent_forward(rt, images_aug, rt.pose_stream)
    else:
        disps = depth_forward(rt, images_aug)
        poses = pose_forward(rt, images_aug)
    return loss_forward(rt, batch, images, disps, poses)


def concurrent_forward(
    rt: Runtime, images_aug: torch.Tensor, side: Any
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """The pose network on stream `side` while the depth network runs on the current stream.

    The two networks are independent, and at batch 8 neither fills a large GPU. Autograd runs
    each backward operation on its forward operation's stream, so the backward passes overlap
    too, and synchronises the streams before backward() returns. Inside a CUDA graph capture
    the fork (side waits for the current stream) and the join make two parallel branches.
    """
    main = torch.cuda.current_stream(rt.device)
    side.wait_stream(main)
    with torch.cuda.stream(side):
        poses = pose_forward(rt, images_aug)
    disps = depth_forward(rt, images_aug)
    main.wait_stream(side)
    # Cross-stream use: the caching allocator must not hand these blocks out again before the
    # other stream is done with them.
    images_aug.record_stream(side)
    for pose in poses.values():
        pose.record_stream(main)
    return disps, poses


def optimiser_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


StepFn = Callable[[dict[str, torch.Tensor]], LossTerms]


def make_optimizer(rt: Runtime) -> torch.optim.Optimizer:
    """Adam (PyTorch defaults, as Monodepth2). Fast path: the fused kernel (one pass over all
    parameters; 3x faster on CPU), or capturable with a device-tensor rate for a graphed step."""
    params = rt.models.parameters()
    if rt.graph:
        lr = torch.tensor(rt.cfg.optim.lr, device=rt.device)
        return torch.optim.Adam(params, lr=lr, capturable=True)
    return torch.optim.Adam(params, lr=rt.cfg.optim.lr, fused=rt.fast or None)


def make_step(rt: Runtime, optimizer: torch.optim.Optimizer) -> StepFn:
    """`step(cpu_batch) -> LossTerms`: one optimiser step, eager or as a replayed CUDA graph
    (captured at the first batch)."""

    def eager(batch: dict[str, torch.Tensor]) -> LossTerms:
        terms = forward_losses(rt, batch)
        optimiser_step(optimizer, terms.total)
        return terms

    if not rt.graph:
        return lambda batch: eager(batch_to_device(batch, rt.device))
    graphed: list[GraphedStep] = []

    def replay(batch: dict[str, torch.Tensor]) -> LossTerms:
        if not graphed:
            graphed.append(_capture(eager, rt, optimizer, batch))
        return graphed[0](batch)

    return replay


def _capture(
    eager: StepFn, rt: Runtime, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]
) -> GraphedStep:
    try:
        return GraphedStep(eager, rt.models, optimizer, batch, rt.device)
    except RuntimeError as exc:
        fix = "set train.cuda_graph=false"
        if rt.compiled_loss:
            fix += " (or train.compile=none to keep the graph)"
        raise TrainingError(
            f"capturing the training step as a CUDA graph failed: {exc}; {fix}"
        ) from exc


# ----------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Progress:
    """Position in the schedule; saved in every checkpoint."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps done
    elapsed_s: float = 0.0  # training wall time over all resumed segments


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, rt: Runtime, optimizer: torch.optim.Optimizer, prog: Progress
) -> Path:
    """Models, optimiser, schedule position and RNG states, written atomically."""
    path = run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    state = {
        "models": rt.models.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": vars(prog).copy(),
        "rng": _rng_state(),
        "run_id": rt.cfg.run_id(),
        "height": rt.cfg.data.height,
        "width": rt.cfg.data.width,
    }
    with store.atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path.parent


def _checkpoint_state(run_dir: Path) -> dict[str, Any]:
    path = run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    try:
        # On the CPU first: RNG states must stay CPU byte tensors; load_state_dict moves the rest.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated or damaged: torch raises several kinds
        raise TrainingError(
            f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); delete "
            f"{path.parent} to train the run from its start"
        ) from exc
    if not isinstance(state, dict):
        raise TrainingError(f"{path}: not a depthsweep checkpoint; delete {path.parent}")
    return state


def load_checkpoint(
    run_dir: Path,
    rt: Runtime,
    optimizer: torch.optim.Optimizer,
    known: Collection[str] = (),
) -> Progress:
    """Restore a checkpoint of this run (`known`: the other ids it goes by, see _run_ids)."""
    path = run_dir / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    state = _checkpoint_state(run_dir)
    if state.get("run_id") not in {rt.cfg.run_id(), *known}:
        raise ConfigError(
            f"{path}: checkpoint belongs to run {state.get('run_id')}, not {rt.cfg.run_id()}; "
            "use another output folder or delete the checkpoint"
        )
    rt.models.load_state_dict(state["models"])
    optimizer.load_state_dict(state["optimizer"])
    for group in optimizer.param_groups:
        # A graphed step needs the rate as a device tensor, an eager one as a float; the
        # checkpoint may come from either kind of run.
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=rt.device) if rt.graph else lr
    _set_rng_state(state["rng"])
    return Progress(**state["progress"])


# ----------------------------------------------------------------------------------------------
# Non-finite losses are checked in batches of steps: a per-step .item() would stall the GPU queue.


@dataclass
class LossLog:
    """Per-step loss terms kept on the device until the next check."""

    steps: list[int] = field(default_factory=list)
    terms: list[torch.Tensor] = field(default_factory=list)  # (3,) total, photometric, smoothness
    plugin: str | None = None  # loss.custom.fn: a non-finite first step is the plugin's error

    def add(self, step: int, t: LossTerms) -> None:
        self.steps.append(step)
        self.terms.append(
            torch.stack([t.total.detach(), t.photometric.detach(), t.smoothness.detach()])
        )

    def flush(self) -> np.ndarray:
        """(n, 3) float64 of the logged terms; raises TrainingError at the first non-finite one."""
        if not self.terms:
            return np.zeros((0, 3))
        values = torch.stack(self.terms).float().cpu().numpy().astype(np.float64)
        steps, self.steps, self.terms = self.steps, [], []
        bad = np.flatnonzero(~np.isfinite(values).all(axis=1))
        if bad.size:
            total, photo, smooth = values[bad[0]]
            if self.plugin is not None and steps[bad[0]] == 0:
                raise ConfigError(
                    f"loss plugin {self.plugin!r}: non-finite loss on the first batch "
                    f"(photometric={photo}, smoothness={smooth}); it passed the check on tiny "
                    "random, identical and flat images, so look for 0/0, sqrt or log of 0 on "
                    "real frames"
                )
            raise TrainingError(
                f"non-finite loss at step {steps[bad[0]]}: total={total}, photometric={photo}, "
                f"smoothness={smooth}; lower optim.lr or check the loss weights"
            )
        return values


# ----------------------------------------------------------------------------------------------
# The run


@dataclass
class _Run:
    cfg: Config
    run_dir: Path
    rt: Runtime
    optimizer: torch.optim.Optimizer
    step: StepFn
    paths: DataPaths
    prog: Progress
    report: ReportFn | None
    progress_bar: bool
    gts: list[np.ndarray]  # loaded and counted against the test split at setup
    val: _Validation | None  # eval.objective=val: the per-epoch evaluation's frames
    meter: CostMeter
    board: RunBoard
    first_step: int  # the step this segment resumed from
    acct: _Accounting


@dataclass
class _Validation:
    """eval.objective=val: the validation frames (depthcore.data.validation) and their ground
    truth, loaded at setup like the test split's."""

    lines: list[Any]
    gts: list[np.ndarray]


@dataclass
class _Accounting:
    """Cost meter and TensorBoard writer of this segment (created in setup, closed by train)."""

    started: float  # perf_counter() when train() was called
    share: float | None
    label: str | None
    meter: CostMeter | None = None
    board: RunBoard | None = None

    def close(self, end: str) -> None:
        """Record how the segment ended and close the writer; once (later calls do nothing)."""
        if self.meter is not None:
            self.meter.close(end)
        if self.board is not None:
            self.board.close()
        self.meter = self.board = None


def train(
    cfg: Config,
    run_dir: str | Path,
    *,
    report: ReportFn | None = None,
    progress: bool = True,
    device_share: float | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Train (or resume) one run into `run_dir`, evaluate it as `cfg.eval` says and return the
    evaluation's final.json (runs/<id>/evals/<eval id>/final.json).

    A trained run is not trained again: its evaluation is returned as is, or, when missing (other
    eval keys than the training's), made from the trained networks.
    `device_share` is the fraction of the device the run holds (Ray's resources.gpu; default a
    whole GPU, or the CPU threads over the machine's cores): device-hours = wall x share.
    `label` names the run in TensorBoard (runs/<id>/tb/<label>/; default the run id).
    """
    acct = _Accounting(time.perf_counter(), device_share, label)
    if device_share is not None:
        check_share(device_share)  # before the folder is touched
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    with store.RunLock(run_dir):
        trained = store.read_trained(run_dir)
        known = _check_same_run(cfg, run_dir, trained)  # before anything is taken or written
        if trained is not None:
            return _evaluated(cfg, run_dir)
        store.write_text_atomic(run_dir / store.CONFIG_FILE, cfg.to_yaml())
        (run_dir / store.ERROR_FILE).unlink(missing_ok=True)
        # A run a sweep's scheduler stopped goes on (a promotion, or a sweep that needs it
        # trained), from its checkpoint: no epoch is trained twice. From here it is a run like
        # any other (running; failed, interrupted or finished), so a failure is not hidden.
        store.clear_stopped(run_dir)
        store.remove_partial_files(run_dir / store.CHECKPOINT_DIR)
        run = None
        try:
            run = _setup(cfg, run_dir, report, progress, acct, known)
            return _run(run)
        except BaseException as exc:
            # Ctrl-C and Ray stopping a trial (SystemExit) interrupt a run; they are no failure.
            # A stop a sweep's scheduler decided (its stopped.json names this epoch) ends the
            # segment at its checkpoint: nothing to redo.
            stopped = isinstance(exc, (KeyboardInterrupt, SystemExit))
            end = "failed"
            if stopped:
                end = "stopped" if _stopped_at(run_dir, run) else "interrupted"
            acct.close(end)
            if not stopped:  # a failed final evaluation: in its folder, the run is trained
                where = store.error_path(run_dir, cfg.eval_id()).parent
                _record_error(where, exc, run.prog.step if run is not None else None)
            raise
        finally:
            acct.close("finished")  # a no-op after _finish or the line above closed both


def _stopped_at(run_dir: Path, run: _Run | None) -> bool:
    """Whether a sweep's scheduler stopped this run at the epoch it has just checkpointed."""
    record = store.read_stopped(run_dir)
    return record is not None and run is not None and record["epoch"] == run.prog.epoch


def _evaluated(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The trained run's evaluation as `cfg.eval` says: the recorded one, else a new one (its
    failure is recorded in its folder's error.json)."""
    found = store.find_evaluation(run_dir, cfg.eval_id())
    final = store.read_final(found) if found is not None else None
    if final is not None:
        return final
    folder = store.eval_path(run_dir, cfg.eval_id())
    store.remove_partial_files(folder)
    try:
        return evaluate_run(cfg, run_dir)
    except Exception as exc:
        _record_error(folder, exc, None)
        raise


def _check_same_run(cfg: Config, run_dir: Path, trained: dict[str, Any] | None) -> set[str]:
    """A folder holding another run (by its trained.json, config.yaml or checkpoint) is refused.
    One where nothing was trained yet (e.g. its data check failed) is free to reuse. Returns the
    ids this run goes by in the folder's files (`_run_ids`)."""
    run_id = cfg.run_id()
    known = _run_ids(cfg, run_dir)
    name = store.TRAINED_FILE if (run_dir / store.TRAINED_FILE).exists() else store.FINAL_FILE
    found = {name: (trained or {}).get("run_id")}
    if store.has_checkpoint(run_dir):
        existing = store.read_run_config(run_dir)
        found[store.CONFIG_FILE] = _run_id_of(existing) if existing is not None else None
        if found[store.CONFIG_FILE] is None:
            # config.yaml unreadable or of an older schema: the checkpoint says whose it is.
            found[store.CHECKPOINT_FILE] = _checkpoint_state(run_dir).get("run_id")
    for name, other in found.items():
        if other is not None and other not in known:
            raise ConfigError(
                f"{run_dir}: holds a different run ({name} is run {other}, this config is run "
                f"{run_id}); use another output folder"
            )
    return known


def _run_ids(cfg: Config, run_dir: Path) -> set[str]:
    """The ids `cfg`'s run may go by in `run_dir`'s files: its run id and, for a folder of the
    earlier layout (whose ids also hashed the eval keys), the legacy id of the config that
    trained it (config.yaml, when it is this run's) or of `cfg`."""
    known = {cfg.run_id(), cfg.legacy_run_id()}
    tree = store.read_run_config(run_dir)
    stored = _config_of(tree) if tree is not None else None
    if stored is not None and stored.run_id() == cfg.run_id():
        known.add(stored.legacy_run_id())
    return known


def _config_of(tree: dict[str, Any]) -> Config | None:
    """A stored config, or None when it no longer validates (older schema)."""
    from depthcore.config import config_from_dict

    try:
        return config_from_dict(tree)
    except ConfigError:
        return None


def _run_id_of(tree: dict[str, Any]) -> str | None:
    """The run id of a stored config, or None when it no longer validates (older schema)."""
    stored = _config_of(tree)
    return stored.run_id() if stored is not None else None


def _record_error(run_dir: Path, exc: BaseException, step: int | None) -> None:
    store.write_error(
        run_dir,
        kind=type(exc).__name__,
        message=str(exc),
        step=step,
        traceback=traceback.format_exc(),
    )


def _setup(
    cfg: Config,
    run_dir: Path,
    report: ReportFn | None,
    progress: bool,
    acct: _Accounting,
    known: Collection[str] = (),
) -> _Run:
    device = resolve_device(cfg.train.device)
    if cfg.loss.photometric == "custom":  # a bad plugin stops here, named, before any work
        check_plugin(cfg.loss, capture=uses_cuda_graph(cfg, device))
    kind, name = kind_and_name(device)
    share = acct.share if acct.share is not None else default_share(kind, torch.get_num_threads())
    acct.meter = CostMeter.start(run_dir, cfg.run_id(), kind, name, share, setup_since=acct.started)
    seed_everything(cfg.train.seed)
    torch.backends.cudnn.benchmark = not cfg.train.deterministic
    torch.backends.cudnn.deterministic = cfg.train.deterministic
    paths = resolve_data(cfg)
    rt = build_runtime(cfg, device)
    optimizer = make_optimizer(rt)
    prog = Progress()
    if store.has_checkpoint(run_dir):
        prog = load_checkpoint(run_dir, rt, optimizer, known)
    store.truncate_metrics(run_dir / store.METRICS_FILE, prog.step)
    gts = load_gt_depths(paths.gt_path, paths.test_files)  # checked now, not after an epoch
    val = _validation(cfg, paths) if cfg.eval.objective == "val" else None
    step = make_step(rt, optimizer)
    acct.board = RunBoard(events_dir(run_dir, acct.label, cfg.run_id()), prog.step, cfg.to_yaml())
    return _Run(
        cfg, run_dir, rt, optimizer, step, paths, prog, report, progress, gts, val,
        meter=acct.meter, board=acct.board, first_step=prog.step, acct=acct,
    )  # fmt: skip


def _validation(cfg: Config, paths: DataPaths) -> _Validation:
    """The validation frames and their ground truth (exported once per data root, cached)."""
    found = prepare_validation(cfg, paths)
    return _Validation(found.lines, load_gt_depths(found.gt_path, found.split_file))


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20  # a host-side counter: no sync
    return host_peak_memory_mb()


def uses_cuda_graph(cfg: Config, device: torch.device) -> bool:
    """Whether the step is captured as a CUDA graph: CUDA, the fast path, and networks that are
    not compiled (a compiled loss is captured with the rest, tests/test_gpu.py)."""
    compiled_networks = cfg.train.compile in ("networks", "all")
    fast = cfg.train.loss_impl == "fast"
    return cfg.train.cuda_graph and device.type == "cuda" and fast and not compiled_networks


def build_runtime(cfg: Config, device: torch.device) -> Runtime:
    """Networks on `device` with the precision and implementation switches of `cfg.train`."""
    fast = cfg.train.loss_impl == "fast"
    cuda = device.type == "cuda"
    amp = cfg.train.amp and cuda
    if device.type == "cpu" and cfg.train.host_memory == "keep":
        keep_freed_memory()  # process-wide, before the first activations are allocated
    models = build_models(cfg.model).to(device)
    if amp:
        models = models.to(memory_format=torch.channels_last)
    if cfg.train.compile in ("networks", "all"):
        for module in (models.encoder, models.depth, models.pose_encoder, models.pose):
            module.compile()
    compiled_loss = cfg.train.compile in ("loss", "all")
    # A compiled loss is compiled during the graph's warm-up steps and captured with the rest
    # (tests/test_gpu.py); capturing compiled networks is not supported here.
    graph = uses_cuda_graph(cfg, device)
    pose_stream = torch.cuda.Stream(device) if cfg.train.pose_stream and cuda and fast else None
    return Runtime(
        cfg=cfg, models=models, device=device, amp=amp, fast=fast, graph=graph,
        compiled_loss=compiled_loss, pose_stream=pose_stream,
    )  # fmt: skip


def _run(run: _Run) -> dict[str, Any]:
    cfg = run.cfg
    loader = build_train_loader(cfg, run.paths)
    steps_per_epoch = len(loader)
    if cfg.train.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, cfg.train.steps_per_epoch)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"optim.batch_size={cfg.optim.batch_size} is larger than the training split "
            f"({len(loader.dataset)} samples); lower it"
        )
    while run.prog.epoch < cfg.train.epochs:
        record = _train_epoch(run, loader, steps_per_epoch)
        _end_epoch(run, record)
    return _finish(run)


def _batches(loader: Any, epoch: int, limit: int) -> Iterator[dict[str, torch.Tensor]]:
    for sampler in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
        set_epoch = getattr(sampler, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(epoch)
    for i, batch in enumerate(loader):
        if i >= limit:
            break
        yield batch


def _train_epoch(run: _Run, loader: Any, steps: int) -> dict[str, Any]:
    cfg, rt, prog = run.cfg, run.rt, run.prog
    rt.models.train()
    plugin = cfg.loss.custom.fn if cfg.loss.photometric == "custom" and cfg.loss.custom else None
    log, losses = LossLog(plugin=plugin), []
    bar = _progress_bar(run, steps)
    run.meter.phase("train")
    start = time.perf_counter()
    for batch in _batches(loader, prog.epoch, steps):
        lr = learning_rate(cfg, prog.step, prog.epoch)
        set_learning_rate(run.optimizer, lr)
        log.add(prog.step, run.step(batch))
        prog.step += 1
        if prog.step % cfg.train.log_every == 0 or prog.step == 1:
            losses.extend(_log_train(run, log, lr, start, bar))
        if bar is not None:
            bar.update(1)
    losses.extend(_log_train(run, log, lr, start, bar, write=False))
    if bar is not None:
        bar.close()
    prog.epoch += 1
    prog.elapsed_s += time.perf_counter() - start
    run.meter.phase(None)
    return {"train_loss": float(np.mean(losses)) if losses else float("nan"), "lr": lr}


def _log_train(
    run: _Run, log: LossLog, lr: float, start: float, bar: Any, *, write: bool = True
) -> list[float]:
    step = run.prog.step
    values = log.flush()
    if values.size and write:
        store.append_jsonl(
            run.run_dir / store.METRICS_FILE,
            {
                "type": "train",
                "epoch": run.prog.epoch + 1,
                "step": step,
                "loss": float(values[-1, 0]),
                "lr": lr,
                "time_s": round(run.prog.elapsed_s + time.perf_counter() - start, 3),
            },
        )
    if values.size and write:
        _account(run)
        run.board.train(step, values[-1], lr)
    if values.size and bar is not None:
        bar.set_postfix(loss=f"{values[-1, 0]:.4f}", lr=f"{lr:.2e}")
    return [float(v) for v in values[:, 0]]


def _account(run: _Run) -> dict[str, Any]:
    """A log point: samples so far in this segment and peak memory, persisted (cost.json);
    returns the run's cost so far."""
    samples = (run.prog.step - run.first_step) * run.cfg.optim.batch_size
    return run.meter.seen(samples, _peak_memory_mb(run.rt.device))


def _progress_bar(run: _Run, steps: int) -> Any:
    if not run.progress_bar:
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"epoch {run.prog.epoch + 1}/{run.cfg.train.epochs}", leave=False)


def _end_epoch(run: _Run, record: dict[str, Any]) -> None:
    """The epoch's evaluation (the test split, or with eval.objective=val the validation
    frames: a "val" record of its own), its records, the checkpoint, then the report."""
    cfg, prog = run.cfg, run.prog
    split = cfg.eval.objective
    metrics: dict[str, float] = {}
    images = 0
    board = run.board
    if cfg.eval.every_epoch or prog.epoch == cfg.train.epochs:
        run.meter.phase("eval")
        evaluation, preds = _evaluate_epoch(run)
        run.meter.phase(None)
        metrics, images = evaluation.metrics_by_scale[0], evaluation.n_images
        board.disparities(prog.step, preds.disp.get(0, []), preds.index, split)
    board.epoch(prog.step, record, metrics, split)
    line = {
        "type": "epoch",
        "epoch": prog.epoch,
        "step": prog.step,
        "time_s": round(prog.elapsed_s, 3),
        **record,
        **(metrics if split == "test" else {}),
    }
    # The lines before the checkpoint: a crash between the two resumes from the previous
    # checkpoint, which drops the lines and logs them again (the other order would lose them).
    store.append_jsonl(run.run_dir / store.METRICS_FILE, line)
    validated = {}
    if split == "val" and metrics:
        validated = {f"val_{k}": v for k, v in metrics.items()}
        val = {"type": "val", "epoch": prog.epoch, "step": prog.step, **metrics}
        store.append_jsonl(run.run_dir / store.METRICS_FILE, {**val, "n_images": images})
    cost = {"type": "cost", "epoch": prog.epoch, "step": prog.step, **_account(run)}
    store.append_jsonl(run.run_dir / store.METRICS_FILE, cost)
    ckpt_dir = save_checkpoint(run.run_dir, run.rt, run.optimizer, prog)
    run.meter.checkpointed()
    board.flush()
    if run.progress_bar:
        shown = ", ".join(
            f"{k} {metrics[k]:.4f}" for k in ("abs_rel", "rmse", "a1") if k in metrics
        )
        on = " (validation)" if split == "val" and shown else ""
        print(f"epoch {prog.epoch}/{cfg.train.epochs}: loss {record['train_loss']:.4f} {shown}{on}")
    if run.report is not None:
        run.report({**line, **validated, "checkpoint_dir": str(ckpt_dir)})


def _evaluate_epoch(run: _Run) -> tuple[Evaluation, Predictions]:
    """Scale 0 on the test split, or on the validation frames (eval.objective=val)."""
    if run.val is None:
        return _evaluate(run, scales=(0,), keep=IMAGES)
    return evaluate_model(
        run.rt.models,
        build_frames_loader(run.cfg, run.paths, run.val.lines),
        run.val.gts,
        model_cfg=run.cfg.model,
        eval_cfg=run.cfg.eval,
        scales=(0,),
        device=run.rt.device,
        keep=IMAGES,
    )


def _evaluate(run: _Run, scales: tuple[int, ...], keep: int) -> tuple[Evaluation, Predictions]:
    return evaluate_model(
        run.rt.models,
        build_test_loader(run.cfg, run.paths),
        run.gts,
        model_cfg=run.cfg.model,
        eval_cfg=run.cfg.eval,
        scales=scales,
        device=run.rt.device,
        keep=keep,
    )


def _finish(run: _Run) -> dict[str, Any]:
    """The final evaluation; trained.json is written whatever it does (the training is done, a
    failed evaluation is made again without training)."""
    cfg, run_dir = run.cfg, run.run_dir
    run.meter.phase("eval")
    try:
        evaluation, preds = _evaluate(run, scales=cfg.eval.scales, keep=cfg.eval.save_predictions)
    finally:
        run.meter.phase(None)
        trained = {
            "run_id": cfg.run_id(),
            "epochs": run.prog.epoch,
            "steps": run.prog.step,
            "wall_time_s": round(run.prog.elapsed_s, 3),
            "device": describe_device(run.rt.device),
            "seed": cfg.train.seed,
            "finished_at": store.now(),
            **store.provenance(),
            "cost": run.meter.close("finished"),
        }
        run.acct.meter = None  # closed: train's exit paths leave it alone
        store.write_trained(run_dir, trained)
    folder = store.eval_path(run_dir, cfg.eval_id())
    return record_evaluation(folder, cfg, evaluation, preds, trained)
