"""The sections of a search space file as typed, frozen dataclasses: each field is a key, with its rule
and default, declared here once.

A section is read by attribute (``cfg.train.lr``). It is also a read-only mapping
(``cfg.train["lr"]``, ``.get``, ``.items()``, ``**section``), which is what the consumers written
for the plain-dict sections still use. A searchable field holds a plain value or a
:class:`~genre_ray.config.checks.Dist`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from functools import cache, partial
from typing import Any, ClassVar, TypeVar

from genre_ray.config.checks import (
    _UNSET,
    Checker,
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
from genre_ray.data.demo import DemoSpec
from genre_ray.features import pretrained  # the catalogue only: no torch
from genre_ray.features.kinds import FEATURE_KINDS, NON_AUDIO_KINDS
from genre_ray.models import model_names

__all__ = ["AGGREGATIONS", "IMBALANCE", "KINDS", "LEARNED_AGGREGATIONS", "METRICS", "OBJECTIVE", "OPTIMIZERS",
           "SCHEDULES", "SOURCES", "Data", "Demo", "Features", "Model", "Output", "Resources", "Search", "Section",
           "Split", "Task", "Tracking", "Train", "parse_fields", "parse_section", "yaml_keys"]

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

#: data.source -> the feature kind it gives ("audio": any audio feature kind)
SOURCES = {"demo": "audio", "folder": "audio", "tags": "audio", "csv": "audio", "fma": "audio",
           "table": "table", "images": "image"}
#: What ``features.kind`` may name: auto, or a kind (genre_ray.features.kinds).
KINDS = ("auto", *FEATURE_KINDS, *NON_AUDIO_KINDS)
OPTIMIZERS = ("adam", "adamw", "sgd")
IMBALANCE = ("none", "class_weight", "balanced_sampling")
SCHEDULES = ("none", "cosine", "onecycle", "plateau")
#: Clip -> song aggregation: mean probability, majority vote, max probability, or a GRU/LSTM
#: trained over the sequence of a song's clip embeddings.
AGGREGATIONS = ("mean", "vote", "max", "gru", "lstm")
LEARNED_AGGREGATIONS = ("gru", "lstm")


def knob(check: Checker, default: Any = None, *, searchable: bool = False, required: bool = False,
         classical: bool = False) -> Any:
    """A key: its checker, its default (not checked), and whether the search may vary it.

    Args:
        check: returns the cleaned value or raises ``_Bad(rule)``.
        default: the value when the key is absent.
        searchable: the value may be a distribution (``{choice: [...]}``, ...).
        required: the key must be given.
        classical: a train setting the classical (scikit-learn) models use too.
    """
    meta = {"check": _searchable(check) if searchable else check, "searchable": searchable,
            "required": required, "classical": classical}
    if isinstance(default, dict | list):
        return field(default_factory=partial(copy.deepcopy, default), metadata=meta)
    return field(default=default, metadata=meta)


def _later(value: Any) -> Any:
    """A key checked once the rest of the file is known (``model.params``, ``tasks``)."""
    return value


def _derived(default: Any = None) -> Any:
    """Not a key of the file: filled in from the others."""
    return field(default_factory=partial(copy.deepcopy, default), metadata={"derived": True})


def _section(cls: type) -> Any:
    return field(default_factory=cls, metadata={"section": cls})


S = TypeVar("S")


@cache
def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


@cache
def yaml_keys(cls: type) -> tuple[str, ...]:
    """The keys a section (or the whole file) takes, in order."""
    return tuple(f.name for f in fields(cls) if "check" in f.metadata or "section" in f.metadata)


class Section(Mapping[str, Any]):
    """A validated section: its fields are its keys, every default filled in."""

    #: fields left out of the mapping view (and of the printed config) while they are None
    _omit_none: ClassVar[tuple[str, ...]] = ()

    def __getitem__(self, key: str) -> Any:
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())

    def _present(self) -> tuple[str, ...]:
        return tuple(n for n in _names(type(self)) if not (n in self._omit_none and getattr(self, n) is None))


def _check_one(f: Field[Any], given: Any, file: str, key: str) -> Any:
    try:
        return f.metadata["check"](given)
    except _Bad as bad:
        where = key + (bad.key if bad.key.startswith("[") else f".{bad.key}") if bad.key else key
        raise _err(file, where, bad.rule, given if bad.value is _UNSET else bad.value) from None


def parse_fields(cls: type, given: Any, file: str, prefix: str) -> dict[str, Any]:
    """Check the keys of ``given`` against the fields of ``cls``: field -> cleaned value (absent keys are left
    to the defaults; sections are parsed whole).

    Raises:
        ConfigError: for a non-mapping, an unknown key, a missing required key or a value its rule refuses.
    """
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise _err(file, prefix.rstrip(".") or "<top>", "must be a mapping", _type_name(given))
    keys = yaml_keys(cls)
    unknown = sorted(set(given) - set(keys), key=str)
    if unknown:
        key = unknown[0]
        raise _err(file, f"{prefix}{key}", f"unknown key (valid: {', '.join(keys)})", given[key])
    out: dict[str, Any] = {}
    for f in fields(cls):
        if "section" in f.metadata:
            out[f.name] = parse_section(f.metadata["section"], given.get(f.name), file, f"{prefix}{f.name}.")
        elif f.name in given and "check" in f.metadata:
            out[f.name] = _check_one(f, given[f.name], file, f"{prefix}{f.name}")
        elif f.metadata.get("required"):
            raise _err(file, f"{prefix}{f.name}", "is required", None)
    return out


def parse_section(cls: type[S], given: Any, file: str, prefix: str) -> S:
    """``given`` (a section of the parsed YAML) as a ``cls``; see :func:`parse_fields`."""
    return cls(**parse_fields(cls, given, file, prefix))


def _merge(v: Any) -> dict[str, list[str]]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise _Bad("must map a class to a list of raw labels")
    for target, sources in v.items():
        try:
            _str_list(sources)
        except _Bad as bad:
            raise _Bad(bad.rule, sources, key=str(target)) from None
    return {str(k): list(x) for k, x in v.items()}


@dataclass(frozen=True)
class Task(Section):
    """One genre task (``tasks:``): which raw labels make which classes."""

    name: str = knob(_str(), required=True)
    classes: list[str] = knob(_str_list, [])
    merge: dict[str, list[str]] = knob(_merge, {})
    positive: str | None = knob(_str(optional=True))
    negative: str = knob(_str(), "the world")
    min_songs: int = knob(_num(1, None, integer=True), 3)


@dataclass(frozen=True)
class Demo(Section):
    """The generated demo collection's size (its defaults are :class:`~genre_ray.data.demo.DemoSpec`'s)."""

    genres: int = knob(_num(2, 10, integer=True), DemoSpec.genres)
    songs_per_genre: int = knob(_num(3, 1000, integer=True), DemoSpec.songs_per_genre)
    seconds: float = knob(_num(3.0, 120.0), DemoSpec.seconds)
    sample_rate: int = knob(_num(8000, 48000, integer=True), DemoSpec.sample_rate)
    seed: int = knob(_num(0, None, integer=True), DemoSpec.seed)


@dataclass(frozen=True)
class Data(Section):
    """Where the songs come from."""

    source: str = knob(_str(tuple(SOURCES)), "demo")
    path: str | None = knob(_str(optional=True))
    mapping: str | None = knob(_str(optional=True))  # tags: YAML mapping raw genre tags to genres
    audio_dir: str | None = knob(_str(optional=True))  # fma: the fma_<size> audio folder
    subset: str | None = knob(_str(("small", "medium", "large", "full"), optional=True))  # fma
    truncated: str = knob(_str(("keep", "skip")), "keep")  # a file that ends before its header says
    demo: Demo = _section(Demo)


@dataclass(frozen=True)
class Features(Section):
    """What is computed from each clip, and where the cache lives."""

    # auto: logmel for audio, table or image otherwise; {choice: [...]}: a searched variant
    kind: str | Dist = knob(_str(KINDS), "auto", searchable=True)
    image_size: int = knob(_num(8, 1024, integer=True), 128)
    sample_rate: int = knob(_num(4000, 96000, integer=True), 22050)
    clip_seconds: float = knob(_num(0.5, 60.0), 3.0)
    clip_overlap: float = knob(_num(0.0, 0.9), 0.5)
    n_fft: int = knob(_num(64, 16384, integer=True), 1024)
    hop_length: int = knob(_num(16, 8192, integer=True), 512)
    n_mels: int = knob(_num(8, 512, integer=True), 64)
    f_min: float = knob(_num(0.0, None), 0.0)
    f_max: float | None = knob(_optional(_num(0.0, None, lo_open=True)))
    n_mfcc: int = knob(_num(4, 128, integer=True), 20)
    mfcc_deltas: int = knob(_num(0, 2, integer=True), 0)  # 1: + deltas, 2: + deltas and delta-deltas
    n_contrast_bands: int = knob(_num(1, 8, integer=True), 6)
    waveform_rate: int = knob(_num(1000, 48000, integer=True), 8000)  # raw waveform kind: resampled to this
    # pretrained kinds (musicnn_msd, ...): which layer, and how a clip's 3-s patches are pooled
    embedding_layer: str = knob(_str(pretrained.LAYERS), "all")
    embedding_pool: str = knob(_str(pretrained.POOLS), "mean")
    cache_dir: str | None = knob(_str(optional=True))  # default: <results_dir>/cache
    batch_files: int = knob(_num(1, 4096, integer=True), 8)
    # A longer song is represented by this many clips spread evenly over it, and only those
    # stretches are decoded: memory stays bounded on 20-minute files. null: every clip.
    max_clips_per_song: int | None = knob(_optional(_num(1, 100000, integer=True)), 40)


def _model_name(v: Any) -> Any:
    return _str(model_names())(v)  # the registry as it is now: a model registered by a plugin or a test


@dataclass(frozen=True)
class Model(Section):
    """Which model(s), and their hyperparameters (checked against each model's spec)."""

    _omit_none: ClassVar[tuple[str, ...]] = ("left_out",)

    name: str | Dist = knob(_model_name, "cnn2d", searchable=True)
    #: one model: its parameters; several (``name: {choice: [...]}``): ``by_model``
    params: dict[str, Any] = knob(_later, {})
    #: model -> its parameters (Dist or constant), every default filled in
    by_model: dict[str, dict[str, Any]] = _derived({})
    #: a zoo: the listed models that take none of the feature kinds (None: one model listed)
    left_out: list[str] | None = _derived(None)


@dataclass(frozen=True)
class Train(Section):
    """How a trial trains; every key but ``seed`` is searchable."""

    optimizer: str | Dist = knob(_str(OPTIMIZERS), "adamw", searchable=True)
    lr: float | Dist = knob(_num(0.0, 10.0, lo_open=True), 1e-3, searchable=True)
    weight_decay: float | Dist = knob(_num(0.0, 1.0), 0.0, searchable=True)
    momentum: float | Dist = knob(_num(0.0, 1.0, hi_open=True), 0.9, searchable=True)
    imbalance: str | Dist = knob(_str(IMBALANCE), "class_weight", searchable=True, classical=True)
    batch_size: int | Dist = knob(_num(1, 4096, integer=True), 32, searchable=True)
    epochs: int | Dist = knob(_num(1, 1000, integer=True), 10, searchable=True)
    schedule: str | Dist = knob(_str(SCHEDULES), "none", searchable=True)
    label_smoothing: float | Dist = knob(_num(0.0, 0.5, hi_open=True), 0.0, searchable=True)
    patience: int | Dist = knob(_num(0, 1000, integer=True), 0, searchable=True)  # epochs without progress; 0: off
    aggregation: str | Dist = knob(_str(AGGREGATIONS), "mean", searchable=True, classical=True)
    # Augmentation (0 turns each off): SpecAugment mask widths as a fraction of the bins and
    # frames, mixup's alpha, random gain in dB (dB features and waveforms), circular time shift
    # as a fraction of the clip.
    freq_mask: float | Dist = knob(_num(0.0, 0.5), 0.0, searchable=True)
    time_mask: float | Dist = knob(_num(0.0, 0.5), 0.0, searchable=True)
    mixup: float | Dist = knob(_num(0.0, 10.0), 0.0, searchable=True)
    gain_db: float | Dist = knob(_num(0.0, 24.0), 0.0, searchable=True)
    time_shift: float | Dist = knob(_num(0.0, 1.0, hi_open=True), 0.0, searchable=True)
    seed: int = knob(_num(0, None, integer=True), 0)


def _folds(v: Any) -> Any:
    """``split.folds``: ``auto``, null (one validation split) or k in [2, 20]."""
    if v is None or v == "auto":
        return v
    try:
        return _num(2, 20, integer=True)(v)
    except _Bad:
        raise _Bad("must be auto, null (one validation split) or an integer in [2, 20]") from None


@dataclass(frozen=True)
class Split(Section):
    """The song-level split: validation, test, folds."""

    val_fraction: float = knob(_num(0.0, 0.5, lo_open=True, hi_open=True), 0.15)
    test_fraction: float = knob(_num(0.0, 0.5, lo_open=True, hi_open=True), 0.2)
    # k-fold cross-validation over the non-test songs: the objective is the mean over folds.
    # auto: 5 folds when fewer than AUTO_FOLDS_BELOW songs are outside the test split (bench folds)
    folds: int | str | None = knob(_folds, "auto")
    seed: int = knob(_num(0, None, integer=True), 0)


@dataclass(frozen=True)
class Search(Section):
    """The study: trials, ASHA, the sampler, the refit and the ensemble."""

    num_samples: int = knob(_num(1, 100000, integer=True), 12)
    max_concurrent: int = knob(_num(1, 1024, integer=True), 2)
    grace_period: int = knob(_num(1, 1000, integer=True), 2)
    reduction_factor: float = knob(_num(1.0, 100.0, lo_open=True), 3.0)
    max_epochs: int = knob(_num(1, 1000, integer=True), 10)
    metric: str = knob(_str(tuple(METRICS)), OBJECTIVE)
    seed: int = knob(_num(0, None, integer=True), 0)
    storage_path: str | None = knob(_str(optional=True))  # default: <results_dir>/ray
    time_budget_s: float | None = knob(_optional(_num(1.0, None)))
    # train the winning configuration again on every non-test song before the test is scored
    refit: bool = knob(_bool, True)
    # the Optuna sampler, and its random start-up trials (null: a fifth of num_samples, at least 3)
    sampler: str = knob(_str(("tpe", "random", "cmaes", "gp")), "tpe")
    startup_trials: int | None = knob(_optional(_num(0, 100000, integer=True)))
    # greedy ensemble selection over this many best trials' out-of-fold song probabilities
    # (registered when it beats the best trial on validation; 0 or 1: no ensemble)
    ensemble: int = knob(_num(0, 100, integer=True), 8)
    ensemble_rounds: int = knob(_num(1, 1000, integer=True), 25)


@dataclass(frozen=True)
class Resources(Section):
    """Each trial's share of a node."""

    cpu: float = knob(_num(0.0, 1024.0, lo_open=True), 1.0)
    gpu: float = knob(_num(0.0, 64.0), 0.0)


@dataclass(frozen=True)
class Tracking(Section):
    """MLflow: where, which experiment, which registered model."""

    uri: str | None = knob(_str(optional=True))
    experiment: str | None = knob(_str(optional=True))
    registered_model: str | None = knob(_str(optional=True))


@dataclass(frozen=True)
class Output(Section):
    """Where results go."""

    results_dir: str = knob(_str(), "results")
