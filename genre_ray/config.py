"""YAML search space -> validated, typed config.

Everything in a search space file is checked here, in full, before Ray, torch or MLflow is
imported, so a typo costs a second and not a cluster start-up. Errors are raised as
:class:`ConfigError` with one line in the form ``FILE: KEY: RULE, got VALUE``.

A value that the search should choose is written as a one-key mapping::

    lr: {loguniform: [1.0e-4, 1.0e-2]}
    batch_size: {choice: [16, 32, 64]}
    depth: {int: [2, 4]}
    dropout: {uniform: [0.0, 0.5]}

Only keys marked searchable below accept that form; everything else is a plain value.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genre_ray._checks import (Checker, ConfigError, Dist, _Bad, _bool, _err, _num, _optional,
                               _searchable, _str, _str_list, _type_name, _UNSET)
from genre_ray.models import INPUT_NDIM, REGISTRY  # names only: no torch is imported

__all__ = [
    "SMOKE_OVERRIDES",
    "ConfigError",
    "Dist",
    "METRICS",
    "OBJECTIVE",
    "SearchConfig",
    "load_config",
    "parse_config",
]

#: Metrics a search may optimise, with their direction. The default objective is song-level
#: validation accuracy: users care about songs, not 3-second clips.
METRICS: dict[str, str] = {
    "val_song_acc": "max",
    "val_song_f1": "max",
    "val_song_bacc": "max",
    "val_clip_acc": "max",
    "val_clip_f1": "max",
    "val_loss": "min",
}
OBJECTIVE = "val_song_acc"

MODEL_NAMES = tuple(REGISTRY)
#: data.source -> the feature kind it gives ("audio": any audio feature kind)
SOURCES = {"demo": "audio", "folder": "audio", "tags": "audio", "csv": "audio", "fma": "audio",
           "table": "table", "images": "image"}
AUDIO_KINDS = ("logmel",)
FEATURE_KINDS = ("auto", *AUDIO_KINDS, "table", "image")
_FEATURE_NDIM = {"logmel": 2, "image": 2, "table": 1}
OPTIMIZERS = ("adam", "adamw", "sgd")
IMBALANCE = ("none", "class_weight", "balanced_sampling")


# Checkers: key -> (checker, default); a checker returns the cleaned value or raises _Bad(rule).
_SCHEMA: dict[str, Any] = {
    "name": (_str(optional=True), None),
    "task": (_str(), "demo"),
    "tasks": ("tasks", None),  # a list of task mappings; checked by _tasks below
    "data": {
        "source": (_str(tuple(SOURCES)), "demo"),
        "path": (_str(optional=True), None),
        "mapping": (_str(optional=True), None),  # tags: YAML mapping raw genre tags to genres
        "audio_dir": (_str(optional=True), None),  # fma: the fma_<size> audio folder
        "subset": (_str(("small", "medium", "large", "full"), optional=True), None),  # fma
        "demo": {
            "genres": (_num(2, 10, integer=True), 8),
            "songs_per_genre": (_num(3, 1000, integer=True), 24),
            "seconds": (_num(3.0, 120.0), 10.0),
            "sample_rate": (_num(8000, 48000, integer=True), 22050),
            "seed": (_num(0, None, integer=True), 0),
        },
    },
    "features": {
        "kind": (_str(FEATURE_KINDS), "auto"),  # auto: logmel for audio, table or image otherwise
        "image_size": (_num(8, 1024, integer=True), 128),
        "sample_rate": (_num(4000, 96000, integer=True), 22050),
        "clip_seconds": (_num(0.5, 60.0), 3.0),
        "clip_overlap": (_num(0.0, 0.9), 0.5),
        "n_fft": (_num(64, 16384, integer=True), 1024),
        "hop_length": (_num(16, 8192, integer=True), 512),
        "n_mels": (_num(8, 512, integer=True), 64),
        "f_min": (_num(0.0, None), 0.0),
        "f_max": (_optional(_num(0.0, None, lo_open=True)), None),
        "cache_dir": (_str(optional=True), None),  # default: <results_dir>/cache
        "batch_files": (_num(1, 4096, integer=True), 8),
        # A longer song is represented by this many clips spread evenly over it, and only those
        # stretches are decoded: memory stays bounded on 20-minute files. null: every clip.
        "max_clips_per_song": (_optional(_num(1, 100000, integer=True)), 40),
    },
    "model": {
        "name": (_str(MODEL_NAMES), "cnn2d"),
        "params": ("params", {}),
    },
    "train": {
        "optimizer": (_searchable(_str(OPTIMIZERS)), "adamw"),
        "lr": (_searchable(_num(0.0, 10.0, lo_open=True)), 1e-3),
        "weight_decay": (_searchable(_num(0.0, 1.0)), 0.0),
        "momentum": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.9),
        "imbalance": (_searchable(_str(IMBALANCE)), "class_weight"),
        "batch_size": (_searchable(_num(1, 4096, integer=True)), 32),
        "epochs": (_searchable(_num(1, 1000, integer=True)), 10),
        "seed": (_num(0, None, integer=True), 0),
    },
    "split": {
        "val_fraction": (_num(0.0, 0.5, lo_open=True, hi_open=True), 0.15),
        "test_fraction": (_num(0.0, 0.5, lo_open=True, hi_open=True), 0.2),
        # k-fold cross-validation over the non-test songs: the objective is the mean over folds
        "folds": (_optional(_num(2, 20, integer=True)), None),
        "seed": (_num(0, None, integer=True), 0),
    },
    "search": {
        "num_samples": (_num(1, 100000, integer=True), 12),
        "max_concurrent": (_num(1, 1024, integer=True), 2),
        "grace_period": (_num(1, 1000, integer=True), 2),
        "reduction_factor": (_num(1.0, 100.0, lo_open=True), 3.0),
        "max_epochs": (_num(1, 1000, integer=True), 10),
        "metric": (_str(tuple(METRICS)), OBJECTIVE),
        "seed": (_num(0, None, integer=True), 0),
        "storage_path": (_str(optional=True), None),  # default: <results_dir>/ray
        "time_budget_s": (_optional(_num(1.0, None)), None),
    },
    "resources": {
        "cpu": (_num(0.0, 1024.0, lo_open=True), 1.0),
        "gpu": (_num(0.0, 64.0), 0.0),
    },
    "tracking": {
        "uri": (_str(optional=True), None),
        "experiment": (_str(optional=True), None),
        "registered_model": (_str(optional=True), None),
    },
    "output": {
        "results_dir": (_str(), "results"),
    },
}

# Searchable hyperparameters of each model, checked the same way as the rest of the file.
_MODEL_PARAMS: dict[str, dict[str, tuple[Checker, Any]]] = {
    "cnn2d": {
        "depth": (_searchable(_num(1, 6, integer=True)), 3),
        "width": (_searchable(_num(4, 256, integer=True)), 16),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
        "batch_norm": (_searchable(_bool), True),
    },
    "mlp": {
        "layers": (_searchable(_num(1, 8, integer=True)), 2),
        "hidden": (_searchable(_num(8, 8192, integer=True)), 128),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
        "batch_norm": (_searchable(_bool), True),
    },
    "crnn": {
        "conv_depth": (_searchable(_num(1, 5, integer=True)), 3),
        "width": (_searchable(_num(4, 128, integer=True)), 16),
        "rnn_hidden": (_searchable(_num(8, 512, integer=True)), 64),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
        "batch_norm": (_searchable(_bool), True),
    },
    "bilstm": {
        "hidden": (_searchable(_num(8, 512, integer=True)), 64),
        "layers": (_searchable(_num(1, 4, integer=True)), 1),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
    },
    "cnn1d": {
        "depth": (_searchable(_num(1, 6, integer=True)), 3),
        "width": (_searchable(_num(4, 256, integer=True)), 32),
        "kernel": (_searchable(_num(1, 15, integer=True)), 5),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
        "batch_norm": (_searchable(_bool), True),
    },
    "resnet": {
        "stages": (_searchable(_num(1, 4, integer=True)), 3),
        "width": (_searchable(_num(4, 128, integer=True)), 16),
        "blocks_per_stage": (_searchable(_num(1, 2, integer=True)), 1),
        "dropout": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2),
    },
}


_TASK_KEYS = ("name", "classes", "merge", "positive", "negative", "min_songs")


def _tasks(raw: Any, file: str, default_name: str) -> list[dict[str, Any]]:
    """Check ``tasks:``; without it the search has one task over all classes, named ``task``."""
    if raw is None:
        return [{"name": default_name, "classes": [], "merge": {}, "positive": None, "negative": "the world",
                 "min_songs": 3}]
    if not isinstance(raw, list) or not raw:
        raise _err(file, "tasks", "must be a non-empty list of task mappings", raw)
    out, names = [], set()
    for i, task in enumerate(raw):
        where = f"tasks[{i}]"
        if not isinstance(task, dict):
            raise _err(file, where, "must be a mapping with at least a name", task)
        unknown = sorted(set(task) - set(_TASK_KEYS))
        if unknown:
            raise _err(file, f"{where}.{unknown[0]}", f"unknown key (valid: {', '.join(_TASK_KEYS)})",
                       task[unknown[0]])
        checks: dict[str, tuple[Checker, Any]] = {
            "name": (_str(), None), "classes": (_str_list, []), "positive": (_str(optional=True), None),
            "negative": (_str(), "the world"), "min_songs": (_num(1, None, integer=True), 3),
        }
        clean: dict[str, Any] = {}
        for key, (checker, default) in checks.items():
            if key not in task:
                if key == "name":
                    raise _err(file, f"{where}.name", "is required", None)
                clean[key] = default
                continue
            try:
                clean[key] = checker(task[key])
            except _Bad as bad:
                raise _err(file, f"{where}.{key}", bad.rule, task[key]) from None
        merge = task.get("merge") or {}
        if not isinstance(merge, dict):
            raise _err(file, f"{where}.merge", "must map a class to a list of raw labels", merge)
        for target, sources in merge.items():
            try:
                _str_list(sources)
            except _Bad as bad:
                raise _err(file, f"{where}.merge.{target}", bad.rule, sources) from None
        clean["merge"] = {str(k): list(v) for k, v in merge.items()}
        if clean["positive"] and (clean["classes"] or clean["merge"]):
            raise _err(file, f"{where}.positive", "cannot be combined with classes or merge", clean["positive"])
        if clean["name"] in names:
            raise _err(file, f"{where}.name", "must be unique among tasks", clean["name"])
        names.add(clean["name"])
        out.append(clean)
    return out


@dataclass
class SearchConfig:
    """A validated search space. Sections are plain dicts with every default filled in."""

    source_file: str
    name: str
    task: str
    tasks: list[dict[str, Any]]
    data: dict[str, Any]
    features: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    split: dict[str, Any]
    search: dict[str, Any]
    resources: dict[str, Any]
    tracking: dict[str, Any]
    output: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def mode(self) -> str:
        """``max`` or ``min`` for the configured metric."""
        return METRICS[self.search["metric"]]

    def searchable(self) -> dict[str, Any]:
        """Flat ``section.key -> value`` of everything a trial may vary (Dist or constant)."""
        out: dict[str, Any] = {}
        for key, value in self.train.items():
            if key != "seed":
                out[f"train.{key}"] = value
        for key, value in self.model["params"].items():
            out[f"model.{key}"] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain YAML-able data (distributions back in their YAML form)."""

        def plain(v: Any) -> Any:
            if isinstance(v, Dist):
                return {v.kind: list(v.args)}
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            return v

        keys = ("name", "task", "tasks", "data", "features", "model", "train", "split", "search", "resources",
                "tracking", "output")
        return {k: plain(getattr(self, k)) for k in keys}

    def feature_settings(self) -> dict[str, Any]:
        """The settings that decide feature values (the cache key), without where it lives."""
        return {k: v for k, v in self.features.items() if k not in ("cache_dir", "batch_files")}


