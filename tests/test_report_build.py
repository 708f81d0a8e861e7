"""Report end to end on a hand-made results folder: HTML content, index, partial sweeps,
significance marks, determinism across processes, and no torch/Ray import."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from report_fixtures import Trial, base_images, per_image, write_sweep

from depthcore import store
from depthcore.metrics import METRIC_NAMES
from depthcore.report import build_report

REPO = Path(__file__).resolve().parents[1]


def _sweeps(results: Path) -> None:
    base = base_images(40)

    def run(params: dict, seed: int, shift: float, **kw: object) -> Trial:
        images = per_image(base, shift, 0.01, seed=len(params) * 10 + seed + int(shift * 100))
        return Trial(params, seed=seed, per_image=images, **kw)

    both = {"predictions": True, "scales": (0, 2)}
    trials = [
        run({}, 0, 0.0, role="baseline", **both),
        run({}, 1, 0.0, role="baseline", **both),
        run({"loss.w_c": 0.5, "loss.w_s": 0.7}, 0, 0.1, **both),  # large effect
        run({"loss.w_c": 0.5, "loss.w_s": 0.7}, 1, 0.1, **both),
        run({"loss.w_c": 0.4, "loss.w_s": 0.7}, 0, 0.0, predictions=True),  # no effect
        run({"loss.w_c": 0.4, "loss.w_s": 0.5}, 0, 0.02),
        run({"loss.w_c": 0.5, "loss.w_s": 0.5}, 0, 0.01),
        Trial({"loss.w_c": 0.6, "loss.w_s": 0.6}, state="failed"),
        Trial({"loss.w_c": 0.6, "loss.w_s": 0.5}, state="missing"),
        Trial({"loss.w_c": 0.6, "loss.w_s": 0.7}, state="corrupt", per_image=base),
    ]
    write_sweep(results, "ssim_a", trials, dataset="kitti")
    other = [
        Trial({"model.upsample": "nearest"}, seed=5, role="baseline", per_image=base[:5]),
        Trial({"model.upsample": "subpixel"}, seed=5, per_image=base[5:10], predictions=True),
    ]
    write_sweep(results, "other", other)
    broken = store.run_path(results, other[1].run_id())
    (broken / store.PREDICTIONS_FILE).write_bytes(b"PK\x03\x04 not a zip")  # torn npz
    (broken / store.PER_IMAGE_FILE).unlink()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    results = tmp_path_factory.mktemp("results")
    _sweeps(results)
    return results, build_report(results)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            self.tables.append(found.get("id") or "")
        elif tag == "img":
            self.images.append(found.get("src") or "")
        elif tag == "a":
            self.links.append(found.get("href") or "")


def _parse(path: Path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text())
    return parser


def test_html_report_embeds_every_table_and_figure(built: tuple[Path, Path]) -> None:
    folder = built[1] / "ssim_a"
    page = _parse(folder / "report.html")
    wanted = {
        "T_ablation",
        "significance",
        "T_marginals-loss-w-c",
        "T_marginals-loss-w-s",
        "best-values",
        "importance",
        "per-scale",
        "unfinished-runs",
    }
    assert wanted <= set(page.tables)
    embedded = sorted(base64.b64decode(src.split(",", 1)[1]) for src in page.images)
    pngs = sorted(p.read_bytes() for p in (folder / "figures").glob("*.png"))
    stems = {p.stem for p in (folder / "figures").glob("*.png")}
    assert stems == {
        "ssim_surfaces",
        "learning_curves",
        "marginals",
        "predictions",
        "predictions_scales",
        "per_scale",
    }
    assert embedded == pngs
    assert {p.stem for p in (folder / "figures").glob("*.pdf")} == stems
    assert all(src.startswith("data:image/png;base64,") for src in page.images)


def test_index_links_every_sweep(built: tuple[Path, Path]) -> None:
    links = _parse(built[1] / "index.html").links
    assert links == ["other/report.html", "ssim_a/report.html"]
    assert all((built[1] / link).is_file() for link in links)


def test_partial_sweep_lists_missing_and_failed_runs(built: tuple[Path, Path]) -> None:
    folder = built[1] / "ssim_a"
    runs = pd.read_csv(folder / "runs.csv", keep_default_na=False).set_index("configuration")
    assert runs.loc["w_c=0.6, w_s=0.6", "status"] == "failed"
    assert runs.loc["w_c=0.6, w_s=0.6", "message"] == "TrainingError: loss is NaN at step 7"
    assert runs.loc["w_c=0.6, w_s=0.5", "status"] == "missing"
    assert "final.json unreadable" in runs.loc["w_c=0.6, w_s=0.7", "message"]
    html = (folder / "report.html").read_text()
    for text in ("TrainingError: loss is NaN at step 7", "no run folder", "final.json unreadable"):
        assert text in html
    table = pd.read_csv(folder / "ablation.csv", keep_default_na=False)
    assert len(table) == 1 + 1 + 4  # Monodepth2, baseline, the 4 finished configurations
    assert "3 run(s) without results" in (folder / "ablation.md").read_text()


def test_daggers_mark_improvements_that_are_not_significant(built: tuple[Path, Path]) -> None:
    folder = built[1] / "ssim_a"
    sig = pd.read_csv(folder / "significance.csv")
    table = pd.read_csv(folder / "ablation.csv", keep_default_na=False)
    strong = sig[sig["name"] == "w_c=0.5, w_s=0.7"]
    assert strong["significant"].all() and strong["improved"].all()
    assert (strong["n_seeds"] == 2).all() and (strong["n_seeds_baseline"] == 2).all()
    assert (strong["verdict"] == "better (seeds and images)").all()
    single = sig[sig["n_seeds"] == 1]
    assert len(single) and not single["significant"].any()
    assert (single["verdict"] == "1 seed: training variance untested").all()
    flagged = 0
    for _, row in sig.iterrows():
        w_c, w_s = (float(v) for v in row["name"].replace("w_c=", "").split(", w_s="))
        line = table[(table["loss.w_c"] == str(w_c)) & (table["loss.w_s"] == str(w_s))]
        want = bool(row["improved"] and not row["significant"])
        assert (line[f"{row['metric']}_not_significant"].astype(str) == str(want)).all(), (
            row.to_dict()
        )
        flagged += want
    assert flagged > 0  # the no-effect configuration improves some metric by chance
    md = (folder / "ablation.md").read_text()
    assert md.count("†") == flagged + 1  # plus the legend


def test_broken_files_do_not_stop_the_report(built: tuple[Path, Path]) -> None:
    folder = built[1] / "other"
    assert (folder / "report.html").is_file()
    assert not (folder / "figures" / "predictions.png").exists()  # its npz was torn
    note = "no configuration other than the baseline has readable per-image metrics"
    assert note in (folder / "report.html").read_text()  # its per_image.csv is gone
    assert pd.read_csv(folder / "significance.csv").empty
    table = pd.read_csv(folder / "ablation.csv", keep_default_na=False)
    assert list(table["model.upsample"]) == ["nearest", "subpixel"]
    assert "Monodepth2" not in table["method"].iloc[0]  # synthetic data


SCRIPT = """
import json, runpy, sys
sys.argv = ["report.py", *sys.argv[1:]]
try:
    runpy.run_path("runners/report.py", run_name="__main__")
