"""What a benchmark runs: the speed-up variants, the settings its processes share, the config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthcore.config import Config, config_from_dict, deep_merge, load_config
from depthcore.errors import ConfigError


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


@dataclass(frozen=True)
class Setup:
    """What every process of one benchmark shares: device, input size, batch, step counts and
    config overrides. Plain JSON values, as it travels to the fresh processes."""

    device: str
    width: int
    height: int
    batch: int
    steps: int
    warmup: int
    overrides: tuple[str, ...] = ()

    def config(self) -> Config:
        return bench_config(self.device, self.width, self.height, self.batch, self.overrides)


@dataclass(frozen=True)
class BenchOptions:
    """Everything runners/bench.py asks for; `check` refuses bad counts before any work."""

    setup: Setup
    rounds: int = 1
    data_batches: int = 20
    ablate: bool = False
    compile: str | None = None  # also time the fast path with train.compile=WHAT
    pack: int = 1
    profile: int | None = None  # rows of the profile; None: no profile
    trace: Path | None = None

    def check(self) -> None:
        steps, rounds = self.setup.steps, self.rounds
        if rounds < 1 or steps < 1:
            raise ConfigError(f"--rounds and --steps must be >= 1, got {rounds} and {steps}")
        counts = (("--warmup", self.setup.warmup, 0), ("--data-batches", self.data_batches, 1))
        for flag, value, least in (*counts, ("--pack", self.pack, 1)):
            if value < least:
                raise ConfigError(f"{flag} must be >= {least}, got {value}")
        if self.profile is not None and self.profile < 1:
            raise ConfigError(f"--profile ROWS must be >= 1, got {self.profile}")
        if self.trace is not None and self.profile is None:
            raise ConfigError("--trace PATH writes the profile's trace: add --profile")


def bench_config(
    device: str, width: int, height: int, batch: int, overrides: Sequence[str] = ()
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


def with_sections(cfg: Config, **sections: dict[str, Any]) -> Config:
    return config_from_dict(deep_merge(cfg.to_dict(), sections))


def variant_config(cfg: Config, variant: Variant) -> Config:
    train = {
        "amp": variant.amp,
        "cuda_graph": variant.graph,
        "compile": variant.compile,
        "loss_impl": "fast" if variant.fast else "reference",
        "host_memory": variant.host_memory,
        "pose_stream": variant.pose_stream,
    }
    return with_sections(cfg, data={"cache": variant.cache}, train=train)


def step_variants(options: BenchOptions) -> list[Variant]:
    """The full-step variants to time, the reference and the fast path first."""
    cuda = options.setup.device == "cuda"
    variants = [REFERENCE, FAST]
    if options.ablate:
        variants += [
            Variant("fast-no-cache", cache=False),
            Variant("fast-reference-loss-and-pose", fast=False),
        ]
        if cuda:
            variants += [Variant("fast-no-graph", graph=False), Variant("fast-fp32", amp=False)]
        else:
            variants.append(Variant("fast-system-malloc", host_memory="system"))
    if options.compile:
        variants.append(Variant(f"fast+compile={options.compile}", compile=options.compile))
    if cuda:  # off by default until a GPU measurement shows its gain
        variants.append(Variant("fast+pose-stream", pose_stream=True))
    return variants
