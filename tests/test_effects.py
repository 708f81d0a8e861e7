"""Main effects of a grid (depthcore.report.effects): independent references, the paper's Table 2,
simulated error rates and power, designs that cannot be tested, and the report's edge distribution.
"""

from __future__ import annotations

import gc
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
import statsmodels.formula.api as smf
from report_fixtures import Trial, metrics, write_sweep
from scipy import stats
from statsmodels.stats.multitest import multipletests

from depthcore.metrics import METRIC_NAMES
from depthcore.report import build_report, import_csv
from depthcore.report.effects import (
    NOT_A_GRID,
    factor_effects,
    holm_adjusted,
    marginal_means,
    sentences,
    sweep_effects,
)

PAPER_TABLE2 = Path(__file__).resolve().parents[1] / "examples" / "paper_table2.csv"
TABLE2_PARAMS = ("loss.w_mae", "loss.w_l", "loss.w_c", "loss.w_s")
# Table 2's full grid: 2 x 3 x 3 x 3 = 54 configurations.
TABLE2_GRID = pd.DataFrame(
    list(itertools.product([0.3, 0.4], [0.4, 0.5, 0.6], [0.4, 0.5, 0.6], [0.5, 0.6, 0.7])),
    columns=list(TABLE2_PARAMS),
)
SEED_SD = 0.0013  # Monodepth2 retrained, abs_rel (docs/statistics.md)


def _paper() -> pd.DataFrame:
    table = pd.read_csv(PAPER_TABLE2)
    return table[table["role"] != "baseline"].reset_index(drop=True)


def _levels(effects: pd.DataFrame, key: str) -> pd.DataFrame:
    return effects.set_index("parameter").loc[key, "levels"].set_index("value")


# ----------------------------------------------------------------------------------------------
# Independent references


@pytest.mark.parametrize("metric", ["abs_rel", "a1", "rmse"])
def test_f_tests_equal_statsmodels_formula_anova_type_2(metric: str) -> None:
    """Our type-II F tests against statsmodels' formula interface and anova_lm (another code
    path: patsy's own design, anova_lm's type-II sums of squares)."""
    paper = _paper()
    renamed = paper.rename(columns=lambda c: c.replace("loss.", ""))
    formula = f"{metric} ~ C(w_mae, Sum) + C(w_l, Sum) + C(w_c, Sum) + C(w_s, Sum)"
    anova = sm.stats.anova_lm(smf.ols(formula, renamed).fit(), typ=2)
    lower = metric != "a1"
    got = factor_effects(paper, TABLE2_PARAMS, metric, lower_is_better=lower).set_index("parameter")
    for key in TABLE2_PARAMS:
        want = anova.loc[f"C({key.removeprefix('loss.')}, Sum)"]
        assert got.loc[key, "F"] == pytest.approx(want["F"], rel=1e-9)
        assert got.loc[key, "p_value"] == pytest.approx(want["PR(>F)"], rel=1e-9)
        assert got.loc[key, "df"] == want["df"]
        assert got.loc[key, "df_resid"] == anova.loc["Residual", "df"]


def test_balanced_grid_marginal_means_and_intervals_have_their_textbook_form() -> None:
    """In a full grid the estimated marginal mean is the plain mean of the value's
    configurations, and its interval is t(df_resid) * sqrt(MSE / configurations per value)."""
    rng = np.random.default_rng(3)
    runs = TABLE2_GRID.assign(abs_rel=0.115 + rng.normal(0, SEED_SD, len(TABLE2_GRID)))
    effects = factor_effects(runs, TABLE2_PARAMS, "abs_rel", lower_is_better=True)
    for key in TABLE2_PARAMS:
        row = effects.set_index("parameter").loc[key]
        levels = _levels(effects, key)
        means = runs.groupby(key)["abs_rel"].mean()
        np.testing.assert_allclose(levels["emm"], means.to_numpy(), rtol=1e-12)
        per_value = len(runs) / len(means)
        half = stats.t.ppf(0.975, row["df_resid"]) * row["residual_sd"] / math.sqrt(per_value)
        np.testing.assert_allclose(levels["ci_high"] - levels["emm"], half, rtol=1e-9)
        assert row["best_value"] == means.idxmin()


def test_holm_adjusted_equals_statsmodels(monkeypatch: pytest.MonkeyPatch) -> None:
    # statsmodels' Holm calls gc.collect() each time (slow in this process), not needed here.
    monkeypatch.setattr(gc, "collect", lambda *_: 0)
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 12):
        p = rng.uniform(0, 0.2, size)
        want = multipletests(p, method="holm")[1]
        np.testing.assert_allclose(holm_adjusted(p), want, rtol=1e-12)


