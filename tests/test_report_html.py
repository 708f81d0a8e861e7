"""The HTML ablation table marks the best value bold and the second best underlined (as the
paper, and as the Markdown and LaTeX tables), read back from the written pages' own CSS."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import Trial, metrics, write_sweep

from depthcore.metrics import METRIC_NAMES
from depthcore.report import build_report
from depthcore.report.tables import metric_header

BOLD = "font-weight: bold"
UNDERLINE = "text-decoration: underline"


RUNS = {
    "A": metrics(0.100, 0.80, 4.50, 0.180, 0.880, 0.960, 0.980),
    "B": metrics(0.110, 0.70, 4.60, 0.170, 0.890, 0.950, 0.970),
    "C": metrics(0.120, 0.90, 4.40, 0.190, 0.870, 0.970, 0.990),
}
# (best, second) per metric, by hand from RUNS: errors lower is better, accuracies higher.
EXPECTED = {
    "abs_rel": ("A", "B"),
    "sq_rel": ("B", "A"),
    "rmse": ("C", "A"),
    "rmse_log": ("B", "A"),
    "a1": ("B", "A"),
    "a2": ("C", "A"),
    "a3": ("C", "A"),
}


class _Table(HTMLParser):
    """The CSS rules of a page's <style> blocks, and one table's header and rows of cell ids."""

    def __init__(self, table_id: str) -> None:
        super().__init__()
        self.table_id = table_id
        self.css = ""
        self.rows: list[list[tuple[str, str]]] = []  # (cell id, text); the first is the header
        self._tag = ""
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag = tag
        found = dict(attrs)
        if tag == "table":
            self._inside = found.get("id") == self.table_id
        elif self._inside and tag == "tr":
            self.rows.append([])
        elif self._inside and tag in ("th", "td"):
            self.rows[-1].append((found.get("id") or "", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._inside = False
        self._tag = ""

    def handle_data(self, data: str) -> None:
        if self._tag == "style":
            self.css += data
        elif self._inside and self._tag in ("th", "td"):  # a cell's text may come in pieces
            cell_id, text = self.rows[-1][-1]
            self.rows[-1][-1] = (cell_id, text + data)

    def styles(self) -> dict[str, str]:
        """Cell id -> its CSS declarations."""
        out: dict[str, str] = {}
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", self.css):
            for selector in (s.strip() for s in selectors.split(",")):
                if selector.startswith("#"):
                    out[selector[1:]] = out.get(selector[1:], "") + body
        return out


def cell_styles(page: Path) -> dict[tuple[str, str], str]:
    """(method, metric) -> the CSS of that cell in the page's ablation table."""
    parser = _Table("T_ablation")
    parser.feed(page.read_text())
    css = parser.styles()
    columns = {metric_header(m, "html"): m for m in METRIC_NAMES}
    headers = [text.strip() for _, text in parser.rows[0]]
    out = {}
    for row in parser.rows[1:]:
        method = row[0][1].strip()
        for header, (cell_id, _) in zip(headers, row, strict=True):
            if header in columns:
                out[method, columns[header]] = css.get(cell_id, "")
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    results = tmp_path_factory.mktemp("html-marks")
    trials = [
        Trial({"loss.w_c": 0.4 + i / 10}, label=name, metrics=RUNS[name])
        for i, name in enumerate(RUNS)
    ]
    write_sweep(results, "marks", trials)
    return build_report(results, formats=("html",), figures=False) / "marks"


@pytest.mark.parametrize("page", ["ablation.html", "report.html"])
def test_best_is_bold_and_second_underlined_in_the_html_table(report: Path, page: str) -> None:
    styles = cell_styles(report / page)
    assert len(styles) == len(RUNS) * len(METRIC_NAMES)
    for metric, (best, second) in EXPECTED.items():
        for method in RUNS:
            style = styles[method, metric]
            where = (page, method, metric, style)
            assert (BOLD in style) == (method == best), where
            assert (UNDERLINE in style) == (method == second), where