except SystemExit as done:
    code = done.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "ray": "ray" in sys.modules}))
"""


@pytest.mark.slow
def test_second_run_in_a_new_process_is_identical_and_never_imports_torch(
    built: tuple[Path, Path],
) -> None:
    results, out = built
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    command = [sys.executable, "-c", SCRIPT, str(results), "--sweep", "ssim_a"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    status = json.loads(done.stdout.strip().splitlines()[-1])
    assert status == {"code": 0, "torch": False, "ray": False}, done.stderr
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after.keys() == before.keys()
    changed = [str(p.relative_to(out)) for p in before if before[p] != after[p]]
    assert changed == []
    assert b"CreationDate" not in before[out / "ssim_a" / "figures" / "marginals.pdf"]
    assert all(m in before[out / "ssim_a" / "ablation.csv"].decode() for m in METRIC_NAMES)


def test_per_scale_display_keeps_the_baseline_and_the_best_past_the_limit() -> None:
    from depthcore.report.build import shown_per_scale

    configs = pd.DataFrame(
        {
            "config": [f"c{i}" for i in range(6)],
            "name": [f"n{i}" for i in range(6)],
            "role": ["baseline"] + ["grid"] * 5,
            "abs_rel": [0.20, 0.15, 0.11, 0.13, 0.12, 0.14],
        }
    )
    table = pd.DataFrame(
        [
            {"config": c, "name": c, "scale": s, "abs_rel": 0.1}
            for c in configs["config"]
            for s in (0, 1)
        ]
    )
    shown, note = shown_per_scale(table, configs, "abs_rel", limit=3)
    assert sorted(set(shown["config"])) == ["c0", "c2", "c4"]  # baseline + the 2 lowest abs_rel
    assert len(shown) == 6 and note is not None
    assert "6 configurations" in note and "the baseline and the 2 best by abs_rel" in note
    whole, none = shown_per_scale(table, configs, "abs_rel", limit=6)
    assert none is None and whole.equals(table)
