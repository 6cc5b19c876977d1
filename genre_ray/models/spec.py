"""A model's spec, declared once beside its class: the inputs it takes and the rule of each hyperparameter.

A model (a ``torch.nn.Module`` class, or a classical builder function) is decorated with
:func:`model_spec`::

    @model_spec(inputs=("spectrogram", "stacked"), depth=Int(1, 6), width=Int(4, 256), dropout=DROPOUT)
    class CNN2D(nn.Module):
        def __init__(self, n_classes, input_shape, depth=3, width=16, dropout=0.2): ...

- ``inputs``: the input families it takes (:data:`genre_ray.features.kinds.FAMILY`).
- one rule per searchable hyperparameter, named as its constructor keyword argument; the default is
  the constructor's. Every keyword argument with a default has a rule, but those the trainer
  gives: :data:`PROVIDED` to every model, and ``data_inputs``.
- ``data_inputs``: the extra inputs it reads from the data, from :data:`DATA_INPUTS` (``combined``
  takes the row ``groups`` of the stacked feature).

The config must not import torch, so it reads the same declaration from the model's source with
:func:`read_spec`: the decorator call and the signature's defaults, through :mod:`ast`. The
decorator reads them through :mod:`inspect` at import; ``tests/test_model_spec.py`` holds that
both agree for every registered model.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from genre_ray.features.kinds import FAMILY

__all__ = ["DATA_INPUTS", "DROPOUT", "FLAG", "PROVIDED", "Flag", "Float", "Int", "ModelSpec", "OneOf", "Rule",
           "SpecError", "model_spec", "read_spec"]

#: What the trainer passes every model: the number of classes, one clip's shape, the seed (classical).
PROVIDED = ("n_classes", "input_shape", "seed")
#: Extra inputs the trainer derives from the data for the models that declare them: ``groups``, the
#: row counts of the parts of a stacked feature, top to bottom (None for other kinds).
DATA_INPUTS = ("groups",)


class SpecError(TypeError):
    """A model whose declared spec does not match its signature (a programming error, not a user's)."""


@dataclass(frozen=True)
class Int:
    """A searchable integer in ``[lo, hi]``."""

    lo: int
    hi: int


@dataclass(frozen=True)
class Float:
    """A searchable number between ``lo`` and ``hi`` (None: unbounded), each end closed unless open."""

    lo: float | None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False


@dataclass(frozen=True)
class Flag:
    """A searchable true or false."""


@dataclass(frozen=True)
class OneOf:
    """A searchable string, one of ``choices``."""

    choices: tuple[str, ...]

    def __init__(self, *choices: str) -> None:
        object.__setattr__(self, "choices", tuple(choices))


Rule = Int | Float | Flag | OneOf

#: The rules most models share.
DROPOUT = Float(0.0, 1.0, hi_open=True)
FLAG = Flag()


@dataclass(frozen=True)
class ModelSpec:
    """What the config and the trainer need to know of a model, without importing it.

    Attributes:
        inputs: the input families it takes.
        rules: hyperparameter -> its rule, in the constructor's order.
        defaults: hyperparameter -> the constructor's default.
        data_inputs: the extra inputs it reads from the data (:data:`DATA_INPUTS`).
    """

    inputs: tuple[str, ...]
    rules: dict[str, Rule] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)
    data_inputs: tuple[str, ...] = ()


_REQUIRED = object()  # a parameter without a default
T = TypeVar("T", bound=Callable[..., Any])


def _make_spec(where: str, declared: Mapping[str, Any], signature: Mapping[str, Any]) -> ModelSpec:
    """Check a declaration (the decorator's arguments) against a signature (name -> default) and join them."""
    declared = dict(declared)
    inputs = tuple(declared.pop("inputs", ()))
    data_inputs = tuple(declared.pop("data_inputs", ()))
    families = sorted(set(FAMILY.values()))
    if not inputs or not set(inputs) <= set(families):
        raise SpecError(f"{where}: inputs must be input families from {', '.join(families)}, got {inputs}")
    for name in data_inputs:
        if name not in DATA_INPUTS or name not in signature:
            raise SpecError(f"{where}: data input {name!r} must be one of {', '.join(DATA_INPUTS)} and a "
                            "keyword argument of the constructor")
    rules: dict[str, Rule] = {}
    for name, rule in declared.items():
        if not isinstance(rule, Rule):
            raise SpecError(f"{where}: {name} must have a rule (Int, Float, Flag or OneOf), got {rule!r}")
        if name in (*PROVIDED, *data_inputs):
            raise SpecError(f"{where}: {name} is given by the trainer, not searched: it takes no rule")
        if signature.get(name, _REQUIRED) is _REQUIRED:
            raise SpecError(f"{where}: {name} has a rule but is not a keyword argument with a default")
    searchable = [n for n, d in signature.items() if d is not _REQUIRED and n not in (*PROVIDED, *data_inputs)]
    for name in searchable:
        if name not in declared:
            raise SpecError(f"{where}: the keyword argument {name} has no rule (declare it in model_spec, "
                            "or list it in data_inputs)")
        rules[name] = declared[name]
    return ModelSpec(inputs, rules, {n: signature[n] for n in rules}, data_inputs)


