"""Loss plugins (`loss.photometric: custom`): the built-in run ids stay, a plugin plugs in where
the built-in errors do, its source is part of the run id, and every bad plugin is refused by name
(exit code 2) before training. The end-to-end sweep with the example plugin is marked slow."""

from __future__ import annotations

import itertools
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from test_losses import _random_batch, _run

from depthcore.config import LossConfig, config_from_dict, load_config
from depthcore.errors import ConfigError
from depthcore.losses import photometric_error
from depthcore.plugins import check_plugin
from depthcore.sweep import expand, load_sweep, sweep_from_dict

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "examples.gradient_ssim:gradient_ssim"
_names = itertools.count()

# Monodepth2's `standard` error written as a plugin, from the inputs the loss hands it.
STANDARD = """
def standard(pred, target, *, ssim, l1, kappa=0.85):
    return kappa * ((1 - ssim) / 2).clamp(0, 1) + (1 - kappa) * l1
"""


def write_plugin(folder: Path, body: str) -> str:
    """A module with `body` in `folder` under a name no other test uses (modules are cached per
    process); returns the module name."""
    name = f"plugin_{os.getpid()}_{next(_names)}"
    (folder / f"{name}.py").write_text("import torch\n" + textwrap.dedent(body))
    return name


def custom(fn: str, path: Path | str | None, **params: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"fn": fn, "params": params}
    if path is not None:
        spec["path"] = str(path)
    return {"photometric": "custom", "custom": spec}


# ----------------------------------------------------------------------------------------------
# Built-in kinds keep their run ids


# The loss keys each built-in kind's run id was made of before plugins existed.
BUILT_IN_KEYS = {
    "standard": ("ssim_weight", "ssim_window", "c1", "c2"),
    "ssim_m": ("ssim_weight", "alpha", "beta", "gamma", "ssim_window", "c1", "c2"),
    "ssim_a": ("w_mae", "w_l", "w_c", "w_s", "ssim_window", "c1", "c2"),
    "l1": (),
}


@pytest.mark.parametrize("kind", list(BUILT_IN_KEYS))
def test_built_in_kinds_keep_their_identity_and_ignore_a_custom_section(kind: str) -> None:
    cfg = load_config(None, [f"loss.photometric={kind}"])
    keys = ("photometric", "smoothness", "automask", "min_reprojection", *BUILT_IN_KEYS[kind])
    # Exactly what the identity held before (the rest of Config.identity is untouched here).
    assert cfg.identity()["loss"] == {k: cfg.to_dict()["loss"][k] for k in keys}
    stray = load_config(None, [f"loss.photometric={kind}", "loss.custom={fn: 'no.such:module'}"])
    assert stray.run_id() == cfg.run_id()


def test_custom_needs_its_section_and_a_module_colon_function() -> None:
    with pytest.raises(ConfigError, match=r"photometric: custom needs loss\.custom"):
        load_config(None, ["loss.photometric=custom"])
    with pytest.raises(ConfigError, match=r'loss.custom.fn: .*"package.module:function"'):
        load_config(None, ["loss.photometric=custom", "loss.custom={fn: examples.gradient_ssim}"])


# ----------------------------------------------------------------------------------------------
# The plugin sits where the built-in errors are computed


