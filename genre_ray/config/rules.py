"""The rules between keys: models and their parameters, feature kinds and sources, paths, tasks.

Each rule reads the typed sections (:mod:`genre_ray.config.schema`) and returns them completed
(``features.kind: auto`` resolved, ``model.by_model`` filled in) or raises the one-line
:class:`~genre_ray.config.checks.ConfigError`. The rule of a feature kind lives with the kinds
(:mod:`genre_ray.features.kinds`, :mod:`genre_ray.features.pretrained`) and the rules of a model's
parameters with the model (:mod:`genre_ray.models.spec`); this module only applies them.
"""

from __future__ import annotations

from dataclasses import make_dataclass, replace
from pathlib import Path
from typing import Any

from genre_ray.config.checks import Dist, _err, _type_name, from_rule
from genre_ray.config.schema import (
    LEARNED_AGGREGATIONS,
    SOURCES,
    Data,
    Features,
    Model,
    Search,
    Task,
    Train,
    knob,
    parse_fields,
    parse_section,
)
from genre_ray.features import pretrained  # the catalogue only: no torch
from genre_ray.features.kinds import AUDIO_KINDS, FAMILY, contrast_error
from genre_ray.models import CLASSICAL, accepts, model_names, spec_of
from genre_ray.storage import is_uri

__all__ = ["check_features", "check_kind_rules", "check_kinds", "check_models", "check_paths", "check_search", "listed",
           "parse_tasks"]


def listed(value: Any) -> list[Any]:
    """The values a key may take: a choice's options, or the one value."""
    return list(value.args) if isinstance(value, Dist) else [value]


def _params(name: str, given: Any, file: str, prefix: str) -> dict[str, Any]:
    """One model's parameters, checked against its spec; its constructor's defaults for the rest."""
    spec = spec_of(name)
    section = make_dataclass(f"{name}_params", [(key, Any, knob(from_rule(rule), spec.defaults[key], searchable=True))
                                                for key, rule in spec.rules.items()])
    return {**spec.defaults, **parse_fields(section, given, file, prefix)}


def check_models(model: Model, file: str) -> Model:
    """``model.params``: flat for one model; for a searched ``model.name``, one mapping per model."""
    if isinstance(model.name, Dist) and model.name.kind != "choice":
        raise _err(file, "model.name", "can only be searched with {choice: [...]}", model.name.args)
    names = listed(model.name)
    if len(set(names)) != len(names):
        raise _err(file, "model.name", "lists a model twice", names)
    given = model.params or {}
    if not isinstance(given, dict):
        raise _err(file, "model.params", "must be a mapping", _type_name(given))
    if len(names) == 1:
        given = {names[0]: given}
    else:
        unknown = sorted(set(given) - set(names), key=str)
        if unknown:
            raise _err(file, f"model.params.{unknown[0]}", "must be one of the models in model.name "
                       f"({', '.join(names)}): with several models, params has one mapping per model",
                       given[unknown[0]])
    one = len(names) == 1
    by_model = {n: _params(n, given.get(n), file, "model.params." if one else f"model.params.{n}.") for n in names}
    return replace(model, by_model=by_model, params=by_model[names[0]] if one else by_model)


def _kind_fits(kind: str, gives: str) -> bool:
    return kind in AUDIO_KINDS if gives == "audio" else kind == gives


def _resolve_kinds(features: Features, source: str, file: str) -> Features:
    """``auto`` resolved; every listed kind fits the source and is listed once."""
    gives = SOURCES[source]
    if isinstance(features.kind, Dist) and features.kind.kind != "choice":
        raise _err(file, "features.kind", "can only be searched with {choice: [...]}", features.kind.args)
    if listed(features.kind) == ["auto"]:
        features = replace(features, kind="logmel" if gives == "audio" else gives)
    kinds = listed(features.kind)
    for kind in kinds:
        if not _kind_fits(kind, gives):
            fits = ", ".join(AUDIO_KINDS) if gives == "audio" else f"{gives} (or auto)"
            raise _err(file, "features.kind", f"{kind} does not fit data.source {source} (kinds that do: {fits})",
                       kind)
    if len(set(kinds)) != len(kinds):
        raise _err(file, "features.kind", "lists a kind twice", kinds)
    return features


def _leave_out(model: Model, kinds: list[str]) -> Model:
    """A zoo leaves out the models that take none of the features (e.g. on a table)."""
    names = listed(model.name)
    if len(names) == 1:
        return model
    usable = [n for n in names if any(accepts(n, k) for k in kinds)]
    left_out = [n for n in names if n not in usable]
    if not (usable and left_out):
        return replace(model, left_out=left_out)
    by_model = {n: model.by_model[n] for n in usable}
    return replace(model, left_out=left_out, by_model=by_model,
                   name=Dist("choice", tuple(usable)) if len(usable) > 1 else usable[0],
                   params=by_model if len(usable) > 1 else by_model[usable[0]])


