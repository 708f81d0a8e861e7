"""The whole training step (forward, losses, backward, Adam) captured once as a CUDA graph.

A Monodepth2 step launches a few thousand small kernels (three ResNets, a decoder, a loss at four
scales); on a fast GPU the Python and launch overhead, not the arithmetic, sets the pace. Replaying
a captured graph removes that overhead. Requirements met by the step: static shapes (drop_last),
no host synchronisation (sync-free augmentation, losses and checks), a capturable Adam whose
learning rate is a device tensor, and random numbers from the graph-safe CUDA generator.

Capturing needs a few warm-up steps (cuDNN algorithm search, lazy optimiser state); their effect
on weights, optimiser state, BatchNorm statistics and the RNG is undone afterwards, so a graphed
run trains exactly the steps an eager run does.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch

from depthcore.losses import LossTerms

WARMUP_STEPS = 3
log = logging.getLogger(__name__)


class GraphedStep:
    """`step(batch) -> LossTerms`: copy the batch into static buffers and replay the graph.

    Args:
        step_fn: one eager training step on device tensors (forward, backward, optimiser step);
            returns the LossTerms.
        models: the networks (their state is restored after warm-up).
        optimizer: a capturable optimiser (`capturable=True`, tensor learning rate).
        example: one batch (CPU tensors) giving the static shapes.
        device: the CUDA device.
    """

    def __init__(
        self,
        step_fn: Callable[[dict[str, torch.Tensor]], LossTerms],
        models: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        example: dict[str, torch.Tensor],
        device: torch.device,
    ) -> None:
        self.static = {k: v.to(device).clone() for k, v in example.items()}
        saved = _snapshot(models, optimizer, device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                step_fn(self.static)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        optimizer.zero_grad(set_to_none=True)
        # thread_local: the DataLoader's pin-memory thread may allocate host memory meanwhile.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.terms = step_fn(self.static)
        _restore(models, optimizer, device, saved)

    def __call__(self, batch: dict[str, torch.Tensor]) -> LossTerms:
        for key, buf in self.static.items():
            buf.copy_(batch[key], non_blocking=True)
        self.graph.replay()
        return self.terms


def _snapshot(
    models: torch.nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    return {
        "models": {k: v.detach().clone() for k, v in models.state_dict().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "rng": torch.cuda.get_rng_state(device),
    }


def _restore(
    models: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    saved: dict[str, Any],
) -> None:
    # In place: the captured graph holds these very tensors.
    with torch.no_grad():
        for key, value in models.state_dict().items():
            value.copy_(saved["models"][key])
        _restore_optimizer(optimizer, saved["optimizer"])
    # Warm-up drew noise too; rewind so the first real step draws what an eager run would.
    try:
        torch.cuda.set_rng_state(saved["rng"], device)
    except RuntimeError as exc:  # only the tie-breaking noise differs then
        log.warning("could not rewind the CUDA RNG after graph capture: %s", exc)


def _restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    old_state = saved["state"]
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, param in enumerate(params):
        state = optimizer.state.get(param, {})
        for name, tensor in state.items():
            if not isinstance(tensor, torch.Tensor):
                continue
            previous = old_state.get(index, {}).get(name)
            if previous is None:
                tensor.zero_()  # the optimiser had not stepped yet: fresh state
            else:
                tensor.copy_(previous)


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate; a tensor rate (capturable Adam) is filled in place."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr
