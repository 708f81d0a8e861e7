"""Train once, evaluate many: evaluations with their own ids (runs/<id>/evals/<eval id>/), made
from a trained run without training it again; run folders of the earlier layout (everything at
the top, no evaluation ids); runners/evaluate.py's records; a re-evaluated sweep, its dry run and
its two reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from conftest import TINY_OVERRIDES as TINY

from depthcore import engine, store
from depthcore.config import Config, load_config
from depthcore.errors import ConfigError, DataError
from depthcore.evaluate import evaluate_weights

# Other evaluation keys for the same run: flip post-processing, fewer images, two scales.
OTHER_EVAL = ("eval.post_process=true", "eval.max_images=3", "eval.scales=[0,1]")


def tiny(cache: Path, *more: str) -> Config:
    return load_config(None, [*TINY, f"data.cache_dir={cache}", *more])


@pytest.fixture(scope="module")
def trained_once(synthetic_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny trained run; each test works on its own copy (`run`)."""
    folder = tmp_path_factory.mktemp("trained") / "run"
    engine.train(tiny(synthetic_cache), folder, progress=False)
    return folder


@pytest.fixture
def run(trained_once: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_once, tmp_path / "run"))


def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("trained again")

    monkeypatch.setattr(engine, "_setup", boom)


