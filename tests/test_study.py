"""The Optuna sampler from the YAML, its start-up trials from the budget, and the persisted study."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from genre_ray.config import parse_config
from genre_ray.config.spaces import define_by_run
from genre_ray.search.tuning import (
    StudyJournalError,
    check_study,
    make_sampler,
    startup_trials,
    study_storage,
)

SPACE = {"model": {"name": "cnn2d", "params": {"depth": {"int": [1, 3]}}},
         "train": {"lr": {"loguniform": [1.0e-4, 1.0e-2]}}}


def test_start_up_trials_are_a_fifth_of_the_budget_at_least_three() -> None:
    assert [startup_trials(n) for n in (2, 12, 30, 100)] == [3, 3, 6, 20]
    assert startup_trials(30, given=0) == 0
    tpe = make_sampler(parse_config({"search": {"num_samples": 30}}, "x.yaml").search)
    assert isinstance(tpe, optuna.samplers.TPESampler) and tpe._n_startup_trials == 6


@pytest.mark.parametrize(("name", "cls"), [("random", optuna.samplers.RandomSampler),
                                           ("cmaes", optuna.samplers.CmaEsSampler),
                                           ("gp", optuna.samplers.GPSampler),
                                           ("tpe", optuna.samplers.TPESampler)])
def test_the_yaml_chooses_the_sampler(name: str, cls: type) -> None:
    cfg = parse_config({"search": {"sampler": name, "startup_trials": 4}}, "x.yaml")
    assert isinstance(make_sampler(cfg.search), cls)


def test_an_unknown_sampler_is_refused_with_its_key() -> None:
    from genre_ray.config import ConfigError

    with pytest.raises(ConfigError, match=r"search\.sampler"):
        parse_config({"search": {"sampler": "grid"}}, "x.yaml")


def _study(journal: Path, space: dict, name: str = "s") -> None:
    storage = study_storage(journal)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    fn = define_by_run(parse_config(space, "x.yaml"))
    for _ in range(3):
        trial = study.ask()
        fn(trial)
        study.tell(trial, 0.5)


def test_a_journal_from_another_space_is_refused_in_one_line_and_left_alone(tmp_path: Path) -> None:
    journal = tmp_path / "optuna_study.journal"
    _study(journal, SPACE)
    before = journal.read_bytes()
    check_study(study_storage(journal), "s", parse_config(SPACE, "x.yaml"))  # the same space: fine
    check_study(study_storage(journal), "other", parse_config({}, "x.yaml"))  # no such study: fine
    other = {**SPACE, "train": {"lr": {"uniform": [0.1, 0.2]}}}
    with pytest.raises(StudyJournalError, match=r"made from another search space: parameter train\.lr") as err:
        check_study(study_storage(journal), "s", parse_config(other, "x.yaml"))
    assert "\n" not in str(err.value)
    assert journal.read_bytes() == before


def test_a_file_that_is_no_journal_is_refused_and_kept(tmp_path: Path) -> None:
    junk = tmp_path / "optuna_study.journal"
    junk.write_text("this is not a journal\n")
    with pytest.raises(StudyJournalError, match=r"optuna_study\.journal: not an Optuna study journal"):
        study_storage(junk)
    assert junk.read_text() == "this is not a journal\n"
