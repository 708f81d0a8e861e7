"""Sweep files and their expansion (pure: no Ray, no training)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest

from depthcore.errors import ConfigError
from depthcore.sweep import (
    expand,
    first_runs,
    load_sweep,
    plan_lines,
    run_groups,
    sweep_from_dict,
    trial_from_params,
)
from depthcore.trials import index_entry, sweep_design, swept_keys

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "sweeps"
PAPER_TABLE2 = Path(__file__).resolve().parents[1] / "examples" / "paper_table2.csv"
# Table 1 of the paper: the (alpha, beta, gamma) rows besides the baseline.
TABLE1_ROWS = [
    (2, 1, 1),
    (3, 1, 1),
    (1, 2, 1),
    (1, 3, 1),
    (1, 1, 2),
    (1, 1, 3),
    (2, 2, 2),
    (3, 3, 3),
]
PAPER_SWEEPS = ("table1_ssim_m", "table2_grid", "table2_paper", "table3_upsampling")


def load(name: str, *overrides: str):
    return load_sweep(SWEEPS / f"{name}.yaml", overrides)


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# The paper's sweeps


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("table1_ssim_m", 10),
        ("table2_grid", 55),
        ("table2_paper", 22),
        ("table3_upsampling", 6),
        ("table4_multiscale", 2),
        ("smoke", 2),
    ],
)
def test_sweep_trial_counts(name: str, count: int) -> None:
    sweep = load(name)
    trials = expand(sweep)
    assert len(trials) == count
    assert plan_lines(sweep, trials)[-1] == f"{count} trials"
    assert len({t.trial_id for t in trials}) == count
    assert len(run_groups(trials)) == count  # no two trials of a paper table share a run


def test_quickstart_is_a_small_cpu_subset() -> None:
    sweep = load("quickstart")
    trials = expand(sweep)
    race = sweep.file.adaptive
    assert race is not None and (race.start, race.max) == (2, 3)  # 6 to 9 runs: the demo's budget
    assert len(trials) == 9 and len(first_runs(sweep, trials)) == 6
    kinds = {t.config.loss.photometric for t in trials}
    assert kinds == {"standard", "ssim_m", "ssim_a"}
    assert any(t.config.model.upsample == "subpixel" for t in trials)
    for t in trials:
        assert t.config.data.dataset == "synthetic" and t.config.train.device == "cpu"
        assert not t.config.model.pretrained  # no download in the demo
        assert t.config.eval.scales == (0, 1, 2, 3)  # the demo report shows Table 4's view


def test_table2_grid_runs_in_file_order_with_sorted_key_ids() -> None:
    """Expected ids computed independently: baseline first, then the grid as the file lists it
    (w_mae slowest, then w_l, w_c, w_s, as the paper's rows), each id's keys sorted, so that
    ids stay those of a file with its axes in any order."""
    axes = {
        "w_mae": ["0.3", "0.4"],
        "w_l": ["0.4", "0.5", "0.6"],
        "w_c": ["0.4", "0.5", "0.6"],
        "w_s": ["0.5", "0.6", "0.7"],
    }
    expected = ["baseline,seed=1234"] + [
        ",".join(f"{k}={v}" for k, v in sorted(zip(axes, combo, strict=True))) + ",seed=1234"
        for combo in itertools.product(*axes.values())
    ]
    trials = expand(load("table2_grid"))
    assert [t.trial_id for t in trials] == expected
    assert [t.trial_id for t in expand(load("table2_grid"))] == expected  # stable across loads
    for t in trials[1:]:
        loss = t.config.loss
        assert loss.photometric == "ssim_a"
        assert t.trial_id == f"w_c={loss.w_c},w_l={loss.w_l},w_mae={loss.w_mae},w_s={loss.w_s}" + (
            ",seed=1234"
        )


def test_table2_paper_has_exactly_the_published_rows() -> None:
    with PAPER_TABLE2.open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["role"] != "baseline"]
    assert len(rows) == 21
    keys = ("loss.w_mae", "loss.w_l", "loss.w_c", "loss.w_s")
    expected = [
        ",".join(f"{k.split('.')[1]}={float(r[k]):g}" for k in keys) + ",seed=1234" for r in rows
    ]
    trials = expand(load("table2_paper"))
    assert trials[0].role == "baseline" and trials[0].config.loss.photometric == "standard"
    assert [t.trial_id for t in trials[1:]] == expected
    for trial, row in zip(trials[1:], rows, strict=True):
        got = trial.config.loss
        assert (got.w_mae, got.w_l, got.w_c, got.w_s) == tuple(float(row[k]) for k in keys)


def test_table1_has_the_baseline_ssim_m_111_and_the_paper_rows() -> None:
    trials = expand(load("table1_ssim_m"))
    assert trials[0].role == "baseline" and trials[0].config.loss.photometric == "standard"
    exps = [(t.config.loss.alpha, t.config.loss.beta, t.config.loss.gamma) for t in trials[1:]]
    assert all(t.config.loss.photometric == "ssim_m" for t in trials[1:])
    assert exps == [(1, 1, 1), *TABLE1_ROWS]
    assert all(t.config.loss.ssim_weight == 0.85 for t in trials)


def test_paper_sweeps_use_the_paper_settings() -> None:
    for name in (*PAPER_SWEEPS, "table4_multiscale"):
        for t in expand(load(name)):
            c = t.config
            assert (c.data.dataset, c.data.width, c.data.height) == ("kitti", 640, 192)
            assert Path(c.data.root or "").name == "kitti_data"
            assert c.data.split_dir is None and c.eval.split_dir is None  # the bundled splits
            assert c.identity()["data"]["split_dir"] == "eigen_zhou"
            assert c.eval_identity()["split_dir"] == "eigen"
            assert (c.optim.batch_size, c.optim.warmup_steps, c.optim.lr) == (8, 1000, 1e-4)
            assert (c.train.epochs, c.train.seed) == (20, 1234)
            assert (c.model.encoder, c.model.pretrained) == ("resnet18", True)
            assert c.model.scales == c.eval.scales == (0, 1, 2, 3)  # Table 4 reads any run


def test_paper_sweeps_find_their_splits_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from depthcore.data.kitti import BUNDLED_SPLITS
    from depthcore.estimate import test_images, train_steps

    eigen_zhou = (BUNDLED_SPLITS / "eigen_zhou" / "train_files.txt").read_text().split("\n")
    monkeypatch.chdir(tmp_path)  # not the repository root
    for name in (*PAPER_SWEEPS, "table4_multiscale"):
        cfg = expand(load(name))[0].config
        assert train_steps(cfg) == 20 * (len([x for x in eigen_zhou if x.strip()]) // 8)
        assert test_images(cfg) == 697  # the Eigen test split
    assert not (tmp_path / "depthcore").exists()


def test_table3_and_table4_variants() -> None:
    t3 = expand(load("table3_upsampling"))
    weights = {
        (t.config.loss.w_mae, t.config.loss.w_l, t.config.loss.w_c, t.config.loss.w_s) for t in t3
    }
    assert weights == {(0.3, 0.5, 0.5, 0.6), (0.4, 0.4, 0.5, 0.7), (0.4, 0.5, 0.5, 0.7)}
    assert sorted(t.config.model.upsample for t in t3) == ["nearest"] * 3 + ["subpixel"] * 3
    t4 = expand(load("table4_multiscale"))
    # The paper's Table 4 compares its Table 3 models ("nearest upsample and sub-pixel").
    assert sorted(t.config.model.upsample for t in t4) == ["nearest", "subpixel"]
    for t in t4:
        assert t.config.model.scales == t.config.eval.scales == (0, 1, 2, 3)
        loss = t.config.loss
        assert (loss.photometric, loss.w_mae, loss.w_l, loss.w_c, loss.w_s) == (
            "ssim_a",
            0.4,
            0.5,
            0.5,
            0.7,
        )


def test_tables_share_runs_so_they_train_once() -> None:
    runs = {name: [t.run_id for t in expand(load(name))] for name in PAPER_SWEEPS}
    baseline = runs["table2_grid"][0]
    assert runs["table1_ssim_m"][0] == runs["table2_paper"][0] == baseline
    assert set(runs["table2_paper"]) <= set(runs["table2_grid"])
    nearest = [
        t.run_id
        for t in expand(load("table3_upsampling"))
        if t.params["model.upsample"] == "nearest"
    ]
    assert set(nearest) <= set(runs["table2_grid"])
    table4 = [t.run_id for t in expand(load("table4_multiscale"))]
    assert len(table4) == 2 and set(table4) <= set(runs["table3_upsampling"])


def test_set_overrides_change_the_base_not_the_run_identity_of_paths(tmp_path: Path) -> None:
    plain = expand(load("table1_ssim_m"))
    moved = expand(load("table1_ssim_m", f"data.root={tmp_path}"))
    assert all(t.config.data.root == str(tmp_path) for t in moved)
    assert [t.run_id for t in moved] == [t.run_id for t in plain]  # paths are not identity
    longer = expand(load("table1_ssim_m", "train.epochs=2"))
    assert all(t.config.train.epochs == 2 for t in longer)
    assert not {t.run_id for t in longer} & {t.run_id for t in plain}


# ----------------------------------------------------------------------------------------------
# The sweep-file model


def test_expansion_order_trials_then_grid_each_times_seeds(tmp_path: Path) -> None:
    sweep = sweep_from_dict(
        {
            "name": "order",
            "base": {"loss": {"photometric": "ssim_a"}, "model": {"pretrained": False}},
            "trials": [{"label": "ref", "role": "baseline", "loss.photometric": "standard"}],
            "grid": {"loss.w_s": [0.7, 0.5], "loss.w_c": [0.4]},
            "seeds": [7, 3],
        }
    )
    ids = [t.trial_id for t in expand(sweep)]
    assert ids == [
        "ref,seed=7",
        "ref,seed=3",
        "w_c=0.4,w_s=0.7,seed=7",
        "w_c=0.4,w_s=0.7,seed=3",
        "w_c=0.4,w_s=0.5,seed=7",
        "w_c=0.4,w_s=0.5,seed=3",
    ]
    trials = expand(sweep)
    assert [t.config.train.seed for t in trials] == [7, 3] * 3
    assert [t.seed for t in trials] == [7, 3] * 3
    assert trials[2].params == {"loss.w_c": 0.4, "loss.w_s": 0.7}  # seed is not a param
    assert trials[0].label == "ref" and trials[0].role == "baseline"


def test_ids_do_not_depend_on_key_order_in_the_file(tmp_path: Path) -> None:
    a = write(tmp_path, "name: a\ngrid:\n  loss.w_c: [0.4, 0.5]\n  loss.w_l: [0.6]\n", "a.yaml")
    b = write(tmp_path, "name: a\ngrid:\n  loss.w_l: [0.6]\n  loss.w_c: [0.4, 0.5]\n", "b.yaml")
    ta, tb = expand(load_sweep(a)), expand(load_sweep(b))
    assert [t.trial_id for t in ta] == [t.trial_id for t in tb]
    assert [t.run_id for t in ta] == [t.run_id for t in tb]


def test_base_as_file_inline_dotted_or_list(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text("train: {epochs: 3}\nloss: {w_c: 0.3}\n")
    path = write(
        tmp_path,
        "name: b\nbase:\n  - base/b.yaml\n  - {loss.w_c: 0.6, optim: {lr: 0.001}}\n"
        "trials:\n  - {label: one}\n",
    )
    (trial,) = expand(load_sweep(path))
    assert trial.config.train.epochs == 3  # from the file, relative to the sweep file
    assert trial.config.loss.w_c == 0.6  # a later base entry wins
    assert trial.config.optim.lr == 0.001
    assert trial.trial_id == "one,seed=1234"


def test_same_config_twice_is_one_run(tmp_path: Path) -> None:
    sweep = sweep_from_dict(
        {
            "name": "dup",
            "trials": [{"label": "a", "loss.w_c": 0.1}, {"label": "b", "loss.w_c": 0.9}],
        }
    )
    trials = expand(sweep)  # photometric standard ignores w_c: both are the same experiment
    assert len(run_groups(trials)) == 1
    lines = plan_lines(sweep, trials)
    assert "same run as a,seed=1234" in lines[1]
    assert lines[-1] == "2 trials"


def test_index_entry_and_swept_keys() -> None:
    trials = expand(load("table1_ssim_m"))
    entry = index_entry(trials[2], "pending")
    assert entry == {
        "trial_id": trials[2].trial_id,
        "run_id": trials[2].config.run_id(),
        "eval_id": trials[2].config.eval_id(),
        "label": None,
        "role": None,
        "params": {"loss.photometric": "ssim_m", "loss.alpha": 2, "loss.beta": 1, "loss.gamma": 1},
        "seed": 1234,
        "status": "pending",
    }
    assert swept_keys(trials) == ["loss.photometric", "loss.alpha", "loss.beta", "loss.gamma"]


@pytest.mark.parametrize(
    ("name", "design"),
    [("table2_grid", "grid"), ("table1_ssim_m", "trials"), ("optuna_ssim_a", "search")],
)
def test_the_index_records_how_trials_were_chosen(name: str, design: str) -> None:
    """The report fits a factor model to grids and listed trials, never to a search."""
    assert sweep_design(load(name).file) == design


def test_optuna_sweep_has_no_fixed_trials_but_validates_samples() -> None:
    sweep = load("optuna_ssim_a")
    assert expand(sweep) == []
    lines = plan_lines(sweep, [])
    assert lines[-2] == "40 trials" and any("loss.w_s ~ uniform(0.4, 0.9)" in x for x in lines)
    assert lines[-1] == (
        "objective: min abs_rel on validation (200 frames of val_files.txt at most, after every "
        "epoch); early stopping: ASHA (grace_epochs 1, reduction_factor 3) judges trials at "
        "epochs 1, 3, 9 of 20"
    )
    assert sweep.file.scheduler is not None and expand(sweep) == []
    trial = trial_from_params(
        sweep, {"loss.w_mae": 0.25, "loss.w_l": 0.5, "loss.w_c": 0.45, "loss.w_s": 0.8}
    )
    assert trial.config.loss.w_c == 0.45 and trial.config.loss.photometric == "ssim_a"
    assert trial.trial_id == "w_mae=0.25,w_l=0.5,w_c=0.45,w_s=0.8,seed=1234"
    with pytest.raises(ConfigError, match=r"w_c: must be >= 0"):
        trial_from_params(sweep, {"loss.w_c": -1.0})


# ----------------------------------------------------------------------------------------------
# Invalid sweep files: clear errors naming the file, line and key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ngird:\n  loss.w_c: [0.5]\n", "line 2: gird: unknown key (did you mean 'grid'?)"),
        ("name: x\ngrid:\n  loss.w_c: []\n", "line 3: grid.loss.w_c: empty list"),
        (
            "name: x\ngrid:\n  loss.w_cc: [0.5]\n",
            "'loss.w_cc' is not a config key (did you mean 'loss.w_c'?)",
        ),
        (
            "name: x\ngrid:\n  loss.w_c: [0.5, -0.1]\n",
            "line 3: grid.loss.w_c[1]: loss.w_c: must be >= 0, got -0.1",
        ),
        (
            "name: x\ntrials:\n  - {loss.w_s: -2}\n",
            "line 3: trials[0]: loss.w_s: must be >= 0, got -2",
        ),
        ("name: x\ngrid:\n  loss.w_c: 0.5\n", "grid.loss.w_c: must be a list of values"),
        (
            "name: x\ntrials:\n  - {lable: a}\n",
            "trials[0].lable: unknown key (did you mean 'label'?)",
        ),
        ("name: x\ntrials:\n  - {role: base}\n", "trials[0].role: must be 'baseline'"),
        ("name: x\ngrid:\n  train.seed: [1, 2]\n", "use the sweep key seeds"),
        (
            "name: x\ntrials:\n  - {label: a}\n  - {label: a}\n",
            "two trials have the id 'a,seed=1234'",
        ),
        ("name: x\nbase: missing.yaml\n", "line 2: base: base config 'missing.yaml' not found"),
        ("name: x\nresources: {gpu: 1.5}\n", "resources.gpu: must be a fraction <= 1"),
        ("name: x\nmetric: absrel\n", "metric: must be one of abs_rel"),
        ("name: x\nseeds: []\n", "seeds: must be a non-empty list"),
        ("grid: {loss.w_c: [1]}\n", "name: required key is missing"),
        (
            "name: x\nsearch: {method: optuna, n_trials: 2, space: {loss.w_c: {uniform: [-1, 1]}}}",
            "search.space.loss.w_c: loss.w_c: must be >= 0, got -1",
        ),
        ("name: x\nsearch: optuna\n", "search: optuna needs n_trials and a non-empty space"),
        (
            "name: x\ngrid:\n  model.scales: [[1, 2]]\n",
            "grid.model.scales[0]: model.scales: must include 0",
        ),
        ("name: x\n  bad: [\n", "line 2: invalid YAML"),
        ("name: x\nbase: {}\n", "line 1: name: the sweep has no trials"),
        (
            "name: x\ntrials:\n  - {role: baseline}\n  - {role: baseline, loss.w_c: 0.1}\n",
            "line 4: trials[1].role: a second baseline",
        ),
        (
            "name: x\ngrid:\n  loss.w_c: [0.1]\n  loss.w_c: [0.2]\n",
            "line 4: invalid YAML (key 'loss.w_c' appears twice in this mapping)",
        ),
        (
            "name: x\ngrid: {loss.w_c: [0.1]}\nreport: {lables: {loss.w_c: c}}\n",
            "line 3: report.lables: unknown key (did you mean 'labels'?)",
        ),
        (
            "name: x\ngrid: {loss.w_c: [0.1]}\nreport:\n  labels: {loss.w_l: '$w_l$'}\n",
            "line 4: report.labels.loss.w_l: 'loss.w_l' is not a key this sweep varies (did you "
            "mean 'loss.w_c'?); the table's columns are the keys set in trials:, grid: or "
            "search.space: (loss.w_c)",
        ),
        (
            "name: x\ngrid: {loss.w_c: [0.1]}\nreport: {columns: [loss.wc]}\n",
            "report.columns[0]: 'loss.wc' is not a config key (did you mean 'loss.w_c'?)",
        ),
        (
            "name: x\ngrid: {loss.w_c: [0.1]}\nreport: {columns: [loss.w_c, loss.w_c]}\n",
            "report.columns: names 'loss.w_c' twice",
        ),
        (
            "name: x\ngrid: {loss.w_c: [0.1, 0.2], loss.w_l: [0.3]}\n"
            "report: {columns: [loss.w_c, loss.w_l]}\n",
            "report.columns[1]: loss.w_l is 0.3 in every trial, so it is no column of the table",
        ),
        # Early stopping (scheduler:): where it would bias a design, and bad settings.
        (
            "name: x\ngrid: {loss.w_c: [0.1, 0.2]}\nscheduler: {type: asha}\n",
            "line 3: scheduler: a grid cannot be stopped early: a pruned grid is no longer a "
            "factorial design",
        ),
        (
            "name: x\ntrials:\n  - {label: b, role: baseline}\n  - {label: a, loss.w_c: 0.1}\n"
            "seeds: {start: 2, max: 3}\nscheduler: {type: asha}\n",
            "line 6: scheduler: adaptive seeds race finished runs",
        ),
        (
            "name: x\ntrials: [{label: a}]\nseeds: [1, 2]\nscheduler: {type: asha}\n",
            "line 4: scheduler: with 2 seeds per configuration the scheduler would stop",
        ),
        (
            "name: x\ntrials: [{label: a}]\nscheduler: {type: hyperband}\n",
            "line 3: scheduler.type: must be one of 'asha', got 'hyperband'",
        ),
        (
            "name: x\ntrials: [{label: a}]\nscheduler: {type: asha, grace_epochs: 0}\n",
            "line 3: scheduler.grace_epochs: must be >= 1, got 0",
        ),
        (
            "name: x\ntrials: [{label: a}]\nscheduler: {type: asha, reduction_factor: 1}\n",
            "line 3: scheduler.reduction_factor: must be > 1, got 1",
        ),
        (
            "name: x\nbase: {train.epochs: 3}\ntrials: [{label: a}]\n"
            "scheduler: {type: asha, grace_epochs: 3}\n",
            "line 4: scheduler.grace_epochs: 3 is not below train.epochs (3)",
        ),
        (
            "name: x\nbase: {eval.every_epoch: false}\ntrials: [{label: a}]\n"
            "scheduler: {type: asha}\n",
            "line 4: scheduler: eval.every_epoch is false",
        ),
    ],
)
def test_invalid_sweep_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_sweep(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_a_selecting_sweep_scores_validation_unless_its_base_says_otherwise(
    tmp_path: Path,
) -> None:
    asha = "scheduler: {type: asha}\n"
    scheduled = load_sweep(write(tmp_path, "name: x\ntrials: [{label: a}]\n" + asha))
    assert expand(scheduled)[0].config.eval.objective == "val"
    plain = load_sweep(write(tmp_path, "name: x\ntrials: [{label: a}]\n"))
    assert expand(plain)[0].config.eval.objective == "test"  # a list of trials selects nothing
    text = "name: x\nbase: {eval.objective: test}\ntrials: [{label: a}]\n" + asha
    assert expand(load_sweep(write(tmp_path, text)))[0].config.eval.objective == "test"
    overridden = load_sweep(write(tmp_path, "name: x\ntrials: [{label: a}]\n" + asha),
                            ["eval.objective=test"])  # fmt: skip
    assert expand(overridden)[0].config.eval.objective == "test"


def test_set_of_a_swept_key_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"varies loss\.alpha itself"):
        load("table1_ssim_m", "loss.alpha=2")
    with pytest.raises(ConfigError, match=r"varies train\.seed itself"):
        load("table1_ssim_m", "train.seed=1")
    with pytest.raises(ConfigError, match=r"loss\.w_c: must be >= 0"):
        load("smoke", "loss.w_c=-1")


# ----------------------------------------------------------------------------------------------
# Adaptive seeds (racing): seeds: {start, max}


def _race_sweep(seeds: object, trials: list[dict[str, object]] | None = None) -> dict[str, object]:
    return {
        "name": "race",
        "base": {"data": {"height": 64, "width": 192}, "train": {"seed": 7}},
        "trials": trials
        or [
            {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
            {"label": "l1", "loss.photometric": "l1"},
        ],
        "seeds": seeds,
    }


def test_adaptive_seeds_expand_to_max_seeds_per_arm_from_the_base_seed() -> None:
    from depthcore.sweep import first_runs, plan_lines, seed_values

    sweep = sweep_from_dict(_race_sweep({"start": 2, "max": 3}))
    assert seed_values(sweep) == [7, 8, 9]
    trials = expand(sweep)
    assert [t.trial_id for t in trials][:3] == [
        "baseline,seed=7",
        "baseline,seed=8",
        "baseline,seed=9",
    ]
    assert {t.arm for t in trials} == {"baseline", "l1"}
    assert len(first_runs(sweep, trials)) == 4
    assert plan_lines(sweep, trials)[-1].endswith("at least 4 runs, at most 6")
    first = sweep_from_dict(_race_sweep({"start": 2, "max": 3, "first": 100}))
    assert seed_values(first) == [100, 101, 102]


def test_adaptive_seeds_need_a_baseline_and_start_at_most_max() -> None:
    with pytest.raises(ConfigError, match="role: baseline"):
        sweep_from_dict(_race_sweep({"start": 2, "max": 3}, [{"label": "a"}, {"label": "b"}]))
    with pytest.raises(ConfigError, match=r"max \(2\) must be >= start \(3\)"):
        sweep_from_dict(_race_sweep({"start": 3, "max": 2}))
    with pytest.raises(ConfigError, match="did you mean 'max'"):
        sweep_from_dict(_race_sweep({"start": 2, "mx": 3}))
    with pytest.raises(ConfigError, match=r"seeds\.start: must be >= 2, got 1"):
        sweep_from_dict(_race_sweep({"start": 1, "max": 3}))
