"""Report: table marks, seed aggregation, marginals, A/A verdicts, importance, CSV import,
errors."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import Trial, metrics, write_sweep

from depthcore.errors import ConfigError, DataError
from depthcore.metrics import LOWER_IS_BETTER, METRIC_NAMES
from depthcore.report import build_report, import_csv
from depthcore.report.loading import load_csv, load_sweep_results
from depthcore.report.marginals import marginal_stats, param_importance
from depthcore.report.tables import aggregate_configs, rank_marks

PAPER_TABLE2 = Path(__file__).resolve().parents[1] / "examples" / "paper_table2.csv"


# Known numbers: A and B tie at the printed precision in abs_rel (0.110) and exactly in a3.
MARK_RUNS = {
    "base": metrics(0.120, 0.900, 5.00, 0.200, 0.860, 0.950, 0.980),
    "A": metrics(0.1101, 0.850, 4.90, 0.195, 0.880, 0.955, 0.981),
    "B": metrics(0.1104, 0.860, 4.95, 0.190, 0.870, 0.960, 0.981),
    "C": metrics(0.115, 0.800, 5.10, 0.199, 0.890, 0.940, 0.979),
}
# Worked out by hand from MARK_RUNS (↓ for the errors, ↑ for the accuracies).
EXPECTED = {
    "abs_rel": ({"A", "B"}, {"C"}),
    "sq_rel": ({"C"}, {"A"}),
    "rmse": ({"A"}, {"B"}),
    "rmse_log": ({"B"}, {"A"}),
    "a1": ({"C"}, {"A"}),
    "a2": ({"B"}, {"A"}),
    "a3": ({"A", "B"}, {"base"}),
}


def _mark_sweep(results: Path, dataset: str) -> None:
    trials = [Trial({}, role="baseline", label="Baseline", metrics=MARK_RUNS["base"])]
    for i, name in enumerate("ABC"):
        trials.append(Trial({"loss.w_c": 0.4 + i / 10}, label=name, metrics=MARK_RUNS[name]))
    write_sweep(results, "marks", trials, dataset=dataset)


def _pipe_rows(markdown: str) -> list[list[str]]:
    lines = [ln for ln in markdown.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[2:]]


@pytest.fixture(scope="module")
def kitti_marks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("marks")
    _mark_sweep(results, "kitti")
    return build_report(results, formats=("md", "tex", "csv"), figures=False) / "marks"


def test_marks_land_on_the_right_cells_in_csv(kitti_marks: Path) -> None:
    table = pd.read_csv(kitti_marks / "ablation.csv", keep_default_na=False)
    names = table["method"].map({"Baseline": "base"}).fillna(table["method"])
    for metric, (best, second) in EXPECTED.items():
        marks = dict(zip(names, table[f"{metric}_mark"], strict=True))
        assert {n for n, m in marks.items() if m == "best"} == best, metric
        assert {n for n, m in marks.items() if m == "second"} == second, metric


def test_marks_in_markdown_and_latex(kitti_marks: Path) -> None:
    md_rows = _pipe_rows((kitti_marks / "ablation.md").read_text())
    tex = (kitti_marks / "ablation.tex").read_text()
    tex_rows = [
        r.split("&")
        # past the header's rule; the second one separates the reference rows from the others
        for r in tex.split("\\midrule", 1)[1]
        .split("\\bottomrule")[0]
        .replace("\\midrule", "")
        .split("\\\\")
    ]
    tex_rows = [[c.strip() for c in r] for r in tex_rows if len(r) > 1]
    label = {"Baseline": "base", "A": "A", "B": "B", "C": "C"}
    for md, tx in zip(md_rows, tex_rows, strict=True):
        name = label.get(md[0])
        for j, metric in enumerate(METRIC_NAMES, start=2):  # Method, loss.w_c, then metrics
            best, second = EXPECTED[metric]
            assert md[j].startswith("**") == (name in best), (md[0], metric, md[j])
            assert md[j].startswith("<ins>") == (name in second), (md[0], metric, md[j])
            assert tx[j].startswith("\\textbf{") == (name in best), (md[0], metric, tx[j])
            assert tx[j].startswith("\\underline{") == (name in second), (md[0], metric, tx[j])
    assert "\\toprule" in tex and "AbsRel$\\downarrow$" in tex and "1.25\\uparrow$" in tex


def test_reference_rows_on_top(kitti_marks: Path) -> None:
    table = pd.read_csv(kitti_marks / "ablation.csv", keep_default_na=False)
    assert table["method"].iloc[0].startswith("Monodepth2 (Godard et al., ICCV 2019)")
    published = (0.115, 0.903, 4.863, 0.193, 0.877, 0.959, 0.981)
    assert table.loc[0, list(METRIC_NAMES)].astype(float).tolist() == list(published)
    assert table["role"].iloc[1] == "baseline"
    assert list(table["method"].iloc[2:]) == ["A", "B", "C"]
    assert (table.loc[0, [f"{m}_mark" for m in METRIC_NAMES]] == "").all()


def test_no_monodepth2_row_for_synthetic_data(tmp_path: Path) -> None:
    _mark_sweep(tmp_path, "synthetic")
    out = build_report(tmp_path, formats=("csv",), figures=False)
    table = pd.read_csv(out / "marks" / "ablation.csv", keep_default_na=False)
    assert not table["method"].str.contains("Monodepth2").any()
    assert table["role"].iloc[0] == "baseline"


def test_rank_marks_ignores_missing_values() -> None:
    values = pd.DataFrame({"abs_rel": [0.2, np.nan, 0.1, 0.1], "a1": [0.5, 0.9, np.nan, 0.7]})
    marks = rank_marks(values)
    assert marks["abs_rel"].tolist() == ["second", "", "best", "best"]
    assert marks["a1"].tolist() == ["", "best", "", "second"]


def test_seeds_show_mean_std_and_n(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 0.2, (3, 7))
    trials = [Trial({}, role="baseline", seed=0, metrics=metrics(*values[0]))]
    trials += [Trial({"loss.w_s": 0.7}, seed=s, metrics=metrics(*values[s])) for s in range(3)]
    write_sweep(tmp_path, "seeds", trials)
    out = build_report(tmp_path, formats=("md", "csv"), figures=False) / "seeds"
    rows = _pipe_rows((out / "ablation.md").read_text())
    assert rows[1][2] == "3"  # Method, loss.w_s, n
    mean, std = values[:, 0].mean(), values[:, 0].std(ddof=1)
    assert re.sub(r"\*\*|</?ins>", "", rows[1][3]) == f"{mean:.3f} ± {std:.3f}"
    table = pd.read_csv(out / "ablation.csv")
    assert table.loc[1, "abs_rel_std"] == pytest.approx(std)


# ----------------------------------------------------------------------------------------------
# Marginals


def test_marginals_equal_an_independent_groupby() -> None:
    data = load_csv(PAPER_TABLE2)
    got = marginal_stats(aggregate_configs(data), data.params)
    raw = pd.read_csv(PAPER_TABLE2)
    points = raw[raw["role"] != "baseline"]
    k = math.ceil(len(points) / 4)
    for key in ("loss.w_mae", "loss.w_l", "loss.w_c", "loss.w_s"):
        for metric in METRIC_NAMES:
            lower = LOWER_IS_BETTER[metric]
            rank = points[metric].rank(ascending=lower)
            top = points[metric].rank(ascending=lower, method="min") <= k
            want = points.groupby(key)[metric].agg(["count", "mean", "std", "median"])
            want["mean_rank"] = rank.groupby(points[key]).mean()
            want["top_k"] = top.groupby(points[key]).sum()
            part = got[(got["parameter"] == key) & (got["metric"] == metric)].set_index("value")
            assert part.index.tolist() == want.index.tolist()
            want = want.rename(columns={"count": "n"})
            for col in ("n", "mean", "std", "median", "mean_rank", "top_k"):
                np.testing.assert_allclose(part[col].to_numpy(float), want[col].to_numpy(float))


def test_marginals_reproduce_the_papers_edge_distribution_remark() -> None:
    """§4.1: 'the performance is better when w_c = 0.5 and w_s = 0.7' (Table 2)."""
    data = load_csv(PAPER_TABLE2)
    got = marginal_stats(aggregate_configs(data), data.params)
    best = got[got["best"]]
    for metric in ("abs_rel", "rmse", "rmse_log", "a1"):
        assert best[(best["parameter"] == "loss.w_c") & (best["metric"] == metric)][
            "value"
        ].tolist() == [0.5]
        assert best[(best["parameter"] == "loss.w_s") & (best["metric"] == metric)][
            "value"
        ].tolist() == [0.7]


def test_importance_finds_the_parameter_that_matters(tmp_path: Path) -> None:
    grid = [(a, b) for a in (0.1, 0.2, 0.3, 0.4) for b in (1.0, 2.0, 3.0, 4.0)]
    rows = "\n".join(
        f"{a},{b},{0.1 + a / 10 + b * 1e-5},0.8,4.8,0.19,{0.9 - a / 10},0.95,0.98" for a, b in grid
    )
    path = tmp_path / "imp.csv"
    path.write_text("loss.w_c,loss.w_s," + ",".join(METRIC_NAMES) + "\n" + rows + "\n")
    data = load_csv(path)
    table, why = param_importance(aggregate_configs(data), data.params)
    assert why == ""
    for metric in ("abs_rel", "a1"):
        scores = table[table["metric"] == metric].set_index("parameter")["importance"]
        assert scores["loss.w_c"] > scores["loss.w_s"]
        assert scores.sum() == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# Verdicts on A/A sweeps (the same configuration under several seeds)


def _aa_sweep(results: Path, seeds_per_config: int, configs: int = 3) -> Path:
    """Baseline + `configs` "configurations" that are the same loss: per-image metrics share the
    image difficulty, each run adds a seed effect (large, as in short runs) and image noise."""
    rng = np.random.default_rng(seeds_per_config)
    images = rng.gamma(4.0, 0.03, (150, 1)) * np.array([1, 8, 40, 1.6, 1, 1, 1])
    trials = []
    for c in range(configs + 1):
        for k in range(seeds_per_config):
            run = images * (1 + rng.normal(0, 0.1)) + rng.normal(0, 0.01, images.shape)
            run[:, 4:] = rng.uniform(0.6, 0.99) + rng.normal(0, 0.02, (150, 3))
            params = {} if c == 0 else {"loss.w_c": 0.1 * c}
            role = "baseline" if c == 0 else None
            trials.append(Trial(params, seed=c * 10 + k, role=role, per_image=run))
    write_sweep(results, "aa", trials)
    return build_report(results, figures=False) / "aa"


def test_aa_report_with_one_seed_each_claims_nothing(tmp_path: Path) -> None:
    folder = _aa_sweep(tmp_path, 1)
    sig = pd.read_csv(folder / "significance.csv")
    assert len(sig) == 3 * len(METRIC_NAMES)
    assert not sig["significant"].any() and not sig["significant_unadjusted"].any()
    assert (sig["verdict"] == "1 seed: training variance untested").all()
    assert (sig["method"] == "images only: training variance untested").all()
    # The image-only interval excludes 0 for most rows: the words, not the interval, are honest.
    assert ((sig["ci_low"] > 0) | (sig["ci_high"] < 0)).mean() > 0.5
    text = (folder / "significance.md").read_text() + (folder / "report.html").read_text()
    assert "better (seeds and images)" not in text and "worse (seeds and images)" not in text
    assert "significantly" not in text


def test_aa_report_with_three_seeds_each_shows_no_difference(tmp_path: Path) -> None:
    folder = _aa_sweep(tmp_path, 3)
    sig = pd.read_csv(folder / "significance.csv")
    assert (sig["n_seeds"] == 3).all() and (sig["n_seeds_baseline"] == 3).all()
    assert (sig["method"] == "welch-t on seed means").all()
    assert not sig["significant"].any()
    assert (sig["verdict"] == "no difference shown").all()
    assert sig["p_improve"].between(0, 1).all() and (sig["seeds_needed"] >= 2).all()
    md = (folder / "significance.md").read_text()
    assert "## How to read it" in md and "Seeds per row (configuration vs baseline): 3 vs 3" in md
    assert "How many" not in md and "seeds to resolve" in md


def test_holm_verdict_is_at_most_the_unadjusted_one(tmp_path: Path) -> None:
    folder = _aa_sweep(tmp_path, 2, configs=4)
    sig = pd.read_csv(folder / "significance.csv")
    assert not (sig["significant"] & ~sig["significant_unadjusted"]).any()
    assert set(sig.columns) >= {
        "name", "metric", "significant", "n_seeds", "n_seeds_baseline", "p_improve", "method",
        "p_value", "significant_unadjusted",
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Import and errors


def test_import_paper_table2(tmp_path: Path) -> None:
    out = import_csv(PAPER_TABLE2, tmp_path, figures=False)
    folder = out / "paper_table2"
    table = pd.read_csv(folder / "ablation.csv", keep_default_na=False)
    assert len(table) == 1 + 1 + 21  # Monodepth2, baseline, the 21 configurations
    best = table.loc[
        table["abs_rel_mark"] == "best", ["loss.w_mae", "loss.w_l", "loss.w_c", "loss.w_s"]
    ]
    bold = [(0.3, 0.5, 0.5, 0.6), (0.3, 0.6, 0.5, 0.5), (0.4, 0.4, 0.5, 0.7)]  # the paper's 0.114s
    assert sorted(map(tuple, best.astype(float).to_numpy().tolist())) == bold
    marg = pd.read_csv(folder / "marginals.csv")
    assert {"parameter", "value", "metric", "n", "mean", "std"} <= set(marg.columns)
    assert set(marg["parameter"]) == {"loss.w_mae", "loss.w_l", "loss.w_c", "loss.w_s"}
    for name in ("ablation.md", "ablation.tex", "marginals.md", "importance.csv", "report.html"):
        assert (folder / name).stat().st_size > 0, name
    assert "significance not computed" in (folder / "report.html").read_text()


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


HEADER = "loss.w_c," + ",".join(METRIC_NAMES)


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("loss.w_c,abs_rel,sq_rel\n0.5,0.1,0.8\n", ["missing metric column", "rmse", "a3"]),
        (
            f"{HEADER}\n0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98\n0.6,0.1,oops,4.8,0.19,0.87,0.95,0.98\n",
            ["column sq_rel", "row 3", "'oops'"],
        ),
        (f"{HEADER}\n0.5,0.1,0.8,4.8,,0.87,0.95,0.98\n", ["column rmse_log", "row 2", "empty"]),
        (f"{HEADER},seed\n0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98,x\n", ["column seed", "row 2"]),
        (f"{HEADER},role\n0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98,base\n", ["column role", "baseline"]),
        (f"{HEADER}\n", ["no rows"]),
        ("", ["not a readable CSV"]),
        (f"{HEADER},status\n0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98,x\n", ["column 'status'"]),
        (
            f"{HEADER},abs_rel\n0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98,0.2\n",
            ["'abs_rel' appears twice"],
        ),
        (f"{HEADER}\n0.5,0.1,0.8,4.8,0.19,86.9,0.95,0.98\n", ["column a1, row 2", "not 86.9"]),
        (f"{HEADER}\n0.5,-0.1,0.8,4.8,0.19,0.87,0.95,0.98\n", ["column abs_rel", "out of range"]),
        (
            f"{HEADER},role\n" + "0.5,0.1,0.8,4.8,0.19,0.87,0.95,0.98,baseline\n" * 2,
            ["rows 2 and 3 are both role=baseline"],
        ),
    ],
)
def test_bad_csv_names_the_column_and_row(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(DataError) as err:
        import_csv(_csv(tmp_path, text), tmp_path / "out")
    for needle in needles:
        assert needle in str(err.value)
    assert err.value.exit_code == 2


def test_unknown_sweep_lists_the_known_ones(tmp_path: Path) -> None:
    write_sweep(tmp_path, "alpha", [Trial({"loss.w_c": 0.5}, metrics=MARK_RUNS["A"])])
    write_sweep(tmp_path, "beta", [Trial({"loss.w_c": 0.5}, metrics=MARK_RUNS["A"])])
    with pytest.raises(ConfigError, match="unknown sweep gamma; known sweeps: alpha, beta"):
        build_report(tmp_path, ["gamma"])
    with pytest.raises(ConfigError, match="unknown format docx"):
        build_report(tmp_path, formats=("md", "docx"))
    with pytest.raises(DataError, match="no sweep index"):
        build_report(tmp_path / "runs")


def test_runner_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from runpy import run_path

    runner = run_path(str(Path(__file__).parents[1] / "runners" / "report.py"))

    def exit_code(argv: list[str]) -> int:
        with pytest.raises(SystemExit) as done:
            runner["run_main"](lambda: runner["main"](argv))
        return done.value.code

    assert exit_code([str(tmp_path), "--sweep", "nope"]) == 2
    assert "no sweep index" in capsys.readouterr().err
    bad = _csv(tmp_path, "a,b\n1,2\n")
    assert exit_code(["--import", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "missing metric column" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        runner["main"]([])
    assert usage.value.code == 2


def test_load_sweep_reads_params_and_seeds(tmp_path: Path) -> None:
    write_sweep(
        tmp_path, "s", [Trial({"loss.w_c": 0.5, "train.seed": 3}, seed=3, metrics=MARK_RUNS["A"])]
    )
    data = load_sweep_results(tmp_path, "s")
    assert data.params == ("loss.w_c",)  # the seed key is a repeat, not a hyperparameter
    assert data.runs["seed"].tolist() == [3.0]


def test_a_key_only_the_baseline_sets_is_not_a_table_column(tmp_path: Path) -> None:
    base = Trial({"loss.photometric": "standard"}, role="baseline", metrics=MARK_RUNS["base"])
    grid = [Trial({"loss.w_c": w}, metrics=MARK_RUNS[n]) for w, n in ((0.4, "A"), (0.5, "B"))]
    write_sweep(tmp_path, "t2", [base, *grid])
    out = build_report(tmp_path, formats=("md", "csv"), figures=False) / "t2"
    header = (out / "ablation.md").read_text().splitlines()[2]
    assert "loss.w_c" in header and "loss.photometric" not in header
    assert "loss.photometric" in pd.read_csv(out / "ablation.csv").columns  # the data keeps it
