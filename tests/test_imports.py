"""Import structure: what a module pulls in. Checked in subprocesses, so that what other tests
imported into this process cannot hide an import."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# run_one on a one-trial sweep with a stand-in engine that only writes final.json.
RUN_ONE = """
import sys
from pathlib import Path

from depthcore import store
from depthcore.sweep import sweep_from_dict
from depthcore.trials import run_one


def train(cfg, run_dir, **kw):
    final = {"run_id": cfg.run_id(), "metrics": {"abs_rel": 0.1}, "epochs": 1}
    store.write_trained(run_dir, final)
    store.write_json_atomic(store.eval_path(run_dir, cfg.eval_id()) / store.FINAL_FILE, final)
    return final


sweep = sweep_from_dict({"name": "noray", "trials": [{"label": "a"}]})
outcome = run_one(sweep, "a", sys.argv[1], train_fn=train, out=lambda line: None)
assert outcome.exit_code == 0, outcome
print("RAY_IMPORTED=%s" % ("ray" in sys.modules))
"""


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_trials_and_run_one_do_not_import_ray(tmp_path: Path) -> None:
    proc = _python("-c", RUN_ONE, str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "RAY_IMPORTED=False" in proc.stdout
    assert (tmp_path / "sweeps" / "noray.yaml").is_file()


def test_sweep_runner_only_does_not_import_ray(tmp_path: Path) -> None:
    probe = (
        "import atexit, runpy, sys\n"
        "atexit.register(lambda: print('RAY_IMPORTED=%s' % ('ray' in sys.modules)))\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )
    runner = str(REPO / "runners" / "sweep.py")
    args = ("sweeps/smoke.yaml", "--only", "no-such-trial", "--results", str(tmp_path))
    proc = _python("-c", probe, runner, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no such trial" in proc.stderr  # it got as far as looking the trial up
    assert "RAY_IMPORTED=False" in proc.stdout


# ----------------------------------------------------------------------------------------------
# The import graph of depthcore has no cycle (function-level imports included)


def _imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """depthcore modules a file imports anywhere in it. `from depthcore.p import x` imports
    the module or package `depthcore.p` (its __init__), and `depthcore.p.x` if that is one."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found & modules


def import_graph(root: Path = REPO, package: str = "depthcore") -> dict[str, set[str]]:
    """Module -> the modules of `package` (under `root`) it imports."""
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    modules = set(files)
    return {
        name: _imported(ast.parse(p.read_text()), modules) - {name} for name, p in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_sees_a_function_level_loop(tmp_path: Path) -> None:
    pkg = tmp_path / "depthcore"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine.py").write_text("from depthcore.evaluate import evaluate\n")
    (pkg / "evaluate.py").write_text("def f():\n    from depthcore.engine import resolve\n")
    (pkg / "sub" / "__init__.py").write_text("from depthcore.sub.a import x\n")
    (pkg / "sub" / "a.py").write_text("import depthcore.errors\n")
    assert find_cycle(import_graph(tmp_path)) == [
        "depthcore.engine",
        "depthcore.evaluate",
        "depthcore.engine",
    ]
    (pkg / "evaluate.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from depthcore.sub import y\n")  # the package __init__
    assert find_cycle(import_graph(tmp_path)) == [
        "depthcore.sub",
        "depthcore.sub.a",
        "depthcore.sub",
    ]


def test_depthcore_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "depthcore.engine" in graph and "depthcore.report.build" in graph
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"
