"""The registered model: a :class:`~genre_ray.serving.classifier.SongClassifier` served through MLflow's pyfunc.

:class:`GenrePyfunc` is the classifier as an MLflow pyfunc model: the registered ``genre-<task>``
version. It carries the ``genre_ray`` package as code, so it loads where genre_ray is not installed,
and it never imports Ray. The classifier itself (decoding, features, prediction, saving) lives in
:mod:`genre_ray.serving.classifier`, which does not import MLflow. This module is the MLflow side
of serving (only :mod:`genre_ray.tracking` imports MLflow); :mod:`genre_ray.serving` re-exports it.

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

from genre_ray.serving.classifier import META_FILE, NON_AUDIO_KINDS, ServingError, SongClassifier

__all__ = ["NON_AUDIO_KINDS", "GenrePyfunc", "ServingError", "SongClassifier", "load", "log_model",
           "requirements", "save_model", "signature", "version_tags"]

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # genre_ray/: carried as the model's code
_ARTIFACT = "classifier"


# -------------------------------------------------------------------------------- MLflow pyfunc
class GenrePyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined]
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

    out: list[ColSpec | TensorSpec] = [ColSpec("long", "row"), ColSpec("string", "genre", required=False),
           ColSpec("double", "confidence", required=False), ColSpec("string", "error", required=False),
           *(ColSpec("double", f"prob_{c}", required=False) for c in classifier.classes)]
    if not classifier.audio:
        inputs = Schema([TensorSpec(np.dtype(np.float32), (-1, *(classifier.input_shape or ())))])
        return ModelSignature(inputs, Schema(out))
    columns: list[ColSpec | TensorSpec] = [ColSpec("string", "path", required=False),
                     ColSpec(Array("double"), "waveform", required=False),
                     # Any: an int column, or floats when path rows leave it NaN (double refuses int64)
                     ColSpec(AnyType(), "sample_rate", required=False)]
    inputs = Schema(columns)
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
    if local.is_dir() and (local / META_FILE).is_file():
        return SongClassifier.load(local)
    if (local / "artifacts" / _ARTIFACT / META_FILE).is_file():  # a pyfunc folder: MLflow's loader not needed
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
