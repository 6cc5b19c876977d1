"""A trained model with all that prediction needs: audio files or waveforms in, genres out.

:class:`SongClassifier` holds a trained model (a :class:`~genre_ray.training.wrappers.Standardized` network, a
fold :class:`~genre_ray.training.wrappers.Ensemble` or a
:class:`~genre_ray.training.wrappers.ClassicalModel`), the feature
settings, the class names, the song aggregation (the learned GRU/LSTM included) and where it came
from (split, feature cache, task, test score). It turns audio files or waveforms at any sample rate
into per-song genre probabilities and a per-clip timeline.

This module imports neither MLflow nor Ray: :mod:`genre_ray.serving` wraps the classifier as the
registered MLflow pyfunc model, and the actors of :mod:`genre_ray.tag` load it directly from a
folder written by :meth:`SongClassifier.save`, without paying for MLflow's import.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from genre_ray._legacy import old_module_paths
from genre_ray.data.audio import AudioError, clip_bounds, cut_clips, decode_clips, downmix, resample
from genre_ray.features import FeatureSettings

__all__ = ["ENSEMBLE_KIND", "NON_AUDIO_KINDS", "EnsembleClassifier", "ServingError", "SongClassifier"]

NON_AUDIO_KINDS = ("table", "image")  # features read from the source, not computed from audio
ENSEMBLE_KIND = "ensemble"  # the kind in meta.json of an EnsembleClassifier's folder
META_FILE, _TORCH_FILE, _SKLEARN_FILE = "meta.json", "model.pt", "model.joblib"
_BATCH_FILES = 16  # files whose clips share one forward pass in predict_batch


class ServingError(RuntimeError):
    """A model that cannot be loaded or cannot take the input; the message says which and why."""


def _spread(n: int, max_clips: int | None) -> np.ndarray:
    """Indices of the clips a song keeps: all, or ``max_clips`` evenly spread (decode_clips' rule)."""
    if max_clips is None or n <= max_clips:
        return np.arange(n)
    return np.linspace(0, n - 1, max_clips).round().astype(int)


class SongClassifier:
    """A trained model with everything it needs to classify songs.

    Args:
        model: the trained model; a torch module that outputs probabilities or logits, or a
            :class:`~genre_ray.training.wrappers.ClassicalModel`.
        classes: the class names, in the model's output order.
        kind: the feature kind the model takes (``logmel``, ``mfcc``, ``stats``, ... or
            ``table``/``image``).
        settings: the feature settings of the training features (``None`` for ``table``/``image``).
        aggregation: the clip -> song aggregation (``mean``, ``vote``, ``max``, ``gru``, ``lstm``);
            the model itself applies it, this is its name for people and tags.
        info: provenance: ``split_id``, ``feature_cache_key``, ``model``, ``task``, ``test_song_acc``...
        input_shape: the shape of one clip's features.
    """

    def __init__(self, model: Any, classes: list[str], kind: str, settings: FeatureSettings | None = None,
                 aggregation: str = "mean", info: dict[str, Any] | None = None,
                 input_shape: tuple[int, ...] | None = None) -> None:
        if kind not in NON_AUDIO_KINDS and settings is None:
            raise ValueError(f"a {kind} model needs its feature settings")
        self.model = model
        self.classes = list(classes)
        self.kind = kind
        self.settings = settings
        self.aggregation = aggregation
        self.info = dict(info or {})
        if input_shape is None and settings is not None:
            input_shape = settings.shape(kind)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.device = torch.device("cpu")
        if isinstance(model, torch.nn.Module):
            model.eval()

    @property
    def audio(self) -> bool:
        """Whether the model classifies audio (else it takes feature rows)."""
        return self.kind not in NON_AUDIO_KINDS

    def to(self, device: str | torch.device) -> SongClassifier:
        """Run the network on ``device`` (a classical model stays on the CPU)."""
        self.device = torch.device(device)
        if isinstance(self.model, torch.nn.Module):
            self.model.to(self.device)
        return self

    # ---------------------------------------------------------------------------- audio -> clips
    def _audio_settings(self) -> FeatureSettings:
        if self.settings is None:
            raise ServingError(f"this model takes {self.kind} feature rows, not audio; pass an array of "
                               f"shape (n, {', '.join(map(str, self.input_shape or ()))})")
        return self.settings

    def _hop_seconds(self) -> float:
        s = self._audio_settings()
        return max(1, int(round(s.clip_samples * (1.0 - s.clip_overlap)))) / s.sample_rate

    def file_clips(self, path: str | Path) -> tuple[np.ndarray, np.ndarray]:
        """A file's clips as the model was trained on them, and their start times in seconds.

        Raises:
            AudioError: when the file cannot be decoded or holds no usable audio.
        """
        s = self._audio_settings()
        clips = decode_clips(str(path), s.sample_rate, s.clip_samples, s.clip_overlap, s.max_clips_per_song)
        idx = np.arange(len(clips))
        if s.max_clips_per_song is not None and len(clips) >= s.max_clips_per_song:
            # Capped: the clips are spread over the song; only then is the header read again for their times.
            import soundfile as sf

            info = sf.info(str(path))
            total = len(clip_bounds(int(info.frames * s.sample_rate / info.samplerate), s.clip_samples,
                                    s.clip_overlap))
            idx = _spread(total, s.max_clips_per_song)
        return clips, idx * self._hop_seconds()

    def waveform_clips(self, wave: Any, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Clips of a waveform (mono, or ``(samples, channels)``/``(channels, samples)``) at any rate.

        Raises:
            ValueError: for an empty waveform, non-finite samples or a non-positive rate.
        """
        s = self._audio_settings()
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim == 2:  # channels are the short axis
            x = downmix(x, axis=int(np.argmin(x.shape)))
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"waveform must be a non-empty 1-D array of samples, got shape {np.shape(wave)}")
        if not np.isfinite(x).all():
            raise ValueError("waveform has NaN or infinite samples")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        x = resample(x, int(sample_rate), s.sample_rate)  # the decoder's resampler
        clips = cut_clips(x, s.clip_samples, s.clip_overlap)
        idx = _spread(len(clips), s.max_clips_per_song)
        return clips[idx], idx * self._hop_seconds()

    def features(self, clips: np.ndarray) -> np.ndarray:
        """Waveform clips ``(n, clip_samples)`` at the model's rate -> its features ``(n, *shape)``."""
        from genre_ray.features.pipeline import clip_features  # numpy/pyarrow only: no Ray at import

        return clip_features(np.asarray(clips, dtype=np.float32), self._audio_settings())[self.kind]

    # ---------------------------------------------------------------------------- prediction
    def predict_songs(self, x: np.ndarray, clip_song: np.ndarray,
                      n_songs: int) -> tuple[np.ndarray, np.ndarray]:
        """Features of the clips of several songs -> ``(clip probabilities (n, C), song probabilities
        (n_songs, C))``, with the model's own song aggregation (the learned GRU/LSTM included)."""
        from genre_ray.training.inference import song_probabilities

        clip, song = song_probabilities(self.model, np.ascontiguousarray(x, dtype=np.float32),
                                        np.asarray(clip_song, dtype=np.int64), n_songs, self.device)
        return clip.astype(np.float64), song.astype(np.float64)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, C)`` of independent feature rows (a table or image model's input)."""
        from genre_ray.training.inference import predict_probs

        x = np.asarray(x, dtype=np.float32)
        if self.input_shape is not None:
            x = x.reshape(len(x), *self.input_shape)
        return predict_probs(self.model, x, self.device).astype(np.float64)

    def _predict_clips(self, clips: np.ndarray,
                       starts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        clip_probs, song = self.predict_songs(self.features(clips), np.zeros(len(clips), np.int64), 1)
        return song[0], clip_probs, starts

    def predict_waveform(self, wave: Any, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One song's waveform -> ``(song probabilities (C,), clip probabilities (n, C), starts (s))``."""
        return self._predict_clips(*self.waveform_clips(wave, sample_rate))

    def predict_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One audio file (WAV, MP3, FLAC, OGG, ... at any rate) -> as :meth:`predict_waveform`.

        Raises:
            AudioError: when the file cannot be decoded or holds no usable audio.
        """
        return self._predict_clips(*self.file_clips(path))

    def predict_batch(self, paths: Sequence[str | Path], timeline: bool = False) -> pd.DataFrame:
        """Many files -> one row per song (or per clip with ``timeline``), as the pyfunc model returns.

        A file that cannot be decoded gets ``genre`` None and its reason in ``error``.
        """
        return self.predict_frame(pd.DataFrame({"path": [str(p) for p in paths]}), timeline)

    def predict_frame(self, frame: Any, timeline: bool = False) -> pd.DataFrame:
        """The pyfunc contract: rows with ``path``, or ``waveform`` + ``sample_rate`` -> a DataFrame.

        Song rows: ``row``, ``path``, ``genre``, ``confidence``, ``error``, ``prob_<class>`` per class.
        Timeline rows add ``clip`` and ``start_s`` (a failed file gives one row with its error).
        """
        if not self.audio:
            return self._feature_rows(frame)
        records = _as_frame(frame).to_dict("records")
        rows: list[dict[str, Any]] = []
        for start in range(0, len(records), _BATCH_FILES):  # a batch's clips in memory at a time
            rows += self._rows([self._clips_of(start + i, rec)
                                for i, rec in enumerate(records[start:start + _BATCH_FILES])], timeline)
        columns = ["row", "path", *(["clip", "start_s"] if timeline else []), "genre", "confidence", "error",
                   *(f"prob_{c}" for c in self.classes)]
        return pd.DataFrame(rows, columns=columns)

    def _clips_of(self, i: int, rec: dict[str, Any]) -> tuple[int, str | None, Any]:
        """``(row, path, (clips, starts))`` of one input row, or ``(row, path, the error)``."""
        path = rec.get("path")
        path = None if path is None or (not isinstance(path, (str, Path)) and pd.isna(path)) else str(path)
        try:
            if path is not None:
                return i, path, self.file_clips(path)
            if rec.get("waveform") is None:
                raise ValueError("the row has neither a path nor a waveform")
            rate = rec.get("sample_rate")
            if rate is None or pd.isna(rate):
                raise ValueError("a waveform row needs its sample_rate")
            return i, None, self.waveform_clips(rec["waveform"], int(rate))
        except AudioError as exc:
            return i, path, f"{exc.reason}: {exc.detail}"
        except Exception as exc:  # noqa: BLE001 - one bad input must not fail the others
            return i, path, f"{type(exc).__name__}: {exc}"

    def _rows(self, items: list[tuple[int, str | None, Any]], timeline: bool) -> list[dict[str, Any]]:
        good = [(i, p, c) for i, p, c in items if not isinstance(c, str)]
        song_probs: dict[int, np.ndarray] = {}
        clip_probs: dict[int, np.ndarray] = {}
        if good:  # one forward pass for the clips of every readable song of the batch
            x = self.features(np.concatenate([c[0] for _, _, c in good]))
            owner = np.repeat(np.arange(len(good)), [len(c[0]) for _, _, c in good])
            clips, songs = self.predict_songs(x, owner, len(good))
            for k, (i, _, _) in enumerate(good):
                song_probs[i], clip_probs[i] = songs[k], clips[owner == k]
        out: list[dict[str, Any]] = []
        for i, path, got in items:
            if isinstance(got, str):
                out.append({"row": i, "path": path, "genre": None, "confidence": np.nan, "error": got})
            elif timeline:
                out += [{"row": i, "path": path, "clip": j, "start_s": float(got[1][j]), **self._named(p)}
                        for j, p in enumerate(clip_probs[i])]
            else:
                out.append({"row": i, "path": path, **self._named(song_probs[i])})
        return out

    def _named(self, probs: np.ndarray) -> dict[str, Any]:
        best = int(np.argmax(probs))
        return {"genre": self.classes[best], "confidence": float(probs[best]), "error": None,
                **{f"prob_{c}": float(p) for c, p in zip(self.classes, probs, strict=True)}}

    def _feature_rows(self, frame: Any) -> pd.DataFrame:
        x = frame.to_numpy(np.float32) if isinstance(frame, pd.DataFrame) else np.asarray(frame, np.float32)
        probs = self.predict_features(x)
        columns = ["row", "genre", "confidence", "error", *(f"prob_{c}" for c in self.classes)]
        return pd.DataFrame([{"row": i, **self._named(p)} for i, p in enumerate(probs)], columns=columns)

    # ---------------------------------------------------------------------------- files
    def meta(self) -> dict[str, Any]:
        """Everything but the weights, as saved in ``meta.json``."""
        return {"format": 1, "classes": self.classes, "kind": self.kind, "aggregation": self.aggregation,
                "feature_settings": self.settings.as_dict() if self.settings is not None else None,
                "input_shape": list(self.input_shape) if self.input_shape is not None else None,
                "model_file": _TORCH_FILE if isinstance(self.model, torch.nn.Module) else _SKLEARN_FILE,
                "info": self.info}

    def save(self, path: str | Path) -> Path:
        """Write ``meta.json`` and the model (the whole torch module, or the joblib-dumped estimators)."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        if meta["model_file"] == _TORCH_FILE:
            torch.save(self.model.to("cpu"), out / _TORCH_FILE)
            self.model.to(self.device)
        else:
            import joblib

            joblib.dump(self.model, out / _SKLEARN_FILE)
        (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path) -> SongClassifier:
        """Read a folder written by :meth:`save` (on the CPU)."""
        folder = Path(path)
        meta = _read_meta(folder)
        if meta["kind"] == ENSEMBLE_KIND:
            return EnsembleClassifier.load(folder)  # type: ignore[return-value]
        if meta["model_file"] == _TORCH_FILE:
            # The whole module is pickled (it references genre_ray's classes): a model of our own.
            # One saved before the strided pools gets them (the same values, faster on the CPU).
            from genre_ray.models._blocks import with_strided_pools

            with old_module_paths():
                model = torch.load(folder / _TORCH_FILE, map_location="cpu", weights_only=False)
            model = with_strided_pools(model)
        else:
            import joblib

            with old_module_paths():
                model = joblib.load(folder / _SKLEARN_FILE)
        settings = FeatureSettings(**meta["feature_settings"]) if meta["feature_settings"] else None
        shape = tuple(meta["input_shape"]) if meta["input_shape"] is not None else None
        return cls(model, meta["classes"], meta["kind"], settings, meta["aggregation"], meta["info"], shape)


def _read_meta(folder: Path) -> dict[str, Any]:
    try:
        return json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError) as exc:
        raise ServingError(f"{folder}: not a saved genre classifier ({exc})") from None


class EnsembleClassifier:
    """A weighted mix of song classifiers: the ensemble the search chose (greedy selection).

    Each member keeps its own features and clip settings (a musicnn SVM beside a log-mel CNN); a
    song's probabilities are the weighted mean of the members' song probabilities. It answers the
    calls that ``predict``, ``tag`` and the pyfunc model make of a :class:`SongClassifier`. A
    timeline (per-clip rows) is the heaviest member's own, since members may cut different clips.

    Args:
        members: the classifiers, all with the same classes in the same order.
        weights: one weight per member (normalised to sum to 1).
        info: provenance, as for :class:`SongClassifier`.
    """

    kind = ENSEMBLE_KIND

    def __init__(self, members: Sequence[SongClassifier], weights: Sequence[float],
                 info: dict[str, Any] | None = None) -> None:
        if not members or len(members) != len(weights):
            raise ValueError(f"an ensemble needs members and one weight each, got {len(members)} and {len(weights)}")
        classes = list(members[0].classes)
        for m in members[1:]:
            if list(m.classes) != classes:
                raise ValueError(f"ensemble members disagree on the classes: {classes} and {list(m.classes)}")
        if len({m.audio for m in members}) > 1:
            raise ValueError("an ensemble cannot mix audio models with feature-row models")
        w = np.asarray(weights, dtype=np.float64)
        if (w <= 0).any() or not np.isfinite(w).all():
            raise ValueError(f"ensemble weights must be positive, got {list(weights)}")
        self.members = list(members)
        self.weights = w / w.sum()
        self.classes = classes
        self.info = dict(info or {})
        self._lead = int(np.argmax(self.weights))

    @property
    def audio(self) -> bool:
        return self.members[0].audio

    @property
    def settings(self) -> FeatureSettings | None:
        """The heaviest member's feature settings (its clips make the timeline)."""
        return self.members[self._lead].settings

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        return self.members[self._lead].input_shape

    @property
    def aggregation(self) -> str:
        return "weighted mean of " + ", ".join(f"{m.kind}/{m.aggregation} x{w:.2f}"
                                               for m, w in zip(self.members, self.weights, strict=True))

    @property
    def model(self) -> list[Any]:
        """The members' models (what a hash of the classifier's weights reads)."""
        return [m.model for m in self.members]

    def to(self, device: str | torch.device) -> EnsembleClassifier:
        for m in self.members:
            m.to(device)
        return self

    def _mix(self, probs: Sequence[np.ndarray]) -> np.ndarray:
        return sum(w * p for w, p in zip(self.weights, probs, strict=True))

    def predict_file(self, path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As :meth:`SongClassifier.predict_file`: the mixed song probabilities, the lead's timeline."""
        out = [m.predict_file(path) for m in self.members]
        return self._mix([o[0] for o in out]), out[self._lead][1], out[self._lead][2]

    def predict_waveform(self, wave: Any, sample_rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        out = [m.predict_waveform(wave, sample_rate) for m in self.members]
        return self._mix([o[0] for o in out]), out[self._lead][1], out[self._lead][2]

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        return self._mix([m.predict_features(x) for m in self.members])

    def predict_batch(self, paths: Sequence[str | Path], timeline: bool = False) -> pd.DataFrame:
        return self.predict_frame(pd.DataFrame({"path": [str(p) for p in paths]}), timeline)

    def predict_frame(self, frame: Any, timeline: bool = False) -> pd.DataFrame:
        """The pyfunc contract of :meth:`SongClassifier.predict_frame`, with the members' mix.

        A row that any member cannot read gets that member's error.
        """
        if timeline:
            return self.members[self._lead].predict_frame(frame, True)
        frames = [m.predict_frame(frame) for m in self.members]
        out = frames[0].copy()
        columns = [f"prob_{c}" for c in self.classes]
        probs = self._mix([f[columns].to_numpy(np.float64) for f in frames])
        errors = pd.concat([f["error"] for f in frames], axis=1).bfill(axis=1).iloc[:, 0]
        bad = errors.notna().to_numpy()
        probs[bad] = np.nan
        out[columns] = probs
        out["error"] = errors.where(bad, None)
        best = np.nan_to_num(probs, nan=-1.0).argmax(1)
        out["genre"] = [None if b else self.classes[k] for b, k in zip(bad, best, strict=True)]
        out["confidence"] = np.where(bad, np.nan, np.nan_to_num(probs, nan=0.0).max(1))
        return out

    def meta(self) -> dict[str, Any]:
        return {"format": 1, "kind": ENSEMBLE_KIND, "classes": self.classes, "aggregation": self.aggregation,
                "members": [{"folder": f"member-{i}", "weight": float(w), **m.meta()}
                            for i, (m, w) in enumerate(zip(self.members, self.weights, strict=True))],
                "feature_settings": None, "input_shape": None, "model_file": None, "info": self.info}

    def save(self, path: str | Path) -> Path:
        """``meta.json`` with the members and weights, each member in ``member-<i>/``."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(self.members):
            m.save(out / f"member-{i}")
        (out / META_FILE).write_text(json.dumps(self.meta(), indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path) -> EnsembleClassifier:
        folder = Path(path)
        meta = _read_meta(folder)
        members = [SongClassifier.load(folder / m["folder"]) for m in meta["members"]]
        return cls(members, [m["weight"] for m in meta["members"]], meta["info"])


def _as_frame(model_input: Any) -> pd.DataFrame:
    """A path, a list of paths, a dict or a DataFrame -> a DataFrame with ``path`` or ``waveform`` rows."""
    if isinstance(model_input, (str, Path)):
        return pd.DataFrame({"path": [str(model_input)]})
    if isinstance(model_input, dict):  # {"path": [...]}, or one song: a path, or a waveform and its rate
        if isinstance(model_input.get("path"), (list, tuple, np.ndarray)):
            return pd.DataFrame({"path": [str(p) for p in model_input["path"]]})
        model_input = pd.DataFrame([model_input])
    if isinstance(model_input, (list, tuple)) and all(isinstance(p, (str, Path)) for p in model_input):
        return pd.DataFrame({"path": [str(p) for p in model_input]})
    if not isinstance(model_input, pd.DataFrame):
        raise ServingError("input must be a DataFrame with a path column, or waveform and sample_rate "
                           f"columns, or a list of paths; got {type(model_input).__name__}")
    if "path" not in model_input and "waveform" not in model_input:
        if len(model_input.columns) == 1 and model_input.iloc[:, 0].map(lambda v: isinstance(v, str)).all():
            return model_input.set_axis(["path"], axis=1)  # a list of paths that became one unnamed column
        raise ServingError("input has neither a path nor a waveform column (a list or a lone string does not "
                           "pass MLflow's schema as such): pass {'path': [...]}, or a DataFrame with a path "
                           "column, or waveform and sample_rate columns")
    listed = model_input["path"].map(lambda v: isinstance(v, (list, tuple, np.ndarray))) \
        if "path" in model_input else pd.Series(dtype=bool)
    if listed.any():
        model_input = model_input.explode("path", ignore_index=True)  # {"path": [...]} became one row
    return model_input
