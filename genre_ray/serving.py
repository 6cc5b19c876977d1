"""The registered model: a self-contained song classifier, served through MLflow's pyfunc interface.

:class:`SongClassifier` holds a trained model (a :class:`~genre_ray.train.Standardized` network, a
fold :class:`~genre_ray.train.Ensemble` or a :class:`~genre_ray.train.ClassicalModel`) with all that
prediction needs: the feature settings, the class names, the song aggregation (the learned GRU/LSTM
included) and where it came from (split, feature cache, task, test score). It turns audio files or
waveforms at any sample rate into per-song genre probabilities and a per-clip timeline.

:class:`GenrePyfunc` is that classifier as an MLflow pyfunc model: the registered ``genre-<task>``
version. It carries the ``genre_ray`` package as code, so it loads where genre_ray is not installed,
and it never imports Ray.

Models trained on a feature table or on images (``kind`` ``table`` or ``image``) cannot hear audio:
their pyfunc takes feature rows, ``(n, *input_shape)`` float32, and gives one prediction per row.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch

from genre_ray.data.audio import AudioError, clip_bounds, cut_clips, decode_clips
from genre_ray.features import FeatureSettings

__all__ = ["NON_AUDIO_KINDS", "GenrePyfunc", "ServingError", "SongClassifier", "load", "log_model",
           "requirements", "save_model", "signature", "version_tags"]

NON_AUDIO_KINDS = ("table", "image")  # features read from the source, not computed from audio
PACKAGE_DIR = Path(__file__).resolve().parent
_META, _TORCH_FILE, _SKLEARN_FILE = "meta.json", "model.pt", "model.joblib"
_ARTIFACT = "classifier"
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
            :class:`~genre_ray.train.ClassicalModel`.
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
        import soundfile as sf

        s = self._audio_settings()
        clips = decode_clips(str(path), s.sample_rate, s.clip_samples, s.clip_overlap, s.max_clips_per_song)
        info = sf.info(str(path))  # decode_clips read it already: the file is a readable audio file
        total = len(clip_bounds(int(info.frames * s.sample_rate / info.samplerate), s.clip_samples,
                                s.clip_overlap))
        idx = _spread(total, s.max_clips_per_song) if len(clips) < total else np.arange(len(clips))
        return clips, idx * self._hop_seconds()

    def waveform_clips(self, wave: Any, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
        """Clips of a waveform (mono, or ``(samples, channels)``/``(channels, samples)``) at any rate.

        Raises:
            ValueError: for an empty waveform, non-finite samples or a non-positive rate.
        """
        import librosa

        s = self._audio_settings()
        x = np.asarray(wave, dtype=np.float32)
        if x.ndim == 2:  # channels are the short axis
            x = x.mean(axis=int(np.argmin(x.shape)))
        if x.ndim != 1 or x.size == 0:
            raise ValueError(f"waveform must be a non-empty 1-D array of samples, got shape {np.shape(wave)}")
        if not np.isfinite(x).all():
            raise ValueError("waveform has NaN or infinite samples")
        if int(sample_rate) <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        if int(sample_rate) != s.sample_rate:  # the resampler the decoder uses
            x = librosa.resample(x, orig_sr=int(sample_rate), target_sr=s.sample_rate, res_type="soxr_hq")
        clips = cut_clips(np.ascontiguousarray(x, dtype=np.float32), s.clip_samples, s.clip_overlap)
        idx = _spread(len(clips), s.max_clips_per_song)
        return clips[idx], idx * self._hop_seconds()

    def features(self, clips: np.ndarray) -> np.ndarray:
        """Waveform clips ``(n, clip_samples)`` at the model's rate -> its features ``(n, *shape)``."""
        from genre_ray.pipeline import clip_features  # numpy/pyarrow only: no Ray at import

        return clip_features(np.asarray(clips, dtype=np.float32), self._audio_settings())[self.kind]

    # ---------------------------------------------------------------------------- prediction
    def predict_songs(self, x: np.ndarray, clip_song: np.ndarray,
                      n_songs: int) -> tuple[np.ndarray, np.ndarray]:
        """Features of the clips of several songs -> ``(clip probabilities (n, C), song probabilities
        (n_songs, C))``, with the model's own song aggregation (the learned GRU/LSTM included)."""
        from genre_ray.train import song_probabilities

        clip, song = song_probabilities(self.model, np.ascontiguousarray(x, dtype=np.float32),
                                        np.asarray(clip_song, dtype=np.int64), n_songs, self.device)
        return clip.astype(np.float64), song.astype(np.float64)

    def predict_features(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(n, C)`` of independent feature rows (a table or image model's input)."""
        from genre_ray.train import predict_probs

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

    def predict_batch(self, paths: list[str | Path], timeline: bool = False) -> pd.DataFrame:
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
        (out / _META).write_text(json.dumps(meta, indent=2, default=str))
        return out

    @classmethod
    def load(cls, path: str | Path) -> SongClassifier:
        """Read a folder written by :meth:`save` (on the CPU)."""
        folder = Path(path)
        try:
            meta = json.loads((folder / _META).read_text())
        except (OSError, ValueError) as exc:
            raise ServingError(f"{folder}: not a saved genre classifier ({exc})") from None
        if meta["model_file"] == _TORCH_FILE:
            # The whole module is pickled (it references genre_ray's classes): a model of our own.
            model = torch.load(folder / _TORCH_FILE, map_location="cpu", weights_only=False)
        else:
            import joblib

            model = joblib.load(folder / _SKLEARN_FILE)
        settings = FeatureSettings(**meta["feature_settings"]) if meta["feature_settings"] else None
        shape = tuple(meta["input_shape"]) if meta["input_shape"] is not None else None
        return cls(model, meta["classes"], meta["kind"], settings, meta["aggregation"], meta["info"], shape)


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


# -------------------------------------------------------------------------------- MLflow pyfunc
class GenrePyfunc(mlflow.pyfunc.PythonModel):
    """The registered model: a :class:`SongClassifier` behind ``mlflow.pyfunc``.

    Input: a DataFrame with a ``path`` column (audio files), or ``waveform`` (samples) and
    ``sample_rate`` columns, or a dict ``{"path": [...]}``. Output: one row per song with ``genre``,
    ``confidence`` and ``prob_<class>``; with ``params={"timeline": True}``, one row per clip.
    """

    def __init__(self) -> None:
        self.classifier: SongClassifier | None = None

    def load_context(self, context: Any) -> None:
        self.classifier = SongClassifier.load(context.artifacts[_ARTIFACT])

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        assert self.classifier is not None, "load_context was not called"
        return self.classifier.predict_frame(model_input, bool((params or {}).get("timeline", False)))


def signature(classifier: SongClassifier) -> Any:
    """The pyfunc signature: audio rows in (or feature rows), genre and probabilities out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

    out = [ColSpec("long", "row"), ColSpec("string", "genre", required=False),
           ColSpec("double", "confidence", required=False), ColSpec("string", "error", required=False),
           *(ColSpec("double", f"prob_{c}", required=False) for c in classifier.classes)]
    if not classifier.audio:
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *(classifier.input_shape or ())))])
        return ModelSignature(inputs, Schema(out))
    inputs = Schema([ColSpec("string", "path", required=False),
                     ColSpec(Array("double"), "waveform", required=False),
                     # Any: an int column, or floats when path rows leave it NaN (double refuses int64)
                     ColSpec(AnyType(), "sample_rate", required=False)])
    out.insert(1, ColSpec("string", "path", required=False))
    return ModelSignature(inputs, Schema(out), ParamSchema([ParamSpec("timeline", "boolean", False)]))


def input_example(classifier: SongClassifier) -> Any:
    """A one-second tone at 8 kHz (no file needed), or one row of zero features."""
    if not classifier.audio:
        return np.zeros((1, *(classifier.input_shape or ())), np.float32)
    t = np.arange(8000) / 8000
    wave = np.round(0.5 * np.sin(2 * np.pi * 440 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)), 4)
    return pd.DataFrame({"waveform": [wave.tolist()], "sample_rate": [8000]})


def requirements() -> list[str]:
    """What the model needs to load and predict, pinned to this environment (Ray is not needed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in ("mlflow", "torch", "torchaudio", "librosa", "soundfile", "numpy", "pandas", "scikit-learn",
                 "pyarrow", "pyyaml", "cloudpickle"):
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


def version_tags(classifier: SongClassifier) -> dict[str, str]:
    """Tags for the registered version: what the model takes and where it came from."""
    s = classifier.settings
    settings = s.as_dict() if s is not None else {"kind": classifier.kind}
    return {"kind": classifier.kind, "classes": ",".join(classifier.classes),
            "aggregation": classifier.aggregation, "feature_settings": json.dumps(settings),
            "split_id": str(classifier.info.get("split_id", "")),
            "feature_cache_key": str(classifier.info.get("feature_cache_key", "")),
            "input": "audio: path, or waveform + sample_rate" if classifier.audio else
            f"{classifier.kind} rows {tuple(classifier.input_shape or ())}, float32",
            "flavor": "python_function (genre_ray.serving.GenrePyfunc)"}


# The pyfunc as "model from code": MLflow stores this script, not a pickle of GenrePyfunc.
_MODEL_CODE = "from mlflow.models import set_model\n\nfrom genre_ray.serving import GenrePyfunc\n\n" \
    "set_model(GenrePyfunc())\n"


def _model_kwargs(classifier: SongClassifier, tmp: Path) -> dict[str, Any]:
    folder = classifier.save(tmp / _ARTIFACT)
    (tmp / "genre_model.py").write_text(_MODEL_CODE)
    meta = {k: v for k, v in classifier.meta().items() if k not in ("model_file", "format")}
    return {"python_model": str(tmp / "genre_model.py"), "artifacts": {_ARTIFACT: str(folder)},
            "code_paths": [str(PACKAGE_DIR)],  # loads where genre_ray is not installed
            "signature": signature(classifier), "input_example": input_example(classifier),
            "pip_requirements": requirements(),
            "metadata": {"genre_ray": json.loads(json.dumps(meta, default=str))}}


def log_model(classifier: SongClassifier, name: str = "model", registered_model_name: str | None = None,
              await_registration_for: int = 60) -> Any:
    """Log the classifier as a pyfunc model on the active run (and register it when a name is given).

    Returns:
        MLflow's ``ModelInfo`` (``registered_model_version`` is set when registered).
    """
    with tempfile.TemporaryDirectory() as tmp:
        return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name,
                                       await_registration_for=await_registration_for,
                                       **_model_kwargs(classifier, Path(tmp)))


def save_model(classifier: SongClassifier, path: str | Path) -> Path:
    """Write the classifier as a pyfunc model folder, loadable with ``mlflow.pyfunc.load_model(path)``."""
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.pyfunc.save_model(str(path), **_model_kwargs(classifier, Path(tmp)))
    return Path(path)


def load(model_uri: str, tracking_uri: str | None = None) -> SongClassifier:
    """The classifier behind a model URI, for Python callers.

    Args:
        model_uri: ``models:/genre-<task>@champion``, ``models:/<name>/<version>``,
            ``runs:/<run_id>/model``, a pyfunc model folder, or a folder written by
            :meth:`SongClassifier.save`.
        tracking_uri: the MLflow store to resolve ``models:/`` and ``runs:/`` URIs against.

    Raises:
        ServingError: when the URI names no model, or a model that is not a genre classifier.
    """
    local = Path(model_uri).expanduser()
    if local.is_dir() and (local / _META).is_file():
        return SongClassifier.load(local)
    if (local / "artifacts" / _ARTIFACT / _META).is_file():  # a pyfunc folder: no need for MLflow's loader
        return SongClassifier.load(local / "artifacts" / _ARTIFACT)
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    if not local.exists() and not model_uri.startswith(("models:/", "runs:/")) and "://" not in model_uri:
        raise ServingError(f"{model_uri}: no such model folder, and not a models:/ or runs:/ URI")
    where = f" in {mlflow.get_tracking_uri()}" if model_uri.startswith(("models:/", "runs:/")) else ""
    try:
        flavors = mlflow.models.get_model_info(model_uri).flavors  # reads MLmodel only
        pyfunc = flavors.get("python_function", {})
        if pyfunc.get("loader_module") != "mlflow.pyfunc.loaders.code_model":
            old = ", ".join(f for f in flavors if f != "python_function") or "pyfunc"
            raise ServingError(f"{model_uri}: a {old} model of clip features, not a genre_ray song "
                               "classifier (registered before models took audio); register a new one with "
                               "python -m genre_ray.search (--promote makes it the champion)")
        wrapped = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    except ServingError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow raises many types for a bad URI; say which URI failed
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ServingError(f"{model_uri}: cannot load the model{where} ({first})") from None
    if not isinstance(wrapped, GenrePyfunc) or wrapped.classifier is None:
        raise ServingError(f"{model_uri}: not a genre_ray song classifier (a {type(wrapped).__name__})")
    return wrapped.classifier
