"""The import rules that keep the package easy to change (README, "How it is built")."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "genre_ray"
RAY_ALLOWED = {"pipeline.py", "train.py", "runner.py", "tuning.py", "trial_runs.py", "tag.py", "bench", "_ray_workarounds.py"}  # tag: Ray Data inference
# serving: the registered model is an mlflow.pyfunc model; bench: times the pyfunc loop users would write
MLFLOW_ALLOWED = {"tracking.py", "serving.py", "bench"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _owner(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.name


def test_only_the_pipeline_trainable_and_runner_import_ray() -> None:
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if "ray" in _imports(p) and _owner(p) not in RAY_ALLOWED]
    assert offenders == []


def test_only_tracking_imports_mlflow() -> None:
    offenders = [str(p.relative_to(PKG)) for p in PKG.rglob("*.py")
                 if "mlflow" in _imports(p) and _owner(p) not in MLFLOW_ALLOWED]
    assert offenders == []


def test_config_and_cli_front_import_nothing_heavy() -> None:
    for name in ("config.py", "cli.py", "search/__init__.py", "search/__main__.py", "search/selection.py", "spaces.py"):
        assert not _imports(PKG / name) & {"ray", "torch", "mlflow", "optuna", "librosa"}, name


def test_models_take_features_not_files() -> None:
    for path in (PKG / "models").glob("*.py"):
        assert not _imports(path) & {"soundfile", "librosa", "ray", "mlflow", "pandas"}, path.name


def _module_of(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _package_imports(path: Path) -> set[str]:
    """The genre_ray modules a file imports, lazily inside functions too."""
    return {node.module for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genre_ray.")
            and not node.level}


def test_no_import_cycles_between_modules() -> None:
    graph = {_module_of(p): _package_imports(p) for p in PKG.rglob("*.py")}
    state: dict[str, str] = {}
    cycles: list[list[str]] = []

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = "open"
        for dep in sorted(graph.get(mod, ())):
            if dep not in graph or dep == mod:
                continue
            if state.get(dep) == "open":
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[mod] = "done"

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
    assert cycles == [], " ; ".join(" -> ".join(c) for c in cycles[:5])


def test_private_ray_internals_live_in_one_module() -> None:
    """``ray._private``/``ray.*._internal`` and Tune's private state are used only in _ray_workarounds.py."""
    offenders = []
    for path in PKG.rglob("*.py"):
        if path.name == "_ray_workarounds.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if isinstance(node, ast.Attribute) and node.attr in ("_private", "_internal", "_post_init_hooks",
                                                               "_checkpoint_results", "_global_node"):
                names = [node.attr]
            if any(n.startswith("ray") and ("._private" in n or "._internal" in n) for n in names) or \
                    any(n.startswith("_") for n in names if isinstance(node, ast.Attribute)):
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert offenders == []