def _apply(schema: dict[str, Any], given: Any, file: str, prefix: str) -> dict[str, Any]:
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise _err(file, prefix.rstrip(".") or "<top>", "must be a mapping", _type_name(given))
    unknown = sorted(set(given) - set(schema))
    if unknown:
        key = unknown[0]
        raise _err(file, f"{prefix}{key}", f"unknown key (valid: {', '.join(schema)})", given[key])
    out: dict[str, Any] = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _apply(spec, given.get(key), file, f"{prefix}{key}.")
            continue
        checker, default = spec
        if checker in ("params", "tasks"):  # checked once the rest is known
            out[key] = given.get(key, default)
            continue
        value = given.get(key, default)
        try:
            out[key] = checker(value) if key in given else copy.deepcopy(default)
        except _Bad as bad:
            shown = value if bad.value is _UNSET else bad.value
            raise _err(file, f"{prefix}{key}", bad.rule, shown) from None
    return out


def _check_data(clean: dict[str, Any], file: str) -> None:
    """Paths exist, and source, feature kind and model fit together."""
    data, f, model = clean["data"], clean["features"], clean["model"]
    source = data["source"]
    gives = SOURCES[source]
    if f["kind"] == "auto":
        f["kind"] = "logmel" if gives == "audio" else gives
    elif (gives == "audio") != (f["kind"] in AUDIO_KINDS) or (gives != "audio" and f["kind"] != gives):
        raise _err(file, "features.kind", f"does not fit data.source {source} (use auto)", f["kind"])
    wants_dir = source in ("folder", "tags", "images")
    if source != "demo":
        if not data["path"]:
            what = "folder" if wants_dir else "file"
            raise _err(file, "data.path", f"is required when data.source is {source} (a {what})", None)
        path = Path(data["path"]).expanduser()
        if wants_dir and not path.is_dir():
            raise _err(file, "data.path", "must be an existing folder", str(path))
        if not wants_dir and not path.is_file():
            raise _err(file, "data.path", f"must be an existing file for data.source {source}", str(path))
    if source == "fma" and not (data["audio_dir"] and Path(data["audio_dir"]).expanduser().is_dir()):
        raise _err(file, "data.audio_dir", "must be the existing fma audio folder (000/000002.mp3 ...)",
                   data["audio_dir"])
    for key in ("mapping",):
        if data[key] and not Path(data[key]).expanduser().is_file():
            raise _err(file, f"data.{key}", "must be an existing file", data[key])
    ndim = _FEATURE_NDIM[f["kind"]]
    if ndim not in INPUT_NDIM[model["name"]]:
        fits = [m for m, dims in INPUT_NDIM.items() if ndim in dims]
        raise _err(file, "model.name", f"does not take {f['kind']} features (models that do: {', '.join(fits)})",
                   model["name"])


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
    clean = _apply(_SCHEMA, raw, source_file, "")
    model = clean["model"]
    params_schema = {k: v for k, v in _MODEL_PARAMS[model["name"]].items()}
    model["params"] = _apply(params_schema, model["params"], source_file, "model.params.")
    s = clean["search"]  # train.epochs above search.max_epochs is capped to it, not refused
    if s["grace_period"] > s["max_epochs"]:
        raise _err(source_file, "search.grace_period",
                   f"must be <= search.max_epochs ({s['max_epochs']})", s["grace_period"])
    gpu = clean["resources"]["gpu"]
    if gpu > 1 and gpu != int(gpu):
        raise _err(source_file, "resources.gpu", "must be a fraction <= 1 or a whole number", gpu)
    f = clean["features"]
    if f["hop_length"] > f["n_fft"]:
        raise _err(source_file, "features.hop_length", f"must be <= features.n_fft ({f['n_fft']})",
                   f["hop_length"])
    if f["f_max"] is not None and f["f_max"] > f["sample_rate"] / 2:
        raise _err(source_file, "features.f_max",
                   f"must be <= sample_rate / 2 ({f['sample_rate'] / 2:g})", f["f_max"])
    frames = int(f["clip_seconds"] * f["sample_rate"]) // f["hop_length"]
    if frames < 8:
        raise _err(source_file, "features.clip_seconds",
                   "gives fewer than 8 frames at this hop_length", f["clip_seconds"])
    _check_data(clean, source_file)
    clean["tasks"] = _tasks(clean["tasks"], source_file, clean["task"])
    name = clean.pop("name") or Path(source_file).stem
    return SearchConfig(source_file=source_file, name=name, raw=copy.deepcopy(raw), **clean)