def check_kinds(data: Data, features: Features, model: Model, train: Train, file: str) -> tuple[Features, Model]:
    """Feature variants fit the source, and every model can take at least one of them."""
    features = _resolve_kinds(features, data.source, file)
    kinds = listed(features.kind)
    model = _leave_out(model, kinds)
    names = listed(model.name)
    for name in names:
        if not any(accepts(name, k) for k in kinds):
            takes = ", ".join(k for k in FAMILY if accepts(name, k))
            fits = ", ".join(m for m in model_names() if any(accepts(m, k) for k in kinds))
            raise _err(file, "model.name", f"does not take {' or '.join(kinds)} features "
                       f"(models that do: {fits}; {name} takes: {takes})", name)
    for kind in kinds:
        if not any(accepts(n, kind) for n in names):
            fits = ", ".join(m for m in model_names() if accepts(m, kind))
            raise _err(file, "features.kind", f"no listed model takes {kind} (models that do: {fits})", kind)
    aggregations = listed(train.aggregation)
    learned = [a for a in aggregations if a in LEARNED_AGGREGATIONS]
    if learned and all(n in CLASSICAL for n in names):
        raise _err(file, "train.aggregation", "gru and lstm need a neural model (classical models: mean, "
                   "vote or max)", learned[0])
    if isinstance(train.aggregation, Dist) and not set(aggregations) - set(LEARNED_AGGREGATIONS) \
            and any(n in CLASSICAL for n in names):
        raise _err(file, "train.aggregation", "must offer mean, vote or max for the classical models",
                   train.aggregation.args)
    return features, model


def check_features(f: Features, file: str) -> None:
    """The STFT settings fit together and the sample rate, and each kind's own rules hold."""
    if f.hop_length > f.n_fft:
        raise _err(file, "features.hop_length", f"must be <= features.n_fft ({f.n_fft})", f.hop_length)
    if f.f_max is not None and f.f_max > f.sample_rate / 2:
        raise _err(file, "features.f_max", f"must be <= sample_rate / 2 ({f.sample_rate / 2:g})", f.f_max)
    if int(f.clip_seconds * f.sample_rate) // f.hop_length < 8:
        raise _err(file, "features.clip_seconds", "gives fewer than 8 frames at this hop_length", f.clip_seconds)


def check_kind_rules(f: Features, file: str) -> None:
    """The rules of the listed kinds: a pretrained network's layers and clip length, contrast's bands."""
    for kind in listed(f.kind):
        if kind in pretrained.NETWORKS and (problem := pretrained.layer_error(kind, f.embedding_layer)):
            raise _err(file, "features.embedding_layer", problem, f.embedding_layer)
        if kind in (*pretrained.NETWORKS, "musicnn_mel") and (problem := pretrained.clip_error(f.clip_seconds)):
            raise _err(file, "features.clip_seconds", f"{problem} for {kind}", f.clip_seconds)
        if kind == "contrast" and (problem := contrast_error(f.n_contrast_bands, f.sample_rate)):
            raise _err(file, "features.n_contrast_bands", problem, f.n_contrast_bands)


def check_search(search: Search, gpu: float, file: str) -> None:
    """ASHA's grace period fits its epochs (train.epochs above max_epochs is capped, not refused); GPU shares."""
    if search.grace_period > search.max_epochs:
        raise _err(file, "search.grace_period", f"must be <= search.max_epochs ({search.max_epochs})",
                   search.grace_period)
    if gpu > 1 and gpu != int(gpu):
        raise _err(file, "resources.gpu", "must be a fraction <= 1 or a whole number", gpu)


def check_paths(data: Data, file: str) -> None:
    """The paths a source needs are given and exist (a URI is listed when read)."""
    source = data.source
    wants_dir = source in ("folder", "tags", "images")
    if source != "demo":
        if not data.path:
            what = "folder" if wants_dir else "file"
            raise _err(file, "data.path", f"is required when data.source is {source} (a {what})", None)
        path = Path(data.path).expanduser()
        if is_uri(data.path):  # a bucket cannot be checked without its credentials
            if source != "folder":
                raise _err(file, "data.path", "may be a URI (s3://, gs://, file://) only for data.source folder",
                           data.path)
        elif wants_dir and not path.is_dir():
            raise _err(file, "data.path", "must be an existing folder", str(path))
        if not wants_dir and not path.is_file():
            raise _err(file, "data.path", f"must be an existing file for data.source {source}", str(path))
    if source == "fma" and not (data.audio_dir and Path(data.audio_dir).expanduser().is_dir()):
        raise _err(file, "data.audio_dir", "must be the existing fma audio folder (000/000002.mp3 ...)",
                   data.audio_dir)
    if data.mapping and not Path(data.mapping).expanduser().is_file():
        raise _err(file, "data.mapping", "must be an existing file", data.mapping)


def parse_tasks(raw: Any, file: str, default_name: str) -> list[Task]:
    """``tasks:``; without it the search has one task over all classes, named ``task``."""
    if raw is None:
        return [Task(name=default_name)]
    if not isinstance(raw, list) or not raw:
        raise _err(file, "tasks", "must be a non-empty list of task mappings", raw)
    out: list[Task] = []
    for i, given in enumerate(raw):
        where = f"tasks[{i}]"
        if not isinstance(given, dict):
            raise _err(file, where, "must be a mapping with at least a name", given)
        task = parse_section(Task, given, file, f"{where}.")
        if task.positive and (task.classes or task.merge):
            raise _err(file, f"{where}.positive", "cannot be combined with classes or merge", task.positive)
        if task.name in {t.name for t in out}:
            raise _err(file, f"{where}.name", "must be unique among tasks", task.name)
        out.append(task)
    return out

