"""The benchmarks use only genre_ray's public names (issue 15: benchmarks apart).

A module under ``genre_ray/bench`` may import anything of ``genre_ray.bench`` itself (its own
``_warm`` or ``_tag_inputs``), but of the rest of ``genre_ray`` only public names of public modules:
no ``from genre_ray.x import _name``, no private module (``genre_ray._ray_workarounds``,
``genre_ray.models._blocks``), and no ``module._name`` on a genre_ray module it imported. A helper a
benchmark needs is made public, with a docstring, in the module where it belongs. There is no
exception: the memory benchmark finds the raylet through Ray's public node table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "genre_ray" / "bench"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(node: ast.ImportFrom) -> str:
    """The module an ``import from`` names, relative imports resolved from ``genre_ray.bench``."""
    if not node.level:
        return node.module or ""
    base = "genre_ray.bench".split(".")[: 2 - node.level + 1] if node.level <= 2 else []
    return ".".join([*base, *([node.module] if node.module else [])])


def _outside_bench(module: str) -> bool:
    return (module == "genre_ray" or module.startswith("genre_ray.")) and not (
        module == "genre_ray.bench" or module.startswith("genre_ray.bench."))


def private_uses(source: str, filename: str = "<bench>") -> list[str]:
    """Each use of a private genre_ray name outside ``genre_ray.bench`` in ``source``, as
    ``file:line: what``."""
    tree = ast.parse(source, filename)
    found, modules = [], set()  # modules: local names bound to genre_ray modules or objects outside bench
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _outside_bench(alias.name):
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{filename}:{node.lineno}: import {alias.name}")
                    modules.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            module = _absolute(node)
            if not _outside_bench(module):
                continue
            if any(_private(part) for part in module.split(".")):
                found.append(f"{filename}:{node.lineno}: from {module} import ... (a private module)")
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{filename}:{node.lineno}: from {module} import {alias.name}")
                modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{filename}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_benchmark_uses_a_private_name_of_the_product() -> None:
    files = sorted(BENCH.rglob("*.py"))
    assert len(files) > 5, files  # the benchmarks are there
    found = [use for path in files for use in private_uses(path.read_text(encoding="utf-8"), str(path))]
    assert not found, "benchmarks must use public names only (make the helper public, with a docstring):\n" \
        + "\n".join(found)


@pytest.mark.parametrize("source", [
    "from genre_ray.search import _task_name",
    "from genre_ray._ray_workarounds import raylet_socket_name",
    "import genre_ray._legacy",
    "from genre_ray.models._blocks import MaxPool2d",
    "from genre_ray.serving import tag\nx = tag._schema",
    "import genre_ray.features.pipeline as p\np._Store('x')",
    "from .. import _faults",
    "from ..serving.tag import _done",
])
def test_the_check_finds_each_kind_of_private_use(source: str) -> None:
    assert private_uses(source), source


@pytest.mark.parametrize("source", [
    "from genre_ray.bench._warm import start_ray",
    "from genre_ray.bench import _tag_inputs",
    "from . import _warm",
    "from genre_ray.serving.tag import Predictor, ray_start",
    "from genre_ray.serving import tag\ntag.Predictor = object",
    "from __future__ import annotations",
    "import ray\nray._private",
    "x = self._calls",
])
def test_the_check_allows_public_names_and_the_benchmarks_own(source: str) -> None:
    assert not private_uses(source), source
