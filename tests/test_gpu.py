"""CUDA-only checks (deselected by default: run `pytest -m gpu` on a machine with a GPU)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from depthcore import device, engine
from depthcore.config import load_config
from depthcore.data import build_train_loader, resolve_data
from depthcore.resample import lanczos_pyramid

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda_overrides(tiny_overrides: list[str]) -> list[str]:
    if not torch.cuda.is_available():
        pytest.fail("the gpu tests need a CUDA device (run them with -m gpu on a GPU machine)")
    return [o for o in tiny_overrides if not o.startswith("train.device")] + ["train.device=cuda"]


def _params(models: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().clone() for k, v in models.named_parameters()}


def _steps(cfg, graph: bool, batches: list[dict]) -> tuple[list[float], dict, dict]:
    device.seed_everything(cfg.train.seed)
    rt = engine.build_runtime(cfg, torch.device("cuda"))
    rt = dataclasses.replace(rt, graph=graph)
    start = _params(rt.models)
    opt = engine.make_optimizer(rt)
    step = engine.make_step(rt, opt)
    losses = [float(step(b).total.detach()) for b in batches]
    return losses, start, _params(rt.models)


@pytest.mark.parametrize(
    ("setting", "graph"),
    [
        ("train.compile=none", True),
        ("train.compile=loss", True),
        ("train.pose_stream=true", True),
        ("train.pose_stream=true", False),
    ],
)
def test_fast_step_variants_train_like_the_plain_eager_step(
    cuda_overrides, setting: str, graph: bool
) -> None:
    """A captured graph, a compiled loss inside it, and the pose network on its own stream
    (eager or captured) all train as the plain eager step does."""
    plain = [*cuda_overrides, "train.amp=false", "data.augment=true"]
    cfg = load_config(None, [*plain, setting])
    loader = build_train_loader(cfg, resolve_data(cfg))
    batches = [b for _, b in zip(range(3), loader, strict=False)]
    eager_losses, start, eager_w = _steps(load_config(None, plain), False, batches)
    graph_losses, graph_start, graph_w = _steps(cfg, graph, batches)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)
    # Adam's normalised steps amplify rounding differences (fused vs capturable Adam, cuDNN
    # algorithms) for near-zero gradients, so compare each tensor's update as a whole: a graph
    # that skipped, repeated or mis-ordered one of the 3 updates would be off by >= 1/3 of it.
    for key, value in eager_w.items():
        assert torch.equal(graph_start[key], start[key])
        update = (value - start[key]).norm()
        assert (graph_w[key] - value).norm() <= 0.15 * update + 1e-7, key


def test_the_example_loss_plugin_is_captured_and_trains_like_the_eager_step(
    cuda_overrides,
) -> None:
    """examples/gradient_ssim.py passes the capture check on meta tensors (test_plugins.py); here
    the CUDA graph really captures it."""
    repo = Path(__file__).resolve().parents[1]
    plugin = f"{{fn: 'examples.gradient_ssim:gradient_ssim', path: '{repo}'}}"
    cfg = load_config(
        None,
        [*cuda_overrides, "train.amp=false", "loss.photometric=custom", f"loss.custom={plugin}"],
    )
    loader = build_train_loader(cfg, resolve_data(cfg))
    batches = [b for _, b in zip(range(3), loader, strict=False)]
    eager_losses, _, _ = _steps(cfg, False, batches)
    graph_losses, _, _ = _steps(cfg, True, batches)
    assert graph_losses == pytest.approx(eager_losses, rel=1e-4)


def test_cuda_run_with_amp_and_graph_writes_finite_metrics(cuda_overrides, tmp_path) -> None:
    cfg = load_config(None, [*cuda_overrides, "train.amp=true", "train.cuda_graph=true"])
    final = engine.train(cfg, tmp_path, progress=False)
    assert final["device"].startswith("cuda")
    assert all(torch.isfinite(torch.tensor(v)) for v in final["metrics"].values())


def test_resume_on_cuda_continues_from_the_checkpoint(cuda_overrides, tmp_path) -> None:
    cfg = load_config(None, [*cuda_overrides, "train.epochs=2"])

    class Stop(Exception):
        pass

    def stop(record: dict) -> None:
        if record["epoch"] == 1:
            raise Stop

    with pytest.raises(Stop):
        engine.train(cfg, tmp_path, report=stop, progress=False)
    final = engine.train(cfg, tmp_path, progress=False)
    assert final["epochs"] == 2 and final["steps"] == 4


def test_image_pyramid_on_cuda_equals_the_cpu_one_exactly(cuda_overrides) -> None:
    # Float64 sums of 8-bit levels times 22-bit fixed-point weights are exact in any order.
    levels = torch.randint(0, 256, (2, 3, 64, 192), generator=torch.Generator().manual_seed(0))
    image = levels.float() / 255
    on_cpu = lanczos_pyramid(image, 4)
    on_cuda = lanczos_pyramid(image.cuda(), 4)
    for a, b in zip(on_cpu, on_cuda, strict=True):
        assert torch.equal(a, b.cpu())


def test_cuda_benchmark_reports_sustained_rate_utilisation_and_packing(
    cuda_overrides, synthetic_cache, tmp_path
) -> None:
    sets = [o for o in cuda_overrides if o.startswith(("data.synthetic", "data.cache_dir"))]
    args = ["--device", "cuda", "--size", "192x64", "--batch", "2", "--steps", "20"]
    args += ["--warmup", "3", "--data-batches", "2", "--pack", "2", "--json"]
    for kv in sets:
        args += ["--set", kv]
    bench = Path(__file__).resolve().parent.parent / "runners" / "bench.py"
    proc = subprocess.run(
        [sys.executable, str(bench), *args], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    for step in res["steps"]:
        assert "error" not in step, step
        assert step["sustained_samples_per_s"] > 0
        assert step["gpu_util_percent"] is not None
    pack = res["pack"]
    assert "error" not in pack, pack
    assert 0 < pack["overlap"] <= 1 and pack["combined_samples_per_s"] > 0
