"""YAML search space -> validated, typed config.

Everything in a search space file is checked here, in full, before Ray, torch or MLflow is
imported, so a typo costs a second and not a cluster start-up. Errors are raised as
:class:`ConfigError` with one line in the form ``FILE: KEY: RULE, got VALUE``.

A value that the search should choose is written as a one-key mapping::

    lr: {loguniform: [1.0e-4, 1.0e-2]}
    batch_size: {choice: [16, 32, 64]}
    depth: {int: [2, 4]}
    dropout: {uniform: [0.0, 0.5]}

Only searchable keys accept that form; everything else is a plain value. Each section is a typed
dataclass (:mod:`.schema`) whose fields declare every key's rule and default once; the rules
between keys are in :mod:`.rules`, and a model's parameters are checked against its own spec
(:mod:`genre_ray.models.spec`).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from genre_ray.config import rules
from genre_ray.config.checks import ConfigError, Dist, _err, _str, _type_name
from genre_ray.config.schema import (
    LEARNED_AGGREGATIONS,
    METRICS,
    OBJECTIVE,
    Data,
    Features,
    Model,
    Output,
    Resources,
    Search,
    Section,
    Split,
    Task,
    Tracking,
    Train,
    _later,
    _section,
    knob,
    parse_fields,
)
from genre_ray.models import accepts

__all__ = [
    "CLASSICAL_TRAIN_KEYS",
    "LEARNED_AGGREGATIONS",
    "METRICS",
    "OBJECTIVE",
    "SMOKE_OVERRIDES",
    "ConfigError",
    "Data",
    "Dist",
    "Features",
    "Model",
    "Output",
    "Resources",
    "Search",
    "SearchConfig",
    "Section",
    "Split",
    "Task",
    "Tracking",
    "Train",
    "load_config",
    "parse_config",
]

#: Train settings a classical (scikit-learn) model uses; the rest only shape neural training.
CLASSICAL_TRAIN_KEYS = tuple(f.name for f in fields(Train) if f.metadata.get("classical"))


@dataclass
class SearchConfig:
    """A validated search space: one typed section per YAML section, every default filled in.

    Picklable (Ray ships it to the driver's helpers); :meth:`to_dict` is its content as plain data,
    what ``--check`` prints and MLflow records.
    """

    source_file: str
    name: str = knob(_str(optional=True), "")  # absent or null: the file's stem
    task: str = knob(_str(), "demo")
    tasks: list[Task] = knob(_later, [])  # a list of task mappings; checked by rules.parse_tasks
    data: Data = _section(Data)
    features: Features = _section(Features)
    model: Model = _section(Model)
    train: Train = _section(Train)
    split: Split = _section(Split)
    search: Search = _section(Search)
    resources: Resources = _section(Resources)
    tracking: Tracking = _section(Tracking)
    output: Output = _section(Output)
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def mode(self) -> str:
        """``max`` or ``min`` for the configured metric."""
        return METRICS[self.search.metric]

    @property
    def model_names(self) -> list[str]:
        """Every model this search may train (one, or the choices of ``model.name``)."""
        return rules.listed(self.model.name)

    @property
    def feature_kinds(self) -> list[str]:
        """Every feature variant this search may use; each is computed and cached once."""
        return rules.listed(self.features.kind)

    def kinds_for(self, model: str) -> list[str]:
        """The listed feature variants that ``model`` can take, in the YAML's order."""
        return [k for k in self.feature_kinds if accepts(model, k)]

    def searchable(self) -> dict[str, Any]:
        """Flat ``section.key -> value`` of the train settings a trial may vary (Dist or constant)."""
        return {f"train.{f.name}": getattr(self.train, f.name) for f in fields(Train) if f.metadata.get("searchable")}

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data (distributions back in their YAML form)."""
        keys = ("name", "task", "tasks", "data", "features", "model", "train", "split", "search", "resources",
                "tracking", "output")
        return {k: _plain(getattr(self, k)) for k in keys}

    def feature_settings(self) -> dict[str, Any]:
        """The settings that decide feature values, without where they live (kinds as a list)."""
        return {**{k: v for k, v in self.features.items() if k not in ("cache_dir", "batch_files", "kind")},
                "kinds": self.feature_kinds}


def _plain(v: Any) -> Any:
    if isinstance(v, Dist):
        return {v.kind: list(v.args)}
    if isinstance(v, Section | dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def parse_config(raw: Any, source_file: str = "<config>") -> SearchConfig:
    """Validate a parsed YAML document and fill in defaults.

    Args:
        raw: the document, as loaded by ``yaml.safe_load``.
        source_file: the name used in error messages.

    Returns:
        The validated config.

    Raises:
        ConfigError: for the first unknown key, wrong type or out-of-range value.
    """
    if not isinstance(raw, dict):
        raise _err(source_file, "<top>", "must be a mapping of sections", _type_name(raw))
    clean = parse_fields(SearchConfig, raw, source_file, "")
    model = rules.check_models(clean["model"], source_file)
    rules.check_search(clean["search"], clean["resources"].gpu, source_file)
    rules.check_features(clean["features"], source_file)
    rules.check_paths(clean["data"], source_file)
    features, model = rules.check_kinds(clean["data"], clean["features"], model, clean["train"], source_file)
    rules.check_kind_rules(features, source_file)
    task = clean.get("task", SearchConfig.task)
    clean.update(name=clean.get("name") or Path(source_file).stem, features=features, model=model,
                 tasks=rules.parse_tasks(clean.get("tasks"), source_file, task))
    return SearchConfig(source_file=source_file, raw=copy.deepcopy(raw), **clean)


#: ``--smoke``: the same search space shrunk to a run of seconds (tiny demo data, 2 trials, 1 epoch).
#: The two trials run one after the other, so that Tune reuses one trial process for both: a trial
#: process spends 6-8 CPU-seconds importing Ray Tune and torch before its first step, more than a
#: smoke trial's training, so a second process in parallel brings no speed (cnn.yaml on 2 cores: 10 s
#: of wall time either way, 11 CPU-seconds instead of 19).
SMOKE_OVERRIDES: dict[str, Any] = {
    "data.demo.genres": 3, "data.demo.songs_per_genre": 5, "data.demo.seconds": 4.0,
    "features.max_clips_per_song": 3, "train.epochs": 1, "search.num_samples": 2,
    "search.max_concurrent": 1, "search.max_epochs": 1, "search.grace_period": 1,
    "search.time_budget_s": None, "split.folds": None,
}


def _read(path: str | os.PathLike[str]) -> Any:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the file ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}: not valid YAML at {where}: {problem}") from None


def _override(raw: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set dotted keys in the document, making the sections on the way."""
    if "search.max_epochs" in overrides and "search.grace_period" not in overrides:
        # --max-epochs below the YAML's grace period shortens the grace period with it.
        grace = (raw.get("search") or {}).get("grace_period", Search.grace_period)
        if isinstance(grace, int) and isinstance(overrides["search.max_epochs"], int):
            overrides["search.grace_period"] = min(grace, overrides["search.max_epochs"])
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> SearchConfig:
    """Read, override and validate a search space file.

    Args:
        path: the YAML file.
        overrides: dotted keys to set before validation, e.g. ``{"data.path": "/music"}``.

    Returns:
        The validated config.

    Raises:
        ConfigError: when the file is missing, is not valid YAML, or fails validation.
    """
    raw = _read(path)
    if raw is None:
        raw = {}
    if isinstance(raw, dict):
        _override(raw, dict(overrides or {}))
    return parse_config(raw, str(path))
