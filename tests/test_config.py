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


# ----------------------------------------------------------------------------------------------
# Run identity (training only) and evaluation identity, key by key. The lists are written out
# here, not taken from depthcore.config, so that a key moved between them there is caught.

# Keys that only change speed, logging or where data lives: the run id stays.
NON_IDENTITY = {
    "data.root": "/somewhere/else",
    "data.num_workers": 3,
    "data.cache": False,
    "data.cache_dir": "/tmp/elsewhere",
    "train.device": "cpu",
    "train.compile": "loss",
    "train.cuda_graph": False,
    "train.pose_stream": True,
    "train.loss_impl": "reference",
    "train.host_memory": "system",
    "train.log_every": 7,
}
# eval keys that change an evaluation's metrics: the eval id changes, the run id stays.
EVAL_IDENTITY = {
    "eval.split_dir": "/data/splits/eigen_benchmark",
    "eval.gt_path": "/data/gt_improved.npz",
    "eval.scales": [0, 1],
    "eval.min_depth": 0.01,
    "eval.max_depth": 50.0,
    "eval.median_scaling": False,
    "eval.garg_crop": False,
    "eval.post_process": True,
    "eval.max_images": 10,
}
# eval keys that change neither id (every_epoch: the learning curves, a record of training).
EVAL_NON_IDENTITY = {"eval.batch_size": 3, "eval.every_epoch": False, "eval.save_predictions": 0}
# Keys of the training: both the run id changes and the eval id stays.
IDENTITY = {
    "data.dataset": "kitti",
    "data.split_dir": "/data/splits/eigen_full",
    "data.height": 256,
    "data.width": 832,
    "data.img_ext": ".png",
    "data.intrinsics": "calib",
    "data.frame_ids": [0, -1],
    "data.augment": False,
    "data.synthetic.drives": 3,
    "data.synthetic.frames": 50,
    "data.synthetic.native_width": 621,
    "data.synthetic.native_height": 188,
    "data.synthetic.seed": 1,
    "model.encoder": "resnet50",
    "model.pretrained": False,
    "model.scales": [0, 1],
    "model.upsample": "subpixel",
    "model.min_depth": 0.2,
    "model.max_depth": 90.0,
    "loss.photometric": "l1",
    "loss.ssim_weight": 0.5,
    "loss.ssim_window": 5,
    "loss.c1": 1e-3,
    "loss.c2": 1e-2,
    "loss.smoothness": 1e-2,
    "loss.automask": False,
    "loss.min_reprojection": False,
    "optim.lr": 2e-4,
    "optim.batch_size": 12,
    "optim.warmup_steps": 0,
    "optim.lr_step_epochs": 10,
    "optim.lr_gamma": 0.5,
    "train.epochs": 5,
    "train.steps_per_epoch": 10,
    "train.seed": 1,
    "train.amp": False,
    "train.deterministic": True,
}
# The per-epoch objective: with objective val the validation is part of the run (both keys,
# and the protocol keys above, change the run id then: test_objective_val_...); never the eval id.
OBJECTIVE = {"eval.objective", "eval.val_images"}
# Loss weights the default kind (standard) ignores: test_identity_ignores_unused_weights...
UNUSED_BY_STANDARD = {"loss.alpha", "loss.beta", "loss.gamma", "loss.w_mae", "loss.w_l"}
UNUSED_BY_STANDARD |= {"loss.w_c", "loss.w_s", "loss.custom"}  # custom: tests/test_plugins.py


def _with(key: str, value: object) -> Config:
    return load_config(None, [f"{key}={value}".replace("'", "")])


def test_every_config_key_has_a_place_in_the_identities() -> None:
    """A new key must be put in one of the lists above: part of the run, the evaluation or
    neither (a key forgotten there would silently change every id or none)."""
    from depthcore.sweep import _config_keys

    placed = [*NON_IDENTITY, *EVAL_IDENTITY, *EVAL_NON_IDENTITY, *IDENTITY, *UNUSED_BY_STANDARD]
    placed += OBJECTIVE
    assert len(placed) == len(set(placed))
    assert set(_config_keys()) == set(placed)


