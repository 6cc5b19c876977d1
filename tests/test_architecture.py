"""The import rules that keep the package easy to change (README, "How it is built")."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "genre_ray"

#: Where Ray may be imported (docs/architecture.md): the Ray Data pipeline, the Tune trainable, the
#: search, the tagging actors, the one module of Ray workarounds, and the benchmarks (their baselines
#: are the code a user would write with Ray and MLflow by hand).
RAY_HOMES = ("features/pipeline.py", "training/trainable.py", "search/", "serving/tag.py", "_ray_workarounds.py",
             "bench/")
#: The layers that import neither Ray nor MLflow, whatever file is added to them.
PURE_LAYERS = ("config/", "data/", "features/", "models/", "training/")


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _rel(path: Path) -> str:
    return path.relative_to(PKG).as_posix()


def _in(rel: str, homes: tuple[str, ...]) -> bool:
    return any(rel == h or (h.endswith("/") and rel.startswith(h)) for h in homes)


def test_ray_is_imported_only_by_the_pipeline_trainable_search_and_tagging() -> None:
    offenders = [_rel(p) for p in PKG.rglob("*.py") if "ray" in _imports(p) and not _in(_rel(p), RAY_HOMES)]
    assert offenders == []


def test_data_features_models_training_and_config_import_no_ray_and_no_mlflow() -> None:
    offenders = [_rel(p) for p in PKG.rglob("*.py") if _in(_rel(p), PURE_LAYERS)
                 and not _in(_rel(p), RAY_HOMES) and _imports(p) & {"ray", "mlflow"}]
    assert offenders == []


def test_only_tracking_imports_mlflow() -> None:
    offenders = [_rel(p) for p in PKG.rglob("*.py")
                 if "mlflow" in _imports(p) and not _in(_rel(p), ("tracking/", "bench/"))]
    assert offenders == []


def test_serving_takes_inference_from_training_never_the_trainable_or_the_loop() -> None:
    reached = {m for p in (PKG / "serving").rglob("*.py") for m in _package_imports(p)
               if m.startswith("genre_ray.training")}
    assert reached and not reached & {"genre_ray.training.trainable", "genre_ray.training.loop"}, reached


def test_config_and_cli_front_import_nothing_heavy() -> None:
    front = [*(PKG / "config").rglob("*.py"), PKG / "cli.py", PKG / "search" / "__init__.py",
             PKG / "search" / "__main__.py", PKG / "search" / "selection.py"]
    for path in front:
        assert not _imports(path) & {"ray", "torch", "mlflow", "optuna", "librosa"}, _rel(path)


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


#: a dotted path into Ray's private modules, as a string (a logger's name, a module to import)
INTERNAL = re.compile(r"ray(\.\w+)*\._(private|internal)(\.\w+)*")


def test_private_ray_internals_live_in_one_module() -> None:
    """``ray._private``/``ray.*._internal`` (imported, as attributes, or named by a string such as a
    logger's name) and Tune's private state are used only in _ray_workarounds.py."""
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
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and INTERNAL.fullmatch(node.value):
                names = [node.value]  # a logger or module of Ray's named by its path
            if any(n.startswith("ray") and ("._private" in n or "._internal" in n) for n in names) or \
                    any(n.startswith("_") for n in names if isinstance(node, ast.Attribute)):
                offenders.append(f"{path.relative_to(PKG)}:{node.lineno}")
    assert offenders == []
