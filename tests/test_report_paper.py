"""Paper-ready output: the paper's sweep files, through the real sweep index, give tables in the
sweep file's order with the paper's labels; the LaTeX follows booktabs, matches a golden file and
compiles where a TeX engine is installed; constant columns leave a note; the learning curves
keep the baseline and the best configurations."""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.colors
import pandas as pd
import pytest
from report_fixtures import Trial as FixtureTrial
from report_fixtures import metrics, write_run

from depthcore import store
from depthcore.report import build_report
from depthcore.report.build import _learning_curves
from depthcore.report.loading import load_sweep_results
from depthcore.report.tables import aggregate_configs, header_label, plain_label, tex_label
from depthcore.sweep import expand, load_sweep
from depthcore.trials import SweepIndex

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "tests" / "data" / "golden"
# The paper's Table 2 axes, in its (and the sweep file's) order.
TABLE2_AXES = {
    "loss.w_mae": [0.3, 0.4],
    "loss.w_l": [0.4, 0.5, 0.6],
    "loss.w_c": [0.4, 0.5, 0.6],
    "loss.w_s": [0.5, 0.6, 0.7],
}


def _fake_metrics(i: int, n: int) -> dict[str, float]:
    """Distinct, plausible metrics per trial (no ties at 3 decimals among the first rows)."""
    t = i / n
    return metrics(
        0.110 + 0.010 * t, 0.80 + 0.1 * t, 4.80 + 0.2 * t, 0.190 + 0.010 * t,
        0.880 - 0.020 * t, 0.960 - 0.005 * t, 0.982 - 0.002 * t,
    )  # fmt: skip