@pytest.mark.parametrize(("key", "value"), sorted({**NON_IDENTITY, **EVAL_NON_IDENTITY}.items()))
def test_speed_logging_and_location_keys_change_no_id(key: str, value: object) -> None:
    base, other = load_config(), _with(key, value)
    assert other != base
    assert (other.run_id(), other.eval_id()) == (base.run_id(), base.eval_id())


@pytest.mark.parametrize(("key", "value"), sorted(EVAL_IDENTITY.items()))
def test_evaluation_keys_change_the_eval_id_not_the_run_id(key: str, value: object) -> None:
    base, other = load_config(), _with(key, value)
    assert other.run_id() == base.run_id()
    assert other.eval_id() != base.eval_id()


@pytest.mark.parametrize(("key", "value"), sorted(IDENTITY.items()))
def test_training_keys_change_the_run_id_not_the_eval_id(key: str, value: object) -> None:
    base, other = load_config(), _with(key, value)
    assert other.run_id() != base.run_id()
    if key != "data.dataset":  # kitti: an unset eval.split_dir means the bundled eigen split
        assert other.eval_id() == base.eval_id()


def test_objective_val_puts_the_validation_in_the_run_id_and_never_in_the_eval_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from depthcore import config

    test, val = load_config(), _with("eval.objective", "val")
    assert val.run_id() != test.run_id() and val.eval_id() == test.eval_id()
    assert _with("eval.val_images", 50).run_id() == test.run_id()  # unused with objective test
    # With objective val, what the per-epoch validation records depend on is the run's ...
    changes = {"eval.val_images": 50, "eval.min_depth": 0.01, "eval.max_depth": 50.0}
    changes |= {"eval.median_scaling": False, "eval.garg_crop": False, "eval.post_process": True}
    for key, value in changes.items():
        other = load_config(None, ["eval.objective=val", f"{key}={value}"])
        assert other.run_id() != val.run_id(), key
    # ... and what only the final test evaluation reads is not.
    for key, value in {"eval.scales": [0, 1], "eval.max_images": 10, "eval.batch_size": 3}.items():
        other = load_config(None, ["eval.objective=val", f"{key}={value}"])
        assert other.run_id() == val.run_id(), key
    run_ids = (test.run_id(), val.run_id())
    monkeypatch.setattr(config, "VALIDATION_RECIPE_VERSION", config.VALIDATION_RECIPE_VERSION + 1)
    assert test.run_id() == run_ids[0] and val.run_id() != run_ids[1]


def test_evaluation_identity_counts_locations_by_name_and_the_kitti_default() -> None:
    kitti = load_config(None, ["data.dataset=kitti"])
    explicit = load_config(None, ["data.dataset=kitti", "eval.split_dir=/x/eigen"])
    assert kitti.eval_id() == explicit.eval_id()
    moved = load_config(None, ["eval.gt_path=/a/gt_depths.npz"])
    assert moved.eval_id() == load_config(None, ["eval.gt_path=/b/gt_depths.npz"]).eval_id()
    assert kitti.eval_identity()["recipe"] == load_config().eval_identity()["recipe"]


def test_a_new_evaluation_recipe_gives_new_eval_ids_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from depthcore import config

    cfg = load_config()
    run_id, eval_id = cfg.run_id(), cfg.eval_id()
    monkeypatch.setattr(config, "EVAL_RECIPE_VERSION", config.EVAL_RECIPE_VERSION + 1)
    assert cfg.run_id() == run_id and cfg.eval_id() != eval_id


@pytest.mark.parametrize(
    ("overrides", "legacy_id"),
    [
        ([], "be9b256aa6e8ecbd"),
        (["data.dataset=kitti"], "506a1f3e2b228b0f"),
        (["eval.max_images=5", "eval.post_process=true"], "2b3f94b282b7624c"),
        (["eval.every_epoch=false", "train.log_every=7"], "be9b256aa6e8ecbd"),
        (["eval.objective=val", "eval.val_images=9"], "be9b256aa6e8ecbd"),  # came later
    ],
)
def test_legacy_run_ids_are_those_of_the_version_before_evaluation_ids(
    overrides: list[str], legacy_id: str
) -> None:
    """The run ids that version gave these configs (computed with it): how run folders it wrote
    are recognised (depthcore.store.legacy_eval_id, the engine's same-run check)."""
    cfg = load_config(None, overrides)
    assert cfg.legacy_run_id() == legacy_id != cfg.run_id()
