"""Every search space that ships runs end to end in smoke mode (``--smoke``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genre_ray.config import SMOKE_OVERRIDES, load_config

SPACES = sorted((Path(__file__).resolve().parents[1] / "search_spaces").glob("*.yaml"))


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("smoke")  # shared: the demo and its features are made once


def test_smoke_flag_sets_the_overrides() -> None:
    from genre_ray.search import _overrides, build_parser

    out = _overrides(build_parser().parse_args(["x.yaml", "--smoke", "--num-samples", "1"]))
    assert out["search.max_epochs"] == 1 and out["data.demo.songs_per_genre"] == 5
    assert out["search.num_samples"] == 1  # explicit options win over --smoke


@pytest.mark.slow
@pytest.mark.parametrize("space", SPACES, ids=[p.stem for p in SPACES])
def test_search_space_runs_in_smoke_mode(space: Path, results: Path, ray_session: object) -> None:
    from genre_ray.search.runner import run_search

    cfg = load_config(space, {**SMOKE_OVERRIDES, "output.results_dir": str(results),
                              "tracking.uri": f"sqlite:///{results / 'mlflow.db'}"})
    [summary] = run_search(cfg)
    assert len(summary["leaderboard"]) == 2
    assert (summary["leaderboard"]["epochs"] == 1).all()
    assert summary["registered"] is not None and summary["test_songs"] == 3
