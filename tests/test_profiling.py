"""The profile's arithmetic: operator kinds, per-step times and shares that add up."""

from __future__ import annotations

import pytest

from depthcore.profiling import OTHER, format_profile, kind_of, summarise


@pytest.mark.parametrize(
    ("op", "kind"),
    [
        ("aten::convolution_backward", "convolution backward"),
        ("aten::mkldnn_convolution", "convolution forward"),
        ("aten::cudnn_convolution", "convolution forward"),
        ("autograd::engine::evaluate_function: ConvolutionBackward0", "autograd bookkeeping"),
        ("aten::native_batch_norm_backward", "batch norm"),
        ("aten::max_pool2d_with_indices", "pooling"),
        ("aten::grid_sampler_2d_backward", "warping (grid_sample)"),
        ("aten::reflection_pad2d", "padding"),
        ("aten::upsample_nearest2d", "resizing"),
        ("aten::_fused_adam_", "optimiser"),
        ("aten::copy_", "copies and casts"),
        ("enumerate(DataLoader)#_MultiProcessingDataLoaderIter.__next__", "data loading"),
        ("aten::mul", OTHER),
    ],
)
def test_kind_of(op: str, kind: str) -> None:
    assert kind_of(op) == kind


def test_summarise_ranks_operators_and_adds_kinds_per_step() -> None:
    ops = {  # self µs over 2 steps, calls
        "aten::mul": (1000.0, 40),
        "aten::convolution_backward": (6000.0, 20),
        "aten::mkldnn_convolution": (2000.0, 20),
        "aten::add": (1000.0, 10),
    }
    res = summarise(ops, steps=2, rows=2, clock="CPU")
    assert res["ms_per_step"] == pytest.approx(5.0)
    assert [o["name"] for o in res["operators"]] == [
        "aten::convolution_backward",
        "aten::mkldnn_convolution",
    ]
    top = res["operators"][0]
    assert top["ms_per_step"] == pytest.approx(3.0)
    assert top["calls_per_step"] == pytest.approx(10)
    assert top["percent"] == pytest.approx(60.0)
    kinds = {k["kind"]: k for k in res["kinds"]}
    assert kinds[OTHER]["ms_per_step"] == pytest.approx(1.0)  # mul + add
    assert sum(k["percent"] for k in res["kinds"]) == pytest.approx(100.0)
    assert res["kinds"][0]["kind"] == "convolution backward"
    text = format_profile(res)
    assert "5.0 ms/step" in text and "aten::convolution_backward" in text


def test_summarise_of_nothing_does_not_divide_by_zero() -> None:
    res = summarise({}, steps=1, rows=5, clock="CUDA kernels")
    assert res["ms_per_step"] == 0 and res["operators"] == [] and res["kinds"] == []
