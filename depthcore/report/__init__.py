"""The report: ablation tables, edge-distribution statistics, significance and figures.

Reads the results store (or an external CSV) with files alone: it never imports torch or Ray.

    build_report(results_dir, sweeps=None, out=None, formats=("md", "tex", "csv", "html"))
    import_csv(csv_path, out=None, *, name=None, dataset="kitti", formats=...)
"""

from __future__ import annotations

from depthcore.report.build import FORMATS, build_report, import_csv

__all__ = ["FORMATS", "build_report", "import_csv"]