@pytest.mark.parametrize("automask", [True, False])
@pytest.mark.parametrize("min_reprojection", [True, False])
def test_a_plugin_of_the_standard_error_gives_the_standard_loss_on_both_paths(
    tmp_path: Path, automask: bool, min_reprojection: bool
) -> None:
    module = write_plugin(tmp_path, STANDARD)
    flags = {"automask": automask, "min_reprojection": min_reprojection}
    plugin = LossConfig(**custom(f"{module}:standard", tmp_path), **flags)
    built_in = LossConfig(photometric="standard", **flags)
    batch = _random_batch()
    want, want_grads = _run(batch, built_in, identity_once=True)
    for identity_once in (True, False):
        got, got_grads = _run(batch, plugin, identity_once=identity_once)
        torch.testing.assert_close(got.total, want.total, atol=1e-12, rtol=0)
        torch.testing.assert_close(got.automask, want.automask)
        for a, b in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_a_per_pixel_plugin_error_is_used_as_is(tmp_path: Path) -> None:
    module = write_plugin(
        tmp_path,
        """
        def grey(pred, target, *, scale=1.0):
            return scale * (pred.mean(-3, keepdim=True) - target.mean(-3, keepdim=True)).abs()
        """,
    )
    loss = LossConfig(**custom(f"{module}:grey", tmp_path, scale=2.0))
    g = torch.Generator().manual_seed(1)
    pred, target = torch.rand(3, 2, 3, 8, 10, generator=g), torch.rand(2, 3, 8, 10, generator=g)
    want = 2.0 * (pred.mean(-3, keepdim=True) - target.mean(-3, keepdim=True)).abs()
    torch.testing.assert_close(photometric_error(pred, target, loss), want)


def test_the_example_plugin_passes_every_check_including_cuda_graph_capture() -> None:
    loss = LossConfig(**custom(EXAMPLE, REPO, weight=0.85))
    check_plugin(loss, capture=True)
    g = torch.Generator().manual_seed(2)
    target = torch.rand(2, 3, 16, 24, generator=g)
    same = photometric_error(target.clone(), target, loss)
    assert same.shape == (2, 1, 16, 24) and float(same.abs().max()) < 1e-5  # only the eps in S
    other = photometric_error(torch.rand(2, 3, 16, 24, generator=g), target, loss)
    assert float(other.min()) > 0 and float(other.max()) <= 1


# ----------------------------------------------------------------------------------------------
# The run id follows the plugin's source, fn and params


