"""Models saved before the package moved into subpackages still load and serve the same songs.

``tests/fixtures/pre_move`` was written by the flat layout (commit 4a0898d, see its ``make.py``): a
log-mel CNN with a learned GRU aggregator and a logistic regression on clip statistics, mixed as an
ensemble. Their torch and joblib pickles name ``genre_ray.train`` and ``genre_ray.aggregate``; the
pyfunc's model script imports ``genre_ray.serving``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests._procs import child_env
from tests.test_serving import tone

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "pre_move"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pre_move_songs")
    out = {}
    for genre, song in EXPECTED["songs"].items():
        out[genre] = d / f"{genre}.wav"
        sf.write(out[genre], tone(genre, 3.0, 16000, seed=song["seed"]), 16000)
    return out


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE / "pyfunc", tmp_path / "pyfunc"))


def test_the_saved_folder_loads_and_gives_the_same_probabilities(model_dir: Path, songs: dict[str, Path]) -> None:
    from genre_ray.serving import load

    clf = load(str(model_dir))
    assert clf.classes == EXPECTED["classes"]
    assert [m.aggregation for m in clf.members] == ["gru", "vote"]
    for genre, path in songs.items():
        assert np.allclose(clf.predict_file(path)[0], EXPECTED["songs"][genre]["probs"], atol=1e-5), genre


def test_the_pyfunc_loads_through_mlflow(model_dir: Path, songs: dict[str, Path]) -> None:
    import mlflow.pyfunc
    import pandas as pd

    out = mlflow.pyfunc.load_model(str(model_dir)).predict(pd.DataFrame({"path": [str(p) for p in songs.values()]}))
    for (genre, _), row in zip(songs.items(), out.itertuples(), strict=True):
        assert np.allclose([row.prob_high, row.prob_low], EXPECTED["songs"][genre]["probs"], atol=1e-5), genre


def test_predict_names_the_genres(model_dir: Path, songs: dict[str, Path]) -> None:
    out = subprocess.run([sys.executable, "-m", "genre_ray.predict", str(model_dir), *map(str, songs.values()),
                          "--json"], capture_output=True, text=True, timeout=300, env=child_env())
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    assert [r["genre"] for r in doc["results"]] == list(songs)
