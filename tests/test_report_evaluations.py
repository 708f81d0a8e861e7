"""The report reads the evaluation each sweep index names: two evaluations of the same runs give
two reports with their own verdicts, and results of the earlier layout (no evaluation ids)
still load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import Trial, base_images, per_image, write_sweep

from depthcore import store
from depthcore.report import build_report
from depthcore.report.loading import load_sweep_results

# Two evaluations of the same three runs (two baseline seeds, two candidate seeds): under the
# first the candidate is much better, under the second it is the same as the baseline.
SHOWN, NULL = "a" * 16, "b" * 16


def _runs(shift: float) -> list[Trial]:
    base = base_images(40)

    def run(params: dict, seed: int, effect: float, **kw: object) -> Trial:
        return Trial(params, seed=seed, per_image=per_image(base, effect, 0.01, seed=seed), **kw)

    return [
        run({}, 0, 0.0, role="baseline"),
        run({}, 1, 0.0, role="baseline"),
        run({"loss.w_c": 0.5}, 0, shift),
        run({"loss.w_c": 0.5}, 1, shift),
    ]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("results")
    write_sweep(results, "sw", _runs(0.1), eval_id=SHOWN)
    kept = write_sweep(results, "sw@bbbbbbbb", _runs(0.0), eval_id=NULL)
    assert (
        store.read_sweep_index(results, "sw@bbbbbbbb")["trials"][0]["run_id"]
        == (store.read_sweep_index(results, "sw")["trials"][0]["run_id"])
    ), kept  # the same runs, two evaluations
    # The earlier layout (evaluation at the top of the same run folders, an index without eval
    # ids): read beside the new one.
    write_sweep(results, "old", _runs(0.1))
    return results


def test_each_index_reads_the_evaluation_it_names(results: Path) -> None:
    shown, null = load_sweep_results(results, "sw"), load_sweep_results(results, "sw@bbbbbbbb")
    assert list(shown.runs["run_id"]) == list(null.runs["run_id"])
    assert set(shown.runs["eval_id"]) == {SHOWN} and set(null.runs["eval_id"]) == {NULL}
    assert (shown.runs["status"] == "finished").all() and (null.runs["status"] == "finished").all()
    better = shown.runs.loc[shown.runs["loss.w_c"] == 0.5, "abs_rel"]
    same = null.runs.loc[null.runs["loss.w_c"] == 0.5, "abs_rel"]
    assert (better.to_numpy() < same.to_numpy()).all()
    eval_dirs = [Path(d) for d in shown.runs["eval_dir"]]
    assert all(d.parent.name == store.EVALS_DIR and d.name == SHOWN for d in eval_dirs)


def test_an_index_of_the_earlier_layout_reads_the_top_of_the_run_folder(results: Path) -> None:
    old = load_sweep_results(results, "old")
    assert old.runs["eval_id"].isna().all() and (old.runs["status"] == "finished").all()
    assert (old.runs["eval_dir"] == old.runs["run_dir"]).all()
    assert np.isfinite(old.runs["abs_rel"]).all()


def test_both_evaluations_are_reported_with_their_own_verdicts(
    results: Path, tmp_path: Path
) -> None:
    out = build_report(results, out=tmp_path / "report", figures=False)
    verdicts = {}
    for name in ("sw", "sw@bbbbbbbb", "old"):
        sig = pd.read_csv(out / name / "significance.csv")
        assert len(sig) == 7  # the candidate against the baseline, per metric
        verdicts[name] = bool(sig["significant"].all())
    assert verdicts == {"sw": True, "sw@bbbbbbbb": False, "old": True}
    index = (out / "index.html").read_text()
    assert "sw@bbbbbbbb/report.html" in index and "sw/report.html" in index
    runs = pd.read_csv(out / "sw" / "runs.csv")
    assert set(runs["evaluation"]) == {SHOWN}


def test_a_trained_run_without_the_named_evaluation_is_trained_not_finished(
    results: Path, tmp_path: Path
) -> None:
    import shutil

    copy = Path(shutil.copytree(results, tmp_path / "copy"))
    first = store.read_sweep_index(copy, "sw")["trials"][2]["run_id"]
    shutil.rmtree(store.eval_path(store.run_path(copy, first), SHOWN))
    runs = load_sweep_results(copy, "sw").runs.set_index("run_id")
    assert runs.loc[first, "status"] == "trained"
    assert "rerun the sweep" in runs.loc[first, "message"]
    assert np.isnan(runs.loc[first, "abs_rel"])