#: ``--smoke``: the same search space shrunk to a run of seconds (tiny demo data, 2 trials, 1 epoch).
SMOKE_OVERRIDES: dict[str, Any] = {
    "data.demo.genres": 3, "data.demo.songs_per_genre": 5, "data.demo.seconds": 4.0,
    "features.max_clips_per_song": 3, "train.epochs": 1, "search.num_samples": 2,
    "search.max_concurrent": 2, "search.max_epochs": 1, "search.grace_period": 1,
    "search.time_budget_s": None,
}


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
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read the file ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{file}: not valid YAML at {where}: {problem}") from None
    if raw is None:
        raw = {}
    overrides = dict(overrides or {})
    if isinstance(raw, dict) and "search.max_epochs" in overrides and "search.grace_period" not in overrides:
        # --max-epochs below the YAML's grace period shortens the grace period with it.
        grace = (raw.get("search") or {}).get("grace_period", _SCHEMA["search"]["grace_period"][1])
        if isinstance(grace, int) and isinstance(overrides["search.max_epochs"], int):
            overrides["search.grace_period"] = min(grace, overrides["search.max_epochs"])
    if isinstance(raw, dict):
        for dotted, value in overrides.items():
            node = raw
            *parents, leaf = dotted.split(".")
            for part in parents:
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[leaf] = value
    return parse_config(raw, file)
