"""Loss plugins: a photometric error of your own, named by `loss.custom.fn` (docs/losses.md).

`loss.photometric: custom` with `loss.custom: {fn: "package.module:function", params: {...}}`
calls `function(pred, target, **inputs, **params)` where the built-in errors are computed, so
auto-masking, the per-pixel minimum over sources, both loss paths (`train.loss_impl`) and the
CUDA graph treat it as they treat `standard`. The function asks for what it needs by naming it
as a keyword parameter (INPUTS: `l1`, `ssim`, `components`, `stats`, `window`, `c1`, `c2`); every
other keyword parameter is filled from `params`.

A plugin is imported by module path, not through an entry-point group: a file in a folder works
without packaging (`loss.custom.path` puts the folder on sys.path first), the file to hash for
the run id is the module's own, and a Ray worker imports it the same way as the driver.

Finding the module and hashing its file (for the run id): depthcore/plugin_source.py. This
module imports torch only inside the functions that use it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from depthcore.errors import ConfigError
from depthcore.plugin_source import add_path, file_sha
from depthcore.yamlio import did_you_mean

if TYPE_CHECKING:
    from torch import Tensor

    from depthcore.config import CustomLoss, LossConfig

__all__ = [
    "INPUTS",
    "Plugin",
    "check_plugin",
    "plugin_error",
    "resolve",
    "wants_window_stats",
]

# What the loss computes for a plugin that names it as a keyword parameter.
INPUTS = {
    "l1": "|target - pred| per channel",
    "ssim": "the standard SSIM map per channel (depthcore.ssim.ssim_map)",
    "components": "(L, C, S) per channel (depthcore.ssim.ssim_components)",
    "stats": "(mu_pred, mu_target, E[pred^2], E[target^2], E[pred*target]), box means over the "
    "window (depthcore.ssim.local_statistics)",
    "window": "loss.ssim_window (int)",
    "c1": "loss.c1 (float)",
    "c2": "loss.c2 (float)",
}
_WINDOWED = ("ssim", "components", "stats")
# ----------------------------------------------------------------------------------------------
# Importing and calling


@dataclass(frozen=True)
class Plugin:
    """A resolved plugin: the function and what it asks for."""

    name: str
    fn: Callable[..., Tensor]
    wants: frozenset[str]  # the INPUTS it names
    accepts: frozenset[str] | None  # the params it takes (None: **kwargs, anything)
    required: frozenset[str]  # params without a default

    @property
    def windowed(self) -> bool:
        """Whether it needs SSIM window statistics (then the target's are pooled once)."""
        return bool(self.wants & set(_WINDOWED))


def resolve(custom: CustomLoss) -> Plugin:
    """The plugin's function (imported once per process and source version)."""
    return _resolve(custom.fn, custom.path, custom.source_sha256())


@functools.lru_cache(maxsize=32)
def _resolve(fn: str, path: str | None, sha: str) -> Plugin:
    module_name, _, attr = fn.partition(":")
    name = f"loss plugin {fn!r}"
    add_path(path)
    module = _load(module_name, name)
    if _LOADED[module_name] != sha:
        raise ConfigError(
            f"{name}: {module.__file__} changed after the run id was computed; start again "
            "(the edited plugin gets new run ids)"
        )
    func = getattr(module, attr, None)
    if func is None:
        known = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")]
        raise ConfigError(
            f"{name}: {module.__file__} defines no {attr!r}{did_you_mean(attr, known)}"
        )
    if not callable(func):
        raise ConfigError(f"{name}: {attr!r} in {module.__file__} is not a function")
    return _describe(name, func)


# Module name -> the hash of the source this process executed for it (the file may have changed
# since; the run id says which source a run trains).
_LOADED: dict[str, str | None] = {}


def _load(module_name: str, name: str) -> ModuleType:
    """The module, imported, or re-run when its file changed since this process ran it."""
    module = sys.modules.get(module_name)
    if module is None:
        sha = file_sha(source_of(module_name))
        module = _import(module_name, name)
    else:
        sha = file_sha(getattr(module, "__file__", None))
        if _LOADED.get(module_name, "") != sha:  # imported elsewhere, or edited since
            module = _reload(module, name)
    _LOADED[module_name] = sha
    return module


def source_of(module_name: str) -> str | None:
    spec = importlib.util.find_spec(module_name)
    return spec.origin if spec is not None else None


def _import(module_name: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # the module itself was found (source_file): its code failed
        raise ConfigError(
            f"{name}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None


def _reload(module: ModuleType, name: str) -> ModuleType:
    # The bytecode cache is checked by the file's mtime (in seconds) and size: an edit within the
    # same second that keeps the size would run the old code.
    source = getattr(module, "__file__", None)
    if source:
        with contextlib.suppress(ValueError, NotImplementedError, OSError):
            Path(importlib.util.cache_from_source(source)).unlink(missing_ok=True)
    try:
        return importlib.reload(module)
    except Exception as exc:
        raise ConfigError(
            f"{name}: reloading {module.__name__!r} raised {type(exc).__name__}: {exc}"
        ) from None


def _describe(name: str, func: Callable[..., Any]) -> Plugin:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}: cannot read its signature ({exc})") from None
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind == p.VAR_POSITIONAL for p in params):
        raise ConfigError(
            f"{name}: must take (pred, target, ...) as its first two arguments; its signature "
            f"is {signature}"
        )
    keyword = [p for p in params[2:] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    wants = frozenset(p.name for p in keyword if p.name in INPUTS)
    own = [p for p in keyword if p.name not in INPUTS]
    open_ended = any(p.kind == p.VAR_KEYWORD for p in params)
    return Plugin(
        name=name,
        fn=func,
        wants=wants,
        accepts=None if open_ended else frozenset(p.name for p in own),
        required=frozenset(p.name for p in own if p.default is p.empty),
    )


def wants_window_stats(loss: LossConfig) -> bool:
    """Whether `loss` reads SSIM window statistics (built-ins but l1, or a plugin asking)."""
    if loss.photometric == "custom":
        assert loss.custom is not None  # LossConfig's validator
        return resolve(loss.custom).windowed
    return loss.photometric != "l1"


def plugin_inputs(
    plugin: Plugin,
    pred: Tensor,
    target: Tensor,
    loss: LossConfig,
    stacked: bool,
    target_stats: tuple[Tensor, Tensor] | None,
) -> dict[str, Any]:
    """The INPUTS the plugin asks for, computed as the built-in errors compute them."""
    from depthcore.ssim import local_statistics, ssim_components, ssim_map

    win, c1, c2 = loss.ssim_window, loss.c1, loss.c2
    out: dict[str, Any] = {}
    for key in plugin.wants:
        if key == "l1":
            out[key] = (target - pred).abs()
        elif key == "ssim":
            out[key] = ssim_map(pred, target, win, c1, c2, stacked=stacked, y_stats=target_stats)
        elif key == "components":
            out[key] = ssim_components(
                pred, target, win, c1, c2, stacked=stacked, y_stats=target_stats
            )
        elif key == "stats":
            out[key] = local_statistics(pred, target, win, stacked=stacked, y_stats=target_stats)
        else:
            out[key] = {"window": win, "c1": c1, "c2": c2}[key]
    return out


def plugin_error(
    pred: Tensor,
    target: Tensor,
    loss: LossConfig,
    stacked: bool,
    target_stats: tuple[Tensor, Tensor] | None,
) -> Tensor:
    """The plugin's error map for `pred` against `target`, shape-checked (no host sync)."""
    assert loss.custom is not None  # LossConfig's validator
    plugin = resolve(loss.custom)
    inputs = plugin_inputs(plugin, pred, target, loss, stacked, target_stats)
    return _call(plugin, loss.custom.params, pred, target, inputs)


def _call(
    plugin: Plugin,
    params: Mapping[str, Any],
    pred: Tensor,
    target: Tensor,
    inputs: Mapping[str, Any],
) -> Tensor:
    import torch

    err = plugin.fn(pred, target, **inputs, **params)
    if not isinstance(err, torch.Tensor):
        raise ConfigError(f"{plugin.name}: returned {type(err).__name__}, not a tensor")
    full = torch.broadcast_shapes(pred.shape, target.shape)
    per_pixel = (*full[:-3], 1, *full[-2:])
    if tuple(err.shape) not in (tuple(full), per_pixel):
        raise ConfigError(
            f"{plugin.name}: returned shape {tuple(err.shape)} for pred {tuple(pred.shape)} "
            f"and target {tuple(target.shape)}; return the per-pixel error, {tuple(full)} "
            f"(per channel, averaged here) or {per_pixel}"
        )
    if not err.is_floating_point():
        raise ConfigError(f"{plugin.name}: returned {err.dtype}; return a floating-point error")
    return err


# ----------------------------------------------------------------------------------------------
# Checks before any training: import, params, shape, finite values and gradients, CUDA graphs


def check_plugin(loss: LossConfig, *, capture: bool) -> None:
    """Import the plugin and run it on tiny CPU images; raise ConfigError naming it.

    Args:
        loss: a LossConfig with `photometric: custom`.
        capture: also check that it can be captured in a CUDA graph (no host syncs, no host
            data), by running it on meta tensors.
    """
    assert loss.custom is not None  # LossConfig's validator
    plugin = resolve(loss.custom)
    _check_params(plugin, loss.custom.params)
    for case, (pred, target) in _cases(loss.ssim_window).items():
        _check_case(plugin, loss, case, pred, target)
    if capture:
        _check_capturable(plugin, loss)


def _check_params(plugin: Plugin, params: Mapping[str, Any]) -> None:
    reserved = sorted(set(params) & set(INPUTS))
    if reserved:
        raise ConfigError(
            f"{plugin.name}: loss.custom.params.{reserved[0]} is a name the loss fills in "
            f"({INPUTS[reserved[0]]}); rename the parameter"
        )
    if plugin.accepts is not None:
        unknown = sorted(set(params) - plugin.accepts)
        if unknown:
            hint = did_you_mean(unknown[0], sorted(plugin.accepts))
            takes = ", ".join(sorted(plugin.accepts)) or "none"
            raise ConfigError(
                f"{plugin.name}: takes no parameter {unknown[0]!r}{hint} (loss.custom.params); "
                f"its parameters: {takes}"
            )
    missing = sorted(plugin.required - set(params))
    if missing:
        raise ConfigError(
            f"{plugin.name}: needs loss.custom.params.{missing[0]} (it has no default)"
        )


def _cases(window: int) -> dict[str, tuple[Tensor, Tensor]]:
    """Tiny image pairs in the loss's two call forms: warped sources (N, B, 3, H, W) against a
    target (B, 3, H, W), and one image against one. Identical and flat images have zero-variance
    windows, where 0/0 and sqrt(0) give NaN values or gradients."""
    import torch

    gen = torch.Generator().manual_seed(0)
    h = max(12, window + 5)
    w = h + 4
    target = torch.rand(2, 3, h, w, generator=gen)
    sources = torch.rand(3, 2, 3, h, w, generator=gen)
    flat = torch.full((1, 3, h, w), 0.5)
    return {
        "random warped sources against a target": (sources, target),
        "one random image against another": (sources[0], target),
        "identical images": (target.clone(), target),
        "flat images": (flat.clone(), flat),
    }


def _check_case(plugin: Plugin, loss: LossConfig, case: str, pred: Tensor, target: Tensor) -> None:
    import torch

    pred = pred.clone().requires_grad_(True)
    for stacked, target_stats in _paths(pred, target, loss, plugin):
        inputs = plugin_inputs(plugin, pred, target, loss, stacked, target_stats)
        try:
            err = _call(plugin, loss.custom.params if loss.custom else {}, pred, target, inputs)
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(
                f"{plugin.name}: raised {type(exc).__name__} on {case} "
                f"(pred {tuple(pred.shape)}, target {tuple(target.shape)}): {exc}"
            ) from None
        if not bool(torch.isfinite(err).all()):
            raise ConfigError(f"{plugin.name}: returned NaN or inf on {case}; {_FINITE_FIX}")
        if not err.requires_grad:
            raise ConfigError(
                f"{plugin.name}: its error on {case} has no gradient with respect to pred, so "
                "the networks would learn nothing from it; do not detach pred or leave torch"
            )
        (grad,) = torch.autograd.grad(err.sum(), pred, allow_unused=True)
        if grad is not None and not bool(torch.isfinite(grad).all()):
            raise ConfigError(f"{plugin.name}: its gradient is NaN or inf on {case}; {_FINITE_FIX}")


_FINITE_FIX = (
    "guard 0/0 and the slopes of sqrt and log at 0 (add an epsilon, as depthcore.ssim does)"
)


def _paths(
    pred: Tensor, target: Tensor, loss: LossConfig, plugin: Plugin
) -> list[tuple[bool, tuple[Tensor, Tensor] | None]]:
    """The fast path (stacked pooling, the target's statistics pooled once) and, for one image
    against one as it calls the loss, the reference path (one pooling call per statistic)."""
    from depthcore.ssim import window_statistics

    stats = window_statistics(target, loss.ssim_window) if plugin.windowed else None
    return [(True, stats), (False, None)] if pred.shape == target.shape else [(True, stats)]


def _check_capturable(plugin: Plugin, loss: LossConfig) -> None:
    """Run the plugin on meta tensors (shapes without data): a host sync (`.item()`, `bool()`
    of a tensor, `if tensor ...:`, `.cpu()`, boolean-mask indexing) fails there, and a tensor made
    from host data or left on the CPU is caught by a TorchFunctionMode."""

    pred, target = _cases(loss.ssim_window)["random warped sources against a target"]
    stats = None
    if plugin.windowed:
        from depthcore.ssim import window_statistics

        stats = window_statistics(target, loss.ssim_window)
    inputs = plugin_inputs(plugin, pred, target, loss, True, stats)
    meta = {k: _to_meta(v) for k, v in inputs.items()}
    pred_m = pred.to("meta").requires_grad_(True)
    params = loss.custom.params if loss.custom else {}
    watch = _HostWatch()
    try:
        with watch:
            err = plugin.fn(pred_m, target.to("meta"), **meta, **params)
            err.sum().backward()
    except Exception as exc:
        what = f"{watch.culprit or type(exc).__name__} failed without tensor data ({exc})"
        raise ConfigError(
            f"{plugin.name}: cannot be captured in a CUDA graph (train.cuda_graph is on): "
            f"{watch.host[0] if watch.host else what}. {_CAPTURE_RULE}"
        ) from None
    if watch.host:
        raise ConfigError(
            f"{plugin.name}: cannot be captured in a CUDA graph (train.cuda_graph is on): "
            f"{watch.host[0]}. {_CAPTURE_RULE}"
        )


_CAPTURE_RULE = (
    "A plugin must not read tensor values on the host (.item(), float(t), bool(t), `if t...`, "
    ".cpu(), .tolist(), boolean masks) nor create tensors from host data (torch.tensor(...), "
    "torch.ones(...) without device=pred.device); see docs/losses.md. Or set "
    "train.cuda_graph=false (or train.device=cpu)"
)


def _to_meta(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("meta").requires_grad_(value.requires_grad)
    if isinstance(value, tuple):
        return tuple(_to_meta(v) for v in value)
    return value


class _HostWatch(contextlib.AbstractContextManager["_HostWatch"]):
    """Records torch calls that put data on the host or read it from the device."""

    def __init__(self) -> None:
        self.host: list[str] = []
        self.culprit: str | None = None
        self._mode: Any = None

    def __enter__(self) -> _HostWatch:
        from torch.overrides import TorchFunctionMode

        watch = self

        class Mode(TorchFunctionMode):
            def __torch_function__(
                self, func: Any, types: Any, args: Any = (), kwargs: Any = None
            ) -> Any:
                return watch.call(func, args, kwargs or {})

        self._mode = Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)

    def call(self, func: Any, args: Any, kwargs: Any) -> Any:
        import torch

        name = getattr(func, "__qualname__", None) or getattr(func, "__name__", str(func))
        try:
            out = func(*args, **kwargs)
        except Exception:
            self.culprit = self.culprit or name
            raise
        if func in (torch.tensor, torch.as_tensor, torch.from_numpy):
            self.host.append(f"{name}(...) copies host data to the device at every step")
        for tensor in _tensors(out):
            if tensor.device.type != "meta" and tensor.dim() > 0:
                self.host.append(f"{name}(...) made a {tensor.device.type} tensor; pass "
                                 "device=pred.device")  # fmt: skip
        return out


def _tensors(value: Any) -> Iterator[Tensor]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)
