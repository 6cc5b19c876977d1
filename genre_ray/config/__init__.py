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

from genre_ray.config.checks import (
    _UNSET,
    Checker,
    ConfigError,
    Dist,
    _Bad,
    _bool,
    _err,
    _num,
    _optional,
    _searchable,
    _str,
    _str_list,
    _type_name,
)
from genre_ray.features import pretrained  # the catalogue only: no torch
from genre_ray.models import CLASSICAL, FAMILY, REGISTRY, accepts  # names only: no torch
from genre_ray.storage import is_uri

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

def _folds(v: Any) -> Any:
    """``split.folds``: ``auto``, null (one validation split) or k in [2, 20]."""
    if v is None or v == "auto":
        return v
    try:
        return _num(2, 20, integer=True)(v)
    except _Bad:
        raise _Bad("must be auto, null (one validation split) or an integer in [2, 20]") from None


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

MODEL_NAMES = (*REGISTRY, *CLASSICAL)
#: data.source -> the feature kind it gives ("audio": any audio feature kind)
SOURCES = {"demo": "audio", "folder": "audio", "tags": "audio", "csv": "audio", "fma": "audio",
           "table": "table", "images": "image"}
#: Feature kinds computed from audio; each is a cached variant (see genre_ray.features).
AUDIO_KINDS = tuple(k for k in FAMILY if k not in ("table", "image"))
FEATURE_KINDS = ("auto", *AUDIO_KINDS, "table", "image")
OPTIMIZERS = ("adam", "adamw", "sgd")
IMBALANCE = ("none", "class_weight", "balanced_sampling")
SCHEDULES = ("none", "cosine", "onecycle", "plateau")
#: Clip -> song aggregation: mean probability, majority vote, max probability, or a GRU/LSTM
#: trained over the sequence of a song's clip embeddings.
AGGREGATIONS = ("mean", "vote", "max", "gru", "lstm")
LEARNED_AGGREGATIONS = ("gru", "lstm")
#: Train settings a classical (scikit-learn) model uses; the rest only shape neural training.
CLASSICAL_TRAIN_KEYS = ("imbalance", "aggregation")


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
        "truncated": (_str(("keep", "skip")), "keep"),  # a file that ends before its header says
        "demo": {
            "genres": (_num(2, 10, integer=True), 8),
            "songs_per_genre": (_num(3, 1000, integer=True), 24),
            "seconds": (_num(3.0, 120.0), 10.0),
            "sample_rate": (_num(8000, 48000, integer=True), 22050),
            "seed": (_num(0, None, integer=True), 0),
        },
    },
    "features": {
        # auto: logmel for audio, table or image otherwise; {choice: [...]}: a searched variant
        "kind": (_searchable(_str(FEATURE_KINDS)), "auto"),
        "image_size": (_num(8, 1024, integer=True), 128),
        "sample_rate": (_num(4000, 96000, integer=True), 22050),
        "clip_seconds": (_num(0.5, 60.0), 3.0),
        "clip_overlap": (_num(0.0, 0.9), 0.5),
        "n_fft": (_num(64, 16384, integer=True), 1024),
        "hop_length": (_num(16, 8192, integer=True), 512),
        "n_mels": (_num(8, 512, integer=True), 64),
        "f_min": (_num(0.0, None), 0.0),
        "f_max": (_optional(_num(0.0, None, lo_open=True)), None),
        "n_mfcc": (_num(4, 128, integer=True), 20),
        "mfcc_deltas": (_num(0, 2, integer=True), 0),  # 1: + deltas, 2: + deltas and delta-deltas
        "n_contrast_bands": (_num(1, 8, integer=True), 6),
        "waveform_rate": (_num(1000, 48000, integer=True), 8000),  # raw waveform kind: resampled to this
        # pretrained kinds (musicnn_msd, ...): which layer, and how a clip's 3-s patches are pooled
        "embedding_layer": (_str(pretrained.LAYERS), "all"),
        "embedding_pool": (_str(pretrained.POOLS), "mean"),
        "cache_dir": (_str(optional=True), None),  # default: <results_dir>/cache
        "batch_files": (_num(1, 4096, integer=True), 8),
        # A longer song is represented by this many clips spread evenly over it, and only those
        # stretches are decoded: memory stays bounded on 20-minute files. null: every clip.
        "max_clips_per_song": (_optional(_num(1, 100000, integer=True)), 40),
    },
    "model": {
        "name": (_searchable(_str(MODEL_NAMES)), "cnn2d"),
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
        "schedule": (_searchable(_str(SCHEDULES)), "none"),
        "label_smoothing": (_searchable(_num(0.0, 0.5, hi_open=True)), 0.0),
        "patience": (_searchable(_num(0, 1000, integer=True)), 0),  # epochs without progress; 0: off
        "aggregation": (_searchable(_str(AGGREGATIONS)), "mean"),
        # Augmentation (0 turns each off): SpecAugment mask widths as a fraction of the bins and
        # frames, mixup's alpha, random gain in dB (dB features and waveforms), circular time shift
        # as a fraction of the clip.
        "freq_mask": (_searchable(_num(0.0, 0.5)), 0.0),
        "time_mask": (_searchable(_num(0.0, 0.5)), 0.0),
        "mixup": (_searchable(_num(0.0, 10.0)), 0.0),
        "gain_db": (_searchable(_num(0.0, 24.0)), 0.0),
        "time_shift": (_searchable(_num(0.0, 1.0, hi_open=True)), 0.0),
        "seed": (_num(0, None, integer=True), 0),
    },
    "split": {
        "val_fraction": (_num(0.0, 0.5, lo_open=True, hi_open=True), 0.15),
        "test_fraction": (_num(0.0, 0.5, lo_open=True, hi_open=True), 0.2),
        # k-fold cross-validation over the non-test songs: the objective is the mean over folds.
        # auto: 5 folds when fewer than AUTO_FOLDS_BELOW songs are outside the test split (bench folds)
        "folds": (_folds, "auto"),
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
        # train the winning configuration again on every non-test song before the test is scored
        "refit": (_bool, True),
        # the Optuna sampler, and its random start-up trials (null: a fifth of num_samples, at least 3)
        "sampler": (_str(("tpe", "random", "cmaes", "gp")), "tpe"),
        "startup_trials": (_optional(_num(0, 100000, integer=True)), None),
        # greedy ensemble selection over this many best trials' out-of-fold song probabilities
        # (registered when it beats the best trial on validation; 0 or 1: no ensemble)
        "ensemble": (_num(0, 100, integer=True), 8),
        "ensemble_rounds": (_num(1, 1000, integer=True), 25),
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

def _int(lo: int, hi: int) -> Checker:
    """A searchable integer in [lo, hi]."""
    return _searchable(_num(lo, hi, integer=True))


_DROPOUT = (_searchable(_num(0.0, 1.0, hi_open=True)), 0.2)
_BATCH_NORM = (_searchable(_bool), True)

# Searchable hyperparameters of each model, checked the same way as the rest of the file.
_MODEL_PARAMS: dict[str, dict[str, tuple[Checker, Any]]] = {
    "cnn2d": {"depth": (_int(1, 6), 3), "width": (_int(4, 256), 16), "dropout": _DROPOUT,
        "batch_norm": _BATCH_NORM},
    "mlp": {"layers": (_int(1, 8), 2), "hidden": (_int(8, 8192), 128), "dropout": _DROPOUT,
        "batch_norm": _BATCH_NORM},
    "crnn": {"conv_depth": (_int(1, 5), 3), "width": (_int(4, 128), 16), "rnn_hidden": (_int(8, 512), 64),
        "dropout": _DROPOUT, "batch_norm": _BATCH_NORM},
    "bilstm": {"hidden": (_int(8, 512), 64), "layers": (_int(1, 4), 1), "dropout": _DROPOUT},
    "cnn1d": {"depth": (_int(1, 6), 3), "width": (_int(4, 256), 32), "kernel": (_int(1, 15), 5),
        "dropout": _DROPOUT, "batch_norm": _BATCH_NORM},
    "resnet": {"stages": (_int(1, 4), 3), "width": (_int(4, 128), 16), "blocks_per_stage": (_int(1, 2), 1),
        "dropout": _DROPOUT},
    "wavenet": {"channels": (_int(4, 128), 16), "layers": (_int(1, 12), 6), "stacks": (_int(1, 4), 1),
        "downsample": (_int(1, 64), 4), "dropout": _DROPOUT},
    "combined": {"width": (_int(4, 128), 8), "conv_depth": (_int(1, 5), 2),
        "rnn_hidden": (_int(8, 512), 32), "dropout": _DROPOUT},
    "pretrained": {"backbone": (_searchable(_str(tuple(pretrained.NETWORKS))), "musicnn_msd"),
        "finetune": (_searchable(_str(("frozen", "last", "all"))), "last"), "dropout": (_DROPOUT[0], 0.3)},
    "svm": {"C": (_searchable(_num(0.0, None, lo_open=True)), 1.0),
        "gamma": (_searchable(_num(0.0, None)), 0.0),  # 0: "scale"
        "kernel": (_searchable(_str(("rbf", "linear", "poly", "sigmoid"))), "rbf")},
    "random_forest": {"n_estimators": (_int(1, 5000), 200),
        "max_depth": (_int(0, 1000), 0),  # 0: unlimited
        "max_features": (_searchable(_num(0.0, 1.0, lo_open=True)), 0.3)},
    "knn": {"n_neighbors": (_int(1, 1000), 5),
        "weights": (_searchable(_str(("uniform", "distance"))), "distance")},
    "logreg": {"C": (_searchable(_num(0.0, None, lo_open=True)), 1.0)},
    "gboost": {"learning_rate": (_searchable(_num(0.0, 1.0, lo_open=True)), 0.1),
        "max_iter": (_int(1, 5000), 100), "max_leaf_nodes": (_int(2, 1024), 31)},
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

    @property
    def model_names(self) -> list[str]:
        """Every model this search may train (one, or the choices of ``model.name``)."""
        name = self.model["name"]
        return list(name.args) if isinstance(name, Dist) else [name]

    @property
    def feature_kinds(self) -> list[str]:
        """Every feature variant this search may use; each is computed and cached once."""
        kind = self.features["kind"]
        return list(kind.args) if isinstance(kind, Dist) else [kind]

    def kinds_for(self, model: str) -> list[str]:
        """The listed feature variants that ``model`` can take, in the YAML's order."""
        return [k for k in self.feature_kinds if accepts(model, k)]

    def searchable(self) -> dict[str, Any]:
        """Flat ``section.key -> value`` of the train settings a trial may vary (Dist or constant)."""
        return {f"train.{key}": value for key, value in self.train.items() if key != "seed"}

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
        """The settings that decide feature values, without where they live (kinds as a list)."""
        return {**{k: v for k, v in self.features.items() if k not in ("cache_dir", "batch_files", "kind")},
                "kinds": self.feature_kinds}


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


def _listed(value: Any) -> list[Any]:
    return list(value.args) if isinstance(value, Dist) else [value]


def _check_kinds(clean: dict[str, Any], file: str) -> None:
    """Feature variants fit the source, and every model can take at least one of them."""
    source, f = clean["data"]["source"], clean["features"]
    gives = SOURCES[source]
    kinds = _listed(f["kind"])
    if isinstance(f["kind"], Dist) and f["kind"].kind != "choice":
        raise _err(file, "features.kind", "can only be searched with {choice: [...]}", f["kind"].args)
    if kinds == ["auto"]:
        f["kind"] = "logmel" if gives == "audio" else gives
        kinds = [f["kind"]]
    for kind in kinds:
        if (gives == "audio") != (kind in AUDIO_KINDS) or (gives != "audio" and kind != gives):
            fits = ", ".join(AUDIO_KINDS) if gives == "audio" else f"{gives} (or auto)"
            raise _err(file, "features.kind",
                       f"{kind} does not fit data.source {source} (kinds that do: {fits})", kind)
    if len(set(kinds)) != len(kinds):
        raise _err(file, "features.kind", "lists a kind twice", kinds)
    model = clean["model"]
    names = _listed(model["name"])
    if len(names) > 1:  # a zoo leaves out the models that take none of the features (e.g. on a table)
        usable = [n for n in names if any(accepts(n, k) for k in kinds)]
        model["left_out"] = [n for n in names if n not in usable]
        if usable and model["left_out"]:
            names = usable
            model["name"] = Dist("choice", tuple(usable)) if len(usable) > 1 else usable[0]
            model["by_model"] = {n: model["by_model"][n] for n in usable}
            model["params"] = model["by_model"] if len(usable) > 1 else model["by_model"][usable[0]]
    for name in names:
        if not any(accepts(name, k) for k in kinds):
            takes = ", ".join(k for k in FAMILY if accepts(name, k))
            fits = ", ".join(m for m in MODEL_NAMES if any(accepts(m, k) for k in kinds))
            raise _err(file, "model.name", f"does not take {' or '.join(kinds)} features "
                       f"(models that do: {fits}; {name} takes: {takes})", name)
    for kind in kinds:
        if not any(accepts(n, kind) for n in names):
            fits = ", ".join(m for m in MODEL_NAMES if accepts(m, kind))
            raise _err(file, "features.kind", f"no listed model takes {kind} (models that do: {fits})", kind)
    t = clean["train"]
    learned = [a for a in _listed(t["aggregation"]) if a in LEARNED_AGGREGATIONS]
    if learned and all(n in CLASSICAL for n in names):
        raise _err(file, "train.aggregation", "gru and lstm need a neural model (classical models: mean, "
                   "vote or max)", learned[0])
    if isinstance(t["aggregation"], Dist) and not set(_listed(t["aggregation"])) - set(LEARNED_AGGREGATIONS) \
            and any(n in CLASSICAL for n in names):
        raise _err(file, "train.aggregation", "must offer mean, vote or max for the classical models",
                   t["aggregation"].args)


def _check_models(clean: dict[str, Any], file: str) -> None:
    """``model.params``: flat for one model; for a searched ``model.name``, one mapping per model."""
    model = clean["model"]
    if isinstance(model["name"], Dist) and model["name"].kind != "choice":
        raise _err(file, "model.name", "can only be searched with {choice: [...]}", model["name"].args)
    names = _listed(model["name"])
    if len(set(names)) != len(names):
        raise _err(file, "model.name", "lists a model twice", names)
    given = model["params"] or {}
    if not isinstance(given, dict):
        raise _err(file, "model.params", "must be a mapping", _type_name(given))
    if len(names) == 1:
        given = {names[0]: given}
    else:
        unknown = sorted(set(given) - set(names))
        if unknown:
            raise _err(file, f"model.params.{unknown[0]}", "must be one of the models in model.name "
                       f"({', '.join(names)}): with several models, params has one mapping per model",
                       given[unknown[0]])
    by_model = {}
    for name in names:
        prefix = "model.params." if len(names) == 1 else f"model.params.{name}."
        by_model[name] = _apply(_MODEL_PARAMS[name], given.get(name), file, prefix)
    model["by_model"] = by_model
    model["params"] = by_model[names[0]] if len(names) == 1 else by_model


def _check_data(clean: dict[str, Any], file: str) -> None:
    """Paths exist, and source, feature kinds and models fit together."""
    data, f = clean["data"], clean["features"]
    source = data["source"]
    wants_dir = source in ("folder", "tags", "images")
    if source != "demo":
        if not data["path"]:
            what = "folder" if wants_dir else "file"
            raise _err(file, "data.path", f"is required when data.source is {source} (a {what})", None)
        path = Path(data["path"]).expanduser()
        if is_uri(data["path"]):  # listed when read: a bucket cannot be checked without its credentials
            if source != "folder":
                raise _err(file, "data.path", "may be a URI (s3://, gs://, file://) only for data.source "
                           "folder", data["path"])
        elif wants_dir and not path.is_dir():
            raise _err(file, "data.path", "must be an existing folder", str(path))
        if not wants_dir and not path.is_file():
            raise _err(file, "data.path", f"must be an existing file for data.source {source}", str(path))
    if source == "fma" and not (data["audio_dir"] and Path(data["audio_dir"]).expanduser().is_dir()):
        raise _err(file, "data.audio_dir", "must be the existing fma audio folder (000/000002.mp3 ...)",
                   data["audio_dir"])
    for key in ("mapping",):
        if data[key] and not Path(data[key]).expanduser().is_file():
            raise _err(file, f"data.{key}", "must be an existing file", data[key])
    _check_kinds(clean, file)
    for kind in _listed(f["kind"]):
        if kind in pretrained.NETWORKS:
            problem = pretrained.layer_error(kind, f["embedding_layer"])
            if problem:
                raise _err(file, "features.embedding_layer", problem, f["embedding_layer"])
        if kind in (*pretrained.NETWORKS, "musicnn_mel"):
            if problem := pretrained.clip_error(f["clip_seconds"]):
                raise _err(file, "features.clip_seconds", f"{problem} for {kind}", f["clip_seconds"])
    top = 200.0 * 2 ** (f["n_contrast_bands"] - 1)  # librosa's lowest band edge is 200 Hz
    if "contrast" in _listed(f["kind"]) and top >= f["sample_rate"] / 2:
        raise _err(file, "features.n_contrast_bands", f"puts the top contrast band ({top:g} Hz) at or above "
                   f"sample_rate / 2 ({f['sample_rate'] / 2:g} Hz); use fewer bands", f["n_contrast_bands"])


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
    _check_models(clean, source_file)
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
    "search.time_budget_s": None, "split.folds": None,
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
