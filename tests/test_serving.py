"""The registered model as a song classifier: files and waveforms in, genres out, loadable without Ray.

A tiny network is trained on generated tones (low vs high pitch), so a wrong feature setting, sample
rate or aggregation on the serving side shows up as a wrong genre, not only as a shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from genre_ray import serving
from genre_ray.config.spaces import TrialPlan
from genre_ray.features import FeatureSettings, compute_features
from genre_ray.serving import ServingError, SongClassifier
from genre_ray.serving import classifier as classifier_module
from genre_ray.training.inference import song_probabilities
from genre_ray.training.loop import _train_aggregator, _train_epoch, build
from genre_ray.training.wrappers import ClassicalModel, TrialData

SETTINGS = FeatureSettings(kinds=("logmel",), sample_rate=16000, clip_seconds=1.0, clip_overlap=0.0,
                           n_fft=512, hop_length=256, n_mels=16)
CLASSES = ["high", "low"]
FREQS = {"low": (150.0, 350.0), "high": (1800.0, 3000.0)}


def tone(genre: str, seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A tone of the genre's pitch range with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = 0.4 * np.sin(2 * np.pi * rng.uniform(*FREQS[genre]) * t) + 1e-4 * rng.standard_normal(len(t))
    return wave.astype(np.float32)


def _data(settings: FeatureSettings, kind: str, songs: int = 12, clips: int = 3) -> TrialData:
    waves, y, song = [], [], []
    for i in range(songs):
        genre = CLASSES[i % 2]
        clip = settings.clip_samples
        wave = tone(genre, clips * settings.clip_seconds, settings.sample_rate, seed=i)
        waves += [wave[j * clip:(j + 1) * clip] for j in range(clips)]
        y += [i % 2] * clips
        song += [i] * clips
    x = compute_features(np.stack(waves), replace(settings, kinds=(kind,)))[kind]
    y_arr, song_arr = np.array(y), np.array(song)
    axes = (0, 2) if x.ndim == 3 else (0,)
    return TrialData(x, y_arr, x, y_arr, song_arr, y_arr[::clips], CLASSES,
                     mean=x.mean(axis=axes, keepdims=True)[0], std=x.std(axis=axes, keepdims=True)[0] + 1e-5,
                     train_song=song_arr, y_train_song=y_arr[::clips])


def _trained(aggregation: str = "mean", epochs: int = 20) -> SongClassifier:
    torch.manual_seed(0)
    data = _data(SETTINGS, "logmel")
    model = build(data, TrialPlan("cnn2d", "logmel", {"depth": 1, "width": 4}, {"aggregation": aggregation}))
    opt = torch.optim.Adam(model.net.parameters(), lr=1e-2)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        _train_epoch(model, opt, x, y, 8, torch.device("cpu"), gen)
    if model.aggregator is not None:
        agg_opt = torch.optim.Adam(model.aggregator.parameters(), lr=1e-2)
        for _ in range(3):
            _train_aggregator(model, agg_opt, data, x, torch.device("cpu"), gen)
    model.eval().probabilities = True
    return SongClassifier(model, CLASSES, "logmel", SETTINGS, aggregation,
                          {"split_id": "split-1", "feature_cache_key": "cache-1", "task": "unit"})


@pytest.fixture(scope="module")
def classifier() -> SongClassifier:
    return _trained()


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files of both genres in several formats, rates and channel counts, and a corrupt one."""
    d = tmp_path_factory.mktemp("songs")
    sf.write(d / "low_22050.wav", tone("low", 3.0, 22050, seed=101), 22050)
    high = tone("high", 3.0, 8000, seed=102)
    sf.write(d / "high_8000_stereo.wav", np.stack([high, high], axis=1), 8000)
    sf.write(d / "high_44100.flac", tone("high", 2.5, 44100, seed=103), 44100)
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    out = {p.stem: p for p in d.iterdir()}
    if "MP3" in sf.available_formats():
        sf.write(d / "low_mp3.mp3", tone("low", 3.0, 22050, seed=104), 22050, format="MP3")
        out["low_mp3"] = d / "low_mp3.mp3"
    return out