def _results_of(sweep_file: str, results: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The sweep's trials with made-up finished runs in `results`, and its index as the sweep
    runner writes it (depthcore.trials.SweepIndex)."""
    monkeypatch.chdir(REPO)  # the paper sweeps' relative data paths (unused: nothing trains)
    sweep = load_sweep(REPO / "sweeps" / sweep_file)
    trials = expand(sweep)
    for i, trial in enumerate(trials):
        fake = FixtureTrial(
            trial.params, seed=trial.seed, role=trial.role, label=trial.label,
            metrics=_fake_metrics(i, len(trials)),
        )  # fmt: skip
        write_run(store.run_path(results, trial.run_id), fake, "kitti", trial.eval_id)
    SweepIndex(sweep, results, trials).write()
    return sweep.name


@pytest.fixture(scope="module")
def table2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    results = tmp_path_factory.mktemp("results")
    with pytest.MonkeyPatch.context() as mp:
        name = _results_of("table2_grid.yaml", results, mp)
    out = build_report(results, [name], results / "report", ("md", "tex", "csv"), figures=False)
    return results, out / name


def test_table2_grid_columns_and_rows_follow_the_sweep_file(table2: tuple[Path, Path]) -> None:
    _, folder = table2
    frame = pd.read_csv(folder / "ablation.csv")
    keys = list(TABLE2_AXES)
    assert [c for c in frame.columns if c.startswith("loss.")] == ["loss.photometric", *keys]
    assert list(frame["method"][:2]) == ["Monodepth2 (Godard et al., ICCV 2019)", "baseline"]
    rows = [tuple(r) for r in frame[keys].iloc[2:].itertuples(index=False)]
    assert rows == list(itertools.product(*TABLE2_AXES.values()))  # w_mae slowest, as the paper
    header = (folder / "ablation.md").read_text().splitlines()[2]
    assert re.sub(r"\s+", " ", header).startswith(
        "| Method | $w_1$ | $w_l$ | $w_c$ | $w_s$ | AbsRel↓"
    )


def test_table2_grid_latex_is_booktabs_and_matches_the_golden_file(
    table2: tuple[Path, Path],
) -> None:
    """To accept a deliberate change of the LaTeX: copy the new ablation.tex over the golden
    file, after reading the diff."""
    tex = (table2[1] / "ablation.tex").read_text()
    assert tex == (GOLDEN / "table2_grid_ablation.tex").read_text()
    assert tex.isascii()  # pdflatex reads it without inputenc tricks
    body = tex[tex.index(r"\toprule") : tex.index(r"\bottomrule")]
    spec = re.search(r"\\begin\{tabular\}\{([a-z]+)\}", tex)
    assert spec is not None and "|" not in tex and r"\hline" not in tex
    # A \midrule under the header, and one between the reference rows and the grid.
    assert [tex.count(rule) for rule in (r"\toprule", r"\midrule", r"\bottomrule")] == [1, 2, 1]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) == 1 + 2 + 54  # header, Monodepth2 and baseline, the grid
    assert all(row.count("&") == len(spec.group(1)) - 1 for row in rows)
    assert rows[0].startswith(r"Method & $w_1$ & $w_l$ & $w_c$ & $w_s$ & AbsRel$\downarrow$")
    assert r"\caption{Ablation study table2\_grid on KITTI (Eigen split)." in tex
    assert r"\label{tab:table2_grid}" in tex


def test_latex_compiles_in_a_minimal_document(table2: tuple[Path, Path], tmp_path: Path) -> None:
    engine = shutil.which("pdflatex") or shutil.which("lualatex")
    if engine is None:
        pytest.skip("no TeX engine (pdflatex or lualatex) on PATH; the golden-file test checks it")
    (tmp_path / "table.tex").write_text((table2[1] / "ablation.tex").read_text())
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
        "\\input{table.tex}\n\\end{document}\n"
    )
    proc = subprocess.run(
        [engine, "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_table1_drops_the_repeated_ssim_m_column_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = _results_of("table1_ssim_m.yaml", tmp_path, monkeypatch)
    folder = build_report(tmp_path, [name], tmp_path / "report", ("md", "tex"), figures=False)
    md = (folder / name / "ablation.md").read_text()
    header = re.sub(r"\s+", " ", md.splitlines()[2])
    assert header.startswith("| Method | $\\alpha$ | $\\beta$ | $\\gamma$ | AbsRel↓")
    assert "Every configuration but the baseline has loss.photometric = ssim_m." in md
    tex = (folder / name / "ablation.tex").read_text()
    assert "has loss.photometric = ssim\\_m." in tex  # in the caption, escaped
    assert "Method & $\\alpha$ & $\\beta$ & $\\gamma$ & AbsRel" in tex


def test_labels_math_is_kept_and_text_escaped() -> None:
    assert tex_label("$w_c$") == "$w_c$"
    assert tex_label("weight $w_1$ of x_y") == "weight $w_1$ of x\\_y"
    assert tex_label("50% a$b") == "50\\% a\\$b"  # an unpaired $ is text
    assert header_label("loss.w_c", {}, "tex") == "loss.w\\_c"  # a raw key is escaped
    assert header_label("loss.w_c", {"loss.w_c": "$w_c$"}, "md") == "$w_c$"
    assert plain_label("$\\alpha$, $\\Gamma_{2}$") == "α, Γ_2"


def test_learning_curves_keep_the_baseline_and_the_best_in_distinct_colours(
    table2: tuple[Path, Path],
) -> None:
    results, _ = table2
    data = load_sweep_results(results, "table2_grid")
    configs = aggregate_configs(data)
    fig, note = _learning_curves(data, configs)
    assert fig is not None and note is not None
    assert note.startswith("55 configurations have learning curves; shown are the baseline and")
    legend = fig.legends[0]
    names = [text.get_text() for text in legend.get_texts()]
    best = configs[configs["role"] != "baseline"].nsmallest(7, "abs_rel")["name"]
    assert names[0] == "baseline" and set(names[1:]) == set(best) and len(names) == 8
    colours = {matplotlib.colors.to_hex(h.get_color()) for h in legend.legend_handles}
    assert len(colours) == 8