def test_other_eval_keys_evaluate_the_trained_run_without_training(
    run: Path, synthetic_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, other = tiny(synthetic_cache), tiny(synthetic_cache, *OTHER_EVAL)
    assert other.run_id() == cfg.run_id() and other.eval_id() != cfg.eval_id()
    first = store.read_evaluation(run, cfg.eval_id())
    metrics_log = (run / store.METRICS_FILE).read_text()
    no_training(monkeypatch)
    second = engine.train(other, run, progress=False)
    assert second["eval_id"] == other.eval_id() and second["run_id"] == cfg.run_id()
    assert set(second["metrics_by_scale"]) == {"0", "1"} and second["n_images"] == 3
    assert (second["epochs"], second["steps"]) == (first["epochs"], first["steps"])
    assert second["metrics"] != first["metrics"]
    # Both evaluations are kept, each in its own folder; the training's record is untouched.
    assert store.read_evaluation(run, cfg.eval_id()) == first
    assert store.read_evaluation(run, other.eval_id()) == second
    assert store.read_eval_config(store.eval_path(run, other.eval_id()))["eval"]["post_process"]
    assert store.read_cost(run)["segments"] == 1
    assert (run / store.METRICS_FILE).read_text() == metrics_log
    assert load_config(run / store.CONFIG_FILE) == cfg  # the training's config stays
    assert engine.train(other, run, progress=False) == second  # recorded: not made again


def test_a_run_without_its_checkpoint_says_an_evaluation_needs_it(
    run: Path, synthetic_cache: Path
) -> None:
    shutil.rmtree(run / store.CHECKPOINT_DIR)
    other = tiny(synthetic_cache, *OTHER_EVAL)
    with pytest.raises(DataError, match=r"trained, but .*state.pt is gone"):
        engine.train(other, run, progress=False)
    assert store.read_error(store.eval_path(run, other.eval_id()))["type"] == "DataError"
    assert store.run_status(run) == "finished"  # still trained: never retrained over it


def test_an_evaluation_of_the_checkpoint_equals_the_one_made_after_training(
    run: Path, synthetic_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checkpoint holds the trained networks: evaluating it later gives the numbers the
    evaluation at the end of training gave (CPU, float32)."""
    cfg = tiny(synthetic_cache)
    folder = store.eval_path(run, cfg.eval_id())
    first = store.read_final(folder)
    per_image = store.read_per_image(folder)
    shutil.rmtree(folder)
    assert store.run_status(run, cfg.eval_id()) == "trained"
    no_training(monkeypatch)
    again = engine.train(cfg, run, progress=False)
    assert again["metrics_by_scale"] == first["metrics_by_scale"]
    assert store.read_per_image(folder).equals(per_image)


@pytest.mark.slow
def test_a_failed_final_evaluation_keeps_the_training(
    synthetic_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny(synthetic_cache)
    real, calls = engine._evaluate, []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 2:  # the first is the epoch's (learning curve), the second the final
            raise DataError("gt_depths.npz: damaged")
        return real(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(engine, "_evaluate", broken)
        with pytest.raises(DataError, match="damaged"):
            engine.train(cfg, tmp_path, progress=False)
    assert store.run_status(tmp_path) == "finished"  # trained
    assert store.run_status(tmp_path, cfg.eval_id()) == "failed"
    error = store.read_error(store.eval_path(tmp_path, cfg.eval_id()))
    assert error["type"] == "DataError" and not (tmp_path / store.ERROR_FILE).exists()
    no_training(monkeypatch)
    final = engine.train(cfg, tmp_path, progress=False)  # evaluates only
    assert final["eval_id"] == cfg.eval_id()
    assert store.run_status(tmp_path, cfg.eval_id()) == "finished"
    assert not (store.eval_path(tmp_path, cfg.eval_id()) / store.ERROR_FILE).exists()


def to_earlier_layout(run: Path, cfg: Config) -> dict[str, Any]:
    """Rewrite a run folder as the version before evaluation ids left it: the evaluation's
    files at the top, final.json (and the checkpoint) naming the legacy run id, no
    trained.json, no evals/. Returns the final.json written."""
    folder = store.eval_path(run, cfg.eval_id())
    final = {**store.read_final(folder), "run_id": cfg.legacy_run_id()}
    final.pop("eval_id")
    for name in (store.PER_IMAGE_FILE, store.PREDICTIONS_FILE):
        (folder / name).rename(run / name)
    shutil.rmtree(run / store.EVALS_DIR)
    (run / store.TRAINED_FILE).unlink()
    store.write_json_atomic(run / store.FINAL_FILE, final)
    ckpt = run / store.CHECKPOINT_DIR / store.CHECKPOINT_FILE
    state = torch.load(ckpt, weights_only=False)
    torch.save({**state, "run_id": cfg.legacy_run_id()}, ckpt)
    return final


def test_a_run_of_the_earlier_layout_is_reused_and_evaluated_anew(
    run: Path, synthetic_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, other = tiny(synthetic_cache), tiny(synthetic_cache, *OTHER_EVAL)
    final = to_earlier_layout(run, cfg)
    no_training(monkeypatch)
    assert engine.train(cfg, run, progress=False) == final  # its own evaluation, as it is
    second = engine.train(other, run, progress=False)  # another: made, in evals/
    assert store.find_evaluation(run, other.eval_id()) == store.eval_path(run, other.eval_id())
    assert second["run_id"] == cfg.legacy_run_id() and second["epochs"] == final["epochs"]
    assert store.find_evaluation(run, cfg.eval_id()) == run
    assert not (run / store.TRAINED_FILE).exists()  # nothing of the earlier layout rewritten


def test_evaluate_runner_records_in_the_run_folder(run: Path, synthetic_cache: Path) -> None:
    cfg = tiny(synthetic_cache)
    sets = [f"data.cache_dir={synthetic_cache}", *OTHER_EVAL]
    done = evaluate_weights(run, overrides=sets)
    other = tiny(synthetic_cache, *OTHER_EVAL)
    assert done.folder == store.eval_path(run, other.eval_id())
    final = store.read_final(done.folder)
    assert final["eval_id"] == other.eval_id() and final["run_id"] == cfg.run_id()
    assert store.read_per_image(done.folder, scale=1) is not None
    assert store.read_predictions(done.folder) is not None
    # A sweep asking for these eval keys finds the evaluation made: nothing left to do.
    assert store.run_status(run, other.eval_id()) == "finished"
    assert done.evaluation.metrics_by_scale[0] == final["metrics_by_scale"]["0"]
    # --scales is eval.scales: another evaluation id.
    scaled = evaluate_weights(run, overrides=[f"data.cache_dir={synthetic_cache}"], scales=[1, 0])
    assert scaled.folder == store.eval_path(
        run, tiny(synthetic_cache, "eval.scales=[0,1]").eval_id()
    )


def test_evaluate_runner_refuses_training_keys_for_the_run_folder(
    run: Path, synthetic_cache: Path, tmp_path: Path
) -> None:
    sets = [f"data.cache_dir={synthetic_cache}", "data.height=96"]
    same_eval = store.eval_path(run, tiny(synthetic_cache).eval_id())  # height: no eval key
    before = (same_eval / store.FINAL_FILE).read_text()
    with pytest.raises(ConfigError, match=r"changes training keys.*--out DIR"):
        evaluate_weights(run, overrides=sets)
    assert (same_eval / store.FINAL_FILE).read_text() == before
    done = evaluate_weights(run, overrides=sets, out=tmp_path / "elsewhere")  # allowed there
    assert store.read_final(tmp_path / "elsewhere")["metrics"] is not None
    assert done.folder == tmp_path / "elsewhere"


def test_unfinished_runs_and_monodepth2_folders_get_records_only_with_out(
    run: Path, synthetic_cache: Path, tmp_path: Path
) -> None:
    from depthcore.networks import save_monodepth2
    from depthcore.weights import load_weights

    sets = [f"data.cache_dir={synthetic_cache}", "eval.post_process=true"]
    (run / store.TRAINED_FILE).unlink()  # an interrupted run: its checkpoint is mid-training
    done = evaluate_weights(run, overrides=sets)
    assert done.folder is None and "has not finished training" in done.note
    assert len(list((run / store.EVALS_DIR).glob("*/final.json"))) == 1  # the original only
    mono = tmp_path / "mono"
    models, cfg = load_weights(run, overrides=sets)
    save_monodepth2(models, mono, cfg.data.height, cfg.data.width)
    tiny_data = [*TINY, *sets]  # a Monodepth2 folder has no config.yaml: the data keys
    done = evaluate_weights(mono, overrides=tiny_data)
    assert done.folder is None and "Monodepth2" in done.note
    assert not (mono / store.EVALS_DIR).exists()
    done = evaluate_weights(mono, overrides=tiny_data, out=tmp_path / "m2")
    assert done.folder == tmp_path / "m2" and store.read_per_image(tmp_path / "m2") is not None
    assert "run_id" not in store.read_final(tmp_path / "m2")


# ----------------------------------------------------------------------------------------------
# A sweep trained once and re-evaluated: the dry run, no training, both reports with verdicts


def sweep_file(path: Path, cache: Path) -> Path:
    spec = {
        "name": "evalmany",
        "base": "smoke_base.yaml",
        "trials": [
            {"label": "baseline", "role": "baseline", "loss.photometric": "standard"},
            {"label": "ssim_a", "loss.photometric": "ssim_a"},
        ],
        "seeds": [1234],
    }
    smoke = yaml.safe_load((Path(__file__).parent.parent / "sweeps" / "smoke.yaml").read_text())
    base = smoke["base"]
    base["data"]["cache_dir"] = str(cache)
    base["train"] = {**base["train"], "epochs": 1, "steps_per_epoch": 1}
    base["eval"] = {**base["eval"], "max_images": 3}
    (path / "smoke_base.yaml").write_text(yaml.safe_dump(base))
    (path / "evalmany.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return path / "evalmany.yaml"


@pytest.mark.slow
def test_a_re_evaluated_sweep_trains_nothing_and_both_evaluations_are_reported(
    synthetic_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweep_runner import run_sweep_runner

    from depthcore.report.build import build_report
    from depthcore.sweep import expand, load_sweep
    from depthcore.trials import run_one

    path, results = sweep_file(tmp_path, synthetic_cache), tmp_path / "results"
    first = load_sweep(path)
    for trial in expand(first):
        assert run_one(first, trial.trial_id, results).exit_code == 0
    again = ["--set", "eval.post_process=true"]
    dry = run_sweep_runner(str(path), "--dry-run", "--results", str(results), *again)
    assert dry.returncode == 0, dry.stderr
    assert "0 runs to train, 2 to evaluate only (trained already), 0 trials done" in dry.stdout
    assert dry.stdout.count("trained: evaluate only") == 2

    second = load_sweep(path, ["eval.post_process=true"])
    no_training(monkeypatch)
    for trial in expand(second):
        assert run_one(second, trial.trial_id, results).exit_code == 0
        run_dir = store.run_path(results, trial.run_id)
        assert store.read_cost(run_dir)["segments"] == 1  # trained once
        assert store.run_status(run_dir, trial.eval_id) == "finished"
    old_key = expand(first)[0].eval_id[:8]
    index = store.read_sweep_index(results, "evalmany")
    kept = store.read_sweep_index(results, f"evalmany@{old_key}")
    assert {t["eval_id"] for t in index["trials"]} == {expand(second)[0].eval_id}
    assert {t["eval_id"] for t in kept["trials"]} == {expand(first)[0].eval_id}
    assert index["evaluations"][expand(second)[0].eval_id]["post_process"] is True

    out = build_report(results, out=tmp_path / "report", figures=False)
    tables = {}
    for name, post in (("evalmany", True), (f"evalmany@{old_key}", False)):
        sig = (out / name / "significance.csv").read_text().splitlines()
        assert len(sig) > 1 and "significant" in sig[0]  # a verdict per metric
        tables[name] = sig[1:]
        summary = json.loads((out / name / "summary.json").read_text())["summary"]
        shown = "post-processed" if post else "no post-processing"
        assert any(line.startswith("Evaluation") and shown in line for line in summary)
    assert tables["evalmany"] != tables[f"evalmany@{old_key}"]  # each its own evaluation


# ----------------------------------------------------------------------------------------------
# The sweep side without training: the index, the budget gate, races


def small_sweep(*overrides: str, **keys: Any) -> Any:
    from depthcore.sweep import sweep_from_dict

    tree = {"name": "small", "trials": [{"label": "a", "role": "baseline"}], **keys}
    return sweep_from_dict(tree, overrides=list(overrides))


def test_a_re_evaluation_keeps_the_index_it_replaces_and_going_back_drops_the_copy(
    tmp_path: Path,
) -> None:
    from depthcore.sweep import expand
    from depthcore.trials import SweepIndex

    first, second = small_sweep(), small_sweep("eval.post_process=true")
    old, new = expand(first)[0].eval_id, expand(second)[0].eval_id
    SweepIndex(first, tmp_path, expand(first)).write()
    assert store.read_sweep_index(tmp_path, f"small@{old[:8]}") is None  # nothing replaced
    SweepIndex(second, tmp_path, expand(second)).write()
    kept = store.read_sweep_index(tmp_path, f"small@{old[:8]}")
    assert kept["name"] == f"small@{old[:8]}" and kept["trials"][0]["eval_id"] == old
    assert store.read_sweep_index(tmp_path, "small")["trials"][0]["eval_id"] == new
    SweepIndex(second, tmp_path, expand(second)).write()  # rewrites of the same: no copy
    names = {p.name for p in (tmp_path / "sweeps").iterdir()}
    assert names == {f"small@{old[:8]}.yaml", "small.yaml"}
    SweepIndex(first, tmp_path, expand(first)).write()  # back to the first evaluation
    assert store.read_sweep_index(tmp_path, f"small@{old[:8]}") is None
    assert store.read_sweep_index(tmp_path, f"small@{new[:8]}")["trials"][0]["eval_id"] == new


def test_a_trained_run_is_evaluated_even_when_the_budget_is_spent(tmp_path: Path) -> None:
    from depthcore.sweep import expand
    from depthcore.trials import NOT_STARTED, execute_trial

    (trial,) = expand(small_sweep())
    run_dir = tmp_path / "run"
    called: list[str] = []

    def evaluate(cfg: Config, folder: Path, **kw: Any) -> dict[str, Any]:
        called.append(cfg.eval_id())
        return {"metrics": {}}

    said: list[str] = []
    closed = execute_trial(trial, run_dir, evaluate, gate=lambda: False, out=said.append)
    assert closed == NOT_STARTED and not called  # untrained: the gate holds it back
    store.write_trained(run_dir, {"run_id": trial.run_id})
    execute_trial(trial, run_dir, evaluate, gate=lambda: False, out=said.append)
    assert called == [trial.eval_id] and "evaluation" in said[-1] and "only" in said[-1]


def test_a_race_refuses_arms_that_differ_only_in_eval_keys() -> None:
    with pytest.raises(ConfigError, match=r"seeds: trials .* differ only in eval\.\* keys"):
        small_sweep(
            trials=[
                {"label": "a", "role": "baseline"},
                {"label": "pp", "eval.post_process": True},
            ],
            seeds={"start": 2, "max": 3},
        )
    small_sweep(  # without a race, two evaluations of one run are two rows
        trials=[{"label": "a", "role": "baseline"}, {"label": "pp", "eval.post_process": True}]
    )


def test_a_sweep_counts_a_run_folder_of_the_earlier_layout_as_done(tmp_path: Path) -> None:
    """Today's layout before this version (final.json and per_image.csv at the top, named by
    the legacy id) at a trial's run folder: its own evaluation is done, another is only made."""
    from depthcore.metrics import METRIC_NAMES
    from depthcore.sweep import expand
    from depthcore.trials import SweepIndex, execute_trial, pending_work

    (trial,) = expand(small_sweep())
    (other,) = expand(small_sweep("eval.post_process=true"))
    run_dir = store.run_path(tmp_path, trial.run_id)
    store.write_text_atomic(run_dir / store.CONFIG_FILE, trial.config.to_yaml())
    metrics = dict.fromkeys(METRIC_NAMES, 0.25)
    final = {"run_id": trial.config.legacy_run_id(), "metrics": metrics, "epochs": 20}
    store.write_json_atomic(run_dir / store.FINAL_FILE, final)
    store.write_per_image(run_dir, [{"image": 0, "scale": 0, **metrics}])

    def must_not_run(*args: Any, **kwargs: Any) -> dict[str, Any]:
        raise AssertionError("trained or evaluated a finished trial")

    work = pending_work(tmp_path, [trial])
    assert (work.train, work.evaluate, work.done) == ([], [], 1)
    assert execute_trial(trial, run_dir, must_not_run) == final
    work = pending_work(tmp_path, [other])
    assert (len(work.train), len(work.evaluate), work.done) == (0, 1, 0)
    index = SweepIndex(small_sweep("eval.post_process=true"), tmp_path, [other])
    assert index.entries[other.trial_id]["status"] == "trained"
