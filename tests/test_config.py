"""The config tree: defaults, overrides, the documented errors, run identity."""

from __future__ import annotations

import pydantic
import pytest

from depthcore.config import Config, LossConfig, load_config
from depthcore.errors import ConfigError
from depthcore.yamlio import parse_override


def test_defaults_are_the_papers_settings() -> None:
    cfg = load_config()
    assert (cfg.data.height, cfg.data.width) == (192, 640)
    assert (cfg.optim.batch_size, cfg.optim.lr, cfg.optim.warmup_steps) == (8, 1e-4, 1000)
    assert (cfg.train.epochs, cfg.train.seed, cfg.optim.lr_step_epochs) == (20, 1234, 15)
    assert cfg.loss.ssim_weight == 0.85 and cfg.loss.photometric == "standard"
    assert cfg.model.scales == (0, 1, 2, 3) and cfg.model.upsample == "nearest"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("loss.w_c=-0.1", "loss.w_c: must be >= 0, got -0.1"),
        ("data.height=200", "data.height: must be a multiple of 32, got 200"),
        ("data.width=32", "data.width: must be at least 64, got 32"),
        ("optim.lr=.inf", "optim.lr: input should be a finite number, got inf"),
        ("eval.min_depth=100", "eval: max_depth (80.0) must be greater than min_depth (100.0)"),
        ("loss.ssim_wieght=0.3", "loss.ssim_wieght: unknown key (did you mean 'ssim_weight'?)"),
        ("train.device=gpu", "train.device: must be one of 'auto', 'cpu' or 'cuda', got 'gpu'"),
        ("loss.ssim_window=4", "loss.ssim_window: must be odd, got 4"),
        (
            "train.compile=fast",
            "train.compile: must be one of 'none', 'loss', 'networks' or 'all', got 'fast'",
        ),
        ("loss.ssim_weight=1.5", "loss.ssim_weight: must be <= 1, got 1.5"),
        ("loss.w_l=abc", "loss.w_l: input should be a valid number, got 'abc'"),
        ("optim.batch_size=0", "optim.batch_size: must be >= 1, got 0"),
        ("model.scales=[1,2]", "model.scales: must include 0"),
        ("eval.scales=[0,4]", "eval.scales [0, 4] includes [4], which the decoder does not output"),
        ("nosuch.key=1", "nosuch: unknown key; known: data, model, loss, optim, train, eval"),
    ],
)
def test_bad_values_name_the_key_and_the_rule(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_bad_yaml_file_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("loss:\n  w_c: 0.5\n  w_l: [0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml line \d+: invalid YAML"):
        load_config(path)


def test_file_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("loss:\n  w_c: -1\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml: loss\.w_c: must be >= 0"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")


def test_overrides_apply_in_order_and_parse_yaml(tmp_path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("loss:\n  photometric: ssim_a\n  w_c: 0.4\n")
    cfg = load_config(path, ["loss.w_c=0.6", "model.scales=[0, 1, 2, 3, 4]", "eval.scales=[4, 0]"])
    assert cfg.loss.photometric == "ssim_a" and cfg.loss.w_c == 0.6
    assert cfg.model.scales == (0, 1, 2, 3, 4) and cfg.eval.scales == (0, 4)
    assert parse_override("train.steps_per_epoch=null") == ("train.steps_per_epoch", None)
    with pytest.raises(ConfigError, match=r"expected dotted\.key=value"):
        parse_override("loss.w_c")


def test_config_is_frozen() -> None:
    cfg = load_config()
    with pytest.raises(pydantic.ValidationError):
        cfg.loss.w_c = 0.1  # type: ignore[misc]


def test_relative_paths_become_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["data.root=kitti_data"])
    assert cfg.data.root == str(tmp_path / "kitti_data")


def test_round_trip_through_yaml(tmp_path) -> None:
    cfg = load_config(None, ["loss.photometric=ssim_m", "loss.gamma=2"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg


def test_identity_ignores_unused_weights_speed_keys_and_locations() -> None:
    base = load_config()
    same = [
        "loss.w_c=0.6",  # unused by `standard`
        "loss.alpha=3",
        "data.num_workers=0",
        "train.device=cpu",
        "train.loss_impl=reference",
        "train.host_memory=system",
        "train.pose_stream=true",
        "train.cuda_graph=false",
        "data.root=/somewhere/else",
    ]
    assert load_config(None, same).run_id() == base.run_id()
    for different in ("loss.ssim_weight=0.5", "train.seed=1", "optim.batch_size=12"):
        assert load_config(None, [different]).run_id() != base.run_id()
    ssim_a = load_config(None, ["loss.photometric=ssim_a"])
    w_c = load_config(None, ["loss.photometric=ssim_a", "loss.w_c=0.6"])
    alpha = load_config(None, ["loss.photometric=ssim_a", "loss.alpha=2"])
    assert w_c.run_id() != ssim_a.run_id() and alpha.run_id() == ssim_a.run_id()


def test_relevant_loss_keys_cover_every_variant() -> None:
    for kind, must_have in {
        "standard": {"ssim_weight"},
        "ssim_m": {"ssim_weight", "alpha", "beta", "gamma"},
        "ssim_a": {"w_mae", "w_l", "w_c", "w_s"},
        "l1": set(),
    }.items():
        keys = set(LossConfig(photometric=kind).relevant_keys())
        assert must_have <= keys and set(keys) <= set(LossConfig.model_fields)


def test_config_sections_reject_unknown_keys_directly() -> None:
    with pytest.raises(pydantic.ValidationError):
        Config.model_validate({"loss": {"bogus": 1}})


def test_explicit_bundled_kitti_splits_are_the_same_run() -> None:
    implicit = load_config(None, ["data.dataset=kitti"])
    explicit = load_config(
        None,
        [
            "data.dataset=kitti",
            "data.split_dir=depthcore/splits/eigen_zhou",
            "eval.split_dir=x/eigen",
        ],
    )
    assert implicit.run_id() == explicit.run_id()
    other = load_config(None, ["data.dataset=kitti", "data.split_dir=splits/eigen_full"])
    assert other.run_id() != implicit.run_id()


def test_exponent_floats_without_a_dot_are_numbers(tmp_path) -> None:
    # PyYAML (YAML 1.1) would read 1e-4 as a string; researchers write learning rates this way.
    assert load_config(None, ["optim.lr=1e-4"]).optim.lr == 1e-4
    path = tmp_path / "cfg.yaml"
    path.write_text("optim:\n  lr: 3e-4\nloss:\n  smoothness: 1E-3\n")
    cfg = load_config(path)
    assert (cfg.optim.lr, cfg.loss.smoothness) == (3e-4, 1e-3)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", "networks"), ("false", "none"), ("loss", "loss"), ("all", "all")],
)
def test_train_compile_choices_and_legacy_booleans(value: str, expected: str) -> None:
    assert load_config(None, [f"train.compile={value}"]).train.compile == expected


def test_compile_and_speed_switches_do_not_change_the_run_id() -> None:
    base = load_config(None, [])
    assert load_config(None, ["train.compile=loss"]).run_id() == base.run_id()


def test_a_new_training_recipe_gives_new_run_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    from depthcore import config

    cfg = load_config()
    before = cfg.run_id()
    assert cfg.identity()["recipe"] == config.RECIPE_VERSION
    monkeypatch.setattr(config, "RECIPE_VERSION", config.RECIPE_VERSION + 1)
    assert cfg.run_id() != before