def test_seeds_enter_through_configuration_means_unweighted() -> None:
    """Uneven seed counts (a race) must not weight a configuration: the model sees each
    configuration's mean, so runs that repeat a configuration give the same test as its mean."""
    rng = np.random.default_rng(5)
    grid = TABLE2_GRID.assign(abs_rel=0.115 + rng.normal(0, SEED_SD, len(TABLE2_GRID)))
    seeds = rng.integers(1, 4, len(grid))
    runs = grid.loc[grid.index.repeat(seeds)].reset_index(drop=True)
    runs["abs_rel"] += rng.normal(0, SEED_SD, len(runs))
    means = runs.groupby(list(TABLE2_PARAMS), sort=False)["abs_rel"].mean().reset_index()
    got = factor_effects(runs, TABLE2_PARAMS, "abs_rel", lower_is_better=True)
    want = factor_effects(means, TABLE2_PARAMS, "abs_rel", lower_is_better=True)
    for column in ("F", "p_value", "p_holm", "effect_range", "residual_sd"):
        np.testing.assert_allclose(got[column].astype(float), want[column].astype(float))
    assert got["n_runs"].iloc[0] == len(runs) and want["n_runs"].iloc[0] == len(grid)
    assert got["seed_sd"].iloc[0] > 0 and math.isnan(want["seed_sd"].iloc[0])


# ----------------------------------------------------------------------------------------------
# The paper's Table 2 (its 21 printed rows)


def test_paper_table2_supports_part_of_its_w_c_conclusion_and_not_its_w_s_one() -> None:
    effects = sweep_effects(_paper(), TABLE2_PARAMS).set_index(["parameter", "metric"])
    for metric in ("abs_rel", "a1"):
        row = effects.loc[("loss.w_c", metric)]
        assert row["significant"] and row["p_value"] < 0.01
        assert row["best_value"] == 0.5 and not row["best_supported"]
        levels = row["levels"].set_index("value")
        assert levels.loc[0.6, "shown_worse"] and not levels.loc[0.4, "shown_worse"]
        for key in ("loss.w_mae", "loss.w_l", "loss.w_s"):
            assert not effects.loc[(key, metric), "significant"]
            assert 0.15 < effects.loc[(key, metric), "p_value"] < 0.99
    assert effects.loc[("loss.w_c", "abs_rel"), "p_value"] == pytest.approx(0.0066, abs=5e-4)
    assert effects.loc[("loss.w_s", "abs_rel"), "best_value"] == 0.7


def test_sentences_say_what_is_shown_and_what_is_not() -> None:
    lines = sentences(sweep_effects(_paper(), TABLE2_PARAMS), "abs_rel")
    assert len(lines) == 4
    w_c = next(line for line in lines if line.startswith("loss.w_c:"))
    assert "effect shown on abs_rel (p = 0.0066, Holm 0.026" in w_c
    assert "0.5 best, shown better than 0.6, not shown better than 0.4" in w_c
    assert "Also shown on a1" in w_c
    w_s = next(line for line in lines if line.startswith("loss.w_s:"))
    assert w_s.startswith("loss.w_s: no effect shown on abs_rel")
    assert "0.7 best by point estimate only" in w_s


# ----------------------------------------------------------------------------------------------
# Simulated error rates (Table-2-shaped grids)


def _simulate(
    rng: np.random.Generator, seeds: str, effect: tuple[float, float, float] | None = None
) -> pd.DataFrame:
    """One grid's runs: configuration-level noise (interactions, sd 0.001), heavy-tailed seed
    noise (t with 3 df, sd 0.0013), 1 seed or 1-3 seeds per configuration, and optionally a main
    effect of w_c (per value 0.4, 0.5, 0.6)."""
    grid = TABLE2_GRID.copy()
    y = 0.115 + rng.normal(0, 0.001, len(grid))
    if effect is not None:
        y += grid["loss.w_c"].map(dict(zip((0.4, 0.5, 0.6), effect, strict=True))).to_numpy()
    counts = np.ones(len(grid), int) if seeds == "one" else rng.integers(1, 4, len(grid))
    runs = grid.loc[grid.index.repeat(counts)].reset_index(drop=True)
    noise = rng.standard_t(3, len(runs)) * SEED_SD / math.sqrt(3)
    return runs.assign(abs_rel=np.repeat(y, counts) + noise)