@pytest.fixture(scope="module")
def model_dir(classifier: SongClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return serving.save_model(classifier, tmp_path_factory.mktemp("pyfunc") / "model")


def test_save_and_load_round_trip_gives_identical_probabilities(classifier: SongClassifier,
                                                                tmp_path: Path) -> None:
    wave = tone("low", 2.5, 22050, seed=7)
    again = SongClassifier.load(classifier.save(tmp_path / "clf"))
    first, second = classifier.predict_waveform(wave, 22050), again.predict_waveform(wave, 22050)
    for a, b in zip(first, second, strict=True):
        assert np.array_equal(a, b)
    assert again.classes == CLASSES and again.settings == SETTINGS and again.kind == "logmel"
    assert again.info["split_id"] == "split-1" and again.info["feature_cache_key"] == "cache-1"
    meta = json.loads((tmp_path / "clf" / "meta.json").read_text())
    assert meta["feature_settings"]["sample_rate"] == 16000 and meta["aggregation"] == "mean"


def test_pyfunc_classifies_files_at_any_rate_and_reports_a_bad_one(model_dir: Path,
                                                                   songs: dict[str, Path]) -> None:
    model = mlflow.pyfunc.load_model(str(model_dir))
    names = ["low_22050", "high_8000_stereo", "corrupt", "high_44100"]
    names += ["low_mp3"] if "low_mp3" in songs else []
    out = model.predict(pd.DataFrame({"path": [str(songs[n]) for n in names]}))
    assert list(out["path"]) == [str(songs[n]) for n in names]
    assert list(out.columns[:6]) == ["row", "path", "genre", "confidence", "error", "prob_high"]
    bad = out.iloc[2]
    assert pd.isna(bad["genre"]) and "undecodable" in bad["error"]
    good = out.drop(index=2)
    assert list(good["genre"]) == [n.split("_")[0] for n in names if n != "corrupt"]
    assert good["error"].isna().all()
    probs = good[["prob_high", "prob_low"]].to_numpy()
    assert np.allclose(probs.sum(axis=1), 1.0) and np.allclose(good["confidence"], probs.max(axis=1))


def test_mp3_is_read(songs: dict[str, Path], classifier: SongClassifier) -> None:
    if "low_mp3" not in songs:
        pytest.skip("this libsndfile cannot write MP3 (sf.available_formats() has no MP3)")
    song, clips, _ = classifier.predict_file(songs["low_mp3"])
    assert CLASSES[int(song.argmax())] == "low" and len(clips) == 3


def test_pyfunc_waveform_rows_and_timeline(model_dir: Path, songs: dict[str, Path]) -> None:
    model = mlflow.pyfunc.load_model(str(model_dir))
    waves = [tone("high", 2.0, 44100, 5).tolist(), tone("low", 2.0, 8000, 6).tolist()]
    rows = pd.DataFrame({"waveform": waves,
                         "sample_rate": [44100, 8000]})
    out = model.predict(rows)
    assert list(out["genre"]) == ["high", "low"] and out["path"].isna().all()
    timeline = model.predict(pd.DataFrame({"path": [str(songs["low_22050"]), str(songs["corrupt"])]}),
                             params={"timeline": True})
    clips = timeline[timeline["row"] == 0]
    assert list(clips["clip"]) == [0, 1, 2] and list(clips["start_s"]) == [0.0, 1.0, 2.0]
    assert (clips["genre"] == "low").all()
    assert np.allclose(clips[["prob_high", "prob_low"]].sum(axis=1), 1.0)
    failed = timeline[timeline["row"] == 1]
    assert len(failed) == 1 and pd.isna(failed["genre"].iloc[0]) and failed["error"].iloc[0]


def test_mixed_rows_and_a_dict_of_paths(model_dir: Path, songs: dict[str, Path]) -> None:
    model = mlflow.pyfunc.load_model(str(model_dir))
    mixed = pd.DataFrame({"path": [str(songs["high_44100"]), None],
                          "waveform": [None, tone("low", 1.5, 22050, 8).tolist()],
                          "sample_rate": [None, 22050]})
    assert list(model.predict(mixed)["genre"]) == ["high", "low"]
    listed = model.predict({"path": [str(songs["low_22050"]), str(songs["high_44100"])]})
    assert list(listed["genre"]) == ["low", "high"]
    with pytest.raises(ServingError, match="neither a path nor a waveform"):
        classifier_module._as_frame(pd.DataFrame({"x": [1.0]}))


def test_the_model_carries_signature_input_example_and_settings(model_dir: Path) -> None:
    info = mlflow.models.get_model_info(str(model_dir))
    sig = info.signature
    assert sig.inputs.input_names() == ["path", "waveform", "sample_rate"]
    assert [p.name for p in sig.params] == ["timeline"]
    assert "prob_low" in sig.outputs.input_names()
    meta = info.metadata["genre_ray"]
    assert meta["classes"] == CLASSES and meta["feature_settings"]["n_mels"] == 16
    assert meta["info"]["split_id"] == "split-1" and meta["info"]["feature_cache_key"] == "cache-1"
    example = mlflow.models.Model.load(str(model_dir)).load_input_example(str(model_dir))
    out = mlflow.pyfunc.load_model(str(model_dir)).predict(example)
    assert len(out) == 1 and out["genre"].iloc[0] in CLASSES
    reqs = (model_dir / "requirements.txt").read_text()
    assert "torch==" in reqs and "mlflow==" in reqs and "ray" not in reqs
    assert (model_dir / "code" / "genre_ray" / "serving" / "classifier.py").is_file()


def test_loads_and_predicts_without_ray_or_an_installed_genre_ray(
        model_dir: Path, songs: dict[str, Path], classifier: SongClassifier, tmp_path: Path) -> None:
    script = f"""
import json, sys
sys.modules["ray"] = None  # importing Ray now fails
sys.meta_path = [f for f in sys.meta_path if "editable" not in getattr(f, "__module__", "")]
sys.path = [p for p in sys.path if p not in ("", {str(Path.cwd())!r}, {str(Path(__file__).parents[1])!r})]
import mlflow
model = mlflow.pyfunc.load_model({str(model_dir)!r})
out = model.predict({{"path": [{str(songs["low_22050"])!r}]}})
import genre_ray
print(json.dumps({{"file": genre_ray.__file__, "probs": out[["prob_high", "prob_low"]].to_numpy().tolist()}}))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(model_dir))  # genre_ray came with the model, not from the checkout
    expected, _, _ = classifier.predict_file(songs["low_22050"])
    assert np.allclose(got["probs"][0], expected, atol=1e-6)


def test_the_learned_gru_aggregation_is_what_the_pyfunc_serves(tmp_path: Path,
                                                                songs: dict[str, Path]) -> None:
    gru = _trained("gru", epochs=3)
    model = mlflow.pyfunc.load_model(str(serving.save_model(gru, tmp_path / "gru")))
    paths = {"path": [str(songs["low_22050"]), str(songs["high_8000_stereo"])]}
    song_rows = model.predict(paths)
    clip_rows = model.predict(paths, params={"timeline": True})
    cols = ["prob_high", "prob_low"]
    mean_of_clips = clip_rows.groupby("row")[cols].mean().to_numpy()
    assert not np.allclose(song_rows[cols].to_numpy(), mean_of_clips, atol=1e-3)
    x = gru.features(gru.file_clips(songs["low_22050"])[0])
    _, direct = song_probabilities(gru.model, x, np.zeros(len(x), np.int64), 1, torch.device("cpu"))
    assert np.allclose(song_rows[cols].to_numpy()[0], direct[0], atol=1e-6)
    # the control: with mean aggregation the song is the mean of its clips
    mean = mlflow.pyfunc.load_model(str(serving.save_model(_trained("mean", epochs=1), tmp_path / "mean")))
    song_rows, clip_rows = mean.predict(paths), mean.predict(paths, params={"timeline": True})
    mean_of_clips = clip_rows.groupby("row")[cols].mean().to_numpy()
    assert np.allclose(song_rows[cols].to_numpy(), mean_of_clips, atol=1e-6)


def test_a_classical_model_serves_the_same_way(tmp_path: Path, songs: dict[str, Path]) -> None:
    from sklearn.linear_model import LogisticRegression

    settings = replace(SETTINGS, kinds=("stats",))
    data = _data(settings, "stats")
    est = LogisticRegression(max_iter=500).fit(data.x_train, data.y_train)
    clf = SongClassifier(ClassicalModel([est], 2, "vote"), CLASSES, "stats", settings, "vote",
                         {"model": "logreg"})
    model = mlflow.pyfunc.load_model(str(serving.save_model(clf, tmp_path / "classical")))
    out = model.predict(pd.DataFrame({"path": [str(songs["low_22050"]), str(songs["high_44100"])]}))
    assert list(out["genre"]) == ["low", "high"]
    assert serving.load(str(tmp_path / "classical")).aggregation == "vote"


def test_max_clips_per_song_spreads_the_timeline(classifier: SongClassifier, tmp_path: Path) -> None:
    capped = SongClassifier(classifier.model, CLASSES, "logmel", replace(SETTINGS, max_clips_per_song=3))
    path = tmp_path / "long.wav"
    sf.write(path, tone("low", 9.0, 16000, 9), 16000)
    clips, starts = capped.file_clips(path)
    assert len(clips) == 3 and list(starts) == [0.0, 4.0, 8.0]
    wave_clips, wave_starts = capped.waveform_clips(tone("low", 9.0, 16000, 9), 16000)
    assert np.array_equal(wave_starts, starts) and np.allclose(wave_clips, clips, atol=1e-4)


def test_table_models_take_feature_rows(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 57)).astype(np.float32)
    y = np.arange(20) % 2
    x[:, 0] += 3 * y
    data = TrialData(x, y, x, y, np.arange(20), y, CLASSES, mean=x.mean(0), std=x.std(0) + 1e-5)
    net = build(data, TrialPlan("mlp", "table", {"layers": 1, "hidden": 8}, {})).eval()
    clf = SongClassifier(net, CLASSES, "table", None, "mean", {}, (57,))
    model = mlflow.pyfunc.load_model(str(serving.save_model(clf, tmp_path / "table")))
    out = model.predict(x[:4])
    assert len(out) == 4 and set(out["genre"]) <= set(CLASSES)
    assert np.allclose(out[["prob_high", "prob_low"]].sum(axis=1), 1.0)
    with pytest.raises(ServingError, match="feature rows, not audio"):
        clf.predict_file(tmp_path / "any.wav")


def test_load_says_which_uri_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(ServingError, match="no such model folder"):
        serving.load(str(tmp_path / "missing"))
    with pytest.raises(ServingError, match=r"models:/genre-none@champion: cannot load the model in sqlite"):
        serving.load("models:/genre-none@champion", f"sqlite:///{tmp_path / 'mlflow.db'}")