def _signature(obj: Callable[..., Any]) -> dict[str, Any]:
    return {name: _REQUIRED if p.default is inspect.Parameter.empty else p.default
            for name, p in inspect.signature(obj).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def model_spec(**declared: Any) -> Callable[[T], T]:
    """Declare a model's spec beside it; the decorated class or builder gets it as ``.spec``.

    Args:
        **declared: ``inputs`` (families), optional ``data_inputs``, and a rule per hyperparameter.

    Returns:
        The decorator, which leaves the model unchanged but for its ``spec`` attribute.

    Raises:
        SpecError: when the declaration and the signature disagree.
    """

    def attach(obj: T) -> T:
        where = f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
        obj.spec = _make_spec(where, declared, _signature(obj))  # type: ignore[attr-defined]
        return obj

    return attach


# The config's reader: the same declaration, from the source, without importing the model.

def read_spec(module: str, name: str) -> ModelSpec:
    """The spec of ``module:name`` read from its source file, without importing ``module``.

    Args:
        module: the dotted module, e.g. ``genre_ray.models.cnn2d``.
        name: the class or builder function, at the module's top level.

    Returns:
        The spec, as :func:`model_spec` would attach it at import.

    Raises:
        SpecError: when the source has no such decorated definition, or the declaration uses a name
            that cannot be read without importing the module.
    """
    path, tree = _parsed(module)
    where = f"{module}.{name}"
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise SpecError(f"{where}: not defined at the top level of {path}")
    call = next((d for d in node.decorator_list if isinstance(d, ast.Call) and _called(d) == "model_spec"), None)
    if call is None:
        raise SpecError(f"{where}: not decorated with @model_spec(...)")
    names = _Names(tree, where)
    declared = {kw.arg: names.evaluate(kw.value) for kw in call.keywords if kw.arg}
    return _make_spec(where, declared, _ast_signature(node, names, where))


@cache
def _parsed(module: str) -> tuple[Path, ast.Module]:
    found = importlib.util.find_spec(module)
    if found is None or not found.origin:
        raise SpecError(f"{module}: no such module")
    path = Path(found.origin)
    return path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def _called(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _ast_signature(node: ast.ClassDef | ast.FunctionDef, names: _Names, where: str) -> dict[str, Any]:
    if isinstance(node, ast.ClassDef):
        init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
        if init is None:
            raise SpecError(f"{where}: a model class must define __init__ (its signature is the spec's)")
        node = init
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [_REQUIRED] * (len(positional) - len(args.defaults)) + [names.evaluate(d) for d in args.defaults]
    out = {a.arg: d for a, d in zip(positional, defaults, strict=True)}
    out.update({a.arg: _REQUIRED if d is None else names.evaluate(d)
                for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)})
    out.pop("self", None)
    return out


class _Names:
    """Evaluates a declaration's expressions: literals, the rules of this module, and the names a model
    file defines as literals or imports from another light ``genre_ray`` module."""

    def __init__(self, tree: ast.Module, where: str) -> None:
        self.where = where
        self.assigned: dict[str, ast.expr] = {}
        self.imported: dict[str, tuple[str, str]] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                self.assigned[node.targets[0].id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                self.assigned[node.target.id] = node.value
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for alias in node.names:
                    self.imported[alias.asname or alias.name] = (node.module, alias.name)

    def evaluate(self, expr: ast.expr) -> Any:
        namespace = {n.id: self._resolve(n.id) for n in ast.walk(expr) if isinstance(n, ast.Name)}
        code = compile(ast.Expression(expr), self.where, "eval")
        return eval(code, {"__builtins__": {}}, namespace)  # noqa: S307 - the package's own source

    def _resolve(self, name: str) -> Any:
        if name in self.assigned:
            return self.evaluate(self.assigned[name])
        module, attr = self.imported.get(name, ("", ""))
        if module == __name__:
            return globals()[attr]
        if module.startswith("genre_ray.") and not module.startswith("genre_ray.models"):
            return getattr(importlib.import_module(module), attr)
        raise SpecError(f"{self.where}: the spec names {name}, which cannot be read without importing the "
                        "model; use a literal, a rule of genre_ray.models.spec, or a constant of a light "
                        "genre_ray module")