@pytest.mark.slow
@pytest.mark.parametrize("seeds", ["one", "uneven"])
def test_no_main_effect_claims_at_most_the_family_error_rate(seeds: str) -> None:
    """1000 null grids: a claim for any of the 4 parameters in at most ~6% (Holm at 5%), and a
    supported best value never more often than a claim."""
    rng = np.random.default_rng(18 if seeds == "one" else 81)
    any_claim = supported = 0
    for _ in range(1000):
        effects = factor_effects(
            _simulate(rng, seeds), TABLE2_PARAMS, "abs_rel", lower_is_better=True
        )
        any_claim += bool(effects["significant"].any())
        supported += bool(effects["best_supported"].any())
    assert any_claim / 1000 <= 0.06
    assert supported <= any_claim


@pytest.mark.slow
def test_a_paper_sized_main_effect_is_found_and_its_best_value_supported() -> None:
    """w_c = 0.5 better than 0.4 and 0.6 by 0.002 abs_rel, 1 seed per configuration."""
    rng = np.random.default_rng(7)
    found = right = wrong = others = 0
    grids = 300
    for _ in range(grids):
        runs = _simulate(rng, "one", effect=(0.002, 0.0, 0.002))
        effects = factor_effects(runs, TABLE2_PARAMS, "abs_rel", lower_is_better=True)
        row = effects.set_index("parameter").loc["loss.w_c"]
        found += bool(row["significant"])
        right += bool(row["best_supported"]) and row["best_value"] == 0.5
        wrong += bool(row["best_supported"]) and row["best_value"] != 0.5
        others += bool(effects.loc[effects["parameter"] != "loss.w_c", "significant"].any())
    assert found / grids >= 0.8
    assert right / grids >= 0.5
    assert wrong / grids <= 0.01
    assert others / grids <= 0.06


# ----------------------------------------------------------------------------------------------
# Designs that cannot be tested: NaN and a reason, never a traceback


def test_single_level_parameters_are_skipped() -> None:
    runs = TABLE2_GRID.assign(abs_rel=np.linspace(0.1, 0.2, len(TABLE2_GRID)), extra=1.0)
    effects = factor_effects(runs, (*TABLE2_PARAMS, "extra"), "abs_rel", lower_is_better=True)
    assert list(effects["parameter"]) == list(TABLE2_PARAMS)


def test_no_residual_degree_of_freedom_gives_nan_and_says_why() -> None:
    runs = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": ["x", "x", "y"], "abs_rel": [0.1, 0.2, 0.3]})
    effects = factor_effects(runs, ("a", "b"), "abs_rel", lower_is_better=True)
    assert effects["p_value"].isna().all() and not effects["significant"].any()
    assert effects["note"].str.contains("no residual degree of freedom").all()
    assert not effects["best_supported"].any()


def test_confounded_parameters_are_not_estimable() -> None:
    """b always moves with a: neither main effect is estimable; c still is."""
    rng = np.random.default_rng(1)
    rows = [(a, a * 10, c) for a in (1.0, 2.0, 3.0) for c in ("p", "q")] * 2
    runs = pd.DataFrame(rows, columns=["a", "b", "c"]).assign(abs_rel=rng.normal(0, 1, 12))
    effects = factor_effects(runs, ("a", "b", "c"), "abs_rel", lower_is_better=True)
    effects = effects.set_index("parameter")
    for key in ("a", "b"):
        assert math.isnan(effects.loc[key, "p_value"])
        assert "not estimable" in effects.loc[key, "note"]
    assert np.isfinite(effects.loc["c", "p_value"])


@pytest.mark.parametrize(
    "runs",
    [
        pd.DataFrame({"a": [1.0], "abs_rel": [0.1]}),
        pd.DataFrame({"a": [1.0, 2.0], "abs_rel": [math.nan, math.nan]}),
        pd.DataFrame({"a": [], "abs_rel": []}),
    ],
)
def test_nothing_to_test_gives_an_empty_table(runs: pd.DataFrame) -> None:
    effects = factor_effects(runs, ("a",), "abs_rel", lower_is_better=True)
    assert effects.empty and "p_value" in effects


def test_a_search_is_not_a_grid() -> None:
    effects = sweep_effects(_paper(), TABLE2_PARAMS, search=True)
    assert len(effects) == 4 * len(METRIC_NAMES)
    assert effects["p_value"].isna().all() and (effects["note"] == NOT_A_GRID).all()


def test_unset_values_are_a_level_of_their_own() -> None:
    """A key some trials do not set (e.g. gamma on ssim_a rows) is 'unset' there."""
    runs = pd.DataFrame(
        {
            "g": [1.0, 2.0, None, 1.0, 2.0, None],
            "u": ["n", "n", "n", "s", "s", "s"],
            "abs_rel": [0.10, 0.11, 0.12, 0.13, 0.14, 0.16],
        }
    )
    levels = marginal_means(factor_effects(runs, ("g", "u"), "abs_rel", lower_is_better=True))
    assert len(levels[levels["parameter"] == "g"]) == 3


