"""The whole benchmark runners/bench.py prints: the step variants in alternating rounds, the loss
and the data path alone, packed processes and a profile, as one dict."""

from __future__ import annotations

import os
from typing import Any

import torch

from depthcore.bench.processes import bench_pack, bench_rounds, profile_in_process, speedup
from depthcore.bench.timing import bench_data, bench_loss
from depthcore.bench.variants import BenchOptions, step_variants
from depthcore.config import Config
from depthcore.device import resolve_device


def run(options: BenchOptions) -> dict[str, Any]:
    """Everything runners/bench.py prints, as one dict."""
    options.check()
    setup = options.setup
    cfg = setup.config()
    out: dict[str, Any] = {
        "device": setup.device,
        "device_name": _device_name(cfg),
        "size": [setup.width, setup.height],
        "batch": cfg.optim.batch_size,
        "loss": cfg.loss.photometric,
        "rounds": options.rounds,
    }
    out["steps"] = steps = bench_rounds(setup, step_variants(options), rounds=options.rounds)
    out["step_speedup"] = speedup(steps[0], steps[1])
    out["speedups"] = {s["variant"]: speedup(steps[0], s) for s in steps[1:]}
    out["loss_samples_per_s"] = _loss_rates(cfg, options)
    cached = bench_data(cfg, cache=True, batches=options.data_batches)
    decoded = bench_data(cfg, cache=False, batches=options.data_batches)
    out["data_samples_per_s"] = {"cache": cached, "decode": decoded, "speedup": cached / decoded}
    if options.pack > 1:
        out["pack"] = bench_pack(setup, options.pack)
    if options.profile is not None:
        out["profile"] = profile_in_process(setup, options.profile, options.trace)
    return out


def _loss_rates(cfg: Config, options: BenchOptions) -> dict[str, float]:
    steps, warmup = options.setup.steps, options.setup.warmup
    rates = {
        "reference": bench_loss(cfg, fast=False, steps=steps, warmup=warmup),
        "fast": bench_loss(cfg, fast=True, steps=steps, warmup=warmup),
    }
    if options.compile in ("loss", "all"):
        rates["fast+compiled"] = bench_loss(
            cfg, fast=True, steps=steps, warmup=warmup, compiled=True
        )
    return rates


def _device_name(cfg: Config) -> str:
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
