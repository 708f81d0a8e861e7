"""runners/bench.py at a tiny size: every section of the report, alternating rounds, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from runpy import run_path

import pytest

from depthcore.bench import (
    FAST,
    PHASES,
    Setup,
    combine_windows,
    format_report,
    speedup,
    step_in_process,
    step_output,
    wait_ready,
)
from depthcore.cli import parse_size, run_main
from depthcore.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def bench_main() -> Callable[[list[str]], int]:
    main: Callable[[list[str]], int] = run_path(str(REPO / "runners" / "bench.py"))["main"]
    return main


def tiny_args(cache: Path) -> list[str]:
    synthetic = ("frames=12", "native_width=248", "native_height=75")
    sets = [f"data.synthetic.{kv}" for kv in synthetic] + [f"data.cache_dir={cache}"]
    args = ["--device", "cpu", "--size", "192x64", "--batch", "2", "--steps", "2"]
    args += ["--warmup", "1", "--rounds", "2", "--data-batches", "2"]
    for kv in sets:
        args += ["--set", kv]
    return args


@pytest.mark.slow
def test_bench_reports_steps_rounds_loss_data_pack_and_profile(
    synthetic_cache: Path, tmp_path: Path
) -> None:
    trace = tmp_path / "traces" / "step.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "runners" / "bench.py"),
            *tiny_args(synthetic_cache),
            *("--pack", "2", "--profile", "6", "--trace", str(trace)),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [s["variant"] for s in res["steps"]] == ["reference", "fast"]
    for step in res["steps"]:
        assert "error" not in step, step
        assert len(step["round_samples_per_s"]) == 2
        assert all(v > 0 for v in step["round_samples_per_s"])
        assert set(step["breakdown_ms"]) == set(PHASES)
        assert step["peak_memory_mb"] > 0
        assert step["sustained_samples_per_s"] > 0
    up = res["step_speedup"]
    assert res["speedups"] == {"fast": up}
    assert up["min"] <= up["median"] <= up["max"]
    assert res["loss_samples_per_s"]["fast"] > 0 and res["loss_samples_per_s"]["reference"] > 0
    assert res["data_samples_per_s"]["cache"] > 0 and res["data_samples_per_s"]["decode"] > 0
    pack = res["pack"]
    assert pack["processes"] == 2 and len(pack["samples_per_s_each"]) == 2, pack
    # Over the union of the two timed windows: at most the sum of the separate rates.
    assert 0 < pack["combined_samples_per_s"] <= sum(pack["samples_per_s_each"]) * (1 + 1e-9)
    assert 0 < pack["overlap"] <= 1
    prof = res["profile"]
    assert "error" not in prof, prof
    assert prof["clock"] == "CPU" and prof["steps"] == 2
    assert len(prof["operators"]) == 6
    kinds = {k["kind"]: k["ms_per_step"] for k in prof["kinds"]}
    # Convolutions dominate a ResNet step: both directions must be found and ranked high.
    assert kinds["convolution forward"] > 0 and kinds["convolution backward"] > 0
    assert max(kinds, key=kinds.__getitem__).startswith("convolution")
    assert sum(kinds.values()) == pytest.approx(prof["ms_per_step"])
    assert "traceEvents" in json.loads(trace.read_text())
    assert [p.name for p in trace.parent.iterdir()] == ["step.json"]  # no temporary left
    assert res["size"] == [192, 64]
    text = format_report(res)
    expected = (
        "), 192x64, batch 2",
        "full step",
        "per round (samples/s, 2 rounds",
        "fast / reference full step:",
        "loss alone (standard):",
        "data path alone: decode+resize",
        "sustained",
        "2 packed processes (sustained, started together):",
        "profile (fast path, eager, 2 steps, self time on CPU:",
        "convolution backward",
    )
    for line in expected:
        assert line in text, text


def test_speedup_is_the_median_of_per_round_ratios() -> None:
    ref = {"round_samples_per_s": [1.0, 2.0, 1.0]}
    fast = {"round_samples_per_s": [1.5, 2.2, 1.3]}
    assert speedup(ref, fast) == pytest.approx({"median": 1.3, "min": 1.1, "max": 1.5})
    assert speedup({"error": "OOM"}, fast) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds and --steps must be >= 1"),
        (["--data-batches", "0"], "--data-batches must be >= 1, got 0"),
        (["--pack", "0"], "--pack must be >= 1, got 0"),
        (["--size", "640by192"], "--size '640by192': expected WIDTHxHEIGHT"),
        (
            ["--size", "192x640"],
            "--size 192x640: sizes are WIDTHxHEIGHT, as Monodepth2's 640x192; did you mean "
            "--size 640x192?",
        ),
        (["--set", "data.height=100"], "data.height: must be a multiple of 32"),
        (["--profile", "0"], "--profile ROWS must be >= 1, got 0"),
        (["--trace", "t.json"], "--trace PATH writes the profile's trace: add --profile"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(
    args: list[str],
    message: str,
    bench_main: Callable[[list[str]], int],
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_main(lambda: bench_main(args))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_failing_variant_process_is_reported_not_raised() -> None:
    stderr = "some warning\nerror: data.height: must be a multiple of 32, got 100\n"
    res = step_output(FAST, 2, "", stderr)
    assert res == {
        "variant": "fast",
        "error": "benchmark process failed: error: data.height: must be a multiple of 32, got 100",
    }
    assert step_output(FAST, -9, "", "")["error"] == "benchmark process failed: exit code -9"
    assert step_output(FAST, 0, '{"variant": "fast", "samples_per_s": 2.0}\n', "") == {
        "variant": "fast",
        "samples_per_s": 2.0,
    }


def test_a_failing_worker_process_says_why() -> None:
    setup = Setup("cpu", width=192, height=100, batch=2, steps=1, warmup=0)
    res = step_in_process(setup, FAST)
    assert res["variant"] == "fast"
    assert res["error"].startswith("benchmark process failed: error: data.height:"), res


def test_packed_rate_is_all_samples_over_the_union_of_the_timed_windows() -> None:
    # Two processes, 20 samples each, timed over [0, 10] s and [5, 15] s.
    windows = [
        {"samples": 20, "start": 100.0, "end": 110.0, "seconds": 10.0, "gpu_util": None},
        {"samples": 20, "start": 105.0, "end": 115.0, "seconds": 10.0, "gpu_util": None},
    ]
    res = combine_windows(windows)
    assert res["samples_per_s_each"] == [2.0, 2.0]
    assert res["combined_samples_per_s"] == pytest.approx(40 / 15)  # not the sum, 4.0
    assert res["overlap"] == pytest.approx(5 / 15)
    assert res["gpu_util_percent"] is None
    apart = [dict(windows[0]), {**windows[1], "start": 120.0, "end": 130.0}]
    assert combine_windows(apart)["overlap"] == 0.0


def test_a_packed_process_that_ends_before_ready_is_noticed() -> None:
    code = "print('some warning'); print('READY', flush=True)"
    ready = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    dead = subprocess.Popen(
        [sys.executable, "-c", "print('no')"], stdout=subprocess.PIPE, text=True
    )
    assert wait_ready(ready) and not wait_ready(dead)
    for proc in (ready, dead):
        proc.communicate()


@pytest.mark.parametrize(
    ("text", "size"),
    [("640x192", (640, 192)), ("1242X375", (1242, 375)), ("64x64", (64, 64))],
)
def test_sizes_are_width_by_height(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192x640", "did you mean --size 640x192?"),
        ("375x1242", "did you mean --size 1242x375?"),
        ("640x", "expected WIDTHxHEIGHT"),
        ("0x192", "expected WIDTHxHEIGHT"),
        ("640x192x3", "expected WIDTHxHEIGHT"),
    ],
)
def test_malformed_sizes_and_the_old_height_first_order_are_refused(
    text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_size(text)


def test_make_synthetic_shares_the_size_order(tmp_path: Path) -> None:
    out = tmp_path / "drives"
    cmd = [sys.executable, str(REPO / "runners" / "make_synthetic.py"), "--out", str(out)]
    proc = subprocess.run([*cmd, "--size", "375x1242"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "did you mean --size 1242x375?" in proc.stderr
    assert not out.exists()