# ----------------------------------------------------------------------------------------------
# The report


def test_import_of_the_papers_table2_writes_effects_and_leads_with_sentences(
    tmp_path: Path,
) -> None:
    out = import_csv(PAPER_TABLE2, tmp_path, formats=("md", "csv"), figures=False)
    folder = out / "paper_table2"
    effects = pd.read_csv(folder / "effects.csv")
    assert list(effects.columns[:6]) == [
        "parameter", "metric", "p_value", "significant", "best_value", "best_supported"
    ]  # fmt: skip
    assert len(effects) == 4 * len(METRIC_NAMES)
    shown = effects[effects["significant"]]
    assert set(zip(shown["parameter"], shown["metric"], strict=True)) == {
        ("loss.w_c", "abs_rel"),
        ("loss.w_c", "a1"),
    }
    assert not effects["best_supported"].any()
    text = (folder / "marginals.md").read_text()
    assert text.index("## Main effects") < text.index("## loss.w_mae")
    assert "- loss.w_s: no effect shown on abs_rel" in text
    # An unsupported best is italic (point estimate only), never bold.
    assert "*0.1150 ± 0.0007*" in text and "**0.1150" not in text
    marginals = pd.read_csv(folder / "marginals.csv")
    row = marginals[
        (marginals["parameter"] == "loss.w_c")
        & (marginals["value"] == 0.6)
        & (marginals["metric"] == "abs_rel")
    ].iloc[0]
    assert row["ci_low"] < row["emm"] < row["ci_high"] and bool(row["shown_worse"])


def _grid_trials(effect: float, seeds: int = 1) -> list[Trial]:
    rng = np.random.default_rng(11)
    trials = [Trial({}, role="baseline", metrics=metrics(0.12, 0.9, 4.9, 0.2, 0.86, 0.95, 0.98))]
    for a, b in itertools.product((0.4, 0.5, 0.6), (1.0, 2.0, 3.0)):
        for seed in range(seeds):
            abs_rel = 0.115 + (effect if a != 0.5 else 0.0) + rng.normal(0, 2e-4)
            values = metrics(abs_rel, 0.8, 4.8, 0.19, 0.87, 0.958, 0.981)
            trials.append(Trial({"loss.w_c": a, "loss.w_s": b}, seed=seed, metrics=values))
    return trials


def test_a_grid_report_bolds_a_supported_best_and_draws_its_intervals(tmp_path: Path) -> None:
    write_sweep(tmp_path, "grid", _grid_trials(effect=0.003, seeds=2))
    out = build_report(tmp_path, formats=("md",), figures=True) / "grid"
    effects = pd.read_csv(out / "effects.csv").set_index(["parameter", "metric"])
    assert effects.loc[("loss.w_c", "abs_rel"), "best_supported"]
    assert not effects.loc[("loss.w_s", "abs_rel"), "significant"]
    text = (out / "marginals.md").read_text()
    assert "- loss.w_c: effect shown on abs_rel" in text
    assert "0.5 best, shown better than 0.4, 0.6." in text
    assert "**0.1150" in text  # bold: shown best
    assert (out / "figures" / "marginals.png").stat().st_size > 0


def test_a_grid_too_small_for_the_model_says_so_once(tmp_path: Path) -> None:
    trials = [
        Trial({}, role="baseline", metrics=metrics(0.12, 0.9, 4.9, 0.2, 0.86, 0.95, 0.98)),
        Trial({"loss.w_c": 0.4}, metrics=metrics(0.11, 0.9, 4.9, 0.2, 0.86, 0.95, 0.98)),
        Trial({"loss.w_c": 0.5}, metrics=metrics(0.10, 0.9, 4.9, 0.2, 0.86, 0.95, 0.98)),
    ]
    write_sweep(tmp_path, "tiny", trials)
    out = build_report(tmp_path, formats=("md",), figures=False) / "tiny"
    text = (out / "marginals.md").read_text()
    assert "- Main effects not tested: no residual degree of freedom" in text
    assert pd.read_csv(out / "effects.csv")["p_value"].isna().all()


def test_a_search_sweep_report_says_not_a_grid_and_keeps_the_importance(tmp_path: Path) -> None:
    index = write_sweep(tmp_path, "search", _grid_trials(effect=0.003))
    text = index.read_text()
    index.write_text(text.replace("swept:", "design: search\nswept:", 1))
    out = build_report(tmp_path, formats=("md",), figures=False) / "search"
    marginals = (out / "marginals.md").read_text()
    assert f"- Main effects not tested: {NOT_A_GRID}." in marginals
    assert "## Parameter importance" in marginals
    assert pd.read_csv(out / "effects.csv")["p_value"].isna().all()
