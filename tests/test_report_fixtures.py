"""The report tests' hand-made results folders follow the results contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from report_fixtures import Trial, base_images, write_sweep

from depthcore import store


def test_written_folder_follows_the_contract(tmp_path: Path) -> None:
    """The helper itself: the store's readers see what the contract promises."""
    trials = [
        Trial({"loss.w_c": 0.5}, per_image=base_images(5), predictions=True, scales=(0, 2)),
        Trial({"loss.w_c": 0.6}, state="failed"),
        Trial({"loss.w_c": 0.7}, state="corrupt", per_image=base_images(5)),
    ]
    write_sweep(tmp_path, "s", trials)
    dirs = [store.run_path(tmp_path, t.run_id()) for t in trials]
    assert [store.run_status(d) for d in dirs] == ["finished", "failed", "pending"]
    assert store.read_final(dirs[0])["metrics_by_scale"].keys() == {"0", "2"}
    assert store.read_final(dirs[2]) is None
    assert np.load(dirs[0] / store.PREDICTIONS_FILE)["disp"].shape == (3, 2, 8, 16)
    assert [r["type"] for r in store.read_jsonl(dirs[0] / store.METRICS_FILE)].count("epoch") == 2