def _plugin_sweep(tmp_path: Path, module: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "plugin",
        "base": {"train.device": "cpu"},
        "trials": [
            {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
            {
                "label": "mine",
                "loss.photometric": "custom",
                "loss.custom": {"fn": f"{module}:standard", "path": str(tmp_path)},
            },
        ],
        **extra,
    }


def test_editing_the_plugin_source_gives_new_run_ids(tmp_path: Path) -> None:
    module = write_plugin(tmp_path, STANDARD)
    before = {t.label: t.run_id for t in expand(sweep_from_dict(_plugin_sweep(tmp_path, module)))}
    source = tmp_path / f"{module}.py"
    source.write_text(source.read_text().replace("kappa=0.85", "kappa=0.5"))
    trials = expand(sweep_from_dict(_plugin_sweep(tmp_path, module)))
    after = {t.label: t.run_id for t in trials}
    assert after["baseline"] == before["baseline"]
    assert after["mine"] != before["mine"]
    # This process imported the old source (the sweep's check): the new run trains the new one.
    mine = next(t for t in trials if t.label == "mine").config.loss
    pred, target = torch.rand(2, 3, 12, 16), torch.rand(2, 3, 12, 16)
    want = photometric_error(pred, target, LossConfig(ssim_weight=0.5))
    torch.testing.assert_close(photometric_error(pred, target, mine), want)


def test_fn_and_params_are_in_the_run_id_and_the_plugin_folder_is_not(tmp_path: Path) -> None:
    module = write_plugin(tmp_path, STANDARD)
    ids = {
        config_from_dict({"loss": custom(f"{module}:standard", tmp_path, **p)}).run_id()
        for p in ({}, {"kappa": 0.8}, {"kappa": 0.9})
    }
    assert len(ids) == 3
    elsewhere = tmp_path / "copy"
    elsewhere.mkdir()
    (elsewhere / f"{module}.py").write_text((tmp_path / f"{module}.py").read_text())
    here = config_from_dict({"loss": custom(f"{module}:standard", tmp_path)})
    there = config_from_dict({"loss": custom(f"{module}:standard", elsewhere)})
    assert here.run_id() == there.run_id()  # same source in another folder: the same run


def test_a_grid_over_plugin_params_validates_them(tmp_path: Path) -> None:
    module = write_plugin(tmp_path, STANDARD)
    tree = _plugin_sweep(tmp_path, module, grid={"loss.custom.params.kappa": [0.8, 0.9]})
    tree["trials"] = tree["trials"][:1]
    tree["base"] = {"train.device": "cpu", **{f"loss.{k}": v for k, v in custom(
        f"{module}:standard", tmp_path).items()}}  # fmt: skip
    trials = expand(sweep_from_dict(tree))
    assert len({t.run_id for t in trials}) == 3
    assert [t.trial_id for t in trials[1:]] == ["kappa=0.8,seed=1234", "kappa=0.9,seed=1234"]
    tree["grid"] = {"loss.custom.params.kapa": [0.8]}
    with pytest.raises(ConfigError, match=r"takes no parameter 'kapa' \(did you mean 'kappa'"):
        sweep_from_dict(tree)


# ----------------------------------------------------------------------------------------------
# Bad plugins: refused by name when the sweep loads (exit code 2)

BAD = {
    "bad path": ("no_such_plugin_module", "def f(pred, target):\n    return pred\n", "no module"),
    "missing function": (None, "def standrd(pred, target):\n    return pred\n", "defines no"),
    "wrong shape": (
        None,
        "def standard(pred, target):\n    return (pred - target).abs().mean((-2, -1))\n",
        "returned shape",
    ),
    "NaN on the first batch": (
        None,
        "def standard(pred, target, *, stats):\n"
        "    mu_x, mu_y, e_xx, e_yy, e_xy = stats\n"
        "    return (e_xy - mu_x * mu_y) / ((e_xx - mu_x**2) * (e_yy - mu_y**2)).sqrt()\n",
        "returned NaN or inf on flat images",
    ),
    "import error": (None, "import no_such_dependency\n", "importing"),
}


def _bad_sweep(tmp_path: Path, case: str) -> tuple[dict[str, Any], str]:
    module_override, body, _ = BAD[case]
    module = write_plugin(tmp_path, body)
    fn = f"{module_override or module}:standard"
    tree = _plugin_sweep(tmp_path, module)
    tree["trials"][1]["loss.custom"]["fn"] = fn
    return tree, fn


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_plugin_is_refused_by_name_when_the_sweep_loads(tmp_path: Path, case: str) -> None:
    tree, fn = _bad_sweep(tmp_path, case)
    with pytest.raises(ConfigError) as info:
        sweep_from_dict(tree)
    assert info.value.exit_code == 2
    message = str(info.value)
    assert f"loss plugin {fn!r}" in message and BAD[case][2] in message
    assert "trials[1]" in message or "mine,seed=1234" in message  # the trial that uses it


@pytest.mark.slow
@pytest.mark.parametrize(
    "case", ["bad path", "missing function", "wrong shape", "NaN on the first batch"]
)
def test_runner_exits_2_naming_the_bad_plugin(tmp_path: Path, case: str) -> None:
    import yaml
    from sweep_runner import run_sweep_runner

    tree, fn = _bad_sweep(tmp_path, case)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(tree))
    proc = run_sweep_runner(str(path), "--results", str(tmp_path / "results"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"loss plugin {fn!r}" in proc.stderr and "Traceback" not in proc.stderr
    assert "RAY_IMPORTED=False" in proc.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("body", "culprit"),
    [
        ("    if (pred > 2).any():\n        pred = pred / 2\n", "__bool__"),
        ("    scale = float(pred.mean().item())\n    pred = pred * scale\n", "item"),
        ("    pred = pred * torch.ones(3, 1, 1)\n", "made a cpu tensor"),
        (
            "    pred = pred * torch.tensor([1.0, 1.0, 1.0], device=pred.device)[:, None, None]\n",
            "copies host data",
        ),
    ],
    ids=["branch", "item", "cpu_tensor", "host_data"],
)
def test_host_syncs_are_refused_when_a_cuda_graph_captures_the_loss(
    tmp_path: Path, body: str, culprit: str
) -> None:
    source = f"def standard(pred, target):\n{body}    return (pred - target).abs()\n"
    module = write_plugin(tmp_path, source)
    loss = LossConfig(**custom(f"{module}:standard", tmp_path))
    check_plugin(loss, capture=False)  # fine without a CUDA graph
    with pytest.raises(ConfigError, match=f"cannot be captured in a CUDA graph.*{culprit}"):
        check_plugin(loss, capture=True)
    tree = _plugin_sweep(tmp_path, module, base={"train.device": "auto"})
    tree["trials"][1]["loss.custom"]["fn"] = f"{module}:standard"
    with pytest.raises(ConfigError, match="cannot be captured"):
        sweep_from_dict(tree)  # train.cuda_graph is on by default; auto may be CUDA
    tree["base"] = {"train.device": "auto", "train.cuda_graph": False}
    sweep_from_dict(tree)


def test_non_finite_first_batch_in_training_names_the_plugin(
    tmp_path: Path, tiny_overrides: list[str]
) -> None:
    """NaN only on frames larger than the check's tiny images: the engine's first step says so."""
    from depthcore.engine import train

    module = write_plugin(
        tmp_path,
        """
        def standard(pred, target):
            err = (pred - target).abs()
            return err * float("nan") if pred.shape[-1] > 64 else err
        """,
    )
    spec = f"{{fn: '{module}:standard', path: '{tmp_path}'}}"
    cfg = load_config(None, [*tiny_overrides, "loss.photometric=custom", f"loss.custom={spec}"])
    with pytest.raises(ConfigError, match=rf"loss plugin '{module}:standard'.*first batch"):
        train(cfg, tmp_path / "run", progress=False)


# ----------------------------------------------------------------------------------------------
# The example, end to end: a sweep on Ray (workers import it through loss.custom.path), then
# the report


@pytest.mark.slow
def test_example_plugin_sweep_on_ray_appears_in_the_report(
    synthetic_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from depthcore import store
    from depthcore.report import build_report
    from depthcore.tuning import run_sweep

    # The example, copied to a folder on no one's sys.path: the workers find it only through
    # loss.custom.path.
    lab = tmp_path / "lab"
    lab.mkdir()
    module = f"g_ssim_{os.getpid()}"
    (lab / f"{module}.py").write_text((REPO / "examples" / "gradient_ssim.py").read_text())
    fn = f"{module}:gradient_ssim"
    smoke = load_sweep(REPO / "sweeps" / "smoke.yaml", [f"data.cache_dir={synthetic_cache}"])
    sweep = sweep_from_dict(
        {
            "name": "plugin_race",
            "base": smoke.base,
            "trials": [
                {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
                {"label": "g_ssim", **{f"loss.{k}": v for k, v in custom(fn, "lab").items()}},
            ],
        },
        overrides=["train.epochs=1", "train.steps_per_epoch=1", "eval.max_images=2"],
        cwd=tmp_path,  # relative paths (loss.custom.path: lab) resolve against it
    )
    results = tmp_path / "results"
    outcome = run_sweep(sweep, results, dashboard=False)
    assert outcome.exit_code == 0, capsys.readouterr().out
    plugin_run = next(t for t in expand(sweep) if t.label == "g_ssim")
    run_dir = store.run_path(results, plugin_run.run_id)
    assert store.read_evaluation(run_dir, plugin_run.eval_id) is not None
    saved = store.read_run_config(run_dir)
    assert saved is not None and saved["loss"]["custom"] == {
        "fn": fn, "params": {}, "path": str(lab)
    }  # fmt: skip
    report = build_report(results, ["plugin_race"], tmp_path / "report", figures=False)
    table = (report / "plugin_race" / "ablation.md").read_text()
    assert "| g_ssim " in table and "| baseline " in table.lower()


def test_the_example_sweep_loads_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # where docs/losses.md runs it: loss.custom.path "." is the root
    sweep = load_sweep(REPO / "examples" / "gradient_ssim.yaml")
    plugin = [t for t in expand(sweep) if t.config.loss.photometric == "custom"]
    assert plugin and all(t.config.loss.custom.path == str(REPO) for t in plugin)  # type: ignore[union-attr]
    assert plugin[0].config.loss.custom.fn == EXAMPLE  # type: ignore[union-attr]
