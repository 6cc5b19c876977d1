"""The final model's selection: greedy ensembles (Caruana et al. 2004), the served ensemble, suspect labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from genre_ray.search.selection import greedy_ensemble, mix, score, suspect_labels


def _onehot(pred: list[int], classes: int = 3, p: float = 0.8) -> np.ndarray:
    out = np.full((len(pred), classes), (1 - p) / (classes - 1))
    out[np.arange(len(pred)), pred] = p
    return out


Y = np.array([0, 1, 2, 0, 1, 2])


def test_three_models_each_wrong_on_other_songs_vote_the_truth() -> None:
    # each model is wrong on two songs, never on the same ones: any two of them together fix the third's errors
    a = _onehot([1, 1, 2, 0, 1, 0])
    b = _onehot([0, 2, 2, 0, 0, 2])
    c = _onehot([0, 1, 0, 2, 1, 2])
    choice = greedy_ensemble([a, b, c], Y, rounds=10)
    assert score(a, Y)[0] == pytest.approx(4 / 6)
    assert choice.best_score[0] == pytest.approx(4 / 6)
    assert choice.ensemble_score[0] == 1.0
    assert set(choice.weights) == {0, 1, 2} and sum(choice.weights.values()) == pytest.approx(1.0)
    assert choice.beats_best
    assert (mix([a, b, c], choice.weights).argmax(1) == Y).all()


def test_a_dominated_candidate_gets_no_weight_and_a_lone_best_is_no_ensemble() -> None:
    good = _onehot(list(Y), p=0.9)
    bad = _onehot([1, 2, 0, 1, 2, 0], p=0.9)
    choice = greedy_ensemble([bad, good], Y)
    assert choice.best == 1 and choice.weights == {1: 1.0}
    assert not choice.beats_best  # one member: nothing to register beside the best trial


def test_ties_on_accuracy_are_broken_by_log_loss() -> None:
    sure, unsure = _onehot(list(Y), p=0.9), _onehot(list(Y), p=0.5)
    assert greedy_ensemble([unsure, sure], Y).best == 1


def test_bad_candidates_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        greedy_ensemble([], Y)
    with pytest.raises(ValueError, match="songs"):
        greedy_ensemble([_onehot([0, 1])], Y)


def test_suspect_labels_lists_confident_contradictions_with_the_models_that_agree() -> None:
    songs = pd.DataFrame({"song_id": [f"s{i}" for i in range(6)], "fold": [0, 0, 1, 1, 2, 2],
                          "path": [f"/m/{i}.wav" for i in range(6)]})
    probs = _onehot([0, 1, 2, 2, 1, 0], p=0.9)  # songs 3 and 5 contradicted
    probs[5] = [0.45, 0.2, 0.35]  # not confident: left out
    votes = np.array([[0, 1, 2, 2, 1, 0], [0, 1, 2, 1, 1, 0], [0, 1, 2, 2, 1, 2]])
    table = suspect_labels(songs, probs, Y, ["blues", "jazz", "rock"], votes)
    assert table["song_id"].tolist() == ["s3"]
    row = table.iloc[0]
    assert (row["label"], row["predicted"], row["probability"]) == ("blues", "rock", 0.9)
    assert (row["models_agreeing"], row["models"], row["fold"], row["path"]) == (2, 3, 1, "/m/3.wav")


class Fixed(torch.nn.Module):
    """Every clip gets the same probabilities (module level: saved models are pickled)."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.p = torch.nn.Parameter(torch.tensor(probs), requires_grad=False)
        self.probabilities = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p.expand(len(x), -1)


def _classifiers():
    from genre_ray.features import FeatureSettings
    from genre_ray.serving.classifier import SongClassifier

    classes = ["blues", "jazz", "rock"]
    a = SongClassifier(Fixed([0.6, 0.4, 0.0]), classes, "stats",
                       FeatureSettings(kinds=("stats",), sample_rate=8000, clip_seconds=1.0, n_mfcc=8, n_mels=32,
                                       n_fft=256, hop_length=128))
    b = SongClassifier(Fixed([0.0, 0.7, 0.3]), classes, "mfcc",
                       FeatureSettings(kinds=("mfcc",), sample_rate=11025, clip_seconds=2.0, n_mfcc=8, n_mels=32,
                                       n_fft=512, hop_length=256))
    return a, b, classes


def test_the_served_ensemble_mixes_members_with_their_own_features_and_survives_save_and_load(tmp_path) -> None:
    import soundfile as sf

    from genre_ray.serving.classifier import EnsembleClassifier, SongClassifier

    a, b, classes = _classifiers()
    ens = EnsembleClassifier([a, b], [3.0, 1.0], {"task": "t"})
    wav = tmp_path / "song.wav"
    t = np.arange(22050 * 5) / 22050
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), 22050)
    song, clips, starts = ens.predict_file(wav)
    np.testing.assert_allclose(song, [0.45, 0.475, 0.075], atol=1e-6)  # 0.75 * a + 0.25 * b
    assert clips.shape[1] == 3 and len(starts) == len(clips)  # the heavier member's timeline
    frame = pd.DataFrame({"path": [str(wav), str(tmp_path / "missing.wav")]})
    out = ens.predict_frame(frame)
    assert out.loc[0, "genre"] == "jazz" and out.loc[0, "prob_jazz"] == pytest.approx(0.475)
    # a bad file keeps its reason and no genre; the other file is still classified
    assert pd.isna(out.loc[1, "genre"]) and isinstance(out.loc[1, "error"], str) and out.loc[1, "error"]
    assert np.isnan(out.loc[1, "prob_jazz"])
    loaded = SongClassifier.load(ens.save(tmp_path / "model"))  # the folder tells it is an ensemble
    assert isinstance(loaded, EnsembleClassifier)
    np.testing.assert_allclose(loaded.predict_file(wav)[0], song)
    assert loaded.classes == classes and loaded.weights.tolist() == [0.75, 0.25]


def test_an_ensemble_refuses_members_that_disagree(tmp_path) -> None:
    from genre_ray.serving.classifier import EnsembleClassifier

    a, b, _ = _classifiers()
    b.classes = ["x", "y", "z"]
    with pytest.raises(ValueError, match="classes"):
        EnsembleClassifier([a, b], [1, 1])
    with pytest.raises(ValueError, match="weight"):
        EnsembleClassifier([a], [1, 2])
