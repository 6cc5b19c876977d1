"""Models saved before the package moved into subpackages still load and serve the same songs.

``tests/fixtures/pre_move`` was written by the flat layout (commit 4a0898d, see its ``make.py``): a
log-mel CNN with a learned GRU aggregator and a logistic regression on clip statistics, mixed as an
ensemble. Their torch and joblib pickles name ``genre_ray.train`` and ``genre_ray.aggregate``; the
pyfunc's model script imports ``genre_ray.serving``.

``tests/fixtures/pre_move/search`` holds what Tune pickled for a search that the flat layout started
and a kill interrupted (its ``make.sh``): ``--resume`` must read it with today's code.
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
SEARCH = FIXTURE / "search"
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


def test_a_search_interrupted_before_the_move_reads_back_under_the_old_module_names() -> None:
    """The experiment's ``tuner.pkl`` (callbacks, reporter, the Optuna searcher with its search space)
    and its searcher's state name ``genre_ray.trial_runs``, ``genre_ray.spaces`` and ``genre_ray._checks``."""
    import pickle

    import optuna

    from genre_ray._legacy import SEARCH_MOVED, old_module_paths
    from genre_ray.config.spaces import DefineByRun
    from genre_ray.search.trial_runs import SearchReporter, StaleCheckpoints, TrialRuns

    for name in ("tuner.pkl", "searcher-state.pkl"):
        with pytest.raises(ModuleNotFoundError, match="genre_ray"):  # the old names, as --resume met them
            pickle.loads((SEARCH / name).read_bytes())
    with old_module_paths(SEARCH_MOVED):
        tuner = pickle.loads((SEARCH / "tuner.pkl").read_bytes())
        searcher = pickle.loads((SEARCH / "searcher-state.pkl").read_bytes())
    assert not set(SEARCH_MOVED) & set(sys.modules)  # the aliases lived only while it was read

    run = tuner["_run_config"]
    assert [type(c) for c in run.callbacks] == [StaleCheckpoints, TrialRuns]
    assert isinstance(run.progress_reporter, SearchReporter) and run.callbacks[1].total == 8
    space = searcher["_space"]
    assert isinstance(space, DefineByRun) and isinstance(tuner["_tune_config"].search_alg._space, DefineByRun)
    assert len(searcher["_completed_trials"]) >= 3  # interrupted midway: 3 of its 8 trials had finished
    drawn = space(optuna.create_study().ask())  # the old space still draws a trial today's code trains
    assert drawn["model.name"] == "cnn2d" and drawn["features.kind"] == "logmel"


def test_resume_reads_the_experiment_and_runs_it_under_the_old_module_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tune reads ``tuner.pkl`` in ``Tuner.restore`` and the searcher's state in ``fit``: both inside."""
    from genre_ray._legacy import SEARCH_MOVED
    from genre_ray.search import tuning

    seen = []

    class Restored:
        def fit(self) -> str:
            seen.append(("fit", set(SEARCH_MOVED) <= set(sys.modules)))
            return "grid"

    def restore(*args: object) -> Restored:
        seen.append(("restore", set(SEARCH_MOVED) <= set(sys.modules)))
        return Restored()

    monkeypatch.setattr(tuning, "restore", restore)
    assert tuning.resume_fit(None, {}, None, "experiment") == "grid"  # type: ignore[arg-type]
    assert seen == [("restore", True), ("fit", True)]
    assert not set(SEARCH_MOVED) & set(sys.modules)
